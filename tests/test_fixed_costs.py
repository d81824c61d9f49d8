"""A run's fixed costs stay paid once: the CLI imports only the area of the command it runs, the TLS
context and the manifest's package versions and git revision are built once per process, and what the
manifest records is what the slower ways gave."""
from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cotbench.backends import openai_api
from cotbench.cli import AREAS, build_parser
from cotbench.pipeline.harness import (
    git_revision,
    package_versions,
    revision_from_status,
)

ROOT = Path(__file__).resolve().parents[1]
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("module", list(AREAS))
def test_each_area_registers_the_commands_listed_for_it(module):
    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(module).register(sub)
    assert tuple(sub.choices) == AREAS[module]


def test_a_command_parses_the_same_with_its_area_alone_or_all_areas():
    argv = ["run", "--datasets", "gsm8k", "--limit", "3"]
    assert vars(build_parser("run").parse_args(argv)) == vars(build_parser().parse_args(argv))
    everything = build_parser("no-such-command")  # the help and the unknown-command error list every area
    assert {c for cmds in AREAS.values() for c in cmds} <= set(everything._subparsers._group_actions[0].choices)


def test_a_run_does_not_import_pandas_numpy_or_the_analysis_areas(tiny_data, tmp_path):
    """The command line's parsing and a whole run (data, store, score, outputs) leave them unloaded."""
    code = ("import sys, contextlib, io\nfrom cotbench.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: main(['run', '--help'])\n    except SystemExit: pass\n"
            "from cotbench.backends.table import TableBackend\n"
            "from cotbench.pipeline.config import build_config\nfrom cotbench.pipeline.harness import run\n"
            f"cfg = build_config(None, {{'datasets': ['gsm8k'], 'settings': ['zs_cot'], 'limit': 3, "
            f"'data_dir': {str(tiny_data)!r}, 'out': {str(tmp_path / 'run')!r}, "
            f"'cache': {str(tmp_path / 'store.sqlite')!r}, 'progress': False}})\n"
            "out = run(cfg, backend=TableBackend(lambda r: 'The answer is 1.'))\n"
            "assert (out / 'summary.csv').is_file()\n"
            "print(sorted(m for m in ('pandas', 'numpy', 'cotbench.analysis', 'cotbench.meta') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("status, expected", [
    (f"# branch.oid {SHA}\n# branch.head main\n", SHA),
    (f"# branch.oid {SHA}\n# branch.head main\n1 .M N... 100644 100644 100644 a b cotbench/cli.py\n", SHA + "+dirty"),
    (f"# branch.oid {SHA}\n# branch.head (detached)\n2 R. N... 100644 100644 100644 a b R100 new\told\n",
     SHA + "+dirty"),
    ("# branch.oid (initial)\n# branch.head main\n", None),  # no commit yet: rev-parse HEAD failed too
    ("", None),
])
def test_revision_from_git_status(status, expected):
    assert revision_from_status(status) == expected


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_git_revision_is_head_plus_dirty_as_two_git_commands_gave_it():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    git_revision.cache_clear()
    assert git_revision() == head + ("+dirty" if dirty else "")


def test_package_versions_are_a_fresh_copy_each_time():
    a = package_versions()
    a["python"] = "edited"
    assert package_versions()["python"] != "edited"


def test_the_tls_context_is_built_once_per_process(monkeypatch):
    built = []
    real = httpx.create_ssl_context
    monkeypatch.setattr(httpx, "create_ssl_context", lambda *a, **k: built.append(1) or real(*a, **k))
    openai_api.tls_context.cache_clear()
    backend = openai_api.OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key_env=None, concurrency=20)
    for _ in range(3):  # each generate() builds its pools
        clients = backend._clients()
        assert {id(c._http._transport._pool._ssl_context) for c in clients} == {id(openai_api.tls_context())}
    assert len(built) == 1
