"""Test hook (tests/hooks/sitecustomize.py): once the file $FIQA_STUCK_AFTER holds a header and a row, the main
thread's next call to ONNX Runtime's `InferenceSession.run` never returns to Python, as a call stuck in native code
does: it blocks SIGINT and SIGTERM in that thread (another thread takes them, so nothing interrupts the call), writes
the line "a model call is stuck" to standard error and sleeps ten minutes. A test can then show that a signal still
ends the process, and what it kept."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

MARK = "a model call is stuck"


def _rows_written(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return len(f.read().splitlines()) >= 2
    except OSError:
        return False


def _stick() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})  # before the line a test waits for
    sys.stderr.write(MARK + "\n")
    sys.stderr.flush()
    time.sleep(600)


def _patch(module) -> None:
    after, run = os.environ["FIQA_STUCK_AFTER"], module.InferenceSession.run

    def stuck_once_rows_are_written(self, *args, **kwargs):
        if threading.current_thread() is threading.main_thread() and _rows_written(after):
            _stick()
        return run(self, *args, **kwargs)

    module.InferenceSession.run = stuck_once_rows_are_written


def install() -> None:
    from patching import after_import

    after_import("onnxruntime.capi.onnxruntime_inference_collection", _patch)
