"""The package surface: lazy exports resolve, importing is cheap, the CLI lists its commands."""

from __future__ import annotations

import subprocess
import sys

import d2c_hf
from d2c_hf.cli import COMMANDS, main


def test_every_public_name_resolves():
    for name in d2c_hf.__all__:
        assert getattr(d2c_hf, name) is not None, name
    assert set(d2c_hf.__all__) <= set(dir(d2c_hf))


def test_import_is_cheap():
    code = "import sys, d2c_hf; print(sorted(m for m in ('torch', 'matplotlib', 'diffusers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_usage_lists_every_command(capsys):
    assert main(["--help"]) == 0
    usage = capsys.readouterr().out
    for name in COMMANDS:
        assert name in usage
    assert main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_cli_commands_point_at_real_functions():
    import importlib

    for name, (target, _) in COMMANDS.items():
        module, function = target.split(":")
        try:
            imported = importlib.import_module(module)
        except ModuleNotFoundError as error:  # a command whose module is not written yet must not ship
            raise AssertionError(f"d2c {name}: module {module} is missing") from error
        assert callable(getattr(imported, function)), name


def test_import_structure_has_no_circles_and_no_private_names_across_modules():
    """The layering of docs/architecture.md, checked with the project's shared tool (CI has ../shared)."""
    from pathlib import Path

    import pytest

    root = Path(__file__).resolve().parents[1]
    tool = root.parent / "shared" / "tools" / "structure_check.py"
    if not tool.is_file():
        pytest.skip(f"{tool} is not beside the checkout")
    out = subprocess.run([sys.executable, str(tool), str(root)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
