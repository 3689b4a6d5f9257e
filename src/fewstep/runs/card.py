"""The run card: what a run folder says about its run beyond the config — its data's shape and units,
its own sampler, its teacher, how to rebuild its backbone, and what was measured at the end.

Stored as ``extra`` in ``checkpoint.json``: the keys runs have always written stay flat and keep their
names (so every older run folder reads), the newer ones (``sampler``, ``backbone``) are small objects;
read back into typed fields here, and nothing else indexes ``extra``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data import Normaliser
from ..errors import UserError
from ..samplers import SamplerSpec, VarianceTable

DIFFUSION_STEPS = 64  # a teacher's default sampling steps
# ECT's hyper-parameters as used (model units), a guided-teacher student's w, w range and interval, stored flat beside the rest
OBJECTIVE_KEYS = ("P_mean", "P_std", "q", "k", "b", "iters_per_stage", "u_mid", "sigma_data", "weighting", "huber_c", "guidance",
                  "guidance_range", "guidance_interval")


@dataclass
class BackboneRecipe:
    """How the backbone is rebuilt: an import path and its constructor arguments (None: unknown, the
    run then reopens only with ``fewstep.load(run, backbone=instance)``). Absent for mlp/unet, which the
    config's model section describes."""

    cls: str
    kwargs: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.cls, "kwargs": self.kwargs}


@dataclass
class RunCard:
    data: str
    data_shape: tuple[int, ...]
    normaliser: Normaliser
    num_classes: int | None = None
    objective: str = "diffusion"
    sampler: SamplerSpec = field(default_factory=lambda: SamplerSpec("ddim", DIFFUSION_STEPS))
    teacher: str | None = None                   # a run folder, "ideal", "python object"
    teacher_step: int | None = None
    teacher_data: str | None = None
    teacher_clip: bool | None = None             # cd: whether the teacher's x̂ was clipped to [−1, 1] (docs/math.md §12)
    student_steps: int | None = None
    n_schedule: dict[str, Any] | None = None     # N_0, N_1, anneal fraction (cd/ct)
    hyper: dict[str, Any] = field(default_factory=dict)   # objective hyper-parameters as used (ect, mect)
    backbone: BackboneRecipe | None = None
    variance_table: VarianceTable | None = None  # aDDIM's v_t (c), measured after teacher training
    final_eval: dict[str, Any] | None = None
    log_window: dict[str, list[float]] = field(default_factory=dict)
    objective_state: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None   # index → name, for --class NAME (class sub-folders)

    @property
    def is_student(self) -> bool:
        return self.objective != "diffusion"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "data": self.data, "data_shape": list(self.data_shape), "normaliser": self.normaliser.to_dict(),
            "num_classes": self.num_classes, "class_names": list(self.class_names) if self.class_names else None,
            "objective": self.objective,
            "sampler": {"name": self.sampler.name, "steps": self.sampler.steps, "options": dict(self.sampler.options)},
        }
        optional = {"teacher": self.teacher, "teacher_step": self.teacher_step, "teacher_data": self.teacher_data,
                    "teacher_clip": self.teacher_clip, "student_steps": self.student_steps, "n_schedule": self.n_schedule,
                    "backbone": self.backbone.to_dict() if self.backbone else None,
                    "variance_table": self.variance_table.to_dict() if self.variance_table else None,
                    "final_eval": self.final_eval}
        out.update({k: v for k, v in optional.items() if v is not None})
        out.update(self.hyper)
        if self.log_window:
            out["log_window"] = self.log_window
        if self.objective_state:
            out["objective_state"] = self.objective_state
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], objective: str, arg: str = "run") -> "RunCard":
        """The card of a run whose config names ``objective`` (older folders do not store it in the card)."""
        try:
            card = cls(
                data=str(d["data"]), data_shape=tuple(int(v) for v in d["data_shape"]),
                normaliser=Normaliser.from_dict(d["normaliser"]), num_classes=d.get("num_classes"),
                class_names=tuple(map(str, d["class_names"])) if d.get("class_names") else None,
                objective=objective, teacher=d.get("teacher"), teacher_step=d.get("teacher_step"),
                teacher_data=d.get("teacher_data"), teacher_clip=d.get("teacher_clip"), student_steps=d.get("student_steps"), n_schedule=d.get("n_schedule"),
                hyper={k: d[k] for k in OBJECTIVE_KEYS if k in d},
                backbone=BackboneRecipe(d["backbone"]["class"], d["backbone"]["kwargs"]) if d.get("backbone") else None,
                variance_table=VarianceTable.from_dict(d["variance_table"]) if d.get("variance_table") else None,
                final_eval=d.get("final_eval"), log_window=d.get("log_window", {}), objective_state=d.get("objective_state", {}),
            )
            sampler = d.get("sampler")
            card.sampler = (SamplerSpec(sampler["name"], sampler["steps"], dict(sampler.get("options", {}))) if sampler
                            else card.legacy_sampler())
            card.check()
        except (KeyError, TypeError, ValueError, AttributeError, UserError) as exc:
            raise UserError(f"the run card in checkpoint.json is incomplete or malformed ({UserError.reason(exc)})", arg=arg) from None
        return card

    def check(self) -> None:
        """Values a sampler would otherwise trip over minutes later: the shape, the units, the own sampler
        and the variance table."""
        if any(size < 1 for size in self.data_shape):
            raise ValueError(f"data shape {list(self.data_shape)}")
        if self.normaliser.kind not in ("points", "images") or not all(
                isinstance(v, (int, float)) for v in (*self.normaliser.shift, *self.normaliser.scale)):
            raise ValueError("the normaliser must be of kind points or images, with numbers for shift and scale")
        self.sampler.check()
        if self.sampler.steps is None:
            raise ValueError(f"the run's own sampler {self.sampler.name} has no step count")
        table = self.variance_table
        if table is not None and not (table.ts.ndim == table.values.ndim == 1 and len(table.ts) == len(table.values) >= 2):
            raise ValueError("the variance table's ts and values must be two lists of one length >= 2")

    def legacy_sampler(self) -> SamplerSpec:
        """The own sampler of a run written before cards stored it."""
        if self.objective == "ect":
            return SamplerSpec("ect", 2, {"u_mid": self.hyper["u_mid"]} if "u_mid" in self.hyper else {})
        if self.is_student:
            return SamplerSpec("consistency", self.student_steps)
        return SamplerSpec("ddim", DIFFUSION_STEPS)
