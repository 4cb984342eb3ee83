"""`python -m benchmarks.run` end to end on the tiny model: every row is printed, the figures land in the
JSON, and the 4-bit base really is smaller than the 16-bit one. No timing is asserted (STYLE.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _bench(*args, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.run", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def _row(stdout: str, label: str) -> list[str]:
    """The cells of the table row whose metric is `label` (first match)."""
    for line in stdout.splitlines():
        if line.startswith(label + "  "):
            return line[len(label):].split()
    raise AssertionError(f"no row {label!r} in:\n{stdout}")


@pytest.mark.slow
def test_micro_cases_print_every_row_and_4bit_weights_are_smaller(tiny_model_dir, tmp_path):
    out = tmp_path / "bench.json"
    run = _bench("--model", tiny_model_dir, "--steps", 2, "--warmup", 1,
                 "--cases", "4bit-padded,16bit-padded,4bit-packed", "--json-out", out)
    assert run.returncode == 0, run.stderr[-3000:]
    text = run.stdout
    for header in ("ratio 4bit/16bit", "ratio packed/padded"):
        assert header in text, text
    result = json.loads(out.read_text())
    cases = result["cases"]
    assert set(cases) == {"4bit-padded", "16bit-padded", "4bit-packed"}
    memory = ["peak GPU allocated (MB)", "peak GPU reserved (MB)"] if cases["4bit-padded"]["device"] == "cuda" \
        else ["peak RSS (MB)", "peak RSS over imports (MB)"]
    for label in ["weight memory (MB)", "quantized layers (MB)", *memory, "tokens/s", "median step (s)",
                  "tokens/s (4-bit)", "pad fraction", "real tokens per step"]:
        cells = _row(text, label)
        assert len(cells) == 3 and cells[-1].endswith("x"), (label, cells)

    q4, q16 = cases["4bit-padded"], cases["16bit-padded"]
    assert q4["mode"] == "4bit" and q16["mode"] == "16bit"
    assert q4["weight_memory_bytes"] < q16["weight_memory_bytes"]
    # NF4 + double quantization: ~0.26x on the quantized layers; the tiny model's per-layer code maps add some.
    assert q4["quantized_layers_bytes"] < 0.4 * q16["quantized_layers_bytes"]
    assert q4["quantized_layers"] == q16["quantized_layers"] > 0
    ratio = result["ratios"]["4bit/16bit"]["weight_memory_bytes"]
    assert _row(text, "weight memory (MB)")[-1] == f"{ratio:.2f}x"
    assert f"weight memory 4bit/16bit = {ratio:.2f}x" in text

    for case in cases.values():
        assert case["timed_steps"] == 2 and case["warmup_steps"] == 1
        assert case["tokens_per_s"] > 0 and 0 <= case["pad_fraction"] < 1
        assert case["batch_size"] == 16 and case["max_seq_len"] == 384  # configs/sql_micro.yaml, unchanged
    assert cases["4bit-packed"]["packing"] and not q4["packing"]
    if q4["device"] == "cpu":
        assert q4["peak_rss_delta_bytes"] == q4["peak_rss_bytes"] - q4["rss_after_imports_bytes"] > 0


@pytest.mark.slow
def test_a_synthetic_model_goes_through_the_4bit_path_with_checkpointing(tmp_path):
    dims = tmp_path / "dims.json"
    dims.write_text(json.dumps({"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
                                "num_hidden_layers": 2, "num_attention_heads": 2}))
    out = tmp_path / "bench.json"
    run = _bench("--cases", "synthetic", "--model-config", dims, "--seq-len", 64, "--steps", 2, "--warmup", 1,
                 "--synthetic-set", "train.batch_size=2", "--tmp-dir", tmp_path, "--json-out", out)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "dims: random weights" in run.stdout and "skipped" not in run.stdout
    s = json.loads(out.read_text())["synthetic"]["result"]
    assert s["mode"] == "4bit" and s["gradient_checkpointing"] and s["quantized_layers"] == 14
    assert s["weight_memory_bytes"] < s["weight_memory_as_16bit_bytes"]
    # random full rows: no pads; a step is batch 2 x 64 tokens x the config's 4 accumulation steps
    assert s["pad_fraction"] == 0 and s["real_tokens_per_step"] == 2 * 64 * 4
    assert not list(tmp_path.glob("qlora-bench-*")), "the synthetic model should be deleted afterwards"


def test_a_7b_model_is_skipped_without_a_gpu_and_says_why(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is at hand: the 7B case would run")
    out = tmp_path / "bench.json"
    run = _bench("--cases", "synthetic", "--model-dims", "llama2-7b", "--tmp-dir", tmp_path, "--json-out", out)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "llama2-7b dimensions: random weights, 6.74 B parameters: skipped (no CUDA device" in run.stdout
    s = json.loads(out.read_text())["synthetic"]
    assert s["parameters"] == 6_738_415_616 and "result" not in s
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # nothing was written for the model
