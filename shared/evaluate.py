"""Greedy generation in batches, eval loss on completions, and task scoring of one split."""

from __future__ import annotations

import math

from shared.prompts import extract_answer, prompt_for


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
        enc = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in chunk]
        if tokenizer.bos_token_id is not None:
            enc = [[tokenizer.bos_token_id] + e for e in enc]
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
                   max_new_tokens: int, batch_size: int, max_seq_len: int, with_loss: bool) -> tuple[dict, list[dict]]:
    """Generate, extract, score. Metric names follow the split: eval/* for dev, <split>/* otherwise.

    Returns (metrics, per-example records with prompt, prediction and score detail).
    """
    from shared.train import encode_all

    prompts = [prompt_for(task_name, ex) for ex in examples]
    raw = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                   max_prompt_tokens=max_seq_len, progress=True)
    preds = [extract_answer(task_name, r) for r in raw]
    scores = task.score(preds, examples)
    prefix = "eval" if split == "dev" else split
    metrics = {f"{prefix}/{k.split('/', 1)[1]}": v for k, v in scores.items()}
    if with_loss:
        rows, _ = encode_all(tokenizer, task_name, examples, max_seq_len)
        metrics[f"{prefix}/loss"] = eval_loss(model, rows, pad_id=tokenizer.pad_token_id, batch_size=batch_size)
    shown = zip(prompts[:20], preds[:20], examples[:20], strict=True)
    details = [{"prompt": p, "prediction": y, **task.score_one(y, ex)} for p, y, ex in shown]
    return metrics, details
