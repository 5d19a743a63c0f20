"""The one exception type for user mistakes: its message says what to do; the CLI prints it without a traceback."""

from __future__ import annotations


class FiqaError(Exception):
    """A user-facing error (bad option, missing model, unusable input). Never a bug in fiqa-trt."""

    exit_code = 2  # the CLI's exit status: a usage mistake


class NothingDone(FiqaError):
    """The run could not do its job although it was asked correctly (no frame of a video readable, the output
    disk full): the CLI exits with 1, as when no image could be scored."""

    exit_code = 1


class MissingDependency(FiqaError):
    """A dependency is not installed; the message says what to install (the extra, for optional ones)."""

    def __init__(self, module: str, extra: str | None = None):
        target = f"'fiqa-trt[{extra}]'" if extra else "fiqa-trt (a core dependency: reinstall the package)"
        super().__init__(f"'{module}' is not installed: pip install {target}")


def require(name: str, package: str | None = None, extra: str | None = None):
    """Import module `name`, or raise MissingDependency naming `package` (default: `name`) and its extra."""
    import sys

    try:
        __import__(name)  # the import statement's own machinery (so `python -X importtime` still reports it)
    except ImportError:
        raise MissingDependency(package or name, extra) from None
    return sys.modules[name]
