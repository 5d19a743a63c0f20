"""The documentation: results pages and generated blocks in step with the results JSON, the mkdocs site building
strictly (broken links, missing pages and anchors fail), the README's shape that .ci/first_run and .ci/run rely
on, the first-hour transcript against what the code gives, and the robustness page's limits against the code's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RENDER = ROOT / "benchmarks" / "render.py"


def _run(args, **kw):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=300, **kw)


def test_rendered_pages_match_their_json():
    done = _run([RENDER, "--check"])
    assert done.returncode == 0, done.stderr[-4000:]


def test_render_check_fails_when_a_number_changes(tmp_path):
    for part in ("benchmarks/results", "docs", "fiqa_trt/weights/recipes"):
        shutil.copytree(ROOT / part, tmp_path / part)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    assert _run([RENDER, "--check", "--root", tmp_path]).returncode == 0
    results = tmp_path / "benchmarks/results/ray_cpu_amd-epyc-2core.json"
    doc = json.loads(results.read_text())
    doc["rows"][0]["quality_scores_per_s"] += 1.0
    results.write_text(json.dumps(doc))
    done = _run([RENDER, "--check", "--root", tmp_path])
    assert done.returncode == 1 and "docs/results/throughput.md" in done.stderr
    assert _run([RENDER, "--root", tmp_path]).returncode == 0  # re-rendering brings it back in step
    assert _run([RENDER, "--check", "--root", tmp_path]).returncode == 0
    assert f"| {doc['rows'][0]['quality_scores_per_s']:g} |" in (tmp_path / "docs/results/throughput.md").read_text()
    new = {"command": "python benchmarks/new.py", "commit": "abc123", "date": "2026-12-07 10:00 UTC",
           "runs": {"fast": {"images_per_s": 123.5}}}
    (tmp_path / "benchmarks/results/new_cpu.json").write_text(json.dumps(new))  # a file without a spec yet
    assert _run([RENDER, "--check", "--root", tmp_path]).returncode == 1
    assert _run([RENDER, "--root", tmp_path]).returncode == 0
    other = (tmp_path / "docs/results/other.md").read_text()
    assert "`python benchmarks/new.py`" in other and "`abc123`" in other and "| `runs/fast/images_per_s` | 123.5 |" in other


def test_docs_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("material", reason="the docs extra is not installed: pip install -e '.[docs]'")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1", DISABLE_MKDOCS_2_WARNING="true"))
    assert done.returncode == 0, done.stderr[-4000:]
    cli = (tmp_path / "site/reference/cli/index.html").read_text()
    for command in ("score", "eval", "calibrate", "gate", "serve", "export", "bench", "viz"):
        assert f"fiqa-trt {command}" in cli  # generated from the typer app
def _setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```[a-z]*\n(.*?)^```", section, flags=re.S | re.M)


def test_readme_is_a_short_router_whose_set_up_commands_ci_runs():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 200
    first, tests = _setup_commands()[:2]
    assert first.count("\n") == 1 and "fiqa-trt score" in first  # one line, as .ci/first_run runs it verbatim
    assert tests.strip() in (ROOT / ".ci/run").read_text().splitlines()  # .ci/run runs the README's test command


def test_first_hour_transcript_still_holds():
    """docs/first-hour.md and the README's quick starts are in step with the recorded run, their commands are
    accepted by today's command line, and the first quick start gives the recorded scores here."""
    done = _run([ROOT / "docs/tools/transcript.py", "check"], cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]


def _defaults(command: str) -> dict[str, object]:
    """{--option: default} of a command, read from the typer app."""
    import typer

    from fiqa_trt.cli.app import app

    group = typer.main.get_command(app)
    return {opt: p.default for p in group.commands[command].params for opt in getattr(p, "opts", [])}


def test_the_robustness_page_states_the_limits_the_code_has():
    """Every default the robustness page gives next to an option is that option's default, and the numbers of its
    signal and memory paragraphs are the code's."""
    from fiqa_trt.cli.console import Interrupts
    from fiqa_trt.engine import batching, budget
    from fiqa_trt.serve import batcher

    text = (ROOT / "docs/guide/robustness.md").read_text()
    stated = re.findall(r"`(--[a-z-]+)` \((?:default )?([\d,.]+)(?: s| MiB)?\)", text)
    assert len(stated) >= 9, stated
    serve, score = _defaults("serve"), _defaults("score")
    for option, value in stated:
        default = serve.get(option, score.get(option))
        assert default is not None and float(default) == float(value.replace(",", "")), (option, value, default)
    assert f"given {batching.STOP_WAIT_S:g} seconds to leave it" in text
    assert f"{Interrupts.GRACE_S:g} seconds after the signal" in text
    assert budget.SHARE == 0.5 and "at most half of the memory" in text
    assert f"an estimated {budget.SAMPLE_COPIES} copies" in text
    import inspect

    cap = inspect.signature(batcher.Batcher).parameters["batch_pixels"].default
    assert cap == 16 * 2**20 and "at most 16 × 2^20 decoded pixels" in text
