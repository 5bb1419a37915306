"""Atomic writes: an interrupted write keeps the old file and leaves no temporary file behind."""

from __future__ import annotations

import pytest

from nightflow.atomic import atomic_path, write_text_atomic


def test_failed_write_keeps_old_content_and_no_temp_file(tmp_path):
    target = tmp_path / "log.csv"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


def test_successful_write_replaces_and_creates_folders(tmp_path):
    target = tmp_path / "a" / "b" / "x.txt"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["x.txt"]
