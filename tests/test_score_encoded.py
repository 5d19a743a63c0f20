"""Scorer.score_encoded (images held in memory, as the HTTP service receives them) against Scorer.score on files."""

from __future__ import annotations

import numpy as np
import pytest

from fiqa_trt.engine.inputs import Item, list_items
from fiqa_trt.engine.runners import load_runner
from fiqa_trt.engine.scorer import Scorer


@pytest.fixture(scope="module")
def runner(real_model):
    return load_runner(str(real_model))


def _same(a, b) -> None:
    assert (a.quality == b.quality or (np.isnan(a.quality) and np.isnan(b.quality))), (a, b)
    np.testing.assert_array_equal(a.cosines, b.cosines)
    assert (a.error, a.box, a.det_score) == (b.error, b.box, b.det_score)


def test_in_memory_images_score_as_their_files(runner, lfw_files, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in lfw_files[:: 1000][:10]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "z_cut.jpg").write_bytes(lfw_files[3].read_bytes()[:2000])
    (folder / "z_notes.jpg").write_text("not an image")
    items = list_items(folder)
    scorer = Scorer(runner, perturb=["affine:rot=0.5,scale=1.01,flip=1", "occlusion:size=10:30"], views=2,
                    batch_size=4)
    from_files = list(scorer.score(items))
    encoded = [Item(it.path, it.key, data=np.frombuffer(open(it.path, "rb").read(), np.uint8)) for it in items]
    in_memory = scorer.score_encoded(encoded[:5]) + scorer.score_encoded(encoded[5:])  # two calls, batches of 4
    assert [r.path for r in in_memory] == [r.path for r in from_files]
    for a, b in zip(in_memory, from_files):
        _same(a, b)
    errors = {r.path.rsplit("/", 1)[-1]: r.error for r in in_memory if r.error}
    assert errors == {"z_cut.jpg": "cannot decode image (corrupt or truncated file)",
                      "z_notes.jpg": "not an image (unrecognised file format)"}


def test_aligned_photos_carry_the_face_box_and_detector_score(runner, lfw_files, tmp_path):
    pytest.importorskip("dlib")
    import cv2

    from fiqa_trt.engine.align import FaceAligner

    photo = cv2.resize(cv2.imread(str(lfw_files[0])), (300, 300), interpolation=cv2.INTER_CUBIC)
    photo = cv2.copyMakeBorder(photo, 50, 50, 80, 80, cv2.BORDER_CONSTANT, value=(90, 90, 90))
    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((200, 200, 3), 128, np.uint8))
    scorer = Scorer(runner, aligner=FaceAligner())
    items = list_items(tmp_path)
    from_files = list(scorer.score(items))
    in_memory = scorer.score_encoded([Item(it.path, it.key, data=open(it.path, "rb").read()) for it in items])
    for a, b in zip(in_memory, from_files):
        _same(a, b)
    blank, face = in_memory
    assert blank.error == "no face found" and blank.box is None
    left, top, right, bottom = face.box
    assert 80 <= left < right <= 460 and 50 <= top < bottom <= 400 and face.det_score > 0
    assert face.error is None and 0 < face.quality <= 1


def test_mixup_is_refused_for_in_memory_images(runner):
    from fiqa_trt.errors import FiqaError

    with pytest.raises(FiqaError, match="mixup"):
        Scorer(runner, perturb=["mixup"]).score_encoded([Item("a", "a", data=b"x")])
