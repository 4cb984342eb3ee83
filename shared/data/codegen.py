"""The bundled Python task set: small function-writing tasks with unit tests, generated offline from a seed.

    from shared.data.codegen import bundled_code_splits
    splits = bundled_code_splits(seed=0)  # train 1500, dev 100, test 100 examples; ~0.4 s

Each example has the loaders' code fields: an English `instruction` naming the function and what it does,
`input` ("" or, for ~30%, an example call), `output` (the reference: one short `def`, 4-space indents),
`tests` (3 asserts) and `setup` (""). For example:

    instruction: Write a function `scale_list_by_3(items)` that returns a list with every element of items
                 multiplied by 3.
    output:      def scale_list_by_3(items):
                     return [v * 3 for v in items]
    tests:       assert scale_list_by_3([4, -2, 7]) == [12, -6, 21]  (and two more)

26 families (FAMILIES: arithmetic, strings, lists, conditionals, dicts) each draw a function name, argument
names and constants, so dev and test hold new names and constants of the same families: they measure
whether a model learned the templates. The code is kept short and regular so that a tiny model can learn it
in a brief fine-tune; this file does not measure how brief.
Test expectations come from running the reference on drawn arguments (it is our own code, exec'd
in-process), and each reference is checked against its tests before it is returned. Instructions are
unique across the splits.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass

NUM_ARGS = ("x", "n", "num", "value", "a")
LIST_ARGS = ("items", "nums", "values", "xs", "numbers", "data")
STR_ARGS = ("s", "text", "word", "name")
DICT_ARGS = ("d", "table", "scores", "prices")
WORDS = (
    "apple",
    "river",
    "stone",
    "cloud",
    "tiger",
    "lemon",
    "piano",
    "robot",
    "pixel",
    "ocean",
    "maple",
    "candle",
    "rocket",
    "garden",
    "silver",
    "violet",
    "banana",
    "level",
    "hello",
    "zebra",
)
AFFIXES = (
    "re",
    "un",
    "pre",
    "sub",
    "ing",
    "ed",
    "er",
    "ly",
    "less",
    "ful",
    "ness",
    "dis",
    "mis",
    "over",
    "out",
)
FRUITS = ("apple", "pear", "plum", "fig", "kiwi", "lime", "mango", "peach")
TESTS_PER_EXAMPLE = 3
EXAMPLE_INPUT_RATE = 0.3  # share of examples whose `input` shows one call (never one of the tests)
MAX_DRAWS = 200  # draws of a family before it counts as exhausted (every name/constant combination used)


@dataclass(frozen=True)
class _Task:
    name: str  # the function the tests call
    instruction: str
    code: str
    draw: Callable[[random.Random], tuple]  # the arguments of one call


def bundled_code_splits(seed: int = 0, n_train: int = 1500, n_dev: int = 100, n_test: int = 100) -> dict:
    """{"train", "dev", "test"} -> examples; the same seed gives the same data on every machine."""
    rng = random.Random(seed)
    examples = _unique_examples(rng, n_train + n_dev + n_test)
    rng.shuffle(examples)
    return {
        "train": examples[n_dev + n_test :],
        "dev": examples[:n_dev],
        "test": examples[n_dev : n_dev + n_test],
    }


def _unique_examples(rng: random.Random, total: int) -> list[dict]:
    """Round-robin over the families, so each holds about total/26 examples, skipping seen instructions."""
    seen: set[str] = set()
    exhausted: set[int] = set()
    examples: list[dict] = []
    turn = 0
    while len(examples) < total:
        if len(exhausted) == len(FAMILIES):
            raise ValueError(f"the {len(FAMILIES)} families hold fewer than {total} distinct tasks")
        index = turn % len(FAMILIES)
        turn += 1
        if index in exhausted:
            continue
        for _ in range(MAX_DRAWS):
            task = FAMILIES[index](rng)
            if task.instruction not in seen:
                seen.add(task.instruction)
                examples.append(_example(task, rng))
                break
        else:
            exhausted.add(index)
    return examples


def _example(task: _Task, rng: random.Random) -> dict:
    namespace: dict = {}
    exec(task.code, namespace)  # noqa: S102 -- our own reference code
    function = namespace[task.name]
    for _ in range(MAX_DRAWS):
        calls = _distinct_calls(task, rng, TESTS_PER_EXAMPLE + 1)
        results = [function(*copy.deepcopy(args)) for args in calls]
        if (
            len({repr(r) for r in results[:TESTS_PER_EXAMPLE]}) > 1
        ):  # tests that all expect one value prove little
            break
    else:
        raise RuntimeError(f"{task.name}: could not draw tests with different expected values")
    tests = [
        f"assert {task.name}({_call_args(a)}) == {r!r}" for a, r in zip(calls, results[:TESTS_PER_EXAMPLE], strict=False)
    ]
    example_call = f"For example, {task.name}({_call_args(calls[-1])}) returns {results[-1]!r}."
    example = {
        "instruction": task.instruction,
        "input": example_call if rng.random() < EXAMPLE_INPUT_RATE else "",
        "output": task.code,
        "tests": tests,
        "setup": "",
    }
    _verify(example)
    return example


def _distinct_calls(task: _Task, rng: random.Random, n: int) -> list[tuple]:
    calls: dict[str, tuple] = {}
    for _ in range(MAX_DRAWS):
        args = task.draw(rng)
        calls.setdefault(repr(args), args)
        if len(calls) == n:
            return list(calls.values())
    raise RuntimeError(f"{task.name}: could not draw {n} different calls")


def _call_args(args: tuple) -> str:
    return ", ".join(repr(a) for a in args)


def _verify(example: dict) -> None:
    """Runs the reference against its own tests: a generator bug fails here, not in a training run."""
    namespace: dict = {}
    exec(example["setup"], namespace)  # noqa: S102 -- all three are our own generated code
    exec(example["output"], namespace)  # noqa: S102
    for test in example["tests"]:
        try:
            exec(test, namespace)  # noqa: S102
        except AssertionError:
            raise RuntimeError(f"reference fails its own test {test!r}:\n{example['output']}") from None


def _tag(k: int) -> str:
    """A number as part of a name: 3 -> '3', -3 -> 'minus_3'."""
    return str(k) if k >= 0 else f"minus_{-k}"


def _ints(r: random.Random, lo: int = -10, hi: int = 20, size: tuple[int, int] = (3, 6)) -> list[int]:
    return [r.randint(lo, hi) for _ in range(r.randint(*size))]


def _letters(r: random.Random, alphabet: str, size: tuple[int, int] = (3, 8)) -> str:
    return "".join(r.choice(alphabet) for _ in range(r.randint(*size)))


def _def(name: str, args: str, *body: str) -> str:
    return f"def {name}({args}):\n" + "".join(f"    {line}\n" for line in body)


# --------------------------------------------------------------------------------------------- arithmetic


def _add(rng):
    k, x = rng.randint(1, 20), rng.choice(NUM_ARGS)
    name = rng.choice((f"add_{k}", f"plus_{k}", f"increase_by_{k}"))
    return _Task(
        name,
        f"Write a function `{name}({x})` that returns {x} plus {k}.",
        _def(name, x, f"return {x} + {k}"),
        lambda r: (r.randint(-20, 50),),
    )


def _subtract(rng):
    k, x = rng.randint(1, 20), rng.choice(NUM_ARGS)
    name = rng.choice((f"minus_{k}", f"subtract_{k}", f"decrease_by_{k}"))
    return _Task(
        name,
        f"Write a function `{name}({x})` that returns {x} minus {k}.",
        _def(name, x, f"return {x} - {k}"),
        lambda r: (r.randint(-20, 50),),
    )


def _multiply(rng):
    k, x = rng.randint(2, 12), rng.choice(NUM_ARGS)
    name = rng.choice((f"times_{k}", f"multiply_by_{k}", f"scale_by_{k}"))
    return _Task(
        name,
        f"Write a function `{name}({x})` that returns {x} multiplied by {k}.",
        _def(name, x, f"return {x} * {k}"),
        lambda r: (r.randint(-20, 30),),
    )


def _affine(rng):
    a, b, x = rng.randint(2, 9), rng.randint(1, 15), rng.choice(NUM_ARGS)
    stem, suffix = rng.choice(("linear", "transform", "compute", "formula")), rng.choice(("value", "result"))
    name = f"{stem}_{suffix}"
    return _Task(
        name,
        f"Write a function `{name}({x})` that returns {x} times {a} plus {b}.",
        _def(name, x, f"return {x} * {a} + {b}"),
        lambda r: (r.randint(-10, 20),),
    )


def _divisible(rng):
    k, x = rng.randint(2, 12), rng.choice(NUM_ARGS)
    name = rng.choice((f"is_multiple_of_{k}", f"divisible_by_{k}", f"is_divisible_by_{k}"))
    return _Task(
        name,
        f"Write a function `{name}({x})` that returns True if {x} is divisible by {k}, otherwise False.",
        _def(name, x, f"return {x} % {k} == 0"),
        lambda r: (r.randint(0, 12) * k if r.random() < 0.5 else r.randint(1, 100),),
    )


def _distance(rng):
    k, x = rng.randint(-10, 30), rng.choice(NUM_ARGS)
    name = rng.choice((f"distance_to_{_tag(k)}", f"gap_from_{_tag(k)}", f"how_far_from_{_tag(k)}"))
    return _Task(
        name,
        f"Write a function `{name}({x})` that returns the absolute difference between {x} and {k}.",
        _def(name, x, f"return abs({x} - {k})"),
        lambda r: (r.randint(-20, 40),),
    )


# --------------------------------------------------------------------------------------------- strings


_CASE_OPS = {
    "upper": ("in upper case", "{s}.upper()", ("to_upper", "shout", "upper_case", "make_upper", "all_caps")),
    "lower": ("in lower case", "{s}.lower()", ("to_lower", "lower_case", "make_lower", "quiet", "downcase")),
    "reverse": ("reversed", "{s}[::-1]", ("reverse", "flip", "mirror", "backwards", "invert")),
}


def _case(rng):
    op, s = rng.choice(sorted(_CASE_OPS)), rng.choice(STR_ARGS)
    phrase, expr, verbs = _CASE_OPS[op]
    name = rng.choice(verbs) + rng.choice(("", "_text", "_word", "_string"))
    return _Task(
        name,
        f"Write a function `{name}({s})` that returns the string {s} {phrase}.",
        _def(name, s, "return " + expr.format(s=s)),
        lambda r: (_random_case(r)(r.choice(WORDS)),),
    )


def _random_case(r: random.Random) -> Callable[[str], str]:
    return r.choice((str.lower, str.title, str.upper))


def _count_char(rng):
    c, s = rng.choice("aeioulnrst"), rng.choice(STR_ARGS)
    name = rng.choice((f"count_{c}", f"how_many_{c}", f"tally_{c}"))
    return _Task(
        name,
        f"Write a function `{name}({s})` that returns how many times the letter '{c}' appears in {s}.",
        _def(name, s, f'return {s}.count("{c}")'),
        lambda r: (_letters(r, c * 3 + "abdemot"),),
    )


def _repeat(rng):
    k, s = rng.randint(2, 9), rng.choice(STR_ARGS)
    name = rng.choice((f"repeat_{k}", f"copy_{k}_times", f"echo_{k}"))
    return _Task(
        name,
        f"Write a function `{name}({s})` that returns {s} repeated {k} times.",
        _def(name, s, f"return {s} * {k}"),
        lambda r: (_letters(r, "abcxyz", (1, 3)),),
    )


def _affix(rng):
    w, s, prefix = rng.choice(AFFIXES), rng.choice(STR_ARGS), rng.random() < 0.5
    if prefix:
        name = rng.choice((f"add_prefix_{w}", f"prepend_{w}"))
        what, expr = "at the start", f'"{w}" + {s}'
    else:
        name = rng.choice((f"add_suffix_{w}", f"append_{w}"))
        what, expr = "at the end", f'{s} + "{w}"'
    return _Task(
        name,
        f"Write a function `{name}({s})` that returns {s} with '{w}' added {what}.",
        _def(name, s, f"return {expr}"),
        lambda r: (r.choice(WORDS),),
    )


def _slice(rng):
    k, s, first = rng.randint(1, 6), rng.choice(STR_ARGS), rng.random() < 0.5
    if first:
        name, what, expr = rng.choice((f"first_{k}_chars", f"head_{k}", f"start_{k}")), "first", f"{s}[:{k}]"
    else:
        name, what, expr = rng.choice((f"last_{k}_chars", f"tail_{k}", f"end_{k}")), "last", f"{s}[-{k}:]"
    return _Task(
        name,
        f"Write a function `{name}({s})` that returns the {what} {k} characters of {s}.",
        _def(name, s, f"return {expr}"),
        lambda r: (
            _letters(r, "abcdefghijklmnop", (k, k + 5)),
        ),  # mostly longer than k, or `return s` passes
    )


def _starts_with(rng):
    w, s, start = rng.choice(AFFIXES), rng.choice(STR_ARGS), rng.random() < 0.5
    if start:
        name, what, method = rng.choice((f"starts_with_{w}", f"has_prefix_{w}")), "starts", "startswith"
    else:
        name, what, method = rng.choice((f"ends_with_{w}", f"has_suffix_{w}")), "ends", "endswith"

    def draw(r):
        word = r.choice(WORDS)
        if r.random() < 0.5:
            word = w + word if start else word + w
        return (word,)

    return _Task(
        name,
        f"Write a function `{name}({s})` that returns True if {s} {what} with '{w}', otherwise False.",
        _def(name, s, f'return {s}.{method}("{w}")'),
        draw,
    )


# --------------------------------------------------------------------------------------------- lists


def _sum_above(rng):
    t, xs = rng.randint(-5, 10), rng.choice(LIST_ARGS)
    name = rng.choice((f"sum_above_{_tag(t)}", f"total_over_{_tag(t)}"))
    return _Task(
        name,
        f"Write a function `{name}({xs})` that returns the sum of the elements of {xs} that "
        f"are greater than {t}.",
        _def(name, xs, f"return sum(v for v in {xs} if v > {t})"),
        lambda r: (_ints(r),),
    )


def _count_above(rng):
    t, xs = rng.randint(-5, 10), rng.choice(LIST_ARGS)
    name = rng.choice((f"count_above_{_tag(t)}", f"how_many_over_{_tag(t)}"))
    return _Task(
        name,
        f"Write a function `{name}({xs})` that returns how many elements of {xs} are greater than {t}.",
        _def(name, xs, f"return len([v for v in {xs} if v > {t}])"),
        lambda r: (_ints(r),),
    )


def _extreme(rng):
    xs = rng.choice(LIST_ARGS)
    if rng.random() < 0.5:
        what, fn, stems = "largest", "max", ("largest", "biggest", "max_value", "highest", "top_value")
    else:
        what, fn, stems = "smallest", "min", ("smallest", "lowest", "min_value", "least", "bottom_value")
    stem = rng.choice(stems)
    name = stem + rng.choice(("", "_item", "_element", "_of_list"))
    return _Task(
        name,
        f"Write a function `{name}({xs})` that returns the {what} element of {xs}.",
        _def(name, xs, f"return {fn}({xs})"),
        lambda r: (_ints(r),),
    )


def _filter_divisible(rng):
    k, xs, keep = rng.randint(2, 7), rng.choice(LIST_ARGS), rng.random() < 0.5
    if keep:
        name, what, op = rng.choice((f"keep_multiples_of_{k}", f"only_divisible_by_{k}")), "are", "=="
    else:
        name, what, op = rng.choice((f"drop_multiples_of_{k}", f"remove_divisible_by_{k}")), "are not", "!="
    return _Task(
        name,
        f"Write a function `{name}({xs})` that returns a list of the elements of {xs} that "
        f"{what} divisible by {k}, in order.",
        _def(name, xs, f"return [v for v in {xs} if v % {k} {op} 0]"),
        lambda r: (_ints(r, 0, 30, (3, 7)),),
    )


def _map_op(rng):
    k, xs = rng.randint(2, 10), rng.choice(LIST_ARGS)
    if rng.random() < 0.5:
        name, what, op = rng.choice((f"multiply_each_by_{k}", f"scale_list_by_{k}")), "multiplied by", "*"
    else:
        name, what, op = rng.choice((f"add_to_each_{k}", f"shift_all_by_{k}")), "increased by", "+"
    return _Task(
        name,
        f"Write a function `{name}({xs})` that returns a list with every element of {xs} {what} {k}.",
        _def(name, xs, f"return [v {op} {k} for v in {xs}]"),
        lambda r: (_ints(r),),
    )


def _index_of(rng):
    xs, target = rng.choice(LIST_ARGS), rng.choice(("target", "value", "x", "key"))
    missing = rng.choice((-1, None))
    name = rng.choice(("index_of", "find_index", "position_of", "locate"))

    def draw(r):
        items = _ints(r, 0, 9)
        return items, (r.choice(items) if r.random() < 0.6 else r.randint(0, 12))

    return _Task(
        name,
        f"Write a function `{name}({xs}, {target})` that returns the index of the first "
        f"occurrence of {target} in {xs}, or {missing} if it is not there.",
        _def(
            name,
            f"{xs}, {target}",
            f"if {target} in {xs}:",
            f"    return {xs}.index({target})",
            f"return {missing}",
        ),
        draw,
    )


# --------------------------------------------------------------------------------------------- conditionals


_LABELS = (
    ("high", "low", "equal"),
    ("above", "below", "same"),
    ("up", "down", "level"),
    ("more", "less", "even"),
)


def _classify(rng):
    t, x, (hi, lo, eq) = rng.randint(-10, 10), rng.choice(NUM_ARGS), rng.choice(_LABELS)
    name = rng.choice((f"compare_to_{_tag(t)}", f"classify_{_tag(t)}", f"rank_against_{_tag(t)}"))
    return _Task(
        name,
        f'Write a function `{name}({x})` that returns "{hi}" if {x} is greater than {t}, '
        f'"{lo}" if {x} is less than {t}, and "{eq}" otherwise.',
        _def(
            name,
            x,
            f"if {x} > {t}:",
            f'    return "{hi}"',
            f"if {x} < {t}:",
            f'    return "{lo}"',
            f'return "{eq}"',
        ),
        lambda r: (t if r.random() < 0.3 else r.randint(t - 10, t + 10),),
    )


def _clamp(rng):
    lo, x = rng.randint(-10, 5), rng.choice(NUM_ARGS)
    hi = lo + rng.randint(3, 15)
    name = rng.choice(("clamp", "limit", "bound", "restrict", "clip")) + rng.choice(("", "_value", "_number"))
    return _Task(
        name,
        f"Write a function `{name}({x})` that returns {x} limited to the range {lo} to {hi}: "
        f"{lo} if {x} is below {lo}, {hi} if {x} is above {hi}, else {x}.",
        _def(name, x, f"return max({lo}, min({hi}, {x}))"),
        lambda r: (r.randint(lo - 10, hi + 10),),
    )


_FIZZ_WORDS = ("Fizz", "Buzz", "Foo", "Bar", "Ping", "Pong", "Zip", "Zap")


def _fizz_buzz(rng):
    a, b = rng.choice(((2, 3), (2, 5), (3, 4), (3, 5), (2, 7), (3, 7), (4, 5), (5, 7)))
    wa, wb = rng.sample(_FIZZ_WORDS, 2)
    n = rng.choice(("n", "num", "x"))
    name = rng.choice(("fizz_buzz", "label_number", "say_number", "word_for")) + rng.choice(("", "_game"))
    return _Task(
        name,
        f'Write a function `{name}({n})` that returns "{wa}{wb}" if {n} is divisible by both '
        f'{a} and {b}, "{wa}" if only by {a}, "{wb}" if only by {b}, and otherwise {n} as a string.',
        _def(
            name,
            n,
            f"if {n} % {a * b} == 0:",
            f'    return "{wa}{wb}"',
            f"if {n} % {a} == 0:",
            f'    return "{wa}"',
            f"if {n} % {b} == 0:",
            f'    return "{wb}"',
            f"return str({n})",
        ),
        lambda r: (
            r.choice((a * b * r.randint(1, 3), a * r.randint(1, 9), b * r.randint(1, 9), r.randint(1, 60))),
        ),
    )


def _between(rng):
    lo, x = rng.randint(-10, 10), rng.choice(NUM_ARGS)
    hi = lo + rng.randint(2, 12)
    name = rng.choice(("in_range", "is_between", "within_bounds", "inside")) + rng.choice(("", "_limits"))
    return _Task(
        name,
        f"Write a function `{name}({x})` that returns True if {x} is between {lo} and {hi} "
        "(inclusive), otherwise False.",
        _def(name, x, f"return {lo} <= {x} <= {hi}"),
        lambda r: (r.randint(lo - 5, hi + 5),),
    )


# --------------------------------------------------------------------------------------------- dicts


def _letter_counts(rng):
    letters, s = "".join(sorted(rng.sample("aeiourst", rng.randint(2, 3)))), rng.choice(STR_ARGS)
    quoted = ", ".join(f"'{c}'" for c in letters[:-1]) + f" and '{letters[-1]}'"
    name = rng.choice(("letter_counts", "count_letters", "tally_letters", "letter_frequency"))
    return _Task(
        name,
        f"Write a function `{name}({s})` that returns a dictionary counting how many times "
        f"each of the letters {quoted} appears in {s}, leaving out letters that do not appear.",
        _def(
            name,
            s,
            "counts = {}",
            f"for ch in {s}:",
            f'    if ch in "{letters}":',
            "        counts[ch] = counts.get(ch, 0) + 1",
            "return counts",
        ),
        lambda r: (_letters(r, letters + "bcmnp", (3, 9)),),
    )


def _get_default(rng):
    d, key, k = rng.choice(DICT_ARGS), rng.choice(("key", "name", "item")), rng.randint(-1, 20)
    name = rng.choice(("lookup", "get_or_default", "value_of", "fetch"))

    def draw(r):
        table = {fruit: r.randint(0, 50) for fruit in r.sample(FRUITS, r.randint(2, 4))}
        return table, (r.choice(sorted(table)) if r.random() < 0.6 else r.choice(FRUITS))

    return _Task(
        name,
        f"Write a function `{name}({d}, {key})` that returns the value stored under {key} in the "
        f"dictionary {d}, or {k} if {key} is not in {d}.",
        _def(name, f"{d}, {key}", f"return {d}.get({key}, {k})"),
        draw,
    )


def _keys_above(rng):
    t, d = rng.randint(0, 20), rng.choice(DICT_ARGS)
    name = rng.choice((f"keys_above_{t}", f"over_{t}_keys", f"names_over_{t}"))
    return _Task(
        name,
        f"Write a function `{name}({d})` that returns a list of the keys of {d} whose values "
        f"are greater than {t}, in the dictionary's order.",
        _def(name, d, f"return [key for key, v in {d}.items() if v > {t}]"),
        lambda r: ({fruit: r.randint(0, 40) for fruit in r.sample(FRUITS, r.randint(2, 5))},),
    )


def _dict_map(rng):
    k, xs = rng.randint(2, 9), rng.choice(LIST_ARGS)
    name = rng.choice((f"times_{k}_table", f"multiples_map_{k}", f"scaled_dict_{k}"))
    return _Task(
        name,
        f"Write a function `{name}({xs})` that returns a dictionary mapping each element of "
        f"{xs} to that element multiplied by {k}.",
        _def(name, xs, f"return {{v: v * {k} for v in {xs}}}"),
        lambda r: (_ints(r, -5, 15, (2, 5)),),
    )


FAMILIES: tuple[Callable[[random.Random], _Task], ...] = (
    _add,
    _subtract,
    _multiply,
    _affine,
    _divisible,
    _distance,
    _case,
    _count_char,
    _repeat,
    _affix,
    _slice,
    _starts_with,
    _sum_above,
    _count_above,
    _extreme,
    _filter_divisible,
    _map_op,
    _index_of,
    _classify,
    _clamp,
    _fizz_buzz,
    _between,
    _letter_counts,
    _get_default,
    _keys_above,
    _dict_map,
)
