"""The ``info`` record of a condensed dataset (``d2c_info.json``): its format version, provenance and keys.

:func:`build_info` is shared by :func:`d2c_hf.condense` and the sharded ``d2c condense`` so that both
describe a result in exactly the same keys; :func:`check_format_version` refuses a record written in
another format version, naming both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..utils.files import json_round_trip

#: Version of the on-disk format. Bump it when a reader of the previous version would
#: misread a new dataset; :meth:`CondensedDataset.load` refuses other versions.
FORMAT_VERSION = 1
INFO_FILENAME = "d2c_info.json"
#: key of d2c_info.json that records each saved table (row count, fingerprint); see integrity.tables_record()
TABLES_KEY = "tables"
#: the ``info`` keys of the built-in Attach parts (always present; ``None`` when not attached)
BUILTIN_INFO_KEYS = ("latents", "visual", "text")


def normalise_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON round trip, so that ``info`` after load equals ``info`` before save."""
    return json_round_trip(dict(info))


def check_format_version(info: Mapping[str, Any], where: str) -> None:
    from ..version import __version__

    version = info.get("format_version")
    if version == FORMAT_VERSION:
        return
    if version is None:
        raise ValueError(
            f"{where} has no 'format_version' in its {INFO_FILENAME}; it is not a condensed dataset"
        )
    advice = (
        "upgrade d2c-hf to read it"
        if isinstance(version, int) and version > FORMAT_VERSION
        else "re-create it with this version (condense(...).save_to_disk)"
    )
    raise ValueError(
        f"{where} uses condensed-dataset format version {version!r}, but d2c-hf {__version__} reads format "
        f"version {FORMAT_VERSION}; {advice}"
    )


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour the stored data depends on."""
    import importlib.metadata as md

    out = {}
    for name in (
        "d2c-hf",
        "torch",
        "datasets",
        "diffusers",
        "transformers",
        "huggingface_hub",
        "numpy",
        "pyarrow",
    ):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def build_info(
    *,
    source: Mapping[str, Any],
    class_names: Sequence[str],
    ratio: float | None,
    selection: Mapping[str, Any],
    interval: int | str,
    feature_column: str | None,
    labels: np.ndarray,
    scoring: Mapping[str, Any] | None,
    parts: Mapping[str, Mapping[str, Any] | None],
    attach: Sequence[str],
    resolution: int,
    patch_size: int,
    seed: int,
    notes: Sequence[str] | None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``info`` record of a condensed dataset (``d2c_info.json``), shared by :func:`condense`
    and the sharded ``d2c condense`` so both describe a result in exactly the same keys.

    ``selection`` is :meth:`SelectionResult.to_dict`; ``labels`` are the selected rows' labels (for
    the realised per-class counts); ``parts`` is each attached part's record by name (the built-in parts'
    keys ``latents``, ``visual``, ``text`` are always there, ``None`` when not attached; a registered part's
    record follows them under its name); ``extra`` keys (e.g. ``distributed``) are appended."""
    from ..version import __version__

    selection_info = dict(selection)
    selection_info.update(
        {
            "interval": selection["params"].get("interval", interval)
            if selection["strategy"] == "interval"
            else None,
            "interval_requested": interval,
            "seed": seed,
            "feature_column": feature_column,
        }
    )
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
    return {
        "format_version": FORMAT_VERSION,
        "method": "D2C",
        "paper": "arXiv:2507.05914",
        "d2c_hf_version": __version__,
        "library_versions": library_versions(),
        "source": dict(source),
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "budget": {
            "ratio": ratio,
            "images_per_class": selection["images_per_class"],
            "total": selection["total"],
        },
        "counts": counts.tolist(),
        "selection": selection_info,
        "scoring": scoring,
        **{name: parts.get(name) for name in BUILTIN_INFO_KEYS},
        "attach": list(attach),
        "resolution": resolution,
        "patch_size": patch_size,
        "num_visual_tokens": (parts.get("visual") or {}).get("num_tokens"),
        "seed": seed,
        "notes": list(notes or []),
        **{name: record for name, record in parts.items() if name not in BUILTIN_INFO_KEYS},
        **extra,
    }


def scores_features(class_label):
    """The features of the ``scores`` table: ``source_index`` int64, ``label`` (``class_label``), ``difficulty`` float32."""
    from datasets import Features, Value

    return Features({"source_index": Value("int64"), "label": class_label, "difficulty": Value("float32")})
