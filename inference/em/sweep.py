"""Fits of every K of a sweep from k-means starts in one compiled program: the fits
:class:`gaussmix.GaussianMixture` makes one K at a time with the same options (the
observed fits of :func:`gaussmix.bootstrap.bootstrap_likelihood_ratio`, K = 1 .. G + 1),
through :mod:`gaussmix.inference.em.candidates`; and the log-likelihood of the one-component
fit in closed form.

:func:`fit_sweep` runs k-means (one program) then the EM fits of every K (padded to the
largest, one program); :func:`preload_sweep` loads the EM fits' programs without running
them, so that a thread can load them while k-means runs.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(-4, 1, (60, 1)), rng.normal(4, 1, (60, 1))])
    >>> keywords = dict(tol=1e-8, reg_covar=0.0, max_iter=200, n_init=1, seed=0)
    >>> (_, one), (two_components, two) = fit_sweep(x, "full", (1, 2), **keywords)
    >>> bool(np.isclose(one, single_gaussian_log_likelihood(x, "full", 0.0)))
    True
    >>> np.sort(two_components.means.ravel()).round(0).tolist(), bool(two > one)
    ([-4.0, 4.0], True)
"""

import threading
import warnings

import numpy as np

from gaussmix.inference.em import candidates
from gaussmix.inference.em.features import block_size
from gaussmix.inference.em.options import EMOptions, check_options
from gaussmix.inference.em.parameters import MixtureParameters
from gaussmix.inference.em.results import ConvergenceWarning, raise_on_failure
from gaussmix.models.priors import covariance_layout

__all__ = ["fit_sweep", "preload_sweep", "single_gaussian_log_likelihood", "sweep_setup"]


def single_gaussian_log_likelihood(data: np.ndarray, layout: str, reg_covar: float) -> float:
    """The log-likelihood of one Gaussian fitted by maximum likelihood (every model's
    K = 1 fit: its layout's sample covariance, ``reg_covar`` on the diagonal)."""
    data = np.asarray(data, np.float64)
    n_samples, n_features = data.shape
    centred = data - data.mean(axis=0)
    sample = centred.T @ centred / n_samples
    constant = np.flatnonzero(np.diag(sample) + reg_covar <= 0)
    if layout in ("full", "tied"):
        covariance = sample + reg_covar * np.eye(n_features)
        try:
            factor = np.linalg.cholesky(covariance) if constant.size == 0 else None
        except np.linalg.LinAlgError:
            factor = None
        if factor is None or not np.all(np.diag(factor) > 0):
            _raise_singular(constant, "the features are linearly dependent")
        _, log_determinant = np.linalg.slogdet(covariance)
        quadratic = np.trace(np.linalg.solve(covariance, sample))
    elif layout == "diag":
        if constant.size:
            _raise_singular(constant, "")
        variances = np.diag(sample) + reg_covar
        log_determinant = np.sum(np.log(variances))
        quadratic = np.sum(np.diag(sample) / variances)
    else:
        variance = np.trace(sample) / n_features + reg_covar
        if not variance > 0:
            _raise_singular(constant, "")
        log_determinant = n_features * np.log(variance)
        quadratic = np.trace(sample) / variance
    return float(-0.5 * n_samples * (n_features * np.log(2 * np.pi) + log_determinant + quadratic))


def _raise_singular(constant: np.ndarray, otherwise: str) -> None:
    """The one-Gaussian fit has a singular covariance: say which features and the fix."""
    cause = (
        f"feature(s) {constant.tolist()} are constant (zero variance)"
        if constant.size
        else otherwise
    )
    raise ValueError(
        f"The one-component fit's covariance is singular: {cause}, so the likelihood is "
        "unbounded. Drop constant or duplicated features, or pass reg_covar > 0 (added to "
        "the covariances' diagonal)."
    )


def sweep_setup(
    data, covariance_type: str, counts: tuple, *, tol, reg_covar, max_iter, n_init, seed
) -> tuple[EMOptions, candidates.CandidatesConfig, np.ndarray]:
    """(EM options, the candidates' config, unit row weights) of the fits of every K of
    ``counts`` (``tol``: GaussianMixture's, on the mean log-likelihood)."""
    options = check_options(
        n_components=max(counts),
        covariance_type=covariance_type,
        max_iter=max_iter,
        tol=tol,
        reg_covar=reg_covar,
        n_init=n_init,
        seed=seed,
    )
    n_samples, n_features = data.shape
    config = candidates.CandidatesConfig(
        covariance_type=covariance_type,
        n_components=tuple(counts),
        max_iter=int(options.max_iter),
        n_init=int(options.n_init),
        block_rows=block_size(
            n_samples, n_features, max(counts), covariance_type, data.dtype.itemsize, None
        ),
    )
    return options, config, np.ones(n_samples, data.dtype)


def preload_sweep(data, covariance_type: str, counts: tuple, **keywords) -> None:
    """Load and hold the EM programs of :func:`fit_sweep` (same arguments), unrun."""
    options, config, weight = sweep_setup(data, covariance_type, counts, **keywords)
    candidates.preload_candidates(
        data, weight, tol=options.tol, reg_covar=options.reg_covar, config=config
    )


def fit_sweep(
    data, covariance_type: str, counts: tuple, ready: threading.Event | None = None, **keywords
) -> list[tuple[MixtureParameters, float]]:
    """[(parameters, log-likelihood)] of each K of ``counts``, every K in one compiled
    program: the fits :class:`gaussmix.GaussianMixture` makes with these options
    (``keywords``: those of :func:`sweep_setup`) one K at a time. ``ready``: an event set
    when a thread has loaded the EM programs (:func:`preload_sweep`), waited for after
    k-means. Raises EM's error where a fit fails; warns where one did not converge."""
    options, config, weight = sweep_setup(data, covariance_type, counts, **keywords)
    labels = candidates.kmeans_labels(
        data, weight, options.key, n_components=counts, n_init=options.n_init
    )
    if ready is not None:
        ready.wait()
    fits = candidates.fit_candidates(
        data, weight, labels, tol=options.tol, reg_covar=options.reg_covar, config=config
    )
    layout = covariance_layout(covariance_type)
    answer = []
    for position, count in enumerate(counts):
        raise_on_failure(
            fits.collapsed[position][None],
            fits.n_iters[position][None],
            fits.lower_bound[position],
            False,
            covariance_type,
            data.dtype,
        )
        if not fits.converged[position]:
            warnings.warn(
                f"The observed fit of {count} components did not converge in max_iter = "
                f"{keywords['max_iter']} iterations; increase max_iter.",
                ConvergenceWarning,
                stacklevel=3,
            )
        weights, means, covariances, factor = (leaf[position] for leaf in fits.parameters)
        if layout != "tied":
            covariances, factor = covariances[:count], factor[:count]
        parameters = MixtureParameters(weights[:count], means[:count], covariances, factor)
        answer.append((parameters, float(fits.log_likelihood[position])))
    return answer
