"""Text encoders behind one call, ``texts -> (states [B, L, dim], mask [B, L])``, with a per-caption cache.

:class:`CachedEncoder` is the shared front: it checks the texts, encodes each distinct caption once (later
calls read the cache), pads the batch to its longest caption and warns about truncated captions on every
call that contains one. Subclasses only say how to encode a list of captions (:meth:`CachedEncoder.encode`).
:class:`BertEncoder` runs a :class:`~fewstep.text.bert.Bert` on :class:`~fewstep.text.tokenize.WordPiece`
ids; :class:`TinyEncoder` is a small random one on the same tokenizer (fast tests); :class:`UserEncoder`
wraps a user's callable and checks what it returns.
"""
from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from ..errors import UserError
from .bert import Bert, BertConfig, init_random
from .tokenize import MAX_TOKENS, WordPiece

CACHE_BYTES = 256 << 20   # per encoder; least recently used captions are dropped beyond it


class CachedEncoder:
    """The call every encoder shares; a subclass implements :meth:`encode` and sets ``dim`` and ``name``."""

    dim: int
    name: str
    chunk = 64   # captions per forward pass when many are new

    def __init__(self, cache_bytes: int = CACHE_BYTES) -> None:
        self._cache: OrderedDict[str, tuple[Tensor, int]] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._used = 0
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> tuple[list[Tensor], list[int]]:
        """Uncached: each text's states at its real tokens (float32 [n_i, dim]) and how many tokens it lost."""
        raise NotImplementedError

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self._used = 0

    def _store(self, text: str, entry: tuple[Tensor, int]) -> None:
        size = entry[0].numel() * entry[0].element_size()
        if size > self._cache_bytes:
            return
        self._cache[text] = entry
        self._used += size
        while self._used > self._cache_bytes:
            _, (old, _) = self._cache.popitem(last=False)
            self._used -= old.numel() * old.element_size()

    def __call__(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("a text encoder takes a sequence of str (one str per caption)")
        with self._lock:
            found: dict[str, tuple[Tensor, int]] = {}
            for t in dict.fromkeys(texts):
                if t in self._cache:
                    self._cache.move_to_end(t)
                    found[t] = self._cache[t]
            new = sorted((t for t in dict.fromkeys(texts) if t not in found), key=len)
            for start in range(0, len(new), self.chunk):
                part = new[start: start + self.chunk]
                states, cuts = self.encode(part)
                for t, s, c in zip(part, states, cuts):
                    found[t] = (s, c)
                    self._store(t, (s, c))
        rows = [found[t] for t in texts]
        longest = max((s.shape[0] for s, _ in rows), default=0)
        out = torch.zeros(len(rows), longest, self.dim)
        mask = torch.zeros(len(rows), longest, dtype=torch.bool)
        for i, (s, _) in enumerate(rows):
            out[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = True
        cut = [c for _, c in rows if c]
        if cut:
            warnings.warn(f"{len(cut)} caption(s) longer than {MAX_TOKENS} tokens truncated to {MAX_TOKENS} "
                          f"({sum(cut)} token(s) cut)", stacklevel=2)
        return out, mask


class BertEncoder(CachedEncoder):
    """A frozen :class:`Bert` on a :class:`WordPiece` tokenizer: the last hidden layer at every token."""

    def __init__(self, tokenizer: WordPiece, bert: Bert, name: str, cache_bytes: int = CACHE_BYTES) -> None:
        super().__init__(cache_bytes)
        self.tokenizer = tokenizer
        self.bert = bert.eval().requires_grad_(False)
        self.dim = bert.config.hidden_size
        self.name = name

    def encode(self, texts: Sequence[str]) -> tuple[list[Tensor], list[int]]:
        ids, cuts = self.tokenizer.ids(texts)
        batch, mask = self.tokenizer.pad(ids)
        with torch.no_grad():
            states = self.bert(batch, mask)
        return [states[i, : len(row)].clone() for i, row in enumerate(ids)], cuts


class TinyEncoder(BertEncoder):
    """A small random, frozen BERT-like encoder on a WordPiece ``tokenizer.json``: deterministic weights from
    ``seed`` (a local generator), for tests and smoke runs that should not need the 83 MB MiniLM.

    ``name`` is ``tiny:PATH`` with the default sizes, else ``tiny:PATH#dim=64,layers=3,…`` (the sizes that
    differ); either form rebuilds the encoder through :func:`fewstep.text.text_encoder`.
    """

    DEFAULTS: ClassVar[dict[str, int]] = {"dim": 32, "layers": 2, "heads": 4, "seed": 0}

    def __init__(self, tokenizer_path: str | Path, dim: int = 32, layers: int = 2, heads: int = 4,
                 seed: int = 0) -> None:
        if dim < 1 or layers < 0 or heads < 1 or dim % heads:
            raise ValueError(f"TinyEncoder: dim {dim} must be a positive multiple of heads {heads}, "
                             f"layers {layers} >= 0")
        tokenizer = WordPiece.from_file(tokenizer_path)
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=dim, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=4 * dim,
                            max_position_embeddings=MAX_TOKENS)
        bert = Bert(config)
        init_random(bert, torch.Generator().manual_seed(seed))
        given = {"dim": dim, "layers": layers, "heads": heads, "seed": seed}
        options = ",".join(f"{k}={v}" for k, v in given.items() if v != self.DEFAULTS[k])
        super().__init__(tokenizer, bert, f"tiny:{tokenizer_path}" + (f"#{options}" if options else ""))


class UserEncoder(CachedEncoder):
    """A user's encoder (any callable ``texts -> (states, mask)`` with a ``dim``), cached and checked: states
    float [B, L, dim], mask [B, L], at least one real token per caption. Real tokens keep their order;
    the batch is padded on the right."""

    def __init__(self, inner: Any, name: str, cache_bytes: int = CACHE_BYTES) -> None:
        super().__init__(cache_bytes)
        self.inner = inner
        self.dim = int(inner.dim)
        self.name = name

    def _bad(self, what: str) -> UserError:
        return UserError(f"the encoder {self.name!r} returned {what}", arg="text_encoder")

    def encode(self, texts: Sequence[str]) -> tuple[list[Tensor], list[int]]:
        with torch.no_grad():
            result = self.inner(list(texts))
        if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(r, Tensor) for r in result)):
            raise self._bad(f"{type(result).__name__}, not a (states, mask) pair of tensors")
        states, mask = result
        b = len(texts)
        if states.ndim != 3 or states.shape[0] != b or states.shape[2] != self.dim:
            raise self._bad(f"states of shape {tuple(states.shape)}, not [{b}, L, {self.dim}]")
        if tuple(mask.shape) != tuple(states.shape[:2]):
            raise self._bad(f"a mask of shape {tuple(mask.shape)}, not {tuple(states.shape[:2])}")
        if not states.is_floating_point():
            raise self._bad(f"states of dtype {states.dtype}, not a float tensor")
        states = states.detach().to("cpu", torch.float32)
        mask = mask.detach().to("cpu").bool()
        if not bool(mask.any(1).all()):
            raise self._bad("a caption with no real token (its mask is all False)")
        if not bool(torch.isfinite(states[mask]).all()):
            raise self._bad("non-finite states")
        return [states[i][mask[i]].clone() for i in range(b)], [0] * b
