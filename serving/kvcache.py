"""The engine's KV cache: each layer's keys and values live in a buffer with room to grow; and the prompts'
KV kept for later requests that begin the same way (prefix caching).

transformers' DynamicCache appends a decoding step's keys and values with `torch.cat`, which copies the whole
cache of every layer at every step. For the micro model at 16 rows of ~140 positions that copy was 37% of a
step's time on one CPU thread under torch.profiler (aten::cat), the largest single cost. Here a step writes
its one position into spare room and the layer's `keys`/`values` are views of the buffer's first positions; a buffer is reallocated, with
`ROOM` positions to spare, only when it is full or when the engine replaces `keys`/`values` (a batch joined
or rows dropped, serving/engine.py).

    cache = RoomyCache()          # what the engine passes as `cache` to the model's forward

Prefix caching: text-to-SQL requests against one database share their prompt's first ~3/4 (the template and
the CREATE TABLE text; 94 of 125 tokens on the bundled dev set, on average). PrefixStore keeps the KV of
prompts that began a new prefix, per adapter (a LoRA changes the keys and values), within a memory budget,
least recently used first out; a request whose prompt begins like a kept one prefills only the rest
(`transformers serve --continuous-batching` shares prefix blocks the same way).

    store = PrefixStore(max_bytes=256 * 2**20)
    n, kv = store.find("sql@1", ids)       # n prompt tokens whose KV is kv (per layer: keys, values [H, n, D])
    store.put("sql@1", ids, kv)            # after its prefill, if it began a new prefix
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from os.path import commonprefix

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, DynamicLayer

ROOM = 64  # positions allocated ahead: one reallocation per ROOM decoding steps of a batch


class RoomyLayer(DynamicLayer):
    """A DynamicLayer whose `keys`/`values` are views into buffers with spare positions after them."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def _owns(self, n: int) -> bool:
        """Whether `keys`/`values` are still this layer's views of its buffers (the engine may have replaced them)."""
        return (self._k is not None and n > 0 and self.keys.data_ptr() == self._k.data_ptr()
                and self.values.data_ptr() == self._v.data_ptr() and self.keys.shape[0] == self._k.shape[0]
                and self.keys.stride() == self._k.stride() and self.values.stride() == self._v.stride())

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = self.get_seq_length()
        q = key_states.shape[-2]
        if not (self._owns(n) and n + q <= self._k.shape[-2]):
            for name, new in (("keys", key_states), ("values", value_states)):
                buf = _roomy(new.shape[0], new, n + q)
                if n:
                    buf[:, :, :n] = getattr(self, name)
                _install(self, name, buf, n)
        self._k[:, :, n:n + q] = key_states
        self._v[:, :, n:n + q] = value_states
        self.keys, self.values = self._k[:, :, :n + q], self._v[:, :, :n + q]
        return self.keys, self.values

    def reset(self) -> None:
        self._k = self._v = None
        super().reset()


class RoomyCache(Cache):
    """A cache of RoomyLayers, one per decoder layer, made as the model's forward reaches them."""

    def __init__(self):
        super().__init__(layer_class_to_replicate=RoomyLayer)


def _roomy(rows: int, like: torch.Tensor, length: int) -> torch.Tensor:
    """An empty buffer of `rows` x `length` positions and ROOM more, shaped and typed like `like`."""
    return like.new_empty((rows, like.shape[1], length + ROOM, like.shape[-1]))


def _install(layer: RoomyLayer, name: str, buf: torch.Tensor, width: int) -> None:
    """`buf` becomes the layer's keys or values buffer, and its first `width` positions their view."""
    setattr(layer, "_k" if name == "keys" else "_v", buf)
    setattr(layer, name, buf[:, :, :width])


def stack(mine: Cache, theirs: Cache) -> None:
    """Joins `theirs` rows under `mine`'s, in `mine`: both left-padded (zeros: a masked position's value
    still meets a zero weight, and 0 x NaN would be NaN) to one width, copied once into buffers with room."""
    for a, b in zip(mine.layers, theirs.layers, strict=True):
        width = max(a.keys.shape[-2], b.keys.shape[-2])
        for name in ("keys", "values"):
            x, y = getattr(a, name), getattr(b, name)
            buf = _roomy(x.shape[0] + y.shape[0], x, width)
            rows = x.shape[0]
            buf[:rows, :, : width - x.shape[-2]] = 0
            buf[:rows, :, width - x.shape[-2]: width] = x
            buf[rows:, :, : width - y.shape[-2]] = 0
            buf[rows:, :, width - y.shape[-2]: width] = y
            _install(a, name, buf, width)


def keep_rows(cache: Cache, rows: list[int], first: int) -> None:
    """Keeps only these batch rows, from position column `first` on, copied once into buffers with room."""
    for layer in cache.layers:
        for name in ("keys", "values"):
            x = getattr(layer, name)
            width = x.shape[-2] - first
            buf = _roomy(len(rows), x, width)
            for j, i in enumerate(rows):
                buf[j, :, :width] = x[i, :, first:]
            _install(layer, name, buf, width)


def prefilled(rows: list[tuple[int, list | None]], width: int) -> RoomyCache:
    """A cache holding each row's reused prefix KV, right-aligned in `width` positions (left padding of zeros,
    which the attention mask hides). rows: (prefix tokens, PrefixStore.find's kv or None) per batch row."""
    cache = RoomyCache()
    if not width:
        return cache
    some = next(kv for n, kv in rows if n)
    for layer, (k0, v0) in enumerate(some):
        def row(n, kv, which, like):
            if not n:
                return like.new_zeros((like.shape[0], width, like.shape[-1]))
            return F.pad(kv[layer][which][:, :n], (0, 0, width - n, 0))
        keys = torch.stack([row(n, kv, 0, k0) for n, kv in rows])
        values = torch.stack([row(n, kv, 1, v0) for n, kv in rows])
        cache.update(keys, values, layer)
    return cache


def row_kv(cache: Cache, row: int, columns: list[slice]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One batch row's KV over the given position columns, joined: per layer (keys, values) [H, n, D], copies."""
    return [(torch.cat([layer.keys[row, :, c] for c in columns], dim=1),
             torch.cat([layer.values[row, :, c] for c in columns], dim=1)) for layer in cache.layers]


class PrefixStore:
    """Prompts' KV by adapter, for requests that begin the same way; the least recently used go past max_bytes."""

    def __init__(self, max_bytes: int, min_tokens: int = 16):
        self.max_bytes, self.min_tokens = max_bytes, min_tokens
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], list] = OrderedDict()
        self._bytes: dict[tuple[str, tuple[int, ...]], int] = {}
        self.bytes = 0
        self._lock = threading.Lock()  # the engine's loop finds and puts; removing an adapter drops from any thread

    def find(self, adapter: str, ids: list[int]) -> tuple[int, list | None]:
        """The longest kept prefix of `ids` for this adapter, short of the whole prompt (its last token must
        run through the model for the first logits): (its length, its KV), or (0, None) below min_tokens."""
        best, found, ids = 0, None, tuple(ids)
        with self._lock:
            for key in self._entries:
                if key[0] == adapter:
                    n = len(commonprefix([key[1], ids]))
                    if n > best:
                        best, found = n, key
            best = min(best, len(ids) - 1)
            if best < self.min_tokens:
                return 0, None
            self._entries.move_to_end(found)
            return best, self._entries[found]

    def wanted(self, prompt_tokens: int, reused: int) -> bool:
        """Whether a prompt is worth keeping: it began a prefix that no kept prompt had (most of it was new)."""
        return prompt_tokens >= self.min_tokens and reused < prompt_tokens // 2

    def put(self, adapter: str, ids: list[int], kv: list) -> None:
        size = sum(k.nbytes + v.nbytes for k, v in kv)
        if size > self.max_bytes:
            return
        key = (adapter, tuple(ids))
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return
            self._entries[key], self._bytes[key] = kv, size
            self.bytes += size
            while self.bytes > self.max_bytes:
                old, _ = self._entries.popitem(last=False)
                self.bytes -= self._bytes.pop(old)

    def drop(self, adapter: str) -> None:
        """An adapter's prompts go with it (one loaded again under its id may have other weights)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == adapter]:
                del self._entries[key]
                self.bytes -= self._bytes.pop(key)

    def kept(self, adapter: str | None = None) -> int:
        """How many prompts are kept (for one adapter, or all)."""
        with self._lock:
            return sum(1 for a, _ in self._entries if adapter is None or a == adapter)
