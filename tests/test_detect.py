"""The MTCNN face detector (engine.detect): its array code against plain references and OpenCV, real LFW faces pasted
at known positions and sizes into larger frames (found, landmarks near the known points, aligned onto the
template), frames without faces, batching across frames of several sizes, and its TensorRT calls against the
recorded APIs."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.harness.scenes import ARCFACE_112, photo_background, place_face, texture
from fiqa_trt.engine import detect
from fiqa_trt.errors import FiqaError

cv2 = pytest.importorskip("cv2")

# LFW crops (sorted shared files, by index), their side in the frame and centre: one frame of 1280x720
PLACED = [(10, 40, (110, 130)), (2000, 80, (300, 200)), (5000, 160, (600, 330)), (9000, 320, (1000, 420))]


def _greedy(boxes, scores, groups, threshold, mode):
    """Plain greedy NMS, box by box: the reference."""
    kept = []
    for g in sorted(set(groups.tolist())):
        idx = np.nonzero(groups == g)[0]
        chosen: list[int] = []
        for i in idx[np.argsort(-scores[idx], kind="stable")]:
            if all(detect.overlap(np, boxes[[i]], boxes[[k]], mode)[0] <= threshold for k in chosen):
                chosen.append(i)
        kept += chosen
    return kept


@pytest.mark.parametrize("budget", [detect.PAIR_BUDGET, 0])
def test_nms_is_greedy_nms_per_group(budget, monkeypatch):
    monkeypatch.setattr(detect, "PAIR_BUDGET", budget)  # 0: the round-by-round way for every group
    rng = np.random.default_rng(1)
    for trial in range(30):
        n = int(rng.integers(1, 120))
        xy, wh = rng.uniform(0, 200, (n, 2)), rng.uniform(5, 60, (n, 2))
        boxes = np.hstack([xy, xy + wh]).astype(np.float32)
        scores, groups = rng.uniform(0, 1, n).astype(np.float32), rng.integers(0, 4, n)
        threshold, mode = float(rng.uniform(0.2, 0.8)), ("union", "min")[trial % 2]
        got = detect.nms(np, boxes, scores, groups, threshold, mode)
        assert got.tolist() == _greedy(boxes, scores, groups, threshold, mode)
    assert detect.nms(np, np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), 0.5).shape == (0,)


def test_array_code_resizes_and_warps_as_opencv():
    """The CuPy path's resize and warp (array code, run here on NumPy) against OpenCV's INTER_AREA and warpAffine."""
    rng = np.random.default_rng(2)
    image = cv2.GaussianBlur(rng.integers(0, 256, (181, 243, 3), dtype=np.uint8), (5, 5), 1.5)
    array, opencv = detect.ArrayOps(np), detect.OpenCvOps()
    for size in [(90, 121), (37, 50), (13, 24)]:
        diff = np.abs(array.resize(image, size).astype(int) - opencv.resize(image, size).astype(int))
        assert diff.max() <= 1, size
    m = np.array([[[0.7, -0.2, 30.3], [0.25, 0.8, -12.6]], [[2.1, 0.0, 100.2], [0.0, 2.1, 90.7]]])
    for replicate in (False, True):
        diff = np.abs(array.warp(image, m, 48, replicate).astype(int) - opencv.warp(image, m, 48, replicate)
                      .astype(int))
        assert np.percentile(diff, 99) <= 1 and diff.max() <= 3, replicate


@pytest.fixture(scope="module")
def scene(lfw_files):
    frame = photo_background("coffee.jpg", (720, 1280))
    truth = [place_face(frame, cv2.imread(str(lfw_files[i])), centre, side) for i, side, centre in PLACED]
    return frame, truth


@pytest.fixture(scope="module")
def mtcnn():
    return detect.Mtcnn(min_face=24, channels="bgr", backend="onnxruntime", threads=2)


def _match(found: detect.Detections, truth: list[np.ndarray]) -> list[float]:
    """Each known face's landmark error (mean over the 5 points, in inter-ocular distances) against the detection
    nearest to it; every detection must belong to one face."""
    assert len(found) == len(truth), found.boxes
    errors = []
    for points in truth:
        iod = np.linalg.norm(points[1] - points[0])
        j = int(np.argmin([np.abs(p - points).mean() for p in found.points]))
        box = found.boxes[j]
        assert box[0] < points[:, 0].min() and box[2] > points[:, 0].max() and box[1] < points[:, 1].min()
        errors.append(float(np.linalg.norm(found.points[j] - points, axis=1).mean() / iod))
    return errors


def test_finds_real_faces_with_their_landmarks(scene, mtcnn):
    frame, truth = scene
    (found,) = mtcnn.detect([frame])
    errors = _match(found, truth)
    # measured: 0.04-0.10 (the LFW crops' own alignment is part of it: their points are near the template, not on it)
    assert max(errors) < 0.2, errors
    assert (found.scores > detect.THRESHOLDS[2]).all() and np.all(np.diff(found.scores) <= 0)


def test_smallest_face_option(scene):
    """Faces below the smallest face asked for are not searched for (the 40 px one), the others still found."""
    frame, truth = scene
    (found,) = detect.Mtcnn(min_face=100, channels="bgr", backend="onnxruntime", threads=2).detect([frame])
    assert len(found) == 2 and min(found.boxes[:, 2] - found.boxes[:, 0]) > 80


def test_no_face_in_frames_without_faces(mtcnn):
    import skimage.data

    frames = [photo_background("coffee.jpg", (720, 1280)), texture((720, 1280), 1), texture((480, 640), 2),
              np.ascontiguousarray(skimage.data.chelsea()[..., ::-1])]
    assert [len(d) for d in mtcnn.detect(frames)] == [0, 0, 0, 0]


def test_a_batch_of_frames_of_several_sizes_gives_each_frame_its_own_faces(scene, mtcnn, lfw_files):
    frame, _ = scene
    small = texture((240, 320), 3)
    place_face(small, cv2.imread(str(lfw_files[42])), (160, 120), 100)
    alone = [mtcnn.detect([f])[0] for f in (frame, small, frame)]
    batched = mtcnn.detect([frame, small, frame])
    for a, b in zip(alone, batched):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.points, b.points, atol=1e-3)
    assert len(batched[1]) == 1


def test_array_code_path_finds_the_same_faces(scene, mtcnn):
    """The GPU path's array code (resize, crops, warps), run here on NumPy, finds the faces OpenCV's path finds."""
    frame, truth = scene
    array = detect.Mtcnn(min_face=24, channels="bgr", backend="onnxruntime", threads=2)
    array.ops = detect.ArrayOps(np)
    (a,), (b,) = array.detect([frame]), mtcnn.detect([frame])
    ia, ib = np.argsort(a.boxes[:, 0]), np.argsort(b.boxes[:, 0])  # (the scores of clear faces tie near 1)
    assert len(a) == len(b) == len(truth)
    assert (detect.overlap(np, a.boxes[ia], b.boxes[ib]) > 0.85).all()
    # the box regression amplifies the few grey levels the two ways of resampling differ by: a few % of the box
    np.testing.assert_allclose(_match(a, truth), _match(b, truth), atol=0.03)


def test_channel_orders_and_the_aligned_crops(scene, lfw_files):
    """RGB frames through an RGB graph give what BGR frames give through a BGR one; each face is warped onto the
    ArcFace template (the LFW crop moved 8 px right), at the crop size asked for, in RGB."""
    frame, truth = scene
    bgr = detect.MtcnnAligner(size=(112, 112), all_faces=True, min_face=24, channels="bgr", threads=2)
    rgb = detect.MtcnnAligner(size=(112, 112), all_faces=True, min_face=24, channels="rgb", threads=2)
    faces, same = bgr.align(frame), rgb.align(np.ascontiguousarray(frame[..., ::-1]))
    assert [f.box for f in faces] == [f.box for f in same] and len(faces) == 4
    assert np.abs(faces[0].crop.astype(int) - same[0].crop.astype(int)).max() <= 1
    # largest first: the 320 px face; against its LFW crop moved onto the ArcFace template
    original = cv2.cvtColor(cv2.imread(str(lfw_files[PLACED[-1][0]])), cv2.COLOR_BGR2RGB)
    on_template = cv2.warpAffine(original, np.float32([[1, 0, 8], [0, 1, 0]]), (112, 112),
                                 borderMode=cv2.BORDER_REPLICATE)
    centre = (slice(24, 100), slice(24, 88))  # eyes to mouth
    assert np.abs(faces[0].crop[centre].astype(int) - on_template[centre].astype(int)).mean() < 20
    assert np.abs(faces[0].crop[centre].astype(int) - original[centre].astype(int)).mean() > \
        np.abs(faces[0].crop[centre].astype(int) - on_template[centre].astype(int)).mean()
    big = detect.MtcnnAligner(size=(128, 128), min_face=24, channels="bgr", threads=2).align(frame)
    assert len(big) == 1 and big[0].crop.shape == (128, 128, 3)
    np.testing.assert_allclose(big[0].landmarks, faces[0].landmarks)


def test_options_and_inputs_are_checked():
    with pytest.raises(FiqaError, match="at least 12 px"):
        detect.Mtcnn(min_face=8)
    with pytest.raises(FiqaError, match="unknown face detector 'retina'"):
        detect.make_aligner("retina")
    with pytest.raises(FiqaError, match=r"\(H, W, 3\) uint8 frames"):
        detect.Mtcnn(backend="onnxruntime").detect([np.zeros((10, 10), np.uint8)])
    with pytest.raises(FiqaError, match="unknown channel order"):
        detect.mtcnn_graph("pnet", "yuv")
    assert len(detect.Mtcnn(backend="onnxruntime").detect([np.zeros((8, 8, 3), np.uint8)])[0]) == 0


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_backends_agree(scene, backend):
    pytest.importorskip(backend)
    frame, _ = scene
    (found,) = detect.Mtcnn(min_face=24, channels="bgr", backend=backend, threads=2).detect([frame])
    assert len(found) == 4


# ---- TensorRT: the calls against the recorded APIs (engines are only built and run where TensorRT and a GPU are)


@pytest.mark.parametrize("version", ["10.13", "11.4"])
def test_tensorrt_graph_calls_fit_the_api(version):
    from fiqa_trt.engine.runners import graphs, tensorrt
    from tests.tensorrt_api.standin import StandInObject, StandInTensorRT, numpy_type

    names = ["image", "conv2d_4", "softmax"]
    trt = StandInTensorRT(version, behaviour={
        ("OnnxParser", "parse"): lambda obj, data: len(data) > 0,
        ("OnnxParser", "num_errors"): 0,
        ("Builder", "build_serialized_network"): lambda obj, network, config: b"engine",
        ("ITimingCache", "serialize"): lambda obj: b"",
        ("Runtime", "deserialize_cuda_engine"): lambda obj, data: StandInObject(trt, "ICudaEngine"),
        ("ICudaEngine", "num_io_tensors"): 3,
        ("ICudaEngine", "get_tensor_name"): lambda obj, i: names[i],
        ("ICudaEngine", "get_tensor_mode"): lambda obj, n: trt.TensorIOMode.INPUT if n == "image"
        else trt.TensorIOMode.OUTPUT,
        ("ICudaEngine", "get_tensor_dtype"): lambda obj, n: trt.DataType.UINT8 if n == "image"
        else trt.DataType.FLOAT,
        ("IExecutionContext", "set_input_shape"): lambda obj, name, shape: obj.state.update(shape=shape) or True,
        ("IExecutionContext", "get_tensor_shape"): lambda obj, n: (obj.state["shape"][0], 5, 7,
                                                                   4 if n == "conv2d_4" else 2),
        ("IExecutionContext", "set_tensor_address"): lambda obj, n, ptr: True,
        ("IExecutionContext", "execute_async_v3"): lambda obj, stream: True,
        ("tensorrt", "nptype"): numpy_type,
    })
    proto = detect.mtcnn_graph("pnet", "bgr")
    shapes = {"image": ((1, 12, 12, 3), (8, 203, 360, 3), (16, 406, 720, 3))}
    engine, _ = tensorrt.build_serialized(trt, proto, None, 1.0, b"", "MTCNN pnet", shapes=shapes)
    assert engine == b"engine"
    calls = {name: args for name, args, _ in trt.calls}
    assert calls["IOptimizationProfile.set_shape"] == ("image", *shapes["image"])
    session = graphs.GraphSession(trt, engine)
    assert (session.input, session.outputs) == ("image", ["conv2d_4", "softmax"])
    assert session.set_input((4, 24, 30, 3)) == [(4, 5, 7, 4), (4, 5, 7, 2)]
    session.bind({"image": 1, "conv2d_4": 2, "softmax": 3})
    session.enqueue(99)
    assert [name for name, _, _ in trt.calls][-4:] == ["IExecutionContext.set_tensor_address"] * 3 + [
        "IExecutionContext.execute_async_v3"]
    key = graphs.engine_key("ab" * 32, "10.13.0", "NVIDIA H100", (9, 0), shapes)
    assert key["id"] != graphs.engine_key("ab" * 32, "10.13.0", "NVIDIA H100", (9, 0),
                                          {"image": ((1, 12, 12, 3), (8, 203, 360, 3), (32, 406, 720, 3))})["id"]


def test_graphs_keep_the_networks_outputs():
    """The rewritten graphs (uint8 NHWC in, normalisation and layout inside) give the original networks' outputs."""
    import onnxruntime as ort

    rng = np.random.default_rng(3)
    for name, shape in (("pnet", (2, 30, 41, 3)), ("onet", (3, 48, 48, 3))):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        original = ort.InferenceSession(str(detect.mtcnn_file(f"{name}.onnx")), providers=["CPUExecutionProvider"])
        want = original.run(None, {original.get_inputs()[0].name:
                                   ((image.astype(np.float32) - 127.5) / 128).transpose(0, 2, 1, 3)})
        graph = ort.InferenceSession(detect.mtcnn_graph(name, "bgr").SerializeToString(),
                                     providers=["CPUExecutionProvider"])
        got = graph.run(None, {"image": np.ascontiguousarray(image[..., ::-1])})
        for g, w in zip(got, want):
            w = w.transpose(0, 2, 1, 3) if name == "pnet" else w
            np.testing.assert_allclose(g, w, atol=1e-4)
    assert ARCFACE_112.shape == (5, 2)


def test_photos_align_with_mtcnn_in_score(real_model, tmp_path):
    """`score --align --detector mtcnn`: the astronaut's face (not the mission patch dlib's HOG finds weakly), and a
    photo without a face as an error row; a huge copy of the photo is searched as if it were PHOTO_DETECT_SIZE."""
    import csv

    from typer.testing import CliRunner

    from fiqa_trt.cli.app import app
    from tests.test_align import astronaut

    photos = tmp_path / "photos"
    photos.mkdir()
    photo = astronaut()
    cv2.imwrite(str(photos / "astronaut.png"), photo[..., ::-1])
    cv2.imwrite(str(photos / "texture.png"), texture((300, 400), 5))
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["score", str(photos), "--model", str(real_model), "--backend", "onnxruntime",
                                      "--align", "--all-faces", "--detector", "mtcnn", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(out.open())}
    assert sorted(rows) == ["astronaut.png#face0", "texture.png"] and rows["texture.png"]["error"] == "no face found"
    face = rows["astronaut.png#face0"]
    assert 150 < int(face["box_left"]) < int(face["box_right"]) < 300 and int(face["box_bottom"]) < 200
    aligner = detect.make_aligner("mtcnn")
    huge = cv2.resize(photo, (6400, 6400), interpolation=cv2.INTER_CUBIC)
    assert aligner.mtcnn.smallest_face(6400, 6400) == detect.MIN_FACE * 4
    (big,), (small,) = aligner.align(huge), aligner.align(photo)
    np.testing.assert_allclose(np.asarray(big.box) / 12.5, small.box, atol=6)  # a few % of the face
    # the same points (pixel centres scale about -0.5) and the same face, warped from the full-size photo
    assert np.abs((big.landmarks + 0.5) / 12.5 - 0.5 - small.landmarks).max() < 3
    assert np.abs(big.crop.astype(float) - small.crop.astype(float))[24:100, 24:88].mean() < 10
