"""`--resume` and the output's safety against a full disk and against the path being typed differently: the
earlier rows are merged into a new file that replaces the partial file only once complete, and rows match inputs
on a canonical key. (Killed runs, Parquet's journal and a second writer: tests/test_signals.py.)"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli_runner import run_cli

VIEWS = ["-p", "gaussian:sigma=1:5", "-k", "8", "-q"]  # eight cosine columns: rows of about 180 bytes


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def disk(tmp_path):
    """A 64 KiB tmpfs: a disk that fills up (root only)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_during_resume_loses_no_row(disk, tmp_path, face_like, random_model):
    images = tmp_path / "all"
    images.mkdir()
    for i in range(96):
        shutil.copy(face_like[i % 4], images / f"img_{i:02d}.png")
    names = sorted(images.iterdir())
    for part, chosen in (("a", names[:40]), ("b", names[40:80])):
        (tmp_path / f"{part}.txt").write_text("".join(f"{p}\n" for p in chosen))
    out = disk / "s.csv"
    assert run_cli("score", tmp_path / "a.txt", "-m", random_model, "-o", out, *VIEWS).returncode == 0
    done_b = run_cli("score", tmp_path / "b.txt", "-m", random_model, "-o", tmp_path / "b.csv", *VIEWS)
    assert done_b.returncode == 0, done_b.stderr
    partial = disk / "s.csv.partial"  # the rows a killed run left, not yet in OUT
    shutil.copy(tmp_path / "b.csv", partial)
    before = {p: p.read_bytes() for p in (out, partial)}
    with open(disk / "filler", "wb", buffering=0) as f:  # the disk is full
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    full = run_cli("score", images, "-m", random_model, "-o", out, "--resume", *VIEWS)
    assert {p: p.read_bytes() for p in (out, partial)} == before  # nothing lost: every earlier row is still there
    assert full.returncode == 1, full.stderr
    message = " ".join(full.stderr.split())
    assert "No space left on device (s.csv and s.csv.partial are unchanged)" in message, message
    assert "Traceback" not in full.stderr
    os.remove(disk / "filler")
    resumed = run_cli("score", images, "-m", random_model, "-o", out, "--resume", *VIEWS[:-1])
    assert resumed.returncode == 0, resumed.stderr
    assert "(80 already in" in " ".join(resumed.stderr.split())
    final = [r["path"] for r in rows(out)]
    assert sorted(final) == [str(p) for p in names] and not partial.exists()


def test_resume_matches_the_same_folder_typed_from_elsewhere(tmp_path, face_like, random_model):
    small = tmp_path / "small"
    small.mkdir()
    for p in face_like[:3]:
        shutil.copy(p, small / p.name)
    (tmp_path / "link").symlink_to(small)
    first = run_cli("score", "./small/", "-m", random_model, "-o", "out.csv", "-q", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    shutil.copy(face_like[3], small / face_like[3].name)  # one more image since
    other = tmp_path / "other"
    other.mkdir()
    again = run_cli("score", "../small", "-m", random_model, "-o", "../out.csv", "--resume", cwd=other)
    assert again.returncode == 0, again.stderr
    assert "(3 already in" in " ".join(again.stderr.split()), again.stderr
    paths = [r["path"] for r in rows(tmp_path / "out.csv")]
    assert sorted(paths) == sorted(["small/img0.png", "small/img1.png", "small/img2.png", "../small/img3.png"])
    through_link = run_cli("score", "link", "-m", random_model, "-o", "out.csv", "--resume", cwd=tmp_path)
    assert "(4 already in" in " ".join(through_link.stderr.split()), through_link.stderr
    assert len(rows(tmp_path / "out.csv")) == 4
