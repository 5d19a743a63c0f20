"""Pictures of an evaluation with matplotlib (Agg backend, imported when a picture is drawn), each as PNG and SVG.

- `plot_edc`: the EDC curves of several methods at one target FMR (engine methods, other methods' score files
  dashed, the random reference dotted), with the random-discard expectation and the theoretical-best curve.
- `plot_histograms`: one quality histogram per method.
- `plot_face_grid`: face thumbnails sorted by quality, the score printed on each.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fiqa_trt.errors import FiqaError, require

FORMATS = ("png", "svg")


def _pyplot():
    matplotlib = require("matplotlib", extra="eval")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "fiqa-trt", "font.size": 9})
    return plt


def _save(fig, stem: Path, formats=FORMATS, dpi: int = 110) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        path = stem.with_name(stem.name + "." + fmt)
        fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        out.append(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def plot_edc(report: dict, target_fmr: float, stem: str | os.PathLike, mode: str = "fixed",
             methods: list[str] | None = None, max_discard: float | None = None, formats=FORMATS) -> list[Path]:
    """EDC curves (FNMR vs fraction discarded) of `methods` (default: all) from an `evaluate` report."""
    from fiqa_trt.evaluation.report import fmr_key

    plt = _pyplot()
    grid = np.array(report["curves"]["discard"])
    names = methods or [m["name"] for m in report["methods"]]
    kinds = {m["name"]: m["kind"] for m in report["methods"]}
    unknown = [n for n in names if n not in kinds]
    if unknown:
        raise FiqaError(f"no method {', '.join(unknown)} in the results; they hold: {', '.join(kinds)}")
    xmax = min(max_discard or grid[-1], grid[-1])
    keep = grid <= xmax + 1e-12
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.get_cmap("tab10").colors + plt.get_cmap("Dark2").colors
    fnmr0 = None
    for i, name in enumerate(names):
        values = report["curves"]["fnmr"].get(f"{name}|{mode}|{fmr_key(target_fmr)}")
        if values is None:
            raise FiqaError(f"the results have no {mode} curve at FMR {target_fmr:g} for {name}")
        y = np.array([np.nan if v is None else v for v in values], dtype=float)
        fnmr0 = y[0]
        style = {"reference": ":", "external": "--"}.get(kinds[name], "-")
        ax.step(grid[keep], y[keep], where="post", color=colors[i % len(colors)], linestyle=style, linewidth=1.4,
                label=f"{name} ({kinds[name]})" if kinds[name] != "engine" else name)
    if fnmr0 is not None:
        ax.axhline(fnmr0, color="0.5", linewidth=0.8, linestyle="-.", label="random discard (expected)")
    from fiqa_trt.evaluation.report import BEST

    best = report["curves"]["fnmr"].get(f"{BEST}|fixed|{fmr_key(target_fmr)}")
    if best is not None and mode == "fixed":
        y = np.array([np.nan if v is None else v for v in best], dtype=float)
        ax.step(grid[keep], y[keep], where="post", color="0.3", linewidth=1.0, linestyle=(0, (1, 1)),
                label="theoretical best (false non-matches discarded first)")
    title = f"EDC at FMR = {target_fmr:g}, pair quality = {report['pair_quality']}"
    if mode != "fixed":
        title += "\nCOMPAT mode: threshold re-derived at every discard step"
    pool = "mated comparisons" if report.get("discard_over", "all") == "mated" else "pairs"
    ax.set(xlabel=f"fraction of {pool} discarded (lowest pair quality first)", ylabel="FNMR", xlim=(0, xmax),
           ylim=(0, None), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(names) > 6 else 1)
    return _save(fig, Path(stem), formats)


def plot_histograms(qualities: dict[str, np.ndarray], stem: str | os.PathLike, bins: int = 40,
                    formats=FORMATS) -> list[Path]:
    """One histogram per method (each on its own axis: methods have different scales)."""
    plt = _pyplot()
    if not qualities:
        raise FiqaError("no qualities to plot")
    n = len(qualities)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.3 * rows), squeeze=False)
    for ax, (name, q) in zip(axes.flat, qualities.items()):
        q = np.asarray(q, float)
        q = q[np.isfinite(q)]
        ax.hist(q, bins=bins, color="tab:blue", alpha=0.8, histtype="stepfilled")  # one path: small SVG
        ax.set_title(f"{name} (n={len(q)}, median {np.median(q):.3g})" if len(q) else name, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.supxlabel("quality", fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(stem), formats)


def pick_faces(quality: np.ndarray, count: int, select: str = "spread") -> np.ndarray:
    """Indices of `count` images, ascending by quality: evenly spread over the ranking, or the lowest / highest."""
    q = np.asarray(quality, float)
    finite = np.flatnonzero(np.isfinite(q))
    order = finite[np.argsort(q[finite], kind="stable")]
    count = min(count, len(order))
    if select == "spread":
        return order[np.unique(np.round(np.linspace(0, len(order) - 1, count)).astype(int))]
    if select == "lowest":
        return order[:count]
    if select == "highest":
        return order[len(order) - count :]
    raise FiqaError(f"unknown selection '{select}'; use spread, lowest or highest")


def _tile(path: str, box, thumb: int) -> np.ndarray:
    """One thumbnail: the image, or for a face row of an aligned run (`photo.jpg#face1` with its box in the photo)
    the face cut from the photo with a margin of a quarter of the box on each side."""
    import re

    from PIL import Image

    photo = re.sub(r"#face\d+$", "", path)
    with Image.open(photo) as im:
        im = im.convert("RGB")
        if box is not None:
            left, top, right, bottom = box
            side = max(right - left, bottom - top) * 1.5
            cx, cy = (left + right) / 2, (top + bottom) / 2
            im = im.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))
        return np.asarray(im.resize((thumb, thumb), Image.BILINEAR))


def plot_face_grid(paths: list[str], quality: np.ndarray, stem: str | os.PathLike, count: int = 16, cols: int = 8,
                   select: str = "spread", thumb: int = 80, title: str | None = None, formats=FORMATS,
                   boxes: list | None = None, label: str = "{:.3f}") -> list[Path]:
    """Thumbnails sorted by quality (lowest first), the quality printed on each (`label`: its format, e.g. "{:.0f}"
    for a 0-100 score), as one mosaic image. `boxes`: per path, the face box of an aligned run's row (None: the
    whole image)."""
    plt = _pyplot()
    chosen = pick_faces(quality, count, select)
    if len(chosen) == 0:
        raise FiqaError("no image with a finite quality to show")
    cols = min(cols, len(chosen))
    rows = -(-len(chosen) // cols)
    mosaic = np.full((rows * thumb, cols * thumb, 3), 255, np.uint8)
    for n, i in enumerate(chosen):
        try:
            tile = _tile(paths[i], boxes[i] if boxes is not None else None, thumb)
        except (OSError, ValueError) as exc:
            raise FiqaError(f"cannot read {paths[i]} for the face grid ({exc})") from None
        r, c = divmod(n, cols)
        mosaic[r * thumb : (r + 1) * thumb, c * thumb : (c + 1) * thumb] = tile
    dpi = 100  # one figure pixel per thumbnail pixel: the embedded mosaic is not resampled
    fig, ax = plt.subplots(figsize=(cols * thumb / dpi, rows * thumb / dpi + 0.3))
    ax.imshow(mosaic, interpolation="nearest")
    for n, i in enumerate(chosen):
        r, c = divmod(n, cols)
        ax.text(c * thumb + thumb / 2, (r + 1) * thumb - 4, label.format(quality[i]), ha="center", va="bottom",
                fontsize=8, color="white", fontweight="bold",
                bbox={"boxstyle": "square,pad=0.15", "facecolor": "black", "alpha": 0.6, "linewidth": 0})
    ax.set_axis_off()
    ax.set_title(title or f"{len(chosen)} faces by quality ({select}), lowest first", fontsize=9)
    return _save(fig, Path(stem), formats, dpi)
