"""Output writers: CSV, JSON lines or Parquet, chosen by the file extension (CSV on standard output), and reading
back what an earlier run wrote (`Done`, for `--resume` and the Ray path's skip of done items).

Safety of an existing result: a file output is written to `OUT.partial` beside it and renamed onto OUT when the
run ends, so a killed run never truncates a complete earlier result. Rows reach the partial file as each batch
finishes (CSV and JSON lines flushed per batch, Parquet one row group per batch and the same rows in a JSON-lines
journal, `OUT.journal`, because a Parquet file without its footer cannot be read). An interrupted run (Ctrl-C,
SIGTERM) renames its partial file too when that loses nothing (no earlier OUT, or `--resume`, whose partial file
holds the earlier rows as well); otherwise it keeps OUT and leaves its rows in OUT.partial. An output that exists
and is not a regular file (`/dev/stdout`, a pipe, a device) is written in place.

One writer per output: a run holds an exclusive lock (`flock`) on `OUT.lock` from before its model loads until its
output is renamed; a second run on the same OUT is refused with one line.

`resume=True` reads the rows of OUT and of what a killed run left (its partial file, or for Parquet its journal;
the later row wins for a path), writes them to a new file `OUT.partial.new` and renames that onto OUT.partial only
once they are all written, so a kill or a full disk at any moment leaves OUT and the earlier partial file as they
were. Which input items those rows cover is decided on a canonical key (`Done`): the resolved path, or for a row
written from another working directory, the trailing folders and name of exactly one input.

File names are written losslessly: CSV holds a name's raw bytes (a name that is not valid UTF-8 stays as the OS
gave it), JSON lines escape such bytes as JSON's `\\udcNN` (Python reads the exact name back), and Parquet, whose
strings must be UTF-8, writes them as `\\xNN` (`inputs.shown`; `--resume` matches names in that form).
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

from fiqa_trt.engine.inputs import is_uri, shown
from fiqa_trt.engine.scorer import Result
from fiqa_trt.errors import FiqaError, MissingDependency, NothingDone

log = logging.getLogger("fiqa_trt")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
PARTIAL, JOURNAL, LOCK, NEW = ".partial", ".journal", ".lock", ".new"
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

    return pa.Table.from_pylist([_utf8(row(r, cols)) for r in results], schema=_schema(cols, metadata))


def _utf8(values: dict) -> dict:
    """A row whose path Parquet can store (UTF-8 only: see `inputs.shown`)."""
    if values.get("path") is not None:
        values["path"] = shown(values["path"])
    return values


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


def journal_path(out: str | os.PathLike) -> Path:
    return Path(str(out) + JOURNAL)


def side_files(out: str | os.PathLike | None) -> list[Path]:
    """The files a run writes beside OUT (left out of its own input folder)."""
    if out is None:
        return []
    partial, journal = partial_path(out), journal_path(out)
    return [Path(out), partial, journal, Path(str(out) + LOCK), Path(str(partial) + NEW), Path(str(journal) + NEW)]


class OutputLock:
    """An exclusive lock on one output for one run: `flock` on `OUT.lock` (holding the owner's process id), taken
    without waiting; a second run gets FiqaError. The kernel drops it when the process dies, however it dies; the
    file is removed on release (a run that opened a file just removed locks the new one instead)."""

    def __init__(self, out: str | os.PathLike):
        self._fd = None
        try:
            import fcntl
        except ImportError:  # no flock on this platform: nothing to hold
            self.path, self._fd = None, None
            return
        self.out, self.path = Path(out), Path(str(out) + LOCK)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as exc:
                raise FiqaError(f"cannot write {out}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                if isinstance(exc, BlockingIOError):
                    raise FiqaError(f"{out} is being written by another run" + (f" (process {holder})" if holder else "")
                                    + ": wait for it to end, or give another --out") from None
                raise FiqaError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
            try:
                here = os.stat(self.path)
                mine = os.fstat(fd)
                if (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # the run that held it removed the file meanwhile: lock the file there now
        self._fd = fd
        try:  # the owner's process id, for the message a second run gets (a full disk leaves it out)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding the lock: nobody can have locked this file meanwhile
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __del__(self):
        self.release()


def lock_output(out: str | os.PathLike | None) -> OutputLock | None:
    """The lock of a file output (None for standard output and for a device or pipe written in place): FiqaError
    when another run holds it. Taken before the model loads, so a second writer is refused at once."""
    if out is None or _written_in_place(Path(out)):
        return None
    return OutputLock(out)


def _written_in_place(path: Path) -> bool:
    return path.exists() and not path.is_file()


def check_output(out: str | os.PathLike | None) -> None:
    """FiqaError (one line) when `out` cannot be an output file; checked before any work is done."""
    if out is None:
        return
    path = Path(out)
    if path.is_dir():
        raise FiqaError(f"--out {path} is a folder: give a file name ending in {', '.join(FORMATS)}")
    output_format(path)
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


def read_rows(path: str | os.PathLike, fmt: str | None = None) -> tuple[list[str], list[dict]]:
    """(column names, rows) of an output file (CSV, JSON lines, Parquet; `fmt` or by its extension) or of a folder
    of Parquet files. A damaged last line (a run killed while writing) is dropped; FiqaError when the file cannot
    be read at all."""
    path = Path(path)
    if fmt is None:
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
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        text = f.read()
    if text and not text.endswith("\n"):  # the last row was cut by a kill: scored again
        text = text[: text.rfind("\n") + 1]
    if fmt == "csv":
        reader = csv.reader(text.splitlines(keepends=True))
        header = next(reader, [])
        return header, [dict(zip(header, cells)) for cells in reader if len(cells) == len(header)]
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return (list(rows[0]) if rows else []), [r for r in rows if isinstance(r, dict) and "path" in r]


def done_paths(out: str | os.PathLike) -> set[str]:
    """Input paths an earlier run already wrote to `out` (a file, or the Ray path's folder of Parquet files), as
    the rows name them."""
    path = Path(out)
    if not path.exists():
        return set()
    _, rows = read_rows(path)
    return {item_path(r["path"]) for r in rows}


class Done:
    """Which input items the rows of an earlier run cover, matched on a canonical key rather than on the path as
    typed: a row's path resolved in the working directory (absolute and with links resolved) that is an item's;
    else, for a relative row path (the earlier run was started elsewhere: `./small/x.png` from one folder,
    `../a/small/x.png` from another), its folders and name matching the end of exactly one item's resolved path.
    URIs match as written. Names compare in their stored form (`inputs.shown`)."""

    def __init__(self, row_paths):
        self.paths = {item_path(p) for p in row_paths}

    @classmethod
    def read(cls, out: str | os.PathLike) -> "Done":
        return cls(done_paths(out))

    def todo(self, items: list) -> list:
        """The items no row covers, in order."""
        if not self.paths:
            return list(items)
        exact, relative = set(), []
        for p in self.paths:
            if is_uri(p):
                exact.add(shown(p))
                continue
            exact |= _forms(p)
            if not os.path.isabs(p):
                relative.append(_parts(p))
        covered = [bool(_item_forms(it) & exact) for it in items]
        lengths = {len(r) for r in relative if r}
        if lengths and not all(covered):
            ends: dict[tuple, set[int]] = {}
            for i, it in enumerate(items):
                if not covered[i] and not is_uri(it.path):
                    for form in _item_forms(it):
                        parts = _parts(form)
                        for n in lengths:
                            ends.setdefault(parts[-n:], set()).add(i)
            for r in relative:
                owners = ends.get(r, set())
                if len(owners) == 1:
                    covered[owners.pop()] = True
        return [it for it, done in zip(items, covered) if not done]


def _forms(path: str) -> set[str]:
    """The canonical forms of a local path: absolute and normalised, and with its links resolved."""
    return {shown(os.path.abspath(path)), shown(os.path.realpath(path))}


def _item_forms(item) -> set[str]:
    return {shown(item.path)} if is_uri(item.path) else _forms(item.path)


def _parts(path: str) -> tuple[str, ...]:
    """A path's names without the leading `.`/`..`/`/` (the part that names the same file from anywhere)."""
    parts = [p for p in shown(os.path.normpath(path)).split(os.sep) if p not in ("", ".")]
    while parts and parts[0] == "..":
        parts.pop(0)
    return tuple(parts)


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.7f}" if isinstance(value, float) else str(value)


class Sink:
    """Writes result rows to `out` (None: CSV on standard output); see the module docstring. `lock`: the output's
    lock when the caller took it early (`lock_output`), else the Sink takes it."""

    def __init__(self, out: str | None, view_labels: list[str], metadata: dict | None = None, resume: bool = False,
                 faces: bool = False, lock: OutputLock | None = None):
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
        self._done = Done(())
        self._writer = self._file = self._journal = None
        self._in_place = self.out is not None and _written_in_place(self.out)
        self.path = self.out if self.out is None or self._in_place else partial_path(self.out)
        self.journal = journal_path(self.out) if self.format == "parquet" and self.path != self.out else None
        self._lock = lock if lock is not None or self.path == self.out else OutputLock(self.out)
        self.resumed = resume
        try:
            earlier = self._earlier_rows() if resume and not self._in_place else []
            self._had_result = self.out is not None and self.out.is_file()
            if self.path == self.out:
                self._open_in_place()
            else:
                self._open_new(earlier)
        except BaseException:
            self._release()
            raise

    def todo(self, items: list) -> list:
        """The items the resumed rows do not cover (all of them without `--resume`)."""
        return self._done.todo(items)

    def _open_in_place(self) -> None:
        try:
            if self.format in ("csv", "jsonl"):
                if self.path is None:
                    self._file = sys.stdout
                    if hasattr(sys.stdout, "reconfigure"):  # names that are not UTF-8 go out as their raw bytes
                        sys.stdout.reconfigure(errors="surrogateescape")
                else:
                    self._file = self.path.open("w", newline="", encoding="utf-8", errors="surrogateescape")
                self._start_text()
            else:
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(str(self.path), _schema(self.columns, self.metadata))
        except OSError as exc:
            failure = OutputError if self.path is None else FiqaError  # a full disk is no usage mistake
            raise failure(f"cannot write {self.out or 'standard output'}: "
                          f"{exc.strerror or str(exc).splitlines()[0]}") from None

    def _open_new(self, earlier: list[dict]) -> None:
        """Write the header and the earlier rows to new files, then rename them onto the partial file (and the
        journal): until then the earlier partial file is untouched."""
        new = Path(str(self.path) + NEW)
        new_journal = Path(str(self.journal) + NEW) if self.journal else None
        try:
            if self.format in ("csv", "jsonl"):
                self._file = new.open("w", newline="", encoding="utf-8", errors="surrogateescape")
                self._start_text()
            else:
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(str(new), _schema(self.columns, self.metadata))
                self._journal = new_journal.open("w", encoding="utf-8")
            self._write_rows(earlier)
            for f in (self._file, self._journal):
                if f is not None:
                    f.flush()
                    os.fsync(f.fileno())
            if new_journal is not None:
                os.replace(new_journal, self.journal)
            os.replace(new, self.path)
        except (OSError, ValueError) as exc:
            self._abandon(new, new_journal)
            kept = f" ({self.out.name} and {self.path.name} are unchanged)" if earlier else ""
            raise OutputError(f"cannot write {self.out}: {getattr(exc, 'strerror', None) or exc}{kept}") from None

    def _abandon(self, *paths) -> None:
        for handle in (self._writer, self._file, self._journal):
            try:
                if handle is not None:
                    handle.close()
            except Exception:  # noqa: BLE001 - a full disk fails the close too; the file is removed anyway
                pass
        self._writer = self._file = self._journal = None
        for path in paths:
            if path is not None:
                try:
                    os.remove(path)
                except OSError:
                    pass

    def _start_text(self) -> None:
        if self.format == "csv":
            self._csv = csv.writer(self._file)
            self._csv.writerow(self.columns)

    def _earlier_rows(self) -> list[dict]:
        """The rows of OUT and of what a killed run left (later wins per path), checked for columns."""
        merged: dict[str, dict] = {}
        partial = partial_path(self.out)
        sources = [(self.out, None), (partial, None)]
        if self.format == "parquet" and journal_path(self.out).is_file():
            sources[1] = (journal_path(self.out), "jsonl")  # the killed run's rows; its Parquet file has no footer
        for source, fmt in sources:
            if not source.is_file():
                continue
            try:
                header, rows = read_rows(source, fmt)
            except FiqaError as exc:
                if source == self.out:
                    raise FiqaError(f"--resume: {exc}") from None
                log.warning("--resume: %s is unreadable; its rows are scored again", source)
                continue
            if rows and header != self.columns:
                raise FiqaError(f"--resume: {source} has the columns {', '.join(header)}, this run writes "
                                f"{', '.join(self.columns)} (other perturbations?): give another --out")
            for r in rows:
                merged[r["path"]] = r
        self.done = {item_path(p) for p in merged}
        self._done = Done(merged)
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
                if c == "path":
                    return shown(v)
                return v if c == "error" else int(v) if c in FACE_COLUMNS[1:] or c == "score" else float(v)

            self._writer.write_table(pa.Table.from_pylist(
                [{c: value(r, c) for c in self.columns} for r in rows], schema=self._writer.schema))
            self._journal.writelines(json.dumps({c: r.get(c) for c in self.columns}) + "\n" for r in rows)

    def write(self, results: list[Result]) -> None:
        """Append one batch of rows and push them to the file (a Parquet row group and its journal lines per
        call)."""
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
                if self._journal is not None:
                    self._journal.writelines(json.dumps(row(r, self.columns)) + "\n" for r in results)
                    self._journal.flush()
            if self._file is not None:
                self._file.flush()
        except OSError as exc:
            raise OutputError(f"cannot write {self.out or 'standard output'}: {exc.strerror or exc}") from None

    def close(self, complete: bool = True) -> Path | None:
        """Finish the file; rename the partial file onto OUT when the run completed, or when that loses nothing.
        Returns where the rows are (None for standard output)."""
        try:
            try:
                if self._writer is not None:
                    self._writer.close()
                    if self._journal is not None:  # the Parquet file is readable now: its journal goes
                        self._journal.close()
                        self._journal = None
                        os.remove(self.journal)
                elif self._file is not None and self._file is not sys.stdout:
                    self._file.close()
                elif self._file is sys.stdout:
                    self._file.flush()
            except OSError as exc:
                raise OutputError(f"cannot write {self.out or 'standard output'}: {exc.strerror or exc}") from None
            finally:
                if self._journal is not None:
                    self._journal.close()
                self._writer = self._file = self._journal = None
            if self.out is None or self._in_place:
                return self.out
            if complete or self.resumed or not self._had_result:
                os.replace(self.path, self.out)
                return self.out
            return self.path
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
