"""The cross-site rule for requests authenticated by the `auth` cookie.

A browser attaches the cookie to requests other sites make it send (a form
post, `navigator.sendBeacon`, `fetch` with `no-cors`), so a cookie alone does
not prove that the page sending the request is ours. An unsafe request (not
GET, HEAD or OPTIONS) authenticated only by the cookie is accepted when the
browser says it came from this origin: `Sec-Fetch-Site` is `same-origin` (or
`none`: the user typed it), or, from a browser that sends no fetch metadata,
`Origin` equals this server's own origin. Anything else, including neither
header at all, is refused: every browser sends one of them on a POST, and a
client that is not a browser sends a Bearer token, which no other site can
attach and which this rule does not concern.

SameSite=Lax already keeps the cookie off cross-site POSTs in current
browsers; this rule also covers `same-site` requests (a sibling subdomain),
which SameSite lets through, and browsers that ignore SameSite. The body's
content type is not part of the rule: with the origin checked it would add
nothing, and it would refuse legitimate multipart uploads.
"""

from __future__ import annotations

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_ORIGIN_SITES = frozenset({"same-origin", "none"})


def cross_site_refusal(
    method: str, sec_fetch_site: str | None, origin: str | None, own_origin: str
) -> str | None:
    """Why a cookie-authenticated request must be refused, or None when it may proceed.

    `own_origin` is this server's origin as the browser sees it (`scheme://host[:port]`).
    """
    if method.upper() in SAFE_METHODS:
        return None
    if sec_fetch_site is not None:
        if sec_fetch_site.strip().lower() in SAME_ORIGIN_SITES:
            return None
        return f"a {sec_fetch_site.strip().lower() or 'cross-site'} request cannot use the session cookie"
    if origin is None:
        return "a request with neither Sec-Fetch-Site nor Origin cannot use the session cookie"
    if origin.strip().lower().rstrip("/") == own_origin.lower():
        return None
    return "a request from another origin cannot use the session cookie"
