"""Helpers shared by the benchmarks: machine facts and the table + JSON report."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

# The instruction sets that decide which kernels run (torch's int4/int8 paths, llama.cpp's).
NOTABLE_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU's model name and its notable flags, from /proc/cpuinfo (Linux); elsewhere what
    `platform` knows."""
    model, flags = "", set()
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model or platform.processor() or platform.machine(),
            "flags": [f for f in NOTABLE_FLAGS if f in flags]}


def machine() -> dict:
    cpu = cpu_info()
    return {
        "cpu": cpu["model"],
        "cpu_flags": cpu["flags"],
        "arch": platform.machine(),
        "kernel_path": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def describe(facts: dict) -> str:
    """One line naming the machine, for the top of a table."""
    flags = facts["cpu_flags"] + [f"no {f}" for f in ("avx512f", "amx_tile") if f not in facts["cpu_flags"]]
    flags = ", ".join(flags) if facts["arch"] in ("x86_64", "AMD64") else ", ".join(facts["cpu_flags"]) or "-"
    return (f"{facts['cpu']} ({facts['arch']}; {flags}), {facts['cores']} cores, torch {facts['torch']} "
            f"on its {facts['kernel_path']} kernels, {facts['torch_threads']} threads")


def report(title: str, rows: list[tuple[str, str, str]], payload: dict) -> None:
    """Print a table (what, figure, target/verdict) under a line naming the machine, then one JSON
    object."""
    facts = machine()
    width = max(len(r[0]) for r in rows)
    print(f"\n{title}\nmachine: {describe(facts)}\n" + "-" * (width + 40))
    for what, figure, verdict in rows:
        print(f"{what:<{width}}  {figure:>14}  {verdict}")
    print(json.dumps({"benchmark": title, "machine": facts, **payload}, indent=1))
