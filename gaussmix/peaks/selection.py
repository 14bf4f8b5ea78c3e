"""Choosing the number of peaks: :func:`select_peaks` by BIC or PSIS-LOO."""

import inspect
import warnings
from typing import NamedTuple

import numpy as np
from jax.typing import ArrayLike

from gaussmix.inference.deprecation import renamed_keyword
from gaussmix.peaks.fit import BACKENDS, fit_peaks
from gaussmix.peaks.result import PeakFit, PeakFitWarning

__all__ = ["PeakSelection", "select_peaks"]


class PeakSelection(NamedTuple):
    """Result of :func:`select_peaks`: one entry per candidate number of peaks.

    Attributes:
        n_peaks: the chosen number (lowest BIC; highest LOO elpd with MCMC).
        candidates: (K,) numbers of peaks tried.
        bic: (K,) BIC of each MAP fit.
        elpd_loo: (K,) PSIS-LOO expected log predictive density (MCMC), else None.
        converged: (K,) whether each MAP fit converged.
        fits: the K :class:`PeakFit` (MCMC fits with ``backend="mcmc"``).
    """

    n_peaks: int
    candidates: np.ndarray
    bic: np.ndarray
    elpd_loo: np.ndarray | None
    converged: np.ndarray
    fits: tuple[PeakFit, ...]

    @property
    def best(self) -> PeakFit:
        return self.fits[int(np.flatnonzero(self.candidates == self.n_peaks)[0])]


def select_peaks(
    x: ArrayLike,
    y: ArrayLike,
    max_peaks: int,
    *,
    lineshape: str = "gaussian",
    baseline: str | int | None = None,
    min_peaks: int = 1,
    backend: str = "map",
    **fit_options,
) -> PeakSelection:
    """Choose the number of peaks: BIC of the MAP fits, or PSIS-LOO with ``backend="mcmc"``.

    Every candidate starts from ``init="auto"``.

    Args:
        x: (M,) abscissae.
        y: (M,) one spectrum.
        max_peaks: largest number of peaks tried.
        lineshape: the lineshape of every peak.
        baseline: as in :func:`fit_peaks`.
        min_peaks: smallest number tried (>= 1).
        backend: "map" (BIC) or "mcmc" (LOO from ``arviz_stats.loo``; BIC reported too).
        **fit_options: further arguments of :func:`fit_peaks` (``max_iter``, ``tol``, ...;
            the deprecated ``max_iterations`` and ``tolerance`` warn once, here).

    Warns:
        FutureWarning: ``max_iterations`` or ``tolerance`` was given.

    Example:
        >>> import numpy as np
        >>> x = np.linspace(0, 10, 200)
        >>> y = (np.exp(-0.5 * (x - 3) ** 2 / 0.3) + np.exp(-0.5 * (x - 7) ** 2 / 0.3)
        ...      + 0.02 * np.random.default_rng(0).normal(size=200))
        >>> selection = select_peaks(x, y, 3, min_peaks=2)  # two peaks, or three?
        >>> selection.n_peaks, selection.candidates.tolist()
        (2, [2, 3])
    """
    defaults = inspect.signature(fit_peaks).parameters
    for old_name, new_name in (("max_iterations", "max_iter"), ("tolerance", "tol")):
        if old_name in fit_options:
            fit_options[new_name] = renamed_keyword(
                "select_peaks",
                old_name,
                fit_options.pop(old_name),
                new_name,
                fit_options.get(new_name, defaults[new_name].default),
                defaults[new_name].default,
            )
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}.")
    if np.ndim(y) != 1:
        raise ValueError("select_peaks takes one spectrum: y of shape (M,).")
    if not isinstance(max_peaks, int | np.integer) or not 1 <= min_peaks <= max_peaks:
        raise ValueError(
            f"Need 1 <= min_peaks <= max_peaks, got min_peaks={min_peaks}, max_peaks={max_peaks}."
        )
    candidates = np.arange(int(min_peaks), int(max_peaks) + 1)
    fits, bic, elpd, converged = [], [], [], []
    for count in candidates:
        peaks_tuple = (lineshape,) * int(count)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PeakFitWarning)
            fit = fit_peaks(x, y, peaks_tuple, baseline, backend="map", **fit_options)
        bic.append(float(fit.bic))
        converged.append(bool(fit.converged))
        if backend == "mcmc":
            import arviz_stats

            fit = fit_peaks(
                x, y, peaks_tuple, baseline, init=fit.params, backend="mcmc", **fit_options
            )
            elpd.append(float(arviz_stats.loo(fit.posterior).elpd))
        fits.append(fit)
    bic, converged = np.array(bic), np.array(converged)
    if backend == "mcmc":
        elpd_loo = np.array(elpd)
        chosen = int(candidates[int(np.argmax(elpd_loo))])
    else:
        elpd_loo = None
        chosen = int(candidates[int(np.argmin(bic))])
    return PeakSelection(chosen, candidates, bic, elpd_loo, converged, tuple(fits))
