"""Serving benchmark, in one run on a local Ray, HTTP on 127.0.0.1 only, bounded in time:

    python -m benchmarks.serving                      # the micro model: ~10 min on 2 cores
    python -m benchmarks.serving --adapter ~/qlora-sweeps/latest/sql --requests 64 --json-out serve.json
    python -m benchmarks.serving --model embedded:smollm2-135m-instruct --no-peer   # a real 135 M model (make smollm2)
    python -m benchmarks.serving --model embedded:micro-llama --model embedded:smollm2-135m-instruct --no-peer
                                                      # both, one after the other, and a table of both side by side

1. throughput and p50/p99 latency at 1, 4 and 16 concurrent clients, continuous batching (max_batch_size
   16: requests join and leave the running batch at every decoding step) against none (max_batch_size 1:
   one request at a time), each on one model replica;
2. Serve's overhead at batch 1: the same prompts through HTTP + Serve (/v1/completions, and /v1/sql with
   its schema and SQL checks) against Engine.generate called directly in this process with the replica's
   thread count, one request at a time over one keep-alive connection (as OpenAI clients do), each HTTP
   call beside the direct call on the same prompt (which goes first alternates); the overhead is the median
   of those pairs' differences. Beside it, Ray Serve's own floor on this machine: a bare FastAPI ingress
   answering at once, and the same ingress making one call to a second deployment that answers at once;
3. adapter swap against model reload, each until the new adapter answers over HTTP: the first request
   naming a not-yet-loaded adapter against redeploying the model deployment with it (a new replica
   process loads the base); in process also, Engine.add_adapter against a fresh Engine;
4. replicas over time under a load ramp (1 client, then --ramp-clients, then none), autoscaling 1..2;
5. the peer: `transformers serve --continuous-batching` (what a user could run instead), serving the same
   micro model with the adapter merged into it, 4-bit (`--quantization bnb-4bit`), with the replica's
   thread count, against our app serving the adapter unmerged on its 4-bit base (batching on): the same
   raw prompts through /v1/completions on both, the same clients (1, 4, 16), both servers up, in two
   rounds that alternate which goes first, each server's rounds pooled (compare_with_peer). Both reuse
   the KV of prompts that begin alike (ours: `batching.prefix_cache_mb`, on by default; the peer: prefix
   block sharing, on by default in transformers' ContinuousBatchingConfig, `allow_block_sharing`).

Every request is a greedy /v1/sql request of --new-tokens tokens on a bundled dev example, so that
batched and unbatched runs do the same work. The adapter is the same in every run unless --adapter names
one: the default trial recipe (configs/sql_micro.yaml, LoRA on all linear layers) at --rank 16 (the 7B
preset's rank, and the median of the sweeps' log-uniform 4..64), alpha 2 x rank, trained for 60 steps,
once, into artifacts/benchmarks/ (~2 minutes). The rank moves the results both ways on a CPU: more LoRA
compute per row lengthens a generate (Serve's fixed cost weighs less) and leaves batching less to share
(each row's LoRA work is its own). The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GOALS = {"batching_x16": 3.0, "serve_overhead": 0.10, "swap_vs_reload": 20.0}
SWAPS = 3  # adapter swaps measured over HTTP (the median is reported); a reload is measured once (~10 s)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter", default=None,
                    help="a SQL adapter folder of the micro model, or a sweep's latest/sql.json (default: the "
                    "default recipe at --rank after 60 steps, trained once into artifacts/benchmarks/)")
    ap.add_argument("--model", action="append", default=None,
                    help="base of the benchmark's own adapter: embedded:micro-llama (default), "
                    "embedded:smollm2-135m-instruct (chat-prompted), or a local folder; repeat it to run the "
                    "benchmark on each, one after the other, and print their figures side by side")
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank of the benchmark's own adapter (default 16)")
    ap.add_argument("--requests", type=int, default=128,
                    help="requests per concurrency level, a quarter of it at 1 client (default 128: 8 rounds of 16 "
                    "clients, so that the ramp-up and the drain at the end weigh little)")
    ap.add_argument("--new-tokens", type=int, default=32, help="max_tokens of every request (default 32)")
    ap.add_argument("--direct", type=int, default=40, help="prompts of the overhead comparison (default 40)")
    ap.add_argument("--ramp-clients", type=int, default=8, help="clients at the top of the ramp (default 8)")
    ap.add_argument("--ramp-s", type=float, default=45, help="seconds at the top of the ramp and after it (default 45)")
    ap.add_argument("--replica-cpus", type=int, default=1,
                    help="CPUs (= torch threads) of the one replica in the load and overhead rows, and of the direct "
                    "Engine (default 1; the ramp's replicas have 1 each)")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--peer-port", type=int, default=8124)
    ap.add_argument("--no-peer", action="store_true", help="skip the transformers serve comparison")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    args.model = args.model or ["embedded:micro-llama"]
    if args.adapter and len(args.model) > 1:
        ap.error("--adapter names one adapter (one base); with several --model each trains its own")
    return args


# ------------------------------------------------------------------------------------------ setup


def find_or_train_adapter(path: str | None, rank: int = 16, model: str = "embedded:micro-llama") -> Path:
    """The adapter named, else the benchmark's own: the default trial recipe at `rank` for 60 steps. Not
    "the newest sweep's winner" by default: its rank is whatever the sweep drew (4 to 64), and on this CPU
    the rank moves every latency and ratio of the benchmark."""
    if path:
        p = Path(path).expanduser().resolve()
        return Path(json.loads(p.read_text())["adapter"]) if p.suffix == ".json" else p
    from shared.config import load_config
    from shared.paths import REPO_ROOT
    from shared.trial import run_trial

    micro = model == "embedded:micro-llama"
    tag = "" if micro else "-" + Path(model.removeprefix("embedded:")).name
    out, name = REPO_ROOT / "artifacts" / "benchmarks", f"serving-sql{tag}-r{rank}-60steps"
    # another base: its own chat template where it has one, at a learning rate for a pretrained model
    other = [] if micro else [f"model.name_or_path={model}", "train.learning_rate=3e-4", "train.batch_size=8"] + (
        ["model.prompt_format=chat"] if model.startswith("embedded:smollm2") else [])
    if not (out / name / "card.json").is_file():
        log(f"training the benchmark's adapter (configs/sql_micro.yaml on {model}, rank {rank}, 60 steps) into {out} ...")
        run_trial(load_config(REPO_ROOT / "configs/sql_micro.yaml", [*other,
            f"output.dir={out}", f"output.name={name}", f"lora.rank={rank}", f"lora.alpha={2 * rank}",
            "train.max_steps=60", "train.max_time_s=null", "eval.splits=[dev]", "eval.max_examples=8",
            "eval.baseline=false"]))
    return out / name


def copies(adapter: Path, n: int) -> list[Path]:
    """Copies under other folders: other model ids, the same weights (what a swap loads)."""
    import shutil

    out = []
    for i in range(n):
        out.append(Path(tempfile.mkdtemp(prefix=f"serve-bench-{i}-")) / f"sql-{i}")
        shutil.copytree(adapter, out[-1])
    return out


def examples(n: int) -> list[dict]:
    from shared.config import DataConfig
    from shared.data.loaders import load_splits

    dev = load_splits(DataConfig(task="sql", source="bundled"))["dev"]
    return [{"question": e["question"], "schema": e["context"]} for e in (dev * (n // len(dev) + 1))[:n]]


def deploy(adapters: dict[str, Path], batch: int, min_replicas: int, max_replicas: int, name: str = "bench",
           cpus: int = 1):
    from ray import serve

    from serving.app import build_app

    args = {"adapters": {k: str(v) for k, v in adapters.items()}, "defaults": {"sql": "sql"},
            "batching": {"max_batch_size": batch, "batch_wait_timeout_s": 0.01},
            "limits": {"max_new_tokens": 256, "request_timeout_s": 600},
            "model": {"max_ongoing_requests": 32, "max_queued_requests": 512, "resources": {"num_cpus": cpus},
                      "autoscaling": {"min_replicas": min_replicas, "max_replicas": max_replicas,
                                      "target_ongoing_requests": 2, "upscale_delay_s": 2, "downscale_delay_s": 10}}}
    start = time.perf_counter()
    serve.run(build_app(args), name=name, route_prefix="/")
    return time.perf_counter() - start


# -------------------------------------------------------------------------------------- measures


def post(url: str, body: dict) -> tuple[int, float, int]:
    import requests

    start = time.perf_counter()
    r = requests.post(url, json=body, timeout=600)
    took = time.perf_counter() - start
    tokens = r.json().get("usage", {}).get("completion_tokens", 0) if r.status_code == 200 else 0
    return r.status_code, took, tokens


def load_test(url: str, bodies: list[dict], clients: int) -> dict:
    with ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        results = list(pool.map(lambda b: post(url, b), bodies))
        wall = time.perf_counter() - start
    return _summary(clients, [t for _, t, _ in results], sum(1 for s, _, _ in results if s == 200),
                    sum(n for _, _, n in results), wall)


def _summary(clients: int, latencies: list[float], ok: int, tokens: int, wall: float) -> dict:
    lat = sorted(latencies)
    return {"clients": clients, "requests": len(lat), "ok": ok, "wall_s": wall, "req_per_s": len(lat) / wall,
            "tokens": tokens, "tokens_per_s": tokens / wall, "p50_s": _pct(lat, 50), "p99_s": _pct(lat, 99),
            "latencies": lat}


def pooled(rows: list[dict]) -> dict:
    """Several load tests of one server at one concurrency as one: requests over summed wall time, the
    percentiles of all latencies together."""
    return _summary(rows[0]["clients"], [t for r in rows for t in r["latencies"]], sum(r["ok"] for r in rows),
                    sum(r["tokens"] for r in rows), sum(r["wall_s"] for r in rows))


def raw_bodies(model: str, prompts: list[str], new_tokens: int) -> list[dict]:
    return [{"model": model, "prompt": p, "max_tokens": new_tokens, "temperature": 0} for p in prompts]


def _pct(sorted_values: list[float], p: float) -> float:
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def merged_model(adapter: Path) -> Path:
    """The adapter merged into its base (16 bit, so the merge is exact), saved with its tokenizer: what
    `transformers serve` can load (it takes no LoRA adapter); it quantizes it to 4 bit itself."""
    from shared.artifacts import load_adapter

    out = Path(tempfile.mkdtemp(prefix="serve-bench-merged-")) / "micro-sql-merged"
    model, tokenizer, _ = load_adapter(adapter, quantization_mode="16bit")
    model.merge_and_unload().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def start_peer(model: Path, port: int, threads: int):
    """`transformers serve --continuous-batching --quantization bnb-4bit` on 127.0.0.1, torch threads as the
    replica's; returns the process once /health answers."""
    import subprocess

    import requests

    exe = str(Path(sys.executable).with_name("transformers"))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([exe, "serve", str(model), "--continuous-batching", "--quantization", "bnb-4bit",
                             "--device", "cpu", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return proc
        except requests.ConnectionError:
            pass
        time.sleep(1)
    proc.kill()
    raise RuntimeError("transformers serve did not answer /health in 300 s")


PEER_ROUNDS = 2  # interleaved rounds per concurrency, pooled: this machine's speed drifts by 20-30% in minutes


def compare_with_peer(args, adapter: Path, prompts: list[str]) -> list[dict]:
    """5. Ours (the batch-16 app, deployed and idle) against `transformers serve` started beside it, the same raw
    prompts over /v1/completions at 1, 4 and 16 clients: PEER_ROUNDS rounds, ours first in one and the peer
    first in the next, each server's rounds pooled. Both stay up throughout; the idle one takes ~0.4% of a CPU
    (the peer) or Ray's background (ours), so drift of the machine's speed falls on both alike."""
    log("merging the adapter and starting transformers serve --continuous-batching --quantization bnb-4bit ...")
    merged = merged_model(adapter)
    proc = start_peer(merged, args.peer_port, args.replica_cpus)
    urls = {"ours": (f"http://127.0.0.1:{args.port}/v1/completions", "sql"),
            "transformers serve": (f"http://127.0.0.1:{args.peer_port}/v1/completions", str(merged))}
    rows: dict[tuple[str, int], list[dict]] = {}
    try:
        post(urls["transformers serve"][0], raw_bodies(str(merged), prompts[:1], args.new_tokens)[0])  # its warm-up
        for clients in (1, 4, 16):
            n = args.requests if clients > 1 else max(8, args.requests // 4)
            for round_ in range(PEER_ROUNDS):
                for server in (list(urls) if round_ % 2 == 0 else list(urls)[::-1]):
                    url, model = urls[server]
                    row = load_test(url, raw_bodies(model, prompts[:n], args.new_tokens), clients)
                    rows.setdefault((server, clients), []).append(row)
                    log(f"  {server:>18}  clients {clients:>2}, round {round_ + 1}: {row['req_per_s']:.2f} req/s")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    out = []
    for (server, clients), runs in rows.items():
        row = pooled(runs)
        row.pop("latencies")
        out.append({"server": server, "rounds": len(runs), **row})
    return sorted(out, key=lambda r: (r["server"] != "ours", r["clients"]))


def floor_app():
    """Ray Serve's own cost on this machine, nothing of ours in it: a FastAPI ingress whose /ping answers at
    once, and whose /hop makes one handle call to a second deployment that answers at once (our Api's shape:
    proxy -> ingress -> model deployment and back)."""
    from fastapi import FastAPI
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=32, max_queued_requests=512)
    class Echo:
        async def generate(self, job: dict) -> dict:
            return {"text": "", "completion_tokens": 0, **job}

    app = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    @serve.ingress(app)
    class Bare:
        def __init__(self, echo):
            self.echo = echo

        @app.get("/ping")
        async def ping(self) -> dict:
            return {"ok": True}

        @app.post("/hop")
        async def hop(self, job: dict) -> dict:
            return await self.echo.options(multiplexed_model_id="m").generate.remote(job)

    return Bare.bind(Echo.bind())


def settle(busy: float = 0.25, most_s: float = 30.0) -> float:
    """Waits until this machine's CPUs are idle (under `busy` of their time over a second, from /proc/stat) or
    `most_s` pass; returns the seconds waited. Ray tears a deleted app's replicas down in the background, and a
    measurement started meanwhile shares the cores with it."""
    def times() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    start = time.perf_counter()
    if not Path("/proc/stat").exists():
        time.sleep(10)
        return time.perf_counter() - start
    while time.perf_counter() - start < most_s:
        (all0, idle0), _ = times(), time.sleep(1)
        all1, idle1 = times()
        if all1 > all0 and 1 - (idle1 - idle0) / (all1 - all0) < busy:
            break
    return time.perf_counter() - start


def overhead(engine, prompts: list[str], bodies: list[dict], base: str, new_tokens: int) -> dict:
    """Serve's overhead at batch 1, pair by pair: each prompt directly (Engine.generate in this process)
    and over HTTP, raw (/v1/completions) and as a task (/v1/sql, its checks included), one request at a
    time on one keep-alive connection; which side goes first alternates. Serve's floor in the same loop."""
    import requests

    from serving.engine import Job

    session = requests.Session()
    for _ in range(3):  # the floor app's first calls, and the connection
        session.get(f"{base}/floor/ping", timeout=60).raise_for_status()
        session.post(f"{base}/floor/hop", json={}, timeout=60).raise_for_status()
    t = {k: [] for k in ("direct", "raw", "sql", "ping", "hop")}

    def timed(key, call):
        start = time.perf_counter()
        call()
        t[key].append(time.perf_counter() - start)

    for i, (p, b) in enumerate(zip(prompts, bodies, strict=False)):
        raw = {"model": "sql", "prompt": p, "max_tokens": new_tokens, "temperature": 0}
        calls = [("direct", lambda p=p: engine.generate([Job("sql", p, new_tokens)])),
                 ("raw", lambda raw=raw: session.post(f"{base}/v1/completions", json=raw, timeout=600).raise_for_status()),
                 ("sql", lambda b=b: session.post(f"{base}/v1/sql", json=b, timeout=600).raise_for_status())]
        for key, call in calls if i % 2 == 0 else calls[::-1]:
            timed(key, call)
        timed("ping", lambda: session.get(f"{base}/floor/ping", timeout=60).raise_for_status())
        timed("hop", lambda raw=raw: session.post(f"{base}/floor/hop", json=raw, timeout=60).raise_for_status())
    med = statistics.median
    return {"direct_p50_s": med(t["direct"]), "http_raw_p50_s": med(t["raw"]), "http_sql_p50_s": med(t["sql"]),
            "overhead_raw_s": med(h - d for h, d in zip(t["raw"], t["direct"], strict=True)),
            "overhead_sql_s": med(h - d for h, d in zip(t["sql"], t["direct"], strict=True)),
            "floor_ping_s": med(t["ping"]), "floor_hop_s": med(t["hop"]), "overhead_pairs": len(t["direct"])}


def replicas(app: str = "bench") -> int:
    from ray import serve

    st = serve.status().applications.get(app)
    if not st:
        return 0
    dep = st.deployments.get("Generator")
    return sum(n for state, n in (dep.replica_states or {}).items() if str(state).endswith("RUNNING")) if dep else 0


def ramp(url: str, bodies: list[dict], top: int, phases) -> list[tuple[float, int, int]]:
    """[(t, clients, running replicas)] sampled every second through the phases (clients, seconds)."""
    stop = threading.Event()
    clients = {"n": 0}
    timeline: list[tuple[float, int, int]] = []

    def client(i: int):
        k = i
        while not stop.is_set():
            if i < clients["n"]:
                post(url, bodies[k % len(bodies)])
                k += top
            else:
                time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(top)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    for n, seconds in phases:
        clients["n"] = top if n is None else n
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            timeline.append((time.perf_counter() - start, clients["n"], replicas()))
            time.sleep(1)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    return timeline


# ------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    outs = []
    for model in args.model:
        log(f"=== {model} ===")
        outs.append(run(args, model))
        report(outs[-1])
        print()
    if len(outs) > 1:
        side_by_side(outs)
    if args.json_out:
        args.json_out.write_text(json.dumps(outs[0] if len(outs) == 1 else outs, indent=2) + "\n")
    return 0


def run(args, model: str) -> dict:
    """The whole benchmark on one base: its own Ray and Serve, started and shut down here."""
    adapter = find_or_train_adapter(args.adapter, args.rank, model)
    fresh = copies(adapter, SWAPS)  # adapters the replica has not loaded: one per swap
    other = fresh[0]
    log(f"adapter {adapter}")

    import ray
    from ray import serve

    from serving.engine import Job, engine_for
    from shared.artifacts import read_card

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    url = f"http://127.0.0.1:{args.port}/v1/sql"
    bodies = [{**b, "max_tokens": args.new_tokens, "temperature": 0} for b in examples(args.requests)]
    direct_bodies = [{**b, "max_tokens": args.new_tokens, "temperature": 0} for b in examples(args.direct)]
    out: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "load": [], "adapter": str(adapter),
                 "adapter_rank": read_card(adapter)[1].lora.rank, "model": read_card(adapter)[1].model.name_or_path}
    log(f"direct Engine, {args.replica_cpus} thread(s) (the replica's) ...")
    engine_start = time.perf_counter()
    engine = engine_for(adapter, threads=args.replica_cpus)  # the adapter's own base, as the card says
    engine.add_adapter("sql", adapter)
    # the prompts as the app renders them for this adapter (its card's prompt format)
    prompts = [engine.render("sql", {"question": b["question"], "context": b["schema"]}) for b in direct_bodies]
    peer_prompts = [engine.render("sql", {"question": b["question"], "context": b["schema"]}) for b in bodies]
    reload_s = time.perf_counter() - engine_start
    engine.generate([Job("sql", prompts[0], args.new_tokens)])
    try:
        # 1. continuous batching vs none, one replica each
        for batch in (16, 1):
            log(f"deploying with max_batch_size {batch} ...")
            deploy({"sql": adapter, **{f"sql-{i}": p for i, p in enumerate(fresh)}}, batch, 1, 1, cpus=args.replica_cpus)
            post(url, bodies[0])  # loads the adapter
            for clients in (1, 4, 16):
                n = args.requests if clients > 1 else max(8, args.requests // 4)
                row = {"batch": batch, **load_test(url, bodies[:n], clients)}
                row.pop("latencies")
                log(f"  batch {batch:>2}  clients {clients:>2}: {row['req_per_s']:.2f} req/s, p50 {row['p50_s']:.2f} s")
                out["load"].append(row)
            if batch == 16 and not args.no_peer:
                out["peer"] = compare_with_peer(args, adapter, peer_prompts)

            if batch == 1:
                # 3. swap: the first request naming a not-yet-loaded adapter, on the running replica, each
                # after a request on the loaded one (the same prompt, so the two differ by the load alone).
                # Before step 2: for ~10 s after the floor app is deleted, Ray's teardown of its replicas
                # took CPU here and made every request 0.15-0.25 s slower (a loaded one 0.46-0.55 s, not 0.29)
                warm, swapped = [], []
                for i in range(SWAPS):
                    warm.append(post(url, {**bodies[0], "adapter": "sql"})[1])
                    swapped.append(post(url, {**bodies[0], "adapter": f"sql-{i}"})[1])
                swap_http = statistics.median(swapped)

                # 2. Serve overhead at batch 1, and beside it Serve's own floor (a bare app, same Serve)
                serve.run(floor_app(), name="floor", route_prefix="/floor")
                out |= overhead(engine, prompts, direct_bodies, f"http://127.0.0.1:{args.port}", args.new_tokens)
                serve.delete("floor")
                settle()  # before the reload below

        # 3. reload: a model deployment whose adapter changed restarts its replica (process, base, adapter);
        # the time until the new one answers, against the swap above
        start = time.perf_counter()
        deploy({"sql": other}, 1, 1, 1, cpus=args.replica_cpus)
        status, _, _ = post(url, bodies[0])
        reload_http = time.perf_counter() - start
        assert status == 200
        serve.delete("bench")

        swaps = []
        for i in range(5):
            start = time.perf_counter()
            engine.add_adapter(f"swap{i}", other)
            swaps.append(time.perf_counter() - start)
            engine.remove_adapter(f"swap{i}")
        out |= {"reload_s": reload_s, "swap_s": statistics.median(swaps),
                "swap_http_s": swap_http, "loaded_http_s": statistics.median(warm), "reload_http_s": reload_http}
        engine.close()
        del engine

        # 4. the ramp, autoscaling 1..2
        log(f"deploying with autoscaling 1..2 for the ramp (1, {args.ramp_clients}, 0 clients) ...")
        deploy({"sql": adapter}, 16, 1, 2)
        post(url, bodies[0])
        out["ramp"] = ramp(url, bodies, args.ramp_clients, ((1, 10), (None, args.ramp_s), (0, args.ramp_s + 20)))
    finally:
        serve.shutdown()
        ray.shutdown()
    return out


def side_by_side(outs: list[dict]) -> None:
    """One table, a column per base: the figures each run's report computed (report() fills out["ratios"])."""
    by = [{(r["batch"], r["clients"]): r for r in o["load"]} for o in outs]
    rows = [("req/s, batch 16, 16 clients", [b[(16, 16)]["req_per_s"] for b in by], "{:.2f}"),
            ("req/s, batch 1, 16 clients", [b[(1, 16)]["req_per_s"] for b in by], "{:.2f}"),
            ("tokens/s, batch 16, 16 clients", [b[(16, 16)]["tokens_per_s"] for b in by], "{:.1f}"),
            ("batched / unbatched at 16 clients", [o["ratios"]["batching_x16"] for o in outs], "{:.2f}x"),
            ("direct Engine.generate p50 (s)", [o["direct_p50_s"] for o in outs], "{:.3f}"),
            ("Serve overhead, /v1/completions", [o["ratios"]["serve_overhead"] for o in outs], "{:+.1%}"),
            ("swap (s) vs reload (s) over HTTP", [f"{o['swap_http_s']:.2f} vs {o['reload_http_s']:.2f}" for o in outs],
             "{}"),
            ("reload / swap", [o["ratios"]["swap_vs_reload"] for o in outs], "{:.1f}x"),
            ("replicas 1 -> peak -> end", [f"1 -> {o['ratios']['replicas_peak']} -> {o['ratios']['replicas_end']}"
                                           for o in outs], "{}")]
    names = [str(o.get("model", "?")).removeprefix("embedded:") for o in outs]
    width = max(26, *map(len, names))
    print("side by side, each base with its own adapter (rank, new tokens and requests as above):")
    print(f"{'':<34}" + "".join(f"{n:>{width}}" for n in names))
    for label, values, fmt in rows:
        print(f"{label:<34}" + "".join(f"{fmt.format(v):>{width}}" for v in values))


def report(out: dict) -> None:
    print(f"adapter {out['adapter']} on {out.get('model', 'embedded:micro-llama')} (LoRA rank {out.get('adapter_rank', '?')}); "
          f"{out['args'].get('new_tokens', '?')} "
          "new tokens at most per request, greedy")
    print(f"{'batch':>5} {'clients':>7} {'requests':>8} {'ok':>4} {'req/s':>7} {'tokens/s':>8} {'p50 s':>7} {'p99 s':>7}")
    for r in out["load"]:
        print(f"{r['batch']:>5} {r['clients']:>7} {r['requests']:>8} {r['ok']:>4} {r['req_per_s']:>7.2f} "
              f"{r['tokens_per_s']:>8.1f} {r['p50_s']:>7.3f} {r['p99_s']:>7.3f}")
    by = {(r["batch"], r["clients"]): r for r in out["load"]}
    print()
    for clients in (1, 4, 16):
        b, u = by.get((16, clients)), by.get((1, clients))
        if b and u:
            print(f"batched / unbatched throughput at {clients:>2} clients: {b['req_per_s'] / u['req_per_s']:.2f}x")
    x16 = by[(16, 16)]["req_per_s"] / by[(1, 16)]["req_per_s"]
    overhead = out["overhead_raw_s"] / out["direct_p50_s"]
    overhead_sql = out["overhead_sql_s"] / out["direct_p50_s"]
    swap = out["reload_http_s"] / out["swap_http_s"]
    load_only = (out["reload_http_s"] - out["loaded_http_s"]) / max(out["swap_http_s"] - out["loaded_http_s"], 1e-3)
    ms = 1000
    print(f"\nServe overhead at batch 1 ({out['overhead_pairs']} prompts, each direct and over HTTP, median of the "
          f"pairs' differences): direct Engine.generate p50 {out['direct_p50_s']:.3f} s; HTTP + Serve /v1/completions "
          f"{ms * out['overhead_raw_s']:+.1f} ms ({overhead:+.1%}); /v1/sql with its checks "
          f"{ms * out['overhead_sql_s']:+.1f} ms ({overhead_sql:+.1%})")
    print(f"Ray Serve's own floor here (a bare app, same Serve, same loop): proxy + ingress {ms * out['floor_ping_s']:.1f} ms; "
          f"proxy + ingress + one call to a second deployment {ms * out['floor_hop_s']:.1f} ms; so our app's own share "
          f"of the /v1/completions overhead: {ms * (out['overhead_raw_s'] - out['floor_hop_s']):+.1f} ms")
    print(f"adapter swap vs model reload, until the new adapter answers over HTTP: swap (first request on a new "
          f"adapter, median of {SWAPS}) {out['swap_http_s']:.2f} s vs reload (model deployment redeployed) "
          f"{out['reload_http_s']:.2f} s: "
          f"{swap:.1f}x; a request on a loaded adapter {out['loaded_http_s']:.2f} s, so beyond that request's own "
          f"generation: swap {out['swap_http_s'] - out['loaded_http_s']:.2f} s vs reload "
          f"{out['reload_http_s'] - out['loaded_http_s']:.2f} s ({load_only:.0f}x). In process: add_adapter "
          f"{out['swap_s']:.3f} s vs a fresh Engine (base) + adapter {out['reload_s']:.2f} s")
    reps = [r for _, _, r in out["ramp"]]
    top = max(reps) if reps else 0
    peak_at = reps.index(top) if reps else 0
    back = bool(reps) and top >= 2 and min(reps[peak_at:]) == 1
    line = "".join(str(r) for r in reps)
    print(f"replicas over the ramp (one digit per second; clients 1, then top, then 0): {line}")
    print(f"\ngoals: batching at 16 clients {x16:.2f}x (>= {GOALS['batching_x16']}x): {'met' if x16 >= 3 else 'NOT met'}; "
          f"Serve overhead {overhead:+.1%} (<= 10%): {'met' if overhead <= 0.10 else 'NOT met'}; "
          f"swap {swap:.1f}x (>= 20x): {'met' if swap >= 20 else 'NOT met'}; "
          f"replicas 1 -> {top} -> {reps[-1] if reps else '-'}: {'met' if back else 'NOT met'}")
    peer = {(r["server"], r["clients"]): r for r in out.get("peer", [])}
    if peer:
        print(f"\nthe peer, same raw prompts over /v1/completions, {out['args'].get('replica_cpus', 1)} thread(s) each, "
              f"{PEER_ROUNDS} interleaved rounds pooled:")
        print(f"{'server':>20} {'clients':>7} {'ok':>4} {'req/s':>7} {'tokens/s':>8} {'p50 s':>7} {'p99 s':>7}")
        for r in out["peer"]:
            print(f"{r['server']:>20} {r['clients']:>7} {r['ok']:>4} {r['req_per_s']:>7.2f} {r['tokens_per_s']:>8.1f} "
                  f"{r['p50_s']:>7.3f} {r['p99_s']:>7.3f}")
        for clients in (1, 4, 16):
            o, t = peer.get(("ours", clients)), peer.get(("transformers serve", clients))
            if o and t:
                print(f"ours / transformers serve at {clients:>2} clients: throughput {o['req_per_s'] / t['req_per_s']:.2f}x, "
                      f"tokens/s {o['tokens_per_s'] / max(t['tokens_per_s'], 1e-9):.2f}x, "
                      f"p50 {o['p50_s']:.3f} vs {t['p50_s']:.3f} s")
    out["ratios"] = {"batching_x16": x16, "serve_overhead": overhead, "serve_overhead_sql": overhead_sql,
                     "swap_vs_reload": swap, "swap_vs_reload_load_only": load_only,
                     "replicas_peak": top, "replicas_end": reps[-1] if reps else None}


if __name__ == "__main__":
    sys.exit(main())
