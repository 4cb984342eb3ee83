"""The evaluation command and the scoring it shares with the trial: pass@k, categories, an adapter beside
its base, and every verdict written out."""

import itertools
import json
import math
import sqlite3

import pytest

from shared.evaluate import main, score_predictions
from shared.paths import shared_data_dir
from shared.tasks import get_task
from shared.tasks.code import pass_at_k


def test_pass_at_k_is_the_unbiased_estimator():
    for n, c, k in [(10, 1, 1), (10, 3, 5), (5, 0, 2), (6, 6, 3), (7, 2, 7)]:
        # Brute force: the chance that a random k-subset of the n samples holds a passing one.
        subsets = list(itertools.combinations([True] * c + [False] * (n - c), k))
        assert math.isclose(pass_at_k(n, c, k), sum(any(s) for s in subsets) / len(subsets))
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


@pytest.fixture
def sql_db(tmp_path):
    path = tmp_path / "shop" / "shop.sqlite"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE item (id INTEGER, price INTEGER)")
    conn.executemany("INSERT INTO item VALUES (?, ?)", [(1, 5), (2, 7), (3, 9)])
    conn.commit()
    conn.close()
    return path


def test_score_predictions_with_samples_and_categories(sql_db):
    examples = [
        {"question": "n?", "context": "", "db_path": str(sql_db), "answer": "SELECT count(*) FROM item",
         "category": "agg"},
        {"question": "max?", "context": "", "db_path": str(sql_db), "answer": "SELECT max(price) FROM item",
         "category": "agg"},
        {"question": "ids?", "context": "", "db_path": str(sql_db), "answer": "SELECT id FROM item",
         "category": "select"},
    ]
    samples = [["SELECT count(*) FROM item", "SELECT 1"],
               ["SELECT min(price) FROM item", "SELECT 2"],
               ["SELECT id FROM item", "SELECT id FROM item"]]
    metrics, verdicts = score_predictions(get_task("sql"), samples, examples, ks=(1, 2))
    assert metrics["eval/sql_exec_acc"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert metrics["eval/sql_exec_acc@2"] == pytest.approx((1 + 0 + 1) / 3)
    assert metrics["eval/sql_exec_acc/agg"] == pytest.approx(0.25)
    assert metrics["eval/sql_exec_acc/select"] == 1.0
    assert [len(v) for v in verdicts] == [2, 2, 2] and verdicts[0][0]["correct"] and not verdicts[0][1]["correct"]
    one, _ = score_predictions(get_task("sql"), [[s[0]] for s in samples], examples)
    assert one["eval/sql_exec_acc"] == get_task("sql").score([s[0] for s in samples], examples)["eval/sql_exec_acc"]


@pytest.fixture
def sql_file(tmp_path, sql_db):
    path = tmp_path / "bench.jsonl"
    rows = [{"question": "How many items?", "db_id": "shop", "query": "SELECT count(*) FROM item"},
            {"question": "Highest price?", "db_id": "shop", "query": "SELECT max(price) FROM item"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def adapter_dir(tiny_model_dir, tmp_path):
    """An adapter folder as the trial writes it, with LoRA B still 0 (so it generates as its base does)."""
    from shared.artifacts import save_adapter
    from shared.config import load_config
    from shared.models import attach_lora, load_base, load_tokenizer

    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", "lora.rank=4"])
    model = attach_lora(load_base(cfg.model, cfg.quantization), cfg.lora, False)
    return save_adapter(model, load_tokenizer(cfg.model), cfg, {}, tmp_path / "adapter")


def test_the_command_scores_an_adapter_beside_its_base(adapter_dir, sql_file, sql_db, tmp_path, capsys):
    out = tmp_path / "verdicts.json"
    code = main(["--model", str(adapter_dir), "--benchmark", str(sql_file), "--task", "sql",
                 "--db-dir", str(sql_db.parent.parent), "--max-new-tokens", "8", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "adapter" in printed and "base" in printed and "eval/sql_exec_acc_spider" in printed
    report = json.loads(out.read_text())
    assert report["examples"] == 2 and set(report["metrics"]) == {"adapter", "base"}
    first = report["verdicts"][0]
    assert first["gold"] == "SELECT count(*) FROM item"
    assert {"prediction", "correct", "error"} <= set(first["adapter"][0]) and len(first["base"]) == 1
    # LoRA B is 0: the adapter and its base write the same text.
    assert [v["adapter"][0]["prediction"] for v in report["verdicts"]] == [
        v["base"][0]["prediction"] for v in report["verdicts"]]


@pytest.mark.parametrize("argv, words", [
    (["--benchmark", "nowhere.jsonl", "--task", "sql"], "neither"),
    (["--benchmark", "spider", "--samples", "2", "--k", "5"], "--k"),
])
def test_the_command_refuses_bad_arguments_with_a_message(argv, words, tiny_model_dir, capsys):
    assert main(["--model", str(tiny_model_dir), *argv]) == 2
    assert words in capsys.readouterr().err


@pytest.mark.shared_data
def test_the_command_runs_offline_on_humaneval(tiny_model_dir, tmp_path, capsys):
    if shared_data_dir() is None:
        pytest.skip("../shared/data is absent")
    out = tmp_path / "he.json"
    code = main(["--model", str(tiny_model_dir), "--benchmark", "humaneval", "--limit", "2",
                 "--samples", "2", "--k", "1,2", "--max-new-tokens", "8", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["task"] == "code" and len(report["verdicts"]) == 2 and len(report["verdicts"][0]["model"]) == 2
    assert "eval/py_pass_at_2" in report["metrics"]["model"]


@pytest.mark.shared_data
@pytest.mark.parametrize("name, task, count", [("spider", "sql", 751), ("defog", "sql", 190),
                                               ("humaneval", "code", 164), ("mbpp", "code", 500)])
def test_every_named_benchmark_loads_offline_in_its_own_format(name, task, count):
    from shared.evaluate import load_benchmark

    if shared_data_dir() is None:
        pytest.skip("../shared/data is absent")
    got_task, examples = load_benchmark(name, shared_data_dir())
    assert got_task == task and len(examples) == count
    if name == "mbpp":  # the official test split: task_id 11-510
        assert examples[0]["instruction"].startswith("Write a python function to remove first and last")
    if name == "defog":
        assert sum("alternatives" in e for e in examples) == 56 and all(e.get("category") for e in examples)
