"""What a benchmark run is made of: budgets, arms, and the settings every cached result depends on.

* :class:`Budget`: a per-class budget (``images_per_class``) or a fraction of the data (``ratio``).
* :class:`Arm`: one selection strategy with its options (``"interval:paper"``, ``"alignment:std_weight=0.5"``),
  or :data:`FULL_SPLIT` (every training image: the regime check's reference).
* :class:`BenchmarkSettings`: the grid (arms x budgets x seeds) and everything a run's numbers depend on
  (:meth:`BenchmarkSettings.result_key`); :data:`QUICK` is the smoke-test preset.
* :class:`RunSpec`: one training run, ``(budget, arm, seed)``; :func:`run_specs` orders them seed-major,
  so an interrupted grid holds every arm for its first seeds.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..demo import SiTSettings

__all__ = [
    "FULL_SPLIT",
    "QUICK",
    "Arm",
    "BenchmarkSettings",
    "Budget",
    "RunSpec",
    "fingerprint",
    "run_specs",
]

EVALUATORS = ("pixels", "encoder")


def fingerprint(value: Any) -> str:
    """16 hex digits of the SHA-256 of ``value`` as sorted JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------
# budgets
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """A per-class budget ``images_per_class`` (m) or a dataset fraction ``ratio``; exactly one is set."""

    images_per_class: int | None = None
    ratio: float | None = None

    def __post_init__(self) -> None:
        if (self.images_per_class is None) == (self.ratio is None):
            raise ValueError("a budget is either images_per_class or ratio, exactly one of them")
        if self.images_per_class is not None:
            m = self.images_per_class
            if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
                raise ValueError(f"images per class must be an integer >= 1, got {m!r}")
            object.__setattr__(self, "images_per_class", int(m))
        else:
            r = self.ratio
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 < float(r) < 1.0:
                raise ValueError(f"a budget ratio must lie in (0, 1) (a fraction of the data), got {r!r}")
            object.__setattr__(self, "ratio", float(r))

    @property
    def label(self) -> str:
        if self.images_per_class is not None:
            return f"{self.images_per_class}/class"
        return f"{self.ratio * 100:g}%"

    @property
    def slug(self) -> str:
        if self.images_per_class is not None:
            return f"ipc{self.images_per_class}"
        return f"ratio{self.ratio * 100:g}pct".replace(".", "_")

    def kwargs(self) -> dict[str, Any]:
        """The budget argument of ``condense`` / ``select``."""
        if self.images_per_class is not None:
            return {"images_per_class": self.images_per_class}
        return {"ratio": self.ratio}

    def to_json(self) -> dict[str, Any]:
        return {"images_per_class": self.images_per_class, "ratio": self.ratio}


# --------------------------------------------------------------------------------------
# arms
# --------------------------------------------------------------------------------------

_NAMES = {
    "interval": "D2C interval",
    "kcenter": "k-center",
    "kmeans": "k-means",
    "full": "full split",
}


@dataclass(frozen=True)
class Arm:
    """A selection strategy of :data:`d2c_hf.selection.strategies.STRATEGIES` with its options.

    Written ``STRATEGY[:ITEM,ITEM...]``: an item ``name=value`` is a strategy option (the value read as
    JSON, else as a string); for ``interval`` a bare item is the stride (``auto``, ``paper`` or an integer).
    ``"interval"`` is D2C with the ``"auto"`` stride, ``"interval:paper"`` with the paper's
    stride-to-budget proportion, ``"alignment:std_weight=0.5,max_passes=0"`` an option changed.
    ``Arm("full")`` (:data:`FULL_SPLIT`) is every training image.
    """

    strategy: str
    interval: int | str = "auto"
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(sorted((str(k), v) for k, v in self.options)))
        if self.strategy == "full":
            if self.options or self.interval != "auto":
                raise ValueError("the full-split arm takes no options")
            return
        from ..selection.strategies import STRATEGIES, Selector

        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {self.strategy!r} in an arm; known: {', '.join(STRATEGIES)}, full"
            )
        if self.interval != "auto" and self.strategy != "interval":
            raise ValueError(
                f"a stride ({self.interval!r}) is an option of interval only, not of {self.strategy!r}"
            )
        # the strategy's own checks, without data (feature strategies need a feature column name)
        Selector(
            self.strategy,
            images_per_class=1,
            interval=self.interval,
            feature_column="features" if STRATEGIES[self.strategy].needs_features else None,
            **dict(self.options),
        )

    @classmethod
    def parse(cls, text: str) -> Arm:
        """``"interval:paper"`` -> ``Arm("interval", "paper")``; see the class docstring."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"an arm is written STRATEGY[:OPTIONS], got {text!r}")
        strategy, _, rest = text.strip().partition(":")
        interval: int | str = "auto"
        options = []
        for item in filter(None, (part.strip() for part in rest.split(","))):
            name, eq, value = item.partition("=")
            if not eq:
                if strategy != "interval":
                    raise ValueError(
                        f"arm {text!r}: {item!r} is not name=value (only interval takes a bare stride)"
                    )
                interval = int(item) if item.lstrip("-").isdigit() else item
                continue
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
            options.append((name.strip(), parsed))
        return cls(strategy, interval, tuple(options))

    @property
    def key(self) -> str:
        items = [] if self.interval == "auto" else [str(self.interval)]
        items += [f"{k}={json.dumps(v)}" for k, v in self.options]
        return self.strategy + (":" + ",".join(items) if items else "")

    @property
    def name(self) -> str:
        base = _NAMES.get(self.strategy, self.strategy)
        extra = []
        if self.strategy == "interval":
            extra.append(
                {"auto": "auto stride", "paper": "paper's stride proportion"}.get(
                    self.interval, f"k = {self.interval}"
                )
            )
        extra += [f"{k}={json.dumps(v)}" for k, v in self.options]
        return base + (f" ({', '.join(extra)})" if extra else "")

    @property
    def needs_features(self) -> bool:
        from ..selection.strategies import STRATEGIES

        return self.strategy != "full" and STRATEGIES[self.strategy].needs_features

    @property
    def needs_scores(self) -> bool:
        from ..selection.strategies import STRATEGIES

        return self.strategy != "full" and STRATEGIES[self.strategy].needs_scores

    @property
    def slug(self) -> str:
        """The arm in a file name: letters, digits, ``-`` and ``_`` only."""
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in self.key.replace(":", "-"))


FULL_SPLIT = Arm("full")
RANDOM = Arm("random")


# --------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------


def _default_sit() -> SiTSettings:
    # the digits benchmark's calibrated model (docs/benchmarks/quality_digits_calibration.md)
    return SiTSettings(
        model="SiT-S/4",
        model_config_overrides={"depth": 4, "hidden_size": 64, "num_attention_heads": 4},
        encoder_depth=2,
        projector_dim=256,
        train_batch_size=64,
        learning_rate=1e-3,
        max_train_steps=6000,
        ema_decay=0.995,
        validation_steps=375,
        num_inference_steps=20,
    )


@dataclass(frozen=True)
class BenchmarkSettings:
    """The grid and everything a run's numbers depend on.

    Attributes:
        arms, budgets, seeds, full_split: the grid (``full_split``: also train on every training image,
            for the regime check). Not part of :meth:`result_key`: a grid can grow in the same work dir.
        resolution: training (and evaluation) side in pixels; every image is centre-cropped and resized
            to it once (ADM crop), before anything else sees it.
        sit: the SiT and its training (``examples/train_sit.py``); the patch size is the model name's.
        scorer_steps, scorer_batch_size, num_timesteps, num_draws: the difficulty scorer (a DiT trained
            from scratch on the training split; every timestep's loss standardised over the split).
        encoder_steps: the selection feature space, a ``train_vision_encoder`` on the training split
            (feature strategies select in its mean-patch-token space), unless ``selection_encoder`` names
            a folder ``VisualAttacher.from_pretrained`` loads.
        evaluator: ``"pixels"`` (an MLP classifier fitted on the training split's pixels at ``probe_size``
            px: FD in its hidden layer, class accuracy from its predictions), ``"encoder"`` (a
            ``train_vision_encoder`` fitted with another seed than the selection encoder, plus a
            logistic probe) or a folder of an encoder to use with a logistic probe.
        probe_size: the pixel evaluator's input side (``None``: ``min(resolution, 16)``).
        samples_per_class, num_inference_steps (in ``sit``), guidance_scale, sampling_seeds,
            num_checkpoints: the evaluation (log-spaced checkpoints; at the last step every sampling
            seed, unguided and guided).
    """

    arms: tuple[Arm, ...] = (RANDOM, Arm("interval"))
    budgets: tuple[Budget, ...] = (Budget(ratio=0.1),)
    seeds: tuple[int, ...] = (0, 1, 2)
    full_split: bool = True
    resolution: int = 16
    sit: SiTSettings = field(default_factory=_default_sit)
    scorer_steps: int = 400
    scorer_batch_size: int = 64
    num_timesteps: int = 10
    num_draws: int = 8
    encoder_steps: int = 1500
    selection_encoder: str | None = None
    evaluator: str = "pixels"
    probe_size: int | None = None
    samples_per_class: int = 100
    guidance_scale: float = 1.5
    sampling_seeds: tuple[int, ...] = (0, 1)
    num_checkpoints: int = 8

    def __post_init__(self) -> None:
        arms = tuple(a if isinstance(a, Arm) else Arm.parse(a) for a in self.arms)
        if not arms:
            raise ValueError("a benchmark needs at least one arm")
        keys = [a.key for a in arms]
        if len(set(keys)) != len(keys):
            raise ValueError(f"arms repeat: {keys}")
        if RANDOM not in arms:
            raise ValueError("the arms must include 'random': every contrast is against it")
        if FULL_SPLIT in arms:
            raise ValueError("the full split is not an arm: it is trained with full_split=True")
        object.__setattr__(self, "arms", arms)
        if not self.budgets:
            raise ValueError("a benchmark needs at least one budget")
        if len({b.label for b in self.budgets}) != len(self.budgets):
            raise ValueError(f"budgets repeat: {[b.label for b in self.budgets]}")
        seeds = tuple(int(s) for s in self.seeds)
        if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct non-negative integers, got {self.seeds}")
        object.__setattr__(self, "seeds", seeds)
        for name in (
            "resolution",
            "scorer_steps",
            "scorer_batch_size",
            "num_timesteps",
            "num_draws",
            "encoder_steps",
            "samples_per_class",
            "num_checkpoints",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.resolution % self.patch_size:
            raise ValueError(
                f"resolution {self.resolution} is not a multiple of the patch size {self.patch_size}"
            )
        if self.probe_size is not None and (not isinstance(self.probe_size, int) or self.probe_size < 1):
            raise ValueError(f"probe_size must be an integer >= 1 or None, got {self.probe_size!r}")
        if not isinstance(self.evaluator, str) or not self.evaluator:
            raise ValueError("evaluator must be 'pixels', 'encoder' or the folder of an encoder")
        if not self.sampling_seeds or len(set(self.sampling_seeds)) != len(self.sampling_seeds):
            raise ValueError(f"sampling_seeds must be distinct, got {self.sampling_seeds}")
        object.__setattr__(self, "sampling_seeds", tuple(int(s) for s in self.sampling_seeds))
        if not (isinstance(self.guidance_scale, (int, float)) and math.isfinite(self.guidance_scale)):
            raise ValueError(f"guidance_scale must be a number, got {self.guidance_scale!r}")
        if self.sit.max_train_steps < 2 or self.sit.validation_steps < 1:
            raise ValueError("the SiT needs max_train_steps >= 2 and validation_steps >= 1")

    @property
    def patch_size(self) -> int:
        return int(self.sit.model.rsplit("/", 1)[-1])

    @property
    def num_tokens(self) -> int:
        return (self.resolution // self.patch_size) ** 2

    @property
    def resolved_probe_size(self) -> int:
        return self.probe_size or min(self.resolution, 16)

    def eval_steps(self) -> list[int]:
        """Log-spaced checkpoints ending at the last step, on multiples of ``validation_steps``."""
        last, every = self.sit.max_train_steps, self.sit.validation_steps
        raw = np.geomspace(every, last, self.num_checkpoints)
        steps = sorted({max(every, int(np.rint(s / every)) * every) for s in raw} | {last})
        return [s for s in steps if s <= last]

    def result_key(self) -> dict[str, Any]:
        """What a cached run's numbers depend on, besides its own (budget, arm, seed)."""
        keep = asdict(self)
        for name in ("arms", "budgets", "seeds", "full_split"):
            keep.pop(name)
        return json.loads(json.dumps(keep))

    def prepare_key(self) -> dict[str, Any]:
        """What the prepared scorer, features and evaluator depend on."""
        names = (
            "resolution",
            "scorer_steps",
            "scorer_batch_size",
            "num_timesteps",
            "num_draws",
            "encoder_steps",
            "selection_encoder",
            "evaluator",
            "probe_size",
        )
        return {name: getattr(self, name) for name in names}

    def to_json(self) -> dict[str, Any]:
        out = self.result_key()
        out.update(
            arms=[a.key for a in self.arms],
            budgets=[b.to_json() for b in self.budgets],
            seeds=list(self.seeds),
            full_split=self.full_split,
        )
        return out

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> BenchmarkSettings:
        fields = dict(saved)
        fields["sit"] = SiTSettings(**fields["sit"])
        fields["arms"] = tuple(Arm.parse(a) for a in fields["arms"])
        fields["budgets"] = tuple(Budget(**b) for b in fields["budgets"])
        for name in ("seeds", "sampling_seeds"):
            fields[name] = tuple(fields[name])
        return cls(**fields)

    def with_steps(self, steps: int) -> BenchmarkSettings:
        """The same settings trained for ``steps`` (evaluations every ``steps // 16``)."""
        return replace(
            self, sit=replace(self.sit, max_train_steps=steps, validation_steps=max(1, steps // 16))
        )


#: the wiring end to end in seconds: tiny scorer, encoders and SiT, a few samples (the test suite)
QUICK = BenchmarkSettings(
    arms=(RANDOM, Arm("interval"), Arm("herding")),
    budgets=(Budget(images_per_class=2),),
    seeds=(0,),
    scorer_steps=10,
    scorer_batch_size=16,
    num_timesteps=2,
    num_draws=2,
    encoder_steps=2,
    samples_per_class=8,
    num_checkpoints=2,
    sit=SiTSettings(
        model="SiT-S/4",
        model_config_overrides={"depth": 2, "hidden_size": 32, "num_attention_heads": 2},
        encoder_depth=1,
        projector_dim=32,
        train_batch_size=16,
        max_train_steps=4,
        ema_decay=0.9,
        validation_steps=2,
        num_inference_steps=3,
    ),
)


# --------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One training run: ``budget`` (``None`` for the full split), arm and seed."""

    budget: Budget | None
    arm: Arm
    seed: int

    @property
    def tag(self) -> str:
        budget = "full" if self.budget is None else self.budget.slug
        return f"{budget}-{self.arm.slug}-seed{self.seed}"


def run_specs(settings: BenchmarkSettings) -> list[RunSpec]:
    """Every run, seed-major: seed 0 of every (budget, arm) and the full split, then seed 1, ..."""
    specs = []
    for seed in settings.seeds:
        for budget in settings.budgets:
            specs += [RunSpec(budget, arm, seed) for arm in settings.arms]
        if settings.full_split:
            specs.append(RunSpec(None, FULL_SPLIT, seed))
    return specs
