"""Text conditioning end to end (docs/math.md §13): the prompt bank's ids, the cross-attention UNet's batch
independence under padding, caption dropout and classifier-free guidance on captions, and the CLI — a tiny
text teacher on digits-text (tiny random encoder, not MiniLM) trained, sampled by prompt, guided, distilled,
evaluated and resumed; a user's captioned folder and .npz."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_fewstep
from safetensors.torch import load_file

pytest.importorskip("tokenizers")

TOKENIZER = (Path(__file__).parent / "data" / "tokenizer.json").resolve()
ENC = f"tiny:{TOKENIZER}"
SHORT, LONG = "a thin one", "a thick wide seven leaning right, drawn slowly with a fine black pen on white paper"
PROMPT = "a thick seven leaning right"
# The tiny text teacher (shared by the CLI tests and the resume test, which must match it bit for bit).
TEACHER = ["--data", "digits-text", "--text-encoder", ENC, "--iters", "4", "--batch", "8", "--width", "8",
           "--eval-samples", "10", "--no-progress"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_line_error(code: int, err: str, *words: str) -> bool:
    lines = err.strip().splitlines()
    return code == 2 and len(lines) == 1 and lines[0].startswith("fewstep: error: ") and all(w in err for w in words)


def weights(run: Path) -> dict[str, torch.Tensor]:
    (path,) = run.glob("weights-*.safetensors")
    return load_file(str(path))


@pytest.fixture(scope="module")
def tiny():
    from fewstep.text import text_encoder

    return text_encoder(ENC)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A 4-iteration digits-text teacher, trained through the CLI with the default --cond (auto)."""
    from fewstep.cli.main import main

    out = tmp_path_factory.mktemp("text_teacher") / "teacher"
    assert main(["train", "--out", str(out), *TEACHER]) == 0
    return out


# --- the prompt bank -----------------------------------------------------------------------------------------

class CountingEncoder:
    """The tiny encoder, recording every caption it is asked to encode."""

    def __init__(self, inner) -> None:
        self.inner, self.dim, self.seen = inner, inner.dim, []

    def __call__(self, texts):
        self.seen.extend(texts)
        return self.inner(list(texts))


def test_prompt_bank_ids_padding_mask_and_one_encoding_per_caption(tiny) -> None:
    from fewstep.prompts import PromptBank

    encoder = CountingEncoder(tiny)
    bank = PromptBank(encoder, tiny.dim)
    assert bank.texts == [""] and bank.ids([""]).tolist() == [0]
    ids = bank.ids([SHORT, LONG, SHORT, "", LONG])
    assert ids.dtype == torch.long and ids.tolist() == [1, 2, 1, 0, 2]
    assert bank.ids([LONG, SHORT]).tolist() == [2, 1] and bank.ids(["zero"]).tolist() == [3]
    assert sorted(encoder.seen) == sorted(["", SHORT, LONG, "zero"])  # each distinct caption encoded once

    n = {t: len(tiny.tokenizer.ids([t])[0][0]) for t in ("", SHORT, LONG)}
    assert n[""] == 2 and n[SHORT] < n[LONG]
    states, mask = bank.lookup(torch.tensor([1, 0, 2, 1]))
    assert states.shape == (4, n[LONG], tiny.dim) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [n[SHORT], n[""], n[LONG], n[SHORT]]
    assert all(bool(row[:k].all()) and not bool(row[k:].any()) for row, k in zip(mask, mask.sum(1).tolist()))
    assert bool((states[~mask] == 0).all())
    own, own_mask = tiny([SHORT])
    assert torch.equal(states[0, :n[SHORT]], own[0][own_mask[0]])
    # Padded to the longest caption among the ids asked for, not the longest in the bank.
    short_states, short_mask = bank.lookup(torch.tensor([1, 0]))
    assert short_states.shape == (2, n[SHORT], tiny.dim) and short_mask.sum(1).tolist() == [n[SHORT], 2]
    assert torch.equal(short_states[0], states[0, :n[SHORT]])
    with pytest.raises(ValueError, match="caption ids"):
        bank.lookup(torch.tensor([4]))


def test_one_bank_per_encoder_spec(tiny) -> None:
    from fewstep.prompts import prompt_bank

    bank = prompt_bank(ENC)
    assert prompt_bank(ENC) is bank and bank.dim == tiny.dim
    assert bank.ids([""]).tolist() == [0] and torch.equal(bank.ids([PROMPT]), bank.ids([PROMPT]))


# --- the text UNet: batch independence, the condition reaches the output ---------------------------------------

def text_net(tiny, seed: int = 0):
    """A text UNet on 8×8 images behind TextConditioned, every weight redrawn small (so the zero-initialised
    output and cross-attention projections do not hide the text). Width 32, so that its second level (64
    channels, 2 per GroupNorm group) passes on the time embedding, and with it the sentence vector: with one
    channel per group, as at width 8 or 16, the GroupNorm after the embedding removes it."""
    from fewstep.models import UNet
    from fewstep.prompts import PromptBank, TextConditioned

    torch.manual_seed(seed)
    net = UNet(1, 8, width=32, mults=(1, 2), attn_res=4, text_dim=tiny.dim)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    return TextConditioned(net, PromptBank(tiny, tiny.dim)).eval()


def garbage_padding(monkeypatch, bank, mask_all: bool = False) -> None:
    """The bank's lookup with random values where the mask says padding (and, ``mask_all``, the mask all True)."""
    lookup = type(bank).lookup

    def noisy(self, ids):
        states, mask = lookup(self, ids)
        states = torch.where(mask[..., None], states, 5.0 * torch.randn(states.shape, generator=gen(99)))
        return states, torch.ones_like(mask) if mask_all else mask

    monkeypatch.setattr(type(bank), "lookup", noisy)


def test_a_prompts_output_does_not_depend_on_the_other_prompts_of_its_batch(tiny, monkeypatch) -> None:
    from fewstep.models import embeddings
    from fewstep.models.unet import CrossAttention

    model = text_net(tiny)
    assert sum(isinstance(m, CrossAttention) for m in model.modules()) == 4  # at 4×4: 1 down, 1 mid, 2 up
    z = torch.randn(1, 1, 8, 8, generator=gen(0)).repeat(3, 1, 1, 1)
    t = torch.full((3,), 0.4)

    def run(texts):
        with torch.no_grad():
            return model(z[:len(texts)], t[:len(texts)], {"caption": model.bank.ids(texts)})

    def moved(a, b):  # the largest change relative to the output's size
        return float((a - b).abs().max() / alone.abs().max())

    alone, batched = run([SHORT]), run([SHORT, LONG, ""])
    assert moved(batched[0], alone[0]) < 1e-5 and moved(batched[1], run([LONG])[0]) < 1e-5
    assert moved(batched[2], run([""])[0]) < 1e-5
    # Whatever the padding holds, the mask hides it from the cross-attention and the sentence vector.
    with monkeypatch.context() as m:
        garbage_padding(m, model.bank)
        assert moved(run([SHORT, LONG, ""])[0], alone[0]) < 1e-5
    # The test can fail: with the padding unmasked everywhere, or only in the sentence vector, the short
    # prompt's output moves by far more than that.
    with monkeypatch.context() as m:
        garbage_padding(m, model.bank, mask_all=True)
        assert moved(run([SHORT, LONG, ""])[0], alone[0]) > 1e-2
    with monkeypatch.context() as m:
        garbage_padding(m, model.bank)
        vectors = embeddings.sentence_vectors
        m.setattr(embeddings, "sentence_vectors", lambda states, mask: vectors(states, torch.ones_like(mask)))
        assert moved(run([SHORT, LONG, ""])[0], alone[0]) > 1e-3


def test_different_prompts_give_different_outputs(tiny) -> None:
    model = text_net(tiny)
    z, t = torch.randn(1, 1, 8, 8, generator=gen(1)).repeat(3, 1, 1, 1), torch.full((3,), 0.5)
    with torch.no_grad():
        out = model(z, t, {"caption": model.bank.ids(["a thin zero", "a thick eight", ""])})
        default = model(z[:1], t[:1])  # no caption: the null caption
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert (out[i] - out[j]).abs().max() > 1e-3 * out.abs().max(), (i, j)  # ≫ the 1e-5 of batch independence
    assert torch.allclose(default[0], out[2], atol=1e-6)


def test_the_time_embedding_reaches_a_narrow_unet(tiny) -> None:
    """At width 8 (8 and 16 channels), t and the sentence vector change the output: with one channel per
    GroupNorm group (as it was) the norm after the embedding's shift removed it, and neither did."""
    from fewstep.models import UNet
    from fewstep.prompts import PromptBank, TextConditioned

    torch.manual_seed(0)
    net = UNet(1, 8, width=8, mults=(1, 2), attn_res=4, text_dim=tiny.dim)  # cross-attention output zero: only the embedding
    torch.nn.init.normal_(net.out[-1].weight, std=0.1)
    model = TextConditioned(net, PromptBank(tiny, tiny.dim)).eval()
    z = torch.randn(1, 1, 8, 8, generator=gen(8)).repeat(2, 1, 1, 1)
    with torch.no_grad():
        by_t = model(z, torch.tensor([0.1, 0.9]))
        by_prompt = model(z, torch.tensor([0.5, 0.5]), {"caption": model.bank.ids(["a thin zero", "a thick eight"])})
    assert (by_t[0] - by_t[1]).abs().max() > 1e-2 * by_t.abs().max()
    assert (by_prompt[0] - by_prompt[1]).abs().max() > 1e-3 * by_prompt.abs().max()


# --- caption dropout -----------------------------------------------------------------------------------------

def test_caption_dropout_replaces_ids_by_the_null_caption_at_the_rate_asked() -> None:
    from fewstep.objectives import ConditionDropout
    from fewstep.objectives.diffusion import DiffusionObjective
    from fewstep.runs.build import cond_nulls
    from fewstep.runs.config import TrainConfig
    from fewstep.runs.objective import make_objective
    from fewstep.schedules import CosineSchedule

    config = TrainConfig(cond="text", text_encoder=ENC, cond_dropout=0.3)
    nulls = cond_nulls(config, 10)
    assert nulls == {"caption": 0}
    teacher = make_objective(config, SimpleNamespace(num_classes=10), torch.device("cpu"), None).objective
    assert isinstance(teacher, DiffusionObjective) and teacher.nulls == nulls and teacher.cond_dropout == 0.3
    n = 20000
    ids = torch.randint(1, 50, (n,), generator=gen(2))
    seen = []

    class Spy:
        schedule = CosineSchedule()

        def __call__(self, z_t, t, cond=None):
            from fewstep.param import Prediction

            seen.append(cond["caption"].clone())
            return Prediction(z_t, z_t)

    DiffusionObjective(cond_dropout=0.2, nulls=nulls)(Spy(), torch.zeros(n, 2), {"caption": ids}, 0, gen(3))
    dropped = seen[0] == 0
    assert abs(float(dropped.double().mean()) - 0.2) < 0.015
    assert torch.equal(seen[0][~dropped], ids[~dropped])
    DiffusionObjective(cond_dropout=0.2, nulls=nulls)(Spy(), torch.zeros(n, 2), {"caption": ids}, 0, gen(3))
    assert torch.equal(seen[1], seen[0])  # the same generator draws the same

    class Inner:
        name, sampler = "inner", None

        def __call__(self, denoiser, x, cond, step, generator):
            seen.append(cond["caption"].clone())

    ConditionDropout(Inner(), 0.05, nulls)(None, torch.zeros(n, 2), {"caption": ids}, 0, gen(4))
    dropped = seen[-1] == 0
    assert abs(float(dropped.double().mean()) - 0.05) < 0.008 and torch.equal(seen[-1][~dropped], ids[~dropped])


# --- guidance on captions ------------------------------------------------------------------------------------

class Counting:
    """A denoiser that records the batch size and the condition of every call."""

    def __init__(self, inner) -> None:
        self.inner, self.schedule, self.batches, self.conds = inner, inner.schedule, [], []

    def __call__(self, z_t, t, cond=None):
        self.batches.append(len(z_t))
        self.conds.append(dict(cond or {}))
        return self.inner(z_t, t, cond)


def test_guidance_on_captions_is_the_two_call_formula_in_one_batched_call(tiny) -> None:
    from fewstep.guidance import Guided
    from fewstep.param import Denoiser
    from fewstep.schedules import CosineSchedule

    model = text_net(tiny, seed=1)
    denoiser = Counting(Denoiser(model, CosineSchedule()).eval())
    b = 4
    z, t = torch.randn(b, 1, 8, 8, generator=gen(5)), torch.rand(b, generator=gen(6)) * 0.8 + 0.1
    cond = {"caption": model.bank.ids([SHORT, LONG, "a thick eight", SHORT])}
    with torch.no_grad():
        x_c = denoiser(z, t, cond).x_hat
        x_u = denoiser(z, t, {"caption": torch.zeros(b, dtype=torch.long)}).x_hat
        assert not torch.allclose(x_c, x_u, atol=1e-3)
        for w in (0.5, 2.0, 4.0):
            denoiser.batches.clear()
            guided = Guided(denoiser, w, {"caption": 0})(z, t, cond).x_hat
            assert denoiser.batches == [2 * b]
            assert torch.allclose(guided, x_u + w * (x_c - x_u), atol=1e-5), w
        denoiser.batches.clear()
        assert torch.equal(Guided(denoiser, 1.0, {"caption": 0})(z, t, cond).x_hat, x_c) and denoiser.batches == [b]


# --- the CLI on the tiny teacher -----------------------------------------------------------------------------

def test_auto_cond_is_text_for_captioned_data_and_prompts_sample(teacher, tmp_path, cli) -> None:
    import fewstep

    config = json.loads((teacher / "config.json").read_text())
    assert config["cond"] == "text" and config["text_encoder"] == ENC
    code, _, err = cli("sample", "--run", teacher, "--prompt", PROMPT, "-n", "4", "--steps", "2", "--png", tmp_path / "x.png")
    assert code == 0, err
    assert (tmp_path / "x.png").stat().st_size > 0 and not list(tmp_path.glob("*.npz"))
    (tmp_path / "p.txt").write_text(f"{PROMPT}\n\n   \na thin zero standing upright\n", encoding="utf-8")
    code, _, err = cli("sample", "--run", teacher, "--prompts", tmp_path / "p.txt", "-n", "5", "--steps", "2",
                         "--out", tmp_path / "p.npz")
    assert code == 0, err
    saved = np.load(tmp_path / "p.npz")
    assert saved["prompts"].dtype.kind == "U" and saved["samples"].shape == (5, 8, 8, 1)
    assert saved["prompts"].tolist() == [PROMPT, "a thin zero standing upright"] * 2 + [PROMPT]
    # The same through Python: the file's prompts in turn are the samples of the CLI.
    run = fewstep.load(teacher, device="cpu")
    assert np.array_equal(run.sample(5, steps=2, prompt=[PROMPT, "a thin zero standing upright"]), saved["samples"])
    assert torch.equal(run.sample_tensor(4, steps=2), run.sample_tensor(4, steps=2, prompt=""))  # default: unconditional


def test_the_teachers_prompts_reach_its_network(teacher) -> None:
    """Sampling hands each sample its prompt's id, in every call."""
    import fewstep

    run = fewstep.load(teacher, device="cpu")
    spy = Counting(run.denoiser)
    run.sample_tensor(3, steps=2, prompt=[PROMPT, "a thin zero"], denoiser=spy)
    assert spy.batches == [3, 3]
    assert [[run.denoiser.backbone.bank.texts[i] for i in c["caption"].tolist()] for c in spy.conds] == [[PROMPT, "a thin zero", PROMPT]] * 2


def test_sample_cli_refuses_bad_prompt_requests_in_one_line(teacher, tmp_path, cli) -> None:
    from fewstep.runs import train
    from fewstep.runs.config import TrainConfig

    classy, plain = tmp_path / "classy", tmp_path / "plain"
    train(TrainConfig(data="gaussians8", iters=2, batch=16, eval_samples=10, eval_steps=2), classy, progress=False)
    train(TrainConfig(data="moons", iters=2, batch=16, eval_samples=10, eval_steps=2), plain, progress=False)
    out = tmp_path / "s.npz"
    code, _, err = cli("sample", "--run", teacher, "--prompt", PROMPT, "--class", "3", "-n", "2", "--out", out)
    assert one_line_error(code, err, "--class"), err
    code, _, err = cli("sample", "--run", classy, "--prompt", PROMPT, "-n", "2", "--out", out)
    assert one_line_error(code, err, "--prompt", "not conditioned on captions"), err
    code, _, err = cli("sample", "--run", plain, "--prompt", PROMPT, "-n", "2", "--out", out)
    assert one_line_error(code, err, "--prompt", "not conditioned on captions"), err
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    code, _, err = cli("sample", "--run", teacher, "--prompts", tmp_path / "empty.txt", "-n", "2", "--out", out)
    assert one_line_error(code, err, "--prompts", "no prompts"), err
    code, _, err = cli("sample", "--run", teacher, "--prompt", PROMPT, "-n", "2")
    assert one_line_error(code, err, "--out", "--png"), err
    code, _, err = cli("sample", "--run", teacher, "--prompt", PROMPT, "--prompts", tmp_path / "empty.txt", "-n", "2", "--out", out)
    assert one_line_error(code, err, "--prompts"), err
    assert not out.exists()


def test_guided_prompt_sampling_counts_two_calls_per_step(teacher, tmp_path, cli) -> None:
    code, _, err = cli("sample", "--run", teacher, "--prompt", PROMPT, "--guidance", "2", "--steps", "3", "-n", "2",
                       "--out", tmp_path / "g.npz")
    assert code == 0, err
    saved = np.load(tmp_path / "g.npz")
    assert int(saved["nfe"]) == 6 and float(saved["guidance"]) == 2.0
    code, _, err = cli("sample", "--run", teacher, "--prompt", PROMPT, "--steps", "3", "-n", "2", "--out", tmp_path / "u.npz")
    assert code == 0, err
    assert int(np.load(tmp_path / "u.npz")["nfe"]) == 3


def test_a_prompt_beyond_256_tokens_samples_with_a_warning(teacher, tmp_path) -> None:
    long = " ".join(["thick"] * 300)
    proc = run_fewstep("sample", "--run", teacher, "--prompt", long, "-n", "2", "--steps", "2", "--out", tmp_path / "l.npz",
                       cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "fewstep: warning: 1 caption(s) longer than 256 tokens truncated to 256" in proc.stderr and np.load(tmp_path / "l.npz")["prompts"].tolist() == [long] * 2


# --- distillation --------------------------------------------------------------------------------------------

def test_students_of_the_text_teacher_sample_prompts_in_s_calls(teacher, tmp_path, cli) -> None:
    import fewstep

    common = ["--teacher", teacher, "--student-steps", "2", "--iters", "2", "--batch", "8", "--eval-samples", "10", "--no-progress"]
    code, _, err = cli("distill", "--out", tmp_path / "fixed", "--guidance", "2", *common)
    assert code == 0, err
    code, _, err = cli("distill", "--out", tmp_path / "range", "--guidance-range", "1,3", *common)
    assert code == 0, err
    fixed, ranged = fewstep.load(tmp_path / "fixed", device="cpu"), fewstep.load(tmp_path / "range", device="cpu")
    assert fixed.config.objective == ranged.config.objective == "cd" and fixed.is_text and ranged.is_text
    assert fixed.card.hyper["guidance"] == 2.0 and ranged.guidance_range == (1.0, 3.0)
    assert fixed.config.text_encoder == ranged.config.text_encoder == ENC
    for name, extra in (("fixed", []), ("range", ["--guidance", "2.5"])):
        code, _, err = cli("sample", "--run", tmp_path / name, "--prompt", PROMPT, "-n", "3", "--out", tmp_path / f"{name}.npz", *extra)
        assert code == 0, (name, err)
        saved = np.load(tmp_path / f"{name}.npz")
        assert int(saved["nfe"]) == 2 and saved["prompts"].tolist() == [PROMPT] * 3, name
    # The w-conditioned student's network gets w and the prompt in each of its S calls of B.
    spy = Counting(ranged.denoiser)
    ranged.sample_tensor(3, prompt=PROMPT, guidance=2.5, denoiser=spy)
    assert spy.batches == [3, 3] and all(c["guidance"].tolist() == [2.5] * 3 for c in spy.conds)
    assert all(ranged.denoiser.backbone.bank.texts[i] == PROMPT for c in spy.conds for i in c["caption"].tolist())


def test_a_student_with_another_text_encoder_is_refused(teacher, tmp_path, cli) -> None:
    code, _, err = cli("distill", "--teacher", teacher, "--out", tmp_path / "bad", "--student-steps", "2", "--iters", "2",
                       "--guidance", "2", "--text-encoder", f"{ENC}#dim=16", "--no-progress")
    assert one_line_error(code, err, "--teacher", "text encoder"), err
    assert not (tmp_path / "bad" / "checkpoint.json").exists()


# --- a user's captioned data ---------------------------------------------------------------------------------

def _square(grey: int, side: int = 8) -> np.ndarray:
    img = np.zeros((side, side), dtype=np.uint8)
    img[2:6, 2:6] = grey
    return img


@pytest.mark.parametrize("kind", ["folder", "npz"])
def test_users_captioned_data_trains_a_text_teacher(kind, tmp_path, cli) -> None:
    from PIL import Image

    import fewstep

    n = 20
    texts = [("a bright square" if i % 2 else "a dark square") for i in range(n)]
    if kind == "folder":
        data = tmp_path / "data"
        data.mkdir()
        for i in range(n):
            Image.fromarray(_square(250 if i % 2 else 60)).save(data / f"{i:02d}.png")
        (data / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"{i:02d}.png", "text": texts[i]}) + "\n"
                                                     for i in range(n)), encoding="utf-8")
    else:
        data = tmp_path / "data.npz"
        images = np.stack([_square(250 if i % 2 else 60) for i in range(n)])[..., None]
        np.savez(data, x=images, captions=np.array(texts, dtype=str))
    code, _, err = cli("train", "--data", data, "--out", tmp_path / "run", "--text-encoder", ENC, "--iters", "2", "--batch", "8",
                       "--width", "8", "--eval-samples", "4", "--no-progress")
    assert code == 0, err
    run = fewstep.load(tmp_path / "run", device="cpu")
    assert run.config.cond == "text" and run.is_text and run.num_classes is None
    code, _, err = cli("sample", "--run", tmp_path / "run", "--prompt", "a bright square", "-n", "2", "--steps", "2",
                       "--out", tmp_path / "s.npz")
    assert code == 0, err
    saved = np.load(tmp_path / "s.npz")
    assert saved["samples"].shape == (2, 8, 8, 1) and saved["prompts"].tolist() == ["a bright square"] * 2


# --- evaluation ----------------------------------------------------------------------------------------------

def test_evaluate_scores_prompt_fidelity(teacher, tmp_path, cli) -> None:
    code, out, err = cli("evaluate", "--run", teacher, "--steps", "2", "-n", "20", "--seeds", "1", "--json", tmp_path / "e.json")
    assert code == 0, err
    assert all(f"{e} fidelity (real " in out for e in ("digit", "thickness", "slant")) and "width fidelity" not in out
    rows = json.loads((tmp_path / "e.json").read_text())["rows"]
    assert len(rows) == 1
    for attribute in ("digit", "thickness", "slant"):
        for suffix in ("", "_reference", "_chance", "_shuffled"):
            value = rows[0][f"fidelity_{attribute}{suffix}"]
            assert 0.0 <= value <= 1.0, (attribute, suffix, value)
        assert rows[0][f"fidelity_{attribute}_reference"] > rows[0][f"fidelity_{attribute}_chance"]


# --- resume --------------------------------------------------------------------------------------------------

def test_a_resumed_text_teacher_equals_the_uninterrupted_one(teacher, tmp_path, cli, monkeypatch) -> None:
    """Stopped after 2 of 4 steps, then resumed with a fresh prompt bank that other prompts filled first (so
    every caption's id differs from the first call's): the same weights as the shared uninterrupted teacher."""
    from fewstep import prompts

    out = tmp_path / "part"
    code, _, err = cli("train", "--out", out, *TEACHER, "--stop-after", "2")
    assert code == 0, err
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 2
    monkeypatch.setattr(prompts, "_BANKS", {})
    prompts.prompt_bank(ENC).ids(["something else entirely", "a thin one", PROMPT])
    code, _, err = cli("train", "--out", out, "--resume", "--no-progress")
    assert code == 0, err
    want, have = weights(teacher), weights(out)
    assert want.keys() == have.keys() and all(torch.equal(want[k], have[k]) for k in want)
