"""The restart policy of ``tawag up`` on a hand-driven clock: backoff, reset, giving up."""

from __future__ import annotations

import pytest

from tawag.restart_policy import Backoff, RestartPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def crash_after(backoff: Backoff, clock: Clock, ran_s: float) -> float | None:
    backoff.started()
    clock.advance(ran_s)
    return backoff.exited()


def test_delays_double_from_one_second_up_to_thirty(clock: Clock) -> None:
    # one crash every 20 s never reaches 5 in 60 s, so it is never given up on
    backoff = Backoff(RestartPolicy(), clock=clock)
    delays = []
    for _ in range(8):
        delay = crash_after(backoff, clock, 20)
        delays.append(delay)
        clock.advance(delay)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert not backoff.gave_up


def test_a_stable_run_starts_the_backoff_again(clock: Clock) -> None:
    backoff = Backoff(RestartPolicy(), clock=clock)
    assert crash_after(backoff, clock, 20) == 1
    assert crash_after(backoff, clock, 20) == 2
    assert crash_after(backoff, clock, 20) == 4
    assert crash_after(backoff, clock, 59.9) == 8, "not yet stable"
    assert crash_after(backoff, clock, 60) == 1, "ran stably for 60 s"
    assert crash_after(backoff, clock, 1) == 2


def test_the_fifth_exit_within_sixty_seconds_gives_up(clock: Clock) -> None:
    backoff = Backoff(RestartPolicy(), clock=clock)
    for expected in (1, 2, 4, 8):  # exits at once: 0, 1, 3, 7 s
        assert crash_after(backoff, clock, 0) == expected
        clock.advance(expected)
    assert backoff.recent_exits == 4
    assert crash_after(backoff, clock, 0) is None  # the fifth, at 15 s
    assert backoff.gave_up


def test_exits_older_than_the_window_do_not_count(clock: Clock) -> None:
    backoff = Backoff(RestartPolicy(max_crashes=3, window_s=60, stable_s=1000), clock=clock)
    assert crash_after(backoff, clock, 0) == 1      # t=0
    assert crash_after(backoff, clock, 30) == 2     # t=30
    clock.advance(31)                               # t=61: the first one left the window
    assert crash_after(backoff, clock, 0) == 4
    assert backoff.recent_exits == 2
    assert not backoff.gave_up
    assert crash_after(backoff, clock, 1) is None   # t=62: three within 60 s


def test_a_failed_start_counts_like_an_exit(clock: Clock) -> None:
    """exited() without started(): the restart never got up (not ready, hook failed)."""
    backoff = Backoff(RestartPolicy(max_crashes=2), clock=clock)
    assert crash_after(backoff, clock, 5) == 1
    clock.advance(1)
    assert backoff.exited() is None
