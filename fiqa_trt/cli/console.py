"""What every command shares for talking to the user: the standard-error console, logging, the rate column."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import ProgressColumn
from rich.text import Text

err = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Images per second, for rich progress bars."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} img/s" if task.speed else "- img/s", style="cyan")


ARGUMENTS: list[str] = []  # the arguments of the running command line (set by `app.main`), for files that record it


def setup_logging(verbose: bool) -> None:
    """Route the `fiqa_trt` logger to the console: INFO by default, DEBUG with -v; native libraries' raw log
    lines only with -v."""
    quiet_native_logs(verbose)
    handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
    logger = logging.getLogger("fiqa_trt")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def quiet_native_logs(verbose: bool) -> None:
    """OpenCV's own log level (`[ WARN:0@...]` lines, FFmpeg's messages): errors only unless -v, set before it
    loads (its environment variables) and at run time. DALI's nvImageCodec has no such setting: its lines are
    dropped by `filter_native_stderr`."""
    import os
    import sys

    level = "INFO" if verbose else "ERROR"
    os.environ["OPENCV_LOG_LEVEL"] = level
    os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "32" if verbose else "-8"  # AV_LOG_INFO / AV_LOG_QUIET
    if "cv2" in sys.modules:
        logs = sys.modules["cv2"].utils.logging
        logs.setLogLevel(logs.LOG_LEVEL_INFO if verbose else logs.LOG_LEVEL_ERROR)


# Raw log lines that native libraries print on the process's standard error themselves (not through Python):
# nvImageCodec inside DALI ("\x1b[0;31m[ERROR] \x1b[0m[png_parser] ..."), OpenCV ("[ WARN:0@1.2] global ..."),
# OpenCV's AVI parser ("Unexpected element. Expected: LIST ...").
# Ray's C++ core worker ("[2026-12-01 22:07:15,388 E 5425 5425] core_worker.cc:2465: ...").
# libjpeg's and libpng's warnings about an image that is still decoded ("Corrupt JPEG data: 3 extraneous bytes
# before marker 0xda", "libpng warning: iCCP: known incorrect sRGB profile"): an image that cannot be decoded is
# an error row of its own.
NATIVE_LOG_LINE = (r"^(\x1b\[[0-9;]*m)?\[ ?(ERROR|WARN|WARNING|INFO|DEBUG)[\]:]|^Unexpected element\."
                   r"|^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [EWI] \d+ \d+\]"
                   r"|^(Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters|Inconsistent progression"
                   r"|Warning: unknown JFIF|Warning: thumbnail image|libpng (warning|error): )")


def quiet_image_warnings() -> None:
    """Pillow's Python warnings about one image (corrupt EXIF data, a large image, a palette with transparency):
    not shown unless -v; an image that cannot be read is an error row of its own."""
    import warnings

    warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")


def filter_native_stderr() -> None:
    """Keep native libraries' raw log lines (NATIVE_LOG_LINE) off the terminal: the process's file descriptor 2
    becomes a pipe read by a thread that drops those lines and passes every other line on, while Python's own
    `sys.stderr` (rich's console, tracebacks) writes to the terminal directly. For the real process only (main);
    with -v it is not called."""
    import os
    import re
    import sys
    import threading

    try:
        sys.stderr.flush()
        terminal = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:
        return
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                           errors="backslashreplace")
    pattern = re.compile(NATIVE_LOG_LINE)

    def forward() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not pattern.match(line.decode("utf-8", "replace")):
                    os.write(terminal, line)

    threading.Thread(target=forward, name="native-stderr", daemon=True).start()


class Interrupts:
    """SIGINT and SIGTERM both end a run as Ctrl-C does (KeyboardInterrupt in the main thread), never inside a
    `shielded()` block (writing a batch of rows): a signal there takes effect when the block ends.
    `exit_code` is 130 after SIGINT, 143 after SIGTERM.

    The end is bounded: a watchdog thread learns of the signal at once (the signal module's wakeup file descriptor,
    written even while the main thread is inside native code that does not return to Python), and ends the process
    with `exit_code` when the run has not ended `GRACE_S` seconds after the signal, saying what is `kept` (for
    `score`: the rows written by then are in the partial file, which --resume continues from). A run that ended
    after a signal but leaves a worker thread inside native code (a producer in the middle of a batch) exits at once
    instead of waiting for it at exit."""

    GRACE_S = 10.0

    def __init__(self, kept: str = "the rows written so far are kept in the partial file (--resume continues)"):
        self.kept = kept
        self.received: int | None = None
        self._shielded = 0
        self._pending = False
        self._previous: dict = {}
        self._wakeup = None

    def _handle(self, signum, frame) -> None:
        self.received = signum
        if self._shielded:
            self._pending = True
            return
        raise KeyboardInterrupt

    def __enter__(self) -> "Interrupts":
        import signal
        import threading

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        import os

        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        try:
            previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        except ValueError:  # not the main thread: no watchdog
            os.close(read_end)
            os.close(write_end)
            return self
        self._wakeup = (read_end, write_end, previous_fd, threading.Event())
        threading.Thread(target=self._watch, args=(read_end, self._wakeup[3]), name="fiqa-interrupts",
                         daemon=True).start()
        return self

    def _watch(self, read_end: int, ended) -> None:
        import os
        import signal
        import sys

        try:
            while True:
                try:
                    byte = os.read(read_end, 1)
                except OSError:
                    return
                if not byte:  # the run ended: __exit__ closed the other end
                    return
                if byte[0] in (signal.SIGINT, signal.SIGTERM):
                    break
            if ended.wait(self.GRACE_S):
                return
        finally:
            os.close(read_end)
        try:
            sys.stderr.write(f"interrupted: the run did not end within {self.GRACE_S:g} s of the signal; "
                             f"{self.kept}\n")
            sys.stderr.flush()
        finally:
            os._exit(128 + byte[0])

    def __exit__(self, *exc) -> None:
        import os
        import signal
        import sys
        import threading

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._wakeup is not None:
            read_end, write_end, previous_fd, ended = self._wakeup
            ended.set()
            signal.set_wakeup_fd(previous_fd)
            os.close(write_end)  # the watchdog's read returns
            self._wakeup = None
        stray = [t for t in threading.enumerate() if t.name.startswith("fiqa-producer")]
        if self.received is not None and stray:  # done and written: a worker inside native code is not waited for
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(self.exit_code)

    @property
    def exit_code(self) -> int:
        import signal

        return 128 + int(self.received if self.received is not None else signal.SIGINT)

    def shielded(self):
        from contextlib import contextmanager

        @contextmanager
        def block():
            self._shielded += 1
            try:
                yield
            finally:
                self._shielded -= 1
                if not self._shielded and self._pending:
                    self._pending = False
                    raise KeyboardInterrupt

        return block()
