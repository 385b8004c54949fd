"""Webhooks' pure parts: signature, address policy, backoff, debounce."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest

from services.gateway.webhooks import EventName
from shared.webhooks.events import EVENTS
from shared.webhooks.schedule import RetryPolicy, change_due
from shared.webhooks.signature import sign, verify
from shared.webhooks.urls import UrlRefused, check_url, public_address

pytestmark = pytest.mark.unit


def test_signature_format_and_round_trip() -> None:
    header = sign("k", 1700000000, b'{"a":1}')
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify("k", header, b'{"a":1}', now=1700000010)
    assert not verify("other", header, b'{"a":1}', now=1700000010)
    assert not verify("k", header, b'{"a":2}', now=1700000010)
    assert not verify("k", header, b'{"a":1}', now=1700009999)  # too old
    assert not verify("k", "garbage", b"", now=0)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "::1",
     "::ffff:127.0.0.1", "0.0.0.0", "224.0.0.1", "fe80::1", "fc00::1", "100.64.0.1"],
)  # fmt: skip
def test_internal_addresses_are_refused(address: str) -> None:
    assert not public_address(ipaddress.ip_address(address))


def test_public_addresses_are_allowed() -> None:
    assert public_address(ipaddress.ip_address("93.184.216.34"))
    assert public_address(ipaddress.ip_address("2606:4700::1111"))


@pytest.mark.parametrize(
    "url", ["ftp://x.example/", "http://user:pw@x.example/", "http:///nohost", "x" * 3000]
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused):
        check_url(url)


def test_backoff_grows_and_ends_at_the_retry_window() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    rng = random.Random(1)
    now, attempts, delays = created, 0, []
    while True:
        attempts += 1
        at = RetryPolicy(hours=24).next_attempt(created, attempts, now, rng=rng)
        if at is None:
            break
        delays.append((at - now).total_seconds())
        now = at
    assert delays[0] < delays[5] and max(delays) <= 3600
    assert now <= created + timedelta(hours=24)
    assert created + timedelta(hours=23) < now  # retried until close to the end


def test_backoff_starts_and_caps_at_its_settings() -> None:
    policy = RetryPolicy(hours=1, first_seconds=0.2, max_seconds=1.0)
    rng = random.Random(2)
    assert 0.1 <= policy.delay(1, rng) <= 0.2
    assert all(0.5 <= policy.delay(n, rng) <= 1.0 for n in range(4, 30))


def test_debounce_rule() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    s = timedelta(seconds=1)
    assert not change_due(t0, t0 + 4 * s, t0 + 5 * s, debounce=2, max_debounce=10)
    assert change_due(t0, t0 + 4 * s, t0 + 6 * s, debounce=2, max_debounce=10)
    assert change_due(t0, t0 + 9 * s, t0 + 10 * s, debounce=2, max_debounce=10)


def test_api_event_names_are_the_events() -> None:
    assert set(get_args(EventName)) == set(EVENTS)
