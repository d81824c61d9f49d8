"""The sandbox contains hostile model-written programs and records what happened (never crashes, never hangs).

Each hostile program is limited to a few seconds. Containment is checked from the outside (files on the
host, processes left running, connections received, secrets printed), not only from the status.
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from cotbench.solvers import sandbox
from cotbench.solvers.sandbox import Limits, format_number, isolation_mode, run_python, run_z3

REPO = Path(__file__).resolve().parents[1]
FAST = Limits(wall_s=2, cpu_s=1, memory_mb=512, nproc=8, output_bytes=10_000, file_mb=4)
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox needs Linux")


def _procs_of_uid(uid: int, grace_s: float = 3.0) -> list[int]:
    """Live processes of ``uid``, polled until none are left or ``grace_s`` passes (SIGKILL is async)."""
    import time

    end = time.monotonic() + grace_s
    while True:
        pids = _live_procs_of_uid(uid)
        if not pids or time.monotonic() > end:
            return pids
        time.sleep(0.1)


def _live_procs() -> list[tuple[int, int]]:
    """(pid, uid) of every living process (zombies are dead, waiting for a reaper)."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                st = Path(f"/proc/{p}/status").read_text()
            except OSError:
                continue
            uid = int(next(line for line in st.splitlines() if line.startswith("Uid:")).split()[1])
            if "State:\tZ" not in st:
                out.append((int(p), uid))
    return out


def _live_procs_of_uid(uid: int) -> list[int]:
    return [pid for pid, u in _live_procs() if u == uid]


@pytest.fixture(params=["namespace", "basic"])
def mode(request, monkeypatch):
    """Run a test in both isolation modes; basic mode needs an interpreter a nobody can execute."""
    if request.param == "namespace":
        if isolation_mode() != "namespace":
            pytest.skip("namespace isolation unavailable here (needs root and util-linux unshare)")
    else:
        monkeypatch.setenv("COTBENCH_SANDBOX", "basic")
        if os.geteuid() == 0 and not sandbox._world_executable(sandbox.sandbox_python()):
            alt = shutil.which("python3", path="/usr/bin:/bin")
            if not alt or not sandbox._world_executable(alt):
                pytest.skip("no interpreter an unprivileged user can run, for basic mode as root")
            monkeypatch.setenv("COTBENCH_SANDBOX_PYTHON", alt)
    return request.param


# ------------------------------------------------------------------------------------------ normal programs
@pytest.mark.parametrize("code, answer", [
    ("def solution():\n    eggs = 16 - 3 - 4\n    return eggs * 2\n", "18"),
    ("def solution():\n    return 75 / 60\n", "1.25"),
    ("def solution():\n    return 0.1 * 3 * 10\n", "3"),  # 3.0000000000000004 snaps to 3
    ("from fractions import Fraction\nanswer = Fraction(36, 2)\n", "18"),
    ("answer = '1,234'\n", "1234"),
    ("import math\ndef solution():\n    return math.comb(10, 3)\n", "120"),
    ("def solution():\n    return -9867630.0\n", "-9867630"),
])
def test_normal_programs_return_answers(code, answer):
    out = run_python(code, FAST)
    assert out.status == "ok", out
    assert out.answer == answer
    assert out.isolation in ("namespace", "basic")


def test_prints_are_captured_and_answer_kept():
    out = run_python("print('working...')\ndef solution():\n    return 7\n", FAST)
    assert out.status == "ok" and out.answer == "7"
    assert out.stdout == "working...\n"


@pytest.mark.parametrize("code, status", [
    ("x = 1\n", "no_answer"),
    ("def solution():\n    return None\n", "bad_answer"),
    ("def solution():\n    return True\n", "bad_answer"),
    ("def solution():\n    return 'many'\n", "bad_answer"),
    ("def solution():\n    return float('nan')\n", "bad_answer"),
    ("def solution(:\n", "exception"),
    ("def solution():\n    return 1 / 0\n", "exception"),
    ("answer = input()\n", "exception"),  # stdin is /dev/null: EOFError, not a hang
    ("import sys\nsys.exit(3)\n", "exception"),
    ("import os\nos._exit(0)\n", "no_answer"),
    ("def f(n):\n    return f(n + 1)\nanswer = f(0)\n", "exception"),
    ("", "no_plan"),
])
def test_failures_are_recorded_outcomes(code, status):
    out = run_python(code, FAST)
    assert out.status == status, out
    assert out.answer is None


def test_exception_detail_points_into_the_plan():
    out = run_python("a = 1\nb = 0\ndef solution():\n    return a / b\n", FAST)
    assert out.status == "exception"
    assert "ZeroDivisionError" in out.detail and 'File "plan.py", line 4' in out.detail


# ------------------------------------------------------------------------------------------ hostile programs
def test_infinite_loop_times_out(mode):
    out = run_python("while True:\n    pass\n", FAST)
    assert out.status == "timeout", out
    assert out.duration_s < FAST.wall_s + 2


def test_sleeping_program_hits_the_wall_clock(mode):
    out = run_python("import time\ntime.sleep(60)\n", FAST)
    assert out.status == "timeout" and "wall-clock" in out.detail
    assert out.duration_s < FAST.wall_s + 2


def test_fork_bomb_is_contained_and_nothing_survives(mode):
    bomb = (
        "import os, sys\n"
        "print(os.getuid(), flush=True)\n"
        "while True:\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            os.setsid()  # try to escape the process group\n"
        "    except OSError:\n"
        "        pass\n"
    )
    out = run_python(bomb, FAST)
    assert out.status in ("timeout", "exception", "output_limit"), out
    uid = int(out.stdout.split()[0])
    assert uid != 0 and uid != os.getuid()  # ran as a fresh unprivileged uid
    assert _procs_of_uid(uid) == []


def test_daemon_child_does_not_outlive_the_run(mode):
    code = (
        "import os, time\n"
        "print(os.getuid(), flush=True)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    time.sleep(60)\n"
        "answer = 5\n"
    )
    out = run_python(code, FAST)
    assert out.status == "ok" and out.answer == "5", out
    assert out.duration_s < 2.5  # a lingering daemon holding the pipes does not stall the run
    assert _procs_of_uid(int(out.stdout.split()[0])) == []


def test_nothing_outlives_a_killed_harness(mode, tmp_path):
    """If the harness dies mid-run, the launcher's own alarm (wall clock + 2 s) ends the program."""
    import subprocess
    import time

    script = tmp_path / "harness.py"
    log = tmp_path / "root.txt"
    script.write_text(
        "import tempfile\n"
        "_mkdtemp = tempfile.mkdtemp\n"
        "def _logged(*a, **k):\n"
        "    d = _mkdtemp(*a, **k)\n"
        f"    open({str(log)!r}, 'w').write(d)\n"
        "    return d\n"
        "tempfile.mkdtemp = _logged\n"
        "from cotbench.solvers.sandbox import Limits, run_python\n"
        "run_python('import os, time\\nprint(os.getuid(), flush=True)\\nos.fork()\\ntime.sleep(60)\\n',"
        " Limits(wall_s=1))\n")
    before = set(_sandbox_uids())
    harness = subprocess.Popen([sys.executable, str(script)], cwd=REPO)
    time.sleep(0.8)
    harness.kill()
    harness.wait()
    time.sleep(3.5)
    assert [u for u in _sandbox_uids() if u not in before] == []
    if log.exists():  # the killed harness could not remove its sandbox folder
        shutil.rmtree(log.read_text(), ignore_errors=True)


def _sandbox_uids() -> list[int]:
    return [uid for _, uid in _live_procs() if uid >= 1_000_000]


def test_allocating_far_beyond_the_limit(mode):
    # bytes(n) is calloc'ed: address space is reserved without touching pages, so RLIMIT_AS is reached in
    # a few milliseconds of CPU and the CPU limit can never come first (bytearray(n) memsets: it raced)
    out = run_python("x = bytes(50 * 1024 ** 3)\n", FAST)
    assert out.status == "memory", out
    out = run_python("chunks = []\nwhile True:\n    chunks.append(bytes(50 * 1024 ** 2))\n", FAST)
    assert out.status == "memory", out


# the wrapper's report on fd 3 is written by the program's process: a program can write anything there
HOSTILE_REPORTS = {
    "deep_nesting": b"[" * 65536,
    "deep_nesting_in_field": b'{"status": "exception", "detail": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "huge_int": b'{"status": "ok", "int": ' + b"9" * 5000 + b"}",
    "huge_int_text": b'{"status": "ok", "int": "' + b"9" * 5000 + b'"}',
    "huge_float": b'{"status": "ok", "float": 1e999999}',
    "nan": b'{"status": "ok", "float": NaN}',
    "not_utf8": b'{"status": "ok", "int": "\xff\xfe"}',
    "oversized": b'{"status": "ok", "detail": "' + b"x" * 200_000 + b'", "int": "1"}',
    "wrong_types": b'{"status": ["ok"], "int": {"a": 1}}',
    "bad_status": b'{"status": "pwned", "int": "1"}',
    "z3_verdict": b'{"status": "ok", "verdict": {"entailed": 1}}',
}


@pytest.mark.parametrize("name", sorted(HOSTILE_REPORTS))
def test_hostile_result_report_is_a_recorded_status(mode, name):
    """Issue #18.1: whatever bytes arrive on the result descriptor, run_code returns an Outcome."""
    code = f"import os\nos.write(3, {HOSTILE_REPORTS[name]!r})\nos._exit(0)\n"
    for kind in (("python", "z3") if name == "z3_verdict" else ("python",)):
        lim = FAST if kind == "python" else Limits(wall_s=10)  # importing z3 takes ~1 s on a loaded machine
        out = sandbox.run_code(code, kind, lim)  # raised RecursionError / ValueError before the fix
        assert out.status in ("crashed", "bad_answer"), out
        assert out.answer is None
        assert len(out.detail) <= 1500 and len(out.value or "") <= 200


def test_program_cannot_fake_a_sandbox_setup_failure(mode):
    code = ("import sys, os\nsys.stderr.write('cotbench-sandbox: setup failed: forged\\n')\n"
            "sys.stderr.flush()\nos._exit(125)\n")
    out = run_python(code, FAST)
    assert out.status == "exception", out


def test_parse_result_is_total():
    assert sandbox.parse_result(b'{"status": "ok", "int": "18"}') == {"status": "ok", "int": "18"}
    for raw in HOSTILE_REPORTS.values():
        got = sandbox.parse_result(raw)
        assert got is None or all(v is None or isinstance(v, str) for v in got.values())


def test_too_many_threads_fail_inside_the_program(mode):
    code = ("import threading, time\n"
            "ts = [threading.Thread(target=time.sleep, args=(2,)) for _ in range(200)]\n"
            "for t in ts:\n    t.start()\n")
    out = run_python(code, FAST)
    assert out.status == "exception" and "thread" in out.detail


def test_flooding_stdout_and_stderr(mode):
    out = run_python("while True:\n    print('x' * 1000)\n", FAST)
    assert out.status == "output_limit", out
    assert out.duration_s < FAST.wall_s
    out = run_python("import sys\nwhile True:\n    sys.stderr.write('y' * 1000)\n", FAST)
    assert out.status == "output_limit", out


def test_big_file_in_workdir_is_capped(mode):
    out = run_python("open('big', 'wb').write(b'0' * (64 * 1024 ** 2))\nanswer = 1\n", FAST)
    assert out.status == "exception" and "File too large" in out.detail, out


def test_secret_in_environment_is_not_visible(mode, monkeypatch):
    secret = "sk-cotbench-test-7f3a9c"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    code = (
        "import os\n"
        "print(sorted(os.environ.items()))\n"
        "for p in ('/proc/self/environ', '/proc/1/environ', '/proc/%d/environ' % os.getppid()):\n"
        "    try:\n"
        "        print(open(p, 'rb').read())\n"
        "    except OSError as e:\n"
        "        print('denied', p, type(e).__name__)\n"
        "answer = 1\n"
    )
    out = run_python(code, FAST)
    assert out.status == "ok", out
    assert secret not in out.stdout + out.stderr
    assert "OPENAI_API_KEY" not in out.stdout and "HF_TOKEN" not in out.stdout


def test_network_connection_is_refused(mode):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        code = (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "s.sendall(b'leak')\n"
            "answer = 1\n"
        )
        out = run_python(code, FAST)
        assert out.status == "exception", out
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
        out = run_python("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)\nanswer = 1\n", FAST)
        assert out.status == "exception", out
    finally:
        server.close()


def test_writing_outside_the_workdir_fails(mode, tmp_path):
    # a world-writable host folder: only isolation (not file permissions) can protect it
    target = tmp_path / "open"
    target.mkdir()
    target.chmod(0o777)
    paths = [str(target / "pwned"), str(REPO / "pwned_by_sandbox"), "/usr/pwned_by_sandbox", "/pwned_by_sandbox",
             "../pwned_by_sandbox"]
    code = (
        f"paths = {paths!r}\n"
        "written = []\n"
        "for p in paths:\n"
        "    try:\n"
        "        with open(p, 'w') as f:\n"
        "            f.write('x')\n"
        "        written.append(p)\n"
        "    except OSError:\n"
        "        pass\n"
        "with open('scratch.txt', 'w') as f:\n"
        "    f.write('ok')\n"  # the workdir itself is writable
        "print(written)\n"
        "answer = len(written)\n"
    )
    try:
        out = run_python(code, FAST)
        assert out.status == "ok", out
        for p in paths[1:4]:
            assert not Path(p).exists()
        if mode == "namespace":
            assert out.answer == "0", out.stdout
            assert not (target / "pwned").exists()
        else:  # documented limit of basic mode: world-writable host folders stay writable
            assert out.answer in ("0", "1")
    finally:
        for p in paths[1:4]:
            if Path(p).exists():
                Path(p).unlink()


def test_deleting_files_outside_fails(mode, tmp_path):
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    victim = victim_dir / "keep.txt"
    victim.write_text("precious")
    code = (
        "import os, shutil\n"
        f"for p in ({str(victim)!r}, '/sbx/run.py', '/sbx/plan.py'):\n"
        "    try:\n"
        "        os.remove(p)\n"
        "        print('removed', p)\n"
        "    except OSError as e:\n"
        "        print('kept', p, type(e).__name__)\n"
        f"shutil.rmtree({str(victim_dir)!r}, ignore_errors=True)\n"
        "answer = 1\n"
    )
    out = run_python(code, FAST)
    assert out.status == "ok", out
    assert victim.read_text() == "precious"
    assert "removed" not in out.stdout


def test_mounts_below_read_only_paths_are_read_only_too(tmp_path):
    """Issue #18.5: a writable mount below a bound path (here a stand-in tmpfs on /usr/src, in a private
    mount namespace of a stand-in harness) must be read-only inside the sandbox too; checked from outside."""
    import subprocess

    if isolation_mode() != "namespace":
        pytest.skip("namespace mode only (basic mode makes no mounts)")
    script = tmp_path / "harness.py"
    script.write_text(
        "import os, json\n"
        "from cotbench.solvers.sandbox import Limits, run_python\n"
        "code = ('import os\\nw = []\\nfor p in (\"/usr/src/pwned\", \"/usr/src/d\"):\\n'\n"
        "        '    try:\\n        (os.mkdir if p.endswith(\"d\") else lambda q: open(q, \"w\").close())(p)\\n'\n"
        "        '        w.append(p)\\n    except OSError as e:\\n        print(p, e)\\n'\n"
        "        'print(w)\\nanswer = len(w)\\n')\n"
        "out = run_python(code, Limits(wall_s=5))\n"
        "print(json.dumps({'status': out.status, 'stdout': out.stdout, 'left': os.listdir('/usr/src')}))\n")
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        f"mount -t tmpfs cotbench-test /usr/src && exec {sys.executable} {script}"],
                       cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stderr
    import json
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["left"] == [], got  # nothing was written into the stand-in mount
    assert got["status"] == "ok" and got["stdout"].strip().endswith("[]"), got


def test_harness_files_are_not_readable():
    if isolation_mode() != "namespace":
        pytest.skip("only namespace mode hides world-readable host files (documented)")
    code = (
        "import os\n"
        f"print(os.path.exists({str(REPO)!r}), os.path.exists('/home'), os.path.exists('/proc'))\n"
        f"answer = len(open({str(REPO / 'pyproject.toml')!r}).read())\n"
    )
    out = run_python(code, FAST)
    assert out.status == "exception" and "FileNotFoundError" in out.detail, out
    assert out.stdout.split() == ["False", "False", "False"]


def test_site_packages_of_the_harness_are_hidden():
    if isolation_mode() != "namespace":
        pytest.skip("namespace mode only")
    out = run_python("import yaml\nanswer = 1\n", FAST)  # installed for the harness, not for plans
    assert out.status == "exception" and "ModuleNotFoundError" in out.detail, out


# ------------------------------------------------------------------------------------------ z3
Z3_HEAD = "from z3 import *\na, b, c = Bools('a b c')\n"


@pytest.mark.parametrize("body, status, answer", [
    ("premises = [a, Not(b), Implies(Or(a, b), c)]\nconclusion = c\n", "ok", "entailed"),
    ("premises = [Implies(Or(a, b), c), Not(c)]\nconclusion = b\n", "ok", "refuted"),
    ("premises = [Not(a), Not(b), Implies(Or(a, b), c)]\nconclusion = c\n", "ok", "undetermined"),
    ("premises = [a, Not(a)]\nconclusion = c\n", "inconsistent", None),
    ("premises = [a]\n", "no_answer", None),
    ("premises = [a]\nconclusion = 3\n", "bad_answer", None),
    ("premises = [a]\nconclusion = Undefined(b)\n", "exception", None),
])
def test_z3_specifications(body, status, answer):
    out = run_z3(Z3_HEAD + body, Limits(wall_s=10, z3_timeout_ms=2000))
    assert out.status == status, out
    assert out.answer == answer


def test_z3_gives_up_within_its_own_timeout():
    code = ("from z3 import *\nx, y, z = Ints('x y z')\n"
            "premises = [x > 0, y > 0, z > 0, x * x * x + y * y * y == z * z * z]\nconclusion = x > 1000\n")
    out = run_z3(code, Limits(wall_s=10, z3_timeout_ms=300))
    assert out.status in ("unknown", "timeout"), out
    assert out.duration_s < 10


def test_z3_program_is_sandboxed_too(mode):
    if mode == "basic" and sandbox.sandbox_python() != os.path.realpath(sys.executable):
        pytest.skip("z3 is not importable by the substitute interpreter")
    out = run_z3("from z3 import *\nwhile True:\n    pass\n", FAST)
    assert out.status == "timeout", out


# ------------------------------------------------------------------------------------------ pure helpers
@pytest.mark.parametrize("i, f, expected", [
    ("18", None, "18"), (None, "18.000000000000004", "18"), (None, "1.25", "1.25"),
    (None, "-9867630.0", "-9867630"), (None, "inf", None), ("x", None, None), (None, None, None),
])
def test_format_number(i, f, expected):
    assert format_number(i, f) == expected


def test_unknown_kind_is_a_caller_error():
    with pytest.raises(ValueError, match="kind"):
        sandbox.run_code("answer = 1", "bash")


def test_bad_mode_setting_is_reported(monkeypatch):
    monkeypatch.setenv("COTBENCH_SANDBOX", "docker")
    with pytest.raises(ValueError, match="COTBENCH_SANDBOX"):
        isolation_mode()
