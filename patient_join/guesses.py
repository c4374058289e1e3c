"""Failed join-link guesses, counted per client address.

``/j/<token>`` and a socket's ``auth = {"join_token": ...}`` share one count under
``VV_JOIN_LINK_RATE_LIMIT``. Only unknown tokens count, and the count is checked only
when a guess has failed: a valid link always opens, so a patient on a clinic's or a
hotel's Wi-Fi is never locked out by someone else's guesses from the same address.
(Tokens are 256 random bits: the limit stops noise and load, not a search that could
ever succeed.)

The counting goes through ``limiter.limiter`` (Flask-Limiter's strategy, in memory or in
Redis) in ``_hit`` alone, so a change of storage behaviour is made in one place.
"""
from __future__ import annotations

import logging
import math
import time

from flask import current_app, request
from limits import RateLimitItem, parse_many

from extensions import limiter

log = logging.getLogger(__name__)

_SCOPE = "join-guess"
_parsed: dict[str, list[RateLimitItem]] = {}


def client_address() -> str:
    """The client's IP address for this request or socket event (behind ``VV_PROXY_COUNT``
    proxies, ProxyFix has already put the forwarded one in ``REMOTE_ADDR``, for sockets
    too)."""
    return request.remote_addr or "unknown"


def failed_guess(address: str) -> int | None:
    """Count one failed guess from ``address``. Returns the seconds to wait when the client
    is now over its limit, else None."""
    wait = None
    for item in _limits(current_app.config["JOIN_LINK_RATE_LIMIT"]):
        seconds = _hit(item, address)
        if seconds is not None:
            wait = max(wait or 0, seconds)
    return wait


def _limits(text: str) -> list[RateLimitItem]:
    items = _parsed.get(text)
    if items is None:
        items = _parsed[text] = parse_many(text)
    return items


def _hit(item: RateLimitItem, address: str) -> int | None:
    """One hit on one limit; seconds until its window resets when it is used up. While
    Redis is down the limiter counts in this process (extensions.RouteLimiter)."""
    prefix = current_app.config.get("RATELIMIT_KEY_PREFIX")
    keys = (prefix, _SCOPE, address) if prefix else (_SCOPE, address)
    try:
        strategy = limiter.limiter
        if strategy.hit(item, *keys):
            return None
        reset_at, _remaining = strategy.get_window_stats(item, *keys)
    except Exception:  # a limiter bug must never turn a patient's page into an error
        log.warning("join guess limit unavailable")
        return None
    return max(1, math.ceil(reset_at - time.time()))
