"""The network policy: a `score` run opens no outbound connection and makes no name lookup: OpenVINO's usage
telemetry (sent when `openvino` is imported) and ONNX Runtime's (sent from native threads of a long-lived process)
are opted out before either loads, so neither writes its client id either. `serve`: tests/test_serve.py runs its
budget server under the same guard, long enough for ONNX Runtime's uploader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.network_guard import guarded, outbound_attempts

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "faces"


def test_a_score_run_opens_no_outbound_connection(random_model, tmp_path):
    command, env = guarded([sys.executable, "-m", "fiqa_trt.cli", "score", str(EXAMPLES), "-m", str(random_model),
                            "--backend", "openvino", "-o", str(tmp_path / "s.csv"), "-q"], tmp_path)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 7
    assert outbound_attempts(tmp_path) == []
    home = tmp_path / "home"  # no telemetry client id, device id or event cache written either
    assert not (home / "intel").exists() and not (home / ".cache" / "Microsoft").exists()
