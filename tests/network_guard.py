"""Running a command so that any outbound network attempt is refused and recorded: Python-level connections and name
lookups through tests/no_network/sitecustomize.py (in the process and every Python process it starts), and, where
strace can trace here, the connect/sendto/sendmsg system calls of the whole process tree (native code included).
The process runs as a fresh user would: a new home folder, and no CI variables (some libraries stay quiet in CI)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOOK = Path(__file__).resolve().parent / "no_network"
_ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')
_CI = ("CI", "TF_BUILD", "JENKINS_URL", "GITHUB_ACTIONS", "GITLAB_CI")


def strace_works() -> bool:
    if shutil.which("strace") is None:
        return False
    done = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect", "-o", os.devnull, "true"],
                          capture_output=True)
    return done.returncode == 0


def guarded(command: list[str], folder: Path) -> tuple[list[str], dict]:
    """(the command wrapped in strace where it works, its environment); the records go to files in `folder`."""
    home = folder / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in _CI}
    env.update(HOME=str(home), FIQA_NETWORK_LOG=str(folder / "python_attempts.jsonl"),
               PYTHONPATH=os.pathsep.join([str(HOOK), str(ROOT), env.get("PYTHONPATH", "")]))
    if strace_works():
        command = ["strace", "-f", "-qq", "-e", "signal=none", "-e", "trace=connect,sendto,sendmsg", "-o",
                   str(folder / "syscalls.txt"), *command]
    return command, env


def outbound_attempts(folder: Path) -> list[str]:
    """Every recorded attempt to reach another machine (empty: none)."""
    attempts = []
    log = folder / "python_attempts.jsonl"
    if log.exists():
        attempts += log.read_text().splitlines()
    trace = folder / "syscalls.txt"
    if trace.exists():
        for line in trace.read_text().splitlines():
            for v4, v6 in _ADDRESS.findall(line):
                address = v4 or v6
                if not (address.startswith("127.") or address in ("::1", "0.0.0.0", "::")):
                    attempts.append(line)
    return attempts
