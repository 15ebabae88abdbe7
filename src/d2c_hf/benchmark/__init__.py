"""When does selection help? A benchmark for any labelled image dataset (``d2c benchmark``).

Trains the same small SiT, for the same steps, on subsets chosen by different selection strategies at
several budgets (Select only), with paired seeds, and scores what each generates against a held-out
reference with an evaluator fitted on the whole training split; reports every strategy's paired
difference against a random subset, budget by budget, and whether data matters at all in the setting
(the regime check). Everything is cached per run and resumable. See docs/benchmark-tool.md.

* :mod:`.settings`: budgets, arms, the settings and the run plan; :mod:`.data`: the input and its
  held-out reference; :mod:`.prepare`: scorer, scores, selection features, evaluator (once);
  :mod:`.evaluator`: the evaluator and the sampler; :mod:`.runs`: training runs and the cache;
  :mod:`.analysis`: statistics; :mod:`.report`, :mod:`.figures`: the report; :mod:`.tool`: one call.
"""

from .settings import FULL_SPLIT, QUICK, Arm, BenchmarkSettings, Budget
from .tool import run_benchmark

__all__ = ["FULL_SPLIT", "QUICK", "Arm", "BenchmarkSettings", "Budget", "run_benchmark"]
