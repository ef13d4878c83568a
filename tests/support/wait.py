"""The one way a test waits: for a fact, within a deadline, failing with what it awaited and what it last saw.

Every helper that waits (`wait_for_hr`, `delete_and_wait_gone`, `Process.wait_until`, ...) is built on `eventually`,
so a red test always reads the same way: what was awaited, for how long, the last value or error seen, and the log
tail of the process that was supposed to make it happen. An async test runs it in a thread
(`await asyncio.to_thread(eventually, ...)`), so its event loop keeps running the code under test meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Seconds between two looks: short beside what the operator takes to react, long enough not to load two cores.
INTERVAL = 0.2
#: How much of the last value a failure message shows (a whole HelmRelease would bury the point).
SHOWN = 600


class NeverHappened(AssertionError):
    """What a test waited for did not happen in time; a test failure, not an error of the harness."""


def eventually(
    probe: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = INTERVAL,
    ignoring: tuple[type[Exception], ...] = (),
    context: Callable[[], str] | None = None,
) -> T:
    """Call `probe` until it returns something true, and return that; after `timeout` seconds, fail naming `what`.

    An exception of a type in `ignoring` counts as "not yet" (an object not created yet, a server still starting);
    any other propagates at once (a process that died: no point waiting on). The failure shows the last value or
    error seen and `context()`, typically an operator's log tail.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except ignoring as error:
            last: object = error
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    shown = repr(last)
    if len(shown) > SHOWN:
        shown = shown[:SHOWN] + "…"
    message = f"waited {timeout:g}s for {what}, in vain; last seen: {shown}"
    if context is not None:
        message += "\n" + context()
    raise NeverHappened(message)
