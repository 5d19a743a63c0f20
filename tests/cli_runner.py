"""Runs the `fiqa-trt` command in-process, as `main` does (same argument parsing, same one-line errors and exit
codes), capturing standard output and standard error. Tests use it wherever a separate process is not the point;
signals, import-time checks and process-wide runtimes (Ray) keep real processes."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, cwd=None, env: dict | None = None) -> Completed:
    """`fiqa-trt ARGS...` in this process; `env` replaces the environment for the call, `cwd` the directory."""
    from fiqa_trt.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_env = os.getcwd(), dict(os.environ)
    code = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(old_cwd)
        if env is not None:
            os.environ.clear()
            os.environ.update(old_env)
    return Completed(code, out.getvalue(), err.getvalue())
