"""The long-run script on a few images: both streams run, every measurement is written, nothing is invented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from research import long_run

pytestmark = pytest.mark.slow


def test_long_run_smoke(tmp_path: Path):
    output = tmp_path / "long_run.json"
    assert (
        long_run.main(["--models", "Dfd", "--images", "6", "--work", str(tmp_path / "work"), "--output", str(output)])
        == 0
    )
    result = json.loads(output.read_text())
    assert result["command"].endswith(f"--output {output}")
    assert result["machine"]["cpu"].endswith(" cores")  # the CPU model, as benchmark rows name it
    (row,) = result["rows"]
    assert row["model"] == "Dfd" and row["fit_seconds"] > 0
    for path in ("openvino", "engine_predict"):
        stream = row[path]
        assert stream["images"] == 6, path
        assert stream["images_per_second"] > 0
        for key in ("rss_start_mib", "rss_middle_mib", "rss_end_mib"):
            assert stream[key] > 100, (path, key)  # a real resident-set reading of a torch process
        counts = [point["images"] for point in stream["trace"]]
        assert counts == sorted(set(counts)) and counts[-1] == 6, (path, counts)
        assert all(point["rss_mib"] > 100 for point in stream["trace"]), path
    # one image at a time: a trace point at every tenth of the stream (tenths of 6 images round to 1..6)
    assert [point["images"] for point in row["openvino"]["trace"]] == [1, 2, 3, 4, 5, 6]


def test_stream_folder_has_the_asked_count(tmp_path: Path):
    folder = long_run.make_stream_folder(tmp_path, 7, n_unique=3, size=32)
    assert len(list(folder.iterdir())) == 7
    assert len(list((tmp_path / "unique").iterdir())) == 3
