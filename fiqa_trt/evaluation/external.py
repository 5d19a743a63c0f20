"""Quality scores of other methods, read from files and matched to the images of a pair set.

Readers (`read_scores(path)` -> {name: score}), chosen by the file's extension:
- `.csv` / `.tsv` / `.txt`: a header with a `path` (or `file`, `image`, `name`) column and a `quality` (or
  `score`) column, as `fiqa-trt score` writes; or no header and two columns `name,score`. Rows with an `error`
  are skipped.
- `.json`: an object {name: score}, or a list of {"path": ..., "quality": ...} records; `.jsonl`: one record a line.
- `.pkl` / `.pickle`: a pickled dict {name: score} (pickle runs code when loaded: only open files you trust).
- `.parquet`: `path` and `quality` columns, as `fiqa-trt score` writes.

`match_scores(scores, keys)` finds each pair image's score: by its key (path relative to the image root), else by
the longest unambiguous trailing part of the path (so absolute paths and bare file names both work), and as a last
resort by the file name without its extension. Images without a score raise FiqaError naming them.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
from pathlib import Path, PurePosixPath

import numpy as np

from fiqa_trt.errors import FiqaError

NAME_COLUMNS = ("path", "file", "filename", "image", "name", "img")
SCORE_COLUMNS = ("quality", "score", "qs", "value")


def _number(value, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise FiqaError(f"{where}: '{value}' is not a number") from None


def _read_csv(path: Path) -> dict[str, float]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f, delimiter=delimiter) if r and not r[0].startswith("#")]
    if not rows:
        raise FiqaError(f"{path} holds no scores")
    head = [h.strip().lower() for h in rows[0]]
    name_col = next((head.index(c) for c in NAME_COLUMNS if c in head), None)
    score_col = next((head.index(c) for c in SCORE_COLUMNS if c in head), None)
    error_col = head.index("error") if "error" in head else None
    if name_col is None or score_col is None:
        try:
            float(rows[0][1])
        except (ValueError, IndexError):
            raise FiqaError(f"{path}: expected a header with a path and a quality column "
                            f"(e.g. 'path,quality'), got '{','.join(rows[0])[:80]}'") from None
        name_col, score_col, body = 0, 1, rows  # no header: name,score
    else:
        body = rows[1:]
    out = {}
    for n, row in enumerate(body, 2 if body is not rows else 1):
        if error_col is not None and error_col < len(row) and row[error_col].strip():
            continue
        if len(row) <= max(name_col, score_col):
            raise FiqaError(f"{path}:{n}: too few columns")
        out[row[name_col].strip()] = _number(row[score_col], f"{path}:{n}")
    return out


def _records(items, path: Path) -> dict[str, float]:
    out = {}
    for n, rec in enumerate(items, 1):
        if not isinstance(rec, dict):
            raise FiqaError(f"{path}: record {n} is not an object")
        if rec.get("error"):
            continue
        name = next((rec[c] for c in NAME_COLUMNS if c in rec), None)
        score = next((rec[c] for c in SCORE_COLUMNS if c in rec), None)
        if name is None or score is None:
            raise FiqaError(f"{path}: record {n} needs a 'path' and a 'quality' field")
        out[str(name)] = _number(score, f"{path}: record {n}")
    return out


def _from_mapping(obj, path: Path) -> dict[str, float]:
    if isinstance(obj, dict):
        return {str(k): _number(v, f"{path}: '{k}'") for k, v in obj.items()}
    if isinstance(obj, list):
        return _records(obj, path)
    raise FiqaError(f"{path}: expected a mapping name -> score, got {type(obj).__name__}")


def read_scores(path: str | os.PathLike) -> dict[str, float]:
    """{image name: score} from a CSV, JSON, JSONL, pickle or Parquet file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FiqaError(f"score file not found: {path}")
    ext = path.suffix.lower()
    try:
        if ext in (".csv", ".tsv", ".txt"):
            scores = _read_csv(path)
        elif ext == ".json":
            scores = _from_mapping(json.loads(path.read_text(encoding="utf-8")), path)
        elif ext == ".jsonl":
            lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            scores = _records([json.loads(ln) for ln in lines], path)
        elif ext in (".pkl", ".pickle"):
            with path.open("rb") as f:
                scores = _from_mapping(pickle.load(f), path)
        elif ext == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path).to_pylist()
            scores = _records(table, path)
        else:
            raise FiqaError(f"{path}: unknown score-file type '{ext}'; use .csv, .json, .jsonl, .pkl or .parquet")
    except FiqaError:
        raise
    except (json.JSONDecodeError, pickle.UnpicklingError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise FiqaError(f"{path} cannot be read as a {ext} score file ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # pyarrow and pickle raise assorted types for damaged files
        raise FiqaError(f"{path} cannot be read as a {ext} score file ({type(exc).__name__}: {exc})") from None
    if not scores:
        raise FiqaError(f"{path} holds no scores")
    return scores


def _parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("/", "."))


def match_scores(scores: dict[str, float], keys: list[str], source: str = "score file") -> np.ndarray:
    """One score per key (path relative to the image root), matched as the module docstring says."""
    index: dict[tuple[str, ...], str | None] = {}  # trailing path parts -> name (None: ambiguous)
    stems: dict[str, str | None] = {}
    for name in scores:
        parts = _parts(name)
        for i in range(len(parts)):
            tail = parts[i:]
            index[tail] = name if index.get(tail, name) == name else None
        if parts:
            stem = PurePosixPath(parts[-1]).stem
            stems[stem] = name if stems.get(stem, name) == name else None
    out = np.full(len(keys), math.nan)
    missing, ambiguous = [], []
    nothing = object()
    for j, key in enumerate(keys):
        parts = _parts(key)
        hit = next((index[parts[i:]] for i in range(len(parts)) if parts[i:] in index), nothing)
        if hit is nothing and parts:  # no trailing part matches: the file name without its extension
            hit = stems.get(PurePosixPath(parts[-1]).stem, nothing)
        if hit is None:
            ambiguous.append(key)
        elif hit is nothing:
            missing.append(key)
        else:
            out[j] = scores[hit]
    for what, bad in (("match more than one entry of", ambiguous), ("have no score in", missing)):
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise FiqaError(f"{len(bad)} of the {len(keys)} pair images {what} the {source}: {shown}")
    return out
