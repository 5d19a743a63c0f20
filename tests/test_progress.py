"""Progress on standard error when it is not a terminal: plain lines, one per phase and one every period, with
done/total, rate and ETA; long commands (eval, calibrate) run with their output redirected to files say at least
every 30 s that they are working."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from tests.conftest import write_image

STAMP = re.compile(r"^\[(?:(\d+) h )?(?:(\d+) min )?(\d+) s\] ", re.M)


def stamps(text: str) -> list[int]:
    """The elapsed seconds of each progress line."""
    return [int(h or 0) * 3600 + int(m or 0) * 60 + int(s) for h, m, s in STAMP.findall(text)]


def test_plain_lines_say_done_total_rate_and_eta():
    from fiqa_trt.cli.progress import Reporter

    out = io.StringIO()
    with Reporter(Console(file=out, force_terminal=False), period=0.05) as reporter:
        reporter.phase("opening")
        time.sleep(0.2)
        reporter.phase("scoring", total=10)
        reporter.advance(4)
        time.sleep(0.2)
        reporter.advance(6)
    text = out.getvalue()
    assert "opening ..." in text and "opening: running for" in text
    assert re.search(r"scoring: 4/10 \(40%\), [\d.]+ img/s, ETA ", text), text
    assert "scoring: 10/10 done in" in text
    assert all(line.startswith("[") for line in text.splitlines())
    stopped = io.StringIO()  # a run interrupted half-way does not say done
    with Reporter(Console(file=stopped, force_terminal=False), period=0.05) as reporter:
        reporter.phase("scoring", total=6)
        reporter.advance(2)
    assert "scoring: stopped at 2/6 after" in stopped.getvalue() and "done" not in stopped.getvalue()
    quiet = io.StringIO()
    with Reporter(Console(file=quiet, force_terminal=False), quiet=True, period=0.05) as reporter:
        reporter.phase("x", 2)
        reporter.advance(2)
    assert quiet.getvalue() == ""


@pytest.fixture
def identity_folders(tmp_path) -> Path:
    """Eight identities of four structured 112x112 images each (enough pairs for an EDC)."""
    rng = np.random.default_rng(3)
    root = tmp_path / "ids"
    yy, xx = np.mgrid[0:112, 0:112]
    for i in range(8):
        (root / f"id{i}").mkdir(parents=True)
        for j in range(4):
            img = np.stack([(xx * (i + 1) + 7 * j) % 256, (yy * (j + 1) + 30 * i) % 256, ((xx + yy) * 3) % 256],
                           -1).astype(np.uint8)
            img[20 + 3 * j : 60, 30 + 2 * i : 70] = rng.integers(0, 255, 3)
            write_image(root / f"id{i}" / f"{j}.png", img)
    return root


def run_redirected(tmp_path: Path, *args) -> tuple[int, str]:
    """`fiqa-trt ARGS` as a real process with standard output and error redirected to files; (exit code, stderr)."""
    env = {**os.environ, "FIQA_TRT_PROGRESS_SECONDS": "0.5", "COLUMNS": "200"}
    with open(tmp_path / "stdout.txt", "w") as out, open(tmp_path / "stderr.txt", "w") as err:
        code = subprocess.run([sys.executable, "-m", "fiqa_trt.cli", *map(str, args)], stdout=out, stderr=err,
                              env=env, timeout=600).returncode
    return code, (tmp_path / "stderr.txt").read_text()


def check_progress(text: str, phases: list[str]) -> None:
    seconds = stamps(text)
    assert len(seconds) >= 4, text
    assert max(np.diff([0] + seconds)) <= 30, text  # a progress line at least every 30 s
    for phase in phases:
        assert re.search(rf"^\[[^\]]+\] {re.escape(phase)}", text, re.M), (phase, text)


def test_eval_with_its_output_redirected_reports_progress(random_model, identity_folders, tmp_path):
    code, text = run_redirected(tmp_path, "eval", identity_folders, "--generate", "--model", random_model,
                                "--bootstrap", "0", "--no-plots", "--out-dir", tmp_path / "ev", "--batch-size", "4")
    assert code == 0, text
    check_progress(text, ["opening the model", "embedding: 0/32", "embedding: 32/32 done", "evaluating"])


def test_calibrate_with_its_output_redirected_reports_progress(random_model, identity_folders, tmp_path):
    code, text = run_redirected(tmp_path, "calibrate", random_model, identity_folders, "--recipe",
                                "lognorm-ui-flip", "--no-store", "--bootstrap", "0", "--batch-size", "4")
    assert code == 0, text
    check_progress(text, ["opening the model", "the centre: lowres", "embedding: 0/32",
                          "embedding: 32/32 done", "the degradation check", "fitting the weights"])
