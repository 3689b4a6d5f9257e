"""A BERT encoder in plain torch: embeddings, post-LayerNorm transformer layers, the last hidden states.

Enough of BERT to run a frozen pretrained checkpoint (all-MiniLM-L6-v2, :mod:`fewstep.text.minilm`) and the
small random test encoder: word + absolute position + token-type embeddings, LayerNorm, then per layer
``x = LN(x + Attn(x))``, ``x = LN(x + W2 GELU(W1 x))`` with the exact (erf) GELU. Padded keys get a large
negative additive score, so a real token's state does not depend on what else is in its batch. No pooler,
no dropout (inference only). ``load_checkpoint`` maps the checkpoint's key names
(``encoder.layer.N.attention.self.query.weight``, …) onto this module's.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BertConfig:
        """From a checkpoint's ``config.json``; refuses what this module does not implement."""
        if d.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {d['hidden_act']!r} is not supported (only 'gelu')")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {d['position_embedding_type']!r} is not supported")
        return cls(vocab_size=int(d["vocab_size"]), hidden_size=int(d["hidden_size"]),
                   num_hidden_layers=int(d["num_hidden_layers"]),
                   num_attention_heads=int(d["num_attention_heads"]),
                   intermediate_size=int(d["intermediate_size"]),
                   max_position_embeddings=int(d["max_position_embeddings"]),
                   type_vocab_size=int(d.get("type_vocab_size", 2)),
                   layer_norm_eps=float(d.get("layer_norm_eps", 1e-12)))


class Layer(nn.Module):
    """One post-LN transformer layer: self-attention, then the feed-forward block, each with a residual."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.q = nn.Linear(c.hidden_size, c.hidden_size)
        self.k = nn.Linear(c.hidden_size, c.hidden_size)
        self.v = nn.Linear(c.hidden_size, c.hidden_size)
        self.o = nn.Linear(c.hidden_size, c.hidden_size)
        self.norm1 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.ff1 = nn.Linear(c.hidden_size, c.intermediate_size)
        self.ff2 = nn.Linear(c.intermediate_size, c.hidden_size)
        self.norm2 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """``x`` [B, L, H]; ``bias`` [B, 1, 1, L], 0 on real keys and a large negative number on padding."""
        b, n, h = x.shape
        split = lambda t: t.view(b, n, self.heads, h // self.heads).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(h // self.heads) + bias
        attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, h)
        x = self.norm1(x + self.o(attn))
        return self.norm2(x + self.ff2(F.gelu(self.ff1(x))))


class Bert(nn.Module):
    """Token ids and mask in, last hidden states out (``[B, L, hidden_size]``)."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.config = c
        self.word = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """``ids`` long [B, L], ``mask`` bool [B, L] (True = real token); every row has a real token."""
        n = ids.shape[1]
        if n > self.config.max_position_embeddings:
            raise ValueError(f"{n} tokens is more than max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        positions = torch.arange(n, device=ids.device)
        x = self.word(ids) + self.position(positions)[None] + self.token_type(torch.zeros_like(ids))
        x = self.norm(x)
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill(~mask, torch.finfo(x.dtype).min)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        return x


# The checkpoint's name (a regular expression) -> this module's, for ``BertModel``-style checkpoints.
_RENAMES = [
    (r"embeddings\.word_embeddings\.", "word."),
    (r"embeddings\.position_embeddings\.", "position."),
    (r"embeddings\.token_type_embeddings\.", "token_type."),
    (r"embeddings\.LayerNorm\.", "norm."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.query\.", r"layers.\1.q."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.key\.", r"layers.\1.k."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.value\.", r"layers.\1.v."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.o."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.norm1."),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.ff1."),
    (r"encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.ff2."),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.norm2."),
]
_UNUSED = re.compile(r"(bert\.)?(pooler\..*|embeddings\.position_ids)")


def rename(key: str) -> str | None:
    """This module's name for a checkpoint key; None for keys it has no use for (the pooler, position_ids)."""
    bare = key.removeprefix("bert.")
    if _UNUSED.fullmatch(key):
        return None
    for pattern, replacement in _RENAMES:
        if re.match(pattern, bare):
            return re.sub(pattern, replacement, bare, count=1)
    raise KeyError(f"unexpected checkpoint key {key!r}")


def load_checkpoint(model: Bert, state: Mapping[str, Tensor]) -> None:
    """Loads a ``BertModel``-style state dict into ``model``; every parameter must be there with its shape."""
    mapped = {}
    for key, value in state.items():
        name = rename(key)
        if name is not None:
            mapped[name] = value
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    if missing or unexpected:
        raise KeyError(f"checkpoint does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, value in mapped.items():
        if value.shape != own[name].shape:
            raise ValueError(f"{name}: checkpoint shape {tuple(value.shape)}, model {tuple(own[name].shape)}")
    model.load_state_dict({k: v.to(torch.float32) for k, v in mapped.items()})


def init_random(model: Bert, generator: torch.Generator) -> None:
    """Deterministic random weights from ``generator`` alone (not the global RNG): embeddings N(0, 1),
    linear weights N(0, 1/fan_in), biases 0, LayerNorms the identity; parameters in a fixed order."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            module_name, _, kind = name.rpartition(".")
            module = model.get_submodule(module_name)
            if isinstance(module, nn.LayerNorm):
                p.fill_(1.0 if kind == "weight" else 0.0)
            elif kind == "bias":
                p.zero_()
            elif isinstance(module, nn.Embedding):
                p.copy_(torch.randn(p.shape, generator=generator))
            else:
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(p.shape[1]))
