"""Input a hostile or careless user gives: file names that are not UTF-8, FIFOs, devices and huge files in the input,
folders the walk cannot list, and stray non-image files in a scanned folder. Each is a row or a one-time warning,
never a crash, a hang or a lost row."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fiqa_trt.engine.inputs import check_item, list_items
from fiqa_trt.engine.perturbations import image_words, view_rng
from fiqa_trt.errors import FiqaError
from tests.cli_runner import run_cli

BAD = b"caf\xe9-\xff.png"  # Latin-1 'é' and a stray byte: a name the OS accepts that is not UTF-8


def test_valid_utf8_keys_keep_their_draws():
    """The view draws of every valid UTF-8 name are those of the strict UTF-8 hash, so no score moves."""
    assert image_words(0, ["a.png", "Zoë/ü 1.jpg", "x#face1", "日本/顔.png"]).tolist() == [
        389672123082809841, 12914653033847252918, 2869180301069050961, 65332719627594114]
    assert image_words(7, ["a.png"]).tolist() == [17260464258714555233]
    assert view_rng(3, "Zoë/ü.jpg", 2).integers(0, 2**62) == 2656561836412216607
    surrogate = os.fsdecode(BAD)  # hashed as its raw bytes: no UnicodeEncodeError, distinct from its neighbours
    assert len(set(image_words(0, [surrogate, "caf-.png", "café-.png"]).tolist())) == 3


@pytest.fixture
def odd_names(tmp_path, face_like) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    with open(os.fsencode(folder) + b"/" + BAD, "wb") as f:
        f.write(face_like[0].read_bytes())
    shutil.copy(face_like[1], folder / "ok.png")
    return folder


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_name_that_is_not_utf8_is_scored_written_losslessly_and_resumed(odd_names, random_model, tmp_path, fmt):
    out = tmp_path / f"s.{fmt}"
    first = run_cli("score", odd_names, "-m", random_model, "-o", out, "-q")
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr
    raw_name = os.fsencode(odd_names) + b"/" + BAD
    if fmt == "csv":
        assert raw_name in out.read_bytes()  # the name's own bytes
        rows = list(csv.DictReader(io.StringIO(out.read_bytes().decode("utf-8", "surrogateescape"))))
        names = [os.fsencode(r["path"]) for r in rows]
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        names = [os.fsencode(r["path"]) for r in rows]  # JSON's \udcNN escapes give the exact name back
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
        names = [r["path"].encode() for r in rows]
        raw_name = os.fsencode(odd_names) + b"/caf\\xe9-\\xff.png"  # the documented escape
    assert sorted(names) == sorted([raw_name, os.fsencode(odd_names / "ok.png")])
    assert all(r["error"] in (None, "") for r in rows), rows
    again = run_cli("score", odd_names, "-m", random_model, "-o", out, "--resume")
    assert again.returncode == 0, again.stderr
    assert "(2 already in" in " ".join(again.stderr.split()), again.stderr


def test_a_folder_scan_takes_image_files_and_names_what_it_skipped_once(tmp_path, face_like, caplog):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(face_like[0], folder / "a.png")
    shutil.copy(face_like[1], folder / "sub" / "camera_dump")  # an image without an extension: taken by content
    (folder / "notes.txt").write_text("holiday photos\n")
    (folder / "scores.csv").write_text("path,quality\nx.png,0.5\n")  # an earlier run's output
    (folder / "broken.jpg").write_bytes(b"not a jpeg")  # an image extension: an error row says what is wrong
    with caplog.at_level("WARNING", logger="fiqa_trt"):
        items = list_items([folder, folder])  # said once for the whole run
    assert [it.key for it in items] == ["a.png", "broken.jpg", "sub/camera_dump"] * 2
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert warnings == ["skipped 4 file(s) that are not images (notes.txt, scores.csv, notes.txt, ...): a folder "
                        "is scanned for image files only"]
    assert "not an image" in check_item(items[1]).error
    only_notes = tmp_path / "notes"
    only_notes.mkdir()
    (only_notes / "readme.md").write_text("x")
    with pytest.raises(FiqaError, match="holds no image files to score"):
        list_items(only_notes)


def test_fifos_devices_and_huge_files_are_error_rows_without_a_hang(odd_names, face_like, random_model, tmp_path):
    """One real process, CSV on its standard output: besides the name that is not UTF-8 (written as its raw bytes),
    a FIFO, a link to /dev/zero and a file over the size limit, each an error row."""
    folder = odd_names
    os.mkfifo(folder / "pipe.png")  # opened for reading, it would wait for a writer forever
    os.mkfifo(folder / "pipe")  # no image extension: not skipped, since it is not a regular file
    (folder / "zero.jpg").symlink_to("/dev/zero")  # read whole, it would grow the memory without end
    with open(folder / "huge.png", "wb") as f:  # sparse: 3 MiB that take no space
        f.write(face_like[1].read_bytes())
        f.truncate(3 * 1024 * 1024)
    uri = f"file://{folder}/pipe.png"  # through a pyarrow filesystem too
    proc = subprocess.run([sys.executable, "-m", "fiqa_trt.cli", "score", str(folder), uri,
                           "-m", str(random_model), "--max-file-mb", "2", "-q"], capture_output=True, timeout=300,
                          env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    assert os.fsencode(folder) + b"/" + BAD in proc.stdout  # the name's own bytes, on a UTF-8 locale's stdout
    rows = list(csv.DictReader(io.StringIO(proc.stdout.decode("utf-8", "surrogateescape"))))
    errors = {os.path.basename(r["path"]): r["error"] for r in rows if not r["path"].startswith("file://")}
    assert errors == {os.fsdecode(BAD): "", "ok.png": "",
                      "huge.png": "file too large: 3145728 bytes (limit 2097152 bytes, --max-file-mb)",
                      "pipe": "not a regular file: a named pipe (FIFO)",
                      "pipe.png": "not a regular file: a named pipe (FIFO)",
                      "zero.jpg": "not a regular file: a character device"}
    assert [r["error"] for r in rows if r["path"].startswith("file://")] == ["not a regular file"]


def test_folders_the_walk_cannot_list_are_error_rows(tmp_path, face_like):
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(face_like[0], root / "a.png")
    fd = os.open(root, os.O_RDONLY)
    try:  # nested folders whose full path passes the system's limit (PATH_MAX 4096): created relative to a folder
        for _ in range(18):
            os.mkdir("d" * 250, dir_fd=fd)
            inner = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        with open(os.open("deep.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(face_like[1].read_bytes())
    finally:
        os.close(fd)
    items = list_items(root)
    assert items[0].key == "a.png"
    lost = [check_item(it) for it in items[1:]]
    assert len(lost) == 1 and len(lost[0].path) > 4000
    assert lost[0].error.startswith("cannot read file: File name too long"), lost[0].error
    shutil.rmtree(root, ignore_errors=True)
    os.system(f"rm -rf '{root}'")  # rmtree gives up on paths over the limit; rm -rf walks relative to each folder


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to drop to another user")
def test_a_folder_without_read_permission_is_an_error_row(tmp_path, face_like):
    root = tmp_path / "in"
    (root / "locked").mkdir(parents=True)
    shutil.copy(face_like[0], root / "a.png")
    shutil.copy(face_like[1], root / "locked" / "b.png")
    for folder in (root, *root.parents):  # the user below must reach the input (not the files of the test run)
        if folder == Path("/"):
            break
        os.chmod(folder, os.stat(folder).st_mode | 0o005)
    os.chmod(root / "locked", 0o700)  # root's own: unreadable for the user below
    code = ("import os, PIL.Image; PIL.Image.init(); from fiqa_trt.engine.inputs import list_items, check_item; "
            "os.setgid(65534); os.setuid(65534); "  # everything imported first: then another user lists the folder
            f"print([(it.key, check_item(it).error) for it in list_items({str(root)!r})])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[('a.png', None), ('locked', 'cannot list this folder: Permission denied')]"
