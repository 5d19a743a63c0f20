"""Imported at start-up by a Python process that has this folder on PYTHONPATH: once the file $FIQA_STUCK_AFTER
holds a header and a row, the main thread's next call to ONNX Runtime's `InferenceSession.run` never returns to
Python, as a call stuck in native code does: it blocks SIGINT and SIGTERM in that thread (another thread takes
them, so nothing interrupts the call), writes the line "a model call is stuck" to standard error and sleeps ten
minutes. A test can then show that a signal still ends the process, and what it kept."""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import signal
import sys
import threading
import time

MARK = "a model call is stuck"
_AFTER = os.environ.get("FIQA_STUCK_AFTER")


def _rows_written() -> bool:
    try:
        with open(_AFTER, "rb") as f:
            return len(f.read().splitlines()) >= 2
    except OSError:
        return False


def _stick() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})  # before the line a test waits for
    sys.stderr.write(MARK + "\n")
    sys.stderr.flush()
    time.sleep(600)


class _Loader(importlib.abc.Loader):
    def __init__(self, real):
        self.real = real

    def create_module(self, spec):
        return self.real.create_module(spec)

    def exec_module(self, module):
        self.real.exec_module(module)
        run = module.InferenceSession.run

        def stuck_once_rows_are_written(self, *args, **kwargs):
            if threading.current_thread() is threading.main_thread() and _rows_written():
                _stick()
            return run(self, *args, **kwargs)

        module.InferenceSession.run = stuck_once_rows_are_written


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "onnxruntime.capi.onnxruntime_inference_collection":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        spec.loader = _Loader(spec.loader)
        return spec


if _AFTER:
    sys.meta_path.insert(0, _Finder())
