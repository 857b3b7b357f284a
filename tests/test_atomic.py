"""stiv_jax.atomic: the target holds the old or the whole new content; no temp file remains."""

import os

import pytest

from stiv_jax.atomic import atomic_path, atomic_write, temp_name, write_text


def test_replaces_on_success_and_leaves_nothing(tmp_path):
    p = str(tmp_path / "a.json")
    write_text(p, "old")
    with atomic_write(p, fsync=True) as f:
        f.write("new")
        assert open(p).read() == "old"  # not visible before the block ends
    assert open(p).read() == "new"
    with atomic_path(str(tmp_path / "v.mp4"), suffix=".mp4") as tmp:
        assert tmp.endswith(".tmp.mp4") and os.path.dirname(tmp) == str(tmp_path)
        open(tmp, "wb").write(b"x")
    assert sorted(os.listdir(tmp_path)) == ["a.json", "v.mp4"]


def test_failure_keeps_old_content_and_removes_temp(tmp_path):
    p = str(tmp_path / "a.txt")
    write_text(p, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(p) as f:
            f.write("half")
            raise RuntimeError("boom")
    assert open(p).read() == "old" and os.listdir(tmp_path) == ["a.txt"]
    with pytest.raises(RuntimeError):
        with atomic_path(str(tmp_path / "b.bin")):  # the writer never created the temp file
            raise RuntimeError("before writing")
    assert os.listdir(tmp_path) == ["a.txt"]


def test_unique_names_and_bad_mode(tmp_path):
    assert temp_name("x") != temp_name("x")
    with pytest.raises(ValueError, match="mode='a'"):
        with atomic_write(str(tmp_path / "x"), "a"):
            pass
