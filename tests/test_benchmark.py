"""The benchmark's arithmetic (FLOPs from the graph) and the shape of its report; no time is asserted."""

import onnx

from fiqa_trt.benchmark import model_flops, run_benchmark


def test_flops_of_the_synthetic_model_by_hand(random_model):
    conv1 = 2 * (8 * 28 * 28) * (3 * 3 * 3)
    conv2 = 2 * (8 * 7 * 7) * (8 * 3 * 3)
    matmul = 2 * 64 * (8 * 7 * 7)
    assert model_flops(onnx.load(str(random_model))) == conv1 + conv2 + matmul


def test_flops_of_the_shared_model(real_model):
    # the model's README: about 0.22 GMACs per image
    assert 0.40e9 < model_flops(onnx.load(str(real_model))) < 0.48e9


def test_report_is_consistent(random_model, face_like, tmp_path, monkeypatch):
    monkeypatch.setenv("FIQA_TRT_CACHE", str(tmp_path))
    report = run_benchmark(str(random_model), str(face_like[0].parent), images=4, backends=["onnxruntime"],
                           views=(1, 2), batch_sizes=(2,), ranking_images=4, progress=lambda m: None)
    assert report["machine"]["cores"] >= 1 and report["model_gflops_per_image"] > 0
    assert [(r["views"], r["precision"]) for r in report["rows"]] == [(1, "fp32"), (2, "fp32")]
    for r in report["rows"]:
        assert abs(r["forward_passes_per_s_inference"] - r["inference_images_per_s"] * (1 + r["views"])) < 0.2
        assert 0 < r["fraction_of_peak"] and abs(sum(r["stage_fraction"].values()) - 1) < 0.01
        assert r["inference_latency_ms_p50"] <= r["inference_latency_ms_p99"]
