"""Every default is declared once (d2c_hf.run.options): condense(), the d2c flags, the option classes, the
scorer and the attachers agree, and the options survive their JSON record."""

from __future__ import annotations

import inspect
import json

import pytest

from d2c_hf import DifficultyScorer, LatentEncoder, TextAttacher, VisualAttacher, condense
from d2c_hf.cli import attach_parser, condense_parser, score_parser, select_parser
from d2c_hf.run.options import (
    AttachOptions,
    CaptionOptions,
    CondenseOptions,
    DataOptions,
    RunOptions,
    ScoreOptions,
    SelectOptions,
    defaults,
)

#: condense() argument -> (options class, field)
CONDENSE_ARGS = {
    "ratio": (SelectOptions, "ratio"),
    "images_per_class": (SelectOptions, "images_per_class"),
    "scorer": (ScoreOptions, "scorer"),
    "vae": (ScoreOptions, "vae"),
    "text_encoder": (AttachOptions, "text_encoder"),
    "vision_encoder": (AttachOptions, "vision_encoder"),
    "strategy": (SelectOptions, "strategy"),
    "interval": (SelectOptions, "interval"),
    "attach": (AttachOptions, "parts"),
    "resolution": (CondenseOptions, "resolution"),
    "patch_size": (AttachOptions, "patch_size"),
    "num_visual_tokens": (AttachOptions, "num_visual_tokens"),
    "image_column": (DataOptions, "image_column"),
    "label_column": (DataOptions, "label_column"),
    "class_names": (DataOptions, "class_names"),
    "caption_choice": (CaptionOptions, "choice"),
    "group_by": (CaptionOptions, "group_by"),
    "num_groups": (CaptionOptions, "num_groups"),
    "prompt_template": (AttachOptions, "prompt_template"),
    "seed": (ScoreOptions, "seed"),
    "num_timesteps": (ScoreOptions, "num_timesteps"),
    "timestep_grid": (ScoreOptions, "timestep_grid"),
    "num_draws": (ScoreOptions, "num_draws"),
    "antithetic": (ScoreOptions, "antithetic"),
    "standardize_timesteps": (ScoreOptions, "standardize_timesteps"),
    "reliability_probe": (ScoreOptions, "reliability_probe"),
    "warn_reliability": (ScoreOptions, "warn_reliability"),
    "min_reliability": (ScoreOptions, "min_reliability"),
    "batch_size": (CondenseOptions, "batch_size"),
    "device": (CondenseOptions, "device"),
    "dtype": (ScoreOptions, "dtype"),
}
#: condense() arguments that are not options of a run (what to condense, where, how to pass options) or
#: containers whose default None is an empty one
NOT_OPTIONS = {
    "dataset",
    "caption_column",  # None: a class-labelled run (no CaptionOptions), else CaptionOptions.column
    "selection_kwargs",
    "part_options",
    "notes",
    "num_rows",
    "work_dir",
    "options",
    "scorer_kwargs",
}

#: d2c flag (argparse dest) -> (options class, field); the CLI's only conversions are named in cli.py
CLI_FLAGS = {
    "image_column": (DataOptions, "image_column"),
    "label_column": (DataOptions, "label_column"),
    "key_column": (DataOptions, "key_column"),
    "skip_corrupt": (DataOptions, "skip_corrupt"),
    "resolution": (CondenseOptions, "resolution"),
    "batch_size": (CondenseOptions, "batch_size"),
    "shard_size": (RunOptions, "shard_size"),
    "num_workers": (RunOptions, "num_workers"),
    "seed": (ScoreOptions, "seed"),
    "scorer": (ScoreOptions, "scorer"),
    "vae": (ScoreOptions, "vae"),
    "num_timesteps": (ScoreOptions, "num_timesteps"),
    "timestep_grid": (ScoreOptions, "timestep_grid"),
    "num_draws": (ScoreOptions, "num_draws"),
    "antithetic": (ScoreOptions, "antithetic"),
    "standardize_timesteps": (ScoreOptions, "standardize_timesteps"),
    "reliability_probe": (ScoreOptions, "reliability_probe"),
    "warn_reliability": (ScoreOptions, "warn_reliability"),
    "min_reliability": (ScoreOptions, "min_reliability"),
    "dtype": (ScoreOptions, "dtype"),
    "max_forward_batch": (ScoreOptions, "max_forward_batch"),
    "compile": (ScoreOptions, "compile"),
    "strategy": (SelectOptions, "strategy"),
    "interval": (SelectOptions, "interval"),
    "feature_column": (SelectOptions, "feature_column"),
    "text_encoder": (AttachOptions, "text_encoder"),
    "vision_encoder": (AttachOptions, "vision_encoder"),
    "patch_size": (AttachOptions, "patch_size"),
    "num_visual_tokens": (AttachOptions, "num_visual_tokens"),
    "prompt_template": (AttachOptions, "prompt_template"),
    "attach_dtype": (AttachOptions, "dtype"),
    "reuse_latents": (AttachOptions, "reuse_latents"),
    "caption_choice": (CaptionOptions, "choice"),
    "group_by": (CaptionOptions, "group_by"),
    "num_groups": (CaptionOptions, "num_groups"),
}
#: flags that are not options of a run (the input, the process, the output)
CLI_ONLY = {
    "dataset", "split", "streaming", "max_samples", "num_rows", "num_classes", "output_dir", "cpu",
    "store_posterior", "no_card", "note", "ratio", "images_per_class", "strategy_option", "attach",
    "part_option", "caption_column",
}  # fmt: skip

#: scorer / attacher argument -> (options class, field). ``resolution`` is left out on purpose: a scorer
#: built alone reads its model's own size (``None``), a condense run crops at the paper's 256.
MODEL_ARGS = {
    "num_timesteps": (ScoreOptions, "num_timesteps"),
    "timestep_grid": (ScoreOptions, "timestep_grid"),
    "num_draws": (ScoreOptions, "num_draws"),
    "antithetic": (ScoreOptions, "antithetic"),
    "standardize_timesteps": (ScoreOptions, "standardize_timesteps"),
    "reliability_probe": (ScoreOptions, "reliability_probe"),
    "warn_reliability": (ScoreOptions, "warn_reliability"),
    "seed": (ScoreOptions, "seed"),
    "batch_size": (CondenseOptions, "batch_size"),
    "dtype": (ScoreOptions, "dtype"),
    "prediction_type": (ScoreOptions, "prediction_type"),
    "max_forward_batch": (ScoreOptions, "max_forward_batch"),
    "return_per_timestep": (ScoreOptions, "return_per_timestep"),
    "image_column": (DataOptions, "image_column"),
    "label_column": (DataOptions, "label_column"),
    "key_column": (DataOptions, "key_column"),
    "device": (CondenseOptions, "device"),
    "prompt_template": (AttachOptions, "prompt_template"),
}


def _default(cls, name):
    return defaults(cls)[name]


def test_condense_takes_every_default_from_the_options():
    params = inspect.signature(condense).parameters
    assert set(params) == set(CONDENSE_ARGS) | NOT_OPTIONS  # a new argument must be mapped here
    for name, (cls, field) in CONDENSE_ARGS.items():
        assert params[name].default == _default(cls, field), name


def test_the_d2c_flags_take_every_default_from_the_options():
    required = ["--dataset", "d", "--output_dir", "o"]
    parsed = {}
    for parser, argv in (
        (score_parser(), required),
        (select_parser(), ["--output_dir", "o", "--ratio", "0.1"]),
        (attach_parser(), required),
        (condense_parser(), [*required, "--ratio", "0.1"]),
    ):
        parsed.update(vars(parser.parse_args(argv)))
    assert set(parsed) == set(CLI_FLAGS) | CLI_ONLY  # a new flag must be mapped here
    for flag, (cls, field) in CLI_FLAGS.items():
        assert parsed[flag] == _default(cls, field), flag
    assert tuple(parsed["attach"]) == AttachOptions.parts


@pytest.mark.parametrize(
    "function",
    [
        DifficultyScorer.__init__,
        DifficultyScorer.from_pretrained,
        LatentEncoder.__init__,
        VisualAttacher.from_pretrained,
        TextAttacher.from_pretrained,
    ],
)
def test_the_scorer_and_the_attachers_share_the_defaults(function):
    params = inspect.signature(function).parameters
    shared = [name for name in params if name in MODEL_ARGS]
    assert shared
    for name in shared:
        cls, field = MODEL_ARGS[name]
        assert params[name].default == _default(cls, field), f"{function.__qualname__}: {name}"
    if function is LatentEncoder.__init__:  # VisualAttacher's None crops at the encoder's own input size
        assert params["resolution"].default == CondenseOptions.resolution


def test_the_options_survive_their_json_record():
    options = CondenseOptions(
        data=DataOptions(class_names=["zero", "one"], key_column="id", skip_corrupt=True),
        score=ScoreOptions(
            scorer="some/dit", vae="pixel", timestep_grid=(0.1, 0.5), num_draws=2, dtype="bf16"
        ),
        select=SelectOptions(ratio=0.1, strategy="window", strategy_options={"position": 0.3}),
        attach=AttachOptions(parts=("latents", "text"), num_visual_tokens=4),
        resolution=64,
        notes=("a note",),
    )
    record = json.loads(json.dumps(options.to_record()))
    assert CondenseOptions.from_record(record) == options
    assert record["select"]["strategy_options"] == {"position": 0.3}
    assert SelectOptions.from_record(
        {"ratio": 0.1, "strategy": "interval", "interval": "auto", "seed": 0}
    ) == (
        SelectOptions(ratio=0.1)
    )  # a selection.json written before strategy_options were recorded still loads
    with pytest.raises(ValueError, match=r"unknown SelectOptions record keys: \['stratgy'\]"):
        SelectOptions.from_record({"ratio": 0.1, "stratgy": "min"})
    with pytest.raises(TypeError, match=r"option ScoreOptions.scorer is a Linear"):
        import torch

        ScoreOptions(scorer=torch.nn.Linear(1, 1)).to_record()


def test_condense_takes_an_options_object(digits):
    from datasets import Value

    data = digits["train"].select(range(40))
    data = data.add_column("difficulty", [float(i % 7) for i in range(40)], feature=Value("float32"))
    options = CondenseOptions(
        score=ScoreOptions(scorer=None, vae=None),
        select=SelectOptions(images_per_class=2, strategy="min"),
        attach=AttachOptions(parts=()),
        resolution=32,
    )
    by_object = condense(data, options=options)
    by_arguments = condense(
        data, images_per_class=2, strategy="min", scorer=None, vae=None, attach=(), resolution=32
    )
    assert by_object.samples["source_index"] == by_arguments.samples["source_index"]
    with pytest.raises(
        TypeError, match=r"pass either options= or the option arguments, not both: \['seed'\]"
    ):
        condense(data, options=options, seed=1)
