"""Alignment of hard photos: weak false detections (a mission patch) and very large photos."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_align import astronaut

cv2 = pytest.importorskip("cv2")
pytest.importorskip("dlib")


def test_weak_detections_are_not_faces_by_default():
    from fiqa_trt.engine.align import FaceAligner

    photo = astronaut()  # dlib's HOG finds her face (score 1.16) and the mission patch on her suit (0.12)
    every = FaceAligner(all_faces=True, min_score=-1.0).align(photo)
    assert len(every) == 2 and min(f.score for f in every) < 0.2
    faces = FaceAligner(all_faces=True).align(photo)
    assert len(faces) == 1 and faces[0].score > 1.0
    left, top, right, bottom = faces[0].box
    assert 150 < left < right < 300 and 50 < top < bottom < 200  # the face, not the patch (y ~ 335)


def test_a_huge_photo_is_detected_on_a_small_copy_and_aligned_from_the_full_image():
    from fiqa_trt.engine.align import FaceAligner

    photo = astronaut()
    huge = cv2.resize(photo, (8000, 8000), interpolation=cv2.INTER_CUBIC)
    aligner = FaceAligner()
    seen = []
    detect = aligner._detect
    aligner._detect = lambda rgb: seen.append(rgb.shape) or detect(rgb)  # records what the detector was given
    faces = aligner.align(huge)
    assert seen == [(1600, 1600, 3)]
    assert len(faces) == 1
    reference = FaceAligner().align(photo)[0]
    np.testing.assert_allclose(np.asarray(faces[0].box) / (8000 / 512), reference.box, atol=10)  # HOG boxes move a few px with scale
    diff = np.abs(faces[0].crop.astype(float) - reference.crop.astype(float)).mean()
    assert diff < 8  # the same face, warped from the full-resolution photo (mean abs difference in 0-255 units)
