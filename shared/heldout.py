"""Scoring adapters on a held-out slice after the search, and the statistics that decide with those scores.

Two decisions use them. The winner (sweeps/run.py): the top trials re-scored on a larger dev slice than the
rungs saw, the winner being the one with the best lower confidence bound of its accuracy, so a trial lucky on
a 16-200 example slice does not win by its luck. Promotion (shared/promotion.py): a candidate replaces the served
adapter only if it beats it on a frozen held-out set (the test split's first N examples, the same for both
adapters, its digest recorded) by a paired test.

    wilson(k, n, 0.95)                 binomial interval of an accuracy k/n
    paired_test(cand, current, 0.05)   exact one-sided sign test on the discordant pairs, and the interval of
                                       the accuracy difference
"""

from __future__ import annotations

import hashlib
import json
import math
from statistics import NormalDist


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n: unlike k/n +- z*se it stays inside [0, 1] and is
    not empty at 0 or n (0 right of 16 gives [0, 0.19] at 95%, not [0, 0])."""
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_test(candidate: list[bool], current: list[bool], level: float = 0.05) -> dict:
    """Is the candidate better than the current adapter on the same examples? Only the discordant pairs carry
    information: b = candidate right and current wrong, c = the reverse. Under "no better", b ~ Binomial(b + c,
    1/2); p = P(X >= b) (exact, one-sided). better: p < level and b > c. The difference in accuracy
    (b - c) / n gets a Wald interval for paired proportions at 1 - 2 x level (the two-sided interval whose
    lower end matches the one-sided test); it is approximate with few discordant pairs."""
    if len(candidate) != len(current) or not candidate:
        raise ValueError(f"paired test: {len(candidate)} and {len(current)} scores; need the same examples, at least one")
    n = len(candidate)
    b = sum(1 for x, y in zip(candidate, current, strict=True) if x and not y)
    c = sum(1 for x, y in zip(candidate, current, strict=True) if y and not x)
    m = b + c
    p_value = sum(math.comb(m, i) for i in range(b, m + 1)) / 2**m if m else 1.0
    diff = (b - c) / n
    se = math.sqrt(max(0.0, (b + c) / n - diff * diff) / n)
    z = NormalDist().inv_cdf(1 - level)
    return {
        "n": n, "candidate_acc": sum(candidate) / n, "current_acc": sum(current) / n,
        "candidate_only": b, "current_only": c, "difference": diff,
        "interval": [diff - z * se, diff + z * se], "confidence": 1 - 2 * level, "p_value": p_value, "level": level,
        "better": b > c and p_value < level,
    }


def examples_digest(examples: list[dict]) -> str:
    """Names a frozen held-out set: the same digest means the same examples, in the same order."""
    blob = json.dumps([[e.get("question"), e.get("context"), e.get("answer")] for e in examples], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def heldout_examples(card_location: str, split: str, n: int) -> list[dict]:
    """The first n examples of `split`, from the data the adapter at card_location was trained with (its card's
    data config: the same source and seed give the same examples)."""
    from shared.artifacts import read_card
    from shared.data.loaders import load_splits
    from shared.storage import local_adapter

    _, cfg = read_card(local_adapter(card_location))
    splits = load_splits(cfg.data)
    if split not in splits or not splits[split]:
        raise ValueError(f"held-out split {split!r} is missing or empty in {cfg.data.source!r} (has {sorted(splits)})")
    return splits[split][:n]


def score_adapter(location: str, examples: list[dict], threads: int = 0) -> list[bool]:
    """Per-example correctness of the adapter at `location` (a folder or URI) on `examples`, greedy, with the
    generation limits of its own card's eval config."""
    from shared.artifacts import adapter_format, load_adapter, read_card
    from shared.evaluate import generate
    from shared.storage import local_adapter
    from shared.tasks import get_task
    from shared.trial import set_threads

    set_threads(threads)
    folder = local_adapter(location)
    model, tokenizer, card = load_adapter(folder)
    _, cfg = read_card(folder)
    fmt = adapter_format(card, tokenizer)
    task = get_task(cfg.data.task, cfg.eval)
    raw = generate(model, tokenizer, [fmt.prompt(cfg.data.task, e) for e in examples],
                   max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size,
                   max_prompt_tokens=cfg.data.max_seq_len)
    return [bool(task.score_one(fmt.answer(cfg.data.task, r), e)["correct"])
            for r, e in zip(raw, examples, strict=True)]
