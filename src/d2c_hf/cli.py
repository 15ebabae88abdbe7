"""The ``d2c`` command line: argparse builds the typed options, nothing more.

Every parser is defined here and the modules that do the work are imported only after parsing, so
``d2c <command> --help`` answers at once. A command is ``<name>_main(argv) -> int``; it raises on bad
input, and :func:`main` turns a user error (``ValueError``, ``TypeError``, ``OSError``) into one line on
stderr and exit status 2 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

#: the model arguments of the sharded commands (checked for their role, and kept apart from --output_dir)
MODEL_FLAGS = ("scorer", "vae", "text_encoder", "vision_encoder")
#: the errors a user can fix (bad input, a missing file, an unreachable model): one line, exit 2
USER_ERRORS = (ValueError, TypeError, OSError)

# sub-command -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("d2c_hf.cli:demo_main", "run D2C end to end on the bundled digits (the `make demo` job)"),
    "score": ("d2c_hf.cli:score_main", "score a dataset's difficulty (sharded, resumable)"),
    "select": ("d2c_hf.cli:select_main", "select a subset from scored shards"),
    "attach": ("d2c_hf.cli:attach_main", "attach latents / visual tokens / class text (sharded)"),
    "condense": ("d2c_hf.cli:condense_main", "score + select + attach in one resumable run"),
    "info": ("d2c_hf.cli:info_main", "describe a condensed dataset folder"),
    "benchmark": (
        "d2c_hf.cli:benchmark_main",
        "which selection, at which budget? train and compare on any labelled image dataset",
    ),
    "fid": ("d2c_hf.cli:fid_main", "FID, sFID, IS, precision/recall of samples vs a reference"),
    "clip-score": ("d2c_hf.cli:clip_score_main", "CLIP score of text-to-image samples vs their prompts"),
    "convert-repa": ("d2c_hf.cli:convert_repa_main", "convert a REPA SiT checkpoint to diffusers format"),
    "convert-sit": ("d2c_hf.cli:convert_sit_main", "convert an original SiT checkpoint to diffusers format"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: d2c [--debug] <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += [
        "",
        "Run `d2c <command> --help` for the options of one command. --debug shows the traceback of an error.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from .version import __version__

        print(f"d2c-hf {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"d2c: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module_name, function_name = COMMANDS[name][0].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    try:
        return int(function(rest) or 0)
    except KeyboardInterrupt:
        print(f"d2c {name}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"d2c {name}: error: {_one_line(err)} (--debug shows the traceback)", file=sys.stderr)
        return 2


def run_script(name: str, function: Any, debug: bool = False, errors: tuple[type, ...] = ()) -> Any:
    """Run an example script's ``main`` as :func:`main` runs a command: a user error (``ValueError``,
    ``TypeError``, ``OSError`` and ``errors``) is printed as one line on stderr, ``<name>: error: ...``, and
    the process exits with status 2; ``debug=True`` (the scripts' ``--debug``) shows the traceback instead.
    Ctrl-C exits 130. Returns ``function()``'s result."""
    try:
        return function()
    except KeyboardInterrupt:
        print(f"{name}: interrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    except (*USER_ERRORS, *errors) as err:
        if debug:
            raise
        print(f"{name}: error: {_one_line(err)} (--debug shows the traceback)", file=sys.stderr)
        sys.exit(2)


def _one_line(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and err.strerror:  # "[Errno 28] ..." -> the text, with the path if separate
        text = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return " ".join(text.split())


# --------------------------------------------------------------------------------------
# options shared by the sharded commands
# --------------------------------------------------------------------------------------


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    from .run.options import CaptionOptions, DataOptions
    from .selection.captions import CAPTION_CHOICES

    g = parser.add_argument_group("data")
    g.add_argument(
        "--dataset", required=True, help="'digits', a save_to_disk folder, or a load_dataset name/path"
    )
    g.add_argument(
        "--split",
        default=None,
        help="split of a DatasetDict or load_dataset dataset (default: train); a save_to_disk folder of one "
        "Dataset is one split",
    )
    g.add_argument("--streaming", action="store_true", help="read the source as an IterableDataset")
    g.add_argument("--image_column", default=DataOptions.image_column)
    g.add_argument("--label_column", default=DataOptions.label_column)
    g.add_argument(
        "--caption_column",
        default=None,
        help="a captioned dataset (text-to-image): the column of each image's caption(s); no labels needed",
    )
    g.add_argument(
        "--caption_choice",
        default=CaptionOptions.choice,
        choices=CAPTION_CHOICES,
        help="which caption of a list: the first, or one drawn per row (keyed like the noise)",
    )
    g.add_argument("--max_samples", type=int, default=None, help="only the first N rows")
    g.add_argument("--num_rows", type=int, default=None, help="size of a streaming split without metadata")
    g.add_argument(
        "--num_classes", type=int, default=None, help="classes of a streaming integer label column"
    )
    g.add_argument(
        "--skip_corrupt", action="store_true", help="skip undecodable images (default: fail, naming the row)"
    )


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    from .run.options import CondenseOptions, RunOptions, ScoreOptions

    g = parser.add_argument_group("run")
    g.add_argument("--output_dir", required=True)
    g.add_argument("--resolution", type=int, default=CondenseOptions.resolution)
    g.add_argument("--batch_size", type=int, default=CondenseOptions.batch_size)
    g.add_argument(
        "--shard_size",
        type=int,
        default=RunOptions.shard_size,
        help="rows per shard (a multiple of --batch_size)",
    )
    g.add_argument(
        "--num_workers", type=int, default=RunOptions.num_workers, help="DataLoader workers decoding images"
    )
    g.add_argument("--seed", type=int, default=ScoreOptions.seed)
    g.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is available")


def _add_vae_arg(group: Any) -> None:
    from .run.options import ScoreOptions

    group.add_argument(
        "--vae",
        default=ScoreOptions.vae,
        help="AutoencoderKL (Hub id or folder), 'pixel', or 'auto' (default): the scorer's own vae/, else pixel "
        "space for a 3-channel scorer, else stabilityai/sd-vae-ft-ema",
    )


def _add_score_args(parser: argparse.ArgumentParser) -> None:
    from .run.options import CaptionOptions, DataOptions, ScoreOptions
    from .selection.groups import GROUP_BY

    g = parser.add_argument_group("scoring")
    g.add_argument("--scorer", default=ScoreOptions.scorer)
    _add_vae_arg(g)
    g.add_argument(
        "--group_by",
        default=CaptionOptions.group_by,
        choices=GROUP_BY,
        help="captioned data: the groups that play the classes' part (k-means on the caption or image features, "
        "or the --label_column)",
    )
    g.add_argument(
        "--num_groups",
        type=int,
        default=CaptionOptions.num_groups,
        help="captioned data: k of the k-means groups (default round(sqrt(N / 2)) in [1, 100])",
    )
    g.add_argument(
        "--num_timesteps",
        type=int,
        default=ScoreOptions.num_timesteps,
        help="timesteps per draw (default 10, or the grid's length)",
    )
    g.add_argument(
        "--timestep_grid",
        default=ScoreOptions.timestep_grid,
        help="midpoints (the paper's evenly spaced bins), stratified (one random timestep per bin), or a "
        "comma-separated list of timesteps",
    )
    g.add_argument(
        "--num_draws",
        type=int,
        default=ScoreOptions.num_draws,
        help="independent noise draws per timestep (default 1)",
    )
    g.add_argument("--antithetic", action="store_true", help="also score every draw's -eps (2x the passes)")
    g.add_argument(
        "--standardize_timesteps",
        action="store_true",
        help="z-score each timestep's error over the data before averaging (beyond the paper)",
    )
    g.add_argument(
        "--reliability_probe",
        type=int,
        default=ScoreOptions.reliability_probe,
        help="with one draw: rows re-scored with fresh noise to measure the reliability (0 = none)",
    )
    g.add_argument(
        "--warn_reliability",
        type=float,
        default=ScoreOptions.warn_reliability,
        help=f"warn below this reliability (default {ScoreOptions.warn_reliability})",
    )
    g.add_argument(
        "--min_reliability",
        type=float,
        default=ScoreOptions.min_reliability,
        help="stop before selecting below this reliability",
    )
    g.add_argument(
        "--key_column",
        default=DataOptions.key_column,
        help="column whose value replaces the pixel hash as the noise key",
    )
    g.add_argument(
        "--dtype", default=None, help="scorer autocast dtype: fp32 | bf16 | fp16 (default: bf16 on CUDA)"
    )
    g.add_argument(
        "--max_forward_batch",
        type=int,
        default=ScoreOptions.max_forward_batch,
        help="most (image, timestep) pairs per forward",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the scorer")


def _add_feature_arg(group: Any) -> None:
    from .run.options import SelectOptions

    group.add_argument(
        "--feature_column",
        default=SelectOptions.feature_column,
        help="a column of per-row features for the feature strategies (herding, kcenter, moderate, kmeans, alignment; read while scoring)",
    )


def _add_select_args(parser: argparse.ArgumentParser) -> None:
    from .run.options import SelectOptions

    g = parser.add_argument_group("selection")
    budget = g.add_mutually_exclusive_group(required=True)
    budget.add_argument("--ratio", type=float, default=SelectOptions.ratio)
    budget.add_argument("--images_per_class", type=int, default=SelectOptions.images_per_class)
    g.add_argument("--strategy", default=SelectOptions.strategy, help="a key of d2c_hf.STRATEGIES")
    g.add_argument(
        "--interval",
        default=SelectOptions.interval,
        help="the stride k, 'auto' (the picks span two thirds of a class) or 'paper' (the paper's stride-to-budget "
        "proportion, k = 96 at 10 of 1,281 images per class)",
    )
    g.add_argument(
        "--strategy_option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an option of the strategy (repeatable; VALUE is JSON, else a string), e.g. position=0.5 for window",
    )
    _add_feature_arg(g)


def _add_attach_args(parser: argparse.ArgumentParser, with_vae: bool = False) -> None:
    from .run.options import AttachOptions

    g = parser.add_argument_group("attach")
    if with_vae:
        _add_vae_arg(g)
    g.add_argument(
        "--attach", nargs="*", default=list(AttachOptions.parts), help="parts: any of d2c_hf.ATTACH_PARTS"
    )
    g.add_argument("--text_encoder", default=AttachOptions.text_encoder)
    g.add_argument("--vision_encoder", default=AttachOptions.vision_encoder)
    g.add_argument("--patch_size", type=int, default=AttachOptions.patch_size)
    g.add_argument("--num_visual_tokens", type=int, default=AttachOptions.num_visual_tokens)
    g.add_argument("--prompt_template", default=AttachOptions.prompt_template)
    g.add_argument("--attach_dtype", default=None, help="Attach models' dtype (default float32)")
    g.add_argument(
        "--no_reuse_latents",
        dest="reuse_latents",
        action="store_false",
        help="encode the selected images again instead of reusing the scorer's VAE posterior",
    )
    g.add_argument(
        "--part_option",
        action="append",
        default=[],
        metavar="PART.NAME=VALUE",
        help="an option of a registered attach part (repeatable; VALUE is JSON, else a string)",
    )
    g.add_argument("--no_card", action="store_true", help="skip the dataset card (README + figures)")
    g.add_argument("--note", action="append", help="a line recorded in the condensed info (repeatable)")


def _parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description)


def _interval(value: Any) -> int | str:
    if value in (None, "auto"):
        return "auto"
    if value == "paper":
        return "paper"
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--interval must be a positive integer, 'auto' or 'paper', got {value!r}") from None


def _timestep_grid(value: str) -> str | tuple[float, ...]:
    """``--timestep_grid``: a grid name, or comma-separated timesteps (integers stay integers)."""
    if value in ("midpoints", "stratified"):
        return value
    try:
        return tuple(int(v) if v.strip().lstrip("-").isdigit() else float(v) for v in value.split(","))
    except ValueError:
        raise ValueError(
            f"--timestep_grid must be midpoints, stratified or comma-separated timesteps (e.g. 50,150,250), got {value!r}"
        ) from None


def _reliability_line(record: dict | None) -> str:
    """The line ``d2c score`` / ``d2c condense`` print about the scores' reliability."""
    from .selection.reliability import Reliability

    if not record:
        return "reliability: not recorded"
    return Reliability.from_dict(record).summary()


def _given(
    args: argparse.Namespace, names: dict[str, str], convert: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``{field: value}`` of the flags this command has (``names``: field -> flag); a field without its
    flag keeps the options class's default, so no default is written here."""
    convert = convert or {}
    return {
        field: convert.get(field, lambda v: v)(getattr(args, flag))
        for field, flag in names.items()
        if hasattr(args, flag)
    }


def _same_names(*names: str) -> dict[str, str]:
    return {name: name for name in names}


def _options(args: argparse.Namespace):
    """The typed options of a sharded run, from whichever flags the command has."""
    from .run.options import (
        DEFAULT_ATTACH,
        DEFAULT_CAPTION_ATTACH,
        AttachOptions,
        CaptionOptions,
        CondenseOptions,
        DataOptions,
        ScoreOptions,
        SelectOptions,
    )

    dtype = lambda v: None if v in (None, "auto") else v  # noqa: E731
    captions = None
    if getattr(args, "caption_column", None) is not None:
        captions = CaptionOptions(
            column=args.caption_column,
            **_given(args, {"choice": "caption_choice", "group_by": "group_by", "num_groups": "num_groups"}),
        )
        if getattr(args, "attach", None) == list(DEFAULT_ATTACH):  # the default parts of a captioned run
            args.attach = list(DEFAULT_CAPTION_ATTACH)
    score = ScoreOptions(
        **_given(
            args,
            {
                **_same_names(
                    "scorer",
                    "vae",
                    "num_timesteps",
                    "timestep_grid",
                    "num_draws",
                    "antithetic",
                    "seed",
                    "dtype",
                ),
                **_same_names(
                    "standardize_timesteps", "reliability_probe", "warn_reliability", "min_reliability"
                ),
                **_same_names("max_forward_batch", "compile"),
            },
            {"timestep_grid": _timestep_grid, "dtype": dtype},
        )
    )
    select = None  # score and attach take no budget (attach reads what d2c select recorded)
    if getattr(args, "images_per_class", None) is not None or getattr(args, "ratio", None) is not None:
        select = SelectOptions(
            **_given(
                args,
                {
                    **_same_names(
                        "images_per_class", "ratio", "strategy", "interval", "seed", "feature_column"
                    ),
                    "strategy_options": "strategy_option",
                },
                {"interval": _interval, "strategy_options": _strategy_options},
            )
        )
    attach = AttachOptions(
        **_given(
            args,
            {
                "parts": "attach",
                **_same_names("vision_encoder", "text_encoder", "patch_size", "num_visual_tokens"),
                **_same_names("prompt_template", "reuse_latents"),
                "dtype": "attach_dtype",
                "part_options": "part_option",
            },
            {"parts": lambda v: tuple(v or ()), "dtype": dtype, "part_options": _part_options},
        )
    )
    return CondenseOptions(
        data=DataOptions(
            **_given(args, _same_names("image_column", "label_column", "key_column", "skip_corrupt"))
        ),
        score=score,
        select=select,
        attach=attach,
        **_given(
            args,
            {**_same_names("resolution", "batch_size"), "notes": "note"},
            {"notes": lambda v: tuple(v or ())},
        ),
        captions=captions,
    )


def _key_values(values: list[str], flag: str, form: str) -> dict[str, Any]:
    """``--flag KEY=VALUE`` (repeatable): VALUE is read as JSON, else kept as a string."""
    out: dict[str, Any] = {}
    for item in values or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{flag} must be {form}, got {item!r}")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def _strategy_options(values: list[str]) -> dict[str, Any]:
    return _key_values(values, "--strategy_option", "NAME=VALUE")


def _part_options(values: list[str]) -> dict[str, dict[str, Any]]:
    """``--part_option PART.NAME=VALUE`` -> ``{part: {name: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in _key_values(values, "--part_option", "PART.NAME=VALUE").items():
        part, dot, name = key.partition(".")
        if not dot or not part or not name:
            raise ValueError(f"--part_option must be PART.NAME=VALUE, got {key!r}")
        out.setdefault(part, {})[name] = value
    return out


def _runner(args: argparse.Namespace, *, store_posterior: bool = False, with_source: bool = True):
    """Options, work folder, process state and source of a sharded command, checked in that order (the
    cheap checks and the output folder before the dataset is opened, the dataset before any model)."""
    from .run.options import RunOptions
    from .run.sharded import ShardedRunner
    from .utils.files import check_apart

    options = _options(args)
    inputs = {f"--{name}": getattr(args, name, None) for name in MODEL_FLAGS}
    check_apart(args.output_dir, {"--dataset": getattr(args, "dataset", None), **inputs}, "--output_dir")
    run = RunOptions(
        output_dir=Path(args.output_dir),
        shard_size=getattr(args, "shard_size", RunOptions.shard_size),
        num_workers=getattr(args, "num_workers", 0),
        store_posterior=store_posterior,
        card=not getattr(args, "no_card", False),
    )
    source = _source(args) if with_source else None
    return ShardedRunner(options, run, _state(args), source)


def _locked(runner: Any, command: str):
    """The work folder's lock for the whole command (one run per folder; see run.workdir.work_lock)."""
    from .run.workdir import work_lock

    return work_lock(runner.output_dir, runner.state, f"{command} --output_dir {runner.output_dir}")


def _source(args: argparse.Namespace):
    from .run.rows import open_source

    return open_source(
        args.dataset,
        split=args.split,
        streaming=args.streaming,
        image_column=args.image_column,
        label_column=args.label_column,
        key_column=getattr(args, "key_column", None),
        max_samples=args.max_samples,
        num_rows=args.num_rows,
        num_classes=args.num_classes,
        feature_column=getattr(args, "feature_column", None),
        caption_column=args.caption_column,
        # a captioned run reads labels only to group by them
        with_labels=args.caption_column is None or getattr(args, "group_by", None) == "label",
    )


def _state(args: argparse.Namespace):
    from accelerate import PartialState

    return PartialState(cpu=bool(getattr(args, "cpu", False)))


# --------------------------------------------------------------------------------------
# d2c score | select | attach | condense
# --------------------------------------------------------------------------------------


def score_parser() -> argparse.ArgumentParser:
    parser = _parser(
        "d2c score",
        "Score every row's difficulty, sharded over the processes, resumable; merged into scores/.",
    )
    _add_data_args(parser)
    _add_run_args(parser)
    _add_score_args(parser)
    parser.add_argument(
        "--store_posterior", action="store_true", help="keep each image's VAE posterior for Attach"
    )
    _add_feature_arg(parser)
    return parser


def score_main(argv: list[str] | None = None) -> int:
    """``d2c score``: difficulty of every row, sharded over the processes, resumable; merged into ``scores/``."""
    args = score_parser().parse_args(argv)
    from .run.sharded import run_score

    runner = _runner(args, store_posterior=args.store_posterior)
    with _locked(runner, "d2c score"):
        manifest = run_score(runner)
    if runner.state.is_main_process:
        hidden = ("per_rank", "corrupt_rows", "reliability")
        print(json.dumps({k: v for k, v in manifest.items() if k not in hidden}))
        print(_reliability_line(manifest.get("reliability")))
    return 0


def select_parser() -> argparse.ArgumentParser:
    from .run.options import SelectOptions

    parser = _parser(
        "d2c select", "Select a subset from the merged scores of --output_dir; writes selection.json."
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seed", type=int, default=SelectOptions.seed)
    _add_select_args(parser)
    return parser


def select_main(argv: list[str] | None = None) -> int:
    """``d2c select``: select from the merged scores of ``--output_dir``; writes ``selection.json``."""
    args = select_parser().parse_args(argv)
    from .run.options import RunOptions
    from .run.sharded import ShardedRunner

    runner = ShardedRunner(_options(args), RunOptions(output_dir=Path(args.output_dir)), state=None)
    with _locked(runner, "d2c select"):
        record = runner.select()
    print(json.dumps({"selected": len(record["source_indices"]), "counts": record["result"]["counts"]}))
    return 0


def attach_parser() -> argparse.ArgumentParser:
    parser = _parser(
        "d2c attach",
        "Attach latents / visual tokens (sharded) and class text to the selected rows; writes condensed/.",
    )
    _add_data_args(parser)
    _add_run_args(parser)
    _add_attach_args(parser, with_vae=True)
    return parser


def attach_main(argv: list[str] | None = None) -> int:
    """``d2c attach``: latents / visual tokens of the selected rows (sharded), then the condensed dataset."""
    args = attach_parser().parse_args(argv)
    from .run.sharded import CONDENSED_DIR, run_attach

    runner = _runner(args)
    with _locked(runner, "d2c attach"):
        condensed = run_attach(runner)
    if condensed is not None:
        print(json.dumps({"condensed": str(runner.output_dir / CONDENSED_DIR), "rows": len(condensed)}))
    return 0


def condense_parser() -> argparse.ArgumentParser:
    parser = _parser(
        "d2c condense", "Score + select + attach in one resumable run; writes output_dir/condensed."
    )
    _add_data_args(parser)
    _add_run_args(parser)
    _add_score_args(parser)
    _add_select_args(parser)
    _add_attach_args(parser)
    return parser


def condense_main(argv: list[str] | None = None) -> int:
    """``d2c condense``: score + select + attach in one resumable run; writes ``output_dir/condensed``."""
    args = condense_parser().parse_args(argv)
    from .run.sharded import CONDENSED_DIR, run_condense
    from .utils.spaces import is_pixel_space

    store = bool(args.reuse_latents and "latents" in (args.attach or []) and not is_pixel_space(args.vae))
    runner = _runner(args, store_posterior=store)
    with _locked(runner, "d2c condense"):
        condensed = run_condense(runner)
    if condensed is not None:
        print(json.dumps({"condensed": str(runner.output_dir / CONDENSED_DIR), "rows": len(condensed)}))
        print(_reliability_line((condensed.info.get("scoring") or {}).get("reliability")))
    return 0


# --------------------------------------------------------------------------------------
# d2c info | demo
# --------------------------------------------------------------------------------------


def info_parser() -> argparse.ArgumentParser:
    parser = _parser(
        "d2c info",
        "Describe a condensed dataset: a folder from save_to_disk/save_hub_folder, or a Hub repo id.",
    )
    parser.add_argument("path", help="folder or Hub dataset id (user/name)")
    parser.add_argument(
        "--json", action="store_true", help="print the full provenance record (d2c_info.json)"
    )
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.add_argument(
        "--no_verify",
        action="store_true",
        help="skip the content checksums of a local folder's data files (one read of every byte; for huge sets)",
    )
    return parser


def info_main(argv: list[str] | None = None) -> int:
    """``d2c info PATH``: describe a condensed dataset (folder or Hub repo id)."""
    args = info_parser().parse_args(argv)
    from .condensed.dataset import CondensedDataset

    condensed = CondensedDataset.load(args.path, revision=args.revision, verify=not args.no_verify)
    print(json.dumps(condensed.info, indent=2, ensure_ascii=False) if args.json else condensed.summary())
    return 0


def demo_parser() -> argparse.ArgumentParser:
    parser = _parser(
        "d2c demo",
        "Run D2C end to end on the bundled digits: scorer -> condense (Select + Attach) -> train a SiT on the "
        "condensed set and on a random subset of the same size -> sample grids -> metrics.",
    )
    parser.add_argument("--output-dir", default="demo_output", help="folder to create (default: demo_output)")
    parser.add_argument("--quick", action="store_true", help="tiny settings for smoke tests (< 1 minute)")
    parser.add_argument(
        "--text",
        action="store_true",
        help="the text-to-image route instead: condense the captioned digits by caption-conditioned difficulty, "
        "train a text-conditioned SiT on it and on random subsets, and check that samples follow their prompts",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the scorer, selection, training and sampling"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output-dir")
    parser.add_argument(
        "--train-script",
        default=None,
        help="a modified copy of examples/train_sit.py to train with (default: the packaged d2c_hf.examples.train_sit)",
    )
    return parser


def demo_main(argv: list[str] | None = None) -> int:
    """``d2c demo [--output-dir DIR] [--quick] [--text] [--seed N] [--overwrite] [--train-script PATH]``."""
    args = demo_parser().parse_args(argv)
    if args.seed < 0:
        raise ValueError("--seed must be a non-negative integer")
    from . import demo

    output = Path(args.output_dir).expanduser().resolve()
    from .utils.files import check_apart

    check_apart(output, {"--train-script": args.train_script}, "--output-dir")
    demo.check_output_dir(output, args.overwrite)
    demo.train_script_command(args.train_script)  # fail before any work if a given script is missing
    if args.text:
        from . import demo_text

        settings = demo_text.TEXT_QUICK if args.quick else demo_text.TEXT_FULL
        result = demo_text.run_text_demo(
            output, settings, seed=args.seed, train_script=args.train_script, quick=args.quick
        )
    else:
        settings = demo.QUICK if args.quick else demo.FULL
        result = demo.run_demo(
            output, settings, seed=args.seed, train_script=args.train_script, quick=args.quick
        )
    print()
    print(result["table"])
    print(f"\nDemo finished in {result['timings']['total']:.0f} s. Open {output / 'README.md'}")
    return 0


# --------------------------------------------------------------------------------------
# d2c benchmark
# --------------------------------------------------------------------------------------


def benchmark_parser() -> argparse.ArgumentParser:
    parser = _parser(
        "d2c benchmark",
        "Which selection strategy, at which budget? Train the same small SiT on subsets chosen by each strategy "
        "(Select only), with paired seeds, score each against a held-out reference and report the paired "
        "difference to a random subset per budget (docs/benchmark-tool.md). Cached and resumable.",
    )
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", required=True, help="a save_to_disk folder, an imagefolder, or 'digits'")
    g.add_argument("--image_column", default="image")
    g.add_argument("--label_column", default="label")
    g.add_argument("--split", default=None, help="the training split of a DatasetDict (default: train)")
    g.add_argument(
        "--reference_split",
        default=None,
        help="the held-out split (default: test, else validation, if present)",
    )
    g.add_argument(
        "--holdout", type=float, default=0.2, help="without a held-out split: fraction of each class held out"
    )
    g = parser.add_argument_group("grid (may change in the same work dir)")
    g.add_argument(
        "--strategies",
        nargs="+",
        default=None,
        metavar="ARM",
        help="STRATEGY[:OPTIONS] each, e.g. random interval interval:paper stratified herding "
        "alignment:std_weight=0.5 (random is always needed; default: random interval)",
    )
    g.add_argument("--images_per_class", type=int, nargs="+", default=None, help="per-class budgets")
    g.add_argument("--ratios", type=float, nargs="+", default=None, help="budgets as fractions of the data")
    g.add_argument("--seeds", type=int, nargs="+", default=None, help="paired seeds (default: 0 1 2)")
    g.add_argument("--no_full_split", action="store_true", help="skip the full split (and the regime check)")
    g = parser.add_argument_group("training and evaluation (fixed for a work dir)")
    g.add_argument("--resolution", type=int, default=None, help="pixels (default 16)")
    g.add_argument(
        "--patch_size", type=int, default=None, choices=(2, 4, 8), help="SiT patch size (default 4)"
    )
    g.add_argument("--depth", type=int, default=None, help="SiT blocks (default 4)")
    g.add_argument("--width", type=int, default=None, help="SiT hidden size (default 64)")
    g.add_argument("--heads", type=int, default=None, help="attention heads (default 4)")
    g.add_argument("--steps", type=int, default=None, help="training steps per run (default 6000)")
    g.add_argument("--batch_size", type=int, default=None, help="training batch (default 64)")
    g.add_argument("--learning_rate", type=float, default=None, help="default 1e-3")
    g.add_argument("--checkpoints", type=int, default=None, help="log-spaced evaluations per run (default 8)")
    g.add_argument(
        "--samples_per_class", type=int, default=None, help="generated images per class (default 100)"
    )
    g.add_argument("--num_inference_steps", type=int, default=None, help="sampler steps (default 20)")
    g.add_argument(
        "--guidance_scale", type=float, default=None, help="CFG of the guided evaluation (default 1.5)"
    )
    g.add_argument(
        "--scorer_steps", type=int, default=None, help="difficulty scorer's training steps (default 400)"
    )
    g.add_argument("--num_timesteps", type=int, default=None, help="scoring timesteps (default 10)")
    g.add_argument("--num_draws", type=int, default=None, help="noise draws per timestep (default 8)")
    g.add_argument(
        "--encoder_steps",
        type=int,
        default=None,
        help="steps of the trained selection encoder (default 1500)",
    )
    g.add_argument(
        "--selection_encoder",
        default=None,
        help="an encoder folder for the feature strategies (default: train one)",
    )
    g.add_argument(
        "--evaluator",
        default=None,
        help="'pixels' (default: an MLP classifier on the pixels), 'encoder' (a trained encoder + logistic probe) "
        "or an encoder folder",
    )
    g.add_argument(
        "--probe_size",
        type=int,
        default=None,
        help="the pixel evaluator's input side (default min(resolution, 16))",
    )
    g = parser.add_argument_group("run")
    g.add_argument("--work_dir", required=True, help="cache of the prepared inputs and of every run")
    g.add_argument("--output_dir", required=True, help="where NAME.md, NAME.json and the figures go")
    g.add_argument("--name", default="benchmark", help="file stem of the report (default: benchmark)")
    g.add_argument("--jobs", type=int, default=1, help="runs trained side by side")
    g.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: the cores shared out)"
    )
    g.add_argument("--train_script", default=None, help="a modified copy of examples/train_sit.py")
    g.add_argument("--quick", action="store_true", help="tiny settings (seconds): a smoke test of the wiring")
    g.add_argument("--report_only", action="store_true", help="train nothing: report the runs already cached")
    return parser


def benchmark_settings(args: argparse.Namespace):
    """The :class:`~d2c_hf.benchmark.BenchmarkSettings` of parsed ``d2c benchmark`` arguments."""
    from dataclasses import replace

    from .benchmark import QUICK, Arm, BenchmarkSettings, Budget

    base = QUICK if args.quick else BenchmarkSettings()
    sit = base.sit
    overrides = dict(sit.model_config_overrides)
    for option, key in (("depth", "depth"), ("width", "hidden_size"), ("heads", "num_attention_heads")):
        if getattr(args, option) is not None:
            overrides[key] = getattr(args, option)
    sit = replace(
        sit,
        model=sit.model if args.patch_size is None else f"SiT-S/{args.patch_size}",
        model_config_overrides=overrides,
        **{
            k: v
            for k, v in (
                ("train_batch_size", args.batch_size),
                ("learning_rate", args.learning_rate),
                ("num_inference_steps", args.num_inference_steps),
            )
            if v is not None
        },
    )
    if args.steps is not None:
        sit = replace(sit, max_train_steps=args.steps, validation_steps=max(1, args.steps // 16))
    budgets = [Budget(images_per_class=m) for m in args.images_per_class or ()]
    budgets += [Budget(ratio=r) for r in args.ratios or ()]
    fields = {
        "sit": sit,
        "full_split": base.full_split and not args.no_full_split,
        "arms": tuple(Arm.parse(a) for a in args.strategies) if args.strategies else base.arms,
        "budgets": tuple(budgets) or base.budgets,
        "seeds": tuple(args.seeds) if args.seeds else base.seeds,
    }
    for option, name in (
        ("resolution", "resolution"),
        ("checkpoints", "num_checkpoints"),
        ("samples_per_class", "samples_per_class"),
        ("guidance_scale", "guidance_scale"),
        ("scorer_steps", "scorer_steps"),
        ("num_timesteps", "num_timesteps"),
        ("num_draws", "num_draws"),
        ("encoder_steps", "encoder_steps"),
        ("selection_encoder", "selection_encoder"),
        ("evaluator", "evaluator"),
        ("probe_size", "probe_size"),
    ):
        if getattr(args, option) is not None:
            fields[name] = getattr(args, option)
    return replace(base, **fields)


def benchmark_main(argv: list[str] | None = None) -> int:
    """``d2c benchmark --dataset D --work_dir W --output_dir O [grid] [settings]``."""
    import shlex

    args = benchmark_parser().parse_args(argv)
    for name in ("jobs", "threads", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    settings = benchmark_settings(args)
    from .benchmark import run_benchmark

    command = "d2c benchmark " + shlex.join(sys.argv[2:] if argv is None else argv)
    path = run_benchmark(
        args.dataset,
        settings,
        work_dir=args.work_dir,
        output_dir=args.output_dir,
        name=args.name,
        image_column=args.image_column,
        label_column=args.label_column,
        split=args.split,
        reference_split=args.reference_split,
        holdout=args.holdout,
        jobs=args.jobs,
        threads=1
        if args.quick and args.threads is None
        else args.threads,  # tiny models: threads only add overhead
        train_script=args.train_script,
        report_only=args.report_only,
        command=command,
    )
    print(path.read_text())
    return 0


# --------------------------------------------------------------------------------------
# d2c fid
# --------------------------------------------------------------------------------------

#: environment variable naming the FID Inception-v3 weights file (d2c_hf.evaluation.fid reads the same)
INCEPTION_WEIGHTS_ENV = "D2C_INCEPTION_WEIGHTS"


def fid_parser() -> argparse.ArgumentParser:
    import os

    parser = _parser(
        "d2c fid",
        "FID, sFID, Inception Score and precision/recall of generated images against a reference "
        "(the ADM evaluator's protocol, with the FID Inception-v3 from a local weights file).",
    )
    parser.add_argument("samples", help="generated images: an ADM .npz (arr_0) or a folder of image files")
    parser.add_argument(
        "reference",
        help="an ADM reference batch .npz (mu/sigma, mu_s/sigma_s, arr_0), a statistics .npz written by "
        "--save_reference_stats, or a folder of real images",
    )
    parser.add_argument(
        "--inception_weights",
        default=os.environ.get(INCEPTION_WEIGHTS_ENV),
        help=f"weights-inception-2015-12-05-6726825d.pth or pt_inception-2015-12-05-6726825d.pth (default: "
        f"${INCEPTION_WEIGHTS_ENV}); see docs/evaluation.md",
    )
    parser.add_argument(
        "--metrics", nargs="+", choices=("fid", "sfid", "is", "pr"), default=None,
        help="default: all that the reference allows",
    )  # fmt: skip
    parser.add_argument("--batch_size", type=int, default=100, help="images per Inception forward pass")
    parser.add_argument("--num_workers", type=int, default=4, help="processes decoding image folders")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: CUDA if available)")
    parser.add_argument("--resolution", type=int, default=None, help="ADM centre crop of a samples folder")
    parser.add_argument(
        "--reference_resolution", type=int, default=None, help="ADM centre crop of a reference folder"
    )
    parser.add_argument("--k", type=int, default=3, help="precision/recall neighbourhood size")
    parser.add_argument("--is_split_size", type=int, default=5000, help="Inception Score part size")
    parser.add_argument("--fd_method", choices=("eigh", "sqrtm"), default="eigh")
    parser.add_argument(
        "--save_reference_stats",
        default=None,
        help="write the reference statistics computed here to this .npz",
    )
    parser.add_argument("--output", default=None, help="also write the result JSON to this file")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser


def fid_main(argv: list[str] | None = None) -> int:
    """``d2c fid``: score a sample ``.npz`` / folder against a reference; prints the result as JSON."""
    args = fid_parser().parse_args(argv)
    from .evaluation.fid import evaluate_fid
    from .utils.files import check_apart, write_json

    inputs = {
        "samples": args.samples,
        "reference": args.reference,
        "--inception_weights": args.inception_weights,
    }
    for flag in ("output", "save_reference_stats"):
        if getattr(args, flag):
            check_apart(getattr(args, flag), inputs, f"--{flag}")
    if args.output and args.save_reference_stats:
        import os

        if os.path.realpath(args.output) == os.path.realpath(args.save_reference_stats):
            raise ValueError(
                "--output and --save_reference_stats name the same file; one would overwrite the other"
            )

    result = evaluate_fid(
        args.samples, args.reference, inception_weights=args.inception_weights,
        metrics=tuple(args.metrics) if args.metrics else None, batch_size=args.batch_size,
        num_workers=args.num_workers, device=args.device, resolution=args.resolution,
        reference_resolution=args.reference_resolution, k=args.k, is_split_size=args.is_split_size,
        fd_method=args.fd_method, save_reference_stats=args.save_reference_stats, progress=not args.no_progress,
    )  # fmt: skip
    if args.output:
        write_json(args.output, result)
    print(json.dumps(result, indent=2))
    return 0


# --------------------------------------------------------------------------------------
# d2c clip-score
# --------------------------------------------------------------------------------------


def clip_score_parser() -> argparse.ArgumentParser:
    parser = _parser(
        "d2c clip-score",
        "CLIP score (100 * max(cos, 0), mean over samples) of text-to-image samples against their prompts, with "
        "a given CLIP model.",
    )
    parser.add_argument(
        "samples", help="an ADM .npz written by examples/sample_sit.py --prompt_file (arr_1 = prompt indices)"
    )
    parser.add_argument("--prompt_file", required=True, help="the prompt file the samples were made from")
    parser.add_argument(
        "--clip_model",
        required=True,
        help="a transformers CLIPModel folder or Hub id with its processor (e.g. openai/clip-vit-large-patch14)",
    )
    parser.add_argument("--batch_size", type=int, default=64, help="pairs per CLIP forward pass")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: CUDA if available)")
    parser.add_argument("--output", default=None, help="also write the result JSON to this file")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def clip_score_main(argv: list[str] | None = None) -> int:
    """``d2c clip-score``: the CLIP score of a prompt-sampled ``.npz``; prints the result as JSON."""
    args = clip_score_parser().parse_args(argv)
    from .evaluation.clip_score import evaluate_clip_score
    from .utils.files import check_apart, write_json
    from .utils.roles import check_model_role

    if args.output:  # the result file must not replace what it is computed from
        inputs = {"samples": args.samples, "--prompt_file": args.prompt_file, "--clip_model": args.clip_model}
        check_apart(args.output, inputs, "--output")
    check_model_role(args.clip_model, "clip_model", "--clip_model")  # before the samples are read
    result = evaluate_clip_score(
        args.samples,
        args.prompt_file,
        args.clip_model,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
    )
    if args.output:
        write_json(args.output, result)
    print(json.dumps(result, indent=2))
    return 0


# --------------------------------------------------------------------------------------
# d2c convert-repa | convert-sit
# --------------------------------------------------------------------------------------


def _convert_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = _parser(prog, description)
    parser.add_argument("checkpoint", help="original checkpoint (.pt/.pth, or .safetensors)")
    parser.add_argument("output_dir", help="where to write the diffusers folder (save_pretrained)")
    parser.add_argument(
        "--preset", default=None, help="SiT-XL/2, SiT-L/2, ... (default: from the checkpoint)"
    )
    parser.add_argument(
        "--weights", choices=("ema", "model"), default="ema", help="which weights of a training checkpoint"
    )
    parser.add_argument("--sample-size", type=int, default=None, help="latent size (default: from pos_embed)")
    parser.add_argument(
        "--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="weights dtype to save"
    )
    parser.add_argument(
        "--pipeline",
        action="store_true",
        help="write a SiTPipeline folder (transformer/, scheduler/[, vae/]) instead of the model alone",
    )
    parser.add_argument(
        "--vae",
        default=None,
        help="with --pipeline: VAE Hub id or local folder (e.g. stabilityai/sd-vae-ft-ema)",
    )
    parser.add_argument(
        "--scheduler",
        choices=("sde", "euler"),
        default="sde",
        help="with --pipeline: FlowMatchEulerMaruyamaScheduler (REPA's SDE) or FlowMatchEulerDiscreteScheduler",
    )
    parser.add_argument("--id2label", default=None, help="with --pipeline: JSON file {class id: name}")
    return parser


def convert_repa_parser() -> argparse.ArgumentParser:
    parser = _convert_parser(
        "d2c convert-repa", "Convert a REPA (sihyun-yu/REPA) SiT checkpoint to d2c-hf's diffusers format."
    )
    parser.add_argument(
        "--encoder-depth", type=int, default=None, help="projector tap block (default: from args / preset)"
    )
    parser.add_argument(
        "--drop-projectors", action="store_true", help="drop the REPA projectors (inference only)"
    )
    return parser


def convert_sit_parser() -> argparse.ArgumentParser:
    parser = _convert_parser(
        "d2c convert-sit",
        "Convert an original SiT (willisma/SiT) checkpoint to d2c-hf's diffusers format, in REPA convention "
        "(t = sigma, v = eps - x; the time reversal and sign are folded into the weights).",
    )
    parser.add_argument(
        "--keep-sigma-half", action="store_true", help="keep the unused learned-sigma channels"
    )
    return parser


def _convert(args: argparse.Namespace, load: Any, **options: Any) -> int:
    from .interop.convert import save_converted
    from .utils.files import check_apart
    from .utils.hub import DTYPE_ALIASES
    from .utils.roles import check_model_role
    from .utils.spaces import is_pixel_space

    if not args.pipeline and (args.vae or args.id2label):
        raise ValueError("--vae and --id2label need --pipeline")
    inputs = {"checkpoint": args.checkpoint, "--vae": args.vae, "--id2label": args.id2label}
    check_apart(args.output_dir, inputs, "output_dir")
    if args.vae and not is_pixel_space(args.vae):
        check_model_role(args.vae, "vae", "--vae")  # before the checkpoint is read
    id2label = None
    if args.id2label:
        from .utils.files import read_json

        id2label = read_json(args.id2label, "the --id2label file")
    if args.sample_size is not None:
        options["sample_size"] = args.sample_size
    model = load(
        args.checkpoint, args.preset, weights=args.weights, dtype=DTYPE_ALIASES[args.dtype], **options
    )
    out = save_converted(
        model,
        args.output_dir,
        pipeline=args.pipeline,
        vae=args.vae,
        scheduler=args.scheduler,
        id2label=id2label,
    )
    print(f"wrote {'SiTPipeline' if args.pipeline else type(model).__name__} to {out}")
    return 0


def convert_repa_main(argv: list[str] | None = None) -> int:
    """``d2c convert-repa CHECKPOINT OUTPUT_DIR [...]``: a REPA checkpoint to a diffusers folder."""
    args = convert_repa_parser().parse_args(argv)
    from .interop.convert import load_repa_checkpoint

    options: dict[str, Any] = {"keep_projectors": not args.drop_projectors}
    if args.encoder_depth is not None:
        options["encoder_depth"] = args.encoder_depth
    return _convert(args, load_repa_checkpoint, **options)


def convert_sit_main(argv: list[str] | None = None) -> int:
    """``d2c convert-sit CHECKPOINT OUTPUT_DIR [...]``: an original SiT checkpoint to a REPA-convention folder."""
    args = convert_sit_parser().parse_args(argv)
    from .interop.convert import load_sit_checkpoint

    return _convert(args, load_sit_checkpoint, keep_sigma_half=args.keep_sigma_half)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
