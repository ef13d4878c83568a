"""How long to wait before a retry: one exponential backoff for every adapter that retries (registry, git)."""

from __future__ import annotations


def backoff_delay(retry: int, base: float, cap: float, jitter: float = 1.0) -> float:
    """Seconds before retry number ``retry`` (0 for the first): ``min(cap, base * 2**retry)``, scaled by ``jitter``.

    Pass a uniform random number in [0, 1) as ``jitter`` for full-jitter backoff, so that clients which failed
    together do not retry together; the default 1.0 waits the whole delay.
    """
    return jitter * min(cap, base * 2.0 ** min(retry, 62))
