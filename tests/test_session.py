"""The resolver and the one session every command opens: each value with where it came from (printed with -v,
written into the Parquet metadata), the precision choice from the ranking-check records, and the checks of every
option that come before any model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli_runner import run_cli


def fiqa(*args, **kwargs):
    proc = run_cli(*args, **kwargs)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_resolution_names_the_source_of_each_value(real_model):
    from fiqa_trt.engine.resolve import resolve
    from fiqa_trt.engine.settings import ScoringSettings

    plain = resolve(ScoringSettings(model=str(real_model)))
    assert plain.recipe.name == "mobilefacenet-default" and plain.sources["recipe"] == "model registry"
    assert plain.sources["mean"] == plain.sources["color"] == "model registry"
    assert plain.realign == "auto" and plain.sources["realign"] == "recipe 'mobilefacenet-default'"
    assert plain.calibration == plain.recipe.calibration is not None
    given = resolve(ScoringSettings(model=str(real_model), mean=(1.0, 2.0, 3.0), precision="fp32", realign="off",
                                    backend="onnxruntime"))
    assert given.sources["mean"] == "option --mean" and given.sources["std"] == "model registry"
    assert (given.precision, given.sources["precision"]) == ("fp32", "option --precision")
    assert (given.backend, given.sources["backend"]) == ("onnxruntime", "option --backend")
    assert (given.realign, given.sources["realign"]) == ("off", "option --realign")
    aligned = resolve(ScoringSettings(model=str(real_model), align=True))
    assert aligned.realign == "off" and "face aligner" in aligned.sources["realign"]


def test_the_session_runs_what_the_resolution_says(real_model):
    from fiqa_trt.engine.session import open_session
    from fiqa_trt.engine.settings import ScoringSettings

    session = open_session(ScoringSettings(model=str(real_model), mean=(100.0, 110.0, 120.0), std=(50.0,),
                                           backend="onnxruntime", precision="fp32"))
    cfg = session.runner.config
    assert cfg.mean == (100.0, 110.0, 120.0) and cfg.std == (50.0, 50.0, 50.0)
    values = session.resolution.values()
    assert values["mean"] == [100.0, 110.0, 120.0] and values["input_size"] == [112, 112]
    assert session.scorer.recipe is session.resolution.recipe
    assert session.template_report.startswith("template check per crop (auto")  # the recipe's, for every crop
    assert type(session.scorer.aligner).__name__ == "Realigner"


def test_auto_precision_is_chosen_from_the_ranking_check_records(random_model, tmp_path, monkeypatch):
    from fiqa_trt.engine import precision
    from fiqa_trt.engine.resolve import resolve
    from fiqa_trt.engine.runners import supported_precisions
    from fiqa_trt.engine.settings import ScoringSettings
    from fiqa_trt.files import sha256_of

    monkeypatch.setenv("FIQA_TRT_CACHE", str(tmp_path))
    pytest.importorskip("openvino")
    settings = ScoringSettings(model=str(random_model), backend="openvino", perturb=("affine",))
    first = resolve(settings)
    assert first.precision == "fp32" and first.sources["precision"].startswith("auto:")
    reduced = [p for p in supported_precisions("openvino") if p != "fp32"]
    if not reduced:
        pytest.skip("this CPU has no reduced precision")
    precision.record(sha256_of(random_model), "openvino", reduced[0], 0.999, 100, "test")
    chosen = resolve(settings)
    assert chosen.precision == reduced[0] and "Spearman 0.9990" in chosen.sources["precision"]


def test_ranking_check_scores_both_precisions_and_records_a_pass(random_model, face_like, tmp_path, monkeypatch):
    from fiqa_trt.engine import precision
    from fiqa_trt.engine.inputs import list_items
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.errors import FiqaError
    from fiqa_trt.files import sha256_of

    monkeypatch.setenv("FIQA_TRT_CACHE", str(tmp_path))
    reference = load_runner(str(random_model), "onnxruntime", "fp32")
    items = list_items(str(face_like[0].parent))
    check = precision.ranking_check(reference, load_runner(str(random_model), "onnxruntime", "fp32"), items, "x")
    assert check["passed"] and check["spearman_vs_fp32"] == pytest.approx(1.0) and check["images"] == 4
    assert precision.validated(sha256_of(random_model), "onnxruntime", "fp32") == pytest.approx(1.0)
    with pytest.raises(FiqaError, match="at least 2 images"):
        precision.ranking_check(reference, reference, items[:1], "x")


def test_score_prints_the_resolution_with_v_and_writes_it_into_parquet(random_model, face_like, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "s.parquet"
    proc = fiqa("score", face_like[0].parent, "-m", random_model, "--mean", "120,121,122", "-o", out, "-v")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stderr.split())
    assert "mean: 120, 121, 122 (option --mean)" in text and "precision: fp32" in text
    meta = json.loads(pq.read_schema(out).metadata[b"fiqa_trt"])
    assert meta["resolution"]["mean"] == {"value": [120.0, 121.0, 122.0], "source": "option --mean"}
    assert meta["resolution"]["recipe"]["value"] == "stability"
    assert meta["config"]["mean"] == [120.0, 121.0, 122.0]


def test_views_and_agg_with_the_model_recipe_are_refused_in_one_line(random_model, face_like):
    """A recipe has its own views and fusion: --views and --agg shape a --perturb stability score and are refused
    with the model's default recipe (given or implicit) rather than ignored."""
    for extra in (["--views", "3"], ["--agg", "min"], ["--recipe", "seed", "--views", "2"]):
        proc = fiqa("score", face_like[0].parent, "-m", random_model, *extra)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
        assert "--perturb SPEC" in " ".join(proc.stderr.split())
    proc = fiqa("score", face_like[0].parent, "-m", random_model, "-p", "affine:rot=-3:3", "--views", "3",
                "--agg", "min")
    assert proc.returncode == 0 and proc.stdout.splitlines()[0].count("cos_") == 3


@pytest.mark.parametrize("args, fragment", [
    (["score", "{in}", "--batch-size", "0"], "--batch-size 0"),
    (["score", "{in}", "--threads", "-2"], "--threads -2"),
    (["score", "{in}", "--mean", "nan"], "--mean nan"),
    (["score", "{in}", "--std", "0"], "--std 0"),
    (["score", "{in}", "--views", "0"], "--views 0"),
    (["score", "{in}", "--perturb", "affine", "--views", "3"], "every --perturb spec here is fixed"),
    (["score", "{in}", "--detector", "cnn"], "add --align"),
    (["score", "{in}", "--workers", "3"], "add --ray"),
    (["score", "{in}", "--ray-address", "auto"], "add --ray"),
    (["score", "{in}", "--cpus-per-worker", "2"], "add --ray"),
    (["score", "{in}", "--realign", "maybe"], "unknown --realign"),
    (["eval", "{in}", "--generate", "--batch-size", "0"], "--batch-size 0"),
    (["eval", "{in}", "--generate", "--bootstrap-seed", "-1"], "--bootstrap-seed -1: give a seed of at least 0"),
    (["gate", "{in}", "--scale", "foo"], "unknown score scale 'foo'"),
    (["serve", "--port", "70000"], "--port 70000"),
    (["serve", "--max-upload-mb", "-1"], "--max-upload-mb -1"),
    (["bench", "--data", "{in}", "--ranking-images", "0"], "--ranking-images 0"),
])
def test_options_are_checked_before_the_model_loads(face_like, tmp_path, args, fragment):
    """Each mistake is reported in one line with a model file that is not a model at all: loading it would fail
    with another message, so the option was checked first."""
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    values = {"in": face_like[0].parent}
    proc = fiqa(*[a.format(**values) for a in args], "--model", garbage)
    assert proc.returncode == 2, proc.stderr
    text = " ".join(proc.stderr.split())
    assert fragment in text and "garbage" not in text, text
