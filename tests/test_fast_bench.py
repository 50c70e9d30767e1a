"""The benchmarks' report names the machine: the CPU model and the flags that pick its kernels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cpuinfo(key: str) -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    values = [line.partition(":")[2].strip() for line in lines if line.partition(":")[0].strip() == key]
    if not values:
        pytest.skip(f"/proc/cpuinfo has no {key!r}")
    return values[0]


def test_the_benchmark_table_and_json_name_the_cpu_model(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.common import report

    name, flags = _cpuinfo("model name"), set(_cpuinfo("flags").split())
    report("a benchmark", [("decode", "1 tok/s", "")], {"figure": 1})
    out = capsys.readouterr().out
    table, _, payload = out.partition("{")
    assert f"machine: {name} (" in table
    facts = json.loads("{" + payload)["machine"]
    assert facts["cpu"] == name
    assert ("avx2" in facts["cpu_flags"]) == ("avx2" in flags)
    assert facts["kernel_path"]
