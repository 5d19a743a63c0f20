"""The cross-quality protocol (the idea of XQLFW, for any identity folders or pair file): a seeded share of the
images is replaced by a copy degraded by one realistic kind at a random strength (`degradations.REALISTIC`), and
verification and quality are both computed on the images as they then are, so a pair may hold a clean and a
degraded image, two degraded ones, or two clean ones.

Each image's draw depends only on (seed, its key): whether it is degraded (probability `share`), the kind (uniform
over `kinds`) and the strength (uniform in [0, 1]); the same image gets the same copy whatever else is evaluated.
`materialise` writes the degraded copies as PNG (lossless: the degradation is the only change) into a folder beside
links to the clean images and returns the pair set over that folder; a degraded image's key is the original's with
`.<kind>.png` added to its stem (`Name/Name_0001.jpg` -> `Name/Name_0001.blur.png`), so its identity is kept and
another method's score file for the clean image is never matched to it. The folder holds a manifest of what it was
made from; a complete one made from the same images with the same settings is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fiqa_trt.errors import FiqaError
from fiqa_trt.evaluation import degradations

MANIFEST = "crossquality.json"
FORMAT = 1


@dataclass(frozen=True)
class CrossQuality:
    share: float = 0.5  # the fraction of images degraded (each one drawn independently)
    seed: int = 0
    kinds: tuple[str, ...] = degradations.REALISTIC

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise FiqaError(f"--cross-quality {self.share:g}: the share of degraded images must be in (0, 1]")
        unknown = [k for k in self.kinds if k not in degradations.REALISTIC]
        if unknown or not self.kinds:
            raise FiqaError(f"cross-quality kinds: unknown {', '.join(unknown) or '(none)'}; use "
                            f"{', '.join(degradations.REALISTIC)}")
        object.__setattr__(self, "kinds", tuple(self.kinds))

    def describe(self) -> str:
        return (f"cross-quality protocol: {self.share:.0%} of the images (seed {self.seed}) degraded by one of "
                f"{', '.join(self.kinds)} at a random strength")

    def draw(self, key: str) -> tuple[str, float] | None:
        """(kind, strength) of the image `key`, or None when it stays clean."""
        digest = hashlib.blake2b(f"cross-quality\x1f{self.seed}\x1f{key}".encode(), digest_size=16).digest()
        u = [int.from_bytes(digest[i : i + 4], "little") / 2**32 for i in (0, 4, 8)]
        if u[0] >= self.share:
            return None
        return self.kinds[min(int(u[1] * len(self.kinds)), len(self.kinds) - 1)], u[2]

    def plan(self, keys: list[str]) -> dict[str, tuple[str, float]]:
        """key -> (kind, strength) of every key that is degraded."""
        return {k: d for k in keys if (d := self.draw(k)) is not None}


def degraded_key(key: str, kind: str) -> str:
    """The key of an image's degraded copy: `.<kind>.png` in place of its suffix."""
    stem, dot, _ = key.rpartition(".")
    return f"{stem if dot else key}.{kind}.png"


def _sources(root: Path, keys: list[str]) -> dict[str, list]:
    out = {}
    for k in keys:
        st = (root / k).stat()
        out[k] = [st.st_size, st.st_mtime_ns]
    return out


def materialise(pairs, setting: CrossQuality, folder: str | os.PathLike):
    """The pair set of `pairs` over `folder`: every image of `pairs` there, degraded where `setting` draws it (PNG)
    and linked to the original otherwise (a copy where links are not possible). Returns (pairs, counts per kind)."""
    import cv2

    from fiqa_trt.evaluation.protocols import Pairs

    folder = Path(folder)
    root = Path(pairs.root).resolve()
    plan = setting.plan(pairs.keys)
    mapped = [degraded_key(k, plan[k][0]) if k in plan else k for k in pairs.keys]
    try:
        sources = _sources(root, pairs.keys)
    except OSError as exc:
        raise FiqaError(f"cross-quality: cannot read {exc.filename}: {exc.strerror}") from None
    manifest = {"format": FORMAT, "root": str(root), "share": setting.share, "seed": setting.seed,
                "kinds": list(setting.kinds), "sources": sources}
    done = folder / MANIFEST
    if not _reusable(done, manifest):
        _remove_previous(folder)
        for key, new in zip(pairs.keys, mapped):
            target = folder / new
            target.parent.mkdir(parents=True, exist_ok=True)
            if key in plan:
                bgr = cv2.imread(str(root / key), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise FiqaError(f"cross-quality: cannot decode {root / key}")
                kind, strength = plan[key]
                out = degradations.apply(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), kind,
                                         degradations.parameters(kind, strength), key, setting.seed)
                ok, data = cv2.imencode(".png", cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
                _write(target, data.tobytes())
            else:
                _link(root / key, target)
        _write(done, (json.dumps({**manifest, "degraded": {k: [d[0], round(d[1], 6)] for k, d in plan.items()}},
                                 indent=1) + "\n").encode())
    order = np.argsort(np.array(mapped, dtype=object), kind="stable")
    remap = np.empty(len(mapped), np.int64)
    remap[order] = np.arange(len(mapped))
    counts = {kind: sum(1 for d in plan.values() if d[0] == kind) for kind in setting.kinds}
    note = (f"{setting.describe()}: {len(plan)} of {len(mapped)} images degraded ("
            + ", ".join(f"{k} {n}" for k, n in counts.items()) + f"); images in {folder}")
    out = Pairs(folder, [mapped[i] for i in order], remap[pairs.a], remap[pairs.b], pairs.mated.copy(),
                f"{pairs.source}; {setting.describe()}", list(pairs.notes) + [note])
    return out, counts


def _reusable(path: Path, manifest: dict) -> bool:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return all(found.get(k) == v for k, v in manifest.items())


def _remove_previous(folder: Path) -> None:
    """The manifest and the degraded copies of an earlier protocol in `folder` (another seed, share or image set)."""
    try:
        previous = json.loads((folder / MANIFEST).read_text())
        (folder / MANIFEST).unlink()
    except (OSError, ValueError):
        return
    for key, (kind, _) in previous.get("degraded", {}).items():
        (folder / degraded_key(key, kind)).unlink(missing_ok=True)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _link(source: Path, target: Path) -> None:
    if target.is_symlink() or target.exists():
        target.unlink()
    try:
        target.symlink_to(source)
    except OSError:
        _write(target, source.read_bytes())
