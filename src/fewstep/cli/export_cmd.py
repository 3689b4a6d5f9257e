"""``fewstep export``: a student run as a folder that stock diffusers loads and samples."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a student as a diffusers folder (DDIMPipeline, or a class pipeline)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Write a multistep consistency student (cd, ct, mect) with the diffusers-unet backbone as a folder that "
                    "stock diffusers loads without fewstep: unet/ (safetensors), scheduler/ (DDIMScheduler with the run's "
                    "betas, prediction type and trailing timesteps: its S steps with eta 0 are the student's own sampler), "
                    "model_index.json (DDIMPipeline; a class-conditional student gets pipeline.py, loaded with "
                    "trust_remote_code=True), fewstep.json (S, the grid, w, the null class) and a model card README.md. "
                    "Refused: S that does not divide T, fewstep's own mlp/unet backbones (no UNet2DModel equivalent), "
                    "w-conditioned students (a UNet2DModel has no input for w), ECT students and teachers.")
    p.add_argument("--run", required=True, type=Path, help="student run folder")
    p.add_argument("--out", required=True, type=Path, help="folder to write (new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..runs.export import export

    out = export(args.run, args.out, overwrite=args.overwrite)
    print(f"exported to {out}")
