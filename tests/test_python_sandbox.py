"""The Python sandbox: correct code passes, wrong code fails, and attacks fail without harming the host.

Attacks run twice where it makes sense: with every layer, and with the audit hook off (`audit_hook=False`)
to show the OS layers (nobody's uid, rlimits, process-group kill) hold on their own. Without root the
child is our own user and the hook is the only file barrier, so the hook-off file cases need root.
"""

import os
import socket
import time
from pathlib import Path

import pytest

from shared.config import EvalConfig
from shared.execution.python import MAX_PROCESSES, OUTPUT_TAIL_BYTES, SANDBOX_UID, run_tests
from shared.tasks import get_task
from shared.tasks.code import CodeTask

ROOT = os.geteuid() == 0
SANDBOX_CMDLINE = "install_audit_hook"  # in the command line (-c bootstrap) of every sandbox process
BOTH_LAYERS = [
    pytest.param(True, id="audit_hook"),
    pytest.param(False, id="os_layers_only"),
]
BOTH_LAYERS_ROOT = [
    pytest.param(True, id="audit_hook"),
    pytest.param(
        False, id="os_layers_only",
        marks=pytest.mark.skipif(not ROOT, reason="without root the audit hook is the only file barrier"),
    ),
]


def _live_processes() -> dict[int, tuple[int, str]]:
    """pid -> (uid, command line) of every process that is not a zombie (a zombie runs nothing)."""
    processes = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            uid = os.stat(f"/proc/{name}").st_uid
        except (OSError, IndexError):
            continue
        if state != "Z":
            processes[int(name)] = (uid, cmdline)
    return processes


def _leftovers(before: dict, marker: str, grace_s: float = 5.0) -> dict:
    """Processes that appeared during the run and still live after grace_s: ours by uid (as root) or by
    command line. SIGKILL is delivered asynchronously: a killed process can show as running for a moment."""
    import time

    deadline = time.monotonic() + grace_s
    while True:
        alive = {
            pid: info for pid, info in _live_processes().items()
            if pid not in before and ((ROOT and info[0] == SANDBOX_UID) or marker in info[1])
        }
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------ behaviour


def test_correct_solution_passes():
    tests = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
    result = run_tests("def add(a, b):\n    return a + b", tests)
    assert (result.passed, result.status) == (True, "passed")


def test_wrong_solution_fails_and_names_the_test():
    result = run_tests("def add(a, b):\n    return a - b", ["assert add(0, 0) == 0", "assert add(1, 2) == 3"])
    assert (result.passed, result.status) == (False, "failed")
    assert "AssertionError" in result.detail and "<test 1>" in result.detail


def test_syntax_error_fails():
    result = run_tests("def add(a, b)\n    return a + b", ["assert add(1, 2) == 3"])
    assert not result.passed and result.status in ("failed", "error")
    assert "SyntaxError" in result.detail


def test_setup_runs_before_code_and_tests():
    result = run_tests("def area(r):\n    return PI * r * r", ["assert area(1) == PI"], setup="PI = 3.14")
    assert result.passed


def test_standard_library_and_work_folder_are_usable():
    code = (
        "import collections, heapq, json, math, re, tempfile\n"
        "from dataclasses import dataclass\n"
        "@dataclass\nclass P:\n    x: int\n"
        "open('notes.txt', 'w').write('hi')\n"
        "with tempfile.TemporaryDirectory() as d:\n    open(d + '/x', 'w').write('1')\n"
        "def f():\n    return open('notes.txt').read(), P(2).x, math.gcd(12, 18)\n"
    )
    result = run_tests(code, ["assert f() == ('hi', 2, 6)"])
    assert result.passed, result.detail


def test_sys_exit_before_the_tests_is_a_failure():
    result = run_tests("import sys\nsys.exit(0)", ["assert False"])
    assert (result.passed, result.status) == (False, "failed")


def test_main_guard_does_not_run():
    code = "def f():\n    return 1\nif __name__ == '__main__':\n    raise SystemExit(input())"
    assert run_tests(code, ["assert f() == 1"]).passed


def test_output_is_capped():
    result = run_tests("print('x' * 100_000)\nassert False", [])
    assert not result.passed and len(result.detail.encode()) <= OUTPUT_TAIL_BYTES + 200


def test_work_folder_is_removed_afterwards():
    result = run_tests("import os\nprint('CWD=' + os.getcwd())", [])
    cwd = result.detail.split("CWD=", 1)[1].split()[0]
    assert result.passed and cwd.startswith("/") and not os.path.exists(cwd)


# ------------------------------------------------------------------------------------------- CodeTask


def test_code_task_scores_pass_at_1_and_syntax():
    task = get_task("code")
    assert isinstance(task, CodeTask) and task.metric == "eval/py_pass_at_1"
    example = {"instruction": "Add.", "input": "", "output": "", "tests": ["assert add(2, 3) == 5"]}
    predictions = ["def add(a, b):\n    return a + b", "def add(a, b):\n    return a * b", "def add(a, b)"]
    metrics = task.score(predictions, [example] * 3)
    assert metrics == {"eval/py_pass_at_1": pytest.approx(1 / 3), "eval/py_syntax_ok": pytest.approx(2 / 3)}
    assert task.score_one(predictions[1], example)["status"] == "failed"
    with pytest.raises(ValueError):
        task.score(predictions, [example])


def test_code_task_takes_its_limits_from_the_eval_config():
    task = get_task("code", EvalConfig(py_timeout_s=1.5, py_memory_mb=128))
    assert (task.timeout_s, task.memory_mb) == (1.5, 128)


def test_code_task_runs_the_example_setup():
    example = {"instruction": "", "input": "", "output": "", "tests": ["assert area(1) == PI"],
               "setup": "PI = 3.0"}
    assert CodeTask().score_one("def area(r):\n    return PI * r * r", example)["correct"]


# -------------------------------------------------------------------------------------------- attacks


def test_infinite_loop_times_out():
    start = time.monotonic()
    result = run_tests("while True:\n    pass", [], timeout_s=1.0)
    assert (result.passed, result.status) == (False, "timeout")
    assert time.monotonic() - start < 1.0 + 2.0


@pytest.mark.parametrize("code", ["x = bytearray(10**10)", "x = []\nwhile True:\n    x.append(' ' * 10**6)"])
def test_memory_bomb_fails(code):
    result = run_tests(code, [], timeout_s=5.0, memory_mb=256)
    assert not result.passed and result.status in ("failed", "killed")
    assert "MemoryError" in result.detail or result.status == "killed"


@pytest.mark.parametrize("audit_hook", BOTH_LAYERS_ROOT)
def test_cannot_delete_or_change_files_outside(tmp_path, audit_hook):
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    victim = victim_dir / "keep.txt"
    victim.write_text("precious")
    attempts = [
        f"os.remove({str(victim)!r})",
        f"shutil.rmtree({str(victim_dir)!r})",
        f"open({str(victim)!r}, 'w').write('gone')",
        f"os.rename({str(victim)!r}, 'stolen.txt')",
        f"os.chmod({str(victim)!r}, 0o777)",
    ]
    code = "import os, shutil\n" + "".join(
        f"try:\n    {a}\n    print('DONE', {a!r})\nexcept Exception as e:\n    print('refused', e)\n"
        for a in attempts
    )
    result = run_tests(code, [], audit_hook=audit_hook)
    assert victim.read_text() == "precious"
    assert (victim.stat().st_mode & 0o777) != 0o777
    assert "DONE" not in result.detail


@pytest.mark.parametrize("audit_hook", BOTH_LAYERS_ROOT)
def test_cannot_read_the_parents_secrets(tmp_path, monkeypatch, audit_hook):
    home = tmp_path / "home"
    token = home / ".ray" / "auth_token"
    token.parent.mkdir(parents=True)
    token.write_text("secret-token-77")
    token.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))  # the parent's HOME, as ~/.ray/auth_token is under it
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret123")
    code = (
        "import os\n"
        f"for attempt in [lambda: open({str(token)!r}).read(), lambda: os.listdir({str(token.parent)!r}),\n"
        "                lambda: dict(os.environ), lambda: open('/proc/self/environ').read(),\n"
        "                lambda: open(f'/proc/{os.getppid()}/environ').read(),\n"
        "                lambda: open(os.path.expanduser('~/.ray/auth_token')).read()]:\n"
        "    try:\n        print(attempt())\n    except Exception as e:\n        print('refused', e)\n"
    )
    result = run_tests(code, [], audit_hook=audit_hook)
    assert result.passed, result.detail
    assert "secret-token-77" not in result.detail
    assert "secret123" not in result.detail and "RAY_AUTH_TOKEN" not in result.detail


@pytest.mark.skipif(not ROOT, reason="checks the uid drop, which happens only when the parent is root")
def test_runs_as_nobody_when_root():
    result = run_tests("import os\nprint('UID', os.getuid(), os.getgid(), os.getgroups())", [])
    assert f"UID {SANDBOX_UID} {SANDBOX_UID} []" in result.detail
    if (Path("/root").stat().st_mode & 0o077) == 0:  # root's home is private: nothing in it is reachable
        # Without the audit hook, so that it is the kernel that refuses.
        result = run_tests("open('/root/.ray/auth_token')", [], audit_hook=False)
        assert not result.passed and "PermissionError" in result.detail


@pytest.mark.parametrize("audit_hook", BOTH_LAYERS)
def test_background_processes_are_killed(audit_hook):
    # One child stays in the process group, one leaves it with setsid(); neither may outlive the run.
    code = (
        "import os, subprocess\n"
        "subprocess.Popen(['sleep', '1007'])\n"
        "if os.fork() == 0:\n    os.setsid()\n    os.execv('/bin/sleep', ['sleep', '1008'])\n"
    )
    before = _live_processes()
    result = run_tests(code, [], audit_hook=audit_hook)
    if audit_hook:
        assert not result.passed and "not allowed" in result.detail  # starting a process is refused
    else:
        assert result.passed, result.detail
    time.sleep(0.2)
    assert _leftovers(before, "sleep 100") == {}


@pytest.mark.parametrize("audit_hook", BOTH_LAYERS_ROOT)
def test_os_system_cannot_touch_the_host(tmp_path, audit_hook):
    marker = tmp_path / "pwned"
    run_tests(f"import os\nos.system('touch {marker}')", [], audit_hook=audit_hook)
    assert not marker.exists()


def test_network_is_refused():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.setblocking(False)
        port = server.getsockname()[1]
        result = run_tests(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)", [])
        assert not result.passed and "network" in result.detail
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected


# Last in the file: the processes a bomb leaves are zombies until init reaps them (seconds), and
# meanwhile count against nobody's RLIMIT_NPROC, so a hook-off test that forks right after could be refused.


def test_fork_bomb_fails_and_leaves_nothing():
    before = _live_processes()
    result = run_tests("import os\nwhile True:\n    os.fork()", [], timeout_s=2.0)
    assert not result.passed
    assert _leftovers(before, SANDBOX_CMDLINE) == {}
    assert run_tests("x = 1", ["assert x == 1"]).passed  # the host still runs sandboxes


@pytest.mark.parametrize("audit_hook", BOTH_LAYERS)
def test_fork_bomb_is_capped_by_nproc(audit_hook):
    # Forks until refused, each child parking in sleep (so the test burns no CPU), then parks itself.
    code = (
        "import os, time\nn = 0\n"
        "while True:\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        "    if pid == 0:\n        time.sleep(1000)\n"
        "    n += 1\n"
        "print('forked', n, flush=True)\ntime.sleep(1000)\n"
    )
    before = _live_processes()
    result = run_tests(code, [], timeout_s=2.0, audit_hook=audit_hook)
    assert result.status == "timeout"
    forked = int(result.detail.split("forked ", 1)[1].split()[0])
    assert forked == 0 if audit_hook else 0 < forked < MAX_PROCESSES
    assert _leftovers(before, SANDBOX_CMDLINE) == {}
