"""Evaluation without training: one command for an adapter folder or a base model on a benchmark, and the
functions the trial (and so the sweep's objective at every rung) scores with.

    python -m shared.evaluate --model artifacts/trials/sql-r16 --benchmark spider --limit 200
    python -m shared.evaluate --model embedded:micro-llama --benchmark humaneval --samples 10 --k 1,10
    python -m shared.evaluate --model artifacts/trials/sql-r16 --benchmark my.jsonl --task sql --db-dir dbs/

Benchmarks by name read ../shared/data (or --data-dir, or $QLORA_SWEEP_SHARED_DATA), in their own formats:
spider (dev questions + database folder), defog (questions_gen_sqlite.csv; `;` alternatives, any one
counts; by query_category), humaneval (prompt + completion, check(entry_point)), mbpp (the official test
split, task_id 11-510). Any other value is a data file the loaders read (--task, --db-dir).

Prints execution accuracy or pass@1 (pass@k from --samples n with the unbiased estimator of Chen et al.
2021), a breakdown by category where the data has one, the untuned base beside an adapter, and writes a
JSON with every example's verdicts (--out). Scoring goes through score_predictions, as the trial's does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from shared.prompts import PLAIN, PromptFormat, prompt_format, prompt_ids

BENCHMARKS = ("spider", "defog", "humaneval", "mbpp")


def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int,
             max_prompt_tokens: int | None = None, do_sample: bool = False, temperature: float = 1.0,
             top_p: float = 1.0, progress: bool = False) -> list[str]:
    """Continuations of `prompts` (left-padded batches). Greedy unless do_sample. Prompts longer than
    max_prompt_tokens keep their last tokens (the question and the answer cue sit at the end)."""
    import torch
    from tqdm.auto import tqdm

    tokenizer.padding_side = "left"
    model.eval()
    out: list[str] = []
    steps = range(0, len(prompts), batch_size)
    for i in tqdm(steps, desc="generate", unit="batch", disable=not progress, mininterval=2.0):
        chunk = prompts[i : i + batch_size]
        enc = [prompt_ids(tokenizer, p) for p in chunk]
        if max_prompt_tokens:
            enc = [e[-max_prompt_tokens:] for e in enc]
        width = max(map(len, enc))
        pad = tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in enc], device=model.device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc], device=model.device)
        kwargs = dict(do_sample=do_sample)
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p)
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                pad_token_id=pad, eos_token_id=tokenizer.eos_token_id, **kwargs,
            )
        out += tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
    return out


def eval_loss(model, rows: list[dict], *, pad_id: int, batch_size: int) -> float:
    """Mean cross-entropy over completion tokens (prompt masked), token-weighted."""
    import torch

    from shared.train import IGNORE, autocast, pad_batch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            batch = {k: v.to(model.device) for k, v in pad_batch(rows[i : i + batch_size], pad_id).items()}
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            with autocast(model):
                total += model(**batch).loss.item() * n
            count += n
    return total / count if count else math.nan


def evaluate_split(model, tokenizer, task, task_name: str, examples: list[dict], *, split: str,
                   max_new_tokens: int, batch_size: int, max_seq_len: int, with_loss: bool,
                   fmt: PromptFormat = PLAIN) -> tuple[dict, list[dict]]:
    """Generate, extract, score. Metric names follow the split: eval/* for dev, <split>/* otherwise.

    Returns (metrics, per-example records with prompt, prediction and score detail).
    """
    from shared.train import encode_all

    prompts = [fmt.prompt(task_name, ex) for ex in examples]
    raw = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                   max_prompt_tokens=max_seq_len, progress=True)
    preds = [fmt.answer(task_name, r) for r in raw]
    scores, _ = score_predictions(task, [[p] for p in preds], examples)
    prefix = "eval" if split == "dev" else split
    metrics = {f"{prefix}/{k.split('/', 1)[1]}": v for k, v in scores.items()}
    if with_loss:
        rows, _ = encode_all(tokenizer, task_name, examples, max_seq_len, fmt)
        metrics[f"{prefix}/loss"] = eval_loss(model, rows, pad_id=tokenizer.pad_token_id, batch_size=batch_size)
    shown = zip(prompts[:20], preds[:20], examples[:20], strict=True)
    details = [{"prompt": p, "prediction": y, **task.score_one(y, ex)} for p, y, ex in shown]
    return metrics, details


# ------------------------------------------------------------------------------------- scoring, shared


def score_predictions(task, samples: list[list[str]], examples: list[dict], ks: tuple[int, ...] = (1,),
                      progress: bool = False) -> tuple[dict[str, float], list[list[dict]]]:
    """Scores n predictions per example (samples[i] belongs to examples[i]); -> (metrics, verdicts per
    example). With one sample per example the metrics are task.score's; with n, the accuracy metric is
    the mean of the unbiased pass@1, and pass@k is added for every k <= n. Examples with a category add
    <metric>/<category> keys."""
    from shared.tasks.code import pass_at_k

    n = len(samples[0]) if samples else 0
    if any(len(s) != n for s in samples) or n < 1:
        raise ValueError("every example needs the same number (>= 1) of samples")
    flat_preds = [p for s in samples for p in s]
    flat_examples = [e for e, s in zip(examples, samples, strict=True) for _ in s]
    if progress:
        from tqdm.auto import tqdm

        flat = []
        for i in tqdm(range(0, len(flat_preds), 16), desc="score", unit="x16", mininterval=2.0):
            flat += task.score_all(flat_preds[i:i + 16], flat_examples[i:i + 16])
    else:
        flat = task.score_all(flat_preds, flat_examples)
    verdicts = [flat[i * n:(i + 1) * n] for i in range(len(examples))]
    metrics = _first_sample_metrics(task, [v[0] for v in verdicts], [s[0] for s in samples])
    passed = [sum(v["correct"] for v in vs) for vs in verdicts]
    metrics[task.metric] = sum(pass_at_k(n, c, 1) for c in passed) / len(passed)
    if task.name == "sql":
        metrics[f"{task.metric}_{task.match}"] = metrics[task.metric]
    for k in ks:
        if 1 < k <= n:
            metrics[task.metric.replace("at_1", f"at_{k}") if "at_1" in task.metric else f"{task.metric}@{k}"] = (
                sum(pass_at_k(n, c, k) for c in passed) / len(passed))
    categories = sorted({str(e["category"]) for e in examples if e.get("category") is not None})
    for category in categories:
        picked = [pass_at_k(n, c, 1) for c, e in zip(passed, examples, strict=True) if str(e.get("category")) == category]
        metrics[f"{task.metric}/{category}"] = sum(picked) / len(picked)
    return metrics, verdicts


def _first_sample_metrics(task, details: list[dict], preds: list[str]) -> dict[str, float]:
    if task.name == "sql":
        from shared.tasks.sql import summarize

        return summarize(details, task.match)
    from shared.tasks.code import _parses

    n = len(details)
    return {"eval/py_pass_at_1": sum(d["correct"] for d in details) / n,
            "eval/py_syntax_ok": sum(_parses(p) for p in preds) / n}


# ------------------------------------------------------------------------------------- the command


def load_benchmark(name: str, data_dir: Path | None, task: str | None = None,
                   db_dir: str | None = None) -> tuple[str, list[dict]]:
    """(task, examples) of a named benchmark under data_dir, or of a data file."""
    from shared.config import DataConfig
    from shared.data.loaders import DataError, load_file, load_splits

    if name in BENCHMARKS:
        if data_dir is None or not data_dir.is_dir():
            raise DataError(f"benchmark {name!r} reads ../shared/data; not found (set --data-dir)")
        if name == "spider":
            return "sql", load_file(data_dir / "spider" / "dev_14db.jsonl", "sql", db_dir=data_dir / "spider" / "database")
        if name == "defog":
            root = data_dir / "defog_sql_eval"
            return "sql", load_file(root / "questions_gen_sqlite.csv", "sql", db_dir=root / "database",
                                    skip_missing_db=True)
        if name == "humaneval":
            return "code", load_file(data_dir / "humaneval" / "HumanEval.jsonl.gz", "code")
        return "code", load_splits(DataConfig(task="code", source=str(data_dir / "mbpp" / "mbpp.jsonl")))["test"]
    path = Path(name).expanduser()
    if not path.exists():
        raise DataError(f"--benchmark {name!r} is neither one of {', '.join(BENCHMARKS)} nor an existing file")
    if task is None:
        raise DataError(f"--benchmark {name}: a file needs --task sql or --task code")
    return task, load_file(path, task, db_dir=db_dir)


def _load_model(model: str, prompt: str | None = None):
    """-> (model, tokenizer, config, prompt format, is_adapter): an adapter folder (card.json, prompted as trained)
    or a base model (prompted as `prompt` says: plain or chat; default chat where the base has a chat template)."""
    from shared.config import ModelConfig, TrialConfig

    folder = Path(model).expanduser()
    if (folder / "card.json").is_file():
        from shared.artifacts import adapter_format, load_adapter, read_card

        peft_model, tokenizer, card = load_adapter(folder)
        _, cfg = read_card(folder)
        return peft_model, tokenizer, cfg, adapter_format(card, tokenizer), True
    from shared.models import load_base, load_tokenizer

    cfg = TrialConfig(model=ModelConfig(name_or_path=model))
    tokenizer = load_tokenizer(cfg.model)
    prompt = prompt or ("chat" if getattr(tokenizer, "chat_template", None) else "plain")
    return load_base(cfg.model, cfg.quantization), tokenizer, cfg, prompt_format(prompt, tokenizer), False


def _generate_samples(model, tokenizer, task_name, examples, n, args, max_seq_len,
                      fmt: PromptFormat) -> list[list[str]]:
    prompts = [fmt.prompt(task_name, ex) for ex in examples]
    runs = []
    for i in range(n):
        if n > 1:
            import torch

            torch.manual_seed(args.seed + i)
        raw = generate(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                       max_prompt_tokens=max_seq_len, do_sample=n > 1, temperature=args.temperature,
                       top_p=0.95 if n > 1 else 1.0, progress=True)
        runs.append([fmt.answer(task_name, r) for r in raw])
    return [list(s) for s in zip(*runs, strict=True)]


def main(argv=None) -> int:
    from shared.paths import shared_data_dir

    ap = argparse.ArgumentParser(prog="python -m shared.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="adapter folder (with card.json), or a base: hub id, local "
                    "folder, embedded:micro-llama")
    ap.add_argument("--benchmark", required=True, help=f"{', '.join(BENCHMARKS)}, or a data file")
    ap.add_argument("--task", choices=("sql", "code"), help="the task of a data file")
    ap.add_argument("--db-dir", help="databases of a SQL data file (<db_id>/<db_id>.sqlite or <db_id>.sqlite)")
    ap.add_argument("--data-dir", type=Path, default=None, help="where named benchmarks live (../shared/data)")
    ap.add_argument("--limit", type=int, default=None, help="the first N examples only")
    ap.add_argument("--samples", type=int, default=1, help="n samples per example (n > 1 samples at --temperature)")
    ap.add_argument("--k", default="1", help="pass@k for these k (comma-separated, each <= --samples)")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: the adapter's eval.max_new_tokens")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--match", choices=("spider", "strict"), default=None, help="SQL match mode (default: config)")
    ap.add_argument("--prompt", choices=("plain", "chat"), default=None,
                    help="a base model's prompt format (default: chat where it has a chat template); an adapter "
                    "is prompted as it was trained")
    ap.add_argument("--no-base", action="store_true", help="do not score the untuned base beside an adapter")
    ap.add_argument("--out", type=Path, default=Path("eval_verdicts.json"), help="JSON of every verdict")
    args = ap.parse_args(argv)

    from shared.config import ConfigError
    from shared.data.loaders import DataError
    from shared.prompts import PromptError
    from shared.tasks import get_task

    try:
        ks = tuple(sorted({int(k) for k in args.k.split(",") if k.strip()}))
        if args.samples < 1 or not ks or min(ks) < 1 or max(ks) > args.samples:
            raise ValueError
    except ValueError:
        print(f"error: --k {args.k!r} must be integers between 1 and --samples ({args.samples})", file=sys.stderr)
        return 2
    try:
        task_name, examples = load_benchmark(args.benchmark, args.data_dir or shared_data_dir(), args.task, args.db_dir)
        examples = examples[: args.limit] if args.limit else examples
        model, tokenizer, cfg, fmt, is_adapter = _load_model(args.model, args.prompt)
    except (ConfigError, DataError, OSError, PromptError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if task_name != cfg.data.task and is_adapter:
        print(f"note: the adapter was trained for {cfg.data.task!r}; the benchmark is {task_name!r}", file=sys.stderr)
    args.max_new_tokens = args.max_new_tokens or (cfg.eval.max_new_tokens if task_name == "sql" else 384)
    overrides = {"match": args.match} if args.match and task_name == "sql" else {}
    task = get_task(task_name, cfg.eval, **overrides)

    variants = [("adapter" if is_adapter else "model", None)]
    if is_adapter and not args.no_base:
        variants.append(("base", "disable_adapter"))
    results, verdicts = {}, {}
    for label, context in variants:
        start = time.monotonic()
        if context:
            with model.disable_adapter():
                samples = _generate_samples(model, tokenizer, task_name, examples, args.samples, args, cfg.data.max_seq_len,
                                           fmt)
        else:
            samples = _generate_samples(model, tokenizer, task_name, examples, args.samples, args, cfg.data.max_seq_len,
                                        fmt)
        metrics, per_example = score_predictions(task, samples, examples, ks, progress=True)
        metrics["seconds"] = time.monotonic() - start
        results[label] = metrics
        verdicts[label] = [[{"prediction": p, **v} for p, v in zip(s, vs, strict=True)]
                           for s, vs in zip(samples, per_example, strict=True)]
    _print_table(results)
    out = {
        "benchmark": args.benchmark, "model": args.model, "task": task_name, "examples": len(examples),
        "samples": args.samples, "match": getattr(task, "match", None), "prompt_version": fmt.version, "metrics": results,
        "verdicts": [
            {"index": i, "category": ex.get("category"), "gold": ex.get("answer") or ex.get("output"),
             **{label: verdicts[label][i] for label in results}}
            for i, ex in enumerate(examples)
        ],
    }
    args.out.write_text(json.dumps(out, indent=1, default=str))
    print(f"\nverdicts: {args.out}")
    return 0


def _print_table(results: dict[str, dict]) -> None:
    labels = list(results)
    keys = sorted({k for m in results.values() for k in m})
    width = max(map(len, keys))
    print(f"\n  {'metric':<{width}}  " + "  ".join(f"{label:>9}" for label in labels))
    for k in keys:
        cells = [results[label].get(k) for label in labels]
        print(f"  {k:<{width}}  " + "  ".join("        -" if v is None else f"{v:9.4f}" for v in cells))


if __name__ == "__main__":
    sys.exit(main())
