"""The model side of serving, without Ray: one 4-bit base, LoRA adapters loaded by folder, batched and
streamed generation. serving/app.py wraps it in a Serve deployment; tests and benchmarks call it directly.

    engine = Engine(base_model="embedded:micro-llama")
    info = engine.add_adapter("sql@1a2b", "/path/to/best_adapter")   # reads card.json: task, prompt version
    [out] = engine.generate([Job("sql@1a2b", prompt)])                 # Job per request, any mix of adapters

A batch may mix adapters: PEFT runs each row through its own LoRA weights (`adapter_names`), so one
forward pass serves the SQL and the code adapter together. Rows are grouped only by how they decode
(greedy, or sampled with a temperature/top_p/seed). An adapter is refused unless it was trained on this
very base (name and, for the embedded model, the weights' sha256) with a prompt version this code renders.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shared.artifacts import base_identity, read_card
from shared.config import ConfigError, ModelConfig, QuantizationConfig, TrialConfig
from shared.prompts import extract_answer, prompt_for


@dataclass(frozen=True)
class AdapterInfo:
    id: str  # the id it is loaded under (PEFT adapter name)
    path: str
    task: str  # sql or code: how prompts are rendered and answers cut
    prompt_version: str
    base_model: str
    card: dict = field(repr=False, compare=False)
    load_s: float = 0.0


@dataclass
class Job:
    adapter: str  # an id added with add_adapter
    prompt: str  # the rendered prompt (render() for task requests, raw for /v1/completions)
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None

    def decoding(self) -> tuple:
        """Rows of one batch must decode alike; a seeded row decodes alone (its seed is the whole RNG)."""
        if self.temperature <= 0:
            return ("greedy",)
        return ("sample", self.temperature, self.top_p, self.seed if self.seed is not None else id(self))


@dataclass
class Output:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of text) or "length" (max_new_tokens)


class AdapterMismatch(ConfigError):
    """The adapter was trained on another base, or with a prompt version this code does not render."""


class Engine:
    def __init__(self, base_model: str | ModelConfig, quantization: QuantizationConfig | None = None,
                 threads: int | None = None):
        import torch

        from shared.models import load_base, load_tokenizer

        if threads:
            torch.set_num_threads(threads)
        self.model_cfg = base_model if isinstance(base_model, ModelConfig) else ModelConfig(name_or_path=base_model)
        self.quant = quantization or QuantizationConfig()
        start = time.perf_counter()
        self.base = load_base(self.model_cfg, self.quant)
        self.tokenizer = load_tokenizer(self.model_cfg)
        self.base_load_s = time.perf_counter() - start
        self.identity = base_identity(TrialConfig.model_validate({"model": self.model_cfg.model_dump(), "data": {"task": "sql"}}))
        self.model = None  # the PeftModel, once the first adapter is added
        self.adapters: dict[str, AdapterInfo] = {}
        self.lock = threading.Lock()  # one generate at a time on this replica's model

    # ------------------------------------------------------------------------------------- adapters

    def check(self, path: str | Path) -> tuple[dict, TrialConfig]:
        """Reads an adapter folder's card; refuses one that was not trained on this base."""
        card, cfg = read_card(path)
        theirs, ours = card.get("base_model", {}), self.identity
        if theirs.get("name_or_path") != ours.get("name_or_path") or (
                theirs.get("sha256") and theirs.get("sha256") != ours.get("sha256")):
            raise AdapterMismatch(
                f"adapter {str(path)!r} was trained on base {theirs.get('name_or_path')!r}"
                f"{' (other weights)' if theirs.get('name_or_path') == ours.get('name_or_path') else ''}; "
                f"this server's base is {ours.get('name_or_path')!r}"
            )
        return card, cfg

    def add_adapter(self, adapter_id: str, path: str | Path) -> AdapterInfo:
        from peft import PeftModel

        start = time.perf_counter()
        card, cfg = self.check(path)
        with self.lock:
            if adapter_id in self.adapters:
                return self.adapters[adapter_id]
            if self.model is None:
                self.model = PeftModel.from_pretrained(self.base, str(path), adapter_name=adapter_id)
            else:
                self.model.load_adapter(str(path), adapter_name=adapter_id)
            self.model.eval()
            info = AdapterInfo(adapter_id, str(path), cfg.data.task, card["prompt_version"],
                               cfg.model.name_or_path, card, time.perf_counter() - start)
            self.adapters[adapter_id] = info
        return info

    def remove_adapter(self, adapter_id: str) -> None:
        with self.lock:
            if adapter_id not in self.adapters:
                return
            del self.adapters[adapter_id]
            if self.adapters:
                if adapter_id in self.model.active_adapters:
                    self.model.set_adapter(next(iter(self.adapters)))
                self.model.delete_adapter(adapter_id)
            # The last adapter stays in the PeftModel (PEFT keeps one); it is unreachable by id.

    # ---------------------------------------------------------------------------------- generation

    def render(self, adapter_id: str, fields: dict) -> str:
        """The prompt of a task request ({question, context} or {instruction, input}), as trained."""
        return prompt_for(self.adapters[adapter_id].task, fields)

    def answer(self, adapter_id: str, generated: str) -> str:
        return extract_answer(self.adapters[adapter_id].task, generated)

    def count_tokens(self, prompt: str) -> int:
        return len(self._encode(prompt))

    def _encode(self, prompt: str) -> list[int]:
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return [bos] + ids if bos is not None else ids

    def generate(self, jobs: list[Job]) -> list[Output]:
        """One output per job, in order. Jobs that decode alike share forward passes."""
        unknown = {j.adapter for j in jobs} - set(self.adapters)
        if unknown:
            raise KeyError(f"adapters not loaded: {sorted(unknown)}")
        outputs: list[Output | None] = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for i, j in enumerate(jobs):
            groups.setdefault(j.decoding(), []).append(i)
        for idx in groups.values():
            for i, out in zip(idx, self._generate_group([jobs[i] for i in idx]), strict=True):
                outputs[i] = out
        return outputs  # type: ignore[return-value]

    def _generate_group(self, jobs: list[Job]) -> list[Output]:
        import torch

        enc = [self._encode(j.prompt) for j in jobs]
        width = max(map(len, enc))
        pad = self.tokenizer.pad_token_id
        device = self.base.device
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in enc], device=device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc], device=device)
        first = jobs[0]
        kwargs = dict(do_sample=first.temperature > 0)
        if first.temperature > 0:
            kwargs.update(temperature=first.temperature, top_p=first.top_p)
        longest = max(j.max_new_tokens for j in jobs)
        with self.lock, torch.no_grad():
            if first.temperature > 0 and first.seed is not None:
                torch.manual_seed(first.seed)
            gen = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=longest, pad_token_id=pad,
                eos_token_id=self.tokenizer.eos_token_id, adapter_names=[j.adapter for j in jobs], **kwargs,
            )
        out = []
        eos = self.tokenizer.eos_token_id
        for j, e, row in zip(jobs, enc, gen[:, width:].tolist(), strict=True):
            row = row[: j.max_new_tokens]
            stop = eos in row
            if stop:
                row = row[: row.index(eos)]
            out.append(Output(self.tokenizer.decode(row, skip_special_tokens=True), len(e), len(row),
                              "stop" if stop else "length"))
        return out

    def stream(self, job: Job) -> Iterator[str]:
        """Text pieces as they are generated (one request; holds this replica's model until done)."""
        import torch
        from transformers import TextIteratorStreamer

        if job.adapter not in self.adapters:
            raise KeyError(f"adapter not loaded: {job.adapter}")
        enc = self._encode(job.prompt)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(do_sample=job.temperature > 0)
        if job.temperature > 0:
            kwargs.update(temperature=job.temperature, top_p=job.top_p)
        errors: list[BaseException] = []

        def run():
            try:
                with self.lock, torch.no_grad():
                    if job.temperature > 0 and job.seed is not None:
                        torch.manual_seed(job.seed)
                    self.model.generate(
                        input_ids=torch.tensor([enc], device=self.base.device), max_new_tokens=job.max_new_tokens,
                        pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
                        adapter_names=[job.adapter], streamer=streamer, **kwargs,
                    )
            except BaseException as e:  # surfaced to the reader below, after the streamer ends
                errors.append(e)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        for piece in streamer:
            if piece:
                yield piece
        thread.join()
        if errors:
            raise errors[0]
