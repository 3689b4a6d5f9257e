"""WordPiece tokenisation for the text encoders: no fixed padding, no silent truncation, a mask per batch.

all-MiniLM-L6-v2's ``tokenizer.json`` pads every caption to 128 tokens and truncates at 128; both are turned
off here. Each batch is padded to its longest caption, and a caption longer than :data:`MAX_TOKENS` keeps
its first tokens and its closing special token(s) (``[SEP]``), as BERT's own truncation does, with a warning
that says how many tokens were cut. ``tokenizers`` is imported on first use.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..errors import UserError

MAX_TOKENS = 256   # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
TEXT_EXTRA = "pip install 'fewstep[text]'"


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as e:
        raise UserError(f"the text encoders need the tokenizers package ({e}); install it with "
                        f"`{TEXT_EXTRA}`", arg="text_encoder") from None
    return tokenizers


class WordPiece:
    """A ``tokenizers`` tokenizer with padding and truncation turned off; ids per text, batches padded."""

    def __init__(self, tokenizer: Any, max_tokens: int = MAX_TOKENS) -> None:
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.pad_id = tokenizer.token_to_id("[PAD]") or 0
        empty = tokenizer.encode("").ids      # [CLS] [SEP] for BERT: the null caption
        if not empty:
            raise UserError("the tokenizer adds no special tokens ([CLS] … [SEP]) around a text",
                            arg="text_encoder")
        self.tail = len(empty) - 1          # closing special tokens kept on truncation
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def from_json(cls, text: str) -> WordPiece:
        return cls(_tokenizers().Tokenizer.from_str(text))

    @classmethod
    def from_file(cls, path: str | Path) -> WordPiece:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"tokenizer file {str(path)!r} does not exist (a tokenizers tokenizer.json)",
                            arg="text_encoder")
        try:
            return cls.from_json(p.read_text(encoding="utf-8"))
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 -- the tokenizers library's own parse errors
            raise UserError(f"{str(path)!r} is not a tokenizers tokenizer.json ({type(e).__name__}: {e})",
                            arg="text_encoder") from None

    def ids(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids per text, each at most ``max_tokens`` long, and how many tokens each text lost."""
        out, cut = [], []
        for text in texts:
            ids = self.tokenizer.encode(text).ids
            over = max(0, len(ids) - self.max_tokens)
            if over:
                ids = ids[: self.max_tokens - self.tail] + ids[len(ids) - self.tail:]
            out.append(ids)
            cut.append(over)
        return out, cut

    def pad(self, ids: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        """``ids`` long [B, L] padded with [PAD] to the longest, and ``mask`` bool [B, L] (True = real)."""
        n = max((len(i) for i in ids), default=0)
        batch = torch.full((len(ids), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), n), dtype=torch.bool)
        for row, i in enumerate(ids):
            batch[row, : len(i)] = torch.tensor(i, dtype=torch.long)
            mask[row, : len(i)] = True
        return batch, mask
