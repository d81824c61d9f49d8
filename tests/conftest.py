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


def one_cpu_per_worker() -> None:
    """Under pytest-xdist with one worker per CPU (``-n auto``), each worker and everything it starts keeps
    to its own CPU, so llama.cpp sizes itself to one thread per worker (``usable_cpus``) instead of two
    workers' threads taking turns on each core."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker.startswith("gw") or not count or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) == int(count) > 1:
        os.sched_setaffinity(0, {cpus[int(worker[2:]) % len(cpus)]})


one_cpu_per_worker()
# module- and session-scoped fixtures run before the per-test store below: keep them off the user's cache too
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="cotbench-test-cache-")

import pytest
from tiny_mirror import write_tiny_mirror

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("COTBENCH_TEST_SHARED_DATA") or REPO.parent / "shared" / "data")
HF_DATA = SHARED_DATA / "hf"


# Tests that start sandboxed programs. The sandbox tests count the machine's sandbox processes and cgroups
# before and after, so no other sandbox may run beside them: under pytest-xdist one worker runs them all.
SANDBOX_USERS = ("tests/test_sandbox.py::", "tests/test_plan_solvers.py::",
                 "tests/test_harness_e2e.py::test_plan_conditions_end_to_end")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups (``--dist loadgroup``, pyproject)
def pytest_collection_modifyitems(config, items):
    """Keep tests that must share a worker on one: sandbox users together, and the tests of a module that
    share one of its module-scoped fixtures (a server, a loaded model, a finished run), so that fixture is
    built once, not once per worker. Every other test goes to whichever worker is free."""
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        if item.nodeid.startswith(SANDBOX_USERS):
            item.add_marker(pytest.mark.xdist_group("sandbox"))
        elif any(defs[-1].scope == "module" for defs in item._fixtureinfo.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


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
def llama_server_url(tmp_path_factory):
    """One plain llama_cpp.server with the embedded model (no API key, n_ctx 4096) for every test file that
    talks to one: starting it costs seconds of CPU, and each test compares outputs within one server (or
    with the in-process backend, whose n_ctx it matches), so sharing it changes no result."""
    from cotbench.pipeline.model_registry import DEFAULT_MODEL, embedded_gguf
    from cotbench.testing.servers import llama_server

    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with llama_server(embedded_gguf(), DEFAULT_MODEL, n_ctx=4096, log=log) as url:
        yield url


@pytest.fixture(scope="session")
def loader_data(tiny_data) -> Path:
    """The real mirror when present (the stronger check), else the tiny one: per-task loader and prompt
    tests run either way."""
    return HF_DATA if HF_DATA.is_dir() else tiny_data
