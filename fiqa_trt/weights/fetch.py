"""Downloading a known model's weights from its official direct link, with checksum verification.

The download streams into a `.part` file beside the target while hashing; a zip archive is opened and the model's
member taken out; the sha256 of the file that lands is compared with the record (`zoo.ModelRecord.sha256`) before the
file is moved into place, so a failed or corrupted download never leaves a file that looks valid. Models without a
recorded checksum are kept with a warning that prints the digest. Only http(s) links are followed.
"""

from __future__ import annotations

import logging
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from fiqa_trt.files import sha256_of
from fiqa_trt.errors import FiqaError
from fiqa_trt.weights import locations, zoo

log = logging.getLogger("fiqa_trt")
CHUNK = 1 << 20



def _download(url: str, dest: Path, timeout: float, progress: Callable[[int, int | None], None] | None) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "fiqa-trt"})
    with urllib.request.urlopen(request, timeout=timeout) as response, dest.open("wb") as f:
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        done = 0
        while block := response.read(CHUNK):
            f.write(block)
            done += len(block)
            if progress:
                progress(done, total)
        if total is not None and done != total:
            raise FiqaError(f"download of {url} stopped at {done} of {total} bytes")


def _extract(archive: Path, member: str, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == member]
            if not names:
                raise FiqaError(f"the downloaded archive has no '{member}' (it holds: "
                                f"{', '.join(zf.namelist()[:10])})")
            with zf.open(names[0]) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
    except zipfile.BadZipFile:
        raise FiqaError("the downloaded file is not a zip archive") from None


def fetch(model: zoo.ModelRecord, root: str | Path | None = None, url: str | None = None, force: bool = False,
          timeout: float = 60.0, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download `model` into `root/<family folder>/<first expected name>` (root: the user cache by default) and
    verify it. `url` replaces the official link (a mirror); the checksum is checked all the same."""
    link = url or model.url
    target = Path(root or locations.download_root()) / model.directory / model.files[0]
    if not link:
        raise FiqaError(f"'{model.name}' has no direct download link: get it from {model.source} ({model.notes}) and "
                        f"put it at {target} or under ./weights/{model.directory}/")
    if urlparse(link).scheme not in ("http", "https"):
        raise FiqaError(f"only http(s) links are downloaded, not {link}")
    if target.is_file() and not force:
        if model.sha256 and sha256_of(target) != model.sha256:
            raise FiqaError(f"{target} exists but its sha256 does not match the record: delete it or pass --force")
        log.info("%s is already at %s", model.name, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    archive = target.with_name(target.name + ".zip.part")
    try:
        try:
            _download(link, archive if model.archive_member else part, timeout, progress)
        except urllib.error.HTTPError as exc:
            raise FiqaError(f"cannot download {link}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FiqaError(f"cannot download {link}: {reason}. Without internet access, download it on another "
                            f"machine from {model.source} and put it at {target}") from None
        if model.archive_member:
            _extract(archive, model.archive_member, part)
        digest = sha256_of(part)
        if model.sha256 and digest != model.sha256:
            raise FiqaError(f"checksum mismatch for {model.name}: expected sha256 {model.sha256}, got {digest}; the "
                            "download was deleted. Try again; if it persists, the published file has changed")
        if not model.sha256:
            log.warning("%s: no checksum is recorded for this model; the downloaded file's sha256 is %s", model.name,
                        digest)
        part.replace(target)
    finally:
        part.unlink(missing_ok=True)
        archive.unlink(missing_ok=True)
    return target
