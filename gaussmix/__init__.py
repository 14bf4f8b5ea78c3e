"""gaussmix: Gaussian mixtures and peak fits as NumPyro programs.

Models live in :mod:`gaussmix.models`, back ends in :mod:`gaussmix.inference`; this
package is the user-facing layer. Importing it does not import matplotlib and does not
change JAX's configuration (for float64, set JAX's ``jax_enable_x64`` option in your
script before any computation).
"""

import importlib

from gaussmix import datasets

__version__ = "0.1.0"

# Public name -> module that defines it, imported on first use.
_LAZY = {
    "GaussianMixture": "gaussmix.mixture",
    "BayesianGaussianMixture": "gaussmix.bayesian_mixture",
    "KMeans": "gaussmix.kmeans",
    "select_components": "gaussmix.selection",
    "bootstrap_likelihood_ratio": "gaussmix.bootstrap",
    "BootstrapLRT": "gaussmix.bootstrap",
    "save": "gaussmix.io",
    "load": "gaussmix.io",
    "compare": "gaussmix.comparison",
    "point_versus_posterior": "gaussmix.comparison",
    "diagnose": "gaussmix.inference.diagnostics",
    "fit_peaks": "gaussmix.peaks",
    "PeakFit": "gaussmix.peaks",
    "select_peaks": "gaussmix.peaks",
}

__all__ = ["__version__", "datasets", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gaussmix' has no attribute {name!r}")
