"""Verification pair lists: the pair-file formats read here, the pair generator, and the `Pairs` they produce.

Formats (`read_pairs(path, root, protocol="auto")`; blank lines and lines starting with `#` are skipped):
- `shared`: one pair a line, `path_a,path_b,label`, label 1 (mated) or -1 (non-mated), paths relative to the
  image root (the project's `lfw112_pairs.txt`).
- `lfw` (also XQLFW, whose `xqlfw_pairs.txt` uses the same layout): an optional header line of one or two
  integers (folds, pairs per fold), then `name n1 n2` (mated) or `name1 n1 name2 n2` (non-mated), whitespace
  separated, meaning `<name>/<name>_<n:04d>.jpg` under the root.
- `cplfw` / `calfw`: two lines per pair, `file label`, label 1 (mated) or 0 (non-mated) on both lines, files
  directly under the root (the images are in one flat folder).
`auto` looks at the first line that is not blank or a comment.

Generated protocols, from identity folders (`root/<identity>/<image>`), reproducible from `seed`:
- `all_mated_pairs(root, max_images=20, nonmated=2_000_000, seed=0)`: the "all-mated" protocol of the ISO/IEC
  29794-1 style evaluation. Each identity keeps at most `max_images` images (a sample keyed by (seed, identity)
  where it has more); every mated pair among the kept images is used (27,726 on the shared LFW with the default
  cap), plus `nonmated` pairs of kept images of different identities drawn uniformly without repeats (all of
  them when fewer are possible and the count was not given).
- `generate_pairs(root, ...)`: the older generator, at most `max_mated_per_identity` mated pairs sampled per
  identity plus as many (or `impostors`) sampled non-mated pairs.

`identity_of(key)` names the identity of an image key (its folder, or for flat folders the file name up to its
last `_`); `Pairs.identities()` gives one identity per key and `Pairs.restrict(identities)` the pairs whose
images all belong to the given identities (used by `evaluation.split` for dev/test halves).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fiqa_trt.files import IMAGE_SUFFIXES
from fiqa_trt.errors import FiqaError

log = logging.getLogger("fiqa_trt")
PROTOCOLS = ("auto", "shared", "lfw", "xqlfw", "cplfw", "calfw")


@dataclass
class Pairs:
    """Pairs over a set of images: `keys` are paths relative to `root`; pair i is (keys[a[i]], keys[b[i]])."""

    root: Path
    keys: list[str]  # unique image keys, sorted
    a: np.ndarray  # (P,) int indices into keys
    b: np.ndarray
    mated: np.ndarray  # (P,) bool
    source: str  # where the pairs came from, for reports
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.a)

    @property
    def paths(self) -> list[str]:
        return [str(self.root / k) for k in self.keys]

    def names(self) -> list[str]:
        """One readable name per pair, for messages."""
        return [f"{self.keys[i]} / {self.keys[j]}" for i, j in zip(self.a, self.b)]

    def subset(self, limit: int) -> "Pairs":
        """The first `limit` pairs (in file order) and only the images they use."""
        if limit < 1:
            raise FiqaError("--pair-limit must be at least 1")
        if limit >= len(self):
            return self
        return _build(self.root, [(self.keys[i], self.keys[j], bool(m))
                                  for i, j, m in zip(self.a[:limit], self.b[:limit], self.mated[:limit])],
                      f"{self.source}, first {limit} of {len(self)} pairs", self.notes)

    def identities(self) -> list[str]:
        """The identity of each key (see `identity_of`)."""
        return [identity_of(k) for k in self.keys]

    def restrict(self, identities, label: str = "") -> "Pairs":
        """The pairs both of whose images belong to `identities` (a set of names), and only the images they use."""
        wanted = set(identities)
        inside = np.array([i in wanted for i in self.identities()], dtype=bool)
        keep = inside[self.a] & inside[self.b] if len(self.keys) else np.zeros(0, bool)
        used = np.flatnonzero(np.bincount(np.concatenate([self.a[keep], self.b[keep]]), minlength=len(self.keys)))
        remap = np.full(len(self.keys), -1, np.int64)
        remap[used] = np.arange(len(used))
        source = f"{self.source}; {label or 'restricted'}: {len(used)} images, {int(keep.sum())} of {len(self)} pairs"
        return Pairs(self.root, [self.keys[i] for i in used], remap[self.a[keep]], remap[self.b[keep]],
                     self.mated[keep], source, list(self.notes))

    def describe(self) -> str:
        return (f"{len(self)} pairs ({int(self.mated.sum())} mated, {int((~self.mated).sum())} non-mated) over "
                f"{len(self.keys)} images; {self.source}")


def _build(root: Path, triples: list[tuple[str, str, bool]], source: str, notes: list[str] | None = None) -> Pairs:
    if not triples:
        raise FiqaError(f"no pairs in {source}")
    keys = sorted({k for a, b, _ in triples for k in (a, b)})
    index = {k: i for i, k in enumerate(keys)}
    a = np.array([index[t[0]] for t in triples], dtype=np.int64)
    b = np.array([index[t[1]] for t in triples], dtype=np.int64)
    mated = np.array([t[2] for t in triples], dtype=bool)
    return Pairs(Path(root), keys, a, b, mated, source, list(notes or []))


def _lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise FiqaError(f"pair file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise FiqaError(f"{path} is not a text pair file") from None
    return [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1)
            if ln.strip() and not ln.lstrip().startswith("#")]


def detect_protocol(path: Path) -> str:
    lines = _lines(path)
    if not lines:
        raise FiqaError(f"the pair file {path} holds no pairs")
    first = lines[0][1]
    if "," in first:
        return "shared"
    fields = first.split()
    if all(re.fullmatch(r"\d+", f) for f in fields) and len(fields) <= 2:
        return "lfw"  # the header line of pairs.txt
    if len(fields) == 2 and re.fullmatch(r"-?\d+", fields[1]):
        return "cplfw"
    if len(fields) in (3, 4):
        return "lfw"
    raise FiqaError(f"{path}: cannot tell the pair-file format from its first line '{first[:80]}'; "
                    f"pass --protocol ({', '.join(PROTOCOLS[1:])})")


def _read_shared(path: Path) -> list[tuple[str, str, bool]]:
    out = []
    for n, line in _lines(path):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise FiqaError(f"{path}:{n}: expected 'path_a,path_b,label', got '{line[:80]}'")
        if parts[2] not in ("1", "-1", "+1"):
            raise FiqaError(f"{path}:{n}: the label must be 1 (mated) or -1 (non-mated), got '{parts[2]}'")
        out.append((parts[0], parts[1], parts[2] != "-1"))
    return out


def _lfw_name(name: str, number: str, path: Path, n: int, ext: str) -> str:
    if not number.isdigit():
        raise FiqaError(f"{path}:{n}: '{number}' is not an image number")
    return f"{name}/{name}_{int(number):04d}{ext}"


def _read_lfw(path: Path, ext: str = ".jpg") -> list[tuple[str, str, bool]]:
    lines = _lines(path)
    if lines and all(f.isdigit() for f in lines[0][1].split()) and len(lines[0][1].split()) <= 2:
        lines = lines[1:]  # header: folds [pairs per fold]
    out = []
    for n, line in lines:
        f = line.split()
        if len(f) == 3:
            out.append((_lfw_name(f[0], f[1], path, n, ext), _lfw_name(f[0], f[2], path, n, ext), True))
        elif len(f) == 4:
            out.append((_lfw_name(f[0], f[1], path, n, ext), _lfw_name(f[2], f[3], path, n, ext), False))
        else:
            raise FiqaError(f"{path}:{n}: expected 'name n1 n2' or 'name1 n1 name2 n2' (LFW pairs.txt layout), "
                            f"got '{line[:80]}'")
    return out


def _read_two_line(path: Path) -> list[tuple[str, str, bool]]:
    lines = _lines(path)
    if len(lines) % 2:
        raise FiqaError(f"{path}: a CPLFW/CALFW pair file has two lines per pair; it has {len(lines)} lines")
    out = []
    for (n1, l1), (n2, l2) in zip(lines[0::2], lines[1::2]):
        f1, f2 = l1.split(), l2.split()
        if len(f1) != 2 or len(f2) != 2:
            raise FiqaError(f"{path}:{n1}: expected 'file label' on lines {n1} and {n2}")
        if f1[1] != f2[1] or f1[1] not in ("0", "1"):
            raise FiqaError(f"{path}:{n1}: the two lines of a pair carry the same label, 1 (mated) or 0 "
                            f"(non-mated); got '{f1[1]}' and '{f2[1]}'")
        out.append((f1[0], f2[0], f1[1] == "1"))
    return out


def read_pairs(path: str | os.PathLike, root: str | os.PathLike, protocol: str = "auto",
               check_files: bool = True) -> Pairs:
    """Read a pair file whose image paths are relative to `root`; `check_files` fails on missing images."""
    path, root = Path(path), Path(root)
    if protocol not in PROTOCOLS:
        raise FiqaError(f"unknown protocol '{protocol}'; use one of: {', '.join(PROTOCOLS)}")
    if not root.is_dir():
        raise FiqaError(f"image folder not found: {root}")
    kind = detect_protocol(path) if protocol == "auto" else protocol
    reader = {"shared": _read_shared, "lfw": _read_lfw, "xqlfw": _read_lfw, "cplfw": _read_two_line,
              "calfw": _read_two_line}[kind]
    triples, notes = _distinct(reader(path), path)
    pairs = _build(root, triples, f"{kind} pair file {path.name}", notes)
    if check_files:
        missing = [k for k in pairs.keys if not (root / k).is_file()]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise FiqaError(f"{len(missing)} of the {len(pairs.keys)} images named by {path.name} are not under "
                            f"{root}: {shown} (is --images the folder the pair paths are relative to?)")
    return pairs


def _distinct(triples: list[tuple[str, str, bool]], path: Path) -> tuple[list[tuple[str, str, bool]], list[str]]:
    """Each pair once (in either order: a comparison is symmetric), in the order of its first line, with a warning
    and a note saying how many repeated lines were left out (counted again, a repeated pair would weigh as several
    independent comparisons); FiqaError for a pair listed both as mated and as non-mated."""
    seen: dict[frozenset, bool] = {}
    out = []
    for a, b, mated in triples:
        key = frozenset((a, b))
        if key in seen:
            if seen[key] != mated:
                raise FiqaError(f"{path.name} lists the pair {a}, {b} both as mated and as non-mated: fix the pair "
                                "file")
            continue
        seen[key] = mated
        out.append((a, b, mated))
    if len(out) == len(triples):
        return out, []
    note = (f"{len(triples) - len(out)} repeated pair line(s) of {path.name} left out: {len(out)} distinct pairs, "
            "each counted once")
    log.warning(note)
    return out, [note]


def identities(root: str | os.PathLike) -> dict[str, list[str]]:
    """identity folder name -> sorted image keys (`identity/file`) of the image files directly inside it."""
    root = Path(root)
    if not root.is_dir():
        raise FiqaError(f"image folder not found: {root}")
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f.name for f in folder.iterdir()
                       if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            out[folder.name] = [f"{folder.name}/{f}" for f in files]
    if not out:
        raise FiqaError(f"{root} has no identity folders with images (expected {root}/<identity>/<image>)")
    return out


def identity_of(key: str) -> str:
    """The identity of an image key: its first folder (`Name/Name_0001.jpg` -> `Name`), or for a key without a
    folder the file name up to its last `_` (`Name_1.jpg` -> `Name`, as in the flat CPLFW/CALFW folders)."""
    parts = key.replace("\\", "/").split("/")
    if len(parts) > 1:
        return parts[0]
    stem = parts[0].rsplit(".", 1)[0]
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def _identities_among(root, keys: list[str] | None) -> dict[str, list[str]]:
    """`identities(root)`, restricted to `keys` (paths relative to root) when given; empty identities left out."""
    groups = identities(root)
    if keys is None:
        return groups
    wanted = set(keys)
    return {i: kept for i, ks in groups.items() if (kept := [k for k in ks if k in wanted])}


def _rng(seed: int, *key: str) -> np.random.Generator:
    from fiqa_trt.engine.perturbations import view_rng

    return view_rng(seed, "\x1f".join(("pairs",) + key), 0)


def generate_pairs(root: str | os.PathLike, max_mated_per_identity: int | None = 20, impostors: int | None = None,
                   seed: int = 0, keys: list[str] | None = None) -> Pairs:
    """Mated pairs within identity folders (all, or `max_mated_per_identity` sampled per identity) and `impostors`
    non-mated pairs (default: as many as mated) drawn uniformly over images of different identities, without
    repeats. An identity's mated sample depends only on (seed, identity), so adding folders does not change it.
    `keys` restricts the generator to those images (paths relative to root).
    """
    if max_mated_per_identity is not None and max_mated_per_identity < 1:
        raise FiqaError("--max-mated-per-identity must be at least 1")
    groups = _identities_among(root, keys)
    triples: list[tuple[str, str, bool]] = []
    capped = 0
    for ident, ks in groups.items():
        combos = list(itertools.combinations(ks, 2))
        if max_mated_per_identity is not None and len(combos) > max_mated_per_identity:
            pick = _rng(seed, "mated", ident).choice(len(combos), max_mated_per_identity, replace=False)
            combos = [combos[i] for i in sorted(pick)]
            capped += 1
        triples += [(a, b, True) for a, b in combos]
    n_mated = len(triples)
    if n_mated == 0:
        raise FiqaError(f"no identity under {root} has two images: no mated pairs can be formed")
    flat = [(k, i) for i, ks in enumerate(groups.values()) for k in ks]
    if len(groups) < 2:
        raise FiqaError(f"{root} has a single identity: no non-mated pairs can be formed")
    target = n_mated if impostors is None else impostors
    sizes = np.array([len(ks) for ks in groups.values()], dtype=np.int64)
    possible = (len(flat) ** 2 - int((sizes**2).sum())) // 2
    if target > possible:
        raise FiqaError(f"{target} non-mated pairs asked for, but these images allow only {possible}")
    rng = _rng(seed, "impostors")
    seen: set[tuple[int, int]] = set()
    while len(seen) < target:
        draw = rng.integers(0, len(flat), size=(2 * (target - len(seen)) + 16, 2))
        for x, y in draw:
            if flat[x][1] == flat[y][1]:
                continue
            pair = (min(x, y), max(x, y))
            if pair not in seen:
                seen.add(pair)
                if len(seen) == target:
                    break
    triples += [(flat[x][0], flat[y][0], False) for x, y in sorted(seen)]
    cap = "all" if max_mated_per_identity is None else f"at most {max_mated_per_identity}"
    source = (f"generated from {len(groups)} identity folders of {Path(root).name}: {cap} mated pairs per identity "
              f"({capped} capped), {target} sampled non-mated pairs, seed {seed}")
    return _build(Path(root), triples, source)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting (NumPy's hash-based unique is several times slower on millions of int64 codes)."""
    v = np.sort(values)
    return v[np.append(True, v[1:] != v[:-1])] if len(v) else v


def sample_nonmated(identity: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` distinct unordered pairs (a < b) of items whose `identity` labels differ, uniform over all such
    pairs, sorted; vectorised (draws in rounds, drops same-identity pairs and repeats)."""
    identity = np.asarray(identity)
    n = len(identity)
    _, sizes = np.unique(identity, return_counts=True)
    possible = (n * n - int((sizes.astype(np.int64) ** 2).sum())) // 2
    if count > possible:
        raise FiqaError(f"{count} non-mated pairs asked for, but these images allow only {possible}")
    codes = np.zeros(0, np.int64)
    while len(codes) < count:
        need = count - len(codes)
        x = rng.integers(0, n, size=int(need * 1.1) + 64)
        y = rng.integers(0, n, size=len(x))
        ok = identity[x] != identity[y]
        lo, hi = np.minimum(x[ok], y[ok]), np.maximum(x[ok], y[ok])
        new = _sorted_unique(lo.astype(np.int64) * n + hi)
        if len(codes):
            at = np.minimum(np.searchsorted(codes, new), len(codes) - 1)
            new = new[codes[at] != new]
        if len(new) > need:  # keep a uniform subset of the new ones, not the smallest codes
            new = np.sort(rng.choice(new, need, replace=False))
        codes = np.sort(np.concatenate([codes, new]))
    return codes // n, codes % n


def all_mated_pairs(root: str | os.PathLike, max_images: int | None = 20, nonmated: int | None = 2_000_000,
                    seed: int = 0, keys: list[str] | None = None) -> Pairs:
    """The all-mated protocol (see the module docstring): every mated pair among at most `max_images` images per
    identity, plus `nonmated` sampled non-mated pairs over the same images. `nonmated=None` means 2,000,000 or
    every possible pair where fewer exist; an explicit count that is not possible raises FiqaError. `keys`
    restricts the protocol to those images (paths relative to root)."""
    if max_images is not None and max_images < 2:
        raise FiqaError("--max-images-per-identity must be at least 2 (a mated pair needs two images)")
    if nonmated is not None and nonmated < 1:
        raise FiqaError("the number of non-mated pairs must be at least 1")
    groups = _identities_among(root, keys)
    capped = 0
    for ident, ks in groups.items():
        if max_images is not None and len(ks) > max_images:
            pick = _rng(seed, "all-mated", ident).choice(len(ks), max_images, replace=False)
            groups[ident] = [ks[i] for i in sorted(pick)]
            capped += 1
    flat = [k for ks in groups.values() for k in ks]  # sorted by identity, then file: the order of _build's keys
    if len(groups) < 2:
        raise FiqaError(f"{root} has a single identity: no non-mated pairs can be formed")
    label = np.repeat(np.arange(len(groups)), [len(ks) for ks in groups.values()])
    starts = np.concatenate([[0], np.cumsum([len(ks) for ks in groups.values()])])
    ma, mb = [], []
    for g, n in enumerate(np.diff(starts)):
        if n > 1:
            i, j = np.triu_indices(int(n), 1)
            ma.append(starts[g] + i)
            mb.append(starts[g] + j)
    if not ma:
        raise FiqaError(f"no identity under {root} has two images: no mated pairs can be formed")
    ma, mb = np.concatenate(ma), np.concatenate(mb)
    sizes = np.diff(starts)
    possible = (len(flat) ** 2 - int((sizes**2).sum())) // 2
    target = min(2_000_000, possible) if nonmated is None else nonmated
    na, nb = sample_nonmated(label, target, _rng(seed, "all-mated", "non-mated"))
    order = np.argsort(flat, kind="stable")  # keys sorted by path (as _build does)
    rank = np.empty(len(flat), np.int64)
    rank[order] = np.arange(len(flat))
    a = rank[np.concatenate([ma, na])]
    b = rank[np.concatenate([mb, nb])]
    mated = np.concatenate([np.ones(len(ma), bool), np.zeros(len(na), bool)])
    cap = "all images" if max_images is None else f"at most {max_images} images"
    source = (f"all-mated protocol from {len(groups)} identity folders of {Path(root).name}: {cap} per identity "
              f"({capped} capped), every mated pair ({len(ma)}), {target} sampled non-mated pairs, seed {seed}")
    used = np.flatnonzero(np.bincount(np.concatenate([a, b]), minlength=len(flat)))
    keys_sorted = [flat[i] for i in order]
    if len(used) < len(keys_sorted):  # images in no pair (possible with few non-mated pairs): leave them out
        remap = np.full(len(keys_sorted), -1, np.int64)
        remap[used] = np.arange(len(used))
        keys_sorted, a, b = [keys_sorted[i] for i in used], remap[a], remap[b]
    return Pairs(Path(root), keys_sorted, a, b, mated, source)
