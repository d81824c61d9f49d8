"""Bad input through the real CLI (subprocesses): every case exits non-zero with a message naming the file,
row and field, prints no traceback, and leaves an earlier finished run in the same output directory intact.
Also: an API key given through the environment never reaches logs, manifests, sample files or the store."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cotbench.backends.table import TableBackend
from cotbench.pipeline.config import build_config
from cotbench.pipeline.harness import run

REPO = Path(__file__).resolve().parents[1]
META_FIXTURE = REPO / "tests" / "fixtures" / "meta" / "effects_small.csv"
SECRET = "sk-test-SECRET-3f9c2a7d51e04b8c"


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cotbench", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def assert_user_error(p: subprocess.CompletedProcess, *needles: str, code: int = 2) -> None:
    """Non-zero exit with the expected code, every needle in stderr, and no traceback."""
    assert p.returncode == code, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr
    for n in needles:
        assert n in p.stderr, f"{n!r} not in stderr:\n{p.stderr}"


def snapshot(run_dir: Path) -> dict:
    """Content hashes of a run's outputs plus the store's rows (the sqlite file may be reorganised, not its rows)."""
    snap = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.iterdir()) if p.is_file() and not p.name.startswith("store.sqlite")}
    con = sqlite3.connect(run_dir / "store.sqlite")
    snap["store_rows"] = sorted(con.execute("SELECT key, response FROM generations").fetchall())
    con.close()
    return snap


@pytest.fixture
def earlier_run(tiny_data, tmp_path) -> tuple[Path, dict]:
    """A finished run (zero-latency table backend on GSM8K rows) that later bad commands must not touch; its
    store is in its directory, so the snapshot covers it."""
    out = tmp_path / "run"
    cfg = build_config(None, {"datasets": ["gsm8k"], "settings": ["zs_direct"], "limit": 3, "data_dir": str(tiny_data),
                              "out": str(out), "cache": str(out / "store.sqlite"), "progress": False})
    run(cfg, backend=TableBackend(lambda r: "The answer is 18."))
    snap = snapshot(out)
    assert {"samples.jsonl", "summary.csv", "manifest.json"} <= set(snap) and len(snap["store_rows"]) == 3
    return out, snap


def mirror(tmp_path: Path, rel: str, lines: list[str]) -> Path:
    """A local mirror directory holding one file, written from raw lines."""
    root = tmp_path / "mirror"
    f = root / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return root


def mirror_lines(tiny_data: Path, rel: str, n: int) -> list[str]:
    with open(tiny_data / rel, encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


def run_args(out: Path, *extra: str) -> list[str]:
    return ["run", "--settings", "zs_direct", "--no-progress", "--out", str(out), *extra]


def test_malformed_dataset_row_names_file_row_and_field(earlier_run, tiny_data, tmp_path):
    out, snap = earlier_run
    lines = mirror_lines(tiny_data, "gsm8k/test.jsonl", 3) + [json.dumps({"question": "What is 2+2?", "solution": "4"})]
    root = mirror(tmp_path, "gsm8k/test.jsonl", lines)
    p = cli(*run_args(out, "--datasets", "gsm8k", "--data-dir", str(root)))
    assert_user_error(p, str(root / "gsm8k" / "test.jsonl"), "line 4", "'answer'")
    assert snapshot(out) == snap


def test_gsm8k_answer_without_final_number(earlier_run, tiny_data, tmp_path):
    out, snap = earlier_run
    row = json.loads(mirror_lines(tiny_data, "gsm8k/test.jsonl", 1)[0])
    row["answer"] = row["answer"].split("####")[0]  # worked solution kept, final '#### N' cut off
    root = mirror(tmp_path, "gsm8k/test.jsonl", mirror_lines(tiny_data, "gsm8k/test.jsonl", 1) + [json.dumps(row)])
    p = cli(*run_args(out, "--datasets", "gsm8k", "--data-dir", str(root)))
    assert_user_error(p, "gsm8k/test.jsonl", "line 2", "'answer'", "####")
    assert snapshot(out) == snap


def test_truncated_jsonl_names_the_line(earlier_run, tiny_data, tmp_path):
    out, snap = earlier_run
    lines = mirror_lines(tiny_data, "gsm8k/test.jsonl", 4)
    lines[3] = lines[3][: len(lines[3]) // 2]  # a download cut off mid-line
    root = mirror(tmp_path, "gsm8k/test.jsonl", lines)
    p = cli(*run_args(out, "--datasets", "gsm8k", "--data-dir", str(root), "--limit", "2"))
    assert_user_error(p, str(root / "gsm8k" / "test.jsonl"), "line 4", "invalid JSON")
    assert snapshot(out) == snap


def test_wrong_local_mirror_schema(earlier_run, tiny_data, tmp_path):
    """MMLU rows in another schema ('options'/'label' instead of the hub's 'choices'/'answer')."""
    out, snap = earlier_run
    rows = [json.loads(x) for x in mirror_lines(tiny_data, "mmlu/test.jsonl", 2)]
    renamed = [json.dumps({"question": r["question"], "subject": r["subject"], "options": r["choices"],
                           "label": r["answer"]}) for r in rows]
    root = mirror(tmp_path, "mmlu/test.jsonl", renamed)
    p = cli(*run_args(out, "--datasets", "mmlu", "--data-dir", str(root)))
    assert_user_error(p, str(root / "mmlu" / "test.jsonl"), "line 1", "'choices'")
    assert snapshot(out) == snap


def test_mirror_without_the_dataset_file(earlier_run, tmp_path):
    out, snap = earlier_run
    root = mirror(tmp_path, "mmlu/test.jsonl", ["{}"])
    p = cli(*run_args(out, "--datasets", "gsm8k", "--data-dir", str(root)))
    assert_user_error(p, "gsm8k", "gsm8k/test.jsonl", str(root))
    assert snapshot(out) == snap


def test_unknown_dataset_name(earlier_run, tiny_data):
    out, snap = earlier_run
    p = cli(*run_args(out, "--datasets", "gsm9k", "--data-dir", str(tiny_data)))
    assert_user_error(p, "unknown task 'gsm9k'", "gsm8k")  # names the bad value and lists the valid ones
    assert snapshot(out) == snap


def test_unknown_model_name(earlier_run, tiny_data):
    out, snap = earlier_run
    p = cli(*run_args(out, "--model", "gpt-5-turbo-nonexistent", "--datasets", "gsm8k", "--data-dir", str(tiny_data)))
    assert_user_error(p, "unknown model 'gpt-5-turbo-nonexistent'", "openai:NAME")
    assert snapshot(out) == snap


def test_missing_gguf_model_file(earlier_run, tiny_data, tmp_path):
    out, snap = earlier_run
    missing = tmp_path / "nope.gguf"
    p = cli(*run_args(out, "--model", str(missing), "--datasets", "gsm8k", "--data-dir", str(tiny_data)))
    assert_user_error(p, str(missing), "not found")
    assert snapshot(out) == snap


@pytest.mark.parametrize("text, needles", [
    ("datasets: [gsm8k\nlimit: 3\n", ["invalid YAML", "line"]),
    ("limit: three\n", ["'limit'", "integer", "'three'"]),
    ("limt: 3\n", ["unknown option", "'limt'"]),
    ("- gsm8k\n- mmlu\n", ["mapping"]),
    ("settings: [zs_direct, zs_magic]\n", ["zs_magic"]),
], ids=["syntax", "type", "unknown-key", "not-a-mapping", "bad-setting"])
def test_invalid_yaml_config(earlier_run, tiny_data, tmp_path, text, needles):
    out, snap = earlier_run
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text, encoding="utf-8")
    p = cli("run", "--config", str(cfg), "--out", str(out), "--data-dir", str(tiny_data), "--no-progress")
    assert_user_error(p, *([str(cfg)] if "zs_magic" not in needles else []), *needles)
    assert snapshot(out) == snap


def test_missing_yaml_config(earlier_run, tmp_path):
    out, snap = earlier_run
    p = cli("run", "--config", str(tmp_path / "absent.yaml"), "--out", str(out))
    assert_user_error(p, str(tmp_path / "absent.yaml"), "not found")
    assert snapshot(out) == snap


def test_literature_csv_with_non_numeric_score(tmp_path):
    lines = META_FIXTURE.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    col = header.index("cot_score")
    row = lines[2].split(",")
    row[col] = "fifty-six"
    lines[2] = ",".join(row)
    bad = tmp_path / "effects.csv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = bad.read_bytes()
    p = cli("meta", "validate", str(bad))
    assert p.returncode != 0 and "Traceback" not in p.stderr
    # names the file, the CSV line (header is line 1, so the third line is line 3) and the column
    assert f"{bad}:3" in p.stderr and "cot_score" in p.stderr and "fifty-six" in p.stderr, p.stderr
    assert bad.read_bytes() == before
    good = cli("meta", "validate", str(META_FIXTURE))
    assert good.returncode == 0, good.stderr  # the same file without the bad cell passes


def test_literature_csv_truncated_row(tmp_path):
    lines = META_FIXTURE.read_text(encoding="utf-8").splitlines()
    lines[3] = ",".join(lines[3].split(",")[:5])  # a row cut short: later columns missing
    bad = tmp_path / "effects.csv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    p = cli("meta", "validate", str(bad))
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert f"{bad}:4" in p.stderr, p.stderr


# --- API keys -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """A real llama_cpp.server that *requires* the secret as its API key, so a passing run proves it was sent."""
    from cotbench.pipeline.model_registry import DEFAULT_MODEL, embedded_gguf
    from cotbench.testing.servers import llama_server

    log = tmp_path_factory.mktemp("keyed") / "server.log"
    with llama_server(embedded_gguf(), DEFAULT_MODEL, n_ctx=1024, log=log, api_key=SECRET) as url:
        yield url


def openai_run_args(url: str, out: Path, tiny_data: Path, limit: int, *extra: str) -> list[str]:
    from cotbench.pipeline.model_registry import DEFAULT_MODEL

    return ["run", "--model", f"openai:{DEFAULT_MODEL}", "--backend", "openai", "--base-url", url,
            "--datasets", "gsm8k", "--settings", "zs_direct", "--limit", str(limit), "--max-tokens-direct", "4",
            "--data-dir", str(tiny_data), "--out", str(out), "--no-progress", "--concurrency", "2",
            "--extra-body", '{"repeat_penalty": 1.0}', *extra]


@pytest.mark.slow
def test_api_key_never_written(keyed_server, tiny_data, tmp_path):
    from cotbench.testing.servers import free_port

    ok = cli(*openai_run_args(keyed_server, tmp_path / "ok", tiny_data, 2), env={"OPENAI_API_KEY": SECRET})
    assert ok.returncode == 0, ok.stderr[-3000:]
    man = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    assert man["run_stats"]["calls_made"] == 2 and man["backend"]["api_key_env"] == "OPENAI_API_KEY"
    # the server refuses a wrong key: the error is reported (exit 3) without echoing either key
    wrong = "sk-test-WRONG-" + SECRET[::-1][:16]
    # (their own stores: from the shared one, the first run's answers would be served without a request)
    denied = cli(*openai_run_args(keyed_server, tmp_path / "denied", tiny_data, 1, "--cache",
                                  str(tmp_path / "denied.sqlite")), env={"OPENAI_API_KEY": wrong})
    assert denied.returncode == 3 and "401" in denied.stderr and "Traceback" not in denied.stderr, denied.stderr
    # a server that is not there: connection errors until the retries run out, message without the key
    down_url = f"http://127.0.0.1:{free_port()}/v1"
    down = cli(*openai_run_args(down_url, tmp_path / "down", tiny_data, 1, "--max-retries", "1", "--cache",
                                str(tmp_path / "down.sqlite")),
               env={"OPENAI_API_KEY": SECRET})
    assert down.returncode == 3 and "gave up after 1 retries" in down.stderr, down.stderr
    captured = "".join(p.stdout + p.stderr for p in (ok, denied, down))
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    # the default store (this test's XDG_CACHE_HOME is under tmp_path) is searched too
    assert {"generations.sqlite", "samples.jsonl", "manifest.json", "summary.csv"} <= {p.name for p in files}
    for secret in (SECRET, wrong):
        assert secret not in captured, "API key in the captured stdout/stderr"
        for p, data in files.items():
            assert secret.encode() not in data, f"API key in {p}"
