"""The Python sandbox: correct code passes, wrong code fails, and attacks fail without harming the host.

Attacks run with every layer and with the audit hook off (`audit_hook=False`), to show the OS boundary
holds on its own; the ones about files, secrets and processes also run as an unprivileged user (when the
tests run as root, as in CI, `as_user` runs `run_tests` in a process that dropped to uid 12345 with its own
home). The checks are the ones that matter: no process survives, no file outside changed, no secret read,
the verdict is "failed".
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from shared.config import EvalConfig
from shared.execution import boundary
from shared.execution.python import MAX_PROCESSES, OPT_OUT_VAR, OUTPUT_TAIL_BYTES, SANDBOX_UID, run_tests
from shared.tasks import get_task
from shared.tasks.code import CodeTask

REPO = Path(__file__).resolve().parent.parent
ROOT = os.geteuid() == 0
OTHER_UID = 12345  # the ordinary user of the tests run as root
BOTH_LAYERS = [pytest.param(True, id="audit_hook"), pytest.param(False, id="boundary_only")]
USERS = [
    pytest.param("current", id="as_" + ("root" if ROOT else "user")),
    pytest.param("other", id="as_uid_12345",
                 marks=pytest.mark.skipif(not ROOT, reason="dropping to another uid needs root; this run is the "
                                                           "ordinary user already")),
]


# ------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def world_dir():
    """A folder anyone on the host may write (mode 777), outside pytest's private tmp: only the boundary
    keeps the sandbox out of it, whichever user runs it."""
    path = Path(tempfile.mkdtemp(prefix="sandbox-test-outside-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def other_user():
    """A copy of the executor (standard library only) readable by uid 12345, a home of its own with a Ray
    token and a .bashrc, and a system python it can execute."""
    base = Path(tempfile.mkdtemp(prefix="sandbox-test-user-"))
    pkg = base / "code" / "shared" / "execution"
    pkg.mkdir(parents=True)
    (base / "code" / "shared" / "__init__.py").write_text("")
    for name in ("__init__.py", "python.py", "boundary.py", "judge.py"):
        shutil.copy(REPO / "shared" / "execution" / name, pkg / name)
    home = base / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("other-user-token-5521")
    (home / ".bashrc").write_text("# bashrc\n")
    for path in [base, *base.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    for path in [home, *home.rglob("*")]:
        os.chown(path, OTHER_UID, OTHER_UID)
    (home / ".ray" / "auth_token").chmod(0o600)
    python = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)), None)
    if python is None:
        shutil.rmtree(base)
        pytest.skip("no system python3 for the unprivileged user")
    yield {"code": base / "code", "home": home, "python": python}
    shutil.rmtree(base, ignore_errors=True)


def run_as(user: str, other_user_info, code: str, tests: list[str], **kwargs):
    """run_tests as this process's user, or as uid 12345 in a child process. Returns a PyResult-like dict."""
    if user == "current":
        return vars(run_tests(code, tests, **kwargs))
    script = ("import json, sys\nfrom shared.execution.python import run_tests\n"
              "args = json.loads(sys.stdin.read())\n"
              "print(json.dumps(vars(run_tests(args.pop('code'), args.pop('tests'), **args))))\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(other_user_info["home"]), "RAY_AUTH_TOKEN": "env-secret-8812"}
    done = subprocess.run([other_user_info["python"], "-c", script], input=json.dumps(dict(kwargs, code=code,
                          tests=tests)), cwd=other_user_info["code"], env=env, capture_output=True, text=True,
                          timeout=120, user=OTHER_UID, group=OTHER_UID, extra_groups=[])
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture
def user_run(request, other_user_info_or_none):
    return lambda code, tests, **kw: run_as(request.param, other_user_info_or_none, code, tests, **kw)


@pytest.fixture
def other_user_info_or_none(request):
    return request.getfixturevalue("other_user") if ROOT else None


def _live_processes() -> dict[int, str]:
    """pid -> command line of every process that is not a zombie (a zombie runs nothing)."""
    processes = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if state != "Z":
            processes[int(name)] = cmdline
    return processes


def _survivors(marker: str) -> dict[int, str]:
    """Processes whose command line holds marker. Checked right after run_tests returned: the boundary ends
    a run's processes before run_tests returns, so no grace period."""
    return {pid: cmd for pid, cmd in _live_processes().items() if marker in cmd}


def _compile_so(tmp_path: Path, source: str) -> bytes:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the attack's shared object")
    (tmp_path / "attack.c").write_text(source)
    out = tmp_path / "attack.so"
    done = subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(tmp_path / "attack.c")],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cc could not build the attack's shared object: {done.stderr[-500:]}")
    return out.read_bytes()


def _host_snapshot(*folders: Path) -> dict[str, tuple]:
    """Every entry under the folders (not following links) with its size and mtime."""
    seen = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")] if folder.exists() else []:
            try:
                st = path.lstat()
            except OSError:
                continue
            seen[str(path)] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return seen


# ------------------------------------------------------------------------------------------ behaviour


def test_correct_solution_passes():
    tests = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
    result = run_tests("def add(a, b):\n    return a + b", tests)
    assert (result.passed, result.status) == (True, "passed"), result.detail


def test_wrong_solution_fails_and_names_the_test():
    result = run_tests("def add(a, b):\n    return a - b", ["assert add(0, 0) == 0", "assert add(1, 2) == 3"])
    assert (result.passed, result.status) == (False, "failed")
    assert "AssertionError" in result.detail and "<test 1>" in result.detail


def test_syntax_error_fails():
    result = run_tests("def add(a, b)\n    return a + b", ["assert add(1, 2) == 3"])
    assert not result.passed and result.status == "failed"
    assert "SyntaxError" in result.detail


def test_setup_runs_after_the_code_and_before_the_tests():
    result = run_tests("def area(r):\n    return PI * r * r", ["assert area(1) == PI"], setup="PI = 3.14")
    assert result.passed, result.detail


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


def test_values_of_every_plain_type_cross_exactly():
    code = textwrap.dedent("""
        import collections, decimal, fractions
        def f():
            return [None, True, 2**200, -7, 0.1, float('inf'), -0.0, 1+2j, 'é\\ud800', b'\\x00', bytearray(b'a'),
                    (1, (2,)), {'k': [1]}, {1, 2}, frozenset({3}), decimal.Decimal('1.10'), fractions.Fraction(1, 3),
                    collections.Counter('aab'), collections.namedtuple('P', 'x y')(1, 2)]
    """)
    test = ("import decimal, fractions, math\nv = f()\n"
            "assert v[:5] == [None, True, 2**200, -7, 0.1] and type(v[2]) is int and v[1] is True\n"
            "assert math.isinf(v[5]) and math.copysign(1, v[6]) == -1 and v[7] == 1+2j\n"
            "assert v[8] == 'é\\ud800' and v[9] == b'\\x00' and type(v[10]) is bytearray\n"
            "assert v[11] == (1, (2,)) and v[12] == {'k': [1]} and v[13] == {1, 2} and v[14] == frozenset({3})\n"
            "assert v[15] == decimal.Decimal('1.10') and v[16] == fractions.Fraction(1, 3)\n"
            "assert v[17] == {'a': 2, 'b': 1} and v[18] == (1, 2)\n")
    result = run_tests(code, [test])
    assert result.passed, result.detail


def test_objects_stay_in_the_candidates_process_and_can_be_used_through_handles():
    # MBPP task 367: the setup builds a tree of the solution's Node class; the test passes it back.
    code = textwrap.dedent("""
        class Node:
            def __init__(self, data):
                self.data, self.left, self.right = data, None, None
        def height(node):
            return 0 if node is None else 1 + max(height(node.left), height(node.right))
        def squares(n):
            for i in range(n):
                yield i * i
    """)
    setup = "root = Node(1)\nroot.left = Node(2)\nroot.left.left = Node(3)\n"
    tests = ["assert height(root) == 3", "assert root.left.data == 2",
             "extra = Node(9)\nroot.right = extra\nassert height(root.right) == 1 and root.right.data == 9",
             "assert list(squares(4)) == [0, 1, 4, 9] and 9 in list(squares(4))"]
    result = run_tests(code, tests, setup=setup)
    assert result.passed, result.detail


def test_exceptions_of_the_candidate_reach_the_test_as_their_builtin_type():
    code = ("class BadInput(ValueError):\n    pass\n"
            "def f(x):\n    if x < 0:\n        raise BadInput('negative')\n    return x\n")
    test = "try:\n    f(-1)\nexcept ValueError as e:\n    assert 'negative' in str(e)\nelse:\n    assert False\n"
    result = run_tests(code, [test])
    assert result.passed, result.detail


def test_builtin_names_mean_the_builtin_unless_the_solution_defines_them():
    code = "def sum(a, b):\n    return (a + b) % 7\n"  # MBPP task 126 asks for a function named sum
    tests = ["assert sum(10, 15) == 4"]
    assert not run_tests(code, tests).passed  # the builtin sum(10, 15) is a TypeError
    assert run_tests(code, tests, solution_names={"sum"}).passed


def test_a_test_cannot_pass_its_own_function_to_the_candidate():
    # A limit of the judge, pinned: a lambda of the test cannot cross into the candidate's process.
    code = "def apply(f, x):\n    return f(x)\n"
    result = run_tests(code, ["assert apply(lambda v: v * 2, 3) == 6"])
    assert not result.passed and "cross into its process" in result.detail


def test_sys_exit_before_the_tests_is_a_failure():
    result = run_tests("import sys\nsys.exit(0)", ["assert False"])
    assert (result.passed, result.status) == (False, "failed")


def test_main_guard_does_not_run():
    code = "def f():\n    return 1\nif __name__ == '__main__':\n    raise SystemExit(input())"
    assert run_tests(code, ["assert f() == 1"]).passed


def test_output_is_capped():
    result = run_tests("print('x' * 100_000)\nassert False", [])
    assert not result.passed and len(result.detail.encode()) <= OUTPUT_TAIL_BYTES + 200


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


def test_code_task_runs_the_example_setup_and_lets_the_reference_name_a_builtin():
    example = {"instruction": "", "input": "", "output": "", "tests": ["assert area(1) == PI"], "setup": "PI = 3.0"}
    assert CodeTask().score_one("def area(r):\n    return PI * r * r", example)["correct"]
    example = {"instruction": "", "input": "", "output": "def sum(a, b):\n    return a", "tests": ["assert sum(1, 2) == 1"]}
    assert CodeTask().score_one("def sum(a, b):\n    return a", example)["correct"]


# ------------------------------------------------------------------------------------------- boundary


def test_without_bubblewrap_it_refuses_to_run_and_names_what_is_missing(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    boundary.check_boundary.cache_clear()
    try:
        with pytest.raises(boundary.BoundaryUnavailable, match="bubblewrap"):
            run_tests("x = 1", ["assert x == 1"], memory_mb=333)  # limits no pooled sandbox has
    finally:
        boundary.check_boundary.cache_clear()


def test_the_opt_out_runs_without_the_boundary_and_says_so(monkeypatch, capfd):
    monkeypatch.setenv(OPT_OUT_VAR, "1")
    result = run_tests("def f():\n    return 2", ["assert f() == 2"], memory_mb=334)
    assert result.passed, result.detail
    assert "WITHOUT the OS boundary" in capfd.readouterr().err


def test_the_sandbox_sees_no_host_processes_no_host_files_and_only_its_own_loopback():
    code = textwrap.dedent("""
        import os, socket
        def view():
            names = []
            for host in ('127.0.0.1', '10.0.0.1'):
                s = socket.socket()
                s.settimeout(0.5)
                try:
                    s.connect((host, 22))
                    names.append('connected ' + host)
                except OSError as e:
                    names.append(type(e).__name__)
            return sorted(os.listdir('/')), os.path.exists('/proc/1'), os.getpid(), names
    """)
    test = ("top, proc, pid, net = view()\nprint(top, proc, pid, net)\n"
            "assert set(top) <= {'usr', 'bin', 'lib', 'lib64', 'lib32', 'libx32', 'sbin', 'etc', 'dev', 'home', 'root'}\n"
            "assert not proc and pid < 10 and not any(n.startswith('connected') for n in net)")
    result = run_tests(code, [test], audit_hook=False)
    assert result.passed, result.detail


@pytest.mark.skipif(not ROOT, reason="checks the uid drop, which happens only when the parent is root")
def test_runs_as_nobody_when_root():
    code = "import os\ndef ids():\n    return os.getuid(), os.getgid(), os.getgroups()"
    result = run_tests(code, [f"assert ids() == ({SANDBOX_UID}, {SANDBOX_UID}, [])"], audit_hook=False)
    assert result.passed, result.detail


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


@pytest.mark.parametrize("user_run", USERS, indirect=True)
@pytest.mark.parametrize("audit_hook", BOTH_LAYERS)
def test_memory_outside_the_address_space_limit_is_refused(audit_hook, user_run):
    # memfd_create held 600 MB under a 256 MB limit before the seccomp filter; System V shared memory too.
    code = textwrap.dedent("""
        import os
        got = []
        try:
            fd = os.memfd_create('hold')
            for _ in range(600):
                os.write(fd, b'x' * 2**20)
            got.append('memfd')
        except OSError:
            pass
        try:
            with open('/dev/shm/hold', 'wb') as f:
                for _ in range(600):
                    f.write(b'x' * 2**20)
            got.append('shm')
        except OSError:
            pass
        def held():
            return got
    """)
    result = user_run(code, ["assert held() == []"], memory_mb=256, audit_hook=audit_hook)
    assert result["passed"], result


@pytest.mark.parametrize("user_run", USERS, indirect=True)
@pytest.mark.parametrize("audit_hook", BOTH_LAYERS)
def test_pure_python_cannot_write_outside_the_work_folder(world_dir, user_run, audit_hook):
    target = world_dir
    keep = target / "keep.txt"
    keep.write_text("precious")
    keep.chmod(0o666)
    shm_before, tmp_before = set(os.listdir("/dev/shm")), set(os.listdir("/tmp"))
    t = str(target)
    code = textwrap.dedent(f"""
        import os, readline, shutil, sqlite3, threading
        T = {t!r}
        attempts = [
            lambda: readline.write_history_file(T + '/history'),
            lambda: sqlite3.connect(T + '/db.sqlite').execute('create table x (a)'),
            lambda: sqlite3.connect(':memory:').execute("vacuum into '" + T + "/vacuumed.db'"),
            lambda: os.mkfifo(T + '/fifo'),
            lambda: os.mknod(T + '/node'),
            lambda: open(T + '/keep.txt', 'w').write('gone'),
            lambda: os.remove(T + '/keep.txt'),
            lambda: shutil.rmtree(T),
            lambda: os.chmod(T + '/keep.txt', 0o600),
            lambda: open('/tmp/sandbox-was-here-{os.getpid()}', 'w').write('x'),
            lambda: open('/dev/shm/sandbox-was-here-{os.getpid()}', 'w').write('x'),
        ]
        done = []
        for attempt in attempts:
            try:
                attempt()
                done.append(attempt)
            except Exception:
                pass
        # the race the audit hook lost: a thread changes the cwd between its check and the open
        os.makedirs('a/b', exist_ok=True)
        def flip():
            for _ in range(2000):
                try:
                    os.chdir(T)
                    os.chdir('{WORK}')
                except OSError:
                    pass
        thread = threading.Thread(target=flip)
        thread.start()
        for i in range(2000):
            try:
                open('race-' + str(i), 'w').close()
            except OSError:
                pass
        thread.join()
        os.chdir('{WORK}')
    """)
    result = user_run(code, ["assert True"], audit_hook=audit_hook)
    assert result["status"] in ("passed", "failed"), result
    assert keep.read_text() == "precious" and (keep.stat().st_mode & 0o777) == 0o666
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert not {n for n in set(os.listdir("/dev/shm")) - shm_before if "sandbox-was-here" in n}
    assert not {n for n in set(os.listdir("/tmp")) - tmp_before if "sandbox-was-here" in n}


WORK = "/home/sandbox"


@pytest.mark.parametrize("user_run", USERS, indirect=True)
@pytest.mark.parametrize("audit_hook", BOTH_LAYERS)
def test_cannot_read_secrets_of_the_host(tmp_path, monkeypatch, user_run, audit_hook, request):
    secret_home = tmp_path / "secret-home"
    (secret_home / ".ray").mkdir(parents=True)
    (secret_home / ".ray" / "auth_token").write_text("secret-token-77")
    (secret_home / ".bashrc").write_text("# bashrc\n")
    monkeypatch.setenv("HOME", str(secret_home))  # the host's HOME, as ~/.ray/auth_token is under it
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env-secret-8812")
    code = textwrap.dedent(f"""
        import glob, os
        found = []
        paths = [{str(secret_home / '.ray' / 'auth_token')!r}, os.path.expanduser('~/.ray/auth_token'),
                 '/root/.ray/auth_token', '/proc/self/environ', '/proc/1/environ']
        paths += glob.glob('/home/*/.ray/auth_token') + glob.glob('/tmp/*/home/.ray/auth_token')
        paths += [f'/proc/{{p}}/environ' for p in range(1, 50)]
        for path in paths:
            try:
                found.append(open(path).read())
            except OSError:
                pass
        for bashrc in [{str(secret_home / '.bashrc')!r}, os.path.expanduser('~/.bashrc'), '/root/.bashrc']:
            try:
                open(bashrc, 'a').write('echo pwned\\n')
            except OSError:
                pass
        found.append(repr(dict(os.environ)))
        print(found)
        def loot():
            return found
    """)
    result = user_run(code, ["assert loot()"], audit_hook=audit_hook)
    assert result["passed"], result  # the code ran; what it found is below
    for secret in ("secret-token-77", "env-secret-8812", "other-user-token-5521", "RAY_AUTH_TOKEN"):
        assert secret not in result["detail"]
    assert (secret_home / ".bashrc").read_text() == "# bashrc\n"
    if "uid_12345" in request.node.name:
        other_home = request.getfixturevalue("other_user")["home"]
        assert (other_home / ".bashrc").read_text() == "# bashrc\n"


@pytest.mark.parametrize("user_run", USERS, indirect=True)
@pytest.mark.parametrize("audit_hook", BOTH_LAYERS)
def test_native_code_cannot_escape_or_forge(tmp_path, world_dir, user_run, audit_hook):
    """The issue's attack: a .so written to the work folder and loaded (sqlite3's load_extension, or
    importlib's ExtensionFileLoader) forks, calls setsid and starts `sleep`; it also tries a file outside.
    Afterwards no sleep lives, the file is not there, and the verdict is "failed"."""
    outside = world_dir
    marker = f"{4000 + os.getpid() % 1000}.{len(str(tmp_path))}"
    so = _compile_so(tmp_path, textwrap.dedent(f"""
        #include <fcntl.h>
        #include <stdio.h>
        #include <unistd.h>
        __attribute__((constructor)) static void attack(void) {{
            int fd = open("{outside}/native-was-here", O_WRONLY | O_CREAT, 0644);
            if (fd >= 0) close(fd);
            for (int i = 3; i < 256; i++) {{  /* any inherited descriptor: forge a verdict on it */
                const char fake[] = "\\0\\0\\0\\0\\0\\0\\0\\x2a{{\\"status\\": \\"passed\\", \\"detail\\": \\"\\"}}";
                write(i, fake, sizeof fake - 1);
            }}
            if (fork() == 0) {{
                setsid();
                if (fork() == 0) {{
                    execl("/bin/sleep", "sleep", "{marker}", (char *)0);
                    execl("/usr/bin/sleep", "sleep", "{marker}", (char *)0);
                }}
                _exit(0);
            }}
        }}
        int sqlite3_extension_init(void *db, char **err, const void *api) {{ return 0; }}
        void *PyInit_attack(void) {{ return 0; }}
    """))
    code = textwrap.dedent(f"""
        import base64, importlib.machinery, importlib.util, os, sqlite3, time
        open('attack.so', 'wb').write(base64.b64decode({base64.b64encode(so).decode()!r}))
        path = os.path.abspath('attack.so')
        def by_sqlite():
            connection = sqlite3.connect(':memory:')
            connection.enable_load_extension(True)
            connection.load_extension(path)
        def by_importlib():
            loader = importlib.machinery.ExtensionFileLoader('attack', path)
            importlib.util.module_from_spec(importlib.util.spec_from_file_location('attack', path, loader=loader))
        for load in (by_sqlite, by_importlib):
            try:
                load()
            except BaseException as e:
                print('load refused:', type(e).__name__, e)
        time.sleep(0.3)
        def answer():
            return 41
    """)
    result = user_run(code, ["assert answer() == 42"], audit_hook=audit_hook)
    assert not result["passed"], result
    assert not (outside / "native-was-here").exists()
    assert _survivors(f"sleep {marker}") == {}


@pytest.mark.parametrize("user_run", USERS, indirect=True)
@pytest.mark.parametrize("audit_hook", BOTH_LAYERS)
def test_background_processes_end_with_the_run(user_run, audit_hook):
    # One child stays in the group, one leaves it with setsid() and double-forks; neither may outlive the run.
    code = textwrap.dedent("""
        import os
        try:
            import subprocess
            subprocess.Popen(['sleep', '1007'])
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execv('/bin/sleep', ['sleep', '1008'])
                os._exit(0)
        except Exception as e:
            print('refused', e)
        def f():
            return 1
    """)
    result = user_run(code, ["assert f() == 1"], audit_hook=audit_hook)
    assert result["passed"], result
    assert _survivors("sleep 1007") == {} and _survivors("sleep 1008") == {}


def test_a_timeout_ends_every_process_of_the_run():
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    os.execv('/bin/sleep', ['sleep', '1011'])\n"
            "time.sleep(0.2)\nwhile True:\n    pass\n")
    result = run_tests(code, [], timeout_s=1.0, audit_hook=False)
    assert result.status == "timeout"
    assert _survivors("sleep 1011") == {}


@pytest.mark.parametrize("audit_hook", BOTH_LAYERS)
def test_cannot_signal_host_processes(audit_hook):
    victim = subprocess.Popen(["sleep", "1012"], **({"user": SANDBOX_UID, "group": SANDBOX_UID, "extra_groups": []}
                                                    if ROOT else {}))
    try:
        code = textwrap.dedent(f"""
            import os, signal
            hits = []
            for pid in [{victim.pid}] + list(range(1, 64)):
                for attempt in (lambda: signal.pidfd_send_signal(os.pidfd_open(pid), signal.SIGKILL),
                                lambda: os.kill(pid, signal.SIGKILL)):
                    try:
                        if pid != os.getpid():
                            attempt()
                            hits.append(pid)
                    except Exception:
                        pass
        """)
        run_tests(code, ["assert True"], audit_hook=audit_hook)
        assert victim.poll() is None  # still alive
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.parametrize("audit_hook", BOTH_LAYERS)
def test_network_is_unreachable(audit_hook):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.setblocking(False)
        port = server.getsockname()[1]
        code = f"import socket\ndef f():\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n    return 1"
        result = run_tests(code, ["assert f() == 1"], audit_hook=audit_hook)
        assert not result.passed
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected


def test_a_deep_directory_tree_is_no_problem_for_the_host():
    code = ("import os\nos.chdir(os.getcwd())\nfor i in range(1200):\n    os.mkdir('d')\n    os.chdir('d')\n"
            "os.chmod('.', 0)\n")
    result = run_tests(code, ["assert True"], audit_hook=False)
    assert result.status in ("passed", "failed"), result.detail


# --------------------------------------------------------------------------------- forged verdicts

FORGERIES = {
    "os._exit(0) at import": "import os\nos._exit(0)",
    "replaced os._exit, print and stderr": (
        "import builtins, os, sys\nos._exit = lambda code: None\nbuiltins.print = lambda *a, **k: None\n"
        "sys.stderr.write = lambda s: len(s)\nsys.exit = lambda *a: None\ndef solve(x):\n    return 0"),
    "frames walked to the harness": textwrap.dedent("""
        import sys
        frame = sys._getframe()
        while frame is not None:
            for scope in (frame.f_locals, frame.f_globals):
                for value in list(scope.values()):
                    if isinstance(value, list):
                        value.clear()
                    if isinstance(value, dict) and 'tests' in value:
                        value['tests'] = []
            frame = frame.f_back
        def solve(x):
            return 0
    """),
    "an exception whose __str__ exits": textwrap.dedent("""
        import os
        class Bye(Exception):
            def __str__(self):
                os._exit(0)
        def solve(x):
            raise Bye()
    """),
    "an object whose __eq__ is always true": textwrap.dedent("""
        class Yes(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        class Always:
            def __eq__(self, other):
                return True
            def __bool__(self):
                return True
        def solve(x):
            return Always() if x else Yes(0)
    """),
    "shadowed sorted and replaced sys.modules['math']": textwrap.dedent("""
        import builtins, sys, types
        builtins.sorted = lambda *a, **k: [1, 2, 3]
        sorted = builtins.sorted
        fake = types.ModuleType('math')
        fake.isclose = lambda *a, **k: True
        sys.modules['math'] = fake
        def solve(x):
            return [3, 1]
    """),
    "read the job for the expected answers": textwrap.dedent("""
        import glob, os, re, sys
        seen = []
        def read(paths):
            for path in paths:
                if path.startswith(('/usr', '/dev', '/etc', '/lib', '/bin', '/sbin', '/proc', '/sys')):
                    continue
                try:
                    seen.append(open(path, errors='replace').read())
                except OSError:
                    pass
        read([os.path.abspath(p) for p in os.listdir('.')])
        if not any('EXPECTED-ANSWER' in t for t in seen):
            read(glob.glob('/**', recursive=True)[:5000])
        seen.append(' '.join(sys.argv))
        try:
            seen.append(os.read(0, 65536).decode(errors='replace'))
        except OSError:
            pass
        found = [m.group(1) for t in seen for m in [re.search('EXPECTED-ANSWER-([0-9]{4})', t)] if m]
        def solve(x):
            return found[0] if found else 'none'
    """),
    "a verdict written on every descriptor, then the judge killed": textwrap.dedent("""
        import os, signal
        fake = b'{"status": "passed", "detail": ""}'
        for fd in range(0, 256):
            try:
                os.write(fd, len(fake).to_bytes(8, 'big') + fake)
            except OSError:
                pass
        def solve(x):
            try:
                os.kill(os.getppid(), signal.SIGKILL)
            except OSError:
                pass
            return 0
    """),
}
# Each forgery against the tests it was written to pass; each of the first seven passed the harness
# this sandbox replaced (one process running code and tests, verdict by exit code).
FORGED_TESTS = {
    "os._exit(0) at import": ["assert solve(3) == 7"],
    "replaced os._exit, print and stderr": ["assert solve(3) == 7"],
    "frames walked to the harness": ["assert solve(3) == 7"],
    "an exception whose __str__ exits": ["assert solve(3) == 7"],
    "an object whose __eq__ is always true": ["assert solve(3) == 7", "assert solve(0) == 7"],
    "shadowed sorted and replaced sys.modules['math']": [
        "assert sorted(solve(2)) == [1, 2, 3]", "import math\nassert math.isclose(solve(1)[0], 2.5)"],
    "read the job for the expected answers": ["assert solve(0) == 'EXPECTED-ANSWER-9731'[16:]"],
    "a verdict written on every descriptor, then the judge killed": ["assert solve(3) == 7"],
}


@pytest.mark.parametrize("user_run", USERS, indirect=True)
@pytest.mark.parametrize("audit_hook", BOTH_LAYERS)
@pytest.mark.parametrize("name", list(FORGERIES))
def test_forged_verdicts_score_as_failed(name, audit_hook, user_run):
    result = user_run(FORGERIES[name], FORGED_TESTS[name], audit_hook=audit_hook)
    assert not result["passed"] and result["status"] != "passed", result


def test_an_always_equal_object_passes_only_a_test_that_compares_it_with_itself():
    # Pinned: equality is judged on plain data, so Always() == 3 is False; a test that asks the candidate's
    # own object (not the judge) is the candidate's to answer.
    code = "class Always:\n    def __eq__(self, other):\n        return True\ndef f():\n    return Always()"
    assert not run_tests(code, ["assert f() == 3"]).passed
    assert run_tests(code, ["x = f()\nassert x == x"]).passed


# Last in the file: a bomb's processes end with its namespace, but let it not slow the tests above.


@pytest.mark.parametrize("audit_hook", BOTH_LAYERS)
def test_fork_bomb_is_capped_and_leaves_nothing(audit_hook):
    code = (
        "import os, time\nn = 0\n"
        "while True:\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        "    if pid == 0:\n        os.execv('/bin/sleep', ['sleep', '1013'])\n"
        "    n += 1\n"
        "print('forked', n, flush=True)\ntime.sleep(1000)\n"
    )
    result = run_tests(code, [], timeout_s=2.0, audit_hook=audit_hook)
    assert result.status == "timeout"
    forked = int(result.detail.split("forked ", 1)[1].split()[0]) if "forked " in result.detail else 0
    assert forked == 0 if audit_hook else 0 < forked < MAX_PROCESSES
    assert _survivors("sleep 1013") == {}
    assert run_tests("x = 1", ["assert x == 1"]).passed  # the host still runs sandboxes


def test_messages_round_trip_and_malformed_ones_are_refused():
    """unpack() reads what the candidate's process sends: anything but a well-formed message is a ValueError."""
    import random

    from shared.execution.judge import pack, unpack

    message = {"op": "call", "args": [["i", "-ff"], ["s", "é\ud800"], None, True, [[], {}]], "n": 2**70}
    assert unpack(pack(message)) == message
    data = pack(message)
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            unpack(data[:cut])
    with pytest.raises(ValueError):
        unpack(b"L\xff\xff\xff\xff")  # a count larger than the bytes left: refused before any allocation
    with pytest.raises(ValueError):
        unpack(b"L\x00\x00\x00\x01" * 1000 + b"N")  # nested too deeply
    rng = random.Random(0)
    for _ in range(2000):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        try:
            unpack(blob)
        except ValueError:
            pass


def test_calls_asked_ahead_are_answered_in_order_and_the_rest_live():
    # HumanEval's shape: check(candidate) with literal calls, a loop of computed ones, and an expected raise.
    code = ("calls = []\ndef f(x, y=0):\n    calls.append(x)\n    if x < 0:\n        raise ValueError('neg')\n"
            "    return x + y\ndef seen():\n    return list(calls)")
    test = textwrap.dedent("""
        def check(candidate):
            assert candidate(1) == 1
            assert candidate(2, y=3) == 5
            for i in range(3):
                assert candidate(i * 10) == i * 10
            try:
                candidate(-1)
            except ValueError:
                pass
            else:
                assert False
            assert candidate(1) == 1
        check(f)
        assert seen() == [1, -1, 1, 2, 0, 10, 20], seen()
    """)
    result = run_tests(code, [test])
    assert result.passed, result.detail


def test_a_module_the_candidate_imported_is_the_judges_own_in_the_tests():
    # The test uses `math` without importing it (HumanEval's prompts import it); the candidate replaced it.
    code = textwrap.dedent("""
        import math, sys, types
        fake = types.ModuleType('math')
        fake.isclose = lambda *a, **k: True
        fake.fabs = lambda x: 0.0
        math = fake
        sys.modules['math'] = fake
        def root():
            return 7.0
    """)
    assert not run_tests(code, ["assert math.isclose(root(), 2.0)"]).passed
    assert not run_tests(code, ["assert math.fabs(root() - 2.0) < 1e-6"]).passed
    assert run_tests(code, ["assert math.isclose(root(), 7.0)"]).passed



def test_spare_sandboxes_are_started_by_a_thread_that_outlives_them(monkeypatch):
    """bwrap's --die-with-parent fires when the *thread* that started bwrap ends. The spare a run leaves for
    the next must be started by a thread that lives on (a thread per refill ended right after the start, and
    took the spare with it, sometimes in the middle of the run that had taken it)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from shared.execution import python as executor

    starters = []
    start = executor._start

    def recording_start(*args):
        starters.append(threading.current_thread())
        return start(*args)

    monkeypatch.setattr(executor, "_start", recording_start)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="caller") as callers:  # as CodeTask.score_all does
        results = list(callers.map(lambda i: run_tests(f"x = {i}", [f"assert x == {i}"]), range(12)))
    assert all(r.passed for r in results), [r.detail for r in results if not r.passed]
    deadline = time.monotonic() + 20
    while not executor._POOL and time.monotonic() < deadline:  # the last spare starts after the last verdict
        time.sleep(0.05)
    time.sleep(0.5)
    spares = list(executor._POOL.values())
    assert spares and all(s.proc.poll() is None for s in spares), [s.proc.poll() for s in spares]
    refills = [t for t in starters if not t.name.startswith("caller")]  # the threads that started spares
    assert refills and all(t.is_alive() for t in refills), refills
