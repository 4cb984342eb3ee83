"""4-bit vs 16-bit LoRA, packed vs padded batches, and the project's trial loop vs TRL's SFTTrainer on the
same QLoRA configuration, measured side by side in one run; then a randomly initialized Llama-2-7B-sized
QLoRA trial where a GPU is at hand.

    python -m benchmarks.run                                   # `make bench`: the micro model, ~3 min on 2 cores
    python -m benchmarks.run --model /tmp/micro-full --steps 10 --json-out bench.json
    python -m benchmarks.run --cases synthetic                 # on a GPU machine: the 7B figures only
    python -m benchmarks.run train.batch_size=8                # dotted overrides of the micro cases' config

Every case runs in its own fresh process (`benchmarks.qlora`), one after another, so each peak memory is
that case's alone and no two cases share the cores. The table goes to stdout, progress to stderr.
See benchmarks/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.qlora import CPU_MAX_SYNTHETIC_PARAMS, MB, MODEL_DIMS
from shared.paths import REPO_ROOT

# name -> overrides of the micro config. Same config, steps and batch size; only these differ.
MICRO_CASES = {
    "4bit-padded": ["quantization.mode=4bit", "data.packing=false"],
    "16bit-padded": ["quantization.mode=16bit", "data.packing=false"],
    "4bit-packed": ["quantization.mode=4bit", "data.packing=true"],
    "trl": ["quantization.mode=4bit", "data.packing=false"],  # 4bit-padded through TRL's SFTTrainer instead
}
RUNNER = {"trl": "benchmarks.trl_case"}  # the module that runs a case in its process; default benchmarks.qlora
CASES = [*MICRO_CASES, "synthetic"]
TRL_SPEED_TARGET = 1.0  # the project's trial loop tokens/s over TRL's on the same configuration
WEIGHT_RATIO_TARGET = 0.35  # 4-bit weight memory / 16-bit; NF4 + double quant is ~0.26x on quantized layers


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="QLoRA benchmark: 4-bit vs 16-bit LoRA, packed vs padded, and a 7B-sized trial on a GPU.",
    )
    ap.add_argument("overrides", nargs="*", help="dotted overrides of --config for the micro cases (lora.rank=16)")
    ap.add_argument("--model", default="embedded:micro-llama",
                    help="base of the micro cases: a local folder or embedded:micro-llama (default)")
    ap.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "sql_micro.yaml",
                    help="trial config of the micro cases (default configs/sql_micro.yaml)")
    ap.add_argument("--steps", type=int, default=30, help="timed optimizer steps per case (default 30)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps before them (default 3)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads of every case (default: the CPUs this process may use)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    dims = ap.add_mutually_exclusive_group()
    dims.add_argument("--model-dims", choices=sorted(MODEL_DIMS), default="llama2-7b",
                      help="dimensions of the synthetic (random-weight) model (default llama2-7b)")
    dims.add_argument("--model-config", type=Path,
                      help="JSON or YAML file of LlamaConfig fields for the synthetic model instead")
    ap.add_argument("--synthetic-config", type=Path, default=REPO_ROOT / "configs" / "sql_llama2_7b.yaml",
                    help="trial config of the synthetic case: LoRA, batch, accumulation (default sql_llama2_7b.yaml)")
    ap.add_argument("--seq-len", type=int, default=512, help="tokens per sequence of the synthetic case (default 512)")
    ap.add_argument("--synthetic-set", action="append", default=[], metavar="KEY=VALUE",
                    help="dotted override of --synthetic-config (repeatable), e.g. train.batch_size=8")
    ap.add_argument("--tmp-dir", type=Path, default=None,
                    help="where the synthetic model is written (Llama-2-7B: 13.5 GB; default: the system temp)")
    ap.add_argument("--json-out", type=Path, help="also write every figure to this JSON file")
    args = ap.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in args.cases if c not in CASES]
    if unknown or not args.cases:
        ap.error(f"--cases: unknown {unknown}; valid: {', '.join(CASES)}")
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    return args


# ------------------------------------------------------------------------------------------ planning


def machine() -> dict:
    import torch

    info = {
        "cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    for pkg in ("transformers", "peft", "bitsandbytes"):  # versions without importing (bitsandbytes warns)
        try:
            info[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            info[pkg] = None
    return info


def micro_specs(args, threads: int) -> tuple[list[dict], dict]:
    """The micro cases, validated before anything runs. A float32 compute dtype ("auto" on a CPU without AMX)
    is raised to bfloat16, so that the 16-bit case really is 16-bit."""
    from shared.config import ModelConfig, load_config
    from shared.models import compute_dtype, resolve_path

    model = resolve_path(ModelConfig(name_or_path=args.model))  # builds the embedded model if missing (~30 min)
    common = [*args.overrides, f"model.name_or_path={Path(model).resolve()}", f"train.threads={threads}"]
    cfg = load_config(args.config, common)
    if str(compute_dtype(cfg.quantization)) == "torch.float32":
        common.append("quantization.compute_dtype=bfloat16")
        cfg = load_config(args.config, common)
    specs = []
    for name in [c for c in args.cases if c in MICRO_CASES]:
        overrides = [*common, *MICRO_CASES[name]]
        load_config(args.config, overrides)
        specs.append({"name": name, "config": str(args.config.resolve()), "overrides": overrides,
                      "steps": args.steps, "warmup": args.warmup})
    settings = {
        "model": str(Path(model).resolve()), "config": str(args.config), "overrides": common,
        "batch_size": cfg.train.batch_size, "grad_accum_steps": cfg.train.grad_accum_steps,
        "max_seq_len": cfg.data.max_seq_len, "rank": cfg.lora.rank, "target_modules": cfg.lora.target_modules,
        "gradient_checkpointing": cfg.train.gradient_checkpointing,
        "compute_dtype": str(compute_dtype(cfg.quantization)).removeprefix("torch."),
    }
    return specs, settings


def synthetic_fields(args) -> tuple[str, dict]:
    if args.model_config:
        import yaml

        fields = yaml.safe_load(args.model_config.read_text())  # JSON is YAML
        if not isinstance(fields, dict):
            raise SystemExit(f"--model-config {args.model_config}: expected a mapping of LlamaConfig fields")
        return args.model_config.stem, fields
    return args.model_dims, dict(MODEL_DIMS[args.model_dims])


def synthetic_spec(args, threads: int, fields: dict, model_dir: Path | None) -> dict:
    """The synthetic case: its trial config forced to 4 bit, unpacked full rows of --seq-len random tokens,
    gradient checkpointing. Without model_dir (not written yet) the config is only validated."""
    from benchmarks.qlora import llama_config
    from shared.config import load_config

    overrides = [
        *args.synthetic_set, f"model.name_or_path={model_dir or REPO_ROOT}",  # any existing folder validates
        "quantization.mode=4bit",
        "data.packing=false", f"data.max_seq_len={args.seq_len}", "train.gradient_checkpointing=true",
        f"train.threads={threads}",
    ]
    load_config(args.synthetic_config, overrides)
    return {"name": "synthetic", "config": str(args.synthetic_config.resolve()), "overrides": overrides,
            "steps": args.steps, "warmup": args.warmup, "synthetic": {"vocab_size": llama_config(fields).vocab_size}}


# ------------------------------------------------------------------------------------------- running


def run_case(spec: dict, workdir: Path) -> dict:
    """`python -m benchmarks.qlora` in a fresh process; its output goes to a log shown if it fails."""
    out, log = workdir / f"{spec['name']}.json", workdir / f"{spec['name']}.log"
    cmd = [sys.executable, "-m", RUNNER.get(spec["name"], "benchmarks.qlora"), "--case", json.dumps(spec), "--json-out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH")] if p)}
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, check=False).returncode
    if rc != 0 or not out.exists():
        tail = log.read_text(errors="replace")[-3000:]
        print(f"case {spec['name']} failed (exit {rc}); the end of its log:\n{tail}", file=sys.stderr)
        return {"name": spec["name"], "error": f"exit {rc}: {tail.strip().splitlines()[-1] if tail.strip() else ''}"}
    return json.loads(out.read_text())


def run_all(specs: list[dict], workdir: Path) -> dict[str, dict]:
    results = {}
    for i, spec in enumerate(specs, 1):
        print(f"[{i}/{len(specs)}] {spec['name']} ...", end=" ", file=sys.stderr, flush=True)
        start = time.time()
        results[spec["name"]] = run_case(spec, workdir)
        print(f"{time.time() - start:.0f}s", file=sys.stderr, flush=True)
    return results


# -------------------------------------------------------------------------------------------- report


def _num(v, kind: str) -> str:
    if v is None:
        return "-"
    if kind == "mb":
        v = v / MB
        return f"{v:,.0f}" if v >= 1000 else f"{v:,.1f}" if v >= 100 else f"{v:.2f}"
    if kind == "pct":
        return f"{v:.1%}"
    if kind == "s":
        return f"{v:.3f}"
    return f"{v:,.0f}"


def _params(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"


def _ratio(a, b) -> float | None:
    return a / b if isinstance(a, int | float) and isinstance(b, int | float) and b else None


def memory_rows(device: str) -> list[tuple[str, str, str]]:
    if device == "cuda":
        return [("peak GPU allocated (MB)", "gpu_peak_allocated_bytes", "mb"),
                ("peak GPU reserved (MB)", "gpu_peak_reserved_bytes", "mb")]
    return [("peak RSS (MB)", "peak_rss_bytes", "mb"), ("peak RSS over imports (MB)", "peak_rss_delta_bytes", "mb")]


def table(title: str, columns: list[str], ratio_name: str, rows: list[tuple[str, str, str]],
          cases: list[dict]) -> tuple[list[str], dict]:
    """One section: a row per metric, a column per case, the first over the second as the ratio."""
    header = ["metric", *columns, *([ratio_name] if ratio_name else [])]
    body, ratios = [], {}
    for label, key, kind in rows:
        values = [c.get(key) for c in cases]
        r = _ratio(values[0], values[1]) if len(values) == 2 else None
        ratios[key] = r
        cells = [_num(v, kind) if "error" not in c else "failed" for v, c in zip(values, cases, strict=True)]
        body.append([label, *cells, *([f"{r:.2f}x" if r is not None else "-"] if ratio_name else [])])
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:  # metric left-aligned, figures right-aligned
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False)))

    return [title, fmt(header), *map(fmt, body)], ratios


def report(info: dict, settings: dict, args, results: dict, synthetic: dict | None) -> tuple[str, dict]:
    lines = [
        f"QLoRA benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"machine: {info['cpus_available']} of {info['cpus']} CPUs available, {info['cpu_capability']}; "
        f"torch {info['torch']}, transformers {info['transformers']}, peft {info['peft']}, "
        f"bitsandbytes {info['bitsandbytes']}; device {info['device']}"
        + (f" ({info['gpu']}, CUDA {info['cuda']})" if info.get("gpu") else ""),
        (f"threads {settings['threads']}; {args.steps} timed steps after {args.warmup} warmup per case; "
         "one fresh process per case, one after another"),
    ]
    ratios: dict = {}
    if settings.get("model"):
        some = next((r for r in results.values() if "error" not in r), {})
        lines.append(
            f"micro cases: {settings['model']} ({_params(some.get('parameters', 0))} parameters), "
            f"{Path(settings['config']).name}: batch {settings['batch_size']} x {settings['grad_accum_steps']} "
            f"accumulation, max_seq_len {settings['max_seq_len']}, LoRA rank {settings['rank']} "
            f"{settings['target_modules']}, compute dtype {settings['compute_dtype']}, gradient checkpointing "
            f"{'on' if settings['gradient_checkpointing'] else 'off'}"
        )
    device = next((r["device"] for r in results.values() if "device" in r), info["device"])
    mem = memory_rows(device)
    speed = [("tokens/s", "tokens_per_s", "n"), ("median step (s)", "step_s_median", "s")]
    sections = {  # ratio name -> (first case, second case, rows); the ratio is first / second
        "4bit/16bit": ("4bit-padded", "16bit-padded", [("weight memory (MB)", "weight_memory_bytes", "mb"),
                                                       ("quantized layers (MB)", "quantized_layers_bytes", "mb"),
                                                       *mem, *speed]),
        "packed/padded": ("4bit-packed", "4bit-padded", [("tokens/s (4-bit)", "tokens_per_s", "n"),
                                                         ("pad fraction", "pad_fraction", "pct"),
                                                         ("real tokens per step", "real_tokens_per_step", "n"),
                                                         ("median step (s)", "step_s_median", "s"), *mem]),
        "project/trl": ("4bit-padded", "trl", [("tokens/s", "tokens_per_s", "n"),
                                               ("median step (s)", "step_s_median", "s"),
                                               ("loss, first step", "loss_first", "s"),
                                               ("loss, last step", "loss_last", "s")]),
    }
    shown = set()
    for name, (a, b, rows) in sections.items():
        if a not in results or b not in results:
            continue
        section, ratios[name] = table("", [a, b], f"ratio {name}", rows, [results[a], results[b]])
        lines += section
        shown |= {a, b}
        w, q = ratios[name].get("weight_memory_bytes"), ratios[name].get("quantized_layers_bytes")
        if w is not None:  # the judged figure, spelled out under its table
            lines.append(f"weight memory 4bit/16bit = {w:.2f}x (target <= {WEIGHT_RATIO_TARGET}x: "
                         f"{'met' if w <= WEIGHT_RATIO_TARGET else 'NOT met'}); quantized layers alone {q:.2f}x")
        if name == "project/trl":
            lines += trl_lines(results[a], results[b], ratios[name])
    for name in [n for n in results if n not in shown]:  # a case run without its partner: no ratio
        rows = [("weight memory (MB)", "weight_memory_bytes", "mb"), *mem, *speed]
        lines += table("", [name], "", rows, [results[name]])[0]
    if synthetic is not None:
        lines.append("")
        lines += synthetic_section(synthetic)
    return "\n".join(lines), ratios


def trl_lines(project: dict, trl: dict, ratios: dict) -> list[str]:
    """The judged figure and the two loss curves, step by step, under the project/trl table."""
    speed = ratios.get("tokens_per_s")
    out = [f"trial loop / TRL SFTTrainer tokens/s = {speed:.2f}x (target >= {TRL_SPEED_TARGET}x: "
           f"{'met' if speed is not None and speed >= TRL_SPEED_TARGET else 'NOT met'}); {trl.get('trainer', 'trl')}"]
    a, b = project.get("loss_curve") or [], trl.get("loss_curve") or []
    if a and b:
        n = min(len(a), len(b))
        gap = max(abs(x - y) for x, y in zip(a[:n], b[:n], strict=True))
        out.append(f"loss curves, step: project / trl (largest gap {gap:.3f}):")
        out += [f"  {i + 1:>3}: {a[i]:.4f} / {b[i]:.4f}" for i in range(n)]
    return out


def synthetic_section(s: dict) -> list[str]:
    title = f"{s['label']}: random weights, {_params(s['parameters'])} parameters"
    if "skipped" in s:
        return [f"{title}: skipped ({s['skipped']})"]
    r = s["result"]
    if "error" in r:
        return [f"{title}: failed ({r['error']})"]
    title += (f"; QLoRA rank {r['rank']}, batch {r['batch_size']} x {r['max_seq_len']} tokens x "
              f"{r['grad_accum_steps']} accumulation, gradient checkpointing, {r['compute_dtype']}, {r['device']}")
    as16 = {"name": "as-16bit", "weight_memory_bytes": r["weight_memory_as_16bit_bytes"],
            "quantized_layers_bytes": r["quantized_layers_as_16bit_bytes"]}
    rows = [("weight memory (MB)", "weight_memory_bytes", "mb"), ("quantized layers (MB)", "quantized_layers_bytes", "mb"),
            *memory_rows(r["device"]), ("tokens/s", "tokens_per_s", "n"), ("median step (s)", "step_s_median", "s")]
    return table(title, ["4bit", "same at 16 bit"], "ratio 4bit/16bit", rows, [r, as16])[0]


def main(argv=None) -> int:
    from shared.config import ConfigError

    args = parse_args(argv)
    try:
        return bench(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def bench(args) -> int:
    threads = args.threads or len(os.sched_getaffinity(0))
    info = machine()
    settings: dict = {"threads": threads}
    specs = []
    if any(c in MICRO_CASES for c in args.cases):
        specs, micro = micro_specs(args, threads)
        settings |= micro
    synthetic = None
    if "synthetic" in args.cases:
        from benchmarks.qlora import count_parameters

        label, fields = synthetic_fields(args)
        params = count_parameters(fields)
        synthetic = {"label": label if args.model_config else f"{label} dimensions", "fields": fields,
                     "parameters": params}
        synthetic_spec(args, threads, fields, None)  # validate the config before anything runs
        if info["device"] != "cuda" and params > CPU_MAX_SYNTHETIC_PARAMS:
            synthetic["skipped"] = (f"no CUDA device: torch.cuda.is_available() is False, and a model above "
                                    f"{CPU_MAX_SYNTHETIC_PARAMS / 1e9:.0f} B parameters is measured on a GPU only")
    print(f"running {len(specs) + (synthetic is not None and 'skipped' not in synthetic)} case(s), "
          f"threads={threads}, device={info['device']}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="qlora-bench-", dir=args.tmp_dir) as tmp:
        workdir = Path(tmp)
        results = run_all(specs, workdir)
        if synthetic is not None and "skipped" not in synthetic:
            from benchmarks.qlora import write_random_llama

            model_dir = workdir / "synthetic-model"
            print(f"writing a random {synthetic['label']} model ({_params(params)} parameters) to {model_dir}",
                  file=sys.stderr, flush=True)
            write_random_llama(model_dir, fields)
            spec = synthetic_spec(args, threads, fields, model_dir)
            synthetic["result"] = run_all([spec], workdir)["synthetic"]
            shutil.rmtree(model_dir, ignore_errors=True)

    text, ratios = report(info, settings, args, results, synthetic)
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(
            {"machine": info, "settings": settings, "steps": args.steps, "warmup": args.warmup,
             "cases": results, "ratios": ratios, "synthetic": synthetic}, indent=2) + "\n")
    failed = [n for n, r in [*results.items(), ("synthetic", (synthetic or {}).get("result", {}))] if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
