"""Shared fixtures.

Real data is read from ``../shared/data`` beside the repository (never copied in); set
``COTBENCH_TEST_SHARED_DATA`` to another folder, or to a missing one to run as a fresh clone would.
Without it, tests about the real files skip, and everything else runs on :mod:`tiny_mirror`, a tiny
synthetic mirror of every dataset written for the tests.

Every test gets its own generation store (``XDG_CACHE_HOME`` under its tmp_path), so no test is served
calls another test paid for, and none touches the user's cache.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

# before any test loads llama.cpp: a short OpenMP spin, then sleep (see cotbench/backends/threads.py)
from cotbench.backends.threads import openmp_wait_defaults  # noqa: E402

openmp_wait_defaults()
# module- and session-scoped fixtures run before the per-test store below: keep them off the user's cache too
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="cotbench-test-cache-")

import pytest
from tiny_mirror import write_tiny_mirror

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("COTBENCH_TEST_SHARED_DATA") or REPO.parent / "shared" / "data")
HF_DATA = SHARED_DATA / "hf"


@pytest.fixture(autouse=True)
def own_store(tmp_path, monkeypatch) -> Path:
    """This test's default generation store (what a run uses without --cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "cotbench" / "generations.sqlite"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def hf_data(shared_data) -> Path:
    return shared_data / "hf"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A hub-schema mirror of every dataset with a few synthetic rows each (GSM8K: 2,000)."""
    return write_tiny_mirror(tmp_path_factory.mktemp("tiny") / "hf")


@pytest.fixture(scope="session")
def loader_data(tiny_data) -> Path:
    """The real mirror when present (the stronger check), else the tiny one: per-task loader and prompt
    tests run either way."""
    return HF_DATA if HF_DATA.is_dir() else tiny_data
