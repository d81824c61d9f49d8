"""Where the project's data folders are: ``prompts/`` and ``meta_analysis/`` sit beside the package in a
checkout (and an editable install); a regular wheel installs them under ``<prefix>/share/cotbench/``.
``COTBENCH_PROMPTS_DIR`` / ``COTBENCH_META_ANALYSIS_DIR`` point elsewhere."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def data_dir(name: str) -> Path:
    env = os.environ.get(f"COTBENCH_{name.upper()}_DIR")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parent.parent / name
    if beside.is_dir():
        return beside
    return Path(sys.prefix) / "share" / "cotbench" / name
