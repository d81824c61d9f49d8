"""Run untrusted, model-written Python (PAL programs, z3 specifications) in a separate, contained process.

Why: the plan_tool condition executes code a model wrote. That code must never run in the harness
process, and a hostile or broken program (infinite loop, fork bomb, memory hog, output flood, attempts
to read secrets, write files or open sockets) must end as a *recorded outcome*, never a crash or a hang.

Isolation, as chosen after testing on the project's machines (Linux 6.x, running as root, util-linux 2.38;
CI is the same kind of machine). ``unshare -n``, ``-p -f``, ``-m`` and ``-U`` all work there as root; the
cgroup tree is read-only (no cgroup limits). Two modes:

``namespace`` (used when running as root and ``unshare`` works; checked once per process):
  * ``unshare --fork --pid --mount --net --ipc --uts --kill-child=SIGKILL``: a new PID namespace (the
    launcher is its PID 1; when it exits or is killed, the kernel kills every process left in the namespace,
    even ones that called ``setsid`` — this is what really ends a fork bomb), a network namespace with only
    a downed loopback (no network at all, not even to the host's 127.0.0.1), private mounts.
  * A new root built on a private tmpfs: read-only, nosuid bind mounts of ``/usr`` (and the ``/bin``,
    ``/lib`` … links), the Python installation (its ``site-packages`` hidden under an empty read-only tmpfs),
    the ``z3`` package, ``/etc/ld.so.cache`` and the ``/dev/{null,zero,random,urandom}`` nodes. No ``/proc``,
    ``/home``, ``/root``, ``/tmp`` or project directory exists inside, so the harness's files (repository,
    data, caches, keys) cannot be read even though many are world-readable on the host.
  * The only writable place is ``/work``, a fresh size-limited tmpfs (it vanishes with the namespace).
  * The program runs as a fresh unprivileged uid/gid (random, ≥ 1,000,000, no supplementary groups, and
    ``no_new_privs``), so ``RLIMIT_NPROC`` is enforced (the kernel does not enforce it for root) and counts
    only this run's processes.
``basic`` (fallback when not root or ``unshare`` is unusable; recorded in every outcome's ``isolation``):
  a child process in its own session, the same resource limits, a fresh temporary directory as the working
  directory, a scrubbed environment, a Python audit hook that refuses socket creation, and, when root, a
  fresh uid (leftover processes are then killed with ``kill(-1)`` sent from that uid). As root this mode
  needs an interpreter an unprivileged user can execute (set ``COTBENCH_SANDBOX_PYTHON``, e.g.
  ``/usr/bin/python3``); otherwise every run is refused as ``sandbox_error`` — untrusted code never runs
  as root. Honest limits of this mode: the audit hook can be bypassed (e.g. via ctypes); world-readable
  files stay readable and world-writable folders (``/tmp``) writable; when not root, RLIMIT_NPROC counts
  all the user's processes, a program can signal the harness and read its ``/proc/<pid>/environ``.
  Use ``namespace`` mode for untrusted models. ``COTBENCH_SANDBOX=namespace|basic`` forces a mode.

Both modes: wall-clock limit (the whole process group / namespace is SIGKILLed; the launcher also arms
its own alarm at wall clock + 2 s, so nothing outlives a harness that died), CPU limit (RLIMIT_CPU),
address-space limit (RLIMIT_AS), process limit (RLIMIT_NPROC), file-size limit (RLIMIT_FSIZE), no core
dumps, stdout/stderr captured up to a byte cap (more output kills the run: ``output_limit``), stdin from
``/dev/null``, and a minimal environment (``PATH``, ``HOME``, ``LANG``, ``TMPDIR`` — no API keys or other
variables of the harness). Overhead measured here: about 0.1-0.3 s per Python run, 0.3-0.45 s with z3.

Outcome statuses: ``ok``, ``timeout``, ``memory``, ``exception``, ``no_answer`` (ran, but defined no
``solution()``/``answer`` — or no ``premises``/``conclusion`` for z3), ``bad_answer`` (returned something
that is not a number / not z3 formulas), ``output_limit``, ``inconsistent`` (z3: the premises contradict
each other), ``unknown`` (z3 gave up, e.g. its own timeout), ``crashed`` (killed by a signal),
``no_plan`` (nothing to run) and ``sandbox_error`` (the sandbox itself failed to start).

This file is also the launcher: the harness runs ``python -I -S sandbox.py --launch`` (stdlib only, so it
must not import cotbench) which sets up the namespace root, drops privileges and execs the wrapper.
"""
from __future__ import annotations

import ctypes
import functools
import json
import os
import random
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

STATUSES = (
    "ok", "timeout", "memory", "exception", "no_answer", "bad_answer", "output_limit",
    "inconsistent", "unknown", "crashed", "no_plan", "sandbox_error",
)
Z3_VERDICTS = ("entailed", "refuted", "undetermined")
_MAX_CODE_BYTES = 256_000
_SETUP_FAILED = 125  # launcher exit code when the sandbox could not be set up
_TAIL = 2000  # characters of stdout/stderr kept in an Outcome
_RESULT_CAP = 65536  # bytes of the wrapper's report read from fd 3 (more: unreadable result)


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed run. Defaults suit PAL programs and small z3 problems."""

    wall_s: float = 10.0
    cpu_s: int = 8
    memory_mb: int = 1024  # RLIMIT_AS per process (z3 + Python need ~200 MB of address space)
    nproc: int = 16  # processes + threads of the sandbox uid
    output_bytes: int = 64_000  # per stream
    file_mb: int = 16  # RLIMIT_FSIZE and the size of the /work tmpfs
    z3_timeout_ms: int = 5000  # z3's own timeout, per check (three checks at most)


@dataclass
class Outcome:
    """What happened when a program ran. ``answer`` is set only when ``status == "ok"``."""

    status: str
    answer: str | None = None  # python: canonical number string; z3: entailed|refuted|undetermined
    value: str | None = None  # repr of what the program returned (truncated)
    detail: str = ""  # exception text, signal, reason
    stdout: str = ""  # tail
    stderr: str = ""  # tail
    duration_s: float = 0.0
    isolation: str = ""
    returncode: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------- wrapper
# Runs inside the sandbox as the unprivileged uid: executes the plan, finds its answer, reports on fd 3.
_WRAPPER = r'''
import json, os, sys
kind, z3_ms, libdir, basic = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
_out = 3

def emit(obj):
    try:
        sys.stdout.flush(); sys.stderr.flush()
    except Exception:
        pass
    try:
        os.write(_out, json.dumps(obj).encode())
    except Exception:
        try:
            os.write(_out, b'{"status": "memory", "detail": "could not report result"}')
        except Exception:
            pass
    os._exit(0)

if basic:
    def _no_net(event, args):
        if event.startswith("socket.") or event in ("_socket.__new__",):
            raise PermissionError("network access is disabled in the sandbox")
    sys.addaudithook(_no_net)
sys.path.insert(0, libdir)
sys.setrecursionlimit(3000)

def as_number(v):
    from fractions import Fraction
    from decimal import Decimal
    import numbers
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return {"int": str(v)}
    if isinstance(v, (float, Fraction, Decimal)) or isinstance(v, numbers.Real):
        f = float(v)
        if f != f or f in (float("inf"), float("-inf")):
            return None
        return {"float": repr(f)}
    if isinstance(v, str):
        s = v.strip().replace(",", "").replace("$", "").rstrip(".")
        try:
            return {"float": repr(float(s))} if any(c in s for c in ".eE") else {"int": str(int(s))}
        except ValueError:
            return None
    return None

def python_answer(ns):
    if callable(ns.get("solution")):
        v = ns["solution"]()
    elif "answer" in ns:
        v = ns["answer"]
    else:
        return {"status": "no_answer", "detail": "the program defines neither solution() nor answer"}
    num = as_number(v)
    if num is None:
        return {"status": "bad_answer", "value": repr(v)[:200], "detail": "answer is not a finite number"}
    return dict(status="ok", value=repr(v)[:200], **num)

def z3_answer(ns):
    import z3
    prem, concl = ns.get("premises"), ns.get("conclusion")
    if prem is None or concl is None:
        return {"status": "no_answer", "detail": "the specification must define premises and conclusion"}
    prem = list(prem) if isinstance(prem, (list, tuple)) else [prem]
    for p in prem + [concl]:
        if not (isinstance(p, z3.ExprRef) and z3.is_bool(p)):
            return {"status": "bad_answer", "value": repr(p)[:200], "detail": "premises and conclusion must be z3 Boolean formulas"}
    s = z3.Solver()
    s.set("timeout", z3_ms)
    s.add(*prem)
    base = s.check()
    if base == z3.unsat:
        return {"status": "inconsistent", "detail": "the premises are unsatisfiable"}
    res = {}
    for name, goal in (("neg", z3.Not(concl)), ("pos", concl)):
        s.push(); s.add(goal); res[name] = s.check(); s.pop()
    if res["neg"] == z3.unsat:
        v = "entailed"
    elif res["pos"] == z3.unsat:
        v = "refuted"
    elif res["neg"] == z3.sat and res["pos"] == z3.sat:
        v = "undetermined"
    else:
        return {"status": "unknown", "detail": "z3 returned unknown: " + str(s.reason_unknown())}
    return {"status": "ok", "verdict": v, "value": v}

try:
    with open("/sbx/plan.py" if not basic else os.environ["COTBENCH_SBX_PLAN"], encoding="utf-8") as f:
        src = f.read()
    if kind == "z3":
        import z3
        z3.set_param("timeout", z3_ms)
    code = compile(src, "plan.py", "exec")
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(code, ns)
    emit(python_answer(ns) if kind == "python" else z3_answer(ns))
except MemoryError:
    emit({"status": "memory", "detail": "MemoryError"})
except RecursionError as e:
    emit({"status": "exception", "detail": "RecursionError: " + str(e)[:300]})
except BaseException as e:
    import traceback
    msg = str(e)
    st = "memory" if (kind == "z3" and "out of memory" in msg.lower()) else "exception"
    frames = [fr for fr in traceback.extract_tb(e.__traceback__) if fr.filename == "plan.py"]
    tb = "".join(traceback.format_list(frames))
    emit({"status": st, "detail": (type(e).__name__ + ": " + msg)[:500], "traceback": tb[-1500:]})
'''


# --------------------------------------------------------------------------------------------- launcher
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND, _MS_REC = 1, 2, 4, 32, 4096, 16384
_PR_SET_NO_NEW_PRIVS = 38
_SYS_MOUNT_SETATTR, _AT_FDCWD, _AT_RECURSIVE = 442, -100, 0x8000  # same number on every architecture
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 1, 2, 4
_SBX_LIB = "/opt/sbxlib"


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _mount(src: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    rc = _libc().mount(
        src.encode(), target.encode(), fstype.encode() if fstype else None, ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} -> {target}: {os.strerror(err)}")


def _mountinfo_points() -> list[str]:
    """Mount points of this mount namespace, from /proc/self/mountinfo (octal escapes decoded)."""
    import re

    points = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            field = line.split(" ")[4]
            points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field))
    return points


def _remount_ro_tree(target: str) -> str:
    """Make the mount at ``target`` and every mount below it read-only, nosuid and nodev.

    A bind remount with ``MS_REC`` only changes the top mount (the old API ignores MS_REC there), so a
    writable mount below a bound path would stay writable. ``mount_setattr(AT_RECURSIVE)`` (Linux 5.12)
    does the whole tree at once; otherwise each submount listed in mountinfo is remounted. Returns how."""
    attr = (ctypes.c_uint64 * 4)(_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV, 0, 0, 0)
    libc = _libc()
    if libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(_AT_FDCWD), target.encode(),
                    ctypes.c_uint(_AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(32)) == 0:
        return "mount_setattr"
    flags = _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV
    for point in sorted({p for p in _mountinfo_points() if p == target or p.startswith(target + "/")}):
        _mount("none", point, None, flags)
    return "remount"


def _bind_ro(src: str, root: str, target: str | None = None) -> None:
    """Bind ``src`` (with every mount below it) at ``target`` (default: the same path under ``root``),
    read-only, nosuid and nodev all the way down."""
    target = target or root + src
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(src, target, None, _MS_BIND | _MS_REC)
    _remount_ro_tree(target)


def _build_root(cfg: dict[str, Any]) -> None:
    """Namespace mode: a fresh tmpfs root with read-only system/Python mounts and a writable /work."""
    root = cfg["root"]
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=4m,mode=755")
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            os.symlink(os.readlink(top), root + top)
        elif os.path.isdir(top):
            _bind_ro(top, root)
    _bind_ro("/usr", root)
    for path in cfg["ro_paths"]:  # the Python installation(s), ld.so cache
        if os.path.exists(path) and not os.path.exists(root + path):
            _bind_ro(path, root)
    for sp in cfg["hide_paths"]:  # site-packages: nothing of the harness's environment is importable
        if os.path.isdir(root + sp):
            _mount("tmpfs", root + sp, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV, "size=16k,mode=755")
    if cfg.get("z3_dir"):
        _bind_ro(cfg["z3_dir"], root, root + _SBX_LIB + "/z3")
    os.makedirs(root + "/dev")
    for dev in ("null", "zero", "random", "urandom"):
        open(root + "/dev/" + dev, "w").close()
        _mount("/dev/" + dev, root + "/dev/" + dev, None, _MS_BIND)
    os.makedirs(root + "/sbx")
    with open(root + "/sbx/plan.py", "w", encoding="utf-8") as f:
        f.write(cfg["code"])
    with open(root + "/sbx/run.py", "w", encoding="utf-8") as f:
        f.write(_WRAPPER)
    os.makedirs(root + "/work")
    lim = cfg["limits"]
    _mount("tmpfs", root + "/work", "tmpfs", _MS_NOSUID | _MS_NODEV,
           f"size={lim['file_mb']}m,mode=700,uid={cfg['uid']},gid={cfg['uid']}")
    _mount("tmpfs", root, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)  # root tmpfs read-only


def _set_limits(lim: dict[str, Any], nproc_extra: int = 0) -> None:
    mem = int(lim["memory_mb"] * 1024 * 1024)
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = max(1, int(lim["cpu_s"]))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_NPROC, (int(lim["nproc"]) + nproc_extra,) * 2)
    fsize = int(lim["file_mb"] * 1024 * 1024)
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def _count_own_processes() -> int:
    uid, n = os.getuid(), 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def _launch() -> int:
    """Entry point of ``python -I -S sandbox.py --launch``: config JSON on stdin."""
    nonce = ""
    try:
        os.umask(0o022)  # folders made for the root must be traversable by the sandbox uid
        cfg = json.loads(sys.stdin.buffer.read().decode("utf-8"))
        nonce = cfg["nonce"]
        basic = cfg["mode"] == "basic"
        uid = cfg["uid"]
        if basic:
            plan_path = os.path.join(cfg["root"], "plan.py")
            with open(plan_path, "w", encoding="utf-8") as f:
                f.write(cfg["code"])
            wrapper_path = os.path.join(cfg["root"], "run.py")
            with open(wrapper_path, "w", encoding="utf-8") as f:
                f.write(_WRAPPER)
            workdir = os.path.join(cfg["root"], "work")
            os.makedirs(workdir, mode=0o700)
            libdir = os.path.join(cfg["root"], "lib")
            os.makedirs(libdir)
            if cfg.get("z3_dir"):
                os.symlink(cfg["z3_dir"], os.path.join(libdir, "z3"))
            if uid is not None:
                os.chown(workdir, uid, uid)
        else:
            _build_root(cfg)
            workdir, wrapper_path, libdir = "/work", "/sbx/run.py", _SBX_LIB
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
               "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONIOENCODING": "utf-8"}
        if basic:
            env["COTBENCH_SBX_PLAN"] = plan_path
        argv = [cfg["python"], "-I", "-S", "-B", wrapper_path, cfg["kind"],
                str(cfg["limits"]["z3_timeout_ms"]), libdir, "1" if basic else "0"]
    except Exception as e:  # noqa: BLE001 - report any setup failure as such
        sys.stderr.write(f"cotbench-sandbox[{nonce}]: setup failed: {type(e).__name__}: {e}\n")
        return _SETUP_FAILED
    pid = os.fork()
    if pid == 0:
        try:
            if not basic:
                os.chroot(cfg["root"])
            os.chdir(workdir)
            devnull = os.open("/dev/null", os.O_RDONLY)
            os.dup2(devnull, 0)
            if cfg["result_fd"] != 3:
                os.dup2(cfg["result_fd"], 3)  # the wrapper reports on fd 3
            os.closerange(4, 1024)
            extra = 0 if (uid is not None or not basic) else _count_own_processes()
            _set_limits(cfg["limits"], extra)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            os.execve(cfg["python"], argv, env)
        except BaseException as e:  # noqa: BLE001
            try:
                os.write(2, f"cotbench-sandbox[{nonce}]: setup failed: {type(e).__name__}: {e}\n".encode())
            finally:
                os._exit(_SETUP_FAILED)
    os.close(cfg["result_fd"])  # only the program writes results

    def _expire(signum, frame):  # the harness is gone or stuck: end everything ourselves
        if basic:
            os.killpg(0, signal.SIGKILL)
        os._exit(128 + signal.SIGKILL)  # namespace: PID 1 exiting kills every process inside

    signal.signal(signal.SIGALRM, _expire)
    signal.alarm(int(cfg["limits"]["wall_s"]) + 2)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


# --------------------------------------------------------------------------------------------- harness side
_MODE: dict[str, str] = {}  # COTBENCH_SANDBOX value -> mode found


def _z3_dir() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("z3")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.realpath(list(spec.submodule_search_locations)[0])


def sandbox_python() -> str:
    """The interpreter that runs the program: ``COTBENCH_SANDBOX_PYTHON`` or the harness's own."""
    return os.path.realpath(os.environ.get("COTBENCH_SANDBOX_PYTHON") or sys.executable)


@functools.lru_cache(maxsize=None)
def _interpreter_info(python: str) -> tuple[str, str, str]:
    """(prefix, base_prefix, 'pythonX.Y') of an interpreter (asked once; it may not be ours)."""
    if python == os.path.realpath(sys.executable):
        return sys.prefix, sys.base_prefix, f"python{sys.version_info[0]}.{sys.version_info[1]}"
    r = subprocess.run([python, "-I", "-S", "-c",
                        "import sys; print(sys.prefix); print(sys.base_prefix); print('python%d.%d' % sys.version_info[:2])"],
                       capture_output=True, text=True, timeout=30, env=_minimal_env())
    if r.returncode != 0:
        raise ValueError(f"COTBENCH_SANDBOX_PYTHON={python}: cannot run it ({r.stderr.strip()[-200:]})")
    prefix, base, ver = r.stdout.split()
    return prefix, base, ver


def _python_paths(python: str) -> tuple[list[str], list[str]]:
    """Read-only paths the interpreter needs inside the namespace root, and its site-packages to hide."""
    prefix, base, ver = _interpreter_info(python)
    ro, hide = [], []
    for pre in {os.path.realpath(base), os.path.realpath(prefix)}:
        if not (pre == "/usr" or pre.startswith("/usr/")):
            ro.append(pre)
    if not python.startswith("/usr/") and not any(python.startswith(p + "/") for p in ro):
        ro.append(os.path.dirname(python))
    if os.path.exists("/etc/ld.so.cache"):
        ro.append("/etc/ld.so.cache")
    for pre in {base, prefix, "/usr", "/usr/local"}:
        for sp in (f"{pre}/lib/{ver}/site-packages", f"{pre}/lib/{ver}/dist-packages", f"{pre}/lib/python3/dist-packages"):
            if os.path.isdir(sp):
                hide.append(os.path.realpath(sp))
    return ro, sorted(set(hide))


def _world_executable(path: str) -> bool:
    """Whether a user with no privileges can execute ``path`` (every directory above it searchable)."""
    import stat

    p = os.path.realpath(path)
    if not os.stat(p).st_mode & stat.S_IXOTH:
        return False
    d = os.path.dirname(p)
    while True:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return False
        if d == "/":
            return True
        d = os.path.dirname(d)


def _minimal_env() -> dict[str, str]:
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def _unshare_cmd() -> list[str]:
    return ["unshare", "--fork", "--pid", "--mount", "--net", "--ipc", "--uts",
            "--kill-child=SIGKILL", "--propagation", "private", "--"]


def isolation_mode() -> str:
    """``namespace`` if it works here, else ``basic``; ``COTBENCH_SANDBOX=namespace|basic`` forces one."""
    forced = os.environ.get("COTBENCH_SANDBOX", "auto")
    if forced in _MODE:
        return _MODE[forced]
    if forced not in ("auto", "namespace", "basic"):
        raise ValueError(f"COTBENCH_SANDBOX={forced!r}: choose auto, namespace or basic")
    ok = False
    if forced != "basic" and sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("unshare"):
        try:
            r = subprocess.run(_unshare_cmd() + ["true"], capture_output=True, timeout=10, env=_minimal_env())
            ok = r.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
    if forced == "namespace" and not ok:
        raise RuntimeError("COTBENCH_SANDBOX=namespace, but `unshare` namespaces are unavailable "
                           "(needs Linux, root and util-linux unshare)")
    _MODE[forced] = "namespace" if ok else "basic"
    return _MODE[forced]


def _fresh_uid() -> int:
    return random.SystemRandom().randrange(1_000_000, 2_000_000_000)


def _tail(b: bytes | bytearray) -> str:
    return bytes(b).decode("utf-8", "replace")[-_TAIL:]


def run_code(code: str, kind: str = "python", limits: Limits | None = None) -> Outcome:
    """Run ``code`` in the sandbox. ``kind``: ``python`` (PAL: ``solution()``/``answer``) or ``z3``
    (SatLM-style: ``premises`` and ``conclusion`` as z3 formulas). Never raises for anything the code does."""
    if kind not in ("python", "z3"):
        raise ValueError(f"unknown sandbox kind {kind!r}; use 'python' or 'z3'")
    lim = limits or Limits()
    if not code or not code.strip():
        return Outcome(status="no_plan", detail="empty program")
    if len(code.encode("utf-8")) > _MAX_CODE_BYTES:
        return Outcome(status="no_plan", detail=f"program longer than {_MAX_CODE_BYTES} bytes")
    mode = isolation_mode()
    python = sandbox_python()
    uid = _fresh_uid() if os.geteuid() == 0 else None
    if mode == "basic" and uid is not None and not _world_executable(python):
        # never run untrusted code as root: without namespaces the interpreter must be usable by a nobody
        return Outcome(status="sandbox_error", isolation=mode, detail=(
            f"basic sandbox as root needs an interpreter an unprivileged user can execute; {python} is not "
            "(set COTBENCH_SANDBOX_PYTHON, e.g. /usr/bin/python3, or make `unshare` available)"))
    t0 = time.monotonic()
    root = tempfile.mkdtemp(prefix="cotbench-sbx-")
    os.chmod(root, 0o755)
    ro, hide = _python_paths(python) if mode == "namespace" else ([], [])
    nonce = os.urandom(8).hex()  # marks the launcher's own failure reports (the program never sees it)
    cfg = {"mode": mode, "nonce": nonce, "root": root, "code": code, "kind": kind, "uid": uid, "python": python,
           "limits": asdict(lim), "ro_paths": ro, "hide_paths": hide, "z3_dir": _z3_dir() if kind == "z3" else None}
    launcher = [os.path.realpath(sys.executable), "-I", "-S", "-B", os.path.abspath(__file__), "--launch"]
    cmd = (_unshare_cmd() if mode == "namespace" else []) + launcher
    r_fd, w_fd = os.pipe()
    cfg["result_fd"] = w_fd
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(w_fd,), env=_minimal_env(), start_new_session=True, cwd=root,
                                close_fds=True)
    except OSError as e:
        os.close(r_fd)
        os.close(w_fd)
        shutil.rmtree(root, ignore_errors=True)
        return Outcome(status="sandbox_error", detail=f"cannot start sandbox: {e}", isolation=mode)
    os.close(w_fd)
    out, err, res = bytearray(), bytearray(), bytearray()
    killed_for = None
    try:
        try:
            proc.stdin.write(json.dumps(cfg).encode("utf-8"))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        sel.register(r_fd, selectors.EVENT_READ, res)
        deadline = t0 + lim.wall_s
        drain_until = None  # once the launcher has exited, leftovers holding the pipes get 0.3 s more
        while sel.get_map():
            now = time.monotonic()
            if drain_until is None and proc.poll() is not None:
                drain_until = now + 0.3
            if drain_until is not None and now >= drain_until:
                break
            left = deadline - now
            if left <= 0:
                killed_for = "timeout"
                break
            for key, _ in sel.select(timeout=min(left, 0.1 if drain_until else 0.5)):
                fd = key.fd
                chunk = os.read(fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = key.data
                buf.extend(chunk)
                cap = _RESULT_CAP + 1 if buf is res else lim.output_bytes
                if len(buf) > cap:
                    del buf[cap:]
                    if buf is not res:
                        killed_for = "output_limit"
            if killed_for:
                break
        if killed_for:
            _kill(proc)
            if mode == "basic" and uid is not None:
                _kill_uid(uid, python)  # processes that left the session still hold the pipes
            _drain(sel, 2.0)  # EOF on the pipes once every process holding them is dead
        sel.close()
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed_for = killed_for or "timeout"
            _kill(proc)
            rc = proc.wait()
    finally:
        os.close(r_fd)
        for f in (proc.stdout, proc.stderr):
            f.close()
        if mode == "namespace":
            try:
                os.rmdir(root)  # the tmpfs lived only inside the namespace; the host dir is empty
            except OSError:
                shutil.rmtree(root, ignore_errors=True)
        else:
            if uid is not None:
                _kill_uid(uid, python)
            shutil.rmtree(root, ignore_errors=True)
    dur = time.monotonic() - t0
    base = dict(stdout=_tail(out), stderr=_tail(err), duration_s=round(dur, 3), isolation=mode, returncode=rc)
    if killed_for == "timeout":
        return Outcome(status="timeout", detail=f"wall-clock limit of {lim.wall_s:g}s", **base)
    if killed_for == "output_limit":
        return Outcome(status="output_limit", detail=f"more than {lim.output_bytes} bytes of output", **base)
    return _classify(bytes(res), rc, kind, lim, base, nonce)


def _drain(sel: selectors.BaseSelector, seconds: float) -> None:
    """Read and discard until every pipe is closed or ``seconds`` pass."""
    end = time.monotonic() + seconds
    while sel.get_map() and time.monotonic() < end:
        for key, _ in sel.select(timeout=0.1):
            if not os.read(key.fd, 65536):
                sel.unregister(key.fileobj)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the whole session/process group; in namespace mode this kills unshare, whose
    --kill-child SIGKILLs the namespace's PID 1, and the kernel then kills everything inside."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_uid(uid: int, python: str) -> None:
    """Basic mode: kill every process left running as the run's fresh uid (a daemon that escaped the
    session). ``kill(-1)`` from that uid reaches all of them at once, so forks cannot outrun it."""
    try:
        subprocess.run([python, "-I", "-S", "-c", "import os, signal; os.kill(-1, signal.SIGKILL)"],
                       user=uid, group=uid, extra_groups=[], env=_minimal_env(), capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pass


def _json_depth_ok(text: str, max_depth: int = 1) -> bool:
    """Whether ``text`` nests arrays/objects at most ``max_depth`` deep, checked without recursion
    (a deep ``[[[[…`` must not reach the recursive JSON parser, whatever the harness's recursion limit)."""
    depth, in_str, esc = 0, False, False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def parse_result(res: bytes) -> dict[str, str | None] | None:
    """The wrapper's report on fd 3, read as untrusted input (the program can write anything there).

    Accepted only as one flat JSON object of strings/nulls, at most :data:`_RESULT_CAP` bytes; numbers
    stay text (no int conversion of a 5,000-digit literal), and nothing it contains can raise here:
    anything else gives ``None`` (recorded as ``crashed``: unreadable result)."""
    if len(res) > _RESULT_CAP:
        return None
    text = res.decode("utf-8", "replace")
    if not _json_depth_ok(text):
        return None
    try:
        obj = json.loads(text, parse_int=str, parse_float=str, parse_constant=str)
    except Exception:  # noqa: BLE001 - bytes from the sandbox may provoke any parser error
        return None
    if not isinstance(obj, dict) or not all(v is None or isinstance(v, str) for v in obj.values()):
        return None
    return {str(k)[:64]: v for k, v in obj.items()}


def _classify(res: bytes, rc: int, kind: str, lim: Limits, base: dict[str, Any], nonce: str = "") -> Outcome:
    err = base["stderr"]
    marker = f"cotbench-sandbox[{nonce}]: setup failed"
    if rc == _SETUP_FAILED and nonce and marker in err:  # the nonce: a program cannot fake a setup failure
        line = next(ln for ln in reversed(err.splitlines()) if marker in ln)
        return Outcome(status="sandbox_error", detail=line.replace(f"[{nonce}]", "")[:500], **base)
    if res:
        obj = parse_result(res)
        if obj is not None and obj.get("status") in STATUSES:
            return _from_result(obj, kind, base)
        return Outcome(status="crashed", detail="unreadable result from the program", **base)
    if rc > 128:
        sig = rc - 128
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if sig in (signal.SIGXCPU, signal.SIGKILL) and base["duration_s"] >= lim.cpu_s * 0.5:
            return Outcome(status="timeout", detail=f"CPU limit of {lim.cpu_s}s ({name})", **base)
        if sig == signal.SIGXFSZ:
            return Outcome(status="output_limit", detail=f"file size limit of {lim.file_mb} MB ({name})", **base)
        if "bad_alloc" in err or "out of memory" in err.lower():
            return Outcome(status="memory", detail=f"killed by {name} after running out of memory", **base)
        return Outcome(status="crashed", detail=f"killed by {name}", **base)
    if rc == 0:
        return Outcome(status="no_answer", detail="the program exited before returning an answer", **base)
    return Outcome(status="exception", detail=f"the program exited with code {rc}", **base)


def _from_result(obj: dict[str, Any], kind: str, base: dict[str, Any]) -> Outcome:
    status = obj["status"]
    detail = str(obj.get("detail", ""))[:500]
    if obj.get("traceback"):
        detail = (detail + "\n" + str(obj["traceback"]))[-1500:]
    value = str(obj["value"])[:200] if obj.get("value") is not None else None
    if status != "ok":
        return Outcome(status=status, value=value, detail=detail, **base)
    if kind == "z3":
        verdict = obj.get("verdict")
        if verdict not in Z3_VERDICTS:
            return Outcome(status="crashed", detail=f"bad verdict {verdict!r}", **base)
        return Outcome(status="ok", answer=verdict, value=value, **base)
    answer = format_number(obj.get("int"), obj.get("float"))
    if answer is None:
        return Outcome(status="bad_answer", value=value, detail="answer is not a finite number", **base)
    return Outcome(status="ok", answer=answer, value=value, **base)


def format_number(int_text: Any = None, float_text: Any = None) -> str | None:
    """Canonical number string: integers exactly; floats snapped to an integer when within 1e-9
    (relative) — PAL programs often return 18.000000000000004 — otherwise the shortest float repr."""
    try:
        if isinstance(int_text, str):
            return str(int(int_text))
        if isinstance(float_text, str):
            v = float(float_text)
            if v != v or v in (float("inf"), float("-inf")):
                return None
            r = round(v)
            if abs(v - r) <= 1e-9 * max(1.0, abs(v)):
                return str(int(r))
            return repr(v)
    except (ValueError, OverflowError):
        return None
    return None


def run_python(code: str, limits: Limits | None = None) -> Outcome:
    """A PAL-style program: its answer is ``solution()`` (or a top-level ``answer``), a number."""
    return run_code(code, "python", limits)


def run_z3(code: str, limits: Limits | None = None) -> Outcome:
    """A SatLM-style specification: ``premises`` (z3 formulas) and ``conclusion``; z3 decides whether the
    premises entail it (``entailed``), its negation (``refuted``) or neither (``undetermined``)."""
    return run_code(code, "z3", limits)


def check_sandbox() -> Outcome:
    """A quick self-test (runs ``answer = 42``); call before a run to fail early on a broken sandbox."""
    return run_python("answer = 42", Limits(wall_s=20))


if __name__ == "__main__" and sys.argv[1:] == ["--launch"]:
    sys.exit(_launch())
