"""The model deployment: one replica runs an engine per base (serving/engine.py), each base rebuilt from
the adapter cards (model, revision, quantization), and loads LoRA adapters by model id
(`@serve.multiplexed`, LRU). Adapters trained on the same base share its engine and batch together;
an adapter of another base gets an engine of its own on the same replica.

    Generator(threads=1, max_batch_size=16, batch_wait_timeout_s=0, prefix_cache_mb=256, preload=[folder, ...])
    await gen.generate(job, folder) -> engine.Output          # job: engine.Job, folder: the adapter's
    async for item in gen.stream(job, folder): ...            # str pieces, then the engine.Output

It runs without Ray as well (the route tests and the benchmark call it in process); generator_deployment
makes it a Serve deployment.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from serving.engine import Engine, Job, Output, base_key
from shared.artifacts import base_of


class Generator:
    def __init__(self, threads: int = 1, max_batch_size: int = 16, batch_wait_timeout_s: float = 0.0,
                 prefix_cache_mb: float = 256, preload: list[str] | tuple[str, ...] = ()):
        from ray.util import metrics

        self.threads, self.max_batch_size, self.batch_wait_s = threads, max_batch_size, batch_wait_timeout_s
        self.prefix_cache_mb = prefix_cache_mb
        self.engines: dict[str, Engine] = {}  # base key -> its engine
        self.engine_of: dict[str, Engine] = {}  # model id -> the engine holding it
        self.paths: dict[str, str] = {}  # model id -> folder, told by the ingress with each request
        self._made = threading.Lock()
        self.m_batch = metrics.Histogram("qlora_serve_batch_size", "Rows in one forward pass (prefill or decode step)",
                                         boundaries=[1, 2, 4, 8, 16, 32, 64])
        # Ray exports a histogram's _sum from bucket midpoints (a pass of 1 row counts 0.5), so the mean batch size
        # is this exact count of rows over qlora_serve_batch_size_count
        self.m_rows = metrics.Counter("qlora_serve_batch_rows", "Rows summed over forward passes")
        self.m_prompt = metrics.Counter("qlora_serve_prompt_tokens", "Prompt tokens of requests started, by where "
                                        "their KV came from: run through the model, or reused from the prefix cache",
                                        tag_keys=("source",))
        self.m_loads = metrics.Counter("qlora_serve_adapter_loads", "Adapters loaded into a replica", tag_keys=("adapter",))
        self.m_evictions = metrics.Counter("qlora_serve_adapter_evictions", "Adapters evicted (LRU)", tag_keys=("adapter",))
        self.m_load_s = metrics.Histogram("qlora_serve_adapter_load_seconds", "Time to load an adapter",
                                          boundaries=[0.01, 0.05, 0.1, 0.5, 1, 5, 30])
        for folder in preload:  # the bases of the adapters known at deploy time: the first request does not wait
            self.engine_for(folder)

    def engine_for(self, folder: str) -> Engine:
        """The engine of the base this adapter folder was trained on, made at its first adapter."""
        model, quant = base_of(folder)
        key = base_key(model, quant)
        with self._made:
            if key not in self.engines:
                engine = Engine(model, quant, threads=self.threads, max_batch_size=self.max_batch_size,
                                batch_wait_s=self.batch_wait_s, prefix_cache_mb=self.prefix_cache_mb)
                engine.on_step, engine.on_prefill = self._on_step, self._on_prefill
                self.engines[key] = engine
            return self.engines[key]

    def _on_step(self, rows: int) -> None:
        self.m_batch.observe(rows)
        self.m_rows.inc(rows)

    def _on_prefill(self, prompt_tokens: int, reused: int) -> None:
        if reused:
            self.m_prompt.inc(reused, tags={"source": "prefix_cache"})
        self.m_prompt.inc(prompt_tokens - reused, tags={"source": "computed"})

    async def load(self, model_id: str):
        """Loads an adapter by model id (the multiplexed loader; wrapped in @serve.multiplexed by the deployment)."""
        path = self.paths[model_id]
        engine = await asyncio.to_thread(self.engine_for, path)
        info = await asyncio.to_thread(engine.add_adapter, model_id, path)
        self.engine_of[model_id] = engine
        self.m_loads.inc(tags={"adapter": model_id.split("@", 1)[0]})
        self.m_load_s.observe(info.load_s)
        return _Loaded(self, model_id)

    async def _submit(self, job: Job, folder: str, ready: asyncio.Event, every_token: bool):
        """The job into its engine's batch; ready is set (on this loop) as it progresses."""
        self.paths[job.adapter] = folder
        loop = asyncio.get_running_loop()
        for _ in range(3):  # an adapter evicted between its load and the submit is loaded again
            loaded = await self.load(job.adapter)
            try:
                ticket = self.engine_of[job.adapter].submit(job, notify=lambda: loop.call_soon_threadsafe(ready.set),
                                                            every_token=every_token)
                return ticket, loaded
            except KeyError:
                continue
        raise RuntimeError("adapters kept being evicted under this request; raise max_adapters_per_replica")

    async def generate(self, job: Job, folder: str) -> Output:
        ready = asyncio.Event()
        ticket, _loaded = await self._submit(job, folder, ready, every_token=False)
        try:
            while not ticket.done:
                await ready.wait()
                ready.clear()
            return ticket.result()
        finally:
            ticket.cancel()  # a call cancelled by its caller (timeout, disconnect) frees its row; no-op once done

    async def stream(self, job: Job, folder: str) -> AsyncIterator[str | Output]:
        """Text pieces as they are generated, then the engine's Output (finish reason, token counts)."""
        ready = asyncio.Event()
        ticket, _loaded = await self._submit(job, folder, ready, every_token=True)
        try:
            while True:
                await ready.wait()
                ready.clear()
                piece, done = ticket.take()  # raises the row's error once done
                if piece:
                    yield piece
                if done:
                    yield ticket.result()
                    return
        finally:
            ticket.cancel()


class _Loaded:
    """What the multiplexed loader returns; Serve calls __del__ when the LRU evicts it."""

    def __init__(self, gen: Generator, model_id: str):
        self.gen, self.model_id = gen, model_id

    def __del__(self):
        gen = self.__dict__.pop("gen", None)
        if gen is None or not getattr(gen, "_serve_multiplexed", False):
            return  # without Serve every load makes a new one, evicting nothing: adapters stay loaded
        engine = gen.engine_of.get(self.model_id)
        if engine is not None and self.model_id in engine.adapters:
            engine.remove_adapter(self.model_id)
            gen.m_evictions.inc(tags={"adapter": self.model_id.split("@", 1)[0]})


def generator_deployment(cfg, preload: list[str]):
    """The Serve deployment of the Generator for an AppConfig, its bases preloaded from these folders."""
    from ray import serve

    m = cfg.model
    cls = type("Generator", (Generator,), {
        "_serve_multiplexed": True,
        "load": serve.multiplexed(max_num_models_per_replica=m.max_adapters_per_replica)(Generator.load),
    })
    a = m.autoscaling
    return serve.deployment(
        cls, name="Generator",
        ray_actor_options={"num_cpus": m.resources.num_cpus, "num_gpus": m.resources.num_gpus},
        autoscaling_config={
            "min_replicas": a.min_replicas, "initial_replicas": max(a.min_replicas, 1), "max_replicas": a.max_replicas,
            "target_ongoing_requests": a.target_ongoing_requests,
            "upscale_delay_s": a.upscale_delay_s, "downscale_delay_s": a.downscale_delay_s,
        },
        max_ongoing_requests=m.max_ongoing_requests, max_queued_requests=m.max_queued_requests,
    ).bind(max(1, int(m.resources.num_cpus)), cfg.batching.max_batch_size, cfg.batching.batch_wait_timeout_s,
           cfg.batching.prefix_cache_mb, list(preload))
