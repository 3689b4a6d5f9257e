"""Captions as a condition: each distinct caption encoded once, referred to by an integer id.

A text-conditioned batch carries ``cond["caption"]``, [B] int64 ids into a :class:`PromptBank`, instead of
the token states themselves. Everything that handles a condition — slicing, gathering, sharding over
ranks, condition dropout, the 2B call of guidance — then works on captions as it does on class labels,
with the null caption "" as id 0. Only :class:`TextConditioned`, in front of the backbone, turns ids into
the encoder's token states and mask (docs/math.md §13), padded to the longest caption of *this* batch.

One bank per encoder spec per process (:func:`prompt_bank`), so a teacher and its student, or a run and
its evaluation, give the same caption the same id.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .cond import Cond

CAPTION = "caption"       # cond key: [B] int64 ids into the bank
TEXT, TEXT_MASK = "text", "text_mask"  # what the backbone reads: [B, L, D] token states, [B, L] bool
NULL_CAPTION = 0          # the id of "" (the unconditional model)
ENCODE_CHUNK = 256        # captions per encoder call when many new ones arrive at once

Encoder = Callable[[Sequence[str]], "tuple[Tensor, Tensor]"]


class PromptBank:
    """Distinct captions → ids, and ids → token states; "" is id 0. New captions are encoded on first
    sight, in chunks, and kept (the encoder is frozen, so a caption's encoding never changes)."""

    def __init__(self, encoder: Encoder, dim: int) -> None:
        self.encoder, self.dim = encoder, int(dim)
        self.texts: list[str] = []
        self._ids: dict[str, int] = {}
        self._states: list[Tensor] = []   # per caption: [L_i, D], its real tokens only
        self._tables: dict[str, tuple[Tensor, Tensor]] = {}  # per device: padded [N, L, D] and lengths [N]
        self.ids([""])

    def __len__(self) -> int:
        return len(self.texts)

    def __deepcopy__(self, memo: dict) -> "PromptBank":
        return self  # an EMA copy of a backbone shares its bank (ids must agree)

    def ids(self, texts: Sequence[str]) -> Tensor:
        """[len(texts)] int64 ids, encoding the captions not seen before."""
        new = list(dict.fromkeys(t for t in texts if t not in self._ids))
        for start in range(0, len(new), ENCODE_CHUNK):
            chunk = new[start:start + ENCODE_CHUNK]
            states, mask = self.encoder(chunk)
            if states.ndim != 3 or states.shape[-1] != self.dim or mask.shape != states.shape[:2]:
                raise ValueError(f"the text encoder returned states {list(states.shape)} and mask {list(mask.shape)}; "
                                 f"expected [B, L, {self.dim}] and [B, L]")
            for text, s, m in zip(chunk, states, mask.bool()):
                self._ids[text] = len(self.texts)
                self.texts.append(text)
                self._states.append(s[m].detach().float().cpu())
        if new:
            self._tables.clear()
        return torch.tensor([self._ids[t] for t in texts], dtype=torch.long)

    def lookup(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Token states [B, L, D] and mask [B, L] of the captions ``ids`` on their device, L the longest of
        these captions: the padding a caption gets depends only on its batch, and the mask hides it."""
        table, lengths = self._table(ids.device)
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= len(table)):
            raise ValueError(f"caption ids must be in 0…{len(table) - 1}, got {int(ids.min())}…{int(ids.max())}")
        n = lengths[ids]
        longest = int(n.max()) if len(ids) else 1
        mask = torch.arange(longest, device=ids.device)[None] < n[:, None]
        return table[ids, :longest], mask

    def _table(self, device: torch.device) -> tuple[Tensor, Tensor]:
        key = str(device)
        if key not in self._tables:
            lengths = torch.tensor([len(s) for s in self._states])
            table = torch.zeros(len(self._states), int(lengths.max()), self.dim)
            for i, s in enumerate(self._states):
                table[i, :len(s)] = s
            self._tables[key] = table.to(device), lengths.to(device)
        return self._tables[key]


_BANKS: dict[str, PromptBank] = {}


def prompt_bank(spec: str) -> PromptBank:
    """The process's bank for the text encoder ``spec`` ("minilm", "tiny:PATH", "module:Factory")."""
    if spec not in _BANKS:
        from .text import text_encoder

        with torch.random.fork_rng(devices=[]):  # building an encoder must not move the seeded global RNG that
            encoder = text_encoder(spec)          # initialises the backbone next (else weights depend on a cache)
        _BANKS[spec] = PromptBank(encoder, encoder.dim)
    return _BANKS[spec]


class TextConditioned(nn.Module):
    """A backbone conditioned on captions: replaces ``cond["caption"]`` ids by the bank's token states and
    mask (``cond["text"]``, ``cond["text_mask"]``) and calls ``net``; any other key passes through. A call
    without captions gets the null caption."""

    def __init__(self, net: nn.Module, bank: PromptBank) -> None:
        super().__init__()
        self.net, self.bank = net, bank

    def forward(self, z: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        cond = dict(cond or {})
        ids = cond.pop(CAPTION, None)
        if ids is None:
            ids = torch.full((len(z),), NULL_CAPTION, dtype=torch.long, device=z.device)
        cond[TEXT], cond[TEXT_MASK] = self.bank.lookup(ids.long())
        return self.net(z, t, cond)
