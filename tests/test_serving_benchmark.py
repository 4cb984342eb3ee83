"""benchmarks/serving.py's arithmetic and verdicts on synthetic figures (the run itself takes ~10 min)."""

import pytest

from benchmarks.serving import _pct, _summary, parse_args, pooled, report, side_by_side


def _figures(ramp: list[int]) -> dict:
    load = []
    for batch, rps in ((16, (1.0, 3.0, 8.0)), (1, (1.0, 1.5, 2.0))):
        for clients, r in zip((1, 4, 16), rps, strict=True):
            load.append({"batch": batch, "clients": clients, "requests": 48, "ok": 48, "wall_s": 48 / r, "req_per_s": r,
                         "tokens_per_s": 32 * r, "p50_s": 1.0, "p99_s": 2.0})
    return {"args": {"direct": "20"}, "adapter": "a", "load": load, "direct_p50_s": 0.50, "http_raw_p50_s": 0.53,
            "http_sql_p50_s": 0.60, "overhead_raw_s": 0.02, "overhead_sql_s": 0.09, "overhead_pairs": 20,
            "floor_ping_s": 0.008, "floor_hop_s": 0.015,
            "swap_http_s": 0.5, "loaded_http_s": 0.4, "reload_http_s": 15.0, "swap_s": 0.05, "reload_s": 1.0,
            "ramp": [(float(i), 1, r) for i, r in enumerate(ramp)]}


def test_report_computes_the_ratios_and_says_which_goals_are_met(capsys):
    out = _figures([1, 1, 2, 2, 2, 1, 1])
    report(out)
    text = capsys.readouterr().out
    r = out["ratios"]
    assert r["batching_x16"] == 4.0 and abs(r["serve_overhead"] - 0.04) < 1e-9 and r["swap_vs_reload"] == 30.0
    assert r["replicas_peak"] == 2 and r["replicas_end"] == 1
    assert "batched / unbatched throughput at 16 clients: 4.00x" in text and "swap 30.0x (>= 20x): met" in text
    assert abs(r["swap_vs_reload_load_only"] - 146.0) < 1e-9  # (15.0 - 0.4) / (0.5 - 0.4)
    assert "replicas 1 -> 2 -> 1: met" in text and "NOT met" not in text
    assert "Serve overhead at batch 1 (20 prompts" in text and "+20.0 ms (+4.0%)" in text
    assert "our app's own share of the /v1/completions overhead: +5.0 ms" in text


def test_interleaved_rounds_pool_into_one_run():
    """Two rounds of one server: requests over the summed wall time (not the mean of two rates), and the
    percentiles of all latencies together."""
    fast = _summary(4, [0.1, 0.2, 0.3, 0.4], 4, 80, 1.0)  # 4 req/s
    slow = _summary(4, [1.0, 2.0, 3.0, 4.0], 3, 40, 4.0)  # 1 req/s, one failed
    both = pooled([fast, slow])
    assert both["requests"] == 8 and both["ok"] == 7 and both["req_per_s"] == 8 / 5.0  # not (4 + 1) / 2
    assert both["tokens_per_s"] == 120 / 5.0 and both["p50_s"] == 1.0 and both["p99_s"] == 4.0


def test_a_ramp_that_never_scales_down_is_not_met(capsys):
    out = _figures([1, 1, 2, 2, 2])
    out["overhead_raw_s"] = 0.1  # +20% (the median of the pairs, not the difference of the medians)
    report(out)
    text = capsys.readouterr().out
    assert "replicas 1 -> 2 -> 2: NOT met" in text and "Serve overhead +20.0% (<= 10%): NOT met" in text


def test_percentiles_and_defaults():
    values = sorted(float(i) for i in range(1, 101))
    assert _pct(values, 50) == 51.0 and _pct(values, 99) == 99.0 and _pct([3.0], 99) == 3.0
    args = parse_args([])
    assert args.requests == 128 and args.new_tokens == 32 and args.ramp_clients == 8


def test_two_bases_side_by_side_in_one_table(capsys):
    micro, smol = _figures([1, 2, 1]), _figures([1, 2, 2])
    micro["model"], smol["model"] = "embedded:micro-llama", "embedded:smollm2-135m-instruct"
    for row in smol["load"]:  # the 135 M model: slower, and batching shares more of it
        row["req_per_s"] = row["req_per_s"] / 4 if row["batch"] == 1 else row["req_per_s"] / 2
    for out in (micro, smol):
        report(out)
    capsys.readouterr()
    side_by_side([micro, smol])
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "micro-llama" in line)
    assert header.index("micro-llama") < header.index("smollm2-135m-instruct")
    row = next(line for line in lines if line.startswith("batched / unbatched at 16 clients"))
    assert row.split()[-2:] == ["4.00x", "8.00x"]  # 8/2 and (8/2)/(2/4)
    assert next(line for line in lines if line.startswith("replicas")).endswith("1 -> 2 -> 2")


def test_models_default_and_one_adapter_for_one_base():
    assert parse_args([]).model == ["embedded:micro-llama"]
    assert parse_args(["--model", "a", "--model", "b"]).model == ["a", "b"]
    with pytest.raises(SystemExit):
        parse_args(["--adapter", "x", "--model", "a", "--model", "b"])


def test_decode_cost_runs_any_adapter_on_its_own_base_and_splits_prefill_from_batching(tiny_model_dir, tmp_path, capsys):
    """benchmarks/decode_cost.py on a tiny adapter: its card's base, not the micro model; max_tokens 1 gives
    each request exactly one token, one at a time and in one batch; the ceiling is printed."""
    import re

    from benchmarks.decode_cost import main
    from shared.config import load_config
    from shared.paths import REPO_ROOT
    from shared.trial import run_trial

    cfg = load_config(REPO_ROOT / "configs/sql_micro_smoke.yaml", [
        f"model.name_or_path={tiny_model_dir}", f"output.dir={tmp_path}", "output.name=a", "train.max_steps=2",
        "eval.max_examples=2", "eval.baseline=false"])
    run_trial(cfg)
    assert main(["--adapter", str(tmp_path / "a"), "--repeats", "2", "--new-tokens", "4", "--batch", "3"]) == 0
    text = capsys.readouterr().out
    assert f"base {tiny_model_dir}," in text
    one = re.search(r"^ +1 +[\d.]+ +(\d+) +[\d.]+ +(\d+) +[\d.]+x$", text, re.MULTILINE)
    assert one and one.groups() == ("3", "3"), text
    four = re.search(r"^ +4 +[\d.]+ +(\d+) +[\d.]+ +(\d+) +[\d.]+x$", text, re.MULTILINE)
    assert four and all(1 <= int(n) <= 12 for n in four.groups()), text
    assert re.search(r"batching's ceiling, were batched decoding free, is [\d.]+x", text), text
