"""Does the caption-conditioned difficulty see the caption? A check on the captioned digits.

For each seed, ``train_scorer(..., caption_column="text")`` trains the small PixArt-style scorer on the captioned
digits' training split (pixel space, 16 px, the demo's stand-in T5: a tiny random encoder, so the model learns
the captions' token codes, not their meaning). The test split is then scored three ways, with the same noise
(common random numbers: the same keys, only the caption changes):

* with each image's **own** caption;
* with the caption of **another digit** (the name changed, weight and slant kept: "a thick, upright handwritten
  four" for a seven);
* with **other attributes** (the name kept, every weight and slant word replaced: thin <-> thick, regular ->
  thin; left <-> right, upright -> left).

A score that uses the caption is lower with the true caption: the script reports the mean difficulty of each
and the fraction of images whose true-caption difficulty is the lowest of the three, and the split-half
reliability of the true-caption score (2 draws). A scorer that ignored its caption would give fractions near 1/3
and equal means. Then it condenses the training split with the scorer (``condense(..., caption_column="text")``,
5 images per group) and reports the wall time and the groups.

    python benchmarks/text_scorer_digits.py --seeds 0 1 --steps 300
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

#: every weight and slant word replaced by another one (thin <-> thick, regular -> thin; left <-> right, upright -> left)
SWAP = {
    "thin": "thick",
    "regular": "thin",
    "thick": "thin",
    "left-slanted": "right-slanted",
    "upright": "left-slanted",
    "right-slanted": "left-slanted",
}


def other_digit(caption: str) -> str:
    from d2c_hf.data.digits import DIGIT_NAMES

    head, name = caption.rsplit(" ", 1)
    return f"{head} {DIGIT_NAMES[(DIGIT_NAMES.index(name) + 3) % 10]}"


def opposite_attributes(caption: str) -> str:
    return " ".join(
        SWAP.get(w.rstrip(","), w.rstrip(",")) + ("," if w.endswith(",") else "") for w in caption.split()
    )


def run(seed: int, steps: int, folder: Path) -> dict:
    from d2c_hf import TextDifficultyScorer, condense, load_captioned_digits, train_scorer
    from d2c_hf.demo import build_stand_in_text_encoder
    from d2c_hf.utils.images import preprocess_images

    digits = load_captioned_digits()
    t5 = build_stand_in_text_encoder(folder, seed=seed)
    start = time.perf_counter()
    scorer_dir = train_scorer(
        digits["train"],
        folder / f"scorer-{seed}",
        caption_column="text",
        text_encoder=t5,
        resolution=16,
        num_steps=steps,
        seed=seed,
    )
    train_s = time.perf_counter() - start
    scorer = TextDifficultyScorer.from_pretrained(scorer_dir, num_draws=2, seed=seed, batch_size=64)
    test = digits["test"]
    pixels, _ = preprocess_images(test["image"], 16)
    captions = list(test["text"])
    scores = {}
    for name, texts in (
        ("true", captions),
        ("other_digit", [other_digit(c) for c in captions]),
        ("opposite_attributes", [opposite_attributes(c) for c in captions]),
    ):
        parts = [
            scorer.score_pixels(pixels[i : i + 64], texts[i : i + 64])[0] for i in range(0, len(texts), 64)
        ]
        scores[name] = np.concatenate(parts)
    true = scores["true"]
    lowest = np.mean((true < scores["other_digit"]) & (true < scores["opposite_attributes"]))
    scored = scorer.apply(test)
    start = time.perf_counter()
    condensed = condense(
        digits["train"],
        images_per_class=5,
        caption_column="text",
        scorer=str(scorer_dir),
        text_encoder=str(t5),
        attach=("latents", "caption"),
        resolution=16,
        seed=seed,
    )
    condense_s = time.perf_counter() - start
    return {
        "seed": seed,
        "train_steps": steps,
        "train_seconds": round(train_s, 1),
        "mean_difficulty": {k: float(v.mean()) for k, v in scores.items()},
        "fraction_true_caption_lowest": float(lowest),
        "fraction_true_below_other_digit": float(np.mean(true < scores["other_digit"])),
        "fraction_true_below_opposite_attributes": float(np.mean(true < scores["opposite_attributes"])),
        "reliability_test_split": scorer.reliability.reliability if scorer.reliability else None,
        "groups": scorer.group_record["num_groups"] if scorer.group_record else None,
        "test_rows": len(scored),
        "condense_seconds": round(condense_s, 1),
        "condensed_rows": len(condensed),
        "condensed_groups": condensed.num_classes,
        "condensed_reliability": (condensed.reliability.reliability if condensed.reliability else None),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="t2i-digits-") as folder:
        for seed in args.seeds:
            result = run(seed, args.steps, Path(folder))
            results.append(result)
            print(json.dumps(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
