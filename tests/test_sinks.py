"""Output files: atomic replacement, a row group per batch, --resume for each format, unique columns, write errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fiqa_trt.engine import sinks
from fiqa_trt.engine.perturbations import parse_spec, plan_views
from fiqa_trt.engine.scorer import Result
from fiqa_trt.errors import FiqaError

LABELS = ["affine"]


def results(names, quality=0.9):
    return [Result(n, quality, np.array([quality], np.float32)) for n in names]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_run_that_does_not_finish_keeps_the_earlier_result(tmp_path, fmt):
    out = tmp_path / f"s.{fmt}"
    first = sinks.Sink(str(out), LABELS)
    first.write(results(["a", "b", "c"]))
    first.close()
    before = out.read_bytes()
    second = sinks.Sink(str(out), LABELS)  # a new run starts ... and is killed (never closed)
    second.write(results(["a"], 0.5))
    assert out.read_bytes() == before  # untouched until the new run completes
    with pytest.raises(FiqaError, match="is being written by another run"):
        sinks.Sink(str(out), LABELS)
    second.close(complete=False)  # interrupted, not resuming: the earlier file stays, the rows are beside it
    assert out.read_bytes() == before
    assert [r["path"] for r in sinks.read_rows(sinks.partial_path(out))[1]] == ["a"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_rows_reach_the_file_batch_by_batch(tmp_path, fmt):
    out = tmp_path / f"s.{fmt}"
    sink = sinks.Sink(str(out), LABELS)
    sink.write(results(["a", "b"]))
    if fmt != "parquet":  # flushed per batch: readable while the run goes on
        assert [r["path"] for r in sinks.read_rows(sinks.partial_path(out))[1]] == ["a", "b"]
    sink.write(results(["c"]))
    sink.close()
    assert not sinks.partial_path(out).exists()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert pq.ParquetFile(out).num_row_groups == 2  # one row group per batch, not held until 4,096 rows


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_resume_skips_done_paths_and_keeps_their_rows(tmp_path, fmt):
    out = tmp_path / f"s.{fmt}"
    first = sinks.Sink(str(out), LABELS)
    first.write(results(["a", "b", "p.jpg#face0", "p.jpg#face1"]))
    first.close()
    # a run killed with SIGKILL left a partial file (CSV / JSONL: a damaged last line; Parquet: no footer)
    if fmt == "parquet":
        other = sinks.Sink(str(tmp_path / "other.parquet"), LABELS)
        other.write(results(["c"], 0.7))
        other.close()
        sinks.partial_path(out).write_bytes((tmp_path / "other.parquet").read_bytes()[:-200])
    else:
        killed = sinks.Sink(str(out), LABELS, resume=True)
        killed.write(results(["c"], 0.7))
        killed._file.write("d,0.12" if fmt == "csv" else '{"path": "d", "qua')  # half a row
        killed._file.flush()
        killed._lock.release()  # as the kernel does when the process dies
    resumed = sinks.Sink(str(out), LABELS, resume=True)
    expected_done = {"a", "b", "p.jpg"} | ({"c"} if fmt != "parquet" else set())
    assert resumed.done == expected_done
    resumed.write(results(["e"], 0.3))
    resumed.close()
    header, rows = sinks.read_rows(out)
    assert header == sinks.columns(LABELS)
    paths = [r["path"] for r in rows]
    assert sorted(paths) == sorted(["a", "b", "p.jpg#face0", "p.jpg#face1", "e"] + (["c"] if fmt != "parquet" else []))
    assert len(paths) == len(set(paths))
    assert sinks.done_paths(out) == expected_done | {"e"}


def test_resume_refuses_a_file_with_other_columns(tmp_path):
    out = tmp_path / "s.csv"
    sink = sinks.Sink(str(out), ["gaussian0", "gaussian1"])
    sink.write([Result("a", 0.9, np.array([0.9, 0.9], np.float32))])
    sink.close()
    with pytest.raises(FiqaError, match="other perturbations"):
        sinks.Sink(str(out), LABELS, resume=True)


def test_view_labels_say_what_each_view_is(tmp_path):
    specs = [parse_spec("affine:rot=1,flip=0"), parse_spec("affine:rot=-1,flip=0"), parse_spec("gaussian:sigma=4"),
             parse_spec("border"), parse_spec("gaussian:sigma=9")]
    labels = [v.label for v in plan_views(specs, 2)]
    assert labels == ["rot1_scale1.01", "rot-1_scale1.01", "gaussian4_0", "gaussian4_1", "border8", "gaussian9_0",
                      "gaussian9_1"]
    twice = [v.label for v in plan_views([parse_spec("affine:rot=6,flip=0,scale=1"), parse_spec("lowres"),
                                          parse_spec("affine:flip=0,rot=6,scale=1")], 1)]
    assert twice == ["rot6_p1", "lowres10", "rot6_p3"]  # the same view asked for twice: still two columns
    out = tmp_path / "s.parquet"
    sink = sinks.Sink(str(out), labels[:2])
    sink.write([Result("a", 0.5, np.array([0.4, 0.6], np.float32))])
    sink.close()
    import pyarrow.parquet as pq

    assert pq.read_table(out).to_pylist()[0]["cos_rot-1_scale1.01"] == pytest.approx(0.6)


@pytest.mark.parametrize("target, fragment", [
    ("{tmp}", "is a folder"),
    ("/proc/x.csv", "cannot write /proc/x.csv"),
    ("{tmp}/file.txt/x.csv", "is a file, not a folder"),
    ("{tmp}/no/such/x.csv", "does not exist"),
])
def test_unusable_outputs_are_one_line_errors(tmp_path, target, fragment):
    (tmp_path / "file.txt").write_text("x")
    target = target.format(tmp=tmp_path)
    if target == str(tmp_path):
        target = str(tmp_path / "dir.csv")
        os.mkdir(target)
    with pytest.raises(FiqaError, match=fragment):
        sinks.Sink(target, LABELS)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", None])
def test_a_full_disk_is_an_output_error_and_a_device_is_written_in_place(tmp_path, fmt):
    target = "/dev/full"
    if fmt is not None:  # a real symbolic link to the full device, with the format's extension
        target = tmp_path / f"full.{fmt}"
        target.symlink_to("/dev/full")
    with pytest.raises(FiqaError, match="No space left on device"):
        sink = sinks.Sink(str(target), LABELS)
        sink.write(results([f"img{i}.png" for i in range(2000)]))
        sink.close()
    assert fmt is None or target.is_symlink()  # never replaced by a rename
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
