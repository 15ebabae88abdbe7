"""The Python API and the ``d2c`` command line on bad input, case by case.

Every case ends in a clear error that names the argument, column, row or file (the message is checked)
or in a correct result, never in a traceback from inside a dependency (the raising frame must be
d2c_hf's), a hang or a half-written output. Cases marked *early* must fail before any model is loaded:
the model loader is replaced by one that fails the test. (``examples/train_sit.py`` has its own
catalogue: tests/test_bad_inputs_train_sit.py.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Value

from d2c_hf import CondensedDataset, DifficultyScorer, condense, select
from d2c_hf.cli import main as cli_main
from helpers_condensed import synthetic_condensed, with_difficulty

SRC = str(Path(__file__).resolve().parents[1] / "src" / "d2c_hf")
NO_MODELS = dict(
    scorer="no/such-model", vae="no/such-vae", text_encoder="no/such-t5", vision_encoder="no/such-dino"
)


@dataclass
class Case:
    name: str
    call: Callable[..., object]  # (fixtures) -> result
    error: type[BaseException]
    match: str
    early: bool = True


def _no_loading():
    def refuse(*args, **kwargs):
        raise AssertionError(f"a model was loaded before the error ({args[1] if len(args) > 1 else kwargs})")

    return (
        mock.patch.multiple("d2c_hf.utils.hub", load_pretrained=refuse),
        mock.patch("d2c_hf.selection.denoisers.load_pretrained", refuse),
        mock.patch("d2c_hf.attach.attachers.load_pretrained", refuse),
    )


@pytest.fixture(scope="module")
def ds(digits_small):
    return with_difficulty(digits_small)


@pytest.fixture(scope="module")
def scorer_with_other_vae(local_hub, tmp_path_factory):
    """A DiT pipeline folder whose own vae/ differs from local_hub.vae (another random init)."""
    from diffusers import DDIMScheduler, DiTPipeline
    from diffusers.models import AutoencoderKL, DiTTransformer2DModel

    folder = tmp_path_factory.mktemp("other") / "dit"
    vae = AutoencoderKL.from_pretrained(local_hub.vae)
    with torch.no_grad():
        for p in vae.encoder.parameters():
            p.add_(0.01)
    DiTPipeline(
        transformer=DiTTransformer2DModel.from_pretrained(local_hub.dit, subfolder="transformer"),
        vae=vae,
        scheduler=DDIMScheduler.from_pretrained(local_hub.dit, subfolder="scheduler"),
    ).save_pretrained(folder)
    return folder


def _bare(ds):
    return ds.cast_column("label", Value("int64"))


API_CASES = [
    Case(
        "misspelt keyword",
        lambda f: condense(f["ds"], imagesper_class=1, **NO_MODELS),
        TypeError,
        r"\['imagesper_class'\].*did you mean 'images_per_class'",
    ),
    Case(
        "no budget", lambda f: condense(f["ds"], **NO_MODELS), ValueError, "exactly one of images_per_class"
    ),
    Case(
        "ratio 0",
        lambda f: condense(f["ds"], ratio=0.0, **NO_MODELS),
        ValueError,
        r"ratio must lie in \(0, 1\]",
    ),
    Case(
        "ratio above 1", lambda f: condense(f["ds"], ratio=1.5, **NO_MODELS), ValueError, r"ratio must lie in"
    ),
    Case(
        "ratio as text",
        lambda f: condense(f["ds"], ratio="0.1", **NO_MODELS),
        TypeError,
        "ratio must be a number",
    ),
    Case(
        "zero images per class",
        lambda f: condense(f["ds"], images_per_class=0, **NO_MODELS),
        ValueError,
        "images_per_class",
    ),
    Case(
        "unknown strategy",
        lambda f: condense(f["ds"], images_per_class=2, strategy="best", **NO_MODELS),
        ValueError,
        "unknown strategy 'best'",
    ),
    Case(
        "interval 0",
        lambda f: condense(f["ds"], images_per_class=2, interval=0, **NO_MODELS),
        ValueError,
        "interval",
    ),
    Case(
        "interval as a word",
        lambda f: condense(f["ds"], images_per_class=2, interval="big", **NO_MODELS),
        (ValueError, TypeError),
        "interval",
    ),
    Case(
        "unknown attach part",
        lambda f: condense(f["ds"], images_per_class=2, attach=("depth",), **NO_MODELS),
        ValueError,
        r"unknown attach part\(s\) \['depth'\]",
    ),
    Case(
        "resolution 0",
        lambda f: condense(f["ds"], images_per_class=2, resolution=0, **NO_MODELS),
        ValueError,
        "resolution must be a positive integer",
    ),
    Case(
        "negative batch size",
        lambda f: condense(f["ds"], images_per_class=2, batch_size=-1, **NO_MODELS),
        ValueError,
        "batch_size must be a positive integer",
    ),
    Case(
        "resolution not divisible by the patch",
        lambda f: condense(f["ds"], images_per_class=2, resolution=33, **NO_MODELS),
        ValueError,
        "not divisible by patch_size=2",
    ),
    Case(
        "int8 dtype",
        lambda f: condense(f["ds"], images_per_class=2, dtype=torch.int8, **NO_MODELS),
        ValueError,
        "not supported",
    ),
    Case(
        "float64 dtype",
        lambda f: condense(f["ds"], images_per_class=2, dtype="float64", **NO_MODELS),
        ValueError,
        "dtype must be one of",
    ),
    Case(
        "negative seed",
        lambda f: condense(f["ds"], images_per_class=2, seed=-1, **NO_MODELS),
        ValueError,
        "seed",
    ),
    Case(
        "zero timesteps",
        lambda f: condense(f["ds"], images_per_class=2, num_timesteps=0, **NO_MODELS),
        ValueError,
        "num_timesteps must be a positive integer",
    ),
    Case(
        "missing label column",
        lambda f: condense(f["ds"], images_per_class=2, label_column="y", **NO_MODELS),
        ValueError,
        "label_column='y' is not a column",
    ),
    Case(
        "missing image column",
        lambda f: condense(f["ds"], images_per_class=2, image_column="img", **NO_MODELS),
        ValueError,
        "image_column='img' is not a column",
    ),
    Case(
        "class names of the wrong length",
        lambda f: condense(f["ds"], images_per_class=2, class_names=["a", "b"], **NO_MODELS),
        ValueError,
        "class_names has 2 names but the dataset has 10",
    ),
    Case(
        "an empty class name",
        lambda f: condense(f["ds"], images_per_class=2, class_names=["a"] * 4 + [""] * 6, **NO_MODELS),
        ValueError,
        "class 4 has no usable name",
    ),
    Case(
        "bare labels and text",
        lambda f: condense(_bare(f["ds"]), images_per_class=2, **NO_MODELS),
        ValueError,
        "pass class_names",
    ),
    Case(
        "template without a slot",
        lambda f: condense(f["ds"], images_per_class=2, prompt_template="a photo", **NO_MODELS),
        ValueError,
        "exactly one '\\{\\}' placeholder",
    ),
    Case(
        "selection kwargs repeat condense's",
        lambda f: condense(f["ds"], images_per_class=2, selection_kwargs={"seed": 1}, **NO_MODELS),
        TypeError,
        r"must not repeat condense\(\) arguments",
    ),
    Case(
        "work_dir on a map-style dataset",
        lambda f: condense(f["ds"], images_per_class=2, work_dir="x", **NO_MODELS),
        ValueError,
        "work_dir is for streaming datasets only",
    ),
    Case(
        "num_rows that disagrees",
        lambda f: condense(f["ds"], images_per_class=2, num_rows=5, **NO_MODELS),
        ValueError,
        "num_rows=5 but the dataset has 200 rows",
    ),
    Case(
        "latents column already there",
        lambda f: condense(f["ds"].add_column("latents", [0] * 200), images_per_class=2, **NO_MODELS),
        ValueError,
        "already has a 'latents' column",
    ),
    Case(
        "non-finite difficulty",
        lambda f: condense(
            f["ds"].remove_columns("difficulty").add_column("difficulty", [float("nan")] + [1.0] * 199),
            images_per_class=2,
            **NO_MODELS,
        ),
        ValueError,
        "non-finite value at row 0",
    ),
    Case(
        "not a dataset",
        lambda f: condense([1, 2, 3], images_per_class=2),
        TypeError,
        r"condense\(\) takes a datasets.Dataset",
    ),
    Case(
        "DatasetDict without a train split",
        lambda f: condense(DatasetDict({"a": f["ds"], "b": f["ds"]}), images_per_class=2, **NO_MODELS),
        ValueError,
        r"splits \['a', 'b'\] and no 'train'",
    ),
    Case(
        "empty dataset",
        lambda f: condense(f["ds"].select([]), images_per_class=2, **NO_MODELS),
        ValueError,
        "the dataset is empty",
    ),
    Case(
        "negative label",
        lambda f: condense(
            _bare(f["ds"]).map(lambda r, i: {"label": -1 if i == 3 else r["label"]}, with_indices=True),
            images_per_class=2,
            class_names=list("abcdefghij"),
            **NO_MODELS,
        ),
        ValueError,
        "negative label -1 at row 3",
    ),
    Case(
        "mistyped scorer path",
        lambda f: condense(
            f["ds"].remove_columns("difficulty"), images_per_class=2, scorer="./no_such_scorer", attach=()
        ),
        FileNotFoundError,
        "scorer: no such folder './no_such_scorer'",
    ),
    Case(
        "mistyped encoder path",
        lambda f: condense(
            f["ds"],
            images_per_class=2,
            scorer=None,
            vae=None,
            vision_encoder="../no_dino",
            attach=("visual",),
        ),
        FileNotFoundError,
        "vision_encoder: no such folder",
    ),
    Case(
        "streaming, unknown size",
        lambda f: condense(f["ds"].to_iterable_dataset(), images_per_class=2, **NO_MODELS),
        ValueError,
        r"unknown.*num_rows=N",
    ),
    Case(
        "streaming, loaded scorer",
        lambda f: condense(
            f["ds"].to_iterable_dataset(), images_per_class=2, num_rows=200, scorer=torch.nn.Linear(1, 1)
        ),
        TypeError,
        "scorer is a loaded Linear",
    ),
    Case(
        "streaming, scorer option it cannot take",
        lambda f: condense(
            f["ds"].to_iterable_dataset(),
            images_per_class=2,
            num_rows=200,
            prediction_type="flow",
            **NO_MODELS,
        ),
        TypeError,
        r"streaming dataset takes only \['key_column', 'max_forward_batch'\]",
    ),
    # models are loaded for these: the error is about the model itself
    Case(
        "a VAE as the scorer",
        lambda f: DifficultyScorer.from_pretrained(f["hub"].vae),
        ValueError,
        "AutoencoderKL, an autoencoder, not a diffusion denoiser: pass it as vae=",
        early=False,
    ),
    Case(
        "the default scorer offline",
        lambda f: condense(f["ds"].remove_columns("difficulty"), images_per_class=2, attach=()),
        OSError,
        r"offline \(HF_HUB_OFFLINE=1\).*hf download facebook/DiT-XL-2-256.*local folder.*train_scorer",
        early=False,
    ),
    Case(
        "the default encoders offline",
        lambda f: condense(f["ds"], images_per_class=2, scorer=None, vae=None, attach=("text",)),
        OSError,
        "text_encoder 'google/flan-t5-xl' is not a local folder",
        early=False,
    ),
    Case(
        "a VAE unlike the one the scorer ships",
        lambda f: condense(
            f["ds"].remove_columns("difficulty"),
            images_per_class=2,
            scorer=f["other"],
            vae=f["hub"].vae,
            attach=(),
            resolution=32,
        ),
        ValueError,
        "ships its own VAE .* encodes differently",
        early=False,
    ),
    Case(
        "pixel space for a scorer that ships a VAE",
        lambda f: condense(
            f["ds"].remove_columns("difficulty"),
            images_per_class=2,
            scorer=f["hub"].dit,
            vae=None,
            attach=(),
            resolution=32,
        ),
        ValueError,
        "scoring it in pixel space",
        early=False,
    ),
    # the product
    Case(
        "load a folder that does not exist",
        lambda f: CondensedDataset.load("./nowhere"),
        FileNotFoundError,
        "no condensed dataset at './nowhere'",
    ),
    Case(
        "load a plain datasets folder",
        lambda f: CondensedDataset.load(f["plain"]),
        ValueError,
        "use datasets.load_from_disk",
    ),
    Case(
        "save over a folder that is not a condensed set",
        lambda f: synthetic_condensed().save_to_disk(f["occupied"], overwrite=True),
        FileExistsError,
        "it is not a condensed dataset",
    ),
    Case(
        "save over an existing set",
        lambda f: synthetic_condensed().save_to_disk(f["occupied"]),
        FileExistsError,
        "pass overwrite=True",
    ),
    Case(
        "save under a file",
        lambda f: synthetic_condensed().save_to_disk(f["file"] / "out"),
        OSError,
        r"could not write the condensed dataset to .*a_file/out",
    ),
    Case(
        "samples without labels",
        lambda f: CondensedDataset(Dataset.from_dict({"x": [1]})),
        ValueError,
        "samples needs a 'label' column",
    ),
    Case(
        "info that is not JSON",
        lambda f: CondensedDataset(synthetic_condensed().samples, info={"x": object()}),
        TypeError,
        "JSON-serialisable",
    ),
    Case(
        "labels outside the classes",
        lambda f: CondensedDataset(Dataset.from_dict({"label": [0, 5]}), info={"num_classes": 3}),
        ValueError,
        r"row 1 has label 5, outside \[0, 3\)",
    ),
    # the pure parts
    Case(
        "NaN scores",
        lambda f: select(np.array([0.1, np.nan, 0.3]), np.array([0, 0, 0]), images_per_class=1),
        ValueError,
        "the first at index 1",
    ),
    Case(
        "scores and labels of other lengths",
        lambda f: select(np.arange(3.0), np.array([0, 0]), images_per_class=1),
        ValueError,
        "3",
    ),
    Case(
        "scorer with zero timesteps",
        lambda f: DifficultyScorer.from_pretrained("./not_loaded", num_timesteps=0),
        ValueError,
        "num_timesteps must be a positive integer",
    ),
]


@pytest.fixture(scope="module")
def fixtures(ds, local_hub, scorer_with_other_vae, tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    plain = root / "plain"
    ds.save_to_disk(str(plain))
    occupied = root / "occupied"
    occupied.mkdir()
    (occupied / "mine.txt").write_text("x")
    (root / "a_file").write_text("x")
    return {
        "ds": ds,
        "hub": local_hub,
        "other": scorer_with_other_vae,
        "plain": plain,
        "occupied": occupied,
        "file": root / "a_file",
        "root": root,
    }


def _raised_in_d2c_hf(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(SRC)


@pytest.mark.parametrize("case", API_CASES, ids=[c.name for c in API_CASES])
def test_api_bad_input(case, fixtures):
    before = sorted(p.name for p in fixtures["root"].rglob("*"))
    patches = _no_loading() if case.early else ()
    with pytest.raises(case.error) as info:
        with contextlib_all(patches):
            case.call(fixtures)
    assert re.search(case.match, str(info.value)), str(info.value)
    assert _raised_in_d2c_hf(info.value), "".join(traceback.format_tb(info.value.__traceback__)[-2:])
    assert not isinstance(info.value, AssertionError)
    assert sorted(p.name for p in fixtures["root"].rglob("*")) == before  # nothing half-written


class contextlib_all:
    def __init__(self, managers):
        import contextlib

        self.stack = contextlib.ExitStack()
        self.managers = managers

    def __enter__(self):
        for manager in self.managers:
            self.stack.enter_context(manager)
        return self

    def __exit__(self, *exc):
        return self.stack.__exit__(*exc)


# ------------------------------------------------------------------ the d2c command line


@pytest.fixture(scope="module")
def cli_fixtures(digits, local_hub, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    one_split = root / "one_split"
    digits["test"].select(range(30)).save_to_disk(str(one_split))  # a Dataset without a split name
    (root / "a_file").write_text("x")
    return {"root": root, "one_split": one_split, "hub": local_hub}


def _score(f, out, *extra):
    return ["score", "--dataset", "digits", "--max_samples", "20", "--scorer", str(f["hub"].dit),
            "--resolution", "32", "--batch_size", "10", "--shard_size", "10", "--num_workers", "0",
            "--output_dir", str(out), *extra]  # fmt: skip


CLI_CASES = [
    ("output_dir is a file", lambda f: _score(f, f["root"] / "a_file"), "exists and is a file"),
    (
        "mistyped dataset path",
        lambda f: [
            *_score(f, f["root"] / "o1")[:1],
            "--dataset",
            "./no_such_data",
            *_score(f, f["root"] / "o1")[3:],
        ],
        "--dataset: no such folder './no_such_data'",
    ),
    (
        "unknown split",
        lambda f: _score(f, f["root"] / "o2", "--split", "validation"),
        r"split 'validation' is not a split of 'digits'; splits: \['train', 'test'\]",
    ),
    (
        "split of a one-split folder",
        lambda f: [
            *_score(f, f["root"] / "o3")[:1],
            "--dataset",
            str(f["one_split"]),
            *_score(f, f["root"] / "o3")[3:],
            "--split",
            "test",
        ],
        "single Dataset .* records no split name, so split 'test' cannot be read",
    ),
    (
        "mistyped scorer path",
        lambda f: [*_score(f, f["root"] / "o4")[:5], "--scorer", "./nope", *_score(f, f["root"] / "o4")[7:]],
        "scorer: no such folder './nope'",
    ),
    (
        "shard not a multiple of the batch",
        lambda f: _score(f, f["root"] / "o5", "--shard_size", "15"),
        "shard_size 15 must be a multiple of batch_size 10",
    ),
    (
        "zero timesteps",
        lambda f: _score(f, f["root"] / "o6", "--num_timesteps", "0"),
        "num_timesteps must be a positive integer",
    ),
    (
        "negative workers",
        lambda f: _score(f, f["root"] / "o7", "--num_workers", "-1"),
        "num_workers must be a non-negative integer",
    ),
    ("unknown dtype", lambda f: _score(f, f["root"] / "o8", "--dtype", "int8"), "dtype must be one of"),
    (
        "select before score",
        lambda f: ["select", "--output_dir", str(f["root"] / "o9"), "--ratio", "0.1"],
        "run `d2c score`",
    ),
    (
        "attach before select",
        lambda f: [
            "attach",
            "--dataset",
            "digits",
            "--output_dir",
            str(f["root"] / "o10"),
            "--text_encoder",
            str(f["hub"].t5),
        ],
        "run `d2c select` first",
    ),
    (
        "interval that is not a number",
        lambda f: ["select", "--output_dir", str(f["root"] / "o11"), "--ratio", "0.1", "--interval", "big"],
        "--interval must be a positive integer, 'auto' or 'paper'",
    ),
    (
        "unknown attach part",
        lambda f: [
            "condense",
            "--dataset",
            "digits",
            "--output_dir",
            str(f["root"] / "o12"),
            "--ratio",
            "0.1",
            "--attach",
            "depth",
        ],
        r"unknown attach part\(s\) \['depth'\]",
    ),
    ("info of nothing", lambda f: ["info", str(f["root"] / "nothing")], "no condensed dataset"),
    (
        "ratio above 1",
        lambda f: ["select", "--output_dir", str(f["root"] / "o13"), "--ratio", "2"],
        r"ratio must lie in \(0, 1\]",
    ),
]


@pytest.mark.parametrize(("name", "argv", "match"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line_and_exit_2(name, argv, match, cli_fixtures, capsys):
    args = argv(cli_fixtures)
    before = sorted(p.name for p in cli_fixtures["root"].rglob("*"))
    with contextlib_all(_no_loading()):
        code = cli_main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(match, err), err
    after = sorted(p.name for p in cli_fixtures["root"].rglob("*"))
    assert [p for p in after if p not in before and not p.startswith("o")] == []  # no stray files


def test_cli_debug_shows_the_traceback(cli_fixtures):
    with pytest.raises(NotADirectoryError):
        cli_main(["--debug", *_score(cli_fixtures, cli_fixtures["root"] / "a_file")])


def test_cli_usage_errors_exit_2_with_argparse(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["score", "--output_dir", "x"])  # --dataset missing
    assert info.value.code == 2 and "--dataset" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", ["score", "select", "attach", "condense", "info", "demo", "fid", "convert-repa", "convert-sit"]
)
def test_help_imports_nothing_heavy(command):
    """`d2c <command> --help` answers without importing torch, datasets or diffusers (it took 4-11 s)."""
    code = (
        f"import sys\nfrom d2c_hf.cli import main\ntry:\n    main([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'datasets', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_relative_and_an_absolute_dataset_path_resume_the_same_run(
    local_hub, digits, tmp_path, monkeypatch
):
    digits["train"].select(range(20)).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "run"

    def argv(dataset):
        return ["score", "--dataset", dataset, "--scorer", str(local_hub.dit), "--resolution", "32",
                "--batch_size", "10", "--shard_size", "10", "--num_workers", "0", "--output_dir", str(out)]  # fmt: skip

    monkeypatch.chdir(tmp_path)
    assert cli_main(argv("./data")) == 0
    assert cli_main(argv(str(tmp_path / "data"))) == 0
    manifest = json.loads((out / "score" / "manifest.json").read_text())
    assert manifest["skipped_shards"] == 2 and manifest["computed_shards"] == 0


def test_a_ratio_with_a_class_label_of_more_classes(digits):
    """The realised fraction matches the ratio when only some ClassLabel classes have rows."""
    three = (
        digits["train"]
        .filter(lambda y: y < 3, input_columns="label")
        .cast_column("label", ClassLabel(names=[str(i) for i in range(10)]))
    )
    result = select(np.arange(len(three), dtype=float), np.asarray(three["label"]), ratio=0.2, num_classes=10)
    assert abs(result.realised_ratio - 0.2) < 0.02


def test_a_scorer_that_ships_its_vae_is_scored_and_attached_with_it(scorer_with_other_vae, local_hub, ds):
    """vae='auto' (the default) takes the scorer's own vae/, for scoring and for the latents; a VAE that
    encodes alike (here: the same weights from another folder) is accepted explicitly."""
    from d2c_hf.utils.hub import model_provenance
    from d2c_hf.utils.vae import load_vae

    own = model_provenance(load_vae(scorer_with_other_vae))["sha256"]
    data = ds.remove_columns("difficulty").select(range(40))
    got = condense(data, images_per_class=1, scorer=scorer_with_other_vae, attach=("latents",), resolution=32)
    assert got.info["scoring"]["vae"]["sha256"] == own and got.info["latents"]["vae"]["sha256"] == own
    copy = Path(str(scorer_with_other_vae) + "_vae_only")
    load_vae(scorer_with_other_vae).save_pretrained(copy)
    explicit = condense(
        data, images_per_class=1, scorer=scorer_with_other_vae, vae=copy, attach=(), resolution=32
    )
    np.testing.assert_array_equal(
        np.asarray(explicit.scores["difficulty"]), np.asarray(got.scores["difficulty"])
    )


def test_the_default_vae_offline_names_pixel_space(ds):
    with pytest.raises(OSError, match=r"vae 'stabilityai/sd-vae-ft-ema' is not a local folder.*vae=None"):
        condense(ds, images_per_class=2, scorer=None, attach=("latents",))
