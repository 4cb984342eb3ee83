"""The model side of serving, without Ray: one base, LoRA adapters loaded by folder, and continuous
batching. serving/generator.py wraps it in a Serve deployment; tests and benchmarks call it directly.

    engine = engine_for("/path/to/best_adapter", max_batch_size=16)   # the base its card.json names
    engine = Engine(base_model="embedded:micro-llama", max_batch_size=16)   # or a base by name (NF4 default)
    info = engine.add_adapter("sql@1a2b", "/path/to/best_adapter")   # reads card.json: task, prompt version
    [out] = engine.generate([Job("sql@1a2b", prompt)])                 # Job per request, any mix of adapters
    ticket = engine.submit(Job(...), notify=callback)                  # from any thread; ticket.result()

Generation is batched per decoding step, not per request (iteration-level, "continuous" batching): one
thread owns the model and runs a loop over the rows in flight. Before every step, waiting requests are
prefilled together and their KV cache is joined to the running rows' (left-padded to a common length);
after it, rows that hit end-of-text, a stop string or their max_tokens leave at once and their callers
are answered. So a short answer never waits for a long one in the same batch, and a request never waits for a batch to
drain; a static batch (`generate` of Hugging Face over a fixed batch) runs as long as its longest row.
A prompt that begins like a kept one (the same template and CREATE TABLE text) starts from that prefix's KV
and prefills only the rest (prefix caching, serving/kvcache.py).

A batch may mix adapters: PEFT runs each row through its own LoRA weights (`adapter_names`); a batch of
one adapter runs it as the active adapter, without that per-row split. Rows decode greedily or sampled
(temperature, top_p, and a seed of their own). A row's own failure (logits all NaN, a seed torch cannot
take, an error in its stop strings) ends that row alone; a temperature too small for float32 decodes
greedily. An adapter is refused unless it was trained on this very base (model, revision, quantization
and, for the embedded model, the weights' sha256) with a prompt version this code renders. An adapter
removed while rows still use it leaves when they finish.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shared.artifacts import base_identity, base_of, read_card
from shared.config import ConfigError, ModelConfig, QuantizationConfig, TrialConfig
from shared.prompts import PromptFormat, PromptError, format_of, prompt_ids


@dataclass(frozen=True)
class AdapterInfo:
    id: str  # the id it is loaded under (PEFT adapter name)
    path: str
    task: str  # sql or code: how prompts are rendered and answers cut
    prompt_format: PromptFormat  # the card's prompt version, checked against this engine's tokenizer
    base_model: str
    card: dict = field(repr=False, compare=False)
    load_s: float = 0.0


@dataclass
class Job:
    """One request as the engine takes it (the HTTP routes build it; nothing else crosses to the model)."""

    adapter: str  # an id added with add_adapter
    prompt: str  # the rendered prompt (render() for task requests, raw for /v1/completions)
    max_tokens: int = 128  # this request's budget of new tokens (the server's cap is checked before)
    temperature: float = 0.0  # 0: greedy; so small that it cannot be sampled (1/t overflows): greedy too
    top_p: float = 1.0
    seed: int | None = None  # a sampled row's own RNG: the same seed gives the same text, whatever the batch
    stop: tuple[str, ...] = ()  # the text ends before the first of these, and the row leaves the batch there


@dataclass
class Output:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of text or a stop string) or "length" (max_tokens, or the model's context)


class AdapterMismatch(ConfigError):
    """The adapter was trained on another base, or with a prompt version this code does not render."""


class Cancelled(Exception):
    """The ticket was cancelled before it finished."""


class Ticket:
    """One request in the engine: its tokens so far, and its end. Written by the engine's loop thread only."""

    def __init__(self, engine: Engine, job: Job, ids: list[int], notify: Callable[[], None] | None, every_token: bool):
        self.engine, self.job, self.ids = engine, job, ids
        self.tokens: list[int] = []  # generated, end-of-text excluded
        self.finish: str | None = None  # "stop", "length" or "error" once done
        self.cut: int | None = None  # where the text ends: the first stop string's start
        self.error: BaseException | None = None
        self.cancelled = False
        self.pos = len(ids)  # position of the next token fed to the model
        self.rng = None  # torch.Generator of a seeded sampled row
        self._notify, self._every_token = notify, every_token
        self._done = threading.Event()
        self._sent = ""  # text handed out by new_text()
        self._scanned = 0  # characters of the text already searched for stop strings

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """Drops the row at the engine's next step (a caller gone, a timeout); no-op once done."""
        if not self.done:
            self.cancelled = True
            self.engine._wake()

    def wait(self, timeout: float | None = None) -> Output:
        if not self._done.wait(timeout):
            raise TimeoutError(f"generation not done after {timeout} s")
        return self.result()

    def result(self) -> Output:
        if self.error is not None:
            raise self.error
        if self.cancelled and self.finish is None:
            raise Cancelled("cancelled")
        tokens = list(self.tokens)
        return Output(self.text(tokens), len(self.ids), len(tokens), self.finish or "length")

    def text(self, tokens: list[int] | None = None) -> str:
        text = self.engine.decode(list(self.tokens) if tokens is None else tokens)
        return text if self.cut is None else text[:self.cut]

    def take(self) -> tuple[str, bool]:
        """(the text since the last take, whether the ticket is done); raises the row's error once done."""
        done = self.done
        piece = self.new_text()
        if done:
            self.result()
        return piece, done

    def new_text(self) -> str:
        """The text generated since the last call ("" if none yet). A piece that ends inside a character
        (an incomplete byte sequence) is held back until the character is whole."""
        done = self.done
        text = self.text()
        if not done:  # hold back what may yet turn out to be the start of a stop string
            text = text[:len(text) - _held(text, self.job.stop)]
        if not text.startswith(self._sent) or (text.endswith("\ufffd") and not done):
            return ""
        piece, self._sent = text[len(self._sent):], text
        return piece

    # ------------------------------------------------------------------------- loop thread only
    def _token(self, token: int, eos: int | None, max_positions: int | None) -> None:
        if token == eos:
            self.finish = "stop"
        else:
            self.tokens.append(token)
            self.pos += 1
            if self.job.stop and self._stopped():
                self.finish = "stop"
            elif len(self.tokens) >= self.job.max_tokens or (max_positions and self.pos >= max_positions):
                self.finish = "length"
        if self._every_token and self.finish is None and self._notify:
            self._notify()

    def _stopped(self) -> bool:
        """Whether the text now holds a stop string; searches only what the last token could have completed."""
        text = self.engine.decode(list(self.tokens))
        start = max(0, self._scanned - max(len(s) for s in self.job.stop) + 1)
        self._scanned = len(text)
        found = [i for s in self.job.stop if (i := text.find(s, start)) >= 0]
        if found:
            self.cut = min(found)
        return bool(found)

    def _end(self, error: BaseException | None = None) -> None:
        self.error = self.error or error
        self._done.set()
        if self._notify:
            self._notify()


def _quant_words(q: QuantizationConfig) -> str:
    return "16 bit" if q.mode == "16bit" else f"4 bit {q.quant_type}{' double-quantized' if q.double_quant else ''}"


def _held(text: str, stops: tuple[str, ...]) -> int:
    """How many characters at the end of text are the beginning of a stop string (0 if none)."""
    return max((k for s in stops for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])), default=0)


def _pick(logits, job: Job, rng) -> int:
    """One row's next token: argmax, or sampled with its temperature and top_p. Logits that cannot be
    sampled (NaN or infinite after dividing by a temperature too small for float32) fall back to greedy
    over the finite logits; a row whose logits are all NaN or infinite raises, for that row alone."""
    import torch

    x = logits.float()
    nan = torch.isnan(x)
    if bool(nan.any()) or bool(torch.isneginf(x).all()):
        if bool((nan | torch.isneginf(x)).all()):
            raise FloatingPointError("the model's logits for this request are all NaN or -inf")
        x = torch.where(nan, torch.tensor(float("-inf"), device=x.device), x)
    greedy = int(x.argmax())  # a +inf logit is the greedy pick; sampling then falls back to it (inf - inf)
    if job.temperature <= 0:
        return greedy
    scaled = (x - x.max()) / job.temperature  # at most 0: exp never overflows
    probs = torch.softmax(scaled, dim=-1)
    if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0:
        return greedy  # temperature below float32's range (e.g. 5e-324): the distribution is the argmax
    if job.top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        outside = sorted_p.cumsum(0) - sorted_p > job.top_p  # keep the smallest set reaching top_p
        sorted_p[outside] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=rng))


def base_key(model: ModelConfig, quant: QuantizationConfig) -> str:
    """Adapters whose bases have the same key share an engine: model (revision included) and quantization."""
    return json.dumps([_weights(model), quant.model_dump(mode="json")], sort_keys=True)


def _weights(model: ModelConfig) -> dict:
    """What picks a base's weights: the prompt format is the adapter's, and adapters of either share a base."""
    return model.model_dump(mode="json", exclude={"prompt_format"})


def engine_for(folder: str | Path, **kwargs) -> Engine:
    """An engine on the base an adapter folder was trained on, as its card says: the same model, revision
    and quantization (mode, type, double quantization, compute dtype), found by the same code as
    shared.artifacts.load_adapter (base_of). kwargs: Engine's threads, max_batch_size, batch_wait_s."""
    return Engine(*base_of(folder), **kwargs)


class Engine:
    def __init__(self, base_model: str | ModelConfig, quantization: QuantizationConfig | None = None,
                 threads: int | None = None, max_batch_size: int = 16, batch_wait_s: float = 0.0,
                 prefix_cache_mb: float = 256):
        import torch

        from serving.kvcache import PrefixStore
        from shared.models import load_base, load_tokenizer

        self.threads = threads
        if threads:
            torch.set_num_threads(threads)
        self.model_cfg = base_model if isinstance(base_model, ModelConfig) else ModelConfig(name_or_path=base_model)
        self.quant = quantization or QuantizationConfig()
        self.key = base_key(self.model_cfg, self.quant)
        start = time.perf_counter()
        self.base = load_base(self.model_cfg, self.quant)
        self.tokenizer = load_tokenizer(self.model_cfg)
        self.base_load_s = time.perf_counter() - start
        self.identity = base_identity(TrialConfig.model_validate({"model": self.model_cfg.model_dump(), "data": {"task": "sql"}}))
        self.model = None  # the PeftModel, once the first adapter is added
        self.adapters: dict[str, AdapterInfo] = {}
        self.max_batch_size = max_batch_size  # rows in flight at once (1: one request at a time)
        self.batch_wait_s = batch_wait_s  # an idle engine's first request waits this long for company
        self.on_step: Callable[[int], None] | None = None  # told the rows of every forward pass (metrics)
        # prompts' KV kept for requests that begin the same way (serving/kvcache.py); 0 MB: none
        self.prefixes = PrefixStore(int(prefix_cache_mb * 2**20)) if prefix_cache_mb > 0 else None
        self.on_prefill: Callable[[int, int], None] | None = None  # told (prompt tokens, of them reused) per row
        self.lock = threading.Lock()  # the model: a forward pass, or adding/removing an adapter
        self._cv = threading.Condition()  # the queue, pins and retiring adapters
        self._queue: deque[Ticket] = deque()
        self._pins: Counter[str] = Counter()  # adapter -> tickets submitted and not yet ended
        self._retiring: dict[str, AdapterInfo] = {}  # removed while pinned; deleted when unpinned
        self._rows: list[Ticket] = []  # in flight (loop thread only), in the KV cache's row order
        self._cache = None
        self._mask = None
        self._thread: threading.Thread | None = None
        self._closed = False
        cfg = self.base.config
        self._max_positions = getattr(cfg, "max_position_embeddings", None)
        # On a CPU, SDPA's flash kernel is slow for one query per row (a decoding step): 0.77 ms per layer
        # for 16 rows of the micro model, where eager attention makes the whole step 30% faster; at a
        # prefill and for one or two rows SDPA is as fast or faster. GPUs keep SDPA throughout.
        self._attn = self._attn_default = cfg._attn_implementation
        self._eager_decode = self.base.device.type == "cpu" and self._attn_default == "sdpa"

    # ------------------------------------------------------------------------------------- adapters

    def check(self, path: str | Path, adapter_id: str | None = None) -> tuple[dict, TrialConfig]:
        """Reads an adapter folder's card; refuses one that was not trained on this very base: another
        model, revision, weights (sha256) or quantization. The compute dtype is the arithmetic's precision,
        not the weights: an engine made with an explicit one (tests compare in float32) takes adapters of
        any; an engine made from a card (engine_for) has the card's."""
        card, cfg = read_card(path)
        name = adapter_id or Path(path).name
        theirs, ours = card.get("base_model", {}), self.identity
        if theirs.get("sha256") and theirs.get("sha256") != ours.get("sha256"):
            raise AdapterMismatch(f"adapter {name!r} was trained on base {theirs.get('name_or_path')!r} (other weights)")
        model, quant = base_of(path)
        if self.quant.compute_dtype != "auto":
            quant = quant.model_copy(update={"compute_dtype": self.quant.compute_dtype})
        if _weights(model) != _weights(self.model_cfg) or quant != self.quant:
            raise AdapterMismatch(
                f"adapter {name!r} was trained on base {model.name_or_path!r} (revision {model.revision}, "
                f"{_quant_words(quant)}); this engine's base is {self.model_cfg.name_or_path!r} (revision "
                f"{self.model_cfg.revision}, {_quant_words(self.quant)})")
        try:
            format_of(card["prompt_version"], self.tokenizer)
        except PromptError as e:
            raise AdapterMismatch(f"adapter {name!r}: {e}") from None
        return card, cfg

    def add_adapter(self, adapter_id: str, path: str | Path) -> AdapterInfo:
        from peft import PeftModel

        start = time.perf_counter()
        card, cfg = self.check(path, adapter_id)
        with self.lock:
            with self._cv:
                if adapter_id in self.adapters:
                    return self.adapters[adapter_id]
                if adapter_id in self._retiring:  # removed, but still in use: its weights never left
                    self.adapters[adapter_id] = self._retiring.pop(adapter_id)
                    return self.adapters[adapter_id]
            if self.model is None:
                self.model = PeftModel.from_pretrained(self.base, str(path), adapter_name=adapter_id)
            else:
                # low_cpu_mem_usage: the new LoRA layers are made empty and filled from the file, not
                # randomly initialized first (0.145 -> 0.115 s for a rank-16 adapter of the micro model)
                self.model.load_adapter(str(path), adapter_name=adapter_id, low_cpu_mem_usage=True)
            self.model.eval()
            info = AdapterInfo(adapter_id, str(path), cfg.data.task, format_of(card["prompt_version"], self.tokenizer),
                               cfg.model.name_or_path, card, time.perf_counter() - start)
            with self._cv:
                self.adapters[adapter_id] = info
        return info

    def remove_adapter(self, adapter_id: str) -> None:
        """New requests for it fail at once; rows in flight on it finish first, then its weights go."""
        with self.lock:
            with self._cv:
                info = self.adapters.pop(adapter_id, None)
                if info is None:
                    return
                if self._pins[adapter_id]:
                    self._retiring[adapter_id] = info
                    return
            self._delete(adapter_id)

    def _delete(self, adapter_id: str) -> None:
        """PEFT side of a removal (self.lock held); its kept prompts go too."""
        if self.prefixes is not None:
            self.prefixes.drop(adapter_id)
        if adapter_id not in self.model.peft_config:
            return
        if len(self.model.peft_config) > 1:
            if adapter_id in self.model.active_adapters:
                self.model.set_adapter(next(a for a in self.model.peft_config if a != adapter_id))
            self.model.delete_adapter(adapter_id)
        # The last adapter stays in the PeftModel (PEFT keeps one); it is unreachable by id.

    # ---------------------------------------------------------------------------------- generation

    def render(self, adapter_id: str, fields: dict) -> str:
        """The prompt of a task request ({question, context} or {instruction, input}), as trained."""
        info = self.adapters[adapter_id]
        return info.prompt_format.prompt(info.task, fields)

    def answer(self, adapter_id: str, generated: str) -> str:
        info = self.adapters[adapter_id]
        return info.prompt_format.answer(info.task, generated)

    def count_tokens(self, prompt: str) -> int:
        return len(self._encode(prompt))

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _encode(self, prompt: str) -> list[int]:
        return prompt_ids(self.tokenizer, prompt)

    def submit(self, job: Job, notify: Callable[[], None] | None = None, every_token: bool = False) -> Ticket:
        """Queues one request; returns at once. notify() is called from the loop thread when the ticket
        ends, and after every token too with every_token. KeyError for an adapter not loaded."""
        ticket = Ticket(self, job, self._encode(job.prompt), notify, every_token)
        with self._cv:
            if self._closed:
                raise RuntimeError("engine closed")
            if job.adapter not in self.adapters:
                raise KeyError(f"adapter not loaded: {job.adapter}")
            self._pins[job.adapter] += 1
            self._queue.append(ticket)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="engine-loop", daemon=True)
                self._thread.start()
            self._cv.notify()
        return ticket

    def generate(self, jobs: list[Job]) -> list[Output]:
        """One output per job, in order, batched with each other and with whatever else is in flight."""
        unknown = {j.adapter for j in jobs} - set(self.adapters)
        if unknown:
            raise KeyError(f"adapters not loaded: {sorted(unknown)}")
        tickets = [self.submit(j) for j in jobs]
        return [t.wait() for t in tickets]

    def stream(self, job: Job) -> Iterator[str]:
        """Text pieces as they are generated; closing the iterator early cancels the request."""
        ready = threading.Event()
        ticket = self.submit(job, notify=ready.set, every_token=True)
        try:
            while True:
                ready.wait()
                ready.clear()
                piece, done = ticket.take()
                if piece:
                    yield piece
                if done:
                    return
        finally:
            ticket.cancel()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify()

    # ------------------------------------------------------------------------------ the loop thread

    def _loop(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)  # intra-op threads are per thread
        while True:
            with self._cv:
                while not self._queue and not self._rows and not self._closed:
                    self._cv.wait()
                if self._closed:
                    break
                if not self._rows and self.batch_wait_s and len(self._queue) < self.max_batch_size:
                    self._cv.wait(self.batch_wait_s)
                new = []
                while self._queue and len(self._rows) + len(new) < self.max_batch_size:
                    t = self._queue.popleft()
                    if t.cancelled or t.job.max_tokens <= 0:
                        self._end(t)
                    else:
                        new.append(t)
            # A row's own sampling or stopping fails that row alone (_take); a failed forward pass fails the
            # rows in it: a prefill only the new rows (the running rows' cache is joined after it succeeds).
            if new:
                try:
                    self._prefill(new)
                except Exception as e:
                    for t in new:
                        if t not in self._rows:
                            self._end(t, e)
            try:
                self._drop_finished()
                if self._rows:
                    self._step()
                    self._drop_finished()
            except Exception as e:
                for t in self._rows:
                    self._end(t, e)
                self._rows, self._cache, self._mask = [], None, None
        for t in [*self._rows, *self._queue]:
            self._end(t, RuntimeError("engine closed"))

    def _forward(self, rows: list[Ticket], **inputs):
        import torch

        names = [t.job.adapter for t in rows]
        attn = self._attn_default
        if self._eager_decode and inputs["input_ids"].shape[1] == 1 and len(rows) > 2:
            attn = "eager"
        with self.lock, torch.no_grad():
            if attn != self._attn:
                self.base.set_attn_implementation(attn)
                self._attn = attn
            extra = {}
            if len(set(names)) > 1:
                extra["adapter_names"] = names
            elif names[0] not in self.model.active_adapters:
                self.model.set_adapter(names[0])
            out = self.model(**inputs, use_cache=True, logits_to_keep=1, **extra)
        if self.on_step:
            self.on_step(len(rows))
        return out.logits[:, -1, :]

    def _prefill(self, new: list[Ticket]) -> None:
        """The new rows' prompts through the model. A row whose prompt begins like a kept one starts from that
        prefix's KV and runs only the rest: the cache holds the reused prefixes right-aligned in `width`
        columns, the input the rest right-aligned in `span` (left padding in each, hidden by the mask)."""
        import torch

        from serving.kvcache import prefilled, row_kv

        device = self.base.device
        found = [self.prefixes.find(t.job.adapter, t.ids) if self.prefixes is not None else (0, None) for t in new]
        # The input is one block of `span` columns, as wide as the longest rest; a row whose rest is shorter
        # reuses that much less of its prefix (those tokens are computed, as a pad would be), so that its
        # prefix and rest meet without a gap of padding: the joined cache stays as narrow as the prompts.
        span = max(len(t.ids) - n for t, (n, _) in zip(new, found))
        found = [(max(0, len(t.ids) - span), kv) if n else (0, None) for t, (n, kv) in zip(new, found)]
        reused = [n for n, _ in found]
        rest = [t.ids[n:] for t, n in zip(new, reused)]
        width = max(reused)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (span - len(r)) + r for r in rest], device=device)
        mask = torch.tensor([[0] * (width - n) + [1] * n + [0] * (span - len(r)) + [1] * len(r)
                             for n, r in zip(reused, rest)], device=device)
        cache = prefilled(found, width)  # a step writes into spare room, not a copy of the whole cache
        logits = self._forward(new, input_ids=ids, attention_mask=mask,
                               position_ids=(mask.cumsum(-1) - 1).clamp(min=0)[:, width:], cache=cache)
        if self.prefixes is not None:
            for i, (t, n, r) in enumerate(zip(new, reused, rest)):
                if self.prefixes.wanted(len(t.ids), n):
                    columns = [slice(width - n, width), slice(width + span - len(r), width + span)]
                    self.prefixes.put(t.job.adapter, t.ids, row_kv(cache, i, columns))
        if self.on_prefill:
            for t, n in zip(new, reused):
                self.on_prefill(len(t.ids), n)
        for t in new:
            if t.job.temperature > 0 and t.job.seed is not None:
                try:
                    t.rng = torch.Generator(device=device).manual_seed(t.job.seed)
                except Exception as e:  # a seed torch cannot take (above 2**64: ValueError)
                    t.error, t.finish = ValueError(f"seed: {e}"), "error"
        self._take(new, logits)
        self._join(cache, mask)
        self._rows.extend(new)

    def _step(self) -> None:
        import torch

        device = self.base.device
        rows = self._rows
        ids = torch.tensor([[t.tokens[-1]] for t in rows], device=device)
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(rows), 1)], dim=1)
        logits = self._forward(rows, input_ids=ids, attention_mask=self._mask,
                               position_ids=torch.tensor([[t.pos - 1] for t in rows], device=device),
                               cache=self._cache)
        self._take(rows, logits)

    def _take(self, rows: list[Ticket], logits) -> None:
        """Picks each row's next token. An error here (its sampling, its stop strings) ends that row alone:
        it leaves the batch at the next _drop_finished with its error, the others decode on."""
        import torch

        eos = self.tokenizer.eos_token_id
        greedy = logits.argmax(-1).tolist()  # one call for the batch; _pick for the rows that need more
        plain = torch.isfinite(logits).all(-1).tolist()
        for i, t in enumerate(rows):
            if t.finish is not None:
                continue
            try:
                token = greedy[i] if plain[i] and t.job.temperature <= 0 else _pick(logits[i], t.job, t.rng)
                t._token(token, eos, self._max_positions)
            except Exception as e:
                t.error, t.finish = e, "error"

    def _join(self, cache, mask) -> None:
        """Adds freshly prefilled rows to the running ones: both left-padded to one length, then stacked."""
        import torch
        import torch.nn.functional as F

        from serving.kvcache import stack

        if self._cache is None:
            self._cache, self._mask = cache, mask
            return
        mine, theirs = self._mask.shape[1], mask.shape[1]
        grow_mine, grow_theirs = max(0, theirs - mine), max(0, mine - theirs)
        stack(self._cache, cache)
        self._mask = torch.cat([F.pad(self._mask, (grow_mine, 0)), F.pad(mask, (grow_theirs, 0))])

    def _drop_finished(self) -> None:
        """Rows that are done or cancelled leave the batch (and the cache); their callers are told."""
        import torch

        from serving.kvcache import keep_rows

        keep = [i for i, t in enumerate(self._rows) if t.finish is None and not t.cancelled]
        if len(keep) == len(self._rows):
            return
        gone = [t for i, t in enumerate(self._rows) if i not in set(keep)]
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache = self._mask = None
        else:
            idx = torch.tensor(keep, device=self._mask.device)
            mask = self._mask[idx]
            first = int(mask.any(0).nonzero()[0])  # columns that are padding in every remaining row go
            self._mask = mask[:, first:]
            keep_rows(self._cache, keep, first)
        for t in gone:
            self._end(t)

    def _end(self, ticket: Ticket, error: BaseException | None = None) -> None:
        """A ticket leaves the engine: unpinned, its adapter deleted if it was retiring, then answered (so
        a caller answered on a removed adapter finds it gone)."""
        adapter = ticket.job.adapter
        with self._cv:
            self._pins[adapter] -= 1
            retire = self._pins[adapter] <= 0 and adapter in self._retiring
            if self._pins[adapter] <= 0:
                del self._pins[adapter]
        try:
            if retire:
                self._retire(adapter)
        finally:
            ticket._end(error)

    def _retire(self, adapter: str) -> None:
        with self.lock:
            with self._cv:
                if self._pins[adapter] or adapter not in self._retiring:
                    return
                del self._retiring[adapter]
            self._delete(adapter)
