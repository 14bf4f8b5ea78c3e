"""The file format's constants and the error :func:`gaussmix.io.load` raises on a bad file.

The format itself is described in :mod:`gaussmix.io`.
"""

import numbers
from typing import Any

__all__ = [
    "CLASSES",
    "FITTED_ATTRIBUTES",
    "FORMAT_VERSION",
    "MAX_COMPRESSION_RATIO",
    "MAX_DEPTH",
    "SKIPPED_FIELDS",
    "InvalidFile",
    "describe",
]

#: Version of the file format written by :func:`~gaussmix.io.save`.
FORMAT_VERSION = 1

#: Classes that can be saved: name -> (module, kind). ``estimator``: scikit-learn style
#: (``get_params`` + fitted attributes); ``record``: a dataclass or NamedTuple result.
CLASSES = {
    "BayesianGaussianMixture": ("gaussmix.bayesian_mixture", "estimator"),
    "GaussianMixture": ("gaussmix.mixture", "estimator"),
    "KMeans": ("gaussmix.kmeans", "estimator"),
    "PeakFit": ("gaussmix.peaks", "record"),
}

#: The attributes (besides ``get_params``) that :func:`~gaussmix.io.save` stores and
#: :func:`~gaussmix.io.load` sets, per estimator: name -> whether a file must hold it.
#: These are what ``fit`` and ``partial_fit`` set; :func:`~gaussmix.io.save` refuses an
#: estimator with any other attribute, so every file it writes loads.
FITTED_ATTRIBUTES = {
    "BayesianGaussianMixture": {
        "weights_": True,
        "means_": True,
        "covariances_": True,
        "precisions_": True,
        "precisions_cholesky_": True,
        "weight_concentration_": True,
        "mean_precision_": True,
        "degrees_of_freedom_": True,
        "weight_concentration_prior_": True,
        "mean_precision_prior_": True,
        "mean_prior_": True,
        "degrees_of_freedom_prior_": True,
        "covariance_prior_": True,
        "converged_": True,
        "n_iter_": True,
        "lower_bound_": True,
        "lower_bounds_": True,
        "n_features_in_": True,
        "feature_names_in_": False,
    },
    "GaussianMixture": {
        "weights_": True,
        "means_": True,
        "covariances_": True,
        "precisions_": True,
        "precisions_cholesky_": True,
        "converged_": True,
        "n_iter_": True,
        "lower_bound_": True,
        "lower_bounds_": True,
        "method_": True,
        "n_features_in_": True,
        "feature_names_in_": False,
        "_scales": False,
        "_online_record": False,
        "_online_bounds": False,
        "_fit_weight": False,
        "background_weight_": False,
        "background_volume_": False,
        "background_log_density_": False,
        "background_lower_": False,
        "background_upper_": False,
    },
    "KMeans": {
        "cluster_centers_": True,
        "labels_": True,
        "inertia_": True,
        "n_iter_": True,
        "n_features_in_": True,
        "feature_names_in_": False,
    },
}

#: Deepest nesting of the header's JSON that :func:`~gaussmix.io.load` reads (files
#: written by :func:`~gaussmix.io.save` nest 8 levels at most).
MAX_DEPTH = 32

#: Largest ratio of a member's size to its stored (compressed) size that
#: :func:`~gaussmix.io.load` decompresses: deflate cannot compress more than 1032 to 1, so
#: a larger claim is a damaged or crafted file (a "zip bomb"), refused before any
#: decompression.
MAX_COMPRESSION_RATIO = 1100

#: Fields of a record that :func:`~gaussmix.io.save` leaves out (a posterior is saved on
#: its own).
SKIPPED_FIELDS = {"PeakFit": ("posterior",)}

_DAMAGED = (
    "The file is damaged or was changed after gaussmix.save wrote it: save the fitted model again."
)


class InvalidFile(ValueError):
    """What is wrong with a file (and what to do); ``gaussmix.io.load`` adds the file name."""

    def __init__(self, problem: str, hint: str = _DAMAGED) -> None:
        super().__init__(f"{problem}. {hint}" if hint else problem)


def describe(value: Any) -> str:
    """``value`` in a few words, for an error message."""
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return f"a {value.dtype} array of shape {tuple(value.shape)}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, bool | numbers.Number) or value is None:
        return repr(value)
    return f"a {type(value).__name__}"
