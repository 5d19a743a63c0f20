"""What INPUT names: symbolic-link loops, list files by extension only, several inputs, URIs with odd names."""

from __future__ import annotations

import shutil
from urllib.parse import quote

import pytest

from fiqa_trt.engine.inputs import check_item, list_items
from fiqa_trt.errors import FiqaError


@pytest.fixture
def tree(tmp_path, face_like):
    root = tmp_path / "in"
    (root / "inner" / "deeper").mkdir(parents=True)
    shutil.copy(face_like[0], root / "a.png")
    shutil.copy(face_like[1], root / "inner" / "b.png")
    shutil.copy(face_like[2], root / "inner" / "deeper" / "c.png")
    return root


def test_links_to_parents_are_followed_once(tree, tmp_path, face_like):
    (tree / "inner" / "up").symlink_to("..")  # a loop to the root
    (tree / "inner" / "deeper" / "top").symlink_to("../..")  # a second loop: os.walk(followlinks) never ends
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(face_like[3], outside / "d.png")
    (tree / "linked").symlink_to(outside)  # a link to a real folder outside: followed, its image listed
    keys = [it.key for it in list_items(tree)]
    assert sorted(keys) == ["a.png", "inner/b.png", "inner/deeper/c.png", "linked/d.png"]


def test_only_txt_and_lst_files_are_list_files(tmp_path, face_like):
    notes = tmp_path / "notes.md"
    notes.write_text(f"{face_like[0]}\n")
    items = list_items(notes)  # a text file with another extension is one item, not a list of images
    assert [it.path for it in items] == [str(notes)]
    assert "not an image" in check_item(items[0]).error
    for suffix in (".txt", ".lst"):
        listing = tmp_path / f"list{suffix}"
        listing.write_text(f"{face_like[0]}\n{face_like[1].name}\n")
        assert [it.path for it in list_items(listing)] == [str(face_like[0]), str(tmp_path / face_like[1].name)]


def test_several_inputs_are_listed_in_order_and_the_output_file_is_left_out(tree, face_like):
    out = tree / "scores.csv"
    out.write_text("path,quality\n")
    items = list_items([str(face_like[3]), str(tree)], exclude=[out, str(out) + ".partial"])
    assert [it.key for it in items] == [face_like[3].name, "a.png", "inner/b.png", "inner/deeper/c.png"]
    assert [it.index for it in items] == [0, 1, 2, 3]
    with pytest.raises(FiqaError, match="input not found"):
        list_items([str(tree), str(tree / "missing.jpg")])


def test_uri_names_with_spaces_and_non_ascii_are_quoted(tmp_path, face_like):
    folder = tmp_path / "dir with space"
    folder.mkdir()
    shutil.copy(face_like[0], folder / "a b.png")
    shutil.copy(face_like[1], folder / "visage é ü.png")
    items = list_items("file://" + str(folder))  # the folder's own name holds a space too
    assert [it.key for it in items] == ["a b.png", "visage é ü.png"]
    assert items[1].path == "file://" + quote(str(folder / "visage é ü.png"))
    assert all(check_item(it).error is None for it in items)
    bad = check_item(type(items[0])("file://[bad uri", "x"))  # one bad item becomes an error row
    assert bad.error and bad.error.startswith("cannot read file")
