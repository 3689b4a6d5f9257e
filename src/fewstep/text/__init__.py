"""Frozen text encoders for text-conditioned models: captions in, token states and a mask out.

    from fewstep.text import text_encoder, sentence_vectors
    encode = text_encoder("minilm")                 # all-MiniLM-L6-v2, loaded once per process
    states, mask = encode(["a thick seven", ""])    # float32 [2, L, 384], bool [2, L]; "" is [CLS] [SEP]
    vectors = sentence_vectors(states, mask)        # [2, 384], unit norm

An encoder is any :class:`TextEncoder`: ``dim``, ``name`` (a spec that rebuilds it) and a call from a
sequence of captions to ``states`` float32 [B, L, dim] on the CPU and ``mask`` bool [B, L] (True at real
tokens), L the longest caption of that call (at most :data:`MAX_TOKENS`), without grad. Specs:
``minilm``; ``tiny:PATH`` (a small random encoder on the tokenizer file PATH); ``package.module:Factory``
(a user's class or factory, called with no arguments, returning an object with ``dim`` and a call).
Each distinct caption is encoded once and cached. ``tokenizers`` is imported only when an encoder is built.
"""
from __future__ import annotations

import importlib
import re
import threading
from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from ..errors import UserError
from .encoders import TinyEncoder, UserEncoder
from .minilm import MiniLM
from .tokenize import MAX_TOKENS

__all__ = ["MAX_TOKENS", "MiniLM", "TextEncoder", "TinyEncoder", "sentence_vectors", "text_encoder"]


@runtime_checkable
class TextEncoder(Protocol):
    dim: int
    name: str

    def __call__(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]: ...


_LOADED: dict[str, TextEncoder] = {}
_LOCK = threading.Lock()
_TINY_OPTIONS = re.compile(r"(?:(?:dim|layers|heads|seed)=\d+)(?:,(?:dim|layers|heads|seed)=\d+)*")
_USER = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def _error(message: str) -> UserError:
    return UserError(message, arg="text_encoder")


def _tiny(rest: str) -> TextEncoder:
    path, sep, options = rest.rpartition("#")
    if not sep or not _TINY_OPTIONS.fullmatch(options):
        path, options = rest, ""
    kwargs = {k: int(v) for k, v in (o.split("=") for o in options.split(",") if o)}
    if not path:
        raise _error("tiny:PATH needs the path of a tokenizer.json")
    try:
        return TinyEncoder(path, **kwargs)
    except ValueError as e:
        raise _error(str(e)) from None


def _user(spec: str) -> TextEncoder:
    module_name, _, attr = spec.partition(":")
    try:
        target = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except Exception as e:  # noqa: BLE001 -- a user's module may fail to import in any way
        raise _error(f"cannot import {spec!r} ({type(e).__name__}: {e})") from None
    if not callable(target):
        raise _error(f"{spec!r} is not callable (a class or factory called with no arguments)")
    try:
        inner = target()
    except Exception as e:  # noqa: BLE001
        raise _error(f"{spec!r}() failed ({type(e).__name__}: {e})") from None
    dim = getattr(inner, "dim", None)
    if not callable(inner) or isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise _error(f"{spec!r}() returned {type(inner).__name__}, not an encoder: it needs an int `dim` "
                     f"and a call texts -> (states, mask)")
    return UserEncoder(inner, spec)


def text_encoder(spec: str) -> TextEncoder:
    """The encoder ``spec`` names (``minilm``, ``tiny:PATH``, ``package.module:Factory``), built once per
    process and shared by later calls with the same spec."""
    if not isinstance(spec, str):
        raise _error(f"expected a spec string, got {type(spec).__name__}")
    with _LOCK:
        if spec not in _LOADED:
            if spec == "minilm":
                encoder: TextEncoder = MiniLM()
            elif spec.startswith("tiny:"):
                encoder = _tiny(spec[len("tiny:"):])
            elif _USER.fullmatch(spec):
                encoder = _user(spec)
            else:
                raise _error(f"unknown text encoder {spec!r}: expected minilm, tiny:PATH (a tokenizer.json) "
                             f"or package.module:Factory")
            _LOADED[spec] = encoder
        return _LOADED[spec]


def sentence_vectors(states: Tensor, mask: Tensor) -> Tensor:
    """One vector per caption, as sentence-transformers pools all-MiniLM-L6-v2: the mean of the token
    states over the mask, L2-normalised. ``states`` [B, L, dim], ``mask`` [B, L] -> [B, dim]."""
    m = mask.to(states.dtype).unsqueeze(-1)
    mean = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1)
