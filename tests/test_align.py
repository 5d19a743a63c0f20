"""Face detection and alignment (dlib) on real photos: a real photograph shipped with scikit-image, and photos
made by placing shared LFW faces, scaled and rotated, into larger frames."""

from __future__ import annotations

import csv
import importlib.resources

import numpy as np
import pytest

from fiqa_trt.engine.geometry import DLIB5_IN_ARCFACE112, similarity_transform
from tests.cli_runner import run_cli

cv2 = pytest.importorskip("cv2")


def place_face(crop: np.ndarray, angle: float, scale: float, centre=(320, 240), size=(480, 640)) -> np.ndarray:
    """An LFW crop, padded, scaled and rotated, placed in a larger grey frame: a photo that needs alignment."""
    big = cv2.copyMakeBorder(crop, 40, 40, 40, 40, cv2.BORDER_REPLICATE)
    h, w = big.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += np.array(centre, float) - [w / 2, h / 2]
    frame = np.full((*size, 3), 90, np.uint8)
    return cv2.warpAffine(big, m, (size[1], size[0]), dst=frame, borderMode=cv2.BORDER_TRANSPARENT)


def astronaut() -> np.ndarray:
    path = importlib.resources.files("skimage") / "data" / "astronaut.png"
    if not path.is_file():
        pytest.skip("scikit-image's astronaut photo is not installed")
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def aligner():
    pytest.importorskip("dlib")
    from fiqa_trt.engine.align import FaceAligner

    return FaceAligner()


def test_a_real_photo_gives_one_aligned_face(aligner):
    faces = aligner.align(astronaut())
    assert len(faces) == 1
    face = faces[0]
    assert face.crop.shape == (112, 112, 3) and face.crop.dtype == np.uint8
    m = similarity_transform(face.landmarks, DLIB5_IN_ARCFACE112)
    mapped = face.landmarks @ m[:, :2].T + m[:, 2]
    assert np.sqrt(((mapped - DLIB5_IN_ARCFACE112) ** 2).sum(1).mean()) < 4  # a face shape close to the template


def test_aligned_faces_match_the_arcface_crop_of_the_same_face(aligner, lfw_files, real_model):
    """The LFW crops follow the 96x112 template, 8 px left of the ArcFace one (see engine.align): the aligned face
    must match the LFW crop moved 8 px right, and match it better than the crop as it is."""
    from fiqa_trt.engine.runners import load_runner

    runner = load_runner(str(real_model), "onnxruntime")
    to_arcface = np.float32([[1, 0, 8], [0, 1, 0]])
    shifted_cos, plain_cos, missed = [], [], 0
    for i, f in enumerate(lfw_files[::700][:12]):
        crop = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        faces = aligner.align(place_face(crop, angle=-8 + 16 * (i % 2), scale=1.8 + 0.2 * (i % 3)))
        if not faces:  # the HOG detector misses some tilted faces
            missed += 1
            continue
        shifted = cv2.warpAffine(crop, to_arcface, (112, 112), borderMode=cv2.BORDER_REPLICATE)
        e = runner.embed(np.stack([faces[0].crop, shifted, crop])).astype(np.float64)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        shifted_cos.append(e[0] @ e[1])
        plain_cos.append(e[0] @ e[2])
    print("cos with the ArcFace-shifted crop:", np.round(shifted_cos, 3), "with the crop as is:",
          np.round(plain_cos, 3))
    assert missed <= 2
    assert min(shifted_cos) > 0.8 and np.median(shifted_cos) > 0.9
    assert np.median(shifted_cos) > np.median(plain_cos)


def test_score_align_on_photos(lfw_files, real_model, tmp_path):
    pytest.importorskip("dlib")
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "astronaut.jpg"), cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    crops = [cv2.imread(str(f)) for f in lfw_files[:3]]
    for i, crop in enumerate(crops):
        cv2.imwrite(str(photos / f"placed{i}.jpg"), place_face(crop, angle=5 * i, scale=2.0))
    left, right = place_face(crops[0], 0, 1.6, centre=(170, 240)), place_face(crops[1], 0, 1.6, centre=(470, 240))
    cv2.imwrite(str(photos / "two_faces.png"), np.where(np.arange(640)[None, :, None] < 320, left, right))
    cv2.imwrite(str(photos / "no_face.png"), np.tile(np.linspace(0, 255, 640, dtype=np.uint8), (480, 1)))
    for flag, at_least in (("--align", 6), ("--all-faces", 7)):
        out = tmp_path / f"{flag[2:]}.csv"
        proc = run_cli("score", photos, "--model", real_model, flag, "--recipe", "seed", "--out", out)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        with open(out, newline="") as fh:
            rows = {r["path"].split("/photos/")[1]: r for r in csv.DictReader(fh)}
        assert len(rows) >= at_least, rows.keys()
        if flag == "--align":  # one row per photo, the largest face
            assert set(rows) == {"astronaut.jpg", "placed0.jpg", "placed1.jpg", "placed2.jpg", "two_faces.png",
                                 "no_face.png"}
        assert rows["no_face.png"]["error"] == "no face found"
        scored = {k: r for k, r in rows.items() if k != "no_face.png"}
        assert all(r["error"] == "" and 0 < float(r["quality"]) <= 1 for r in scored.values())
    assert {"two_faces.png#face0", "two_faces.png#face1", "astronaut.jpg#face0"} <= set(rows)


def test_default_model_scores_real_photos_with_align_and_no_shared_data(tmp_path):
    """The fresh-machine path: no --model (the default dlib model, converted on first use), --align on a real photo."""
    pytest.importorskip("dlib")
    import os

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "astronaut.jpg"), cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    flipped = cv2.flip(cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR), 1)
    cv2.imwrite(str(photos / "astronaut_mirrored.png"), flipped)
    env = {**os.environ, "FIQA_TRT_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "scores.csv"
    proc = run_cli("score", photos, "--align", "--recipe", "seed", "--out", out, env=env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(r["error"] == "" and 0.5 < float(r["quality"]) <= 1 for r in rows)
    assert abs(float(rows[0]["quality"]) - float(rows[1]["quality"])) < 0.05  # a mirror image scores alike
