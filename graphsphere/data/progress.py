"""Progress of long loops that reads well on a terminal and in a log file.

On a terminal: a tqdm bar. Redirected to a file (``> run.log 2>&1``): a plain
line every ``every`` seconds and at the end, with the count, the time spent
and an estimate of the time left; never the carriage-return frames of a bar,
which turn a log into hundreds of kilobytes of redraws.

>>> import io
>>> log = io.StringIO()
>>> bar = Progress(3, "maps", stream=log, every=0)
>>> for _ in range(3):
...     bar.update()
>>> print(log.getvalue().splitlines()[-1].split(",")[0])
maps: 3/3 (100%)
"""

from __future__ import annotations

import time

__all__ = ["Progress", "SweepClock", "duration"]


class Progress:
    """Progress of a loop: a tqdm bar on a terminal, else a plain line (no carriage returns) every
    ``every`` seconds and at the end, with the count, the elapsed time and an estimate of what is left."""

    def __init__(self, total: int, desc: str, enabled: bool = True, every: float = 30.0, stream=None):
        import sys

        self.total, self.desc, self.every, self.done = int(total), desc, float(every), 0
        self.stream = stream or sys.stderr
        self.bar = None
        self.enabled = enabled and self.total > 0
        self.start = self.last = time.perf_counter()
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm.auto import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=self.total, desc=desc, file=self.stream)
        elif self.enabled:
            print(f"{desc}: {self.total} to do", file=self.stream, flush=True)

    def update(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update()
            if self.done == self.total:
                self.bar.close()
            return
        now = time.perf_counter()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            elapsed = now - self.start
            left = elapsed / self.done * (self.total - self.done)
            print(f"{self.desc}: {self.done}/{self.total} ({100 * self.done / self.total:.0f}%), "
                  f"{duration(elapsed)} elapsed" + (f", about {duration(left)} left" if self.done < self.total
                                                     else ""), file=self.stream, flush=True)


class SweepClock:
    """``run i/N`` tags and ``elapsed ..., about ... left`` for the runs of a sweep. The time left is
    estimated per kind of run from the runs of that kind done so far (an SVM takes seconds, a network
    minutes); a kind not yet seen counts as the mean of all the runs done.

    >>> clock = SweepClock(["svm", "net", "net"])
    >>> clock.tag
    'run 1/3'
    >>> clock.finished("svm", 4.0).split(", ")[1]
    'about 8 s left'
    >>> clock.tag, clock.finished("net", 60.0).split(", ")[1]
    ('run 2/3', 'about 1 min 00 s left')
    >>> clock.finished("net", 50.0).split(", ")[1]
    'all done'
    """

    def __init__(self, plan: list[str]):
        self.plan, self.done = list(plan), 0
        self.start = time.perf_counter()
        self.times: dict[str, list[float]] = {}

    @property
    def tag(self) -> str:
        """``run i/N`` of the run about to start (1-based)."""
        return f"run {self.done + 1}/{len(self.plan)}"

    def finished(self, kind: str, seconds: float) -> str:
        """Count a run of ``kind`` that took ``seconds``; returns ``elapsed ..., about ... left`` (or
        ``..., all done`` after the last run)."""
        self.done += 1
        self.times.setdefault(kind, []).append(float(seconds))
        seen = [t for ts in self.times.values() for t in ts]
        left = sum(_mean(self.times.get(k, seen)) for k in self.plan[self.done:])
        text = f"elapsed {duration(time.perf_counter() - self.start)}"
        return text + (f", about {duration(left)} left" if self.done < len(self.plan) else ", all done")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``.

    >>> duration(42.4), duration(185), duration(7620)
    ('42 s', '3 min 05 s', '2 h 07 min')
    """
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
