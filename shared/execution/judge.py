"""The program that runs inside the Python sandbox: a judge process and the candidate's process.

Never imported by the host: shared/execution/python.py passes this file's text to
`python -I -S -B -c <text> <report fd> <config, packed, in hex>` inside the boundary. Standard library only;
the host imports it for pack() and unpack(), the format of every message.

    judge (J)                                     candidate (P, forked from J)
    reads the code from stdin, forks P  ------->  closes stdin and the report fd, sets the audit hook
    reads the tests from stdin (P has no stdin)   runs the code and the setup in its module namespace
    runs each test in its own namespace, where    answers J's requests: call a function, get/set an
      the candidate's names are remote proxies    attribute, index, len, bool, str, list(...), each
      and every value that comes back is plain      on its own objects; plain values go back as data,
      data (int, float, str, list, dict, ...)       anything else as an opaque handle
    writes the verdict to the report fd, which only J holds

Why two processes: once the candidate's code has run in a process, that process is the candidate's
(frames, builtins, sys.modules, native code); whatever it reports can be forged. So the tests and their
expected answers never enter P: P only ever sees the code, the setup and the arguments of the calls the
tests make, and answers with values that J compares. A forged answer is a wrong answer. P is forked before
J reads the tests, so its memory never held them.

What a test may do with the candidate's objects (limits of the remote proxies, each pinned by a test):
- Plain data crosses both ways: None, bool, int, float, complex, str, bytes, bytearray, list, tuple, dict,
  set, frozenset (subclasses arrive as their base type: a namedtuple as a tuple, a Counter as a dict),
  Decimal, Fraction. An object of any other type stays in P; J holds a handle to it, which can be passed
  back to the candidate, called, indexed, iterated (P sends list(obj)), measured (len), tested (bool),
  printed (str) and have attributes read and set. A handle equals only itself: a candidate's object whose
  `__eq__` is always true does not pass `assert f(x) == 3`, because 3 is compared with plain data only.
- A test that passes a function or object of its own (a lambda) to the candidate fails: it cannot cross.
- A name that is a Python builtin (`sorted`, `sum`) means the builtin in a test, even where the candidate
  defines one, unless the caller names it among the solution's names (MBPP task 126 asks for `sum`).
- Calls asked ahead: P makes every call of the tests of the form `name(<literals>)` (one argument or more)
  right after the setup, in the order they are written, and J hands the answers out as the tests make
  those calls (one round trip instead of one per call). For the pure functions of HumanEval and MBPP that changes nothing; a candidate
  whose answers depend on calls the tests make in between (state kept across calls) may answer otherwise,
  and a call the tests would never reach is still made.
"""

import builtins
import os
import posix
import resource
import sys
import types

# Standard modules a test may use through a name the candidate's code imported (HumanEval's prompts import
# math): the judge uses its own import of them, never the candidate's module object, which the candidate
# may have replaced or changed (sys.modules["math"] = fake). Any other module stays a handle.
MODULES = frozenset({
    "abc", "array", "bisect", "calendar", "cmath", "collections", "copy", "dataclasses", "datetime", "decimal",
    "enum", "fractions", "functools", "hashlib", "heapq", "itertools", "json", "math", "numbers", "operator",
    "random", "re", "statistics", "string", "struct", "textwrap", "time", "typing", "unicodedata",
})
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # one answer of the candidate; more is a failure
MAX_DEPTH = 100  # nesting of a value that crosses
_HEADER = 8


# ------------------------------------------------------------------------------------------ framing


def read_exact(fd, n):
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("end of stream")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd, limit=MAX_MESSAGE_BYTES):
    size = int.from_bytes(read_exact(fd, _HEADER), "big")
    if size > limit:
        raise ValueError("message of " + str(size) + " bytes is over the limit of " + str(limit))
    return unpack(read_exact(fd, size))


def write_frame(fd, obj):
    data = pack(obj)
    data = len(data).to_bytes(_HEADER, "big") + data
    while data:
        data = data[os.write(fd, data):]


# Messages are JSON-shaped (None, bool, int, str, list, dict with str keys) in a small binary form of
# their own: the json module costs the sandbox's start about 9 ms of imports (re, enum), on every run.
# unpack() reads what the candidate's process sends: it checks every length against what is left, caps
# nesting, and raises ValueError for anything else; it never builds more than the bytes describe.


def pack(obj):
    out = []

    def put(value, depth):
        if depth > 2 * MAX_DEPTH + 8:
            raise ValueError("nested too deeply to send")
        if value is None:
            out.append(b"N")
        elif value is True or value is False:
            out.append(b"T" if value else b"F")
        elif type(value) is int:
            text = format(value, "x").encode()
            out.append(b"I" + len(text).to_bytes(4, "big") + text)
        elif type(value) is str:
            text = value.encode("utf-8", "surrogatepass")
            out.append(b"S" + len(text).to_bytes(4, "big") + text)
        elif type(value) in (list, tuple):
            out.append(b"L" + len(value).to_bytes(4, "big"))
            for item in value:
                put(item, depth + 1)
        elif type(value) is dict:
            out.append(b"M" + len(value).to_bytes(4, "big"))
            for key, item in value.items():
                put(str(key), depth + 1)
                put(item, depth + 1)
        else:
            raise TypeError("cannot send a " + type(value).__name__)

    put(obj, 0)
    return b"".join(out)


def unpack(data):
    end = len(data)

    def length(at):
        if at + 4 > end:
            raise ValueError("truncated message")
        return int.from_bytes(data[at:at + 4], "big"), at + 4

    def get(at, depth):
        if depth > 2 * MAX_DEPTH + 8:
            raise ValueError("message nested too deeply")
        if at >= end:
            raise ValueError("truncated message")
        tag = data[at:at + 1]
        at += 1
        if tag == b"N":
            return None, at
        if tag == b"T" or tag == b"F":
            return tag == b"T", at
        if tag == b"I" or tag == b"S":
            n, at = length(at)
            if at + n > end:
                raise ValueError("truncated message")
            raw = data[at:at + n]
            if tag == b"I":
                return int(raw.decode("ascii"), 16), at + n
            return raw.decode("utf-8", "surrogatepass"), at + n
        if tag == b"L" or tag == b"M":
            n, at = length(at)
            if n > end - at:  # every item takes at least one byte
                raise ValueError("truncated message")
            if tag == b"L":
                items = []
                for _ in range(n):
                    item, at = get(at, depth + 1)
                    items.append(item)
                return items, at
            mapping = {}
            for _ in range(n):
                key, at = get(at, depth + 1)
                if type(key) is not str:
                    raise ValueError("a message key that is not a string")
                mapping[key], at = get(at, depth + 1)
            return mapping, at
        raise ValueError("unknown tag in message")

    value, at = get(0, 0)
    if at != end:
        raise ValueError("trailing bytes in message")
    return value


# ------------------------------------------------------------------------------ the candidate's side


def candidate_main(requests_fd, answers_fd, audit_hook, work):
    """P: answers J's requests until J closes its end. Never returns. Before any of the candidate's code
    runs, every descriptor but stdout, stderr and the two pipes to J is closed: stdin (the tests wait
    there) and the report fd above all."""
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    low, high = sorted((requests_fd, answers_fd))
    os.closerange(3, low)
    os.closerange(low + 1, high)
    os.closerange(high + 1, 1 << 16)
    module = types.ModuleType("__candidate__")  # not __main__: `if __name__ == "__main__":` demos stay off
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    objects = {}  # handle -> object; P keeps every object J holds a handle to

    def encode(value, depth=0):
        if depth > MAX_DEPTH:
            raise ValueError("a value nested deeper than " + str(MAX_DEPTH))
        if value is None:
            return ["n"]
        if value is True or value is False:
            return ["T" if value else "F"]
        if isinstance(value, int):
            return ["i", format(int(value), "x")]
        if isinstance(value, float):
            return ["f", float.hex(float(value))]
        if isinstance(value, complex):
            return ["c", float.hex(value.real), float.hex(value.imag)]
        if isinstance(value, str):
            return ["s", str(value)]
        if isinstance(value, bytearray):
            return ["y", bytes(value).hex()]
        if isinstance(value, bytes):
            return ["b", bytes(value).hex()]
        tag = next((t for cls, t in containers if isinstance(value, cls)), None)
        if tag == "d":
            return ["d", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in dict.items(value)]]
        if tag is not None:
            return [tag, [encode(v, depth + 1) for v in value]]
        if isinstance(value, types.ModuleType):  # J uses its own copy of a standard module (see MODULES)
            objects[len(objects) + 1] = value
            return ["m", str(getattr(value, "__name__", "")), len(objects)]
        kind = type(value).__module__ + "." + type(value).__qualname__
        if kind == "decimal.Decimal":
            return ["D", str(value)]
        if kind == "fractions.Fraction":
            return ["Q", format(value.numerator, "x"), format(value.denominator, "x")]
        handle = len(objects) + 1
        objects[handle] = value
        return ["h", handle]

    containers = ((list, "l"), (tuple, "t"), (dict, "d"), (frozenset, "z"), (set, "S"))

    def decode(data):
        tag = data[0]
        if tag == "h":
            return objects[data[1]]
        if tag in "ltzS":
            items = [decode(v) for v in data[1]]
            return {"l": list, "t": tuple, "z": frozenset, "S": set}[tag](items)
        if tag == "d":
            return {decode(k): decode(v) for k, v in data[1]}
        return decode_plain(data)

    def target(request):
        return objects[request["handle"]]

    def error(exc):
        bases = [c.__name__ for c in type(exc).__mro__ if getattr(builtins, c.__name__, None) is c]
        try:
            text = str(exc)[:2000]
        except BaseException:
            text = "(its message could not be printed)"
        return {"error": [type(exc).__name__, bases, text]}

    def answer(request):
        op = request["op"]
        if op == "start":  # the code, then the setup; the names they defined; then the calls asked ahead
            for source, filename in request["steps"]:
                exec(compile(source, filename, "exec"), namespace)
            names = encode([(name, value) for name, value in list(namespace.items())
                            if not (name.startswith("__") and name.endswith("__"))])
            batch = []
            for name, args in request.get("ahead") or ():
                try:
                    batch.append({"value": encode(namespace[name](*[decode(a) for a in args]))})
                except BaseException as exc:
                    batch.append(error(exc))
            return {"value": names, "batch": batch}
        obj = target(request)
        if op == "call":
            args = [decode(a) for a in request["args"]]
            kwargs = {k: decode(v) for k, v in request["kwargs"].items()}
            return {"value": encode(obj(*args, **kwargs))}
        if op == "getattr":
            return {"value": encode(getattr(obj, request["attr"]))}
        if op == "setattr":
            setattr(obj, request["attr"], decode(request["value"]))
            return {"value": ["n"]}
        if op == "getitem":
            return {"value": encode(obj[decode(request["key"])])}
        if op == "contains":
            return {"value": encode(decode(request["key"]) in obj)}
        if op == "len":
            return {"value": encode(len(obj))}
        if op == "bool":
            return {"value": encode(bool(obj))}
        if op == "str":
            return {"value": encode(str(obj))}
        if op == "list":
            return {"value": encode(list(obj))}
        raise ValueError("unknown request " + repr(op))

    if audit_hook:
        install_audit_hook(work)
    while True:
        try:
            request = read_frame(requests_fd)
        except EOFError:
            os._exit(0)
        try:
            reply = answer(request)
        except BaseException as exc:
            if request.get("op") == "start":
                import traceback
                sys.__stdout__.flush()
                traceback.print_exc(file=sys.__stderr__)
            reply = error(exc)
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except BaseException:
                pass
        write_frame(answers_fd, reply)


# ------------------------------------------------------------------------------------- the judge's side


class CandidateError(Exception):
    """An exception the candidate's code raised that is no builtin exception (its name and message)."""


class CandidateExit(BaseException):
    """The candidate's code raised SystemExit, KeyboardInterrupt or GeneratorExit."""


class CandidateGone(BaseException):
    """The candidate's process ended, or answered out of protocol: the run fails."""


def decode_plain(data):
    tag = data[0]
    if tag == "n":
        return None
    if tag in ("T", "F"):
        return tag == "T"
    if tag == "i":
        return int(data[1], 16)
    if tag == "f":
        return float.fromhex(data[1])
    if tag == "c":
        return complex(float.fromhex(data[1]), float.fromhex(data[2]))
    if tag == "s" and type(data[1]) is str:
        return data[1]
    if tag == "b":
        return bytes.fromhex(data[1])
    if tag == "y":
        return bytearray.fromhex(data[1])
    if tag == "D":
        import decimal
        return decimal.Decimal(data[1])
    if tag == "Q":
        import fractions
        return fractions.Fraction(int(data[1], 16), int(data[2], 16))
    raise ValueError("unknown value tag " + repr(tag))


def judge_main(report_fd, config):
    """J: forks P, then runs the setup in P and each test here; writes the verdict to report_fd."""
    job = read_frame(0, limit=1 << 62)  # the code only: P is forked before the tests are read
    requests_read, requests_write = os.pipe()
    answers_read, answers_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(report_fd)
        candidate_main(requests_read, answers_write, config["audit_hook"], os.getcwd())
    os.close(requests_read)
    os.close(answers_write)
    tests = read_frame(0, limit=1 << 62)
    os.close(0)
    status, detail = judge(requests_write, answers_read, job["code"], tests)
    if status != "passed":
        os.close(requests_write)  # P reads EOF and exits; a P that does not is ended with the sandbox
        status, detail = why_p_ended(pid, status, detail)
    end_the_others()
    write_frame(report_fd, {"status": status, "detail": detail})
    os.close(report_fd)


def end_the_others():
    """As the namespace's PID 1, SIGKILLs every other process of the run and reaps it, so that nothing of
    the run is left when the verdict reaches the host. Outside a namespace (the opt-out) the judge is not
    PID 1 and kill(-1) would reach the user's every process: it leaves that to the host."""
    if os.getpid() != 1:
        return
    try:
        os.kill(-1, 9)  # every process of the namespace but PID 1 itself
    except OSError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def why_p_ended(pid, status, detail):
    """A signal that ended P names the status: SIGXCPU is the CPU limit, SIGKILL a memory or kill limit.
    P exits within a few ms of J closing its pipe; one still running after 100 ms is left to the
    sandbox's end."""
    import signal
    import time

    for _ in range(100):
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.001)
    else:
        return status, detail
    if not os.WIFSIGNALED(code):
        return status, detail
    sig = os.WTERMSIG(code)
    if sig == signal.SIGXCPU:
        return "timeout", "CPU limit reached (SIGXCPU)\n" + detail
    name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
    return "killed", "the candidate's process was killed by " + name + "\n" + detail


def judge(requests_fd, answers_fd, code, tests):
    def exchange(request):
        try:
            write_frame(requests_fd, request)
            return read_frame(answers_fd)
        except (EOFError, OSError) as e:
            raise CandidateGone("the candidate's process ended (" + type(e).__name__ + ")") from None
        except ValueError as e:
            raise CandidateGone("the candidate's process answered out of protocol: " + str(e)) from None

    def ask(request):
        return settle(exchange(request))

    def settle(reply):
        if not isinstance(reply, dict):
            raise CandidateGone("the candidate's process answered out of protocol")
        if "error" in reply:
            raise_candidate_error(reply["error"])
        try:
            return decode(reply["value"])
        except (KeyError, IndexError, TypeError, ValueError, RecursionError) as e:
            raise CandidateGone("the candidate's process answered out of protocol: " + repr(e)[:200]) from None

    class Remote:
        """A handle to an object of the candidate's; every operation runs in P."""
        __slots__ = ("_handle",)

        def __init__(self, handle):
            object.__setattr__(self, "_handle", handle)

        def _ask(self, op, **fields):
            return ask(dict(op=op, handle=object.__getattribute__(self, "_handle"), **fields))

        def __call__(self, *args, **kwargs):
            args = [encode(a) for a in args]
            kwargs = {str(k): encode(v) for k, v in kwargs.items()}
            answered = ahead.get((object.__getattribute__(self, "_handle"), pack(args))) if not kwargs else None
            if answered:
                return settle(answered.pop(0))
            return self._ask("call", args=args, kwargs=kwargs)

        def __getattr__(self, attr):
            return self._ask("getattr", attr=attr)

        def __setattr__(self, attr, value):
            self._ask("setattr", attr=attr, value=encode(value))

        def __getitem__(self, key):
            return self._ask("getitem", key=encode(key))

        def __contains__(self, key):
            return self._ask("contains", key=encode(key)) is True

        def __len__(self):
            n = self._ask("len")
            if type(n) is not int:
                raise TypeError("len() of the candidate's object is not an int")
            return n

        def __bool__(self):
            return self._ask("bool") is True

        def __iter__(self):
            items = self._ask("list")
            if type(items) is not list:
                raise TypeError("list() of the candidate's object is not a list")
            return iter(items)

        def __str__(self):
            text = self._ask("str")
            if type(text) is not str:
                raise TypeError("str() of the candidate's object is not a str")
            return text

        def __repr__(self):
            return "<the candidate's object #" + str(object.__getattribute__(self, "_handle")) + ">"

        def __eq__(self, other):
            return self is other  # one Remote per handle (remotes below)

        def __ne__(self, other):
            return self is not other

        def __hash__(self):
            return object.__getattribute__(self, "_handle")

    remotes = {}

    def decode(data, depth=0):
        if depth > MAX_DEPTH or type(data) is not list or not data:
            raise ValueError("malformed value")
        tag = data[0]
        if tag == "h" or tag == "m":
            handle = data[-1]
            if type(handle) is not int:
                raise ValueError("malformed handle")
            if tag == "m" and data[1] in MODULES:
                __import__(data[1])
                return sys.modules[data[1]]
            return remotes.setdefault(handle, Remote(handle))
        if tag in ("l", "t", "z", "S"):
            items = [decode(v, depth + 1) for v in data[1]]
            return {"l": list, "t": tuple, "z": frozenset, "S": set}[tag](items)
        if tag == "d":
            return {decode(k, depth + 1): decode(v, depth + 1) for k, v in data[1]}
        return decode_plain(data)

    def encode(value, depth=0):
        if depth > MAX_DEPTH:
            raise ValueError("a value nested deeper than " + str(MAX_DEPTH))
        kind = type(value)
        if kind is Remote:
            return ["h", object.__getattribute__(value, "_handle")]
        if value is None:
            return ["n"]
        if kind is bool:
            return ["T" if value else "F"]
        if kind is int:
            return ["i", format(value, "x")]
        if kind is float:
            return ["f", value.hex()]
        if kind is complex:
            return ["c", value.real.hex(), value.imag.hex()]
        if kind is str:
            return ["s", value]
        if kind is bytes:
            return ["b", value.hex()]
        if kind is bytearray:
            return ["y", bytes(value).hex()]
        tags = {list: "l", tuple: "t", frozenset: "z", set: "S"}
        if kind in tags:
            return [tags[kind], [encode(v, depth + 1) for v in value]]
        if kind is dict:
            return ["d", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]]
        if kind.__module__ + "." + kind.__qualname__ == "decimal.Decimal":
            return ["D", str(value)]
        if kind.__module__ + "." + kind.__qualname__ == "fractions.Fraction":
            return ["Q", format(value.numerator, "x"), format(value.denominator, "x")]
        if isinstance(value, (tuple, list, dict, int, str)):  # namedtuple, Counter, IntEnum of the test's
            base = next(b for b in (tuple, list, dict, int, str) if isinstance(value, b))
            return encode(base(value), depth)
        raise TypeError("the test passes a " + kind.__name__ + " to the candidate: only plain data and the "
                        "candidate's own objects cross into its process")

    allowed = set(tests.get("solution_names") or ())
    # One round trip for the code, the setup and every call of the tests whose function is a plain name
    # and whose arguments are literals (`assert candidate([1, 2], 0.5) == True`): on a busy machine each
    # hop between processes waits for a CPU. P answers them in order; the tests take the answers as they
    # make those calls, and make any other call live.
    planned = plan_calls(tests["tests"], allowed)
    ahead = {}  # (handle, packed arguments) -> [answers not yet taken]
    try:
        reply = exchange({"op": "start", "steps": [[code, "<code>"], [tests.get("setup") or "", "<setup>"]],
                          "ahead": [[name, [encode(a) for a in args]] for name, args in planned]})
        names = settle(reply)
    except (Exception, CandidateExit) as e:
        return "failed", "failed in <code> or <setup>: " + format_exception(e)
    except CandidateGone as e:
        return "failed", str(e) + ", before the tests ran"
    namespace = {"__builtins__": builtins, "__name__": "__test__"}
    for name, value in names if type(names) is list else ():
        if type(name) is not str:
            continue
        if hasattr(builtins, name) and name not in allowed:
            continue  # the builtin stays the builtin in the tests
        namespace[name] = value
    batch = reply.get("batch")
    if type(batch) is list and len(batch) == len(planned):
        for (name, args), answer in zip(planned, batch):
            if type(namespace.get(name)) is Remote:
                key = (object.__getattribute__(namespace[name], "_handle"), pack([encode(a) for a in args]))
                ahead.setdefault(key, []).append(answer)
    for i, source in enumerate(tests["tests"]):
        filename = "<test " + str(i) + ">"
        try:
            exec(compile(source, filename, "exec"), namespace)
        except CandidateGone as e:
            return "failed", str(e) + ", in " + filename + ": " + source.strip()[:200]
        except BaseException as e:
            return "failed", format_exception(e) + "sandbox: failed in " + filename + ": " + source.strip()[:200]
    return "passed", ""


MAX_CALLS_AHEAD = 200


def plan_calls(sources, allowed):
    """[(name, args)] of the calls in the tests that can be made ahead: `f(<literals>)` where f is a name
    the tests do not define (the candidate's), or a parameter of a function of the tests that they call
    with such a name (HumanEval's `def check(candidate): ...` then `check(entry_point)`). Uses the compiler's
    own AST (no `ast` import) and evaluates only literals."""
    import _ast

    planned = []
    for source in sources:
        try:
            tree = compile(source, "<test>", "exec", 0x400)  # PyCF_ONLY_AST
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        nodes = list(walk(tree))
        defined = set()
        for node in nodes:
            if isinstance(node, (_ast.FunctionDef, _ast.ClassDef, _ast.AsyncFunctionDef)):
                defined.add(node.name)
            elif isinstance(node, _ast.Name) and isinstance(node.ctx, _ast.Store):
                defined.add(node.id)
            elif isinstance(node, _ast.alias):
                defined.add((node.asname or node.name).partition(".")[0])
            elif isinstance(node, _ast.arg):
                defined.add(node.arg)
        functions = {n.name: n for n in tree.body if isinstance(n, _ast.FunctionDef)}
        bound = {}  # a parameter of a test function -> the candidate's name it is called with
        for statement in tree.body:
            call = getattr(statement, "value", None)
            if (isinstance(statement, _ast.Expr) and isinstance(call, _ast.Call) and isinstance(call.func, _ast.Name)
                    and call.func.id in functions and not call.keywords):
                params = functions[call.func.id].args.args
                for param, arg in zip(params, call.args):
                    if isinstance(arg, _ast.Name) and arg.id not in defined:
                        bound[param.arg] = arg.id
        # with arguments only: a call without any reads state more often than it computes
        calls = sorted((n for n in nodes if isinstance(n, _ast.Call) and isinstance(n.func, _ast.Name)
                        and n.args and not n.keywords), key=lambda n: (n.lineno, n.col_offset))
        for node in calls:  # in the order they are written
            name = node.func.id
            name = bound.get(name, None if name in defined else name)
            if name is None or (hasattr(builtins, name) and name not in allowed):
                continue
            try:
                args = [literal(a) for a in node.args]
            except ValueError:
                continue
            planned.append((name, args))
            if len(planned) >= MAX_CALLS_AHEAD:
                return planned
    return planned


def walk(node):
    import _ast

    todo = [node]
    while todo:
        node = todo.pop()
        yield node
        for field in node._fields:
            value = getattr(node, field, None)
            if isinstance(value, _ast.AST):
                todo.append(value)
            elif isinstance(value, list):
                todo.extend(v for v in value if isinstance(v, _ast.AST))


def literal(node, depth=0):
    """The value of a literal expression node: constants, tuples, lists, sets, dicts, signed numbers."""
    import _ast

    if depth > 50:
        raise ValueError("too deep")
    if isinstance(node, _ast.Constant) and type(node.value) in (int, float, complex, str, bytes, bool, type(None)):
        return node.value
    if isinstance(node, (_ast.Tuple, _ast.List, _ast.Set)):
        items = [literal(e, depth + 1) for e in node.elts]
        return tuple(items) if isinstance(node, _ast.Tuple) else items if isinstance(node, _ast.List) else set(items)
    if isinstance(node, _ast.Dict) and None not in node.keys:
        return {literal(k, depth + 1): literal(v, depth + 1) for k, v in zip(node.keys, node.values)}
    if isinstance(node, _ast.UnaryOp) and isinstance(node.op, (_ast.USub, _ast.UAdd)):
        value = literal(node.operand, depth + 1)
        if type(value) in (int, float, complex):
            return -value if isinstance(node.op, _ast.USub) else value
    raise ValueError("not a literal")


def raise_candidate_error(error):
    try:
        name, bases, text = error
        name, text = str(name), str(text)
    except (TypeError, ValueError):
        raise CandidateGone("the candidate's process answered out of protocol") from None
    for base in bases if isinstance(bases, list) else ():
        cls = getattr(builtins, base, None) if isinstance(base, str) else None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            if not issubclass(cls, Exception):
                raise CandidateExit(name + ": " + text)
            if cls.__name__ == name:
                raise cls(text)
            raise cls(name + ": " + text)
    raise CandidateError(name + ": " + text)


def format_exception(e):
    import traceback
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))


# ------------------------------------------------------------------------------------ the audit hook


def install_audit_hook(work):
    """A second layer inside the candidate's process (PEP 578), below the OS boundary: refuses creating
    processes, signals, sockets that connect, native code (ctypes), tracing, rlimit changes and writes
    outside the work folder. An audit hook is no boundary (native code gets past it); the namespaces,
    mounts and seccomp filter around the process are."""
    lstat, readlink, getcwd = posix.lstat, posix.readlink, posix.getcwd
    str_, bytes_, int_, isinstance_ = str, bytes, int, isinstance
    Denied = PermissionError
    write_flags = posix.O_WRONLY | posix.O_RDWR | posix.O_APPEND | posix.O_CREAT | posix.O_TRUNC
    refused = frozenset({
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
        "os.killpg", "subprocess.Popen", "os.symlink", "resource.setrlimit", "resource.prlimit",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.setprofile", "sys.settrace",
    })
    refused_modules = frozenset({"ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters"})
    writes = frozenset({"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.utime",
                        "os.truncate", "os.rename", "os.link", "os.setxattr", "os.removexattr"})

    def exact(text):
        if isinstance_(text, str_):
            text = str_.encode(text, "utf-8", "surrogateescape")
        if isinstance_(text, bytes_):
            return bytes_.decode(text, "utf-8", "surrogateescape")
        return None

    def resolve(path, depth=0):
        if depth > 40:
            raise Denied("sandbox: too many levels of symlinks")
        if not path.startswith("/"):
            path = getcwd() + "/" + path
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
                link = readlink(current)
                base = "/" + "/".join(parts[:-1])
                parts = [p for p in resolve(link if link.startswith("/") else base + "/" + link,
                                            depth + 1).split("/") if p]
        return "/" + "/".join(parts)

    def inside(path):
        return path == work or path.startswith(work + "/") or path == "/dev/null"

    def hook(event, args):
        if event == "open":
            path, flags = args[0], args[2]
            if isinstance_(path, int_) or not (isinstance_(flags, int_) and int_.__index__(flags) & write_flags):
                return
            path = exact(path)
            if path is None or not inside(resolve(path)):
                raise Denied("sandbox: writing outside the work folder is not allowed")
        elif event in refused or event.startswith("ctypes."):
            raise Denied("sandbox: " + event + " is not allowed")
        elif event == "import" and (exact(args[0]) or "").partition(".")[0] in refused_modules:
            raise Denied("sandbox: import of " + exact(args[0]) + " is not allowed")
        elif event.startswith("socket.") and event != "socket.__new__":
            raise Denied("sandbox: network (" + event + ") is not allowed")
        elif event in writes:
            path = exact(args[0]) if args else None
            if path is not None and not inside(resolve(path)):
                raise Denied("sandbox: " + event + " outside the work folder is not allowed")

    sys.addaudithook(hook)


def set_limits(limits):
    for name, soft, hard in limits:
        which = getattr(resource, name)
        current = resource.getrlimit(which)[1]
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))


if __name__ == "__main__":
    _config = unpack(bytes.fromhex(sys.argv[2]))
    set_limits(_config["limits"])
    judge_main(int(sys.argv[1]), _config)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
