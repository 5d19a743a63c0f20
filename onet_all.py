import sys; sys.path.insert(0, "/work/wt/quality")
import numpy as np, cv2
from fiqa_trt.engine import template as t
imgs = np.load("/work/scratch/quality/cache/images.npy", mmap_mode="r")
lm = t.Landmarks(threads=1)
pts, prob = [], []
for s in range(0, len(imgs), 256):
    b = np.stack([cv2.warpAffine(np.ascontiguousarray(im), np.float64([[1,0,8],[0,1,0]]), (112,112), borderMode=cv2.BORDER_REPLICATE) for im in imgs[s:s+256]])
    p, f = lm(b); pts.append(p); prob.append(f)
np.save("/work/scratch/quality/cache/onet_re_points.npy", np.concatenate(pts)); np.save("/work/scratch/quality/cache/onet_re_prob.npy", np.concatenate(prob))
print("done")
