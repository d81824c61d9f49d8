"""Shared bits of the benchmark scripts: the machine description and writing results."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

from cotbench.pipeline.harness import package_versions

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "bench"
DATA_DIR = ROOT.parent / "shared" / "data" / "hf"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, RAM, Python and package versions."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    versions = package_versions(("cotbench", "llama_cpp_python", "openai", "httpx", "lm_eval", "numpy"))
    return {"platform": platform.platform(), "cpu": cpu, "logical_cpus": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "ram_gib": ram_gib, "versions": versions,
            # other processes on a shared box skew absolute numbers; ratios from alternating runs less so
            "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()]}


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and all its descendants (Linux /proc)."""
    total, todo, tick = 0.0, [pid], os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError, IndexError):
            continue
    return total


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def write_json(name: str, payload: dict[str, Any], out: str | None = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path
