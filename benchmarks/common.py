"""Helpers shared by the benchmarks: machine facts and the table + JSON report."""

from __future__ import annotations

import json
import os
import platform

import torch


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def report(title: str, rows: list[tuple[str, str, str]], payload: dict) -> None:
    """Print a table (what, figure, target/verdict) and then one JSON object."""
    width = max(len(r[0]) for r in rows)
    print(f"\n{title}\n" + "-" * (width + 40))
    for what, figure, verdict in rows:
        print(f"{what:<{width}}  {figure:>14}  {verdict}")
    print(json.dumps({"benchmark": title, "machine": machine(), **payload}, indent=1))
