"""Ways of loading a saved SiT folder, each in a fresh interpreter, for ``tests/test_remote_code.py``.

    python remote_routes.py OUT_DIR ROUTES_JSON

``ROUTES_JSON``: a list of ``{"name", "route", "source", "package_path", "import_d2c_hf", "hub_commit"[, "prompt"]}``
(``prompt``: a text-to-image pipeline, sampled from these prompts). Run
it with a Python that cannot import d2c_hf. torch and diffusers are imported once; each route then runs in a
forked child whose ``sys.modules`` holds neither d2c_hf nor any module diffusers loaded from a folder (checked),
as in a new interpreter, without paying the import of diffusers' pipelines (~8 s) again. A route writes
``OUT_DIR/<name>.json`` (``{"error", "classes", "warnings"}``) and its samples or model outputs to
``OUT_DIR/<name>.pt``.

``package_path``: the folder holding the d2c_hf package, put on ``sys.path`` (d2c_hf installed); ``null``: the
route checks that d2c_hf cannot be imported. ``source`` is a folder or a repo id (``HF_HUB_CACHE`` then holds a
fake Hub cache). ``import_d2c_hf``: import the package first, as its users do. ``hub_commit``: answer diffusers'
one Hub call (``model_info``) with this commit; the Hub is not reachable from tests.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import types
from pathlib import Path


def run(spec: dict, out_dir: Path) -> dict:
    import torch
    from diffusers import AutoModel, DiffusionPipeline, DiTPipeline

    leftovers = sorted(m for m in sys.modules if m.split(".")[0] in ("d2c_hf", "diffusers_modules"))
    assert not leftovers, f"not a clean interpreter: {leftovers}"
    if spec.get("package_path"):
        sys.path.insert(0, spec["package_path"])
    else:
        import importlib.util

        assert importlib.util.find_spec("d2c_hf") is None, "d2c_hf is importable where it must not be"
    torch.set_num_threads(int(os.environ.get("D2C_THREADS", "1")))
    if spec.get("import_d2c_hf"):
        import d2c_hf  # noqa: F401
    if spec.get("hub_commit"):
        import diffusers.utils.dynamic_modules_utils as dynamic_modules

        commit = spec["hub_commit"]
        dynamic_modules.model_info = lambda *args, **kwargs: types.SimpleNamespace(sha=commit)

    source = spec["source"]
    loaders = {
        "sit_pipeline": lambda: _sit_pipeline().from_pretrained(source),
        "diffusion_pipeline": lambda: DiffusionPipeline.from_pretrained(source, trust_remote_code=True),
        "diffusion_pipeline_untrusted": lambda: DiffusionPipeline.from_pretrained(source),
        "custom_pipeline": lambda: DiffusionPipeline.from_pretrained(
            source, custom_pipeline=os.path.join(source, "pipeline_sit.py"), trust_remote_code=True
        ),
        "dit_pipeline": lambda: DiTPipeline.from_pretrained(source),
        "dit_pipeline_trusted": lambda: DiTPipeline.from_pretrained(source, trust_remote_code=True),
        "auto_model_subfolder": lambda: AutoModel.from_pretrained(source, subfolder="transformer"),
        "auto_model_folder": lambda: AutoModel.from_pretrained(os.path.join(source, "transformer")),
        "auto_model_folder_trusted": lambda: AutoModel.from_pretrained(
            os.path.join(source, "transformer"), trust_remote_code=True
        ),
        "auto_model_trusted": lambda: AutoModel.from_pretrained(source, trust_remote_code=True),
    }
    try:
        loaded = loaders[spec["route"]]()
    except (ValueError, OSError) as error:
        return {"error": f"{type(error).__name__}: {error}", "classes": []}
    if isinstance(loaded, DiffusionPipeline) and spec.get("prompt"):  # a text-to-image pipeline
        loaded.set_progress_bar_config(disable=True)
        output = loaded(
            prompt=spec["prompt"],
            num_inference_steps=3,
            guidance_scale=1.8,
            guidance_interval=(0.0, 0.7),
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images
        classes = [
            _name(loaded),
            _name(loaded.transformer),
            _name(loaded.scheduler),
            _name(loaded.text_encoder),
        ]
    elif isinstance(loaded, DiffusionPipeline):
        loaded.set_progress_bar_config(disable=True)
        output = loaded(
            ["tench", 1],
            num_inference_steps=3,
            guidance_scale=1.8,
            guidance_interval=(0.0, 0.7),
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images
        classes = [_name(loaded), _name(loaded.transformer), _name(loaded.scheduler)]
    else:
        g = torch.Generator().manual_seed(1)
        x, t = torch.randn(2, 4, 8, 8, generator=g), torch.rand(2, generator=g)
        with torch.no_grad():
            output = loaded(x, t, torch.tensor([3, 10])).sample
        classes = [_name(loaded)]
    torch.save(output, out_dir / f"{spec['name']}.pt")
    return {"error": None, "classes": classes}


def _sit_pipeline():
    from d2c_hf import SiTPipeline

    return SiTPipeline


def _name(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__name__}"


def main(out_dir: Path, specs: list[dict]) -> None:
    import torch  # noqa: F401  (imported once, before any fork; no torch work runs in this process)
    from diffusers import AutoModel, DiffusionPipeline, DiTPipeline  # noqa: F401

    for spec in specs:
        pid = os.fork()
        if pid == 0:  # the child: one route, then exit without running the parent's cleanup
            code = 0
            try:
                warnings = io.StringIO()
                handler = logging.StreamHandler(warnings)
                handler.setLevel(logging.WARNING)
                logging.getLogger("diffusers").addHandler(handler)
                result = run(spec, out_dir)
                result["warnings"] = warnings.getvalue()
                (out_dir / f"{spec['name']}.json").write_text(json.dumps(result))
            except BaseException as error:  # report anything else as a failure of the route
                (out_dir / f"{spec['name']}.json").write_text(
                    json.dumps({"error": f"CRASH {type(error).__name__}: {error}", "classes": []})
                )
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(sys.argv[2]))
