"""The OS boundary around model-written Python: bubblewrap's namespaces and a seccomp filter.

    check_boundary(python, uid)          # BoundaryUnavailable names what is missing
    argv = bwrap_argv(python, seccomp_fd, work_mb=64, work="/home/sandbox", env={...}) + [python args]

Each run gets new user, PID, mount, IPC, UTS, cgroup and network namespaces (`bwrap --unshare-all
--unshare-user`); no further user namespaces inside (`--disable-userns`); a root made of read-only binds
of /usr (and the interpreter's own prefix where it lies elsewhere), of /dev only null, zero and urandom (no
/dev/shm, no terminals), no /proc, and one writable work folder that is a tmpfs of `work_mb` inside the
sandbox: nothing the run writes reaches the host's disk, and all of it is gone with the run. The network
namespace has only its own loopback. The judge is the namespace's PID 1 (`--as-pid-1`): when it exits,
the kernel ends every other process of the run; `--die-with-parent` ends it when bwrap dies.

The seccomp filter (built with libseccomp, the library systemd, Docker and Flatpak use) refuses with EPERM
the system calls a test run has no use for: mounts and namespaces, tracing and reading other processes'
memory (ptrace, process_vm_*, pidfd_getfd, kcmp), kernel interfaces with a history of privilege bugs
(bpf, perf_event_open, userfaultfd, io_uring, keyctl, modules, kexec), and memory that escapes RLIMIT_AS
(memfd_create, System V and POSIX shared memory and message queues). clone with a namespace flag is
refused; clone3 answers ENOSYS so that the C library falls back to clone, whose flags the filter can see.
System calls of other architectures (32-bit int 0x80, x32) kill the process (libseccomp's default).

Installed by `make setup` where it can (Debian: apt-get install bubblewrap libseccomp2); needs the kernel to
allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 on Debian, the default).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import shutil
import subprocess
import sys

SECCOMP_REFUSED = (
    # mounts, namespaces, roots
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr",
    # other processes' memory and descriptors
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "process_madvise",
    # kernel interfaces a test does not need
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key", "init_module", "finit_module", "delete_module", "kexec_load",
    "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "lookup_dcookie",
    "open_by_handle_at", "name_to_handle_at", "iopl", "ioperm", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "vhangup", "uselib", "fanotify_init",
    "personality",
    # memory outside RLIMIT_AS, and device nodes/FIFOs
    "memfd_create", "memfd_secret", "shmget", "shmat", "msgget", "semget", "mq_open", "mknod", "mknodat",
)
_CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                          0x40000000, 0x00000080)  # NEWNS CGROUP UTS IPC USER PID NET TIME
_ACT_ALLOW = 0x7FFF0000
_ACT_ERRNO = 0x00050000
_CMP_MASKED_EQ = 7
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`; Fedora: `sudo dnf "
                "install bubblewrap`; or `make setup` as root) and make sure unprivileged user namespaces "
                "are enabled (`unshare --user --map-root-user true` must succeed)")


class BoundaryUnavailable(RuntimeError):
    """No OS boundary can be had on this machine; the message names what is missing."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


@functools.cache
def seccomp_program() -> bytes:
    """The filter as a BPF program, compiled once per process by libseccomp (about 50 ms)."""
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        raise BoundaryUnavailable(f"libseccomp is missing ({e}); install libseccomp2") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise BoundaryUnavailable("libseccomp could not start a filter")
    try:
        def refuse(syscall: str, action: int, *conditions: _ArgCmp) -> None:
            number = lib.seccomp_syscall_resolve_name(syscall.encode())
            if number < 0:
                return  # not a system call of this architecture (mknod on arm64)
            array = (_ArgCmp * len(conditions))(*conditions) if conditions else None
            rc = lib.seccomp_rule_add_array(ctx, action, number, len(conditions), array)
            if rc < 0:
                raise BoundaryUnavailable(f"libseccomp refused the rule for {syscall} ({os.strerror(-rc)})")

        for syscall in SECCOMP_REFUSED:
            refuse(syscall, _ACT_ERRNO | errno.EPERM)
        for flag in _CLONE_NAMESPACE_FLAGS:
            refuse("clone", _ACT_ERRNO | errno.EPERM, _ArgCmp(0, _CMP_MASKED_EQ, flag, flag))
        refuse("clone3", _ACT_ERRNO | errno.ENOSYS)
        read_end, write_end = os.pipe()
        try:
            rc = lib.seccomp_export_bpf(ctx, write_end)
            os.close(write_end)
            write_end = -1
            program = b""
            while chunk := os.read(read_end, 65536):
                program += chunk
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        if rc < 0 or not program:
            raise BoundaryUnavailable(f"libseccomp could not export the filter ({os.strerror(-rc)})")
        return program
    finally:
        lib.seccomp_release(ctx)


def bwrap_argv(python: str, seccomp_fd: int, work_mb: int, work: str, env: dict[str, str],
               info_fd: int | None = None) -> list[str]:
    """The bwrap command line that runs `python` inside the boundary, cwd = `work` (a tmpfs). bwrap writes
    the host pid of the sandbox's PID 1 to `info_fd`."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise BoundaryUnavailable(f"bubblewrap (bwrap) is not on PATH; {INSTALL_HINT}")
    # --as-pid-1: the judge is the namespace's init, so its exit ends every other process of the run at
    # once (no reaper in between), and no process of the run can signal it (init ignores signals from
    # inside its namespace that it has no handler for).
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--as-pid-1",
            "--new-session", "--cap-drop", "ALL", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]  # merged /usr: /lib -> usr/lib
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    prefixes = {os.path.dirname(os.path.dirname(os.path.realpath(python)))}
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        prefixes.add(os.path.realpath(sys.base_prefix))  # a venv made with --copies: its stdlib lies there
    for prefix in sorted(prefixes):
        if not (prefix == "/usr" or prefix.startswith("/usr/")) and prefix != "/":
            argv += ["--ro-bind", prefix, prefix]  # a pyenv or conda interpreter outside /usr
    for device in ("/dev/null", "/dev/zero", "/dev/urandom"):  # no /dev/shm, /dev/pts or tty
        argv += ["--dev-bind", device, device]
    argv += ["--size", str(work_mb * 1024 * 1024), "--tmpfs", work, "--chdir", work,
             "--seccomp", str(seccomp_fd), "--clearenv"]
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    return argv + ["--", os.path.realpath(python)]


@functools.cache
def check_boundary(python: str, as_user: int | None) -> None:
    """Starts one empty sandbox (about 20 ms) and raises BoundaryUnavailable with bwrap's own words when
    it cannot: no bwrap, no user namespaces, no libseccomp. Cached per process."""
    program = seccomp_program()
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, program)
        os.close(write_end)
        write_end = -1
        argv = bwrap_argv(python, read_end, 1, "/sandbox", {"PATH": "/usr/bin:/bin"})
        user = {"user": as_user, "group": as_user, "extra_groups": []} if as_user is not None else {}
        probe = subprocess.run(argv + ["-I", "-S", "-B", "-c", "pass"], pass_fds=(read_end,),
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=30, **user)
    except (OSError, subprocess.SubprocessError) as e:
        raise BoundaryUnavailable(f"bubblewrap could not start ({e}); {INSTALL_HINT}") from None
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    if probe.returncode != 0:
        said = probe.stderr.decode(errors="replace").strip()[-500:]
        raise BoundaryUnavailable(f"bubblewrap failed: {said or f'exit {probe.returncode}'}; {INSTALL_HINT}")


@functools.cache
def python_for(uid: int | None) -> str:
    """The interpreter the sandbox runs: this one, unless `uid` (the user the host drops to when it is
    root) cannot execute it (a pyenv under /root, mode 700); then the first system python3 it can."""
    if uid is None:
        return sys.executable
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, getattr(sys, "_base_executable", sys.executable)]
    candidates += [f"{d}/python{v}" for v in (version, "3") for d in ("/usr/local/bin", "/usr/bin")]
    tried = []
    for python in dict.fromkeys(candidates):
        try:
            probe = subprocess.run([python, "-I", "-S", "-B", "-c", "import json, resource, socket"],
                                   cwd="/", env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
                                   capture_output=True, timeout=30, user=uid, group=uid, extra_groups=[])
        except (OSError, subprocess.SubprocessError) as e:
            tried.append(f"{python} ({type(e).__name__})")
            continue
        if probe.returncode == 0:
            return python
        tried.append(f"{python} (exit {probe.returncode})")
    raise BoundaryUnavailable(f"no Python interpreter is executable by uid {uid}; tried {', '.join(tried)}")
