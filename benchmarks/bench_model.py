"""Benchmark ``SiTTransformer2DModel``: training-step and sampling throughput, SDPA vs math attention, and
the memory saved by gradient checkpointing.

Measured side by side in one run, for each model (default SiT-S/2 and SiT-B/2 on 256 px latents, 32x32x4):

* **train**: seconds per training step = forward + MSE-loss backward (no optimizer step), train mode,
  with diffusers' attention dispatcher on ``"native"`` (``F.scaled_dot_product_attention``) and on
  ``"_native_math"`` (the explicit softmax(QK^T)V math kernel);
* **sample**: images per second of ``SiTPipeline`` (Euler, ``--steps`` model calls, no guidance, no VAE);
* **memory** with and without gradient checkpointing (``"native"`` backend):
  - *saved*: bytes of activations autograd keeps for backward after the forward, counted exactly with
    ``torch.autograd.graph.saved_tensors_hooks`` (unique storages, parameters excluded). With checkpointing
    this excludes the one block recomputed at a time during backward;
  - *peak RSS*: the increase of the process's peak resident set size (Linux ``VmHWM``, else
    ``getrusage().ru_maxrss``) over one training step, measured in a fresh subprocess per setting
    (allocator-level: includes the recomputation and the gradients);
  - the step-time cost of checkpointing.

Default run: < 3 minutes on 2 CPU cores. Scale up with ``--batch-size``, ``--iters``, ``--models SiT-L/2``...

    python benchmarks/bench_model.py
    python benchmarks/bench_model.py --models SiT-S/2 --batch-size 8 --iters 5 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

from d2c_hf.models.transformer_sit import SIT_PRESETS, SiTTransformer2DModel

BACKENDS = ("native", "_native_math")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["SiT-S/2", "SiT-B/2"], choices=list(SIT_PRESETS))
    parser.add_argument(
        "--sample-size", type=int, default=32, help="latent size (32 = 256 px with an 8x VAE)"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--iters", type=int, default=3, help="timed training steps per setting")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=4, help="sampler steps (model calls) per image")
    parser.add_argument("--sample-repeats", type=int, default=2, help="timed pipeline calls per setting")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--_rss-child", nargs=2, metavar=("MODEL", "CHECKPOINTING"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build(name: str, sample_size: int) -> SiTTransformer2DModel:
    return SiTTransformer2DModel.from_preset(name, sample_size=sample_size)


def inputs(model: SiTTransformer2DModel, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    x = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
    return x, torch.rand(batch, generator=g), torch.randint(0, cfg.num_classes, (batch,), generator=g)


def train_step(model: SiTTransformer2DModel, batch) -> None:
    x, t, y = batch
    loss = model(x, t, y).sample.square().mean()
    loss.backward()
    model.zero_grad(set_to_none=True)


def time_train(model: SiTTransformer2DModel, batch, iters: int, warmup: int) -> float:
    """Seconds per forward + backward step."""
    model.train()
    for _ in range(warmup):
        train_step(model, batch)
    start = time.perf_counter()
    for _ in range(iters):
        train_step(model, batch)
    return (time.perf_counter() - start) / iters


def time_sampling(model: SiTTransformer2DModel, batch: int, steps: int, repeats: int) -> float:
    """Images per second of the full sampling loop (SiTPipeline, Euler, no guidance, pixel space output)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from d2c_hf.pipelines import SiTPipeline

    pipe = SiTPipeline(transformer=model.eval(), scheduler=FlowMatchEulerDiscreteScheduler())
    pipe.set_progress_bar_config(disable=True)
    labels = list(range(batch))
    pipe(labels, num_inference_steps=1, output_type="latent")  # warm-up
    start = time.perf_counter()
    for seed in range(repeats):
        pipe(
            labels,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(seed),
            output_type="latent",
        )
    return batch * repeats / (time.perf_counter() - start)


def saved_activation_bytes(model: SiTTransformer2DModel, batch) -> int:
    """Bytes of the tensors autograd saves for backward during one forward (unique storages, no parameters)."""
    model.train()
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    x, t, y = batch
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(x, t, y).sample.square().mean()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(nbytes for ptr, nbytes in storages.items() if ptr not in params)


def peak_rss() -> int:
    """This process's peak resident set size in bytes.

    Linux: ``VmHWM`` from ``/proc/self/status`` (per address space, so it starts afresh in an exec'd child;
    ``getrusage().ru_maxrss`` is inherited from the parent across fork + exec). Elsewhere: ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def rss_child(name: str, checkpointing: bool, args: argparse.Namespace) -> None:
    """Subprocess body: print the peak-RSS increase (bytes) over one training step."""
    torch.set_num_threads(args.threads)
    model = build(name, args.sample_size).train()
    if checkpointing:
        model.enable_gradient_checkpointing()
    batch = inputs(model, args.batch_size)
    before = peak_rss()
    train_step(model, batch)
    print(json.dumps({"peak_rss_increase": peak_rss() - before}))


def peak_rss_increase(name: str, checkpointing: bool, args: argparse.Namespace) -> int:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--_rss-child",
        name,
        str(int(checkpointing)),
        "--sample-size",
        str(args.sample_size),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return int(json.loads(out.strip().splitlines()[-1])["peak_rss_increase"])


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:8.1f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._rss_child:
        rss_child(args._rss_child[0], bool(int(args._rss_child[1])), args)
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # benchmark script: deterministic weights
    print(
        f"torch {torch.__version__} | {platform.processor() or platform.machine()} | threads {args.threads} | "
        f"batch {args.batch_size} | latents {args.sample_size}x{args.sample_size}x4 | "
        f"train iters {args.iters} (+{args.warmup} warm-up) | sampling {args.steps} steps x {args.sample_repeats}"
    )
    results = {"config": {k: v for k, v in vars(args).items() if not k.startswith("_")}, "models": {}}
    for name in args.models:
        model = build(name, args.sample_size)
        batch = inputs(model, args.batch_size)
        params = sum(p.numel() for p in model.parameters())
        row: dict[str, float] = {"params": params}
        for backend in BACKENDS:
            model.set_attention_backend(backend)
            row[f"train_s_{backend}"] = time_train(model, batch, args.iters, args.warmup)
            row[f"sample_ips_{backend}"] = time_sampling(
                model, args.batch_size, args.steps, args.sample_repeats
            )
        model.set_attention_backend("native")
        row["saved_bytes_plain"] = saved_activation_bytes(model, batch)
        model.enable_gradient_checkpointing()
        row["saved_bytes_ckpt"] = saved_activation_bytes(model, batch)
        row["train_s_ckpt"] = time_train(model, batch, args.iters, args.warmup)
        model.disable_gradient_checkpointing()
        if not args.no_rss:
            row["peak_rss_plain"] = peak_rss_increase(name, False, args)
            row["peak_rss_ckpt"] = peak_rss_increase(name, True, args)
        results["models"][name] = row

        b = args.batch_size
        nat, mat = row["train_s_native"], row["train_s__native_math"]
        print(f"\n{name}  ({params / 1e6:.1f}M parameters)")
        print(
            f"  train step (fwd+bwd)   native {nat:7.3f} s  ({b / nat:6.2f} img/s)   "
            f"math {mat:7.3f} s  ({b / mat:6.2f} img/s)   native/math speed-up x{mat / nat:.2f}"
        )
        snat, smat = row["sample_ips_native"], row["sample_ips__native_math"]
        print(
            f"  sampling ({args.steps} steps)     native {snat:7.2f} img/s                 "
            f"math {smat:7.2f} img/s                 native/math speed-up x{snat / smat:.2f}"
        )
        plain, ckpt = row["saved_bytes_plain"], row["saved_bytes_ckpt"]
        print(
            f"  saved for backward     plain {mib(plain)} MiB   checkpointing {mib(ckpt)} MiB   "
            f"reduction x{plain / ckpt:.1f}"
        )
        if not args.no_rss:
            rp, rc = row["peak_rss_plain"], row["peak_rss_ckpt"]
            print(
                f"  peak RSS increase      plain {mib(rp)} MiB   checkpointing {mib(rc)} MiB   "
                f"reduction x{rp / max(rc, 1):.1f}"
            )
        print(
            f"  checkpointing step time {row['train_s_ckpt']:7.3f} s   (x{row['train_s_ckpt'] / nat:.2f} of plain)"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
