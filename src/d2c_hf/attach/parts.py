"""Attach, the registry of parts: each thing Attach can store is one self-describing class.

A part declares, once, everything the two runners, ``info``, the card and the checks need:

* ``name`` (the ``attach=`` value and its ``info`` key), ``column`` (the samples column it fills; ``None``
  for a class-level part such as ``text``, which fills the ``classes`` table) and ``extra_columns`` (further
  columns it fills, e.g. the ``caption`` part's mask beside its embeddings), ``description`` (one line,
  for the card and the error messages), ``needs_vae`` (it is given the run's VAE), ``reads`` (what its
  per-batch code takes: ``"pixels"``, the ADM crops, or ``"captions"``, the rows' captions);
* :meth:`AttachPart.references` (the model paths to check before anything loads), :meth:`AttachPart.load`
  (build it from the run's options: load its models), :attr:`AttachPart.config` (its ``info`` record);
* a row part: :meth:`AttachPart.features` (its columns' ``datasets`` features, from its config alone, so a
  sharded assembly needs no model) and :meth:`AttachPart.compute` (one batch: ``(B, S, S, 3)`` uint8 ADM
  crops at the run's resolution, or the captions of a ``reads = "captions"`` part -> checked arrays of the
  declared shape; a part with ``extra_columns`` returns ``{column: array}`` from
  :meth:`AttachPart.compute_columns`). The in-memory runner calls it inside a ``datasets`` map
  (:func:`part_transform`), the sharded runner on the batches its workers decode: the same per-batch code, so
  their outputs are equal by construction;
* a class part: :meth:`AttachPart.classes` (the ``classes`` table from the class names).

A part from outside the package is one subclass and one :func:`register_attach_part` (or an entry point in
the group ``d2c_hf.attach_parts``, loaded the first time an unknown part is named); it then runs through
:func:`d2c_hf.condense` (in memory and streaming), ``d2c condense``, save/load, the Hub layout and the card.
Its options come from ``AttachOptions.part_options[name]`` (``--part_option NAME.KEY=VALUE``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "d2c_hf.attach_parts"
#: tokens per caption of the ``caption`` part (COCO's captions average about 10 words; longer ones are
#: truncated, with a warning)
DEFAULT_CAPTION_TOKENS = 32
#: what a row part's per-batch code can read
PART_INPUTS = ("pixels", "captions")


@dataclass(frozen=True)
class PartContext:
    """What the runner resolved before building the parts.

    Attributes:
        device: the device of the run's models.
        vae: the run's VAE (the scorer's when scoring ran; ``None`` in pixel space).
        num_visual_tokens: h, the diffusion transformer's token count (``None`` when no part needs a VAE).
    """

    device: Any
    vae: Any = None
    num_visual_tokens: int | None = None


class AttachPart:
    """Base class of an Attach part (see the module docstring). Subclasses set the class attributes and
    implement :meth:`load` and :attr:`config`, plus :meth:`features` and :meth:`compute` (row parts) or
    :meth:`classes` (class parts)."""

    name: ClassVar[str] = ""
    column: ClassVar[str | None] = None
    #: further samples columns a row part fills (its :meth:`compute_columns` returns them all)
    extra_columns: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    needs_vae: ClassVar[bool] = False
    #: what :meth:`compute` takes per batch: ``"pixels"`` (ADM crops) or ``"captions"`` (the rows' captions)
    reads: ClassVar[str] = "pixels"
    #: bump when ``compute`` changes its output for the same config (invalidates ``datasets`` caches)
    version: ClassVar[int] = 1

    @classmethod
    def references(cls, options: Any) -> list[tuple[str, Any]]:
        """``[(role, value)]``: the models this part will load, checked before any is loaded."""
        return []

    @classmethod
    def load(cls, options: Any, context: PartContext) -> AttachPart:  # pragma: no cover - abstract
        """The part for a run (``options``: the run's ``CondenseOptions``): load its models."""
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """The part's ``info`` record (JSON-able): what it stored and with which models."""
        raise NotImplementedError

    # -- row parts ---------------------------------------------------------------------
    @classmethod
    def features(cls, config: Mapping[str, Any]):  # pragma: no cover - abstract
        """``Features({column: feature})`` of the stored column, from :attr:`config` alone."""
        raise NotImplementedError

    def compute(self, pixels: np.ndarray, rows: Sequence[int]) -> np.ndarray:  # pragma: no cover
        """One batch: ``(B, S, S, 3)`` uint8 crops, or the captions of a ``reads = "captions"`` part (``rows``:
        their source rows, for error messages) -> ``(B, ...)`` array matching :meth:`features` (checked: finite,
        stored dtype)."""
        raise NotImplementedError

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """Every samples column the part fills: ``column`` and ``extra_columns``."""
        return () if cls.column is None else (cls.column, *cls.extra_columns)

    def compute_columns(self, inputs: Any, rows: Sequence[int]) -> dict[str, np.ndarray]:
        """One batch -> ``{column: array}`` for every column of :meth:`columns` (what both runners call; a
        one-column part's is ``{column: compute(inputs, rows)}``)."""
        return {type(self).column: self.compute(inputs, rows)}

    # -- class parts -------------------------------------------------------------------
    def classes(self, names: Sequence[str]):  # pragma: no cover - abstract
        """The ``classes`` table (one row per class id)."""
        raise NotImplementedError

    @classmethod
    def part_options(cls, options: Any) -> dict[str, Any]:
        """This part's own options (``AttachOptions.part_options[name]``)."""
        return dict((options.attach.part_options or {}).get(cls.name, {}))


# --------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[AttachPart]] = {}


def register_attach_part(part: type[AttachPart], *, replace: bool = False) -> type[AttachPart]:
    """Register an :class:`AttachPart` subclass under its ``name`` (usable as a class decorator).

    Raises:
        ValueError: the name is empty or taken (``replace=True`` to override), or the column clashes with a
            column a condensed dataset already has.
    """
    if not (isinstance(part, type) and issubclass(part, AttachPart)):
        raise TypeError(f"register_attach_part takes an AttachPart subclass, got {part!r}")
    if not part.name or not part.name.isidentifier():
        raise ValueError(f"{part.__name__}.name must be an identifier, got {part.name!r}")
    if part.name in _REGISTRY and not replace:
        raise ValueError(f"attach part {part.name!r} is already registered ({_REGISTRY[part.name].__name__})")
    reserved = {"image", "label", "source_index", "difficulty", "caption"}
    taken = {c for p in _REGISTRY.values() if p.name != part.name for c in p.columns()}
    clash = sorted(set(part.columns()) & (reserved | taken))
    if clash:
        which = "column" if clash[0] == part.column else "extra_columns"
        raise ValueError(f"{part.__name__}.{which} {clash[0]!r} is already a column of a condensed dataset")
    if part.reads not in PART_INPUTS:
        raise ValueError(f"{part.__name__}.reads must be one of {PART_INPUTS}, got {part.reads!r}")
    if not part.description:
        raise ValueError(f"{part.__name__}.description is empty: give one line for the card")
    _REGISTRY[part.name] = part
    return part


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in _REGISTRY:
            register_attach_part(entry.load())


def get_part(name: str) -> type[AttachPart]:
    """The registered part ``name`` (entry points are looked up for an unknown name)."""
    if name not in _REGISTRY:
        _load_entry_points()
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown attach part(s) {[name]}; choose from {list(_REGISTRY)} "
            f"({'; '.join(f'{k}: {v.description}' for k, v in _REGISTRY.items())})"
        )
    return _REGISTRY[name]


def parse_attach(attach: str | Sequence[str] | None) -> tuple[str, ...]:
    """Validate an ``attach=`` argument: ``None``/``()`` -> nothing, a name or a sequence of registered
    names; returns them in registration order (built-ins first) without duplicates."""
    if attach is None:
        return ()
    parts = (attach,) if isinstance(attach, str) else tuple(attach)
    if any(p not in _REGISTRY for p in parts):
        _load_entry_points()
    unknown = [p for p in parts if p not in _REGISTRY]
    if unknown:
        raise ValueError(
            f"unknown attach part(s) {unknown}; choose from {list(_REGISTRY)} "
            f"({'; '.join(f'{k}: {v.description}' for k, v in _REGISTRY.items())})"
        )
    return tuple(p for p in _REGISTRY if p in parts)


class _Descriptions(Mapping):
    """``{name: description}`` of the registered parts (a live, read-only view)."""

    def __getitem__(self, name: str) -> str:
        return _REGISTRY[name].description

    def __iter__(self) -> Iterator[str]:
        return iter(list(_REGISTRY))

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return repr(dict(self))


#: Parts that :func:`d2c_hf.condense` can attach, and what each one produces (registered parts included).
ATTACH_PARTS: Mapping[str, str] = _Descriptions()


def row_parts(names: Sequence[str]) -> list[type[AttachPart]]:
    """The registered row parts (a column per selected image) among ``names``, in order."""
    return [get_part(n) for n in names if get_part(n).column is not None]


def needs_vae(names: Sequence[str]) -> bool:
    return any(get_part(n).needs_vae for n in names)


def part_columns(names: Sequence[str]) -> dict[str, str]:
    """``{name: column}`` of the row parts among ``names``."""
    return {p.name: p.column for p in row_parts(names)}


def all_part_columns(names: Sequence[str]) -> dict[str, str]:
    """``{column: part name}`` of every samples column the row parts among ``names`` fill."""
    return {column: p.name for p in row_parts(names) for column in p.columns()}


# --------------------------------------------------------------------------------------
# the in-memory runner's map transform (any row part)
# --------------------------------------------------------------------------------------


def part_transform(part: AttachPart, options: Any, device: Any = None):
    """A ``datasets`` map transform computing ``part`` on a samples table: the table's images, ADM-cropped
    at the run's resolution, through :meth:`AttachPart.compute` (the per-batch code the sharded runner
    calls). The shared ``datasets`` plumbing (decode with row numbers, format kept, fingerprint) is
    :class:`~d2c_hf.attach.attachers.ImageTransform`'s. A ``reads = "captions"`` part maps over the table's
    ``caption`` column instead (:class:`CaptionTransform`)."""
    from .attachers import ImageTransform

    if type(part).reads == "captions":
        return CaptionTransform(part, options.batch_size)

    class PartTransform(ImageTransform):
        output_column = part.column
        fingerprint_version = part.version

        def __init__(self) -> None:
            self.image_column = "image"
            self.batch_size = options.batch_size
            self.device = device
            self.resolution = options.resolution

        @property
        def features(self):
            return type(part).features(part.config)

        @property
        def config(self) -> dict[str, Any]:
            return {"part": part.name, **part.config}

        def _encode(self, images: Sequence[Any], rows: Sequence[int]) -> np.ndarray:
            return part.compute(self._preprocess(images, rows, self.resolution), rows)

    PartTransform.__name__ = PartTransform.__qualname__ = f"{type(part).__name__}Transform"
    return PartTransform()


class CaptionTransform:
    """The ``datasets`` map of a ``reads = "captions"`` part over a samples table's ``caption`` column: the
    part's columns, written beside the table (only the new columns are written, then joined)."""

    caption_column = "caption"

    def __init__(self, part: AttachPart, batch_size: int) -> None:
        self.part, self.batch_size = part, batch_size

    @property
    def features(self):
        return type(self.part).features(self.part.config)

    @property
    def fingerprint(self) -> str:
        from datasets.fingerprint import Hasher

        return Hasher.hash([type(self.part).__name__, type(self.part).version, self.part.config])

    def __call__(
        self, batch: Mapping[str, Any], indices: Sequence[int] | None = None
    ) -> dict[str, np.ndarray]:
        captions = list(batch[self.caption_column])
        rows = list(indices) if indices is not None else list(range(len(captions)))
        return self.part.compute_columns(captions, rows)

    def apply(self, dataset: Any) -> Any:
        from datasets.fingerprint import Hasher

        from ..utils.maps import join_columns, map_new_columns

        if self.caption_column not in dataset.column_names:
            raise ValueError(
                f"attach part {type(self.part).name!r} encodes the samples' {self.caption_column!r} column, which "
                f"this table lacks (columns: {dataset.column_names}); it needs a captioned run (caption_column=...)"
            )
        clash = [c for c in self.features if c in dataset.column_names]
        if clash:
            raise ValueError(f"the samples already have the column(s) {clash}; remove them to recompute")
        raw = dataset.with_format(None)
        added, joined = map_new_columns(
            raw,
            self,
            self.features,
            batch_size=self.batch_size,
            new_fingerprint=Hasher.hash([raw._fingerprint, self.fingerprint]),
            desc=f"{type(self.part).__name__} -> {', '.join(self.features)}",
        )
        return join_columns(raw, added, joined)


# --------------------------------------------------------------------------------------
# the built-in parts
# --------------------------------------------------------------------------------------


def _dtype(options: Any):
    from .attachers import resolve_attach_dtype

    return resolve_attach_dtype(options.attach.dtype)


@register_attach_part
class LatentsPart(AttachPart):
    """``latents``: each image's VAE posterior ``mean | std`` (:class:`~d2c_hf.attach.attachers.LatentEncoder`)."""

    name = "latents"
    column = "latents"
    description = "column 'latents': VAE posterior mean|std (LatentEncoder)"
    needs_vae = True

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    @classmethod
    def load(cls, options: Any, context: PartContext) -> LatentsPart:
        from .attachers import LatentEncoder

        return cls(
            LatentEncoder(
                context.vae,
                resolution=options.resolution,
                batch_size=options.batch_size,
                dtype=_dtype(options),
                device=context.device,
            )
        )

    @property
    def config(self) -> dict[str, Any]:
        return self.encoder.config

    @classmethod
    def features(cls, config: Mapping[str, Any]):
        from datasets import Array3D, Features

        shape = (2 * config["latent_channels"], config["latent_size"], config["latent_size"])
        return Features({cls.column: Array3D(shape, "float16")})

    def compute(self, pixels: np.ndarray, rows: Sequence[int]) -> np.ndarray:
        return self.encoder.compute(pixels, rows)


@register_attach_part
class VisualPart(AttachPart):
    """``visual``: each image's vision-encoder patch tokens (:class:`~d2c_hf.attach.attachers.VisualAttacher`)."""

    name = "visual"
    column = "visual_embeds"
    description = "column 'visual_embeds': vision-encoder patch tokens (VisualAttacher)"
    needs_vae = True  # the token count is the diffusion transformer's grid in the VAE's space

    def __init__(self, attacher: Any) -> None:
        self.attacher = attacher

    @classmethod
    def references(cls, options: Any) -> list[tuple[str, Any]]:
        return [("vision_encoder", options.attach.vision_encoder)]

    @classmethod
    def load(cls, options: Any, context: PartContext) -> VisualPart:
        from .attachers import VisualAttacher

        return cls(
            VisualAttacher.from_pretrained(
                options.attach.vision_encoder,
                num_tokens=context.num_visual_tokens,
                resolution=options.resolution,
                batch_size=options.batch_size,
                dtype=_dtype(options),
                device=context.device,
            )
        )

    @property
    def config(self) -> dict[str, Any]:
        return self.attacher.config

    @classmethod
    def features(cls, config: Mapping[str, Any]):
        from datasets import Array2D, Features

        return Features({cls.column: Array2D((config["num_tokens"], config["hidden_size"]), "float16")})

    def compute(self, pixels: np.ndarray, rows: Sequence[int]) -> np.ndarray:
        return self.attacher.compute(pixels, rows)


@register_attach_part
class TextPart(AttachPart):
    """``text``: the ``classes`` table, T5 embeddings of one prompt per class
    (:class:`~d2c_hf.attach.attachers.TextAttacher`)."""

    name = "text"
    column = None
    description = "the 'classes' table: T5 embeddings of one prompt per class (TextAttacher)"

    def __init__(self, attacher: Any) -> None:
        self.attacher = attacher

    @classmethod
    def references(cls, options: Any) -> list[tuple[str, Any]]:
        return [("text_encoder", options.attach.text_encoder)]

    @classmethod
    def load(cls, options: Any, context: PartContext) -> TextPart:
        from .attachers import TextAttacher

        return cls(
            TextAttacher.from_pretrained(
                options.attach.text_encoder,
                prompt_template=options.attach.prompt_template,
                batch_size=options.batch_size,
                dtype=_dtype(options),
                device=context.device,
            )
        )

    @property
    def config(self) -> dict[str, Any]:
        return self.attacher.config

    def classes(self, names: Sequence[str]):
        return self.attacher.encode_classes(list(names))


@register_attach_part
class CaptionPart(AttachPart):
    """``caption``: each selected image's caption, encoded by a T5 encoder (a captioned run's counterpart of
    ``text``): ``caption_embeds`` ``Array2D((L, D), "float16")`` (the encoder's last hidden states, padded to L
    = ``max_length`` tokens) and ``caption_mask`` (L int8), by :meth:`TextAttacher.encode
    <d2c_hf.attach.attachers.TextAttacher.encode>` of the row's ``caption``. Option ``max_length`` (default
    :data:`DEFAULT_CAPTION_TOKENS`; ``--part_option caption.max_length=77``)."""

    name = "caption"
    column = "caption_embeds"
    extra_columns = ("caption_mask",)
    description = "columns 'caption_embeds' + 'caption_mask': T5 embeddings of each image's caption (TextAttacher, per row)"
    reads = "captions"

    def __init__(self, attacher: Any) -> None:
        self.attacher = attacher

    @classmethod
    def references(cls, options: Any) -> list[tuple[str, Any]]:
        return [("text_encoder", options.attach.text_encoder)]

    @classmethod
    def load(cls, options: Any, context: PartContext) -> CaptionPart:
        from ..utils.checks import check_positive_int
        from .attachers import TextAttacher

        own = cls.part_options(options)
        unknown = sorted(set(own) - {"max_length"})
        if unknown:
            raise ValueError(f"attach part 'caption' takes the option max_length only, got {unknown}")
        max_length = check_positive_int(own.get("max_length", DEFAULT_CAPTION_TOKENS), "caption.max_length")
        return cls(
            TextAttacher.from_pretrained(
                options.attach.text_encoder,
                max_length=max_length,
                batch_size=options.batch_size,
                dtype=_dtype(options),
                device=context.device,
            )
        )

    @property
    def config(self) -> dict[str, Any]:
        config = {
            k: v
            for k, v in self.attacher.config.items()
            if k not in ("prompt_template", "unique", "name_rule")
        }
        return {**config, "source": "the row's caption (column 'caption')", "padding": "max_length"}

    @classmethod
    def features(cls, config: Mapping[str, Any]):
        from datasets import Array2D, Features, List, Value

        length = config["max_length"]
        return Features(
            {
                cls.column: Array2D((length, config["hidden_size"]), "float16"),
                "caption_mask": List(Value("int8"), length=length),
            }
        )

    def compute_columns(self, captions: Any, rows: Sequence[int]) -> dict[str, np.ndarray]:
        import torch

        from .attachers import check_finite

        if not len(captions):
            shape = (0, self.attacher.max_length)
            return {
                self.column: np.zeros((*shape, self.attacher.hidden_size), np.float16),
                "caption_mask": np.zeros(shape, np.int8),
            }
        embeds, mask = self.attacher.encode([str(c) for c in captions])
        embeds16 = embeds.to(torch.float16)
        check_finite(embeds16, "the caption embedding", list(rows), "run the text encoder in float32")
        return {self.column: embeds16.numpy(), "caption_mask": mask.numpy()}

    def compute(self, captions: Any, rows: Sequence[int]) -> np.ndarray:
        return self.compute_columns(captions, rows)[self.column]


#: the parts that ship with the package (their ``info`` keys are always present, ``None`` when not attached)
BUILTIN_PARTS = tuple(_REGISTRY)

__all__ = [
    "ATTACH_PARTS",
    "BUILTIN_PARTS",
    "DEFAULT_CAPTION_TOKENS",
    "PART_INPUTS",
    "AttachPart",
    "CaptionPart",
    "CaptionTransform",
    "LatentsPart",
    "PartContext",
    "TextPart",
    "VisualPart",
    "all_part_columns",
    "get_part",
    "needs_vae",
    "parse_attach",
    "part_columns",
    "part_transform",
    "register_attach_part",
    "row_parts",
]
