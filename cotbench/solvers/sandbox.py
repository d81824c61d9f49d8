"""Run untrusted, model-written Python (PAL programs, z3 specifications) in a separate, contained process.

Why: the plan_tool condition executes code a model wrote. That code must never run in the harness
process, and a hostile or broken program (infinite loop, fork bomb, memory hog, output flood, attempts
to read secrets, write files or open sockets) must end as a *recorded outcome*, never a crash or a hang.

Isolation, as chosen after testing on the project's machines (Linux 6.x, running as root, util-linux 2.38;
CI is the same kind of machine). ``unshare -n``, ``-p -f``, ``-m`` and ``-U`` all work there as root, and
new cgroups can be created (cgroup v1 ``memory``, ``pids``, ``freezer``; the v2 hierarchy with
``cgroup.kill``). Two modes:

``namespace`` (used when running as root and ``unshare`` works; checked once per process):
  * ``unshare --fork --pid --mount --net --ipc --uts --kill-child=SIGKILL``: a new PID namespace (the
    launcher is its PID 1; when it exits or is killed, the kernel kills every process left in the namespace,
    even ones that called ``setsid`` — this is what really ends a fork bomb), a network namespace with only
    a downed loopback (no network at all, not even to the host's 127.0.0.1), private mounts, a private IPC
    namespace (SysV objects die with it).
  * A new root built on a private tmpfs: read-only, nosuid, nodev bind mounts — read-only *all the way
    down*, submounts included (``mount_setattr(AT_RECURSIVE)``, else each submount remounted) — of ``/usr``
    (and the ``/bin``, ``/lib`` … links), the Python installation (its ``site-packages`` hidden under an
    empty read-only tmpfs), the ``z3`` package, ``/etc/ld.so.cache`` and the ``/dev/{null,zero,random,
    urandom}`` nodes. No ``/proc``, ``/home``, ``/root``, ``/tmp``, ``/dev/shm`` or project directory exists
    inside, so the harness's files (repository, data, caches, keys) cannot be read even though many are
    world-readable on the host.
  * The only writable place is ``/work``, a fresh tmpfs limited in bytes (``file_mb``) and in files
    (``work_files`` inodes: empty files cost kernel memory); it vanishes with the namespace.
  * The program runs as a fresh unprivileged uid/gid (random, ≥ 1,000,000, no supplementary groups, and
    ``no_new_privs``), so ``RLIMIT_NPROC`` is enforced (the kernel does not enforce it for root) and counts
    only this run's processes.
``basic`` (fallback when not root or ``unshare`` is unusable; recorded in every outcome's ``isolation``):
  a child process in its own session, the same resource limits, a fresh temporary directory as the working
  directory, a scrubbed environment, a Python audit hook that refuses socket creation, and, when root, a
  fresh uid. The launcher is a child subreaper: daemons are reparented to it and killed when the program
  ends. As root, every process of the fresh uid is then SIGKILLed from the harness itself through pidfds
  until none is left (no helper a program could kill), and what the uid left at the top of ``/tmp``,
  ``/var/tmp``, ``/dev/shm``, ``/run/lock`` and in SysV IPC is removed. As root this mode needs an
  interpreter an unprivileged user can execute (set ``COTBENCH_SANDBOX_PYTHON``, e.g. ``/usr/bin/python3``);
  otherwise every run is refused as ``sandbox_error`` — untrusted code never runs as root. Honest limits of
  this mode: the audit hook can be bypassed (e.g. via ctypes); world-readable files stay readable and
  world-writable folders writable *during* the run (deeper than the swept tops, a file can stay); when not
  root there is no fresh uid and usually no cgroup: RLIMIT_NPROC counts all the user's processes, a
  program can signal the harness and the launcher (and so escape the subreaper), read the harness's
  ``/proc/<pid>/environ``, and use the user's own keyrings only if seccomp is missing.
  Use ``namespace`` mode for untrusted models. ``COTBENCH_SANDBOX=namespace|basic`` forces a mode.

Both modes: wall-clock limit (the run's cgroup, the uid's processes and the whole process group /
namespace are SIGKILLed; the launcher also arms its own alarm at wall clock + 2 s and then cleans up
itself, so nothing outlives a harness that died), CPU limit (RLIMIT_CPU), address-space limit (RLIMIT_AS,
per process), process limit (RLIMIT_NPROC), file-size limit (RLIMIT_FSIZE), no core dumps, stdout/stderr
captured up to a byte cap (more output kills the run: ``output_limit``), stdin from ``/dev/null``, and a
minimal environment (``PATH``, ``HOME``, ``LANG``, ``TMPDIR`` — no API keys or other variables of the
harness). Also, each where the kernel allows it (what was set up is listed in the outcome's
``limits_in_force``; what was not, with the reason, in ``limits_missing`` — never silently):

  * a per-run **memory cgroup** bounding everything the run holds together — all its processes, shared
    memory, tmpfs pages, kernel memory — at ``memory_mb + file_mb + 64`` MB without swap (above RLIMIT_AS,
    so one process always meets its own RLIMIT_AS first: a deterministic ``MemoryError``, never a race);
    reaching it makes the kernel kill a process and the run ``memory``; its peak is ``memory_peak_mb``;
  * a **pids cgroup** (``nproc``), and a **kill group** (``cgroup.kill``, else freeze-kill-thaw with the v1
    freezer) so that ending a run kills every process of it at once, forks and ``setsid`` included;
  * a fresh anonymous **session keyring** (the harness's session keys are out of reach: not readable, not
    clearable, nothing can be planted in them);
  * a **seccomp** filter (x86_64): keyrings, ptrace, bpf, perf, userfaultfd, io_uring, mounts, new
    namespaces, memfd, SysV IPC, module/kexec/reboot/swap calls fail with EPERM.

Everything the sandbox sends back is untrusted input: the wrapper's report (fd 3, which the program can
write to) is read only as one flat JSON object of strings, at most 64 KiB and one level deep, numbers kept
as text; anything else is ``crashed`` ("unreadable result"), never an exception in the harness. The
launcher's own setup failures carry a per-run nonce the program never sees, so a program cannot pass
itself off as a ``sandbox_error``. Overhead measured here: see the README ("The sandbox").

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
import errno
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
from dataclasses import asdict, dataclass, field
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
_REPORT_CAP = 16384  # bytes of the launcher's setup report


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed run. Defaults suit PAL programs and small z3 problems."""

    wall_s: float = 10.0
    cpu_s: int = 8
    memory_mb: int = 1024  # RLIMIT_AS per process (z3 + Python need ~200 MB of address space)
    nproc: int = 16  # processes + threads of the sandbox uid
    output_bytes: int = 64_000  # per stream
    file_mb: int = 16  # RLIMIT_FSIZE and the size of the /work tmpfs
    work_files: int = 4096  # files and folders in /work (tmpfs inodes; namespace mode)
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
    limits_in_force: list[str] = field(default_factory=list)  # which containment was really set up
    limits_missing: list[str] = field(default_factory=list)  # "name: why" for each one that could not be
    memory_peak_mb: float | None = None  # peak of the run's memory cgroup (all its processes), if any

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

def z3_out_of_memory(e):
    # z3 reports exhausted memory as a plain Z3Exception; its context's error code, not the text, says so
    import z3
    if not isinstance(e, z3.Z3Exception):
        return False
    try:
        return z3.Z3_get_error_code(z3.main_ctx().ref()) == z3.Z3_MEMOUT_FAIL
    except Exception:
        return False

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
    st = "memory" if (kind == "z3" and z3_out_of_memory(e)) else "exception"
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


def _unescape_mountinfo(field: str) -> str:
    """A path field of /proc/self/mountinfo (space, tab, newline, backslash are octal escapes there)."""
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mountinfo_points() -> list[str]:
    """Mount points of this mount namespace, from /proc/self/mountinfo."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return [_unescape_mountinfo(line.split(" ")[4]) for line in f]


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


def _bind_ro(src: str, root: str, target: str | None = None) -> str:
    """Bind ``src`` (with every mount below it) at ``target`` (default: the same path under ``root``),
    read-only, nosuid and nodev all the way down; returns how (see :func:`_remount_ro_tree`)."""
    target = target or root + src
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(src, target, None, _MS_BIND | _MS_REC)
    return _remount_ro_tree(target)


def _build_root(cfg: dict[str, Any]) -> list[str]:
    """Namespace mode: a fresh tmpfs root with read-only system/Python mounts and a writable /work.
    Returns the guarantees it set up (for ``limits_in_force``)."""
    root = cfg["root"]
    how = set()
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=4m,mode=755")
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            os.symlink(os.readlink(top), root + top)
        elif os.path.isdir(top):
            how.add(_bind_ro(top, root))
    how.add(_bind_ro("/usr", root))
    for path in cfg["ro_paths"]:  # the Python installation(s), ld.so cache
        if os.path.exists(path) and not os.path.exists(root + path):
            how.add(_bind_ro(path, root))
    for sp in cfg["hide_paths"]:  # site-packages: nothing of the harness's environment is importable
        if os.path.isdir(root + sp):
            _mount("tmpfs", root + sp, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV, "size=16k,mode=755")
    if cfg.get("z3_dir"):
        how.add(_bind_ro(cfg["z3_dir"], root, root + _SBX_LIB + "/z3"))
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
           f"size={lim['file_mb']}m,nr_inodes={int(lim['work_files'])},mode=700,uid={cfg['uid']},gid={cfg['uid']}")
    _mount("tmpfs", root, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)  # root tmpfs read-only
    return ["read_only_recursive:" + "+".join(sorted(how)), "work_tmpfs_size_and_inodes"]


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


# --------------------------------------------------------------------------------------------- containment
# Used by the launcher (stdlib only) and by the harness. Every piece is optional: what could not be set up
# is named in the outcome's ``limits_missing`` and the run goes on with the weaker guarantee.
_KEYCTL_NR = {"x86_64": 250, "aarch64": 219}
_KEYCTL_JOIN_SESSION_KEYRING = 1
# seccomp: calls a PAL program or z3 never makes, denied with EPERM. x86_64 numbers only; elsewhere the
# filter is not installed (recorded). Keyrings, tracing, kernel objects that outlive a process or escape
# the memory accounting (SysV IPC, memfd), new namespaces and mounts, kernel-wide controls.
_SECCOMP_DENY_X86_64 = (
    250, 248, 249,  # keyctl, add_key, request_key
    101, 310, 311, 312,  # ptrace, process_vm_readv/writev, kcmp
    321, 298, 323, 425, 426, 427,  # bpf, perf_event_open, userfaultfd, io_uring_*
    165, 166, 155, 161, 272, 308,  # mount, umount2, pivot_root, chroot, unshare, setns
    428, 429, 430, 431, 432, 433, 442,  # open_tree, move_mount, fsopen, fsconfig, fsmount, fspick, mount_setattr
    303, 304, 179,  # name_to_handle_at, open_by_handle_at, quotactl
    167, 168, 169, 246, 320, 175, 313, 176, 163, 103,  # swapon/off, reboot, kexec_*, *_module, acct, syslog
    319, 447,  # memfd_create, memfd_secret
    29, 30, 31, 67, 64, 65, 66, 220, 68, 69, 70, 71, 240,  # SysV shm/sem/msg, mq_open
)
_SYS_CLONE_X86_64, _SYS_CLONE3_X86_64 = 56, 435
_CLONE_NEW_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 \
    | 0x40000000  # CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (clone's low byte is a signal)
_AUDIT_ARCH_X86_64 = 0xC000003E
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_PR_SET_CHILD_SUBREAPER = 36


def _seccomp_filter() -> bytes:
    """The classic-BPF program: wrong architecture or x32 ABI -> EPERM; clone3 -> ENOSYS (its flags are
    out of reach of a filter, and glibc then falls back to clone); clone with a CLONE_NEW* flag -> EPERM;
    the denied calls -> EPERM; everything else allowed."""
    import struct

    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, ret_errno = 0x7FFF0000, 0x00050000
    deny = sorted(set(_SECCOMP_DENY_X86_64))
    n = len(deny)
    clone_check = 6 + n + 1
    enosys, eperm = clone_check + 3, clone_check + 4
    prog = [(ld, 0, 0, 4), (jeq, 0, eperm - 2, _AUDIT_ARCH_X86_64), (ld, 0, 0, 0),
            (jge, eperm - 4, 0, 0x40000000), (jeq, enosys - 5, 0, _SYS_CLONE3_X86_64),
            (jeq, clone_check - 6, 0, _SYS_CLONE_X86_64)]
    prog += [(jeq, eperm - (6 + i + 1), 0, nr) for i, nr in enumerate(deny)]
    prog += [(ret, 0, 0, allow),
             (ld, 0, 0, 16),  # args[0], low 32 bits: clone's flags
             (jset, eperm - (clone_check + 2), 0, _CLONE_NEW_NAMESPACES),
             (ret, 0, 0, allow), (ret, 0, 0, ret_errno | errno.ENOSYS), (ret, 0, 0, ret_errno | errno.EPERM)]
    assert len(prog) == eperm + 1 and all(0 <= j < 256 for _, jt, jf, _ in prog for j in (jt, jf))
    return b"".join(struct.pack("<HBBI", *ins) for ins in prog)


def _install_seccomp() -> None:
    """Install :func:`_seccomp_filter` for this process and what it execs (needs no_new_privs first)."""
    if os.uname().machine != "x86_64":
        raise OSError(f"no syscall table for {os.uname().machine}")

    class _Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    code = _seccomp_filter()
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _Fprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc = _libc()
    if libc.prctl(_PR_SET_SECCOMP, ctypes.c_ulong(_SECCOMP_MODE_FILTER), ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _join_fresh_keyring() -> None:
    """Replace the inherited session keyring (the harness's: PAM/ssh sessions, services, containers) by a
    new anonymous one, so the program can neither read, clear nor plant keys the harness uses."""
    nr = _KEYCTL_NR.get(os.uname().machine)
    if nr is None:
        raise OSError(f"no keyctl number for {os.uname().machine}")
    libc = _libc()
    if libc.syscall(ctypes.c_long(nr), ctypes.c_int(_KEYCTL_JOIN_SESSION_KEYRING), None) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _proc_row(pid: int | str) -> tuple[int, int, int] | None:
    """(pid, ppid, real uid) of a living (non-zombie) process, from /proc/<pid>/status; None if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        if fields.get("State", "").strip().startswith(("Z", "X")):
            return None
        return int(pid), int(fields["PPid"]), int(fields["Uid"].split()[0])
    except (OSError, KeyError, ValueError, IndexError):
        return None


def _proc_rows() -> list[tuple[int, int, int]]:
    """:func:`_proc_row` of every process in /proc."""
    rows = (_proc_row(name) for name in os.listdir("/proc") if name.isdigit())
    return [r for r in rows if r is not None]


def _kill_descendants(seconds: float = 3.0) -> bool:
    """Launcher, basic mode (a child subreaper): SIGKILL its children and reap them, again and again, as
    orphans of the killed ones are reparented to it; True once none is left."""
    me, end = os.getpid(), time.monotonic() + seconds
    while True:
        kids = [pid for pid, ppid, _ in _proc_rows() if ppid == me]
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            if not kids:
                return True
        if time.monotonic() > end:
            return False
        time.sleep(0.01)


def _kill_uid(uid: int, seconds: float = 5.0) -> bool:
    """Root: SIGKILL every process of the run's fresh uid, from this process (no helper a hostile program
    could kill), through pidfds (a recycled pid is never hit), until none is left; True on success."""
    end = time.monotonic() + seconds
    while True:
        pids = [pid for pid, _, u in _proc_rows() if u == uid]
        if not pids:
            return True
        if time.monotonic() > end:
            return False
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except OSError as e:
                if e.errno == errno.ENOSYS and (_proc_row(pid) or (0, 0, -1))[2] == uid:
                    try:  # Linux < 5.3: no pidfds; the uid was checked just now
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                continue
            try:
                if (_proc_row(pid) or (0, 0, -1))[2] == uid:  # read after the pidfd: this very process
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            except OSError:
                pass
            finally:
                os.close(fd)
        time.sleep(0.01)


# cgroups: a run gets its own memory, pids and kill/freeze group where the kernel lets us create one
_CGROUP_HEADROOM_MB = 64  # above memory_mb + file_mb: one process always meets RLIMIT_AS first


def _cgroup_write(d: str, name: str, value: str) -> None:
    with open(os.path.join(d, name), "w") as f:
        f.write(value)


def _cgroup_read(d: str, name: str) -> str:
    try:
        with open(os.path.join(d, name)) as f:
            return f.read()
    except OSError:
        return ""


def _cgroup_kill(groups: dict[str, Any]) -> None:
    """SIGKILL everything in the run's cgroups: ``cgroup.kill`` (cgroup v2, atomic), else freeze (v1
    freezer), kill each member, thaw — either way a forking program cannot outrun it."""
    d = groups.get("kill")
    if d:
        _cgroup_write(d, "cgroup.kill", "1")
        return
    d = groups.get("freezer")
    if d:
        _cgroup_write(d, "freezer.state", "FROZEN")
        end = time.monotonic() + 1.0
        while _cgroup_read(d, "freezer.state").strip() != "FROZEN" and time.monotonic() < end:
            time.sleep(0.005)
        for pid in _cgroup_read(d, "cgroup.procs").split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        _cgroup_write(d, "freezer.state", "THAWED")


def _cgroup_empty(groups: dict[str, Any], seconds: float = 3.0) -> bool:
    """Kill every process of the run's cgroups until they are empty; True once they are."""
    dirs = groups.get("dirs") or []
    end = time.monotonic() + seconds
    while any(_cgroup_read(d, "cgroup.procs").split() for d in dirs):
        if time.monotonic() > end:
            return False
        try:
            _cgroup_kill(groups)
        except OSError:
            pass
        time.sleep(0.01)
    return True


def _cgroup_remove(groups: dict[str, Any]) -> None:
    for d in groups.get("dirs") or []:
        for _ in range(100):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:  # EBUSY while the last killed process is being torn down
                time.sleep(0.01)


def _join_cgroups(dirs: list[str]) -> list[str]:
    """In the launcher's child, before anything else: move itself ("0") into each run cgroup."""
    failed = []
    for d in dirs:
        try:
            _cgroup_write(d, "cgroup.procs", "0")
        except OSError as e:
            failed.append(f"{d}: {e.strerror or e}")
    return failed


def _launch() -> int:
    """Entry point of ``python -I -S sandbox.py --launch``: config JSON on stdin."""
    import fcntl

    nonce = ""
    try:
        os.umask(0o022)  # folders made for the root must be traversable by the sandbox uid
        cfg = json.loads(sys.stdin.buffer.read().decode("utf-8"))
        nonce = cfg["nonce"]
        basic = cfg["mode"] == "basic"
        uid = cfg["uid"]
        # the launcher's own report channel, moved out of the way of fd 3 (closed by the program's exec)
        rep = fcntl.fcntl(cfg["report_fd"], fcntl.F_DUPFD_CLOEXEC, 100)
        os.close(cfg["report_fd"])
        in_force: list[str] = []
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
            # orphans (daemons) are reparented to the launcher, which kills them when the program ends
            if _libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0:
                in_force.append("subreaper")
        else:
            in_force += _build_root(cfg)
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
            missing = [f"cgroup_join: {why}" for why in _join_cgroups(cfg["cgroups"].get("dirs") or [])]
            if not basic:
                os.chroot(cfg["root"])
            os.chdir(workdir)
            devnull = os.open("/dev/null", os.O_RDONLY)
            os.dup2(devnull, 0)
            if cfg["result_fd"] != 3:
                os.dup2(cfg["result_fd"], 3)  # the wrapper reports on fd 3
            os.closerange(4, rep)
            os.closerange(rep + 1, 1024)
            extra = 0 if (uid is not None or not basic) else _count_own_processes()
            _set_limits(cfg["limits"], extra)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            try:
                _join_fresh_keyring()
                in_force.append("session_keyring")
            except OSError as e:
                missing.append(f"session_keyring: {e}")
            libc = _libc()
            if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
            try:
                _install_seccomp()
                in_force.append("seccomp")
            except OSError as e:
                missing.append(f"seccomp: {e}")
            os.write(rep, (json.dumps({"in_force": in_force, "missing": missing}) + "\n").encode())
            os.execve(cfg["python"], argv, env)
        except BaseException as e:  # noqa: BLE001
            try:
                os.write(2, f"cotbench-sandbox[{nonce}]: setup failed: {type(e).__name__}: {e}\n".encode())
            finally:
                os._exit(_SETUP_FAILED)
    os.close(cfg["result_fd"])  # only the program writes results

    def _clean_up_alone():
        """The harness is gone: end and remove what it would have (the run's cgroups, the uid's processes,
        basic mode's folder)."""
        _cgroup_empty(cfg["cgroups"])
        _cgroup_remove(cfg["cgroups"])
        if basic and uid is not None:
            _kill_uid(uid)
        if basic:
            shutil.rmtree(cfg["root"], ignore_errors=True)

    def _stop(signum, frame):
        """SIGTERM (the harness ends the run) or the launcher's own alarm (the harness is gone or stuck)."""
        if signum == signal.SIGALRM:
            try:
                _cgroup_kill(cfg["cgroups"])  # one write ends every process of the run, first
            except OSError:
                pass
        if basic:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            _kill_descendants()
        if signum == signal.SIGALRM:  # nobody else will clean up
            _clean_up_alone()
            if basic:
                os.killpg(0, signal.SIGKILL)  # the launcher too
        os._exit(128 + signal.SIGKILL)  # namespace: PID 1 exiting kills every process inside

    signal.signal(signal.SIGALRM, _stop)
    signal.signal(signal.SIGTERM, _stop)
    signal.alarm(int(cfg["limits"]["wall_s"]) + 2)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    signal.alarm(0)
    if basic:
        _kill_descendants()
    try:
        os.write(rep, b"\n")  # only the harness holds the read end: a broken pipe means it died
    except OSError:
        _clean_up_alone()
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


@functools.lru_cache(maxsize=None)
def _cgroup_parents() -> dict[str, str]:
    """The harness's own cgroup directories where it may create children: ``unified`` (cgroup v2) and,
    on a v1/hybrid machine, ``memory``, ``pids`` and ``freezer``. Found from /proc/self/cgroup and
    /proc/self/mountinfo (works inside containers whose cgroup mounts start below the real root)."""
    own: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            for line in f:
                hid, ctrls, path = line.rstrip("\n").split(":", 2)
                if hid == "0":
                    own["unified"] = path
                for c in ctrls.split(","):
                    own.setdefault(c, path)
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            mounts = f.read().splitlines()
    except (OSError, ValueError):
        return {}
    found: dict[str, str] = {}
    for line in mounts:
        left, _, right = line.partition(" - ")
        f, r = left.split(" "), right.split(" ")
        if len(f) < 5 or len(r) < 3:
            continue
        if r[0] == "cgroup2":
            keys = ["unified"]
        elif r[0] == "cgroup":
            keys = [o for o in r[2].split(",") if o in ("memory", "pids", "freezer")]
        else:
            continue
        root, point = _unescape_mountinfo(f[3]), _unescape_mountinfo(f[4])
        for k in keys:
            path = own.get(k)
            if path is None or k in found:
                continue
            rel = os.path.relpath(path, root)
            if rel.startswith(".."):
                continue
            d = os.path.normpath(os.path.join(point, rel))
            if os.path.isdir(d) and os.access(d, os.W_OK):
                found[k] = d
    for d in found.values():
        _remove_stale_cgroups(d)
    return found


def _remove_stale_cgroups(parent: str, age_s: float = 3600.0) -> None:
    """Remove run cgroups left by a harness killed between creating them and starting the launcher
    (empty, over an hour old; a group still holding processes cannot be removed and is left alone)."""
    now = time.time()
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith("cotbench-sbx-") and e.is_dir()]
    except OSError:
        return
    for e in entries:
        try:
            if now - e.stat().st_mtime > age_s:
                os.rmdir(e.path)
        except OSError:
            pass


def _run_cgroups(name: str, lim: Limits) -> tuple[dict[str, Any], list[str], list[str]]:
    """Create this run's cgroups: a memory group (all its processes, shared memory, tmpfs pages and kernel
    memory together: ``memory_mb + file_mb + 64`` MB, no swap), a pids group (``nproc``) and a group to
    kill or freeze it as a whole. Returns (groups, limits in force, limits missing with the reason)."""
    parents = _cgroup_parents()
    groups: dict[str, Any] = {"dirs": []}
    in_force: list[str] = []
    missing: list[str] = []
    mem = (int(lim.memory_mb) + int(lim.file_mb) + _CGROUP_HEADROOM_MB) << 20

    def make(key: str) -> str | None:
        d = os.path.join(parents[key], name)
        try:
            os.mkdir(d)
        except OSError as e:
            missing.append(f"{key}_cgroup: cannot create ({e.strerror or e})")
            return None
        groups["dirs"].append(d)
        return d

    def limit(d: str, files: list[tuple[str, str]], what: str) -> bool:
        (fname, value), rest = files[0], files[1:]
        if not os.path.exists(os.path.join(d, fname)):
            return False  # this hierarchy lacks the controller (another may have it)
        try:
            _cgroup_write(d, fname, value)
        except OSError as e:
            missing.append(f"{what}: cannot set {fname} ({e.strerror or e})")
            return False
        for fname, value in rest:  # best effort: swap limits exist only with swap accounting
            try:
                _cgroup_write(d, fname, value)
            except OSError:
                pass
        in_force.append(what)
        groups[what] = d
        return True

    v2 = make("unified") if "unified" in parents else None
    if v2:
        limit(v2, [("memory.max", str(mem)), ("memory.swap.max", "0")], "memory_cgroup")
        limit(v2, [("pids.max", str(int(lim.nproc)))], "pids_cgroup")
        if os.path.exists(os.path.join(v2, "cgroup.kill")):
            groups["kill"] = v2
            in_force.append("cgroup_kill")
    for key, what, files in (
        ("memory", "memory_cgroup", [("memory.limit_in_bytes", str(mem)), ("memory.memsw.limit_in_bytes", str(mem))]),
        ("pids", "pids_cgroup", [("pids.max", str(int(lim.nproc)))]),
    ):
        if what not in groups and key in parents:
            d = make(key)
            if d:
                limit(d, files, what)
    if "kill" not in groups and "freezer" in parents:
        d = make("freezer")
        if d:
            groups["freezer"] = d
            in_force.append("cgroup_freeze_kill")
    for what in ("memory_cgroup", "pids_cgroup"):
        if what not in groups and not any(m.startswith(what) for m in missing):
            missing.append(f"{what}: no writable cgroup hierarchy with that controller")
    if "kill" not in groups and "freezer" not in groups:
        missing.append("cgroup_kill: no cgroup.kill or freezer available")
    return groups, in_force, missing


def _cgroup_memory_stats(groups: dict[str, Any]) -> tuple[int, float | None]:
    """(OOM kills, peak memory in MB) of the run's memory cgroup, read before it is removed."""
    d = groups.get("memory_cgroup")
    if not d:
        return 0, None
    kills = 0
    for fname in ("memory.oom_control", "memory.events"):
        for line in _cgroup_read(d, fname).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "oom_kill" and parts[1].isdigit():
                kills = int(parts[1])
    peak = None
    for fname in ("memory.max_usage_in_bytes", "memory.peak"):
        text = _cgroup_read(d, fname).strip()
        if text.isdigit():
            peak = round(int(text) / 2 ** 20, 1)
            break
    return kills, peak


_SWEEP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")


def _sweep_uid_leftovers(uid: int) -> list[str]:
    """Basic mode as root: remove what the run's uid left in the shared writable places (files and
    folders at the top of /tmp, /var/tmp, /dev/shm, /run/lock, /dev/mqueue; SysV IPC objects it created).
    Returns what was removed (for the record)."""
    removed: list[str] = []
    for top in _SWEEP_DIRS:
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for e in entries:
            try:
                if e.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path)
                else:
                    os.unlink(e.path)
                removed.append(e.path)
            except OSError:
                pass
    libc = None
    for kind, idcol in (("shm", "shmid"), ("msg", "msqid"), ("sem", "semid")):
        try:
            with open(f"/proc/sysvipc/{kind}", encoding="utf-8") as f:
                head, *rows = [line.split() for line in f if line.strip()]
        except (OSError, ValueError):
            continue
        for row in rows:
            rec = dict(zip(head, row))
            if str(uid) not in (rec.get("uid"), rec.get("cuid")):
                continue
            libc = libc or _libc()
            ipc_id = ctypes.c_int(int(rec[idcol]))
            fn = {"shm": libc.shmctl, "msg": libc.msgctl, "sem": libc.semctl}[kind]
            args = (ipc_id, ctypes.c_int(0), ctypes.c_int(0)) if kind == "sem" else (ipc_id, ctypes.c_int(0), None)
            if fn(*args) == 0:  # IPC_RMID
                removed.append(f"sysv {kind} {rec[idcol]}")
    return removed


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
    groups, in_force, missing = _run_cgroups(f"cotbench-sbx-{nonce}", lim)
    in_force = ["wall_clock", "rlimit_cpu", "rlimit_as", "rlimit_nproc", "rlimit_fsize", "no_new_privs"] + in_force
    if uid is not None:
        in_force.append("per_run_uid")
    else:
        missing.append("per_run_uid: the harness is not root")
    cfg = {"mode": mode, "nonce": nonce, "root": root, "code": code, "kind": kind, "uid": uid, "python": python,
           "limits": asdict(lim), "ro_paths": ro, "hide_paths": hide, "z3_dir": _z3_dir() if kind == "z3" else None,
           "cgroups": groups}
    launcher = [os.path.realpath(sys.executable), "-I", "-S", "-B", os.path.abspath(__file__), "--launch"]
    cmd = (_unshare_cmd() if mode == "namespace" else []) + launcher
    r_fd, w_fd = os.pipe()
    rep_r, rep_w = os.pipe()
    cfg["result_fd"], cfg["report_fd"] = w_fd, rep_w
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(w_fd, rep_w), env=_minimal_env(), start_new_session=True, cwd=root,
                                close_fds=True)
    except OSError as e:
        for fd in (r_fd, w_fd, rep_r, rep_w):
            os.close(fd)
        shutil.rmtree(root, ignore_errors=True)
        _cgroup_remove(groups)
        return Outcome(status="sandbox_error", detail=f"cannot start sandbox: {e}", isolation=mode)
    os.close(w_fd)
    os.close(rep_w)
    out, err, res, rep = bytearray(), bytearray(), bytearray(), bytearray()
    caps = {id(out): lim.output_bytes, id(err): lim.output_bytes, id(res): _RESULT_CAP + 1, id(rep): _REPORT_CAP}
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
        sel.register(rep_r, selectors.EVENT_READ, rep)
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
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = key.data
                buf.extend(chunk)
                cap = caps[id(buf)]
                if len(buf) > cap:
                    del buf[cap:]
                    if buf is out or buf is err:
                        killed_for = "output_limit"
            if killed_for:
                break
        if killed_for:
            _stop_run(proc, mode, groups, uid)
            _drain(sel, 2.0)  # EOF on the pipes once every process holding them is dead
        sel.close()
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed_for = killed_for or "timeout"
            _stop_run(proc, mode, groups, uid)
            rc = proc.wait()
    finally:
        for fd in (r_fd, rep_r):
            os.close(fd)
        for f in (proc.stdout, proc.stderr):
            f.close()
        survivors = _end_run(mode, root, groups, uid)
    oom_kills, peak_mb = _cgroup_memory_stats(groups)
    _cgroup_remove(groups)
    for line in bytes(rep).decode("utf-8", "replace").splitlines():  # the launcher's report (setup side)
        r = _parse_report(line)
        in_force += [x for x in r.get("in_force", []) if x not in in_force]
        missing += r.get("missing", [])
    if survivors:
        missing.append(f"cleanup: {survivors}")
    dur = time.monotonic() - t0
    base = dict(stdout=_tail(out), stderr=_tail(err), duration_s=round(dur, 3), isolation=mode, returncode=rc,
                limits_in_force=in_force, limits_missing=missing, memory_peak_mb=peak_mb)
    if killed_for == "timeout":
        return Outcome(status="timeout", detail=f"wall-clock limit of {lim.wall_s:g}s", **base)
    if killed_for == "output_limit":
        return Outcome(status="output_limit", detail=f"more than {lim.output_bytes} bytes of output", **base)
    return _classify(bytes(res), rc, kind, lim, base, nonce, oom_kills)


def _parse_report(line: str) -> dict[str, list[str]]:
    """One line of the launcher's setup report: {"in_force": [...], "missing": [...]} (bounded, total)."""
    try:
        obj = json.loads(line) if _json_depth_ok(line, 2) else None
    except Exception:  # noqa: BLE001
        obj = None
    if not isinstance(obj, dict):
        return {}
    return {k: [str(x)[:200] for x in obj.get(k, []) if isinstance(x, str)][:32]
            for k in ("in_force", "missing") if isinstance(obj.get(k), list)}


def _stop_run(proc: subprocess.Popen, mode: str, groups: dict[str, Any], uid: int | None) -> None:
    """End a run now (wall clock, output flood): the run's cgroup first (atomic, nothing escapes it), then
    the processes of the fresh uid; in basic mode the launcher is asked (SIGTERM) to kill its children
    and reparented orphans; finally the whole session, which in namespace mode ends the namespace."""
    try:
        _cgroup_kill(groups)
    except OSError:
        pass
    if mode == "basic":
        if uid is not None:
            _kill_uid(uid, 2.0)
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=1.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
    _kill(proc)


def _end_run(mode: str, root: str, groups: dict[str, Any], uid: int | None) -> str:
    """After every run: nothing of it may keep running or stay behind. Returns what could not be ended."""
    left = []
    if groups.get("dirs") and not _cgroup_empty(groups):
        left.append("processes left in the run's cgroup")
    if mode == "namespace":
        try:
            os.rmdir(root)  # the tmpfs lived only inside the namespace; the host dir is empty
        except OSError:
            shutil.rmtree(root, ignore_errors=True)
        return "; ".join(left)
    if uid is not None:
        if not _kill_uid(uid):
            left.append(f"processes of uid {uid} still running")
        _sweep_uid_leftovers(uid)
    shutil.rmtree(root, ignore_errors=True)
    return "; ".join(left)


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


def _classify(res: bytes, rc: int, kind: str, lim: Limits, base: dict[str, Any], nonce: str = "",
              oom_kills: int = 0) -> Outcome:
    err = base["stderr"]
    marker = f"cotbench-sandbox[{nonce}]: setup failed"
    if rc == _SETUP_FAILED and nonce and marker in err:  # the nonce: a program cannot fake a setup failure
        line = next(ln for ln in reversed(err.splitlines()) if marker in ln)
        return Outcome(status="sandbox_error", detail=line.replace(f"[{nonce}]", "")[:500], **base)
    obj = parse_result(res) if res else None
    if oom_kills and not (obj and obj.get("status") == "ok"):
        cap = int(lim.memory_mb) + int(lim.file_mb) + _CGROUP_HEADROOM_MB
        return Outcome(status="memory", detail=(
            f"the run's memory cgroup limit of {cap} MB was reached: the kernel killed {oom_kills} "
            "process(es)"), **base)
    if res:
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


if __name__ == "__main__" and sys.argv[1:] == ["--launch"]:
    sys.exit(_launch())
