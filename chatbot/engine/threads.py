"""How many threads a decode step runs on, chosen from how fast steps have been lately.

On a quiet machine two cores halve a step. On a busy one the OS deschedules a thread for
milliseconds at a time and the others wait for it at the end of every parallel op (torch's ~1300 a
step, or the native step's one), and torch's idle threads spin for a while after each op, taking
the CPU the busy machine lacks. So the fast engine keeps a moving average of each choice's step
time, runs the faster one, and tries the other now and then, because the load changes under it.
"""

from __future__ import annotations


class ThreadChoice:
    PROBE_EVERY = 64  # steps between tries of the slower choice
    WEIGHT = 0.2  # of the newest step in the running choice's moving average
    PROBE_WEIGHT = 0.5  # of a try of the other: its average is otherwise a stale one

    def __init__(self):
        self.choices: tuple[int, ...] = ()
        self.seconds: dict[int, float] = {}
        self.steps = 0

    def pick(self, most: int) -> int:
        """The threads for the next step, `most` being torch's thread count now."""
        if self.choices[:1] != (most,):  # first step, or torch's count changed: start over
            self.choices, self.seconds = ((most, 1) if most > 1 else (1,)), {}
        self.steps += 1
        untried = [n for n in self.choices if n not in self.seconds]
        if untried:
            return untried[0]
        best = min(self.choices, key=self.seconds.__getitem__)
        if self.steps % self.PROBE_EVERY == 0:
            return next(n for n in self.choices if n != best) if len(self.choices) > 1 else best
        return best

    def record(self, threads: int, seconds: float) -> None:
        last = self.seconds.get(threads)
        if last is None:
            self.seconds[threads] = seconds
            return
        running = threads == min(self.choices, key=lambda n: self.seconds.get(n, float("inf")))
        self.seconds[threads] = last + (self.WEIGHT if running else self.PROBE_WEIGHT) * (seconds - last)
