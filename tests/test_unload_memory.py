"""Unloading a model frees its memory: an ONNX model holding a 96 MiB table, served by
``scorepack serve`` in a process of its own with --model-control explicit, is unloaded,
loaded and unloaded again through the V2 repository API while another model serves; the
process's resident memory is read with psutil at each step."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from cli_process import ServerProcess, cli_env
from fixture_backends import write_entry_point

pytest.importorskip("onnxruntime")
psutil = pytest.importorskip("psutil")

TESTS = Path(__file__).resolve().parent
TABLE_MB = 96


def test_unload_gives_the_memory_back(tmp_path: Path) -> None:
    from onnx_models import lookup_table

    big = lookup_table(tmp_path / "lookup.onnx", TABLE_MB)
    small = tmp_path / "m.echo"
    small.write_text("echo\n")
    site = tmp_path / "site"
    write_entry_point(site)
    args = [f"big={big}", f"small={small}", "--model-control", "explicit", "--device", "cpu"]
    ids = {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1, 4], "data": [0, 2, 4, 6]}]}
    x = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    with (
        ServerProcess(args, cli_env([site, TESTS])) as server,
        httpx.Client(base_url=server.url, timeout=120) as client,
    ):
        process = psutil.Process(server.proc.pid)

        def rss() -> float:
            return process.memory_info().rss / 2**20

        assert client.post("/v2/models/big/infer", json=ids).json()["outputs"][0]["data"] == [
            0,
            1,
            2,
            3,
        ]
        assert client.post("/v2/repository/models/big/unload").status_code == 200
        before = rss()
        assert client.post("/v2/repository/models/big/load").status_code == 200
        assert client.post("/v2/models/big/infer", json=ids).status_code == 200
        loaded = rss()
        assert client.post("/v2/repository/models/big/unload").status_code == 200
        after = rss()
        assert client.post("/v2/models/small/infer", json=x).status_code == 200
    held = loaded - before
    print(f"RSS MiB: before load {before:.0f}, loaded {loaded:.0f}, after unload {after:.0f}")
    assert held > TABLE_MB * 0.8, (before, loaded, after)  # the table really was resident
    assert after <= before * 1.10, (before, loaded, after)  # within 10 % of before load
    assert after - before < held * 0.25, (before, loaded, after)  # most of it came back
    assert np.isfinite(after)
