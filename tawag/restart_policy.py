"""When ``tawag up`` starts a component again after it exited on its own, and when it stops
trying. Pure: no processes, no sleeping; the clock is injected.

- The first restart waits ``first_delay_s``; each further one waits twice as long, up to
  ``max_delay_s``.
- A component that ran ``stable_s`` or longer before it exited starts from the first delay
  again: one crash a day is not a crash loop.
- The ``max_crashes``-th exit within ``window_s`` (a failed start counts as one) means it keeps
  crashing: it is given up on and left down, and the rest of the stack keeps serving.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff", "RestartPolicy"]


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_s: float = 60.0
    max_crashes: int = 5
    window_s: float = 60.0


class Backoff:
    """One component's restart history under a :class:`RestartPolicy`.

    Call :meth:`started` whenever it is started (first start and each restart), and
    :meth:`exited` when it exits on its own or fails to start; the answer is the delay
    before the next start, or ``None``: give up.
    """

    def __init__(self, policy: RestartPolicy = RestartPolicy(), *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self.gave_up = False
        self._next_delay = policy.first_delay_s
        self._started_at: float | None = None
        self._exits: deque[float] = deque()

    def started(self) -> None:
        self._started_at = self.clock()

    def exited(self) -> float | None:
        p = self.policy
        now = self.clock()
        if self._started_at is not None and now - self._started_at >= p.stable_s:
            self._next_delay = p.first_delay_s
        self._started_at = None
        self._exits.append(now)
        while self._exits and self._exits[0] <= now - p.window_s:
            self._exits.popleft()
        if len(self._exits) >= p.max_crashes:
            self.gave_up = True
            return None
        delay = self._next_delay
        self._next_delay = min(delay * 2, p.max_delay_s)
        return delay

    @property
    def recent_exits(self) -> int:
        """Exits counted in the current window (as of the last :meth:`exited`)."""
        return len(self._exits)
