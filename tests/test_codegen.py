"""The bundled Python task set: deterministic, disjoint splits, and references that pass their own tests."""

from __future__ import annotations

import re

import pytest

from shared.data.codegen import FAMILIES, bundled_code_splits


@pytest.fixture(scope="module")
def splits():
    return bundled_code_splits(seed=0)


def _all(splits):
    return [ex for name in ("train", "dev", "test") for ex in splits[name]]


def test_default_sizes(splits):
    assert {name: len(rows) for name, rows in splits.items()} == {"train": 1500, "dev": 100, "test": 100}


def test_same_seed_same_data_and_other_seed_other_data(splits):
    assert bundled_code_splits(seed=0) == splits
    other = bundled_code_splits(seed=1, n_train=100, n_dev=10, n_test=10)
    assert other == bundled_code_splits(seed=1, n_train=100, n_dev=10, n_test=10)
    assert other["test"] != bundled_code_splits(seed=2, n_train=100, n_dev=10, n_test=10)["test"]


def test_splits_share_no_instruction(splits):
    instructions = [ex["instruction"] for ex in _all(splits)]
    assert len(set(instructions)) == len(instructions)


def test_fields_and_types(splits):
    for ex in _all(splits):
        assert list(ex) == ["instruction", "input", "output", "tests", "setup"]
        name = re.match(r"def (\w+)\(", ex["output"]).group(1)
        assert f"`{name}(" in ex["instruction"]
        assert isinstance(ex["input"], str) and ex["setup"] == ""
        assert "\t" not in ex["output"] and ex["output"].endswith("\n")
        body = ex["output"].splitlines()[1:]
        assert body and all(
            line.startswith("    ") and (len(line) - len(line.lstrip())) % 4 == 0 for line in body
        )
        assert len(ex["tests"]) == 3 and all(t.startswith(f"assert {name}(") for t in ex["tests"])
        if ex["input"]:  # an example call, never one of the tests
            assert ex["input"].startswith(f"For example, {name}(")
            call = ex["input"][len("For example, ") :].split(" returns ")[0]
            assert all(not t.startswith(f"assert {call} ==") for t in ex["tests"])


def test_every_reference_passes_its_tests(splits):
    for ex in _all(splits):
        namespace: dict = {}
        exec(ex["setup"], namespace)  # noqa: S102 -- our own reference code
        exec(ex["output"], namespace)  # noqa: S102
        for test in ex["tests"]:
            exec(test, namespace)  # noqa: S102


def test_tests_reject_a_stub(splits):
    """Three tests with at least two expected values: a function returning a constant fails one."""
    for ex in _all(splits):
        name = re.match(r"def (\w+)\(", ex["output"]).group(1)
        for constant in (None, 0, "", [], True, False):
            namespace = {name: lambda *args, c=constant: c}
            failed = False
            for test in ex["tests"]:
                try:
                    exec(test, namespace)  # noqa: S102
                except AssertionError:
                    failed = True
            assert failed, (ex["output"], constant)


def test_test_split_spans_the_families(splits):
    """dev/test draw from the same families as train: here, by their code's first statement's shape."""

    def shape(ex):
        return re.sub(r"\b\w+\b", "w", ex["output"].splitlines()[1])

    train_shapes = {shape(ex) for ex in splits["train"]}
    test_shapes = {shape(ex) for ex in splits["test"]}
    assert test_shapes <= train_shapes
    assert len(test_shapes) >= len(FAMILIES) // 2
