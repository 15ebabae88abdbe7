"""The Python API and the ``d2c`` command line on bad input, case by case.

Every case ends in a clear error that names the argument, column, row or file (the message is checked)
or in a correct result, never in a traceback from inside a dependency (the raising frame must be
d2c_hf's), a hang or a half-written output. Cases marked *early* must fail before any model is loaded:
the model loader is replaced by one that fails the test. (``examples/train_sit.py`` has its own
catalogue: tests/test_bad_inputs_train_sit.py.)
"""

from __future__ import annotations

import json
import os
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
    Case(
        "a VAE as the scorer",  # refused from its config.json, before it loads
        lambda f: DifficultyScorer.from_pretrained(f["hub"].vae),
        ValueError,
        r"scorer: .*vae holds an AutoencoderKL \(diffusers\) \(a VAE: pass it as vae=",
    ),
    # models are loaded for these: the error is about the model itself
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


# ==================================================================================================
# Issue 22 classes: a full disk for every writer, in-place damage for every trusted file kind, each model
# argument given each wrong kind of model, an output that is (or contains, or lies in) an input, two runs
# on one folder. (examples/train_sit.py and sample_sit.py: tests/test_bad_inputs_train_sit.py.)
# ==================================================================================================

# ------------------------------------------------------------------ a full disk, for every writer


def _tiny_rgb_dataset(digits, n=20):
    return digits["train"].select(range(n))


@pytest.fixture(scope="module")
def writer_inputs(digits, local_hub):
    from d2c_hf.pipelines import FlowMatchEulerMaruyamaScheduler, SiTPipeline
    from helpers_sit import tiny_sit
    from local_hub import tiny_vae

    torch.manual_seed(0)  # test-side seeding only
    return {
        "set": synthetic_condensed(num_classes=3, per_class=2, total_per_class=10),
        "pipeline": SiTPipeline(tiny_sit(), FlowMatchEulerMaruyamaScheduler(), vae=tiny_vae().eval()),
        "images": np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8),
        "digits": _tiny_rgb_dataset(digits),
        "hub": local_hub,
    }


def _train_scorer(f, out):
    from d2c_hf import train_scorer

    return train_scorer(
        f["digits"], out, resolution=8, num_steps=1, batch_size=4, model_kwargs={"num_layers": 1}
    )


def _train_text_scorer(f, out):
    from d2c_hf.selection.train_text_scorer import train_text_scorer

    rows = f["digits"]
    captioned = rows.add_column("text", [f"a handwritten {label}" for label in rows["label"]])
    return train_text_scorer(
        captioned,
        out,
        text_encoder=f["hub"].t5,
        resolution=8,
        num_steps=1,
        batch_size=4,
        model_kwargs={"num_layers": 1},
    )


def _train_encoder(f, out):
    from d2c_hf.attach.train_encoder import train_vision_encoder

    return train_vision_encoder(f["digits"], out, num_tokens=4, resolution=8, num_steps=1, batch_size=4)


def _extractor(f, out):
    from d2c_hf.evaluation.digits import DigitsFeatureExtractor

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (20, 8, 8, 3), dtype=np.uint8)
    return DigitsFeatureExtractor(hidden_size=4, max_iter=5).fit(images, np.arange(20) % 2).save(out)


def _npz_batches(f, out):
    from d2c_hf.evaluation.adm import save_npz_batches

    return save_npz_batches(out, iter([f["images"][:2], f["images"][2:]]), 4, (8, 8))


#: name -> (write(fixtures, target), target name, an older version written first or None)
WRITERS = {
    "CondensedDataset.save_to_disk": (lambda f, out: f["set"].save_to_disk(out), "set", None),
    "save_to_disk over an older version": (
        lambda f, out: f["set"].save_to_disk(out, overwrite=True),
        "set",
        lambda f, out: f["set"].save_to_disk(out, card=False),
    ),
    "CondensedDataset.save_hub_folder": (lambda f, out: f["set"].save_hub_folder(out), "hub", None),
    "SiTPipeline.save_pretrained": (lambda f, out: f["pipeline"].save_pretrained(out), "pipe", None),
    "SiTPipeline.save_pretrained into a folder with other files": (
        lambda f, out: f["pipeline"].save_pretrained(out),
        "pipe",
        lambda f, out: (out.mkdir(), (out / "notes.txt").write_text("mine")),
    ),
    "d2c convert (model)": (
        lambda f, out: __import__("d2c_hf.interop.convert", fromlist=["x"]).save_converted(f["pipeline"].transformer, out),
        "model",
        None,
    ),
    "train_scorer": (_train_scorer, "scorer", None),
    "train_text_scorer": (_train_text_scorer, "text_scorer", None),
    "train_vision_encoder": (_train_encoder, "encoder", None),
    "save_npz": (lambda f, out: __import__("d2c_hf.evaluation.adm", fromlist=["x"]).save_npz(out, f["images"]), "s.npz", None),
    "save_npz_batches": (_npz_batches, "b.npz", None),
    "FID reference statistics": (
        lambda f, out: __import__("d2c_hf.evaluation.fid", fromlist=["x"]).save_statistics(out, {"mu": np.zeros(3), "sigma": np.eye(3)}),
        "ref.npz",
        None,
    ),
    "DigitsFeatureExtractor.save": (_extractor, "extractor.safetensors", None),
    "write_json (run records, manifests)": (
        lambda f, out: __import__("d2c_hf.utils.files", fromlist=["x"]).write_json(out, {"a": list(range(100))}),
        "record.json",
        None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(WRITERS), ids=list(WRITERS))
def test_a_full_disk_leaves_nothing_half_written(name, writer_inputs, tmp_path):
    """ENOSPC at the first byte, midway and near the end: an OSError naming the target, the folder as it was
    before (no half-written target, no hidden staging left), and a rerun on a freed disk succeeds."""
    from faults import count_written, full_disk, listing

    write, target_name, older = WRITERS[name]
    with count_written() as measured:
        write(writer_inputs, tmp_path / "measure" / target_name)
    for fraction in (0.0, 0.5, 0.97):
        folder = tmp_path / f"at-{fraction}"
        folder.mkdir()
        target = folder / target_name
        if older is not None:
            older(writer_inputs, target)
        before = listing(folder)
        with pytest.raises(OSError) as info, full_disk(measured.written * fraction):
            write(writer_inputs, target)
        assert info.value.errno == 28, info.value
        assert str(target.name) in str(info.value) and "No space left on device" in str(info.value), (
            info.value
        )
        assert listing(folder) == before, f"ENOSPC at {fraction:.0%} left {listing(folder)}"
        write(writer_inputs, target)  # the disk has room again: the same call succeeds
    assert listing(tmp_path / "at-0.5") == listing(tmp_path / "at-0.0")


def _condense_argv(f, out, *extra):
    return ["condense", "--dataset", "digits", "--max_samples", "24", "--scorer", str(f["hub"].dit),
            "--resolution", "32", "--batch_size", "8", "--shard_size", "8", "--num_workers", "0",
            "--images_per_class", "1", "--attach", "latents", "--no_card", "--output_dir", str(out), *extra]  # fmt: skip


@pytest.mark.parametrize("fraction", [0.1, 0.6, 0.95])
def test_d2c_condense_on_a_full_disk_names_the_path_and_resumes(fraction, cli_fixtures, tmp_path, capsys):
    """Every writer of the work folder (score shards, merged scores, selection, attach shards, condensed/)
    under ENOSPC: one line naming the file or folder, nothing half-written; the rerun finishes the job."""
    from faults import count_written, full_disk

    with count_written() as measured:
        assert cli_main(_condense_argv(cli_fixtures, tmp_path / "reference")) == 0
    capsys.readouterr()
    out = tmp_path / "run"
    with full_disk(measured.written * fraction):
        code = cli_main(_condense_argv(cli_fixtures, out))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("d2c condense: error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err  # (INFO logs precede it)
    assert re.search(rf"could not write .*{re.escape(str(out))}.*: No space left on device", errors[0]), err
    assert not [p for p in out.rglob(".*") if p.name != ".d2c.lock"], "hidden leftovers"
    assert not (out / "condensed").exists() or (out / "condensed" / "d2c_info.json").is_file()
    assert cli_main(_condense_argv(cli_fixtures, out)) == 0  # resumes from what was finished
    got, expected = (
        CondensedDataset.load(out / "condensed"),
        CondensedDataset.load(tmp_path / "reference" / "condensed"),
    )
    assert got.samples["source_index"] == expected.samples["source_index"]
    np.testing.assert_array_equal(np.asarray(got.samples["latents"]), np.asarray(expected.samples["latents"]))


# ------------------------------------------------------------------ in-place damage, every trusted file kind


def _column_offset(path: Path, column: str) -> int:
    """Where ``column``'s bytes lie in an Arrow stream or Parquet file (to damage exactly that column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        metadata = pq.ParquetFile(str(path)).metadata.row_group(0)
        chunk = next(
            metadata.column(i)
            for i in range(metadata.num_columns)
            if metadata.column(i).path_in_schema.split(".")[0] == column
        )
        start = chunk.data_page_offset
        if chunk.has_dictionary_page and chunk.dictionary_page_offset:
            start = min(start, chunk.dictionary_page_offset)
        return start + chunk.total_compressed_size // 2
    whole = pa.memory_map(str(path)).read_buffer()
    batch = next(iter(pa.ipc.open_stream(pa.BufferReader(whole))))
    buffer = [b for b in batch.column(batch.schema.names.index(column)).buffers() if b is not None][-1]
    return buffer.address - whole.address + buffer.size // 2


@pytest.mark.parametrize("layout", ["disk", "hub"])
@pytest.mark.parametrize("column", ["latents", "visual_embeds", "label", "difficulty"])
def test_a_condensed_table_damaged_in_place_is_refused_naming_file_table_and_column(layout, column, tmp_path):
    from faults import flip_bytes

    condensed = synthetic_condensed(num_classes=3, per_class=2, total_per_class=10)
    path = (condensed.save_to_disk if layout == "disk" else condensed.save_hub_folder)(
        tmp_path / "d", card=False
    )
    data = next(
        (path / ("samples" if layout == "disk" else "data")).glob(
            "*.arrow" if layout == "disk" else "*.parquet"
        )
    )
    size = data.stat().st_size
    offset = _column_offset(data, column)
    flip_bytes(data, where=offset / size, count=2)
    assert data.stat().st_size == size
    relative = data.relative_to(path).as_posix()
    with pytest.raises(
        ValueError,
        match=rf"the 'samples' table's data file {relative} is damaged in column\(s\) \['{column}'\]",
    ):
        CondensedDataset.load(path)
    with pytest.raises(
        ValueError, match=r"is damaged in column"
    ):  # the command line says the same, in one line
        CondensedDataset.load(str(path))


def test_verify_false_skips_the_checksums_and_old_folders_load_unverified(tmp_path):
    from d2c_hf.condensed.info import INFO_FILENAME, TABLES_KEY
    from faults import flip_bytes

    condensed = synthetic_condensed(num_classes=3, per_class=2, total_per_class=10)
    path = condensed.save_to_disk(tmp_path / "d", card=False)
    data = next((path / "samples").glob("*.arrow"))
    flip_bytes(data, where=_column_offset(data, "visual_embeds") / data.stat().st_size, count=2)
    loaded = CondensedDataset.load(path, verify=False)  # opted out: an array column is not fingerprinted
    assert len(loaded) == len(condensed)
    info = json.loads((path / INFO_FILENAME).read_text())
    for entry in info[TABLES_KEY].values():
        del entry["files"]  # a folder written before content checksums existed
    (path / INFO_FILENAME).write_text(json.dumps(info))
    assert len(CondensedDataset.load(path)) == len(condensed)


def test_saves_stay_deterministic_with_checksums(tmp_path):
    condensed = synthetic_condensed(num_classes=3, per_class=2, total_per_class=10)
    for layout in ("save_to_disk", "save_hub_folder"):
        a = getattr(condensed, layout)(tmp_path / f"{layout}-a")
        b = getattr(condensed, layout)(tmp_path / f"{layout}-b")
        assert (a / "d2c_info.json").read_bytes() == (b / "d2c_info.json").read_bytes()


@pytest.fixture(scope="module")
def work_folder(cli_fixtures, tmp_path_factory):
    out = tmp_path_factory.mktemp("work") / "run"
    assert cli_main(_condense_argv(cli_fixtures, out)) == 0
    return out


def _edit_json(path: Path, change) -> None:
    """Change a value of a JSON record in place, keeping its stored checksum (as a bad edit or bit rot would)."""
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def _select_argv(out):
    return ["select", "--output_dir", str(out), "--images_per_class", "1"]


def _attach_argv(out):
    return ["attach", "--dataset", "digits", "--max_samples", "24", "--resolution", "32", "--batch_size", "8",
            "--shard_size", "8", "--num_workers", "0", "--attach", "latents", "--no_card", "--output_dir", str(out)]  # fmt: skip


WORK_DAMAGE = {
    # file -> (spoil, the command that reads it next, expected message)
    "merged scores": (
        lambda out: __import__("faults").flip_bytes(next((out / "scores").glob("*.arrow"))),
        _select_argv,
        r"the merged scores .*scores is damaged: .*data-00000-of-00001.arrow is damaged.*run `d2c score` again",
    ),
    "reliability record": (
        lambda out: _edit_json(out / "scores" / "reliability.json", lambda r: r.update(extra=1)),
        _select_argv,
        r"reliability.json has \d+ bytes",
    ),
    "selection": (
        lambda out: _edit_json(out / "selection.json", lambda r: r["source_indices"].__setitem__(0, r["source_indices"][0] + 1)),
        _attach_argv,
        r"selection.json is damaged: its content differs from its checksum.*run `d2c select` again",
    ),
    "run config": (
        lambda out: _edit_json(out / "d2c_run.json", lambda r: r["phases"]["score"].update(shard_size=16)),
        _select_argv,
        r"d2c_run.json is damaged: its content differs from its checksum",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(WORK_DAMAGE), ids=list(WORK_DAMAGE))
def test_a_work_folder_file_damaged_in_place_is_refused(name, work_folder, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(work_folder, out)
    spoil, argv, pattern = WORK_DAMAGE[name]
    spoil(out)
    code = cli_main(argv(out))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and re.search(pattern, err), err


def test_a_damaged_shard_is_computed_again(work_folder, cli_fixtures, tmp_path, capsys):
    """Shard files carry the CRC-32 of each array (np.savez's zip); one damaged in place is recomputed."""
    import shutil

    from faults import flip_bytes

    out = tmp_path / "run"
    shutil.copytree(work_folder, out)
    flip_bytes(out / "score" / "shard-00001-of-00003.npz", where=0.5)
    shutil.rmtree(out / "scores")
    assert cli_main(_condense_argv(cli_fixtures, out)) == 0
    manifest = json.loads((out / "score" / "manifest.json").read_text())
    assert (manifest["computed_shards"], manifest["skipped_shards"]) == (1, 2)


@pytest.fixture(scope="module")
def saved_models(writer_inputs, tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_models")
    writer_inputs["pipeline"].save_pretrained(root / "pipe")
    WRITERS["d2c convert (model)"][0](writer_inputs, root / "model")
    _train_scorer(writer_inputs, root / "scorer")
    _train_text_scorer(writer_inputs, root / "text_scorer")
    _train_encoder(writer_inputs, root / "encoder")
    return root


MODEL_DAMAGE = {
    "SiTPipeline folder": ("pipe", "transformer/diffusion_pytorch_model.safetensors", lambda root: __import__("d2c_hf.pipelines", fromlist=["x"]).SiTPipeline.from_pretrained(root / "pipe")),
    "SiTPipeline's VAE": ("pipe", "vae/diffusion_pytorch_model.safetensors", lambda root: __import__("d2c_hf.pipelines", fromlist=["x"]).SiTPipeline.from_pretrained(root / "pipe")),
    "converted SiT model": ("model", "diffusion_pytorch_model.safetensors", lambda root: __import__("d2c_hf.models", fromlist=["x"]).SiTTransformer2DModel.from_pretrained(root / "model")),
    "trained scorer": ("scorer", "transformer/diffusion_pytorch_model.safetensors", lambda root: DifficultyScorer.from_pretrained(root / "scorer", resolution=8)),
    "trained text scorer": ("text_scorer", "transformer/diffusion_pytorch_model.safetensors", lambda root: __import__("d2c_hf", fromlist=["x"]).TextDifficultyScorer.from_pretrained(root / "text_scorer", caption_column="text", resolution=8)),
    "trained vision encoder": ("encoder", "model.safetensors", lambda root: __import__("d2c_hf", fromlist=["x"]).VisualAttacher.from_pretrained(root / "encoder", num_tokens=4, resolution=8)),
}  # fmt: skip


@pytest.mark.parametrize("name", list(MODEL_DAMAGE), ids=list(MODEL_DAMAGE))
def test_saved_model_weights_damaged_in_place_are_refused(name, saved_models, tmp_path):
    import shutil

    from faults import flip_bytes

    folder, file, load = MODEL_DAMAGE[name]
    root = tmp_path / "copy"
    shutil.copytree(saved_models, root)
    load(root)  # intact: loads
    flip_bytes(root / folder / file, where=0.7)
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(root / folder))} is damaged: .*{re.escape(file)} is damaged"
    ):
        load(root)


def test_sample_and_reference_npz_damaged_in_place_are_refused_by_fid_readers(writer_inputs, tmp_path):
    from d2c_hf.evaluation.adm import iter_npz_images, load_reference_npz, save_npz
    from d2c_hf.evaluation.fid import save_statistics
    from faults import flip_bytes

    samples = save_npz(tmp_path / "samples.npz", np.repeat(writer_inputs["images"], 50, axis=0))
    reference = save_statistics(tmp_path / "ref.npz", {"mu": np.zeros(64), "sigma": np.eye(64)})
    flip_bytes(samples, where=0.5)
    flip_bytes(reference, where=0.5)
    with pytest.raises(ValueError, match=rf"{re.escape(str(samples))} is damaged: Bad CRC-32"):
        list(iter_npz_images(samples, 64))
    with pytest.raises(ValueError, match=rf"{re.escape(str(reference))} is damaged: Bad CRC-32"):
        load_reference_npz(reference)


# ------------------------------------------------------------------ each model argument, each wrong kind


@pytest.fixture(scope="module")
def model_kinds(local_hub, saved_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    (root / "empty").mkdir()
    (root / "weights.safetensors").write_bytes(b"not a folder")
    return {
        "a file": root / "weights.safetensors",
        "an empty folder": root / "empty",
        "a DiT pipeline": local_hub.dit,
        "a DiT transformer": local_hub.dit / "transformer",
        "a VAE": local_hub.vae,
        "a T5 encoder": local_hub.t5,
        "a DINOv2 encoder": local_hub.dinov2,
        "a SiT pipeline": saved_models / "pipe",
    }


#: argument -> the kinds it accepts
ROLE_FITS = {
    "scorer": {"a DiT pipeline", "a DiT transformer", "a SiT pipeline"},
    "vae": {"a VAE", "a DiT pipeline", "a SiT pipeline"},
    "text_encoder": {"a T5 encoder"},
    "vision_encoder": {"a DINOv2 encoder"},
}
KINDS = ["a file", "an empty folder", "a DiT pipeline", "a DiT transformer", "a VAE", "a T5 encoder", "a DINOv2 encoder", "a SiT pipeline"]  # fmt: skip
ROLE_CASES = [(role, kind) for role in ROLE_FITS for kind in KINDS if kind not in ROLE_FITS[role]]
#: what the message says the folder holds
HOLDS = {
    "a file": "is a file",
    "an empty folder": "holds no model",
    "a DiT pipeline": "holds a DiTPipeline pipeline",
    "a DiT transformer": r"holds a DiTTransformer2DModel \(diffusers\)",
    "a VAE": r"holds an AutoencoderKL \(diffusers\)",
    "a T5 encoder": r"holds a T5EncoderModel \(transformers, model_type 't5'\)",
    "a DINOv2 encoder": r"holds a Dinov2Model \(transformers, model_type 'dinov2'\)",
    "a SiT pipeline": "holds a SiTPipeline pipeline",
}


def _condense_with(role, value, ds):
    models = {"scorer": None, "vae": None, "text_encoder": None, "vision_encoder": None}
    attach = {"vae": ("latents",), "text_encoder": ("text",), "vision_encoder": ("visual",)}.get(role, ())
    data = ds.remove_columns("difficulty") if role == "scorer" else ds
    return condense(data, images_per_class=2, attach=attach, resolution=32, **{**models, role: value})


@pytest.mark.parametrize(("role", "kind"), ROLE_CASES, ids=[f"{r} given {k}" for r, k in ROLE_CASES])
def test_a_model_argument_given_the_wrong_kind_of_model_is_refused_before_any_load(
    role, kind, ds, model_kinds, cli_fixtures, capsys
):
    value = model_kinds[kind]
    pattern = rf"{role}: {re.escape(str(value))} {HOLDS[kind]}.*; expected"
    with pytest.raises(ValueError, match=pattern) as info, contextlib_all(_no_loading()):
        _condense_with(role, value, ds)
    assert _raised_in_d2c_hf(info.value) and len(str(info.value).splitlines()) == 1
    # the command line: the same sentence, one line, before the data is scored
    argv = _condense_argv(cli_fixtures, cli_fixtures["root"] / f"roles-{role}", f"--{role}", str(value))
    if role in ("text_encoder", "vision_encoder"):
        argv += ["--attach", "text" if role == "text_encoder" else "visual"]
    with contextlib_all(_no_loading()):
        assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err) and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("role", ["scorer", "vae", "text_encoder", "vision_encoder"])
def test_the_right_kind_passes_the_role_check(role, model_kinds):
    from d2c_hf.utils.roles import check_model_role

    for kind in ROLE_FITS[role]:
        check_model_role(model_kinds[kind], role, tokenizer=True)


def test_a_loader_called_directly_checks_the_role_too(model_kinds):
    from d2c_hf import TextAttacher, VisualAttacher
    from d2c_hf.utils.vae import load_vae

    with pytest.raises(ValueError, match=r"vae: .*t5 holds a T5EncoderModel"):
        load_vae(model_kinds["a T5 encoder"])
    with pytest.raises(ValueError, match=r"vision_encoder: .*t5 holds a T5EncoderModel"):
        VisualAttacher.from_pretrained(model_kinds["a T5 encoder"])
    with pytest.raises(ValueError, match=r"text_encoder: .*dinov2 holds a Dinov2Model"):
        TextAttacher.from_pretrained(model_kinds["a DINOv2 encoder"])
    with pytest.raises(ValueError, match=r"scorer: .*t5 holds a T5EncoderModel"):
        DifficultyScorer.from_pretrained(model_kinds["a T5 encoder"])


def test_a_t5_folder_without_its_tokenizer_is_named(local_hub, tmp_path, ds):
    import shutil

    folder = tmp_path / "t5-no-tokenizer"
    shutil.copytree(local_hub.t5, folder)
    for name in ("tokenizer.json", "spiece.model", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(ValueError, match=r"text_encoder: .* holds a T5EncoderModel .* but no tokenizer"):
        _condense_with("text_encoder", folder, ds)


# ------------------------------------------------------------------ an output that is, contains or lies in an input


OUTPUT_INPUT_CASES = {
    "d2c score into the dataset folder": lambda f: [*_score(f, f["data"])[:1], "--dataset", str(f["data"]), *_score(f, f["data"])[3:]],
    "d2c condense inside the dataset folder": lambda f: ["condense", "--dataset", str(f["data"]), "--output_dir", str(f["data"] / "run"), "--ratio", "0.5"],
    "d2c attach into a folder holding the dataset": lambda f: ["attach", "--dataset", str(f["data"]), "--output_dir", str(f["data"].parent)],
    "d2c score into the scorer's folder": lambda f: [*_score(f, f["hub"].dit / "run")],
    "d2c fid writing over its samples": lambda f: ["fid", str(f["npz"]), str(f["npz"]), "--output", str(f["npz"])],
    "d2c fid statistics over the reference": lambda f: ["fid", str(f["npz"]), str(f["ref"]), "--save_reference_stats", str(f["ref"])],
    "d2c convert into the checkpoint's folder": lambda f: ["convert-repa", str(f["ckpt"]), str(f["ckpt"].parent)],
    "d2c demo into the train script's folder": lambda f: ["demo", "--output-dir", str(f["script"].parent), "--train-script", str(f["script"]), "--overwrite"],
    "d2c clip-score writing over its samples": lambda f: ["clip-score", str(f["npz"]), "--prompt_file", str(f["ref"]), "--clip_model", str(f["hub"].dit), "--output", str(f["npz"])],
    "d2c benchmark caching inside the dataset folder": lambda f: ["benchmark", "--dataset", str(f["data"]), "--work_dir", str(f["data"] / "work"), "--output_dir", str(f["inputs"].parent / "report")],
    "d2c benchmark reporting into the dataset folder": lambda f: ["benchmark", "--dataset", str(f["data"]), "--work_dir", str(f["inputs"].parent / "work"), "--output_dir", str(f["data"])],
}  # fmt: skip


@pytest.fixture(scope="module")
def io_fixtures(cli_fixtures, digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("io") / "inputs"
    data = root / "data"
    digits["train"].select(range(20)).save_to_disk(str(data))
    (root / "ckpt").mkdir()
    (root / "ckpt" / "model.pt").write_bytes(b"x")
    (root / "scripts").mkdir()
    (root / "scripts" / "train.py").write_text("# a modified train_sit.py\n")
    (root / "a.npz").write_bytes(b"x")
    (root / "ref.npz").write_bytes(b"x")
    return {**cli_fixtures, "data": data, "ckpt": root / "ckpt" / "model.pt", "script": root / "scripts" / "train.py",
            "npz": root / "a.npz", "ref": root / "ref.npz", "inputs": root}  # fmt: skip


@pytest.mark.parametrize("name", list(OUTPUT_INPUT_CASES), ids=list(OUTPUT_INPUT_CASES))
def test_an_output_that_is_contains_or_lies_in_an_input_is_refused(name, io_fixtures, capsys):
    from faults import listing

    before = listing(io_fixtures["inputs"]), listing(io_fixtures["hub"].dit)
    with contextlib_all(_no_loading()):
        code = cli_main(OUTPUT_INPUT_CASES[name](io_fixtures))
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(
        r"(is|contains|lies inside) \S+ .*choose an output folder apart from|name the same file", err
    ), err
    assert (listing(io_fixtures["inputs"]), listing(io_fixtures["hub"].dit)) == before


# ------------------------------------------------------------------ two runs on one folder


def test_a_second_run_on_a_busy_work_folder_is_refused_naming_the_other(cli_fixtures, tmp_path, capsys):
    from d2c_hf.run.workdir import work_lock

    out = tmp_path / "run"
    with work_lock(out, None, "d2c condense --output_dir elsewhere"):
        with contextlib_all(_no_loading()):
            code = cli_main(_condense_argv(cli_fixtures, out))
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(
        rf"{re.escape(str(out))} is in use by process {os.getpid()} on .*d2c condense --output_dir elsewhere",
        err,
    ), err
    assert not out.exists()  # the refused run wrote nothing, and the holder wrote nothing either


def test_a_killed_run_neither_blocks_the_rerun_nor_leaves_its_staging(cli_fixtures, tmp_path):
    """A hard kill releases the lock with its process; the rerun removes the hidden staging it left."""
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom d2c_hf.run.workdir import work_lock\n"
         f"with work_lock({str(out)!r}, None, 'killed'):\n    print('held', flush=True)\n    time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        (out / ".condensed.tmp-0a1b2c3d" / "samples").mkdir(parents=True)
        (out / ".scores-merge.arrow").write_bytes(b"partial")
        (out / ".selection.json.tmp-1-dead").write_text("{")
        holder.kill()
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert cli_main(_condense_argv(cli_fixtures, out)) == 0
    assert sorted(p.name for p in out.glob(".*")) == [".d2c.lock"]


# ------------------------------------------------------------------ unclear items of issue 22


def test_sparse_class_name_ids_are_reported_at_once(ds):
    with pytest.raises(ValueError, match=r"missing for 7 class id\(s\) \[1, 2, 3, 4, 6, 7, 8\] of 0..9"):
        condense(ds, images_per_class=2, class_names={0: "zero", 5: "five", 9: "nine"}, **NO_MODELS)


def test_info_names_a_source_without_a_split(tmp_path):
    condensed = synthetic_condensed(num_classes=3, per_class=2, total_per_class=10)
    condensed = CondensedDataset(
        condensed.samples,
        info={**condensed.info, "source": {"name": "/data/one", "split": None, "num_rows": 30}},
    )
    text = condensed.summary()
    assert "split ?" not in text and "source: /data/one (one Dataset, no split name), 30 rows" in text
