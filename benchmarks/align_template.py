"""Measure where dlib's 5 landmarks fall in the shared LFW 112x112 crops (the source of DLIB5_IN_ARCFACE112).

    python benchmarks/align_template.py [--images 200]

Each crop is padded (56 px, border replicated) and upscaled x2 so that the HOG detector sees some context, the
5-point predictor runs on the largest detection, and the points are mapped back to crop coordinates. Prints the
mean and spread of each point, the eye midpoint, and the template shifted to the ArcFace 112x112 convention.
"""

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from fiqa_trt.files import package_model_file

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw112"


def main() -> None:
    import dlib

    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args()
    files = sorted(LFW.glob("*/*.jpg"))[::40][: args.images]
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(package_model_file("shape_predictor_5_face_landmarks.dat")))
    points = []
    for f in files:
        rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        big = cv2.resize(cv2.copyMakeBorder(rgb, 56, 56, 56, 56, cv2.BORDER_REPLICATE), None, fx=2, fy=2)
        rects = detector.run(big, 0, 0)[0]
        if len(rects):
            shape = predictor(big, max(rects, key=lambda r: r.area()))
            points.append(np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], float) / 2 - 56)
    p = np.array(points)
    mean = p.mean(0)
    print(json.dumps({"images": len(files), "detected": len(p), "mean_in_lfw112": np.round(mean, 2).tolist(),
                      "std": np.round(p.std(0), 2).tolist(), "eye_midpoint_x": round(float(mean[:4, 0].mean()), 2),
                      "arcface112_template": np.round(mean + [8, 0], 2).tolist()}, indent=1))


if __name__ == "__main__":
    main()
