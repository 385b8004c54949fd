"""What a load run counts, and how: pure functions, no I/O (tested directly).

Every edit a load client sends carries a token `<phase:client:seq:t_ns>` in
the inserted text: the phase it belongs to, the global id of the sending
client, its sequence number and the sender's `time.monotonic_ns()` (one clock
for every process of this machine). Yjs encodes inserted strings verbatim, so
a receiver finds the tokens in the update bytes it is sent, whatever the
server did to the update (relayed as is, re-encoded, merged with others).

Per phase:

- expected deliveries: every edit sent, times the number of *other* clients
  in its room (y-websocket servers do not echo an update to its sender);
- received: distinct (receiver, sender, seq) triples seen by a receiver in the
  sender's room; a second copy counts as a duplicate, a token from another
  room as misrouted, the receiver's own token as an echo, none of them as
  delivered;
- delivery ratio: received / expected (1.0 when nothing was expected).
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

TOKEN_RE = re.compile(rb"<(\d+):(\d+):(\d+):(\d+)>")


def make_token(phase: int, client: int, seq: int, t_ns: int) -> str:
    """The text a load client inserts for one edit."""
    return f"<{phase}:{client}:{seq}:{t_ns}>"


def parse_tokens(data: bytes) -> list[tuple[int, int, int, int]]:
    """Every (phase, client, seq, t_ns) token in a frame or document."""
    return [
        (int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)))
        for m in TOKEN_RE.finditer(data)
    ]


# ---------------------------------------------------------------------------
# percentiles and latency summaries
# ---------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values; nan when empty."""
    if not sorted_values:
        return math.nan
    if q <= 0:
        return float(sorted_values[0])
    rank = math.ceil(q / 100.0 * len(sorted_values))
    return float(sorted_values[min(len(sorted_values), max(1, rank)) - 1])


@dataclass(frozen=True)
class LatencySummary:
    """End-to-end latency of delivered edits, in milliseconds."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of_micros(cls, micros: Iterable[int]) -> LatencySummary:
        values = sorted(micros)
        if not values:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        ms = [v / 1000.0 for v in values]
        return cls(
            count=len(ms),
            p50=percentile(ms, 50),
            p95=percentile(ms, 95),
            p99=percentile(ms, 99),
            max=ms[-1],
            mean=sum(ms) / len(ms),
        )


# ---------------------------------------------------------------------------
# the receiving side: one ledger per load process
# ---------------------------------------------------------------------------


@dataclass
class PhaseTally:
    """What the receivers of one load process saw during one phase."""

    received: int = 0
    duplicates: int = 0
    misrouted: int = 0
    echoes: int = 0
    latencies_us: array = field(default_factory=lambda: array("q"))

    def to_wire(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "latencies_us"}
        data["latencies_us"] = self.latencies_us.tobytes()
        return data

    @classmethod
    def from_wire(cls, data: Mapping) -> PhaseTally:
        latencies = array("q")
        latencies.frombytes(data["latencies_us"])
        return cls(
            received=data["received"],
            duplicates=data["duplicates"],
            misrouted=data["misrouted"],
            echoes=data["echoes"],
            latencies_us=latencies,
        )


class Ledger:
    """Records the tokens the receivers of one load process see.

    `room_of` maps every client id of the whole run (all processes) to its
    room, so a token from another room is recognised as misrouted.
    """

    def __init__(self, room_of: Mapping[int, int]) -> None:
        self._room_of = room_of
        self._seen: dict[int, set[int]] = {}
        self.phases: dict[int, PhaseTally] = {}
        self.unknown = 0  # tokens of a phase or client this run never used

    def tally(self, phase: int) -> PhaseTally:
        tally = self.phases.get(phase)
        if tally is None:
            tally = self.phases[phase] = PhaseTally()
        return tally

    def record(self, receiver: int, data: bytes, now_ns: int) -> int:
        """Count the tokens in one frame received by `receiver`; return how many were new."""
        new = 0
        room = self._room_of[receiver]
        seen = self._seen.get(receiver)
        if seen is None:
            seen = self._seen[receiver] = set()
        for match in TOKEN_RE.finditer(data):
            phase, sender, seq, sent_ns = (int(g) for g in match.groups())
            sender_room = self._room_of.get(sender)
            if sender_room is None:
                self.unknown += 1
                continue
            tally = self.tally(phase)
            if sender == receiver:
                tally.echoes += 1
                continue
            if sender_room != room:
                tally.misrouted += 1
                continue
            key = (phase << 48) | (sender << 24) | seq
            if key in seen:
                tally.duplicates += 1
                continue
            seen.add(key)
            tally.received += 1
            tally.latencies_us.append(max(0, now_ns - sent_ns) // 1000)
            new += 1
        return new

    def received(self, phase: int) -> int:
        tally = self.phases.get(phase)
        return tally.received if tally else 0


# ---------------------------------------------------------------------------
# the whole run: expected deliveries, merged tallies, the phase result
# ---------------------------------------------------------------------------


def expected_deliveries(sent: Mapping[int, int], room_of: Mapping[int, int]) -> int:
    """Sum over senders of edits sent x (clients in the sender's room - 1)."""
    room_sizes: dict[int, int] = {}
    for room in room_of.values():
        room_sizes[room] = room_sizes.get(room, 0) + 1
    return sum(count * (room_sizes[room_of[client]] - 1) for client, count in sent.items())


def delivery_ratio(received: int, expected: int) -> float:
    return 1.0 if expected == 0 else received / expected


def merge_tallies(tallies: Iterable[PhaseTally]) -> PhaseTally:
    total = PhaseTally()
    for tally in tallies:
        total.received += tally.received
        total.duplicates += tally.duplicates
        total.misrouted += tally.misrouted
        total.echoes += tally.echoes
        total.latencies_us.extend(tally.latencies_us)
    return total


@dataclass
class PhaseResult:
    """One measured load phase (scenario (a), or one step of (b))."""

    clients: int
    rooms: int
    rate_per_client: float
    duration_s: float  # the send window actually used
    edits_sent: int
    expected: int
    received: int
    duplicates: int
    misrouted: int
    echoes: int
    latency: LatencySummary
    server_cpu_s: dict[str, float] = field(default_factory=dict)  # by process label
    hot_path: list[str] = field(default_factory=list)  # labels of the relaying processes
    loadgen_cpu_s: float = 0.0
    loadgen_processes: int = 1
    wall_s: float = 0.0  # send window + drain
    closed_clients: int = 0  # load connections the server closed during the phase
    max_send_lag_ms: float = 0.0  # how far behind schedule the senders fell
    machine_busy_s: float = 0.0  # CPU time the whole machine was busy during the phase

    @property
    def other_cpu_percent(self) -> float:
        """CPU used by processes that are neither the servers nor the load generator
        (other work on the machine: a noise indicator), as % of one core."""
        if self.wall_s <= 0:
            return 0.0
        ours = sum(self.server_cpu_s.values()) + self.loadgen_cpu_s
        return max(0.0, 100.0 * (self.machine_busy_s - ours) / self.wall_s)

    @property
    def ratio(self) -> float:
        return delivery_ratio(self.received, self.expected)

    @property
    def deliveries_per_s(self) -> float:
        return self.received / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def edits_per_s(self) -> float:
        return self.edits_sent / self.duration_s if self.duration_s > 0 else 0.0

    def cpu_us_per_delivery(self, labels: Iterable[str] | None = None) -> float:
        """Server CPU per delivered update, over `labels` (default: the hot path)."""
        chosen = list(self.hot_path if labels is None else labels)
        cpu = sum(self.server_cpu_s.get(label, 0.0) for label in chosen)
        return cpu * 1e6 / self.received if self.received else math.nan

    @property
    def total_server_cpu_us_per_delivery(self) -> float:
        return self.cpu_us_per_delivery(self.server_cpu_s.keys())

    @property
    def loadgen_cpu_percent(self) -> float:
        """CPU of the load processes, as % of one core, over the phase's wall time."""
        return 100.0 * self.loadgen_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(
            ratio=self.ratio,
            deliveries_per_s=self.deliveries_per_s,
            edits_per_s=self.edits_per_s,
            cpu_us_per_delivery=self.cpu_us_per_delivery(),
            total_server_cpu_us_per_delivery=self.total_server_cpu_us_per_delivery,
            loadgen_cpu_percent=self.loadgen_cpu_percent,
            other_cpu_percent=self.other_cpu_percent,
        )
        return data


def sustained(result: PhaseResult, *, min_ratio: float = 0.99, max_p99_ms: float = 100.0) -> bool:
    """Scenario (b)'s criterion: a step is sustained when nearly everything arrived in time."""
    return result.ratio >= min_ratio and not (result.latency.p99 > max_p99_ms)


# ---------------------------------------------------------------------------
# Prometheus histograms (the persistence worker's lag)
# ---------------------------------------------------------------------------


def parse_prometheus(text: str) -> dict[str, float]:
    """`name{labels}` -> value for every sample line of a Prometheus text exposition."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            samples[name] = float(value)
        except ValueError:
            continue
    return samples


def histogram_buckets(samples: Mapping[str, float], name: str) -> list[tuple[float, float]]:
    """Sorted (upper bound, cumulative count) of histogram `name`."""
    buckets = []
    prefix = f'{name}_bucket{{le="'
    for key, value in samples.items():
        if key.startswith(prefix):
            bound = key[len(prefix) :].split('"', 1)[0]
            buckets.append((math.inf if bound == "+Inf" else float(bound), value))
    return sorted(buckets)


def histogram_delta(
    after: Sequence[tuple[float, float]], before: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """Like PromQL's histogram_quantile: linear interpolation inside the bucket (q in 0..1)."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound
