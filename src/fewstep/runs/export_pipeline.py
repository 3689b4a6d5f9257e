"""A class-conditional few-step student exported by ``fewstep export``, as a diffusers pipeline.

fewstep copies this file verbatim into the exported folder as ``pipeline.py`` and never imports it: it needs
torch and diffusers only, not fewstep. Stock diffusers has no pixel-space pipeline that takes class labels
(DDIMPipeline calls the UNet without them), hence this one. Load it with

    DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)   # model_index.json names this class
    DiffusionPipeline.from_pretrained(folder, custom_pipeline=f"{folder}/pipeline.py")

and sample with ``pipe(class_labels=[3, 3, 7])``: labels are the UNet's class indices (fewstep.json maps
the data's classes onto them). Sampling is DDIMScheduler.step with eta = 0 on the scheduler's trailing
timesteps, which is the student's own sampler at num_inference_steps = S (the default, ``student_steps``
in model_index.json; fewstep's docs/math.md §6 and §12): its last step returns the model's x̂.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from diffusers import DDIMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor


class FewstepClassPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: DDIMScheduler, student_steps: int = 1) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(student_steps=student_steps)

    @torch.no_grad()
    def __call__(self, class_labels: Sequence[int] | torch.Tensor, num_inference_steps: int | None = None,
                 generator: torch.Generator | None = None, output_type: str = "pil", return_dict: bool = True) -> Any:
        """One image per label, in [0, 1] like DDIMPipeline's (``output_type`` "pil", "np" or "pt")."""
        labels = torch.as_tensor(class_labels, device=self._execution_device).long().reshape(-1)
        size = self.unet.config.sample_size
        sides = (size, size) if isinstance(size, int) else tuple(size)
        image = randn_tensor((len(labels), self.unet.config.in_channels, *sides), generator=generator,
                             device=self._execution_device, dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps or self.config.student_steps)
        for t in self.progress_bar(self.scheduler.timesteps):
            output = self.unet(image, t, class_labels=labels).sample
            image = self.scheduler.step(output, t, image, eta=0.0).prev_sample
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)
        return ImagePipelineOutput(images=image) if return_dict else (image,)
