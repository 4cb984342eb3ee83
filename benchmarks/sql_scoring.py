"""SQL scoring speed and agreement, side by side with the official Spider evaluator on the same predictions.

    python -m benchmarks.sql_scoring --official /path/to/test-suite-sql-eval     # ~3 min on 2 cores
    python -m benchmarks.sql_scoring --official ... --limit 100 --json-out sql_scoring.json

The official evaluator is taoyds/test-suite-sql-eval (Apache-2.0), not shipped here: clone it
(`git clone https://github.com/taoyds/test-suite-sql-eval`) and `pip install -e .[spider-eval]` (its
exec_eval.py imports sqlparse). Without --official (or $SPIDER_EVAL_DIR) only the project's rows are
measured, and the table says why the others are missing. Nothing is downloaded at run time.

Predictions: the gold of each of the 751 Spider dev questions in ../shared/data/spider plus perturbations of
it made with sqlglot (columns reversed, DISTINCT toggled, ORDER BY direction flipped, a constant changed,
the first WHERE condition dropped, LIMIT 1 added, MIN/MAX swapped, COUNT(*) -> COUNT(DISTINCT ...)).
Both scorers judge every prediction on the question's database: the project's SqlTask in the "spider"
mode, and the official `eval_exec_match` with plug_value off and keep_distinct on (as `--keep_distinct`).
Time is per example per database (one database per Spider question; 3 synthesized ones per
sql-create-context record in the last row), measured in alternating blocks of 25 predictions per scorer,
so the load of a shared machine weighs on both alike; both run the gold every time. The
official runs on a temporary copy of the databases (it opens them read-write).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from shared.paths import shared_data_dir

BLOCK = 25  # predictions per timing block (see main)


def perturbations(gold: str) -> dict[str, str]:
    """Name -> a variant of the gold query (only those that apply)."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(gold, read="sqlite")
    except Exception:  # noqa: BLE001 - a gold sqlglot cannot read gets no variants
        return {}
    out: dict[str, str] = {}

    def variant(name, change):
        t = tree.copy()
        try:
            if change(t) is not False:
                out[name] = t.sql(dialect="sqlite")
        except Exception:  # noqa: BLE001
            pass

    def columns_reversed(t):
        if not isinstance(t, exp.Select) or len(t.expressions) < 2:
            return False
        t.set("expressions", list(reversed(t.expressions)))

    def distinct_toggled(t):
        if not isinstance(t, exp.Select):
            return False
        t.set("distinct", None if t.args.get("distinct") else exp.Distinct())

    def order_flipped(t):
        if not t.args.get("order"):
            return False
        for o in t.args["order"].expressions:
            o.set("desc", not o.args.get("desc"))

    def constant_changed(t):
        lit = next(iter(t.find_all(exp.Literal)), None)
        if lit is None:
            return False
        if lit.is_string:
            lit.replace(exp.Literal.string(lit.this + "x"))
        else:
            lit.replace(exp.Literal.number(float(lit.this) + 1 if "." in lit.this else int(lit.this) + 1))

    def where_dropped(t):
        w = t.find(exp.Where)
        if w is None:
            return False
        if isinstance(w.this, exp.And):
            w.set("this", w.this.this)
        else:
            w.pop()

    def limit_added(t):
        if not isinstance(t, exp.Select) or t.args.get("limit"):
            return False
        t.set("limit", exp.Limit(expression=exp.Literal.number(1)))

    def minmax_swapped(t):
        n = t.find(exp.Max) or t.find(exp.Min)
        if n is None:
            return False
        n.replace((exp.Min if isinstance(n, exp.Max) else exp.Max)(this=n.this.copy()))

    def count_distinct(t):
        c = t.find(exp.Count)
        col = t.find(exp.Column)
        if c is None or col is None or isinstance(c.this, exp.Distinct):
            return False
        c.set("this", exp.Distinct(expressions=[col.copy()]))

    out["gold"] = gold
    for name, change in [("columns_reversed", columns_reversed), ("distinct_toggled", distinct_toggled),
                         ("order_flipped", order_flipped), ("constant_changed", constant_changed),
                         ("where_dropped", where_dropped), ("limit_added", limit_added),
                         ("minmax_swapped", minmax_swapped), ("count_distinct", count_distinct)]:
        variant(name, change)
    return out


def first_column_query(context: str) -> str:
    """The fixed wrong query `SELECT <first column> FROM <first table>` of a CREATE TABLE context."""
    import sqlglot

    table = sqlglot.parse(context, read="sqlite")[0].this
    return f"SELECT {table.expressions[0].name} FROM {table.this.name}"


def mutants(gold: str, context: str) -> dict[str, str]:
    """Near-miss mutants of a gold, named by kind: a changed constant, a dropped condition, MAX for MIN,
    another column, COUNT(DISTINCT) for COUNT, ASC for DESC with LIMIT."""
    import sqlglot
    from sqlglot import exp

    variants = perturbations(gold)
    out = {k: variants[v] for k, v in (("constant", "constant_changed"), ("dropped", "where_dropped"),
                                        ("max_min", "minmax_swapped"), ("count_distinct", "count_distinct"))
           if v in variants}
    tree = sqlglot.parse_one(gold, read="sqlite")
    if tree.args.get("limit") and tree.args.get("order") and "order_flipped" in variants:
        out["asc_desc"] = variants["order_flipped"]
    first = next(iter(tree.expressions[0].find_all(exp.Column)), None) if isinstance(tree, exp.Select) else None
    names = [c.name for c in sqlglot.parse(context, read="sqlite")[0].find_all(exp.ColumnDef)]
    other = next((n for n in names if first is not None and n.lower() != first.name.lower()), None)
    if other:
        t = tree.copy()
        next(iter(t.expressions[0].find_all(exp.Column))).set("this", exp.to_identifier(other))
        out["column"] = t.sql(dialect="sqlite")
    count = tree.find(exp.Count)
    if "count_distinct" not in out and count is not None and isinstance(count.this, exp.Star) and names:
        t = tree.copy()
        t.find(exp.Count).set("this", exp.Distinct(expressions=[exp.column(names[0])]))
        out["count_distinct"] = t.sql(dialect="sqlite")
    return out


def mutant_separation(records: list[dict], real_db) -> dict[str, tuple[int, int]]:
    """kind -> (told apart by the synthesized databases, told apart by the real one) over mutants whose
    result on the real database differs from the gold's."""
    from shared.execution.sql import has_order_by, results_match, run_query
    from shared.tasks.sql import SqlTask

    def same(db, a, b, ordered):
        x, y = run_query(db, a), run_query(db, b)
        return x.ok and y.ok and results_match(y.rows, x.rows, ordered, "spider")

    task, counts = SqlTask(), {}
    for r in records:
        ordered = has_order_by(r["answer"])
        dbs = task.databases_for(r)
        for kind, m in mutants(r["answer"], r["context"]).items():
            if same(real_db(r), r["answer"], m, ordered):
                continue
            apart = not all(same(db, r["answer"], m, ordered) for db in dbs)
            told, total = counts.get(kind, (0, 0))
            counts[kind] = (told + apart, total + 1)
    return counts


def _official(path: str | None):
    """The official exec_eval module, or (None, why)."""
    path = path or os.environ.get("SPIDER_EVAL_DIR")
    if not path:
        return None, "no --official checkout given (nor $SPIDER_EVAL_DIR)"
    if not (Path(path) / "exec_eval.py").is_file():
        return None, f"{path} holds no exec_eval.py"
    sys.path.insert(0, str(Path(path).resolve()))
    try:
        import exec_eval
    except ImportError as e:
        return None, f"exec_eval does not import ({e}); pip install -e .[spider-eval]"
    return exec_eval, None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sql_scoring", description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", help="a checkout of taoyds/test-suite-sql-eval (or $SPIDER_EVAL_DIR)")
    ap.add_argument("--limit", type=int, default=None, help="the first N Spider questions only")
    ap.add_argument("--json-out", type=Path, help="also write every figure and every disagreement here")
    args = ap.parse_args(argv)

    from shared.data.loaders import load_file
    from shared.tasks import sql as sql_task
    from shared.tasks.sql import SqlTask

    data = shared_data_dir()
    if data is None:
        print("error: ../shared/data is absent (set QLORA_SWEEP_SHARED_DATA)", file=sys.stderr)
        return 2
    examples = load_file(data / "spider" / "dev_14db.jsonl", "sql", db_dir=data / "spider" / "database")
    examples = examples[: args.limit] if args.limit else examples
    variants = [list(perturbations(ex["answer"]).values()) for ex in examples]
    # Round by round (every question's first variant, then every second one, ...), so that no block below
    # holds two predictions of one question and the gold runs for each.
    pairs = [(v[i], ex) for i in range(max(map(len, variants))) for v, ex in zip(variants, examples, strict=True)
             if i < len(v)]
    print(f"{len(pairs)} predictions over {len(examples)} Spider dev questions", file=sys.stderr)

    task = SqlTask(match="spider")
    task.score_one("SELECT 1", examples[0])  # start the worker pool: a scorer lives across evaluations
    official, why = _official(args.official)
    tmp = tempfile.TemporaryDirectory(prefix="spider-official-")
    copies: dict[str, str] = {}
    for ex in examples:  # the official opens its databases read-write: it gets copies
        if ex["db_path"] not in copies:
            dst = Path(tmp.name) / Path(ex["db_path"]).parent.name / Path(ex["db_path"]).name
            dst.parent.mkdir(exist_ok=True)
            shutil.copy(ex["db_path"], dst)
            copies[ex["db_path"]] = str(dst)

    # Timing in alternating blocks of BLOCK predictions, each scorer in turn: the load of a shared machine
    # weighs on both alike, and each scores as it does in use (the project: score_all, two predictions at
    # a time on its two workers; one prediction each in turn measured 3x for the project: a sleeping
    # worker wakes slowly on busy cores). The gold runs every time in both (the project's gold cache is
    # emptied before each block, whose predictions are of distinct questions).
    ours, theirs, ours_s, official_s = [], [], 0.0, 0.0
    for b in range(0, len(pairs), BLOCK):
        block = pairs[b:b + BLOCK]
        sql_task._GOLD_CACHE.clear()
        start = time.perf_counter()
        ours += [v["correct"] for v in task.score_all([p for p, _ in block], [ex for _, ex in block])]
        ours_s += time.perf_counter() - start
        if official is not None:
            start = time.perf_counter()
            for p, ex in block:
                theirs.append(bool(official.eval_exec_match(
                    copies[ex["db_path"]], p, ex["answer"], plug_value=False, keep_distinct=True,
                    progress_bar_for_each_datapoint=False)))
            official_s += time.perf_counter() - start
    tmp.cleanup()
    start = time.perf_counter()  # golds cached, as at every rung after the first (and for n samples)
    task.score_all([p for p, _ in pairs], [ex for _, ex in pairs])
    warm_s = (time.perf_counter() - start) / len(pairs)

    records = [json.loads(line) for line in open(data / "sql_create_context" / "spider_intersect_val.jsonl")][:200]
    synth_task = SqlTask(match="spider")
    for r in records:  # synthesis is cached by schema; building it is not scoring
        synth_task.databases_for(r)
    sql_task._GOLD_CACHE.clear()
    start = time.perf_counter()
    gold_verdicts = synth_task.score_all([r["answer"] for r in records], records)
    synth_s = (time.perf_counter() - start) / len(records) / synth_task.databases
    wrong_verdicts = synth_task.score_all([first_column_query(r["context"]) for r in records], records)

    figures = {"schema_only_gold": sum(v["correct"] for v in gold_verdicts) / len(records),
               "schema_only_wrong_query": sum(v["correct"] for v in wrong_verdicts) / len(records),
               "predictions": len(pairs), "questions": len(examples), "ours_s": ours_s / len(pairs),
               "ours_gold_cached_s": warm_s, "ours_synthesized_s": synth_s, "official": why or "ran"}
    rows = [("project, spider mode (gold run every time)", figures["ours_s"]),
            ("project, spider mode (gold results cached)", warm_s),
            ("project, 3 synthesized databases, per database", synth_s)]
    if official is not None:
        agree = sum(a == b for a, b in zip(ours, theirs, strict=True))
        differ = [{"prediction": p, "gold": ex["answer"], "project": a, "official": b}
                  for (p, ex), a, b in zip(pairs, ours, theirs, strict=True) if a != b]
        figures |= {"official_s": official_s / len(pairs), "agreement": agree / len(pairs), "disagreements": differ}
        rows.insert(0, ("official exec match (--keep_distinct)", figures["official_s"]))

    print(f"\n{'scorer':<50} {'ms / example / db':>18} {'vs official':>12}")
    for name, seconds in rows:
        ratio = f"{seconds / figures['official_s']:.2f}x" if "official_s" in figures else "-"
        print(f"{name:<50} {seconds * 1000:>18.3f} {ratio:>12}")
    if "agreement" in figures:
        print(f"\nagreement with the official exec match: {figures['agreement']:.4f} "
              f"({len(pairs) - len(figures['disagreements'])}/{len(pairs)}); "
              f"{len(figures['disagreements'])} disagreements")
        for d in figures["disagreements"][:10]:
            print(f"  project={d['project']!s:<5} official={d['official']!s:<5} {d['prediction'][:110]}")
    else:
        print(f"\nofficial evaluator: not run ({why})")

    print(f"\n{len(records)} sql-create-context records without a database, on 3 synthesized ones: gold "
          f"{figures['schema_only_gold']:.3f}, `SELECT <first column> FROM <first table>` "
          f"{figures['schema_only_wrong_query']:.3f}")
    executable = [json.loads(line) for line in open(data / "sql_create_context" / "spider_intersect_val_executable.jsonl")]
    counts = mutant_separation(executable[: args.limit] if args.limit else executable,
                               lambda r: data / "spider" / "database" / r["db_id"] / f"{r['db_id']}.sqlite")
    told, total = sum(t for t, _ in counts.values()), sum(n for _, n in counts.values())
    figures["mutants"] = {"told_apart": told, "differ_on_real_db": total, "by_kind": counts}
    print(f"\nnear-miss mutants of {len(executable[: args.limit] if args.limit else executable)} sql-create-context "
          f"golds that differ on the real Spider database, told apart by 3 synthesized databases: "
          f"{told}/{total} = {told / max(total, 1):.3f}")
    for kind, (t, n) in sorted(counts.items()):
        print(f"  {kind:<15} {t}/{n}")
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
