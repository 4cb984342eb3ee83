"""Python code, scored by running each example's unit tests on the prediction in the sandbox
(shared/execution/python.py; read its docstring for what it does and does not contain).

    task = CodeTask(timeout_s=5.0)
    task.score(["def add(a, b):\n    return a + b"], [{"instruction": ..., "input": "", "output": ...,
                                                      "tests": ["assert add(1, 2) == 3"]}])
    # {"eval/py_pass_at_1": 1.0, "eval/py_syntax_ok": 1.0}

An example is the loaders' normalized dict: instruction, input (may be ""), output (reference code), tests
(assert statements) and optionally setup (test setup, run after the code and before the tests). One sample per
example, so pass@1 is the fraction whose tests all pass.
"""

from __future__ import annotations

import ast
import warnings
from concurrent.futures import ThreadPoolExecutor

from shared.execution.python import run_tests


class CodeTask:
    name = "code"
    metric = "eval/py_pass_at_1"

    def __init__(self, timeout_s: float = 5.0, memory_mb: int = 512, workers: int = 2):
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.workers = workers  # each run is a subprocess; 2 keeps a shared CPU usable for training

    def score_one(self, prediction: str, example: dict) -> dict:
        """{"correct", "status" ("passed" | "failed" | "timeout" | "error" | "killed"), "detail"}."""
        result = run_tests(
            prediction, example["tests"], setup=example.get("setup") or "",
            timeout_s=self.timeout_s, memory_mb=self.memory_mb,
            solution_names=_defined_names(example.get("output") or ""),
        )
        return {"correct": result.passed, "status": result.status, "detail": result.detail}

    def score(self, predictions: list[str], examples: list[dict]) -> dict[str, float]:
        if len(predictions) != len(examples):
            raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
        if not examples:
            raise ValueError("nothing to score: no examples")
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            details = list(pool.map(self.score_one, predictions, examples))
        n = len(details)
        return {
            "eval/py_pass_at_1": sum(d["correct"] for d in details) / n,
            "eval/py_syntax_ok": sum(_parses(p) for p in predictions) / n,
        }


def _defined_names(reference: str) -> frozenset[str]:
    """The functions and classes the reference solution defines: where one shadows a builtin (MBPP task
    126's `sum`), the tests mean the solution's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
        try:
            tree = ast.parse(reference)
        except (SyntaxError, ValueError):
            return frozenset()
    return frozenset(node.name for node in tree.body
                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))


def _parses(code: str) -> bool:
    with warnings.catch_warnings():  # invalid escapes like "\w" warn, and still parse
        warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
        try:
            ast.parse(code)
        except (SyntaxError, ValueError):  # ValueError: null bytes in the source
            return False
    return True
