"""Atomic writes: complete files or none, with ordinary permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anomalib_fewshot.components.io.atomic import atomic_write_bytes, atomic_write_json


def test_atomic_write_leaves_no_partial_file_and_uses_the_umask(tmp_path: Path):
    target = atomic_write_json(tmp_path / "sub" / "a.json", {"x": 1})
    assert target.read_text() == '{\n  "x": 1\n}\n'
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask

    atomic_write_bytes(tmp_path / "b.bin", b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "b.bin", object())  # type: ignore[arg-type]
    assert (tmp_path / "b.bin").read_bytes() == b"old"  # the previous content survives a failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "sub"]  # no temporary file left behind
