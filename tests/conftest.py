"""Shared fixtures. Real data is read from ../shared/data beside the repository (never copied in)."""
from __future__ import annotations

import os
import socket
from pathlib import Path

# before any test loads llama.cpp: passive OpenMP waiting (see cotbench/backends/llamacpp.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
HF_DATA = SHARED_DATA / "hf"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def hf_data(shared_data) -> Path:
    return shared_data / "hf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
