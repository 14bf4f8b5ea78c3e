"""Peaks across a batch with shared parameters: the estimator side of ``fit_peaks(...,
shared=...)``.

A shared parameter takes one value for the whole batch (a temperature series' peak
widths, a map's positions). The MAP is the joint Levenberg-Marquardt of
:func:`gaussmix.inference.map.shared.fit_shared_map` (block-arrow, cost linear in the
number of spectra); the result is a :class:`~gaussmix.peaks.result.PeakFit` whose
``shared_params`` hold each shared value once.
"""

from collections.abc import Sequence

import numpy as np

from gaussmix.inference.map.shared import fit_shared_map
from gaussmix.models.peaks import NOISE_SITE, PeakModel
from gaussmix.peaks.checks import check_result, priors_of_sites
from gaussmix.peaks.result import PeakFit, delta_method, resolve_on_host, to_numpy

__all__ = ["check_shared", "fit_shared_peaks"]


def check_shared(model: PeakModel, shared, n_spectra: int | None, option: str = "shared"):
    """The names of ``shared`` (or ``pooled``) as a tuple, checked against the model.

    Raises:
        ValueError: not a sequence of names, y not a batch, a name that is tied, fixed
            or unknown, or every curve parameter named.
    """
    if shared is None:
        return ()
    if isinstance(shared, str):
        shared = (shared,)
    if not isinstance(shared, Sequence) or not all(isinstance(name, str) for name in shared):
        raise ValueError(
            f"{option} must be a sequence of parameter names such as ('peak0_sigma',), got "
            f"{shared!r}."
        )
    shared = tuple(dict.fromkeys(shared))
    if not shared:
        return ()
    if n_spectra is None:
        raise ValueError(f"{option}= needs a batch of spectra: pass y of shape (B, M) with B >= 2.")
    if n_spectra < 2:
        raise ValueError(f"{option}= needs at least 2 spectra, got y with {n_spectra}.")
    tied = dict(model.ties)
    for name in shared:
        if name in tied:
            raise ValueError(
                f"{option} names {name!r}, tied to {tied[name]!r}: name the tie's target "
                f"instead ({tied[name]!r}), and the tie follows it."
            )
        if name in model.fixed:
            raise ValueError(f"{option} names {name!r}, which is fixed: leave one of the two.")
        if name not in model.site_names:
            raise ValueError(
                f"{option} names unknown parameter {name!r}; the free parameters are "
                f"{list(model.site_names)}."
            )
    if set(model.free_names) <= set(shared):
        raise ValueError(
            f"{option} names every curve parameter: nothing is left per spectrum (fit the "
            "mean spectrum instead)."
        )
    return shared


def fit_shared_peaks(
    model: PeakModel,
    x: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray | None,
    start: dict,
    shared: tuple[str, ...],
    *,
    program,
    model_kwargs: dict,
    priors,
    fixed: dict,
    degrees_of_freedom: float,
    max_iter: int,
    tol: float | None,
    lineshapes: tuple[str, ...],
    baseline,
    derived: bool = True,
) -> PeakFit:
    """The joint MAP of a batch with ``shared`` sites, as a :class:`PeakFit`.

    Args:
        model: the checked :class:`PeakModel`.
        x, y, mask: checked data, y (B, M).
        start: site -> number or (B,) starting values (a shared one starts at the mean).
        shared: checked names (:func:`check_shared`).
        program, model_kwargs: the one-spectrum NumPyro program and its keywords.
        priors, fixed, degrees_of_freedom: the model's options, as fit_peaks takes them.
        max_iter, tol: the joint Levenberg-Marquardt's.
        lineshapes, baseline: as the PeakFit records them.
        derived: add the derived quantities with delta-method errors.
    """
    result = fit_shared_map(
        program,
        x,
        y,
        start,
        shared,
        mask=mask,
        model_kwargs=model_kwargs,
        noise_site=NOISE_SITE,
        max_iter=max_iter,
        tol=tol,
        step_tol=tol,
    )
    names = result.parameter_names
    n_spectra = y.shape[0]
    free = {name: np.asarray(result.params[name]) for name in names}
    params = {
        name: np.broadcast_to(np.asarray(value, float), (n_spectra,)).copy()
        for name, value in resolve_on_host(model, free, fixed).items()
    }
    variances = np.diagonal(result.covariance, axis1=-2, axis2=-1)
    stderr = {name: np.sqrt(variances[:, i]) for i, name in enumerate(names)}
    for name, target in model.ties:
        stderr[name] = stderr.get(target, np.zeros(n_spectra))
    for name in model.fixed:
        stderr[name] = np.zeros(n_spectra)
    n_shared = len(result.shared_names)
    shared_stderr = {
        name: float(np.sqrt(result.shared_covariance[k, k]))
        for k, name in enumerate(result.shared_names)
    }
    converged = np.full(n_spectra, result.converged)
    fit = PeakFit(
        lineshapes=lineshapes,
        baseline=baseline,
        likelihood=model.likelihood,
        degrees_of_freedom=float(degrees_of_freedom),
        ties=dict(model.ties),
        fixed=dict(fixed),
        priors=dict(priors) if priors else None,
        backend="map",
        x=x,
        y=y,
        mask=mask,
        params=params,
        stderr=stderr,
        parameter_names=tuple(names),
        covariance=np.asarray(result.covariance),
        rss=None,
        redchi=None,
        aic=None,
        bic=None,
        log_likelihood=None,
        n_points=np.asarray(result.n_points),
        n_parameters=len(names),
        converged=converged,
        n_iter=np.full(n_spectra, result.n_iter),
        shared=shared,
        shared_params=dict(result.shared_params),
        shared_stderr=shared_stderr,
        shared_covariance=np.asarray(result.shared_covariance),
    )
    if derived and model.derived_names:
        values, errors = delta_method(fit, ("derived", model.derived_names))
        for index, name in enumerate(model.derived_names):
            fit.params[name] = to_numpy(values[..., index])
            fit.stderr[name] = to_numpy(errors[..., index])
    if model.has_noise:
        fit.params[NOISE_SITE] = np.asarray(result.params[NOISE_SITE])
    _statistics(fit, result, model, n_shared)
    site_priors = priors_of_sites(model, x, y, mask, priors)
    check_result(fit, model, site_priors, np.full(n_spectra, result.started), max_iter)
    return fit


def _statistics(fit: PeakFit, result, model: PeakModel, n_shared: int) -> None:
    """Per spectrum rss, reduced chi-square, log-likelihood, AIC and BIC; a shared
    parameter (the noise too) counts 1/B per spectrum, so the sums are the joint fit's."""
    n_spectra = fit.n_spectra
    n = np.asarray(result.n_points, float)
    rss = np.asarray(result.rss, float)
    own = fit.n_parameters - n_shared
    parameters = own + n_shared / n_spectra
    noise_share = 1.0 / n_spectra if NOISE_SITE in fit.shared else 1.0
    k = parameters + (noise_share if model.has_noise else 0.0)
    if model.likelihood == "normal" and model.has_noise:
        with np.errstate(divide="ignore"):
            if NOISE_SITE in fit.shared:
                variance = rss.sum() / n.sum()
                log_likelihood = -0.5 * n * np.log(2 * np.pi * variance) - rss / (2 * variance)
            else:
                log_likelihood = -0.5 * n * (np.log(2 * np.pi * rss / n) + 1.0)
    else:
        log_likelihood = np.asarray(result.log_likelihood, float)
    fit.rss = rss
    fit.redchi = rss / np.maximum(n - parameters, 1)
    fit.log_likelihood = log_likelihood
    fit.aic = -2 * log_likelihood + 2 * k
    fit.bic = -2 * log_likelihood + k * np.log(n)
