"""One QLoRA trial, end to end, without Ray: load 4-bit base -> attach LoRA -> load data -> train ->
evaluate -> save adapter -> report.

    python -m shared.trial --config configs/sql_micro.yaml                      # the default main job
    python -m shared.trial --config configs/sql_micro_smoke.yaml lora.rank=8    # dotted overrides

Prints the metrics and the adapter folder; `run_trial` returns the same metrics. The sweep (sweeps/)
wraps `run_trial` in a Ray Tune trainable and passes `on_eval` to report at every rung.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from shared.config import ConfigError, TrialConfig, load_config, to_dict


def load_data(cfg: TrialConfig) -> dict[str, list[dict]]:
    """The splits, checked: train and every evaluated split must exist and be non-empty."""
    from shared.data.loaders import load_splits

    splits = load_splits(cfg.data)
    for name in ["train", *cfg.eval.splits]:
        if name not in splits:
            raise ConfigError(f"eval.splits: split {name!r} does not exist in data.source; it has {sorted(splits)}")
        if not splits[name]:
            raise ConfigError(f"eval.splits: split {name!r} of {cfg.data.source!r} is empty")
    return splits


def set_threads(n: int) -> int:
    """torch threads = the CPUs this process may use (Ray sets the affinity of a worker to its share)."""
    import torch

    n = n or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def evaluate_all(model, tokenizer, cfg: TrialConfig, eval_sets: dict[str, list[dict]]) -> tuple[dict, dict]:
    from shared.evaluate import evaluate_split
    from shared.prompts import prompt_format
    from shared.tasks import get_task

    fmt = prompt_format(cfg.model.prompt_format, tokenizer)
    task = get_task(cfg.data.task, cfg.eval)
    metrics, details = {}, {}
    for split, examples in eval_sets.items():
        m, d = evaluate_split(
            model, tokenizer, task, cfg.data.task, examples, split=split, max_new_tokens=cfg.eval.max_new_tokens,
            batch_size=cfg.eval.batch_size, max_seq_len=cfg.data.max_seq_len, with_loss=cfg.eval.loss, fmt=fmt,
        )
        metrics |= m
        details[split] = d
    return metrics, details


def output_folder(cfg: TrialConfig) -> Path:
    name = cfg.output.name or f"{cfg.data.task}-r{cfg.lora.rank}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.output.dir).expanduser() / name


def run_trial(cfg: TrialConfig, *, on_log: Callable[[int, dict], None] | None = None,
              on_eval: Callable[[int, dict, Callable], bool] | None = None, eval_every: int | None = None,
              eval_slice: int | None = None, folder: Path | None = None) -> dict:
    """The recipe. on_eval(step, metrics, save) gets dev metrics every eval_every steps (on the first
    eval_slice dev examples) and save(folder, metrics) to checkpoint the adapter; returning False stops
    training. Returns the final metrics, with the adapter folder under "adapter_path"."""
    import torch

    from shared.artifacts import save_adapter
    from shared.models import attach_lora, load_base, load_tokenizer
    from shared.prompts import prompt_format
    from shared.train import encode_all, train

    threads = set_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    splits = load_data(cfg)
    eval_sets = {s: splits[s][: cfg.eval.max_examples] for s in cfg.eval.splits}

    tokenizer = load_tokenizer(cfg.model)
    fmt = prompt_format(cfg.model.prompt_format, tokenizer)  # refuses "chat" for a model without a template, first
    model = load_base(cfg.model, cfg.quantization)
    model = attach_lora(model, cfg.lora, cfg.train.gradient_checkpointing)
    model.print_trainable_parameters()

    metrics: dict = {"threads": threads}
    if cfg.eval.baseline:  # the untuned base on the same slices (LoRA B starts at 0, but disable to be sure)
        with model.disable_adapter():
            base, _ = evaluate_all(model, tokenizer, cfg, eval_sets)
        metrics |= {f"base/{k}": v for k, v in base.items()}

    rows, dropped = encode_all(tokenizer, cfg.data.task, splits["train"], cfg.data.max_seq_len, fmt)
    metrics["train/examples"], metrics["train/dropped_too_long"] = len(rows), dropped

    def save(folder: Path, metrics: dict) -> Path:
        """Writes the adapter as it is now (the sweep checkpoints through this at every rung)."""
        return save_adapter(model, tokenizer, cfg, metrics, Path(folder), extra={"step": metrics.get("train/steps")})

    def rung(step: int) -> bool:
        sub = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"splits": ["dev"], "loss": True})})
        m, _ = evaluate_all(model, tokenizer, sub, {"dev": splits["dev"][: eval_slice or cfg.eval.max_examples]})
        return on_eval(step, {**m, "train/steps": step}, save) if on_eval else True

    folder = Path(folder) if folder else output_folder(cfg)

    def snapshot(step: int, seconds: float) -> None:
        save(folder / "steps" / str(step), {"train/steps": step, "train/seconds": seconds})

    result = train(
        model, rows, cfg.train, pad_id=tokenizer.pad_token_id, packing=cfg.data.packing, width=cfg.data.max_seq_len,
        on_log=on_log, on_eval=rung if on_eval else None, eval_every=eval_every, on_save=snapshot,
    )
    metrics |= {"train/steps": result["steps"], "train/seconds": result["train_seconds"]}
    if result["history"]:
        metrics["train/loss_first"] = result["history"][0]["train/loss"]
        metrics["train/loss"] = result["history"][-1]["train/loss"]

    final, details = evaluate_all(model, tokenizer, cfg, eval_sets)
    metrics |= final
    save_adapter(model, tokenizer, cfg, metrics, folder, extra={"train_history": result["history"]})
    (folder / "samples.json").write_text(json.dumps(details, indent=1))
    metrics["adapter_path"] = str(folder)
    return metrics


def print_metrics(metrics: dict) -> None:
    keys = sorted(k for k in metrics if isinstance(metrics[k], int | float))
    width = max(map(len, keys), default=10)
    for k in keys:
        v = metrics[k]
        print(f"  {k:<{width}}  {v:.4f}" if isinstance(v, float) else f"  {k:<{width}}  {v}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m shared.trial",
        description="Run one QLoRA trial (load 4-bit base, LoRA, train, evaluate, save adapter) without Ray.",
        epilog="Overrides are dotted keys, e.g. lora.rank=32 train.learning_rate=3e-3 eval.splits=[dev,test].",
    )
    ap.add_argument("--config", type=Path, help="trial YAML (see configs/); without it, the built-in defaults")
    ap.add_argument("overrides", nargs="*", help="key.sub=value pairs applied on top of the YAML")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    from shared.data.loaders import DataError

    try:
        metrics = run_trial(cfg)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\nmetrics:")
    print_metrics(metrics)
    print(f"\nadapter: {metrics['adapter_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
