"""A small UNet for images [B, C, H, W]: residual blocks, GroupNorm, SiLU, time embedding,
optional self-attention at low resolution, dropout, configurable widths and levels; with ``text_dim``,
cross-attention to a caption's token states wherever there is self-attention (the low resolutions only:
at every level it doubled the step time here) and its sentence vector in the time embedding.

Sides that do not divide by 2^(levels−1) are padded (replicate) up to the next multiple and cropped
back, so 28×28 MNIST runs at 32×32 inside the network; callers never see the padding.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cond import Cond
from ..prompts import TEXT, TEXT_MASK
from .embeddings import TimeEmbedding


MIN_GROUP = 4  # channels per GroupNorm group, at least


def norm_groups(ch: int) -> int:
    """GroupNorm's group count for ``ch`` channels: the largest of 32, 16, … 1 that divides it and leaves
    each group at least 4 channels. A group of one channel would subtract each channel's own mean over the
    image, and with it the time (and caption) embedding a ResBlock adds just before its second norm."""
    return next((g for g in (32, 16, 8, 4, 2) if ch % g == 0 and ch // g >= MIN_GROUP), 1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(norm_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, ch: int, heads: int = 4) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        self.heads = heads if ch % heads == 0 else 1

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))  # [B, C, H, W]


class CrossAttention(nn.Module):
    """Image positions attend to the caption's tokens; padded tokens are masked out, so an output does
    not depend on the other captions of its batch (every caption has at least [CLS] and [SEP]). The
    output projection starts at zero: the block starts as the identity."""

    def __init__(self, ch: int, text_dim: int, heads: int = 4) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups(ch), ch)
        self.q = nn.Conv2d(ch, ch, 1)
        self.kv = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, 2 * ch))
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.heads = heads if ch % heads == 0 else 1

    def forward(self, x: Tensor, text: Tensor, mask: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q = self.q(self.norm(x)).reshape(b, self.heads, c // self.heads, h * w).transpose(-1, -2)  # [B, h, HW, c]
        k, v = self.kv(text).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # [B, h, L, c]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :].bool())
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """F(z, t, cond) for images. ``mults[i]`` scales ``width`` at level i; attention at levels whose
    side is ≤ ``attn_res``."""

    def __init__(
        self,
        channels: int,
        size: int,
        width: int = 32,
        mults: Sequence[int] = (1, 2),
        blocks: int = 1,
        attn_res: int = 4,
        dropout: float = 0.0,
        num_classes: int | None = None,
        guidance: bool = False,
        text_dim: int | None = None,
    ) -> None:
        super().__init__()
        # How to rebuild this module (a run trained with it records them; see fewstep.runs.build).
        self.init_kwargs = {"channels": channels, "size": size, "width": width, "mults": list(mults), "blocks": blocks,
                            "attn_res": attn_res, "dropout": dropout, "num_classes": num_classes,
                            "guidance": guidance, "text_dim": text_dim}
        self.multiple = 2 ** (len(mults) - 1)
        emb_dim = 4 * width
        self.time = TimeEmbedding(width, emb_dim, num_classes, guidance, text_dim)
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        side = -(-size // self.multiple) * self.multiple
        chans = [width * m for m in mults]

        self.down = nn.ModuleList()
        skips = [width]
        cin = width
        for i, ch in enumerate(chans):
            for _ in range(blocks):
                self.down.append(ResBlock(cin, ch, emb_dim, dropout))
                if side <= attn_res:
                    self.down.extend(self._attention(ch, text_dim))
                cin = ch
                skips.append(ch)
            if i < len(chans) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
                side //= 2
        self.mid = nn.ModuleList([ResBlock(cin, cin, emb_dim, dropout), *self._attention(cin, text_dim),
                                  ResBlock(cin, cin, emb_dim, dropout)])

        self.up = nn.ModuleList()
        for i, ch in reversed(list(enumerate(chans))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(cin + skips.pop(), ch, emb_dim, dropout))
                if side <= attn_res:
                    self.up.extend(self._attention(ch, text_dim))
                cin = ch
            if i > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                side *= 2
        self.out = nn.Sequential(nn.GroupNorm(norm_groups(cin), cin), nn.SiLU(), nn.Conv2d(cin, channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @staticmethod
    def _attention(ch: int, text_dim: int | None) -> list[nn.Module]:
        return [Attention(ch)] + ([CrossAttention(ch, text_dim)] if text_dim else [])

    def forward(self, z: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        h_in, w_in = z.shape[-2:]
        pad_h, pad_w = (-h_in) % self.multiple, (-w_in) % self.multiple
        if pad_h or pad_w:
            z = F.pad(z, (0, pad_w, 0, pad_h), mode="replicate")
        emb = self.time(t, cond)
        text = (cond[TEXT], cond[TEXT_MASK]) if self.init_kwargs["text_dim"] else ()

        def apply(layer: nn.Module, h: Tensor) -> Tensor:
            if isinstance(layer, ResBlock):
                return layer(h, emb)
            return layer(h, *text) if isinstance(layer, CrossAttention) else layer(h)

        h = self.inp(z)
        hs = [h]
        for layer in self.down:
            h = apply(layer, h)
            if isinstance(layer, (Attention, CrossAttention)):
                hs[-1] = h  # attention refines the skip its ResBlock left
            else:
                hs.append(h)
        for layer in self.mid:
            h = apply(layer, h)
        for layer in self.up:
            h = apply(layer, torch.cat([h, hs.pop()], dim=1) if isinstance(layer, ResBlock) else h)
        return self.out(h)[..., :h_in, :w_in]
