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
from cotbench.solvers.sandbox import (
    Limits,
    format_number,
    isolation_mode,
    run_python,
    run_z3,
)

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


def test_threads_processes_and_subprocesses_still_work(mode):
    """The seccomp filter answers clone3 with ENOSYS (glibc falls back to clone): threads, fork and
    posix_spawn must keep working for ordinary programs."""
    code = ("import threading, os, subprocess, sys\n"
            "out = []\n"
            "ts = [threading.Thread(target=out.append, args=(i,)) for i in range(3)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os._exit(7)\n"
            "code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])\n"
            "r = subprocess.run([sys.executable, '-c', 'print(2)'], capture_output=True, text=True)\n"
            "answer = sum(out) + code + int(r.stdout)\n")
    out = run_python(code, Limits(wall_s=5, cpu_s=3, memory_mb=512, nproc=8, output_bytes=10_000, file_mb=4))
    assert out.status == "ok" and out.answer == "12", out


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
    groups_before = _run_cgroup_dirs()
    harness = subprocess.Popen([sys.executable, str(script)], cwd=REPO)
    time.sleep(0.8)
    harness.kill()
    harness.wait()
    time.sleep(3.5)  # the launcher's alarm: wall clock + 2 s after it started
    end = time.monotonic() + 3.0  # its cleanup (and SIGKILL itself) is asynchronous: poll, on a loaded machine
    while [u for u in _sandbox_uids() if u not in before] and time.monotonic() < end:
        time.sleep(0.1)
    assert [u for u in _sandbox_uids() if u not in before] == []
    assert _run_cgroup_dirs() - groups_before == set()  # the launcher removed the run's cgroups itself
    if log.exists():  # in namespace mode the killed harness could not remove its (empty) sandbox folder
        shutil.rmtree(log.read_text(), ignore_errors=True)


def _sandbox_uids() -> list[int]:
    return [uid for _, uid in _live_procs() if uid >= 1_000_000]


def _run_cgroup_dirs() -> set[str]:
    return {str(p) for d in sandbox._cgroup_parents().values() for p in Path(d).glob("cotbench-sbx-*")}


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
def test_hostile_result_report_is_a_recorded_status(name):
    """Issue #18.1: whatever bytes arrive on the result descriptor, run_code returns an Outcome
    (the harness reads the report the same way in both modes; both are run below for one report)."""
    code = f"import os\nos.write(3, {HOSTILE_REPORTS[name]!r})\nos._exit(0)\n"
    for kind in (("python", "z3") if name == "z3_verdict" else ("python",)):
        lim = FAST if kind == "python" else Limits(wall_s=10)  # importing z3 takes ~1 s on a loaded machine
        out = sandbox.run_code(code, kind, lim)  # raised RecursionError / ValueError before the fix
        assert out.status in ("crashed", "bad_answer"), out
        assert out.answer is None
        assert len(out.detail) <= 1500 and len(out.value or "") <= 200


def test_plan_tool_records_a_hostile_report_as_a_wrong_answer():
    """Through the plan solver's own path: the hostile report becomes a recorded tool status."""
    from cotbench.records import Example
    from cotbench.solvers.plan import run_plan, tool_extraction

    ex = Example(id="t/1", dataset="gsm8k", question="q", gold="18", answer_type="number")
    for raw in (HOSTILE_REPORTS["deep_nesting"], HOSTILE_REPORTS["huge_int"]):
        out = run_plan(f"import os\nos.write(3, {raw!r})\nos._exit(0)\n", "python", FAST)
        got = tool_extraction(out, "python", ex)
        assert got.answer is None and got.method in ("tool_crashed", "tool_bad_answer"), (out, got)


def test_hostile_result_report_in_both_modes(mode):
    test_hostile_result_report_is_a_recorded_status("deep_nesting")


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


# ------------------------------------------------------------------------------------------ issue #18: v2
KEY_SECRET = "cotbench-keyring-canary-51c2"
KEYRING_ATTACK = (
    "import ctypes, struct\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def ids(ring):\n"
    "    buf = ctypes.create_string_buffer(4096)\n"
    "    n = libc.syscall(250, 11, ring, buf, 4096)\n"  # KEYCTL_READ of a keyring: its key ids
    "    return list(struct.unpack('%di' % (n // 4), buf.raw[:n])) if n > 0 else []\n"
    "for ring in (-3, -4, -5):\n"  # session, user, user-session keyrings
    "    for k in ids(ring):\n"
    "        b = ctypes.create_string_buffer(256)\n"
    "        m = libc.syscall(250, 11, k, b, 256)\n"
    "        print('read', ring, k, b.raw[:max(m, 0)])\n"
    "print('planted', libc.syscall(248, b'user', b'planted', b'x', 1, -3))\n"
    "print('cleared', libc.syscall(250, 7, -3))\n"  # KEYCTL_CLEAR
    "answer = 1\n"
)
KEYRING_HARNESS = (
    "import ctypes, json, struct\n"
    "from cotbench.solvers.sandbox import Limits, run_python\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "assert libc.syscall(250, 1, b'cotbench-test-session') > 0\n"  # KEYCTL_JOIN_SESSION_KEYRING, named
    "secret = SECRET.encode()\n"
    "canary = libc.syscall(248, b'user', b'cotbench-canary', secret, len(secret), -3)\n"
    "out = run_python(CODE, Limits(wall_s=5))\n"
    "buf = ctypes.create_string_buffer(4096)\n"
    "n = libc.syscall(250, 11, -3, buf, 4096)\n"
    "b = ctypes.create_string_buffer(256)\n"
    "m = libc.syscall(250, 11, canary, b, 256)\n"
    "print(json.dumps({'status': out.status, 'stdout': out.stdout, 'canary': canary,\n"
    "    'ids': list(struct.unpack('%di' % (n // 4), buf.raw[:n])), 'payload': b.raw[:max(m, 0)].decode(),\n"
    "    'in_force': out.limits_in_force}))\n"
)


def _stand_in_harness(source: str, **consts) -> dict:
    """Run ``source`` as a separate harness process (its own keyring, mounts…) and return its JSON line."""
    import json
    import subprocess

    head = "".join(f"{k} = {v!r}\n" for k, v in consts.items())
    r = subprocess.run([sys.executable, "-c", head + source], cwd=REPO, capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_keyrings_of_the_harness_are_out_of_reach(mode):
    """Issue #18.2: with the harness in a session keyring, the program can neither read its keys, clear
    them, nor plant one; checked from the harness's side after the run."""
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("the test uses x86_64 syscall numbers")
    got = _stand_in_harness(KEYRING_HARNESS, SECRET=KEY_SECRET, CODE=KEYRING_ATTACK)
    assert got["status"] == "ok", got
    assert KEY_SECRET not in got["stdout"]
    assert got["ids"] == [got["canary"]] and got["payload"] == KEY_SECRET, got  # not cleared, nothing planted
    assert "session_keyring" in got["in_force"]


def test_calls_a_program_never_needs_are_refused(mode):
    """seccomp: keyrings, memfd, SysV shared memory, new namespaces, mounts, ptrace -> EPERM."""
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("the filter exists for x86_64 only (recorded in limits_missing elsewhere)")
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "res = {}\n"
        "def call(name, *args):\n"
        "    r = libc.syscall(*args)\n"
        "    res[name] = (r, ctypes.get_errno())\n"
        "call('keyctl', 250, 0, -3)\n"  # KEYCTL_GET_KEYRING_ID
        "call('memfd_create', 319, b'x', 0)\n"
        "call('shmget', 29, 0, 1 << 20, 0o1600)\n"  # IPC_PRIVATE, IPC_CREAT|0600
        "call('unshare_user', 272, 0x10000000)\n"
        "call('clone_newuser', 56, 0x10000000 | 17, 0, 0, 0, 0)\n"  # CLONE_NEWUSER | SIGCHLD
        "call('ptrace', 101, 0, 0, 0, 0)\n"  # PTRACE_TRACEME
        "print(res)\n"
        "answer = sum(1 for r, e in res.values() if r == -1 and e == 1)\n"  # EPERM
    )
    out = run_python(code, FAST)
    assert out.status == "ok" and out.answer == "6", out
    assert "seccomp" in out.limits_in_force


def _memory_cgroup_or_skip(out):
    if "memory_cgroup" not in out.limits_in_force:
        assert any(m.startswith("memory_cgroup") for m in out.limits_missing), out  # never silently
        pytest.skip("no memory cgroup can be created here (recorded in limits_missing)")


def test_memory_of_all_processes_together_is_bounded(mode):
    """Issue #18.3: six processes of 200 MB each stay under RLIMIT_AS (256 MB) one by one; together the
    run's memory cgroup stops them. Checked from outside: the host's available memory never fell by
    anything near 1.2 GB, and the cgroup's own peak is within its limit."""
    import threading
    import time

    lim = Limits(wall_s=6, cpu_s=2, memory_mb=256, nproc=8, output_bytes=10_000, file_mb=4)
    code = (
        "import os, time\n"
        "kids = []\n"
        "for i in range(6):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        x = bytearray(200 * 1024 ** 2)\n"  # touched (memset): really resident
        "        time.sleep(1)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "codes = [os.waitpid(p, 0)[1] for p in kids]\n"
        "print(codes)\n"
        "if any(codes):\n"
        "    raise SystemExit('a child was killed')\n"
        "answer = 1\n"
    )

    def avail_mb() -> float:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
        return 0.0

    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(avail_mb())
            time.sleep(0.02)

    before = avail_mb()
    t = threading.Thread(target=sample)
    t.start()
    try:
        out = run_python(code, lim)
    finally:
        stop.set()
        t.join()
    _memory_cgroup_or_skip(out)
    assert out.status == "memory" and "cgroup" in out.detail, out
    cap = lim.memory_mb + lim.file_mb + sandbox._CGROUP_HEADROOM_MB
    assert out.memory_peak_mb is not None and out.memory_peak_mb <= cap + 1, out
    assert before - min(samples) < 700, (before, min(samples))  # 1,200 MB without the cgroup


def test_shared_memory_files_are_bounded_and_removed(mode):
    """Issue #18.3/4: 640 MB of /dev/shm files (4 MB each, under RLIMIT_FSIZE; RLIMIT_AS does not count
    them). Basic mode: the memory cgroup stops the run and the files are removed afterwards; namespace
    mode: there is no /dev/shm inside. Checked from outside: nothing left in /dev/shm, peak within limit."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm on this host")
    tag = os.urandom(4).hex()
    code = (
        "n = 0\n"
        "try:\n"
        "    for i in range(160):\n"
        f"        with open('/dev/shm/cotbench-shm-{tag}-%d' % i, 'wb') as f:\n"
        "            f.write(b'x' * (4 * 1024 ** 2))\n"
        "        n += 1\n"
        "finally:\n"
        "    print(n, flush=True)\n"
        "answer = n\n"
    )
    lim = Limits(wall_s=8, cpu_s=4, memory_mb=256, nproc=8, output_bytes=10_000, file_mb=4)
    try:
        out = run_python(code, lim)
        left = [f for f in os.listdir("/dev/shm") if f.startswith(f"cotbench-shm-{tag}")]
        assert left == [], len(left)
        if mode == "namespace":
            assert out.status == "exception" and "FileNotFoundError" in out.detail, out
        else:
            _memory_cgroup_or_skip(out)
            assert out.status == "memory", out
            assert out.memory_peak_mb <= lim.memory_mb + lim.file_mb + sandbox._CGROUP_HEADROOM_MB + 1, out
    finally:
        for f in os.listdir("/dev/shm"):
            if f.startswith(f"cotbench-shm-{tag}"):
                os.unlink(os.path.join("/dev/shm", f))


def test_work_folder_inodes_are_bounded():
    """Issue #18.3: empty files cost kernel memory, not bytes; /work's tmpfs has an inode limit."""
    if isolation_mode() != "namespace":
        pytest.skip("namespace mode only (basic mode's workdir is a host folder; its cgroup bounds the memory)")
    code = (
        "n = 0\n"
        "try:\n"
        "    while n < 200000:\n"
        "        open('f%d' % n, 'w').close()\n"
        "        n += 1\n"
        "finally:\n"
        "    print(n)\n"
    )
    lim = Limits(wall_s=8, cpu_s=6, memory_mb=256, nproc=8, output_bytes=10_000, file_mb=4, work_files=500)
    out = run_python(code, lim)
    assert out.status == "exception" and "No space left" in out.detail, out
    assert int(out.stdout.split()[0]) < 500
    assert "work_tmpfs_size_and_inodes" in out.limits_in_force


def test_a_daemon_that_kills_its_own_uid_does_not_survive(mode):
    """Issue #18.4: the daemon SIGKILLs every process of its uid (a cleanup helper running as that uid
    would die); nothing of the run may be alive afterwards."""
    code = (
        "import os, time\n"
        "print(os.getuid(), flush=True)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork():\n"
        "        os._exit(0)\n"
        "    time.sleep(0.3)\n"
        "    end = time.time() + 20\n"
        "    while time.time() < end:\n"
        "        try:\n"
        "            os.kill(-1, 9)\n"
        "        except OSError:\n"
        "            pass\n"
        "answer = 5\n"
    )
    out = run_python(code, Limits(wall_s=4, cpu_s=3, memory_mb=512, nproc=8, output_bytes=10_000, file_mb=4))
    assert out.status in ("ok", "crashed", "timeout"), out
    assert _procs_of_uid(int(out.stdout.split()[0])) == [], out
    assert not out.limits_missing or not any(m.startswith("cleanup") for m in out.limits_missing), out


def test_basic_mode_leaves_nothing_in_shared_folders(mode, tmp_path):
    """Issue #18.4: files a run puts in /tmp, /var/tmp, /dev/shm are gone afterwards (basic mode: root,
    fresh uid; namespace mode: those folders do not exist inside)."""
    tag = os.urandom(4).hex()
    paths = [f"{d}/cotbench-leak-{tag}" for d in ("/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(d)]
    code = (
        f"paths = {paths!r}\n"
        "made = []\n"
        "for p in paths:\n"
        "    try:\n"
        "        open(p, 'w').write('x')\n"
        "        made.append(p)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(made)\n"
        "answer = len(made)\n"
    )
    try:
        out = run_python(code, FAST)
        assert out.status == "ok", out
        assert [p for p in paths if os.path.exists(p)] == []
    finally:
        for p in paths:
            if os.path.exists(p):
                os.unlink(p)


NON_ROOT_HARNESS = (
    "import importlib.util, json, sys\n"
    "spec = importlib.util.spec_from_file_location('sbx', SANDBOX)\n"
    "sbx = sys.modules['sbx'] = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(sbx)\n"
    "out = sbx.run_python(CODE, sbx.Limits(wall_s=3))\n"
    "print(json.dumps({'status': out.status, 'stdout': out.stdout, 'isolation': out.isolation,\n"
    "                  'in_force': out.limits_in_force, 'missing': out.limits_missing}))\n"
)


def test_daemon_does_not_outlive_a_run_of_a_non_root_harness():
    """Issue #18.4: a harness that is not root has no fresh uid and no cgroups; the launcher is a child
    subreaper, so a double-forked daemon is reparented to it and killed when the program ends."""
    import json
    import subprocess

    py = shutil.which("python3", path="/usr/bin:/bin")
    src = REPO / "cotbench" / "solvers" / "sandbox.py"
    if os.geteuid() != 0 or not py or not sandbox._world_executable(py):
        pytest.skip("needs root (to start a non-root stand-in harness) and a world-executable python3")
    if not all(os.stat(p).st_mode & 0o005 == 0o005 for p in [*src.parents][:-1]) or not os.stat(src).st_mode & 0o004:
        pytest.skip("the checkout is not readable by an unprivileged user")
    code = ("import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork():\n"
            "        os._exit(0)\n"
            "    print('daemon', os.getpid(), flush=True)\n"
            "    time.sleep(60)\n"
            "    os._exit(0)\n"
            "time.sleep(0.5)\n"
            "answer = 5\n")
    head = f"SANDBOX = {str(src)!r}\nCODE = {code!r}\n"
    r = subprocess.run([py, "-I", "-c", head + NON_ROOT_HARNESS], user=65534, group=65534, extra_groups=[],
                       cwd="/", capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["isolation"] == "basic" and got["status"] == "ok", got
    pid = int(got["stdout"].split()[1])
    alive = pid in _procs_of_uid(65534)
    if alive:
        os.kill(pid, 9)
    assert not alive, "the daemon outlived the run"
    assert "subreaper" in got["in_force"] and any(m.startswith("per_run_uid") for m in got["missing"]), got


def test_v1_freezer_ends_a_run_where_cgroup_kill_is_missing(mode, monkeypatch):
    """Without the v2 hierarchy (no cgroup.kill): v1 memory and pids groups, and freeze-kill-thaw."""
    parents = {k: v for k, v in sandbox._cgroup_parents().items() if k != "unified"}
    if "freezer" not in parents:
        pytest.skip("no writable v1 freezer hierarchy here")
    monkeypatch.setattr(sandbox, "_cgroup_parents", lambda: parents)
    test_a_daemon_that_kills_its_own_uid_does_not_survive(mode)
    test_fork_bomb_is_contained_and_nothing_survives(mode)
    out = run_python("answer = 1", FAST)
    assert "cgroup_freeze_kill" in out.limits_in_force and "cgroup_kill" not in out.limits_in_force, out


def test_without_cgroups_the_run_says_so_and_still_leaves_nothing(mode, monkeypatch):
    """Where no cgroup can be created, the outcome lists what is missing (never silently) and the
    fallbacks (PID namespace; subreaper and pidfd uid sweep) still end a daemon that kills its own uid."""
    monkeypatch.setattr(sandbox, "_cgroup_parents", lambda: {})
    test_a_daemon_that_kills_its_own_uid_does_not_survive(mode)
    out = run_python("answer = 1", FAST)
    assert out.status == "ok", out
    for name in ("memory_cgroup", "pids_cgroup", "cgroup_kill"):
        assert any(m.startswith(name) for m in out.limits_missing), out.limits_missing
        assert name not in out.limits_in_force
    assert out.memory_peak_mb is None


def test_read_only_fallback_remounts_every_submount(tmp_path):
    """Without mount_setattr (Linux < 5.12) each submount is remounted read-only, one by one."""
    import subprocess

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare")
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    dst.mkdir()
    snippet = (
        "import os, sys\n"
        "from cotbench.solvers import sandbox as S\n"
        "S._SYS_MOUNT_SETATTR = 0x7fff\n"  # no such call: ENOSYS, as on an old kernel
        f"S._mount('tmpfs', {str(src / 'sub')!r}, 'tmpfs', 0)\n"
        f"S._mount({str(src)!r}, {str(dst)!r}, None, S._MS_BIND | S._MS_REC)\n"
        f"how = S._remount_ro_tree({str(dst)!r})\n"
        "res = []\n"
        f"for p in ({str(dst / 'top')!r}, {str(dst / 'sub' / 'below')!r}):\n"
        "    try:\n"
        "        open(p, 'w').close()\n"
        "        res.append('written')\n"
        "    except OSError as e:\n"
        "        res.append(e.strerror)\n"
        "print(how, res)\n"
    )
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", snippet],
                       cwd=REPO, capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split(" ", 1)[0] == "remount", r.stdout
    assert "written" not in r.stdout and r.stdout.count("Read-only file system") == 2, r.stdout


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


def test_z3_memory_is_told_by_its_error_code_not_its_message():
    """z3 running out of memory is status "memory" because z3's error code says so; a plan that raises a
    Z3Exception with the same words is an exception like any other (the message decides nothing)."""
    oom = ("from z3 import *\nxs = [Int('x%d' % i) for i in range(100000)]\ns = Solver()\n"
           "for i in range(len(xs) - 1):\n    s.add(xs[i] < xs[i + 1] * 3 + i)\n")
    out = run_z3(oom, Limits(wall_s=30, cpu_s=20, memory_mb=200))
    assert out.status == "memory", out
    out = run_z3("from z3 import *\nraise Z3Exception('out of memory')\n", Limits(wall_s=10))
    assert out.status == "exception" and "out of memory" in out.detail, out


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
