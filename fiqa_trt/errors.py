"""The one exception type for user mistakes: its message says what to do; the CLI prints it without a traceback."""


class FiqaError(Exception):
    """A user-facing error (bad option, missing model, unusable input). Never a bug in fiqa-trt."""


class MissingDependency(FiqaError):
    """An optional dependency is not installed; the message names the extra that provides it."""

    def __init__(self, module: str, extra: str):
        super().__init__(f"'{module}' is not installed: pip install 'fiqa-trt[{extra}]'")
