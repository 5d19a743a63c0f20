"""Progress of long commands on standard error, whether or not it is a terminal.

`Reporter` shows the current phase of a command (a name, and when the work is counted, done / total): on a
terminal a rich progress bar (a spinner for uncounted phases); otherwise plain lines, one when a phase starts, one
when a counted phase ends, and one every `period` seconds in between from a background thread (done/total, rate
and ETA, or the time the phase has run), so that a command run under nohup, in CI or with its output redirected
to a file says at least that often that it is working and how much is left. The period is
FIQA_TRT_PROGRESS_SECONDS (default 10).
"""

from __future__ import annotations

import os
import threading
import time

from rich.console import Console
from rich.markup import escape

DEFAULT_PERIOD = 10.0


def period_from_env() -> float:
    """FIQA_TRT_PROGRESS_SECONDS, else DEFAULT_PERIOD (a bad value: the default)."""
    try:
        value = float(os.environ.get("FIQA_TRT_PROGRESS_SECONDS", DEFAULT_PERIOD))
    except ValueError:
        return DEFAULT_PERIOD
    return value if value > 0 else DEFAULT_PERIOD


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Reporter:
    """The progress of one command: `phase(name, total)` starts a phase, `advance(n)` counts work in it, `say(msg)`
    prints a message. A context manager; quiet: nothing at all. `unit`: what is counted (for the rate)."""

    def __init__(self, console: Console, quiet: bool = False, period: float | None = None, unit: str = "img"):
        self.console, self.quiet, self.unit = console, quiet, unit
        self.period = period if period is not None else period_from_env()
        self.terminal = bool(console.is_terminal)
        self._lock = threading.Lock()
        self._name: str | None = None
        self._total: int | None = None
        self._done = 0
        self._started = self._phase_started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None
        self._task = None

    # ---- life cycle ----

    def __enter__(self) -> "Reporter":
        if self.quiet:
            return self
        if self.terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            from fiqa_trt.cli.console import RateColumn

            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 RateColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
                                 transient=False)
            self._bar.__enter__()
        else:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._beat, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.quiet:
            return
        self._end_phase()
        if self._bar is not None:
            self._bar.__exit__(*exc)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    # ---- what commands call ----

    def phase(self, name: str, total: int | None = None) -> None:
        """Start a phase (ending the one before): `total` units of work, or None when they are not counted."""
        if self.quiet:
            return
        self._end_phase()
        with self._lock:
            self._name, self._total, self._done = name, total, 0
            self._phase_started = time.monotonic()
        if self._bar is not None:
            self._task = self._bar.add_task(escape(name), total=total)
        else:
            self._line(f"{name}" + (f": 0/{total}" if total is not None else " ..."))

    def advance(self, n: int = 1) -> None:
        if self.quiet:
            return
        with self._lock:
            self._done += n
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, n)

    def set_total(self, total: int) -> None:
        """The total of the current phase, once it is known."""
        if self.quiet:
            return
        with self._lock:
            self._total = total
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=total)

    def say(self, message: str) -> None:
        """A message line (above the bar on a terminal)."""
        if not self.quiet:
            self.console.print(escape(message))

    def callback(self, phase: str, total: int | None = None):
        """A `progress(n)` callback for library calls, counting into a new phase."""
        self.phase(phase, total)
        return self.advance

    # ---- plain lines ----

    def status(self) -> str | None:
        """The current phase as a plain line, or None when no phase runs."""
        with self._lock:
            name, total, done, started = self._name, self._total, self._done, self._phase_started
        if name is None:
            return None
        elapsed = time.monotonic() - started
        if total is None:
            return f"{name}: {done} {self.unit} after {_duration(elapsed)}" if done else \
                f"{name}: running for {_duration(elapsed)}"
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {_duration((total - done) / rate)}" if rate > 0 and done < total else ""
        share = f" ({100 * done / total:.0f}%)" if total else ""
        return f"{name}: {done}/{total}{share}, {rate:.1f} {self.unit}/s{eta}"

    def _line(self, text: str) -> None:
        stamp = _duration(time.monotonic() - self._started)
        self.console.print(f"[{stamp}] {text}", markup=False, highlight=False, soft_wrap=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.period):
            line = self.status()
            if line is not None:
                self._line(line)

    def _end_phase(self) -> None:
        with self._lock:
            name, total, done, started = self._name, self._total, self._done, self._phase_started
            self._name = None
        if name is None:
            return
        if self._bar is not None:
            if self._task is not None and total is None:
                self._bar.update(self._task, total=max(done, 1), completed=max(done, 1))
            self._task = None
        elif total is not None:
            took = _duration(time.monotonic() - started)
            self._line(f"{name}: {done}/{total} done in {took}" if done >= total
                       else f"{name}: stopped at {done}/{total} after {took}")
