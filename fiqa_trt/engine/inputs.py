"""Input listing and per-item checks: what INPUT names, and which items can be scored.

INPUT is a folder (recursive, sorted, hidden files skipped; a symbolic link to a folder is followed, each real
folder once, so a link to a parent neither repeats images nor loops), a single image, a list file (`.txt` or
`.lst`: image paths one per line, relative to the list file's folder, `#` comments allowed), or a URI a pyarrow
filesystem reads (names are percent-quoted in the item paths, so spaces and non-ASCII names work). Several INPUTs
are listed one after the other. `exclude` leaves out given files (the run's own output files when they lie inside
its input folder).

A folder is scanned for image files: a file with an image extension (SCANNED_SUFFIXES) is an item, and so is a
file with another extension whose first bytes are an image's; other regular files (notes, an earlier scores.csv)
are skipped, counted, and named once in a warning. Whatever else the user gave becomes an item, so that nothing is
silently lost: a named file that is not an image, a file that is not a regular file (a FIFO, a device: never
opened for reading), and a folder the walk cannot list (no permission, a path over the system's length limit) are
error rows.

Reads are bounded: only regular files are read, and at most `Item.max_bytes` bytes of each (MAX_FILE_BYTES by
default; a larger file is an error row), so a FIFO or a link to /dev/zero never hangs or fills the memory. File
names are whatever the OS gives: a name that is not valid UTF-8 is carried as Python's surrogate escapes.
"""

from __future__ import annotations

import io
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fiqa_trt.errors import FiqaError
from fiqa_trt.files import IMAGE_SUFFIXES

log = logging.getLogger("fiqa_trt")
MAX_FILE_BYTES = 64 * 1024 * 1024  # default read limit per file (`score --max-file-mb`)
# Extensions a folder scan takes without looking inside (GIF too: its error row says it is not supported)
SCANNED_SUFFIXES = IMAGE_SUFFIXES | {".gif"}
# Formats DALI's image decoder reads (PIL format names), checked from the file header before decoding.
DECODABLE = {"JPEG", "PNG", "BMP", "TIFF", "JPEG2000", "WEBP", "PPM"}
LIST_SUFFIXES = (".txt", ".lst")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"II*\x00", b"MM\x00*", b"\x00\x00\x00\x0cjP", b"\xffO\xffQ",
          b"GIF8", b"P5", b"P6", b"P4", b"P2", b"P3")


@dataclass
class Item:
    """One input image. `key` identifies it for seeding (path relative to the INPUT folder); `path` is shown."""

    path: str
    key: str
    data: np.ndarray | None = None  # encoded bytes, once read
    size: tuple[int, int] | None = None  # (height, width) from the header
    error: str | None = None
    index: int = -1  # position in the input list (set by the scorer; several faces of one photo share it)
    det_score: float | None = None  # aligned runs: the detector's score of this face
    box: tuple[int, int, int, int] | None = None  # aligned runs: the face's box in the photo (left, top, right, bottom)
    photo_like: bool = False  # resized, not aligned, and no face where the template puts one
    max_bytes: int = MAX_FILE_BYTES  # a larger file is an error row, never read whole


def _looks_like_image(head: bytes) -> bool:
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def is_uri(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def _from_uri(uri: str):
    """pyarrow's (filesystem, path) for a URI; a URI whose path holds spaces or non-ASCII characters unquoted is
    quoted first."""
    from urllib.parse import quote

    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except ValueError:  # ArrowInvalid: "Cannot parse URI"
        scheme, _, rest = uri.partition("://")
        return fs.FileSystem.from_uri(f"{scheme}://{quote(rest, safe='/:@%')}")


class Unreadable(OSError):
    """A path that is not read: not a regular file, or over the size limit (its message is the error row's)."""


_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(path: str, mode: int) -> str:
    if stat.S_ISDIR(mode):
        try:
            os.listdir(path)
        except OSError as exc:
            return f"cannot list this folder: {exc.strerror or exc}"
        return "a folder, not an image file"
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return f"not a regular file: {kind}"


def _too_large(size: int, max_bytes: int) -> str:
    return f"file too large: {size} bytes (limit {max_bytes} bytes, --max-file-mb)"


def read_file(path: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a local regular file, or of a URI any pyarrow filesystem reads (file://, s3://, gs://, ...),
    at most `max_bytes` of them; Unreadable (never a blocking open or an unbounded read) for anything else."""
    if is_uri(path):
        from pyarrow import fs

        filesystem, inner = _from_uri(path)
        info = filesystem.get_file_info(inner)
        if info.type == fs.FileType.NotFound:
            raise FileNotFoundError(path)
        if info.type != fs.FileType.File:
            raise Unreadable("a folder, not an image file" if info.type == fs.FileType.Directory
                             else "not a regular file")
        if info.size is not None and info.size > max_bytes:
            raise Unreadable(_too_large(info.size, max_bytes))
        with filesystem.open_input_stream(inner) as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise Unreadable(_too_large(len(data), max_bytes))
        return data
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise Unreadable(_not_regular(path, mode))
    # O_NONBLOCK: a file swapped for a FIFO since the stat still never blocks the open
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable(_not_regular(path, info.st_mode))
        if info.st_size > max_bytes:
            raise Unreadable(_too_large(info.st_size, max_bytes))
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while it was read
        raise Unreadable(_too_large(len(data), max_bytes))
    return data


def _list_uri(source: str) -> list[Item]:
    from urllib.parse import quote

    from pyarrow import fs

    try:
        filesystem, inner = _from_uri(source)
        info = filesystem.get_file_info(inner)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for unknown schemes or missing credentials
        raise FiqaError(f"cannot open {source}: {exc}") from None
    prefix = source[: source.index("://") + 3]
    if info.type in (fs.FileType.File, fs.FileType.Unknown):  # Unknown (a FIFO, a device): an error row
        return [Item(prefix + quote(info.path, safe="/:@"), info.base_name, index=0)]
    if info.type != fs.FileType.Directory:
        raise FiqaError(f"input not found: {source}")
    root = info.path.rstrip("/")
    files = sorted((f for f in filesystem.get_file_info(fs.FileSelector(root, recursive=True))
                    if f.type in (fs.FileType.File, fs.FileType.Unknown)), key=lambda f: f.path)
    rel = [(f, f.path[len(root) + 1:]) for f in files]
    items = [Item(prefix + quote(f.path, safe="/:@"), r, index=i) for i, (f, r) in
             enumerate((f, r) for f, r in rel if not any(part.startswith(".") for part in r.split("/")))]
    if not items:
        raise FiqaError(f"the folder {source} holds no files")
    return items


def list_items(source: str | os.PathLike | list, exclude: list[str | os.PathLike] | None = None,
               max_bytes: int = MAX_FILE_BYTES) -> list[Item]:
    """List the items INPUT (or several INPUTs, one after the other) names, in a stable order (`index` =
    position), without the local files in `exclude`; each item may be read up to `max_bytes`. Files a folder scan
    skips are named once in a warning. FiqaError when an INPUT is unusable."""
    if max_bytes < 1:
        raise FiqaError("the file size limit must be at least 1 byte")
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not sources:
        raise FiqaError("no INPUT given")
    skip = {os.path.realpath(p) for p in exclude or [] if p is not None and not is_uri(p)}
    items, skipped = [], []
    for one in sources:
        listed = _list_uri(str(one)) if is_uri(one) else _list_local(one, skipped, skip)
        items += [it for it in listed if is_uri(it.path) or os.path.realpath(it.path) not in skip]
    if skipped:
        names = ", ".join(shown(os.path.basename(p)) for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        log.warning("skipped %d file(s) that are not images (%s): a folder is scanned for image files only",
                    len(skipped), names)
    if not items:
        raise FiqaError(f"{', '.join(map(str, sources))} holds no image files to score")
    for i, item in enumerate(items):
        item.index = i
        item.max_bytes = max_bytes
    return items


def shown(text: str) -> str:
    """A name as it can be printed and stored as UTF-8: bytes of a name that is not valid UTF-8 (Python's surrogate
    escapes) become `\\xNN`; every valid name is unchanged."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_image_file(path: str, name: str, skipped: list[str]) -> bool:
    """Whether a folder scan takes this file: an image extension, not a regular file (an error row follows), or
    an image's first bytes; a regular file that is none of these is added to `skipped`."""
    if os.path.splitext(name)[1].lower() in SCANNED_SUFFIXES:
        return True
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return True
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            head = f.read(16)
    except OSError:
        return True  # unreadable: its error row says why
    if _looks_like_image(head):
        return True
    skipped.append(path)
    return False


def _walk(root: Path, failed: list[str]):
    """os.walk following links to folders, each real folder once (a link to a parent would loop or repeat); the
    folders it cannot list are added to `failed`."""
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True,
                                                onerror=lambda exc: failed.append(exc.filename)):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            if os.path.realpath(os.path.join(dirpath, d)) not in seen:
                keep.append(d)
        dirnames[:] = keep
        yield dirpath, sorted(filenames)


def _list_local(source: str | os.PathLike, skipped: list[str], exclude: set[str]) -> list[Item]:
    root = Path(source)
    if root.is_dir():
        items, failed = [], []
        for dirpath, filenames in _walk(root, failed):
            for name in filenames:
                full = os.path.join(dirpath, name)
                if name.startswith(".") or (exclude and os.path.realpath(full) in exclude):
                    continue
                if _is_image_file(full, name, skipped):
                    items.append(Item(full, Path(full).relative_to(root).as_posix()))
        for folder in failed:  # an error row each, after the files (the walk's order stays the listing's)
            items.append(Item(str(folder), Path(folder).relative_to(root).as_posix() if folder != str(root)
                              else root.name))
        if not items and not skipped:
            raise FiqaError(f"the folder {root} holds no files")
        return items
    if not root.exists():
        raise FiqaError(f"input not found: {root}")
    if not root.is_file():
        raise FiqaError(f"input is neither a folder nor a file: {root}")
    with root.open("rb") as f:
        head = f.read(16)
    if _looks_like_image(head) or root.suffix.lower() not in LIST_SUFFIXES:
        return [Item(str(root), root.name)]  # not an image and not a list: an error row, as in a folder
    try:
        text = root.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FiqaError(f"{root} is neither an image nor a text file listing image paths") from None
    items = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            path = Path(line) if os.path.isabs(line) else root.parent / line
            items.append(Item(str(path), line))
    if not items:
        raise FiqaError(f"the list file {root} names no images")
    return items


def check_item(item: Item) -> Item:
    """Read the bytes and the header; set `error` for what cannot be decoded. Never raises for a bad file."""
    try:
        raw = read_file(item.path, item.max_bytes)
    except FileNotFoundError:
        item.error = "file not found"
        return item
    except Unreadable as exc:
        item.error = str(exc)
        return item
    except OSError as exc:
        item.error = f"cannot read file: {exc.strerror or exc}"
        return item
    except Exception as exc:  # noqa: BLE001 - pyarrow's ArrowInvalid for a URI it cannot parse: one bad item
        item.error = f"cannot read file: {str(exc).splitlines()[0][:200]}"
        return item
    return check_encoded(item, raw)


def check_encoded(item: Item, raw: bytes) -> Item:
    """Check an image's encoded bytes (a file's content, an upload) from its header; keep them as `item.data`
    and the size as `item.size`, or set `error`. Never raises for bad bytes."""
    from PIL import Image, UnidentifiedImageError

    if not raw:
        item.error = "empty file (0 bytes)"
        return item
    try:
        with Image.open(io.BytesIO(raw)) as im:
            fmt, (w, h) = im.format, im.size
    except UnidentifiedImageError:
        item.error = "not an image (unrecognised file format)"
        return item
    except Image.DecompressionBombError as exc:  # the header's size alone is over PIL's bomb limit
        item.error = f"image too large ({exc})"
        return item
    except Exception as exc:  # PIL raises assorted errors on damaged headers
        item.error = f"damaged image header ({exc})"
        return item
    if fmt not in DECODABLE:
        item.error = f"unsupported image format {fmt} (supported: {', '.join(sorted(DECODABLE))})"
        return item
    if w < 8 or h < 8:
        item.error = f"image too small ({w}x{h})"
        return item
    item.data = np.frombuffer(raw, dtype=np.uint8)
    item.size = (h, w)
    return item
