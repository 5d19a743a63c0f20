"""Output writers: CSV, JSON lines or Parquet, chosen by the file extension (CSV on standard output), and reading
back what an earlier run wrote (`done_paths`, for `--resume` and the Ray path's skip of done items).

Safety of an existing result: a file output is written to `OUT.partial` beside it and renamed onto OUT when the
run ends, so a killed run never truncates a complete earlier result. Rows reach the partial file as each batch
finishes (CSV and JSON lines flushed per batch, Parquet one row group per batch). An interrupted run (Ctrl-C,
SIGTERM) renames its partial file too when that loses nothing (no earlier OUT, or `--resume`, whose partial file
holds the earlier rows as well); otherwise it keeps OUT and leaves its rows in OUT.partial. `resume=True` reads
the rows of OUT and of a partial file left by a killed run (the later row wins for a path), copies them first,
and `done` says which input paths to skip. An output that exists and is not a regular file (`/dev/stdout`, a
pipe, a device) is written in place.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import sys
from pathlib import Path

from fiqa_trt.engine.scorer import Result
from fiqa_trt.errors import FiqaError, MissingDependency, NothingDone

log = logging.getLogger("fiqa_trt")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
PARTIAL = ".partial"
_FACE_SUFFIX = re.compile(r"#face\d+$")


class OutputError(NothingDone):
    """Writing the output failed after scoring had started (disk full, device error): exit 1, not a usage error."""


FACE_COLUMNS = ["det_score", "box_left", "box_top", "box_right", "box_bottom"]  # runs that align photos


def columns(view_labels: list[str], faces: bool = False) -> list[str]:
    """path, quality (the recipe's raw value), score (the 0-100 unified score), cos_<view> ..., (aligned runs:
    det_score and the face box in the photo), error."""
    return (["path", "quality", "score"] + [f"cos_{label}" for label in view_labels] + (FACE_COLUMNS if faces else [])
            + ["error"])


def _num(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _values(result: Result, cols: list[str]) -> list:
    values = [result.path, _num(result.quality), _int(result.score), *map(_num, result.cosines.tolist())]
    if FACE_COLUMNS[0] in cols:
        box = result.box if result.box is not None else (None,) * 4
        values += [_num(result.det_score), *(None if v is None else int(v) for v in box)]
    return values + [result.error]


def _int(x: float | None) -> int | None:
    return None if x is None or math.isnan(x) else int(x)


def row(result: Result, cols: list[str]) -> dict:
    """One result as a row of `columns(...)`: NaN becomes None (null / empty)."""
    return dict(zip(cols, _values(result, cols)))


def _schema(cols: list[str], metadata: dict | None = None):
    import pyarrow as pa

    kinds = {"path": pa.string(), "error": pa.string(), "score": pa.int8(), **{c: pa.int32() for c in FACE_COLUMNS[1:]}}
    return pa.schema([(c, kinds.get(c, pa.float32())) for c in cols], metadata={"fiqa_trt": json.dumps(metadata or {})})


def arrow_table(results: list[Result], cols: list[str], metadata: dict | None = None):
    """Results as a pyarrow Table: path and error strings, float32 quality and cosines."""
    import pyarrow as pa

    return pa.Table.from_pylist([row(r, cols) for r in results], schema=_schema(cols, metadata))


def output_format(out: str | os.PathLike) -> str:
    """The format of an output path, by its extension; CSV for a device or pipe without one (`/dev/stdout`)."""
    path = Path(out)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None and not path.suffix and path.exists() and not path.is_file() and not path.is_dir():
        return "csv"
    if fmt is None:
        raise FiqaError(f"unknown output format '{Path(out).suffix}': use one of {', '.join(FORMATS)}")
    return fmt


def partial_path(out: str | os.PathLike) -> Path:
    return Path(str(out) + PARTIAL)


def check_output(out: str | os.PathLike | None) -> None:
    """FiqaError (one line) when `out` cannot be an output file; checked before any work is done."""
    if out is None:
        return
    path = Path(out)
    output_format(path)
    if path.is_dir():
        raise FiqaError(f"--out {path} is a folder: give a file name ending in {', '.join(FORMATS)}")
    parent = path.parent
    for above in [parent, *parent.parents]:
        if above.exists():
            if not above.is_dir():
                raise FiqaError(f"cannot write {path}: {above} is a file, not a folder")
            break
    if not parent.exists():
        raise FiqaError(f"the output folder {parent} does not exist")


def item_path(row_path: str) -> str:
    """The input path a row belongs to (`photo.jpg#face1` -> `photo.jpg`)."""
    return _FACE_SUFFIX.sub("", row_path)


def read_rows(path: str | os.PathLike) -> tuple[list[str], list[dict]]:
    """(column names, rows) of an output file (CSV, JSON lines, Parquet) or of a folder of Parquet files. A
    damaged last line (a run killed while writing) is dropped; FiqaError when the file cannot be read at all."""
    path = Path(path)
    fmt = "parquet" if path.is_dir() else output_format(path if path.suffix != PARTIAL else path.with_suffix(""))
    if fmt == "parquet":
        import pyarrow.dataset as pads

        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        if not files:
            return [], []
        try:
            table = pads.dataset([str(f) for f in files], format="parquet").to_table()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid / OSError for damaged files
            raise FiqaError(f"cannot read {path}: {str(exc).splitlines()[0][:200]}") from None
        return table.column_names, table.to_pylist()
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        if fmt == "csv":
            reader = csv.reader(f)
            header = next(reader, [])
            return header, [dict(zip(header, cells)) for cells in reader if len(cells) == len(header)]
        rows = []
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return (list(rows[0]) if rows else []), [r for r in rows if isinstance(r, dict) and "path" in r]


def done_paths(out: str | os.PathLike) -> set[str]:
    """Input paths an earlier run already wrote to `out` (a file, or the Ray path's folder of Parquet files)."""
    path = Path(out)
    if not path.exists():
        return set()
    _, rows = read_rows(path)
    return {item_path(r["path"]) for r in rows}


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.7f}" if isinstance(value, float) else str(value)


class Sink:
    """Writes result rows to `out` (None: CSV on standard output); see the module docstring."""

    def __init__(self, out: str | None, view_labels: list[str], metadata: dict | None = None, resume: bool = False,
                 faces: bool = False):
        self.columns = columns(view_labels, faces)
        if len(set(self.columns)) != len(self.columns):
            raise FiqaError(f"two output columns have the same name: {', '.join(self.columns)}")
        self.metadata = metadata or {}
        self.format = "csv" if out is None else output_format(out)
        if self.format == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise MissingDependency("pyarrow") from None
        check_output(out)
        self.out = Path(out) if out else None
        self.done: set[str] = set()
        self._writer = self._file = None
        self._in_place = self.out is not None and self.out.exists() and not self.out.is_file()
        self.path = self.out if self.out is None or self._in_place else partial_path(self.out)
        earlier = self._earlier_rows() if resume and not self._in_place else []
        self._had_result = self.out is not None and self.out.is_file()
        self.resumed = resume
        try:
            if self.format in ("csv", "jsonl"):
                self._file = self.path.open("w", newline="", encoding="utf-8") if self.path else sys.stdout
                if self.format == "csv":
                    self._csv = csv.writer(self._file)
                    self._csv.writerow(self.columns)
            else:
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(str(self.path), _schema(self.columns, self.metadata))
            self._write_rows(earlier)
        except OSError as exc:
            raise FiqaError(f"cannot write {self.out}: {exc.strerror or str(exc).splitlines()[0]}") from None

    def _earlier_rows(self) -> list[dict]:
        """The rows of OUT and of a partial file a killed run left (later wins per path), checked for columns."""
        merged: dict[str, dict] = {}
        for source in (self.out, partial_path(self.out)):
            if not source.is_file():
                continue
            try:
                header, rows = read_rows(source)
            except FiqaError as exc:
                if source == self.out:
                    raise FiqaError(f"--resume: {exc}") from None
                log.warning("--resume: %s is unreadable (a Parquet file of a killed run has no footer); its rows "
                            "are scored again", source)
                continue
            if rows and header != self.columns:
                raise FiqaError(f"--resume: {source} has the columns {', '.join(header)}, this run writes "
                                f"{', '.join(self.columns)} (other perturbations?): give another --out")
            for r in rows:
                merged[r["path"]] = r
        self.done = {item_path(p) for p in merged}
        return list(merged.values())

    def _write_rows(self, rows: list[dict]) -> None:
        if not rows:
            return
        if self.format == "csv":
            self._csv.writerows([["" if r.get(c) is None else r[c] for c in self.columns] for r in rows])
        elif self.format == "jsonl":
            self._file.writelines(json.dumps({c: r.get(c) for c in self.columns}) + "\n" for r in rows)
        else:
            import pyarrow as pa

            def value(r, c):
                v = r.get(c)
                if v in (None, ""):
                    return None
                return v if c in ("path", "error") else int(v) if c in FACE_COLUMNS[1:] else float(v)

            self._writer.write_table(pa.Table.from_pylist(
                [{c: value(r, c) for c in self.columns} for r in rows], schema=self._writer.schema))

    def write(self, results: list[Result]) -> None:
        """Append one batch of rows and push them to the file (a Parquet row group per call)."""
        if not results:
            return
        try:
            if self.format == "csv":
                for r in results:
                    self._csv.writerow([_cell(v) for v in _values(r, self.columns)])
            elif self.format == "jsonl":
                for r in results:
                    self._file.write(json.dumps(row(r, self.columns)) + "\n")
            else:
                self._writer.write_table(arrow_table(results, self.columns, self.metadata))
            if self._file is not None:
                self._file.flush()
        except OSError as exc:
            raise OutputError(f"cannot write {self.out or 'standard output'}: {exc.strerror or exc}") from None

    def close(self, complete: bool = True) -> Path | None:
        """Finish the file; rename the partial file onto OUT when the run completed, or when that loses nothing.
        Returns where the rows are (None for standard output)."""
        try:
            if self._writer is not None:
                self._writer.close()
            elif self._file is not None and self._file is not sys.stdout:
                self._file.close()
            elif self._file is sys.stdout:
                self._file.flush()
        except OSError as exc:
            raise OutputError(f"cannot write {self.out or 'standard output'}: {exc.strerror or exc}") from None
        finally:
            self._writer = self._file = None
        if self.out is None or self._in_place:
            return self.out
        if complete or self.resumed or not self._had_result:
            os.replace(self.path, self.out)
            return self.out
        return self.path
