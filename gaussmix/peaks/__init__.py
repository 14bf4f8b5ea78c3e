"""Peak fitting: :func:`fit_peaks`, its result :class:`PeakFit`, and :func:`select_peaks`.

A peak model (peaks of registered lineshapes on an optional baseline, with Normal,
StudentT or Poisson noise) is the NumPyro program :func:`gaussmix.models.peaks.peaks`.
``backend="map"`` fits it by Levenberg-Marquardt (:func:`gaussmix.inference.map.fit_map`),
one spectrum ``y`` of shape (M,) or a batch (B, M) at once; ``backend="mcmc"`` samples its
posterior by NUTS (:func:`gaussmix.inference.mcmc.sample`) started at the MAP.

The default priors are uniform on wide boxes that respect the bounds (positive heights and
widths, centres inside the x range; see :mod:`gaussmix.models.peaks`), flat inside: the
MAP is then the least-squares fit, equal to ``scipy.optimize.curve_fit``'s, and the Laplace
covariance equals its ``pcov``.

Modules, one concern each: :mod:`~gaussmix.peaks.result` (:class:`PeakFit`, integrals,
report), :mod:`~gaussmix.peaks.start` (starting values), :mod:`~gaussmix.peaks.checks`
(input and result checks), :mod:`~gaussmix.peaks.fit` (:func:`fit_peaks`, MAP and MCMC
paths) and :mod:`~gaussmix.peaks.selection` (:func:`select_peaks`).
"""

from gaussmix.peaks.checks import NAN_POLICIES
from gaussmix.peaks.fit import BACKENDS, fit_peaks
from gaussmix.peaks.result import Integral, PeakFit, PeakFitWarning
from gaussmix.peaks.selection import PeakSelection, select_peaks

__all__ = [
    "BACKENDS",
    "NAN_POLICIES",
    "Integral",
    "PeakFit",
    "PeakFitWarning",
    "PeakSelection",
    "fit_peaks",
    "select_peaks",
]
