"""The two storage layouts of a condensed dataset, written atomically and read back.

``save_to_disk(path)``: ``d2c_info.json``, ``samples/``, ``classes/``, ``scores/``
(``datasets.save_to_disk`` folders: memory-mapped, fastest to load), ``README.md`` + ``figures/``.

``save_hub_folder(dir)`` / ``push_to_hub(repo_id)``: the Hub layout, parquet shards for the
configs ``default`` (``data/``), ``classes`` and ``scores``, a ``README.md`` dataset card whose
YAML ``configs:`` block makes ``load_dataset(repo)`` and ``load_dataset(repo, "classes")`` work,
``d2c_info.json`` and ``figures/``.

The functions here take a :class:`~d2c_hf.condensed.dataset.CondensedDataset` (its ``samples``,
``classes``, ``scores`` and ``info``) and never import it: :mod:`.dataset` calls them from its methods.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..utils.files import read_json, staged_dir, write_json
from ..utils.tables import owned_file, save_owned
from .info import INFO_FILENAME, TABLES_KEY, check_format_version
from .integrity import tables_record, verify_data_files

logger = logging.getLogger(__name__)

README_FILENAME = "README.md"
FIGURES_DIR = "figures"
#: config name -> folder of its parquet shards in the Hub layout
HUB_DIRS = {"default": "data", "classes": "classes", "scores": "scores"}
#: table -> folder in the save_to_disk layout
DISK_DIRS = {"samples": "samples", "classes": "classes", "scores": "scores"}
SPLIT = "train"


def tables_of(condensed: Any) -> dict[str, Any]:
    """``{"samples": ..., "classes": ..., "scores": ...}`` of a condensed dataset (``None`` where absent)."""
    return {name: getattr(condensed, name) for name in DISK_DIRS}


def info_with_tables(
    condensed: Any, root: Path | None = None, files: dict[str, list[Path]] | None = None
) -> dict[str, Any]:
    """The ``info`` record as saved: with the tables' record (:func:`~.integrity.tables_record`), and the
    content checksums of the data ``files`` written under ``root`` (``{table: [file, ...]}``)."""
    return {**condensed.info, TABLES_KEY: tables_record(tables_of(condensed), root, files)}


def save_to_disk(condensed: Any, path: str | os.PathLike, overwrite: bool = False, card: bool = True) -> Path:
    """:meth:`CondensedDataset.save_to_disk <d2c_hf.condensed.dataset.CondensedDataset.save_to_disk>`."""
    path = Path(path).expanduser()
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
        if not path.is_dir() or (any(path.iterdir()) and not (path / INFO_FILENAME).is_file()):
            raise FileExistsError(
                f"refusing to overwrite {path}: it is not a condensed dataset (no {INFO_FILENAME}); "
                "choose another path or remove it yourself"
            )
    with staged_dir(path, "the condensed dataset") as staging:
        files = {}
        for name, table in tables_of(condensed).items():
            if table is None:
                continue
            if owned_file(table) is not None:  # the sharded assembly's scratch file: moved, not copied
                save_owned(table, staging / DISK_DIRS[name])
            else:
                table.save_to_disk(str(staging / DISK_DIRS[name]))
            files[name] = sorted((staging / DISK_DIRS[name]).glob("*.arrow"))
        if card:
            write_card(condensed, staging, repo_id=None)
        # the info file goes last: a folder without it is never mistaken for a finished dataset
        write_json(staging / INFO_FILENAME, info_with_tables(condensed, staging, files))
    logger.info("saved %r to %s", condensed, path)
    return path


def write_card(condensed: Any, folder: Path, repo_id: str | None) -> None:
    """``README.md`` and ``figures/`` of the dataset card in ``folder``."""
    from .card import make_figures, render_card

    try:
        figures = make_figures(condensed, folder / FIGURES_DIR)
    except OSError:  # a full disk or a read-only folder fails the save, as any other write would
        raise
    except Exception as err:  # a figure is decoration: never lose the dataset over one
        logger.warning(
            "the dataset card's figures could not be drawn (%s: %s); writing the card without them",
            type(err).__name__,
            err,
        )
        shutil.rmtree(folder / FIGURES_DIR, ignore_errors=True)
        figures = {}
    relative = {name: f"{FIGURES_DIR}/{p.name}" for name, p in figures.items()}
    (folder / README_FILENAME).write_text(
        render_card(condensed, figures=relative, repo_id=repo_id), encoding="utf-8"
    )


def hub_configs(condensed: Any) -> list[dict[str, Any]]:
    """The README ``configs:`` entries of the Hub layout."""
    configs = [
        {
            "config_name": "default",
            "data_files": [{"split": SPLIT, "path": f"{HUB_DIRS['default']}/{SPLIT}-*"}],
            "default": True,
        }
    ]
    for name in ("classes", "scores"):
        if getattr(condensed, name) is not None:
            configs.append(
                {
                    "config_name": name,
                    "data_files": [{"split": SPLIT, "path": f"{HUB_DIRS[name]}/{SPLIT}-*"}],
                }
            )
    return configs


def save_hub_folder(
    condensed: Any,
    folder: str | os.PathLike,
    *,
    repo_id: str | None = None,
    max_shard_size: str | int = "500MB",
    card: bool = True,
) -> Path:
    """:meth:`CondensedDataset.save_hub_folder <d2c_hf.condensed.dataset.CondensedDataset.save_hub_folder>`."""
    folder = Path(folder).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} exists and is not an empty folder; choose a new folder")
    # written under a hidden name beside the folder and renamed into place when complete (as save_to_disk)
    with staged_dir(folder, "the condensed dataset (Hub layout)") as staging:
        files = {
            "samples": write_parquet_shards(condensed.samples, staging / HUB_DIRS["default"], max_shard_size)
        }
        for name in ("classes", "scores"):
            table = getattr(condensed, name)
            if table is not None:
                files[name] = write_parquet_shards(table, staging / HUB_DIRS[name], max_shard_size)
        if card:
            write_card(condensed, staging, repo_id=repo_id)
        else:
            from .card import render_card

            (staging / README_FILENAME).write_text(render_card(condensed, repo_id=repo_id), encoding="utf-8")
        write_json(staging / INFO_FILENAME, info_with_tables(condensed, staging, files))
    return folder


def push_to_hub(
    condensed: Any,
    repo_id: str,
    *,
    private: bool | None,
    token: str | None,
    api: Any,
    commit_message: str,
    revision: str | None,
    create_pr: bool,
    max_shard_size: str | int,
):
    """:meth:`CondensedDataset.push_to_hub <d2c_hf.condensed.dataset.CondensedDataset.push_to_hub>`."""
    from huggingface_hub import HfApi

    api = api if api is not None else HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="d2c-hub-") as tmp:
        folder = save_hub_folder(
            condensed, Path(tmp) / "repo", repo_id=repo_id, max_shard_size=max_shard_size
        )
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private, token=token)
        return api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=commit_message,
            token=token,
            revision=revision,
            create_pr=create_pr,
            delete_patterns=[f"{d}/*" for d in (*HUB_DIRS.values(), FIGURES_DIR)],
        )


def read_condensed(
    path_or_repo_id: str | os.PathLike,
    *,
    revision: str | None,
    token: str | None,
    verify: bool = True,
    **load_kwargs,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None, str]:
    """Read a condensed dataset's tables and info from any layout: ``(tables, info, record, where)``,
    ``record`` being what the save recorded about the tables (``None`` for a folder written before it
    existed) and ``where`` how to name the source in messages. ``verify``: check a local folder's data
    files against their content checksums first (:func:`~.integrity.verify_data_files`). See
    :meth:`CondensedDataset.load <d2c_hf.condensed.dataset.CondensedDataset.load>`."""
    path = Path(path_or_repo_id).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} is a file; a condensed dataset is a folder")
        info_file = path / INFO_FILENAME
        if not info_file.is_file():
            hint = ""
            if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
                hint = " It looks like a plain datasets folder: use datasets.load_from_disk."
            raise ValueError(
                f"{path} is not a condensed dataset: it has no {INFO_FILENAME} (expected a folder written by "
                f"CondensedDataset.save_to_disk or save_hub_folder).{hint}"
            )
        info = read_json(info_file, "the condensed dataset's info")
        check_format_version(info, str(path))
        record = info.pop(TABLES_KEY, None)
        if verify and isinstance(record, dict):
            verify_data_files(path, record, str(path))
        if (path / DISK_DIRS["samples"] / "state.json").is_file():
            tables = read_disk_tables(path)
        elif (path / HUB_DIRS["default"]).is_dir():
            tables = read_local_hub_tables(path, **load_kwargs)
        else:
            raise ValueError(
                f"{path} has a {INFO_FILENAME} but neither {DISK_DIRS['samples']}/ nor "
                f"{HUB_DIRS['default']}/: the save is incomplete; re-create the dataset"
            )
        return tables, info, record, str(path)
    name = str(path_or_repo_id)
    if os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") != 1:
        raise FileNotFoundError(
            f"no condensed dataset at {name!r} (not a folder, and not a Hub id 'user/name')"
        )
    info = read_json(hub_info_file(name, revision=revision, token=token), f"the info of {name!r}")
    check_format_version(info, f"Hub dataset {name!r}")
    record = info.pop(TABLES_KEY, None)
    tables = read_hub_tables(name, revision=revision, token=token, **load_kwargs)
    return tables, info, record, f"Hub dataset {name!r}"


def read_disk_tables(path: Path) -> dict[str, Any]:
    from datasets import load_from_disk

    tables = {}
    for name, directory in DISK_DIRS.items():
        folder = path / directory
        if not (folder / "state.json").is_file():
            tables[name] = None
            continue
        try:
            tables[name] = load_from_disk(str(folder))
        except Exception as err:  # pyarrow / datasets errors do not name the file
            raise ValueError(
                f"{folder} cannot be read ({type(err).__name__}: {err}); the condensed dataset is damaged: "
                "restore the folder from a copy or re-create the dataset"
            ) from err
    return tables


def read_local_hub_tables(path: Path, **load_kwargs) -> dict[str, Any]:
    """A local Hub-layout folder's tables, read from its own parquet files (cache keyed by the files)."""
    from datasets import load_dataset

    tables = {}
    for (name, _), directory in zip(DISK_DIRS.items(), HUB_DIRS.values()):
        files = sorted(str(f) for f in (path / directory).glob(f"{SPLIT}-*.parquet"))
        if not files:
            tables[name] = None
            continue
        try:
            tables[name] = load_dataset("parquet", data_files={SPLIT: files}, split=SPLIT, **load_kwargs)
        except Exception as err:  # pyarrow errors do not name the file
            raise ValueError(
                f"{path / directory} cannot be read ({type(err).__name__}: {err}); the condensed dataset is "
                "damaged: restore the folder from a copy or re-create the dataset"
            ) from err
    return tables


def hub_info_file(repo_id: str, *, revision: str | None, token: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(
            hf_hub_download(repo_id, INFO_FILENAME, repo_type="dataset", revision=revision, token=token)
        )
    except (OSError, EntryNotFoundError) as err:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local folder, and its {INFO_FILENAME} could not be fetched as a Hub dataset "
            f"({type(err).__name__}: {err})"
        ) from err


def read_hub_tables(
    repo_id: str, *, revision: str | None, token: str | None, **load_kwargs
) -> dict[str, Any]:
    """A Hub repo's tables through ``load_dataset`` (cached per commit, so never stale)."""
    from datasets import get_dataset_config_names, load_dataset

    access = {k: v for k, v in (("revision", revision), ("token", token)) if v is not None}
    configs = set(get_dataset_config_names(repo_id, **access))
    return {
        name: load_dataset(repo_id, config, split=SPLIT, **access, **load_kwargs)
        if config in configs
        else None
        for name, config in zip(DISK_DIRS, HUB_DIRS)
    }


def write_parquet_shards(dataset, folder: Path, max_shard_size: str | int) -> list[Path]:
    """``datasets``' own push_to_hub sharding, written locally: shards of at most ``max_shard_size``,
    external image files embedded, row groups sized for the dataset viewer."""
    from datasets.arrow_writer import (
        get_writer_batch_size_from_data_size,
        get_writer_batch_size_from_features,
    )
    from datasets.features.features import require_decoding
    from datasets.table import embed_table_storage
    from datasets.utils.py_utils import convert_file_size_to_int

    folder.mkdir(parents=True, exist_ok=True)
    rows = len(dataset)
    table_rows = max(dataset.data.num_rows, 1)
    nbytes = int(dataset.data.nbytes * rows / table_rows)
    num_shards = max(1, min(max(rows, 1), nbytes // convert_file_size_to_int(max_shard_size) + 1))
    batch_size = get_writer_batch_size_from_features(
        dataset.features
    ) or get_writer_batch_size_from_data_size(max(rows, 1), max(nbytes, 1))
    embed = any(require_decoding(f, ignore_decode_attribute=True) for f in dataset.features.values())
    paths = []
    for index in range(num_shards):
        shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True).with_format(None)
        if embed and len(shard):
            shard = shard.with_format("arrow").map(
                embed_table_storage, batched=True, batch_size=batch_size, keep_in_memory=True
            )
        path = folder / f"{SPLIT}-{index:05d}-of-{num_shards:05d}.parquet"
        shard.to_parquet(str(path), batch_size=batch_size)
        paths.append(path)
    return paths


__all__ = [
    "DISK_DIRS",
    "FIGURES_DIR",
    "HUB_DIRS",
    "README_FILENAME",
    "SPLIT",
    "hub_configs",
    "hub_info_file",
    "info_with_tables",
    "push_to_hub",
    "read_condensed",
    "read_disk_tables",
    "read_hub_tables",
    "read_local_hub_tables",
    "save_hub_folder",
    "save_to_disk",
    "tables_of",
    "write_card",
    "write_parquet_shards",
]
