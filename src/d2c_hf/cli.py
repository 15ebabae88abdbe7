"""The ``d2c`` command line.

Each sub-command lives next to the code it drives and is imported only when used, so
``d2c --help`` stays fast. A command is a function ``main(argv: list[str] | None) -> int``.
"""

from __future__ import annotations

import importlib
import logging
import sys

# sub-command -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("d2c_hf.demo:main", "run D2C end to end on the bundled digits (the `make demo` job)"),
    "score": ("d2c_hf.distributed:score_main", "score a dataset's difficulty (sharded, resumable)"),
    "select": ("d2c_hf.distributed:select_main", "select a subset from scored shards"),
    "attach": ("d2c_hf.distributed:attach_main", "attach latents / visual tokens / class text (sharded)"),
    "condense": ("d2c_hf.distributed:condense_main", "score + select + attach in one resumable run"),
    "info": ("d2c_hf.condensed:info_main", "describe a condensed dataset folder"),
    "fid": ("d2c_hf.evaluation.fid:fid_main", "FID, sFID, IS, precision/recall of samples vs a reference"),
    "convert-repa": ("d2c_hf.convert:convert_repa_main", "convert a REPA SiT checkpoint to diffusers format"),
    "convert-sit": (
        "d2c_hf.convert:convert_sit_main",
        "convert an original SiT checkpoint to diffusers format",
    ),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: d2c <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `d2c <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"d2c-hf {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"d2c: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module_name, function_name = COMMANDS[name][0].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    return int(function(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
