"""Which sampler, how many steps, which options: `SamplerSpec`, the sampler registry, and the one
place where a spec's string form (``addim:table:xhat``) is parsed and printed.

Every sampler has the signature ``sampler(denoiser, z, ts, *, cond=None, generator=None, clip_x=False,
**options) -> x`` and registers itself with ``@register_sampler(name, …)`` in its own module, which
``fewstep.samplers`` imports.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from ..errors import UserError
from ..registry import Registry


@dataclass(frozen=True)
class TextOption:
    """An option a spec string may give by position: ``name`` with the spellings ``choices`` (text →
    value passed to the sampler); the first choice is the default."""

    name: str
    choices: Mapping[str, Any]

    @property
    def default(self) -> str:
        return next(iter(self.choices))


@dataclass(frozen=True)
class SamplerEntry:
    fn: Callable[..., Any]
    max_steps: int | None = None                     # defined only up to this many steps (ECT: 2)
    nfe: Callable[[int], int] = lambda steps: steps  # network calls over ``steps`` intervals
    text_options: tuple[TextOption, ...] = ()
    number_options: tuple[str, ...] = ()             # given as ``name=value`` (aDDIM's ``eta=0.25``)


SAMPLERS: Registry[SamplerEntry] = Registry("sampler")


def register_sampler(name: str, *, max_steps: int | None = None, nfe: Callable[[int], int] | None = None,
                     text_options: tuple[TextOption, ...] = (), number_options: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    def add(fn: Callable) -> Callable:
        SAMPLERS.register(name)(SamplerEntry(fn, max_steps, nfe or (lambda steps: steps), text_options, number_options))
        return fn

    return add


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler by name, its step count (None: the run's default) and its options: plain values
    (``u_mid=0.9``) or named choices (aDDIM's ``variance="table"``) that the run resolves."""

    name: str
    steps: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def entry(self) -> SamplerEntry:
        return SAMPLERS.get(self.name, arg="sampler")

    @property
    def grid(self) -> str:
        """The time grid the sampler runs on (``fewstep.schedules.GRIDS``): the spec's, else the sampler's
        default, else uniform in t (the only grid a consistency student's segments allow)."""
        own = next((o for o in self.entry.text_options if o.name == "grid"), None)
        return self.options.get("grid") or (own.default if own else "t")

    def sampler_kwargs(self) -> dict[str, Any]:
        """The options the sampler function takes (all but the grid, which decides its ``ts``)."""
        return {k: v for k, v in self.options.items() if k != "grid"}

    def with_steps(self, steps: int | None) -> "SamplerSpec":
        return self if steps is None else replace(self, steps=steps)

    def nfe(self) -> int:
        if self.steps is None:
            raise ValueError(f"{self.name}: no step count")
        return self.entry.nfe(self.steps)

    def check(self) -> "SamplerSpec":
        """The spec itself if its name is known and its step count allowed; else a UserError."""
        entry = self.entry
        if self.steps is not None:
            if not isinstance(self.steps, int) or self.steps < 1:
                raise UserError(f"expected a positive integer number of steps, got {self.steps!r}", arg="steps")
            if entry.max_steps is not None and self.steps > entry.max_steps:
                raise UserError(f"the {self.name} sampler takes at most {entry.max_steps} steps, got {self.steps}", arg="steps")
        return self

    def __str__(self) -> str:
        return format_sampler(self)


def text_choices(sampler: str, name: str) -> Mapping[str, Any]:
    """The spellings of ``sampler``'s text option ``name`` and the values they stand for."""
    return next(o for o in SAMPLERS.get(sampler, arg="sampler").text_options if o.name == name).choices


def text_option(sampler: str, name: str, word: str, arg: str | None = None) -> Any:
    """The value the spelling ``word`` of ``sampler``'s text option ``name`` stands for (``xhat`` → ``x_hat``)."""
    choices = text_choices(sampler, name)
    if word not in choices:
        raise UserError(f"{sampler}'s {name} is one of {', '.join(choices)}, got {word!r}", arg=arg or name)
    return choices[word]


def parse_sampler(text: str, steps: int | None = None) -> SamplerSpec:
    """``addim:data_free`` → SamplerSpec("addim", options={"variance": "data_free"}); ``addim:table:xhat``
    also ends with x̂ instead of aDDIM's last step (math.md §4); ``addim:table:eta=0.25`` sets a number
    option. Omitted options keep their defaults."""
    name, *given = text.split(":")
    entry = SAMPLERS.get(name, arg="sampler")
    split = next((i for i, w in enumerate(given) if "=" in w), len(given))
    words, numbers = given[:split], given[split:]
    if any("=" not in w for w in numbers):
        raise UserError(f"{text!r}: name=value options come after the named ones", arg="sampler")
    if len(words) > len(entry.text_options):
        raise UserError(f"{text!r}: {name} takes at most {len(entry.text_options)} ':' options", arg="sampler")
    options: dict[str, Any] = {option.name: text_option(name, option.name, word, arg="sampler")
                               for option, word in zip(entry.text_options, words)}
    for word in numbers:
        key, _, value = word.partition("=")
        if key not in entry.number_options:
            raise UserError(f"{text!r}: {name} has no option {key!r}" + (f" (it has {', '.join(entry.number_options)})" if entry.number_options else ""), arg="sampler")
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"{text!r}: {key} must be a number, got {value!r}", arg="sampler") from None
        if not math.isfinite(number) or number < 0:
            raise UserError(f"{text!r}: {key} must be a finite number ≥ 0, got {value!r}", arg="sampler")
        options[key] = number
    return SamplerSpec(name, steps, options).check()


def format_sampler(spec: SamplerSpec) -> str:
    """The string :func:`parse_sampler` reads back: positional options up to the last one given, then
    number options as ``name=value``."""
    words = []
    for option in spec.entry.text_options:
        spelled = {v: k for k, v in option.choices.items()}
        words.append(spelled.get(spec.options.get(option.name), option.default) if option.name in spec.options else None)
    while words and words[-1] is None:
        words.pop()
    numbers = [f"{key}={spec.options[key]:g}" for key in spec.entry.number_options if spec.options.get(key) is not None]
    return ":".join([spec.name] + [w if w is not None else o.default for w, o in zip(words, spec.entry.text_options)] + numbers)
