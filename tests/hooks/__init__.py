"""Test-only start-up hooks for real processes (tests/hooks/sitecustomize.py installs the one $FIQA_TEST_HOOK names):
`hooked` starts a command with a hook and waits for the line that says it holds the process where a test wants it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

HOOKS = Path(__file__).resolve().parent
ROOT = HOOKS.parents[1]


def hooked(command: list[str], hook: str, mark: str, env: dict | None = None, **popen) -> tuple[subprocess.Popen, str]:
    """Start `command` with the hook module `hook` of this folder installed (this folder and the repository first on
    PYTHONPATH, `env` added to the environment) and read its standard error up to the line `mark`: the process and
    what it wrote so far."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([str(HOOKS), str(ROOT)]),
           "FIQA_TEST_HOOK": hook}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, **popen)
    seen = ""
    while mark not in seen:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert mark in seen, (proc.wait(), seen + proc.stderr.read())
    return proc, seen
