"""`keyfer bench` runs and reports every figure it promises (its speed is not asserted here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from click.testing import CliRunner

from keyfer.bench import bench_peer
from keyfer.cli import main


def test_bench_reports_stages_rates_and_memory(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main, ["bench", "--backend", "torch", "--repeats", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    torch_run = report["backends"]["torch"]
    (stages,) = torch_run["stage_ms_batch1"].values()
    assert set(stages) == {"decode", "detection", "alignment", "mesh", "mesh_with_kf", "head"}
    for key in ("faces_per_s_batch1", "faces_per_s_batch32", "crop_network_crops_per_s_batch32",
                "stream_640x480_fps"):  # fmt: skip
        assert torch_run[key] > 0
    assert report["peak_memory_mib"] > 0


def test_bench_with_a_broken_peer_is_one_line(tmp_path):
    args = ["bench", "--backend", "torch", "--repeats", "1", "--peer-python", "/nonexistent/python"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "peer benchmark failed" in result.output


def test_the_peer_runner_is_a_file_handed_to_the_peers_interpreter(tmp_path):
    """keyfer.peer_fer is no module: bench_peer runs the resource file with the given Python."""
    assert importlib.util.find_spec("keyfer.peer_fer") is None
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\nprintf \'{"script": "%s", "repeats": "%s"}\\n\' "$1" "$3"\n')
    python.chmod(0o755)
    reply = bench_peer(str(python), [Path("a.jpg")], 4)
    assert reply["repeats"] == "4"
    assert "detect_emotions" in Path(reply["script"]).read_text()
