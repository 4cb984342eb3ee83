"""Runs model-written Python with its unit tests in a sandboxed subprocess.

    from shared.execution.python import run_tests
    result = run_tests("def add(a, b):\\n    return a + b", ["assert add(1, 2) == 3"])
    result.passed, result.status, result.detail  # True, "passed", ""

What the sandbox is: a separate process of the same machine, NOT a VM or container. Its layers:

- Process: `python -I -S -B` (isolated mode: no PYTHON* variables, no user or site packages, so the
  candidate sees the standard library only; no .pyc files) in its own session and process group. When the
  run ends, by exit or by the wall-clock `timeout_s`, the whole group is SIGKILLed, and then every process
  still carrying this run's id in its initial environment (a child that left the group with setsid()).
- Environment: rebuilt from nothing (PATH, LANG, HOME=TMPDIR=the work folder, and the run id); nothing of
  os.environ is copied, so API keys and tokens of the parent are not visible.
- Files: a fresh temporary work folder is the cwd and HOME, deleted afterwards.
- Limits (setrlimit, inside the child before the candidate's code runs): address space `memory_mb`, CPU
  seconds (timeout + 1), 32 processes/threads for the user (fork bombs), 16 MB per written file, no core
  files, 64 open files. stdin is /dev/null; output is kept to its last 2 KB.
- User: when the parent is root, the child runs as nobody (uid/gid 65534, no supplementary groups), so
  root-only files (/root is mode 700: /root/.ray/auth_token, ssh keys) are unreadable and unwritable, and
  RLIMIT_NPROC applies (it does not to root). nobody cannot reach an interpreter installed under /root
  (pyenv), so the child then runs the first interpreter it can execute: sys.executable, else the system
  /usr/bin/python3.X; if there is none, runs fail with status "error" rather than run as root.
- Audit hook (PEP 578), installed by a bootstrap before the candidate's code: refuses creating processes
  (fork, exec, spawn, system, subprocess, pty), signals (kill, killpg), socket connect/bind/send (so no
  network), native code (ctypes, _posixsubprocess), tracing, changing rlimits, creating symlinks,
  writes, renames or deletes outside the work folder, opening directories outside it, relative paths
  with "..", and reads of the parent's HOME, /root and other processes' /proc entries (the Python
  installation excepted). It is the only file barrier when the parent is not root.

What it does NOT protect against (do not run untrusted code from the internet with it):
- Kernel exploits, and anything the user it runs as may do: when not root, the child is the parent's
  user, and the audit hook is a speed bump, not a boundary (PEP 578 says so): C-level code paths that
  raise no audit event, or a bug in CPython, get around it. As nobody, files readable by everyone (most of
  /etc, /usr, the repo if it is world-readable) stay readable.
- Network past the audit hook: there is no network namespace. Likewise, as nobody the child may write
  where everyone may (/tmp, /dev/shm) once past the hook.
- Resources of the machine: each concurrent run uses up to memory_mb and a core; disk use is capped per
  file (16 MB), not in total. All runs as root share the uid nobody, so RLIMIT_NPROC counts them together,
  and also counts processes killed at the end of a run until init reaps them (seconds).
- Processes that escape both the process group and the run id (setsid() and exec with a scrubbed
  environment) outlive the run; that needs the audit hook bypassed first.
- A candidate that forges success (os._exit(0) before the tests run) passes. sys.exit() during the code
  or tests counts as failure. The tests judge behaviour; this guards the host, not the score against
  code written to cheat it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SANDBOX_UID = SANDBOX_GID = 65534  # nobody / nogroup
OUTPUT_TAIL_BYTES = 2048
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_PROCESSES = 32  # per user, threads included; the candidate needs 1
MAX_OPEN_FILES = 64
_RUN_ID_VAR = "SANDBOX_RUN_ID"
_MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"


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
) -> PyResult:
    """Runs the code, then the test setup, then each test (assert statements) in one fresh sandboxed
    process. The setup runs after the code because test setup may use what the code defines (MBPP
    task 367's test_setup_code builds a tree of the solution's Node class).

    Passes when all of it runs and the process exits 0. `audit_hook=False` leaves out the audit-hook
    layer; tests use it to show the OS layers hold on their own.
    """
    drop_to_nobody = os.geteuid() == 0
    try:
        python = sandbox_python(drop_to_nobody)
    except RuntimeError as e:
        return PyResult(False, "error", str(e))
    run_id = secrets.token_hex(8)
    workdir = Path(tempfile.mkdtemp(prefix="pysandbox-"))
    try:
        job = workdir / "job.json"
        job.write_text(json.dumps({"setup": setup, "code": code, "tests": list(tests)}))
        if drop_to_nobody:
            for path in (workdir, job):
                os.chown(path, SANDBOX_UID, SANDBOX_GID)
        config = {
            "limits": _limits(timeout_s, memory_mb),
            "audit_hook": audit_hook,
            "secret_roots": sorted({os.path.realpath(os.path.expanduser("~")), "/root"}),
        }
        with tempfile.TemporaryFile() as output:
            returncode, timed_out = _run(python, config, workdir, run_id, output, timeout_s, drop_to_nobody)
            tail = _tail(output)
    except OSError as e:
        return PyResult(False, "error", f"sandbox could not start: {e}")
    finally:
        _remove_tree(workdir)
    return _result(returncode, timed_out, timeout_s, tail)


@functools.cache
def sandbox_python(drop_to_nobody: bool) -> str:
    """The interpreter the child runs: sys.executable when the sandbox user can execute it, else the first
    system python3 that works as that user. Checked once per process by running it."""
    if not drop_to_nobody:
        return sys.executable
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, getattr(sys, "_base_executable", sys.executable)]
    candidates += [f"{d}/python{v}" for v in (version, "3") for d in ("/usr/local/bin", "/usr/bin")]
    tried = []
    for python in dict.fromkeys(candidates):
        try:
            probe = subprocess.run(
                [python, "-I", "-S", "-B", "-c", "import json, resource, traceback, types"],
                cwd="/", env={"PATH": _MINIMAL_PATH}, stdin=subprocess.DEVNULL, capture_output=True,
                timeout=30, **_nobody(),
            )
        except (OSError, subprocess.SubprocessError) as e:
            tried.append(f"{python} ({type(e).__name__})")
            continue
        if probe.returncode == 0:
            return python
        tried.append(f"{python} (exit {probe.returncode})")
    raise RuntimeError(f"no Python interpreter is executable by uid {SANDBOX_UID}; tried {', '.join(tried)}")


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


def _nobody() -> dict:
    """Popen arguments that drop root to nobody in the child before exec (setgroups, setgid, setuid, done
    by _posixsubprocess in C: no preexec_fn, which is unsafe with the eval's thread pool)."""
    return {"user": SANDBOX_UID, "group": SANDBOX_GID, "extra_groups": []}


def _run(python, config, workdir, run_id, output, timeout_s, drop_to_nobody) -> tuple[int | None, bool]:
    env = {
        "PATH": _MINIMAL_PATH,
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",  # ignored under -I; -B does it. Kept for any python the code starts.
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        _RUN_ID_VAR: run_id,
    }
    proc = subprocess.Popen(
        [python, "-I", "-S", "-B", "-c", _BOOTSTRAP, json.dumps(config)],
        cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
        start_new_session=True, close_fds=True, umask=0o077, **(_nobody() if drop_to_nobody else {}),
    )
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill_group(proc.pid)
        _kill_run(run_id)
        proc.wait()
    return proc.returncode, timed_out


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is empty: everything in it already exited


def _kill_run(run_id: str) -> None:
    """SIGKILLs every process whose initial environment holds this run's id: children that left the
    process group. Linux /proc only; a few ms for a few hundred processes."""
    marker = f"{_RUN_ID_VAR}={run_id}".encode()
    for _ in range(5):  # a process may fork while we scan; RLIMIT_NPROC bounds how many
        killed = 0
        for pid in _pids():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    environ = f.read().split(b"\0")
            except OSError:
                continue  # gone, or not ours to read
            if marker in environ:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except (ProcessLookupError, PermissionError):
                    pass
        if not killed:
            return


def _pids() -> list[int]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    me = os.getpid()
    return [int(n) for n in names if n.isdigit() and int(n) != me]


def _remove_tree(path: Path) -> None:
    """rmtree, after making every folder accessible again (the candidate may have chmod-ed one to 000)."""
    for folder, subfolders, _ in os.walk(path):  # top-down: each folder is fixed before it is entered
        for name in subfolders:
            subfolder = os.path.join(folder, name)
            if os.path.islink(subfolder):
                continue  # chmod would follow it; the sandbox's processes are all dead, so it cannot change
            try:
                os.chmod(subfolder, 0o700)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


def _tail(output) -> str:
    output.seek(0, os.SEEK_END)
    output.seek(max(0, output.tell() - OUTPUT_TAIL_BYTES))
    return output.read().decode("utf-8", errors="replace")


def _result(returncode: int | None, timed_out: bool, timeout_s: float, tail: str) -> PyResult:
    if timed_out:
        return PyResult(False, "timeout", f"timeout after {timeout_s:g} s\n{tail}")
    if returncode == 0:
        return PyResult(True, "passed", tail)
    if returncode is not None and returncode < 0:
        if -returncode == signal.SIGXCPU:
            return PyResult(False, "timeout", f"CPU limit reached (SIGXCPU)\n{tail}")
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else -returncode
        return PyResult(False, "killed", f"killed by signal {name}\n{tail}")
    return PyResult(False, "failed", f"exit code {returncode}\n{tail}")


# ----------------------------------------------------------------------------------------------- child

# Runs in the sandboxed interpreter as `python -I -S -B -c _BOOTSTRAP '<config json>'`, cwd = work folder.
# Order matters: limits first, then the job file is read, then the audit hook goes in, then candidate code.
_BOOTSTRAP = r'''
import json, os, posix, resource, sys, traceback, types


def set_limits(limits):
    for name, soft, hard in limits:
        which = getattr(resource, name)
        current = resource.getrlimit(which)[1]
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))


def install_audit_hook(work, read_roots, secret_roots):
    # Everything the hook uses is bound here, and paths are copied to exact str before use, so candidate
    # code cannot change what the hook sees (os.path.realpath, builtins and module attributes are all
    # mutable from its side; a str subclass could override startswith).
    lstat, readlink, getcwd = posix.lstat, posix.readlink, posix.getcwd
    str_, bytes_, int_, isinstance_, len_, any_ = str, bytes, int, isinstance, len, any
    Denied = PermissionError
    own_proc = "/proc/" + str(posix.getpid())
    write_flags = posix.O_WRONLY | posix.O_RDWR | posix.O_APPEND | posix.O_CREAT | posix.O_TRUNC
    refused = frozenset({
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
        "os.killpg", "subprocess.Popen", "os.symlink", "resource.setrlimit", "resource.prlimit",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.setprofile", "sys.settrace",
    })
    refused_modules = frozenset({"ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters"})
    # event -> ((index of a path argument, index of its dir_fd argument or None), ...)
    writes = {
        "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),), "os.chmod": ((0, 2),),
        "os.chown": ((0, 3),), "os.utime": ((0, 3),), "os.truncate": ((0, None),),
        "os.rename": ((0, 2), (1, 3)), "os.link": ((0, 2), (1, 3)), "os.setxattr": ((0, None),),
        "os.removexattr": ((0, None),), "shutil.rmtree": ((0, 1),),
    }
    reads = {"os.listdir": ((0, None),), "os.scandir": ((0, None),), "os.listxattr": ((0, None),),
             "os.getxattr": ((0, None),)}

    def exact(text):
        if isinstance_(text, str_):
            text = str_.encode(text, "utf-8", "surrogateescape")
        if isinstance_(text, bytes_):
            return bytes_.decode(text, "utf-8", "surrogateescape")
        return None

    def within(path, root):
        return path == root or path.startswith(root if root.endswith("/") else root + "/")

    def resolve(path, base, depth=0):
        # os.path.realpath with the functions bound above: the file the kernel will open.
        if depth > 40:
            raise Denied("sandbox: too many levels of symlinks")
        if not path.startswith("/"):
            path = base + "/" + path
        parts = []
        for part in path.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(part)
            current = "/" + "/".join(parts)
            try:
                mode = lstat(current).st_mode
            except OSError:
                continue
            if mode & 0o170000 == 0o120000:
                resolved = resolve(readlink(current), "/" + "/".join(parts[:-1]), depth + 1)
                parts = [p for p in resolved.split("/") if p]
        return "/" + "/".join(parts)

    def fd_path(fd):
        try:
            return resolve(readlink(own_proc + "/fd/" + int_.__repr__(int_.__index__(fd))), "/")
        except OSError:
            raise Denied("sandbox: unknown file descriptor") from None

    def target(args, index, dir_fd_index):
        path = args[index] if index < len_(args) else None
        if isinstance_(path, int_):
            return fd_path(path)
        path = exact(path)
        if path is None:
            return None  # shutil.rmtree(PathLike): the os.* calls it makes are checked one by one
        dir_fd = args[dir_fd_index] if dir_fd_index is not None and dir_fd_index < len_(args) else None
        at_dir = isinstance_(dir_fd, int_) and int_.__index__(dir_fd) >= 0  # AT_FDCWD is negative
        return resolve(path, fd_path(dir_fd) if at_dir else getcwd())

    def check_read(event, path):
        if within(path, work) or any_(within(path, root) for root in read_roots):
            return
        if any_(within(path, root) for root in secret_roots):
            raise Denied("sandbox: " + event + " of " + path + " is not allowed")
        if path.startswith("/proc/") and path.split("/")[2].isdigit() and not within(path, own_proc):
            raise Denied("sandbox: " + event + " of another process's " + path + " is not allowed")

    def check_write(event, path):
        if not within(path, work) and path != "/dev/null":
            raise Denied("sandbox: " + event + " outside the work folder (" + path + ") is not allowed")

    def hook(event, args):
        if event == "open":
            path, flags = args[0], args[2]
            if isinstance_(path, int_):
                return  # an already open descriptor
            path = exact(path)
            if path is None:
                raise Denied("sandbox: open of an unusual path object is not allowed")
            # The event does not carry os.open's dir_fd, so a relative path is checked against the cwd. That
            # is only sound if no directory fd outside the work folder exists and a relative path cannot
            # climb out of the directory it is relative to ("..").
            if not path.startswith("/") and ".." in path.split("/"):
                raise Denied("sandbox: opening a relative path with '..' is not allowed")
            path = resolve(path, getcwd())
            try:
                is_dir = lstat(path).st_mode & 0o170000 == 0o040000
            except OSError:
                is_dir = False
            if is_dir and not within(path, work):
                raise Denied("sandbox: opening directory " + path + " is not allowed")
            writing = isinstance_(flags, int_) and int_.__index__(flags) & write_flags
            (check_write if writing else check_read)(event, path)
        elif event in refused or event.startswith("ctypes."):
            raise Denied("sandbox: " + event + " is not allowed")
        elif event == "import" and (exact(args[0]) or "").partition(".")[0] in refused_modules:
            raise Denied("sandbox: import of " + exact(args[0]) + " is not allowed")
        elif event.startswith("socket.") and event != "socket.__new__":
            raise Denied("sandbox: network (" + event + ") is not allowed")
        elif event in writes:
            for index, dir_fd_index in writes[event]:
                path = target(args, index, dir_fd_index)
                if path is not None:
                    check_write(event, path)
        elif event in reads:
            for index, dir_fd_index in reads[event]:
                path = target(args, index, dir_fd_index)
                if path is not None:
                    check_read(event, path)

    sys.addaudithook(hook)


def report(message):
    sys.__stdout__.flush()  # the candidate's prints first, then why it failed
    print("sandbox: " + message, file=sys.__stderr__)


def run(job):
    """code, test setup, then each test, in one module namespace; the first exception fails the run."""
    module = types.ModuleType("__candidate__")  # not __main__: `if __name__ == "__main__":` demos stay off
    sys.modules[module.__name__] = module
    steps = [("<code>", job["code"]), ("<setup>", job["setup"])]
    steps += [("<test " + str(i) + ">", test) for i, test in enumerate(job["tests"])]
    for filename, source in steps:
        try:
            exec(compile(source, filename, "exec"), module.__dict__)
        except SystemExit as e:
            report("exit(" + repr(e.code) + ") in " + filename + ", before the tests finished")
            return 1
        except BaseException:
            sys.__stdout__.flush()
            traceback.print_exc(file=sys.__stderr__)
            report("failed in " + filename + ": " + source.strip()[:200])
            return 1
    return 0


config = json.loads(sys.argv[1])
set_limits(config["limits"])
with open("job.json", encoding="utf-8") as f:
    job = json.load(f)
if config["audit_hook"]:
    stdlib = tuple(os.path.realpath(p) for p in sys.path if p)
    install_audit_hook(os.path.realpath(os.getcwd()), stdlib, tuple(config["secret_roots"]))
code = run(job)
for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
    try:
        stream.flush()
    except Exception:
        pass
os._exit(code)  # skips atexit handlers and non-daemon threads the candidate left behind
'''
