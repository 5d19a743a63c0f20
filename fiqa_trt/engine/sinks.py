"""Output writers: CSV, JSON lines or Parquet, chosen by the file extension (CSV on standard output)."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import IO

from fiqa_trt.engine.scorer import Result
from fiqa_trt.errors import FiqaError, MissingDependency

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


def columns(view_labels: list[str]) -> list[str]:
    return ["path", "quality"] + [f"cos_{label}" for label in view_labels] + ["error"]


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def row(result: Result, cols: list[str]) -> dict:
    """One result as a row of `columns(...)`: NaN becomes None (null / empty)."""
    return dict(zip(cols, [result.path, _num(result.quality), *map(_num, result.cosines.tolist()), result.error]))


def arrow_table(results: list[Result], cols: list[str], metadata: dict | None = None):
    """Results as a pyarrow Table: path and error strings, float32 quality and cosines."""
    import pyarrow as pa

    schema = pa.schema([("path", pa.string())] + [(c, pa.float32()) for c in cols[1:-1]] + [("error", pa.string())],
                       metadata={"fiqa_trt": json.dumps(metadata or {})})
    return pa.Table.from_pylist([row(r, cols) for r in results], schema=schema)


class Sink:
    def __init__(self, out: str | None, view_labels: list[str], metadata: dict | None = None):
        self.columns = columns(view_labels)
        self.metadata = metadata or {}
        self.format = "csv" if out is None else FORMATS.get(Path(out).suffix.lower())
        if self.format is None:
            raise FiqaError(f"unknown output format '{Path(out).suffix}': use one of {', '.join(FORMATS)}")
        self._parquet_rows: list[Result] = []
        self._writer = None
        if self.format == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise MissingDependency("pyarrow") from None
        self.path = Path(out) if out else None
        if self.path is not None and not self.path.parent.exists():
            raise FiqaError(f"the output folder {self.path.parent} does not exist")
        self._file: IO[str] | None = None
        if self.format in ("csv", "jsonl"):
            self._file = self.path.open("w", newline="") if self.path else sys.stdout
            if self.format == "csv":
                self._csv = csv.writer(self._file)
                self._csv.writerow(self.columns)

    def write(self, results: list[Result]) -> None:
        if self.format == "csv":
            for r in results:
                cells = [r.path, *("" if math.isnan(x) else f"{x:.7f}" for x in [r.quality, *r.cosines.tolist()])]
                self._csv.writerow(cells + [r.error or ""])
        elif self.format == "jsonl":
            for r in results:
                self._file.write(json.dumps(row(r, self.columns)) + "\n")
        else:
            self._parquet_rows.extend(results)
            if len(self._parquet_rows) >= 4096:
                self._flush_parquet()
        if self._file is not None:
            self._file.flush()

    def _flush_parquet(self) -> None:
        import pyarrow.parquet as pq

        table = arrow_table(self._parquet_rows, self.columns, self.metadata)
        if self._writer is None:
            self._writer = pq.ParquetWriter(str(self.path), table.schema)
        self._writer.write_table(table)
        self._parquet_rows.clear()

    def close(self) -> None:
        if self.format == "parquet":
            if self._parquet_rows or self._writer is None:
                self._flush_parquet()
            self._writer.close()
        elif self._file is not None and self._file is not sys.stdout:
            self._file.close()
