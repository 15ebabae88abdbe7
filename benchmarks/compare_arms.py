"""Two arms of a finished ``d2c benchmark`` report compared directly, budget by budget.

The report compares every arm with random. Whether one selector beats another (say distribution
alignment against D2C's interval sampling) is the difference of their two paired differences, seed by
seed (random's own value cancels), with the same percentile-bootstrap interval
(``d2c_hf.benchmark.analysis.arm_contrast``):

    python benchmarks/compare_arms.py docs/benchmarks/selection_map_digits.json alignment interval
    python benchmarks/compare_arms.py REPORT.json stratified interval:paper --metric recall/unguided

Prints a Markdown table: per budget, ``arm - reference`` mean [95 % interval] and the seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from d2c_hf.benchmark.analysis import CONTRAST_METRICS, arm_contrast


def main() -> None:
    keys = [f"{metric}/{mode}" for metric, mode in CONTRAST_METRICS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="a report's NAME.json")
    parser.add_argument("arm")
    parser.add_argument("reference")
    parser.add_argument("--metric", default="fd/unguided", choices=keys)
    args = parser.parse_args()
    record = json.loads(args.report.read_text())
    arms = {k for block in record["results"]["budgets"].values() for k in block["cells"]}
    for name in (args.arm, args.reference):
        if name not in arms:
            parser.error(f"no arm {name!r} in {args.report}; its arms: {sorted(arms)}")
    rows = arm_contrast(record["results"], args.arm, args.reference, args.metric)
    print(f"| budget | {args.arm} - {args.reference}: {args.metric} | seeds |")
    print("|---|---|---|")
    for label, d in rows.items():
        print(f"| {label} | {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | {len(d['seeds'])} |")


if __name__ == "__main__":
    main()
