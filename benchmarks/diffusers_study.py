"""Issue 10's measured study, stage 1: two diffusers teachers trained with diffusers' own recipe on digits.

    python benchmarks/diffusers_study.py --runs DIR [--iters 4000]

Each teacher is a ``UNet2DModel`` (8×8, one channel, widths 32/64 with attention at 4×4: 1.0 M parameters,
0.17 s per training step of 128 here, against 0.41 s for widths 64/128) trained the way diffusers' unconditional training
example does it: x_t = ``DDPMScheduler.add_noise(x, ε, i)`` at a uniform integer index i, the MSE to ε
(``epsilon``) or to ``get_velocity`` (``v_prediction``), AdamW, an EMA of the weights. One ε-prediction
teacher on linear betas (the DDPM default) and one v-prediction teacher on squaredcos_cap_v2. Training
checkpoints every 250 steps and resumes; the finished teacher is ``DIR/NAME/pipeline`` (a
``DDPMPipeline`` written by ``save_pretrained`` with the EMA weights), the folder ``fewstep distill
--teacher diffusers:DIR/NAME/pipeline`` reads. The later stages (students at S = 2, 4, 8 through the CLI,
export, sampling in diffusers, the training-free baselines) are not written yet.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from fewstep.data import load_dataset

TEACHERS = {"eps-linear": ("linear", "epsilon"), "v-cosine": ("squaredcos_cap_v2", "v_prediction")}
T, BATCH, LR, EMA_DECAY, CKPT_EVERY = 1000, 128, 5e-4, 0.999, 250


def unet():
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=(32, 64),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=16)


def train_teacher(root: Path, name: str, iters: int) -> Path:
    from diffusers import DDPMPipeline, DDPMScheduler

    beta_schedule, prediction = TEACHERS[name]
    folder = root / name
    done = folder / "pipeline"
    if (done / "model_index.json").is_file():
        print(f"[diffusers_study] {name}: reused", flush=True)
        return done
    folder.mkdir(parents=True, exist_ok=True)
    scheduler = DDPMScheduler(num_train_timesteps=T, beta_schedule=beta_schedule, prediction_type=prediction)
    x_all = load_dataset("digits").train  # [N, 1, 8, 8] in [−1, 1]
    model = unet()
    ema = copy.deepcopy(model).requires_grad_(False)
    optimiser = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    step, ckpt = 0, folder / "ckpt.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"]), ema.load_state_dict(state["ema"]), optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        step = state["step"]
    tick, since = time.perf_counter(), step
    while step < iters:
        x = x_all[torch.randint(len(x_all), (BATCH,), generator=generator)]
        noise = torch.randn(x.shape, generator=generator)
        index = torch.randint(0, T, (BATCH,), generator=generator)
        z = scheduler.add_noise(x, noise, index)
        target = noise if prediction == "epsilon" else scheduler.get_velocity(x, noise, index)
        loss = torch.nn.functional.mse_loss(model(z, index).sample, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - EMA_DECAY)
        step += 1
        if step % CKPT_EVERY == 0 or step == iters:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "optimiser": optimiser.state_dict(),
                        "generator": generator.get_state(), "step": step}, tmp)
            tmp.replace(ckpt)
            print(f"[diffusers_study] {name}: step {step}/{iters}, loss {loss.item():.4f}, "
                  f"{(time.perf_counter() - tick) / (step - since):.2f} s/step", flush=True)
            tick, since = time.perf_counter(), step
    DDPMPipeline(unet=ema, scheduler=scheduler).save_pretrained(str(done), safe_serialization=True)
    (folder / "teacher.json").write_text(json.dumps({"beta_schedule": beta_schedule, "prediction_type": prediction,
                                                     "iters": iters, "batch": BATCH, "lr": LR, "ema_decay": EMA_DECAY}))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    parser.add_argument("--iters", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in TEACHERS:
        train_teacher(args.runs / "diffusers", name, args.iters)


if __name__ == "__main__":
    main()
