"""Fréchet distance between two sets of feature vectors, as an `evaluate` metric (FID on Inception features).

Load it offline by absolute path (or with ``d2c_hf.evaluation.load_fid_metric()``)::

    import evaluate
    metric = evaluate.load("/abs/path/to/d2c_hf/evaluation/frechet_distance")
    metric.compute(predictions=fake_features, references=real_features)

evaluate parses this file's imports to check its dependencies: keep one import per line.
"""

import datasets
import evaluate
import numpy as np

from d2c_hf.evaluation import fid_from_features

_DESCRIPTION = """
Fréchet distance between Gaussians fitted to two sets of feature vectors:
FD = ||mu_p - mu_r||^2 + tr(S_p) + tr(S_r) - 2 tr((S_p S_r)^{1/2}),
with means mu and unbiased covariances S. On Inception-v3 pool3 features of generated
(predictions) and real (references) images this is the FID of Heusel et al. (2017); the
features must be computed beforehand (e.g. with d2c_hf.evaluation.InceptionV3FeatureExtractor).
Lower is better; 0 for identical statistics. The value depends on the number of samples:
compare only at equal counts.
"""

_CITATION = """
@inproceedings{heusel2017gans,
  title={GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium},
  author={Heusel, Martin and Ramsauer, Hubert and Unterthiner, Thomas and Nessler, Bernhard and Hochreiter, Sepp},
  booktitle={Advances in Neural Information Processing Systems},
  year={2017}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float vectors, or an (N, d) array): features of generated samples.
    references (list of float vectors, or an (N, d) array): features of real samples. evaluate
        stores predictions and references as rows of one table, so both need the same N; call
        d2c_hf.evaluation.fid_from_features directly for sets of different sizes.
    shrinkage (None, "ledoit-wolf" or float): covariance shrinkage for N <= d (changes the value;
        not comparable with published FIDs). Default None.
    method ("eigh" or "sqrtm"): how tr((S_p S_r)^{1/2}) is computed. Default "eigh".
Returns:
    frechet_distance (float): the distance.
Examples:
    >>> import numpy as np
    >>> from d2c_hf.evaluation import load_fid_metric
    >>> metric = load_fid_metric()
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(100, 4))
    >>> round(metric.compute(predictions=x, references=x)["frechet_distance"], 9)
    0.0
"""


def _stack_rows(rows, name):
    """Feature rows -> (N, d) float64; all rows must have the same length."""
    rows = [np.asarray(row, dtype=np.float64).reshape(-1) for row in rows]
    widths = sorted({len(row) for row in rows})
    if len(widths) > 1:
        raise ValueError(
            f"{name} rows have different lengths {widths[:5]}; every row must be one (d,) feature vector"
        )
    return np.stack(rows) if rows else np.zeros((0, 0))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class FrechetDistance(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("float64")),
                }
            ),
            reference_urls=["https://arxiv.org/abs/1706.08500"],
        )

    def _compute(self, predictions, references, shrinkage=None, method="eigh"):
        fake = _stack_rows(predictions, "predictions")
        real = _stack_rows(references, "references")
        value = fid_from_features(fake, real, shrinkage=shrinkage, method=method)
        return {"frechet_distance": float(value)}
