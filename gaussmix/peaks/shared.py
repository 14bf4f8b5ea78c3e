"""Peaks across a batch with shared parameters: the estimator side of ``fit_peaks(...,
shared=...)``.

A shared parameter takes one value for the whole batch (a temperature series' peak
widths, a map's positions). The MAP is the joint Levenberg-Marquardt of
:func:`gaussmix.inference.map.shared.fit_shared_map` (block-arrow, cost linear in the
number of spectra); the result is a :class:`~gaussmix.peaks.result.PeakFit` whose
``shared_params`` hold each shared value once.
"""

import dataclasses
import functools
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gaussmix.inference.map.shared import fit_shared_map
from gaussmix.models.peaks import NOISE_SITE, PeakModel
from gaussmix.peaks.checks import (
    check_result,
    default_priors_on_host,
    describe_spectra,
    priors_of_sites,
)
from gaussmix.peaks.result import PeakFit, PeakFitWarning, delta_method, resolve_on_host, to_numpy

__all__ = [
    "add_population",
    "check_pooled",
    "check_shared",
    "fit_shared_peaks",
    "sample_joint",
    "shared_site_priors",
]


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


def check_pooled(model: PeakModel, pooled, shared: tuple, n_spectra: int | None) -> tuple:
    """The names of ``pooled``, checked: as :func:`check_shared`, real-valued (not a
    width, a fraction or the noise), and not also shared."""
    pooled = check_shared(model, pooled, n_spectra, "pooled")
    both = sorted(set(pooled) & set(shared))
    if both:
        raise ValueError(f"{both} are both shared and pooled: choose one for each.")
    if NOISE_SITE in pooled:
        raise ValueError("pooled cannot name the noise 'sigma'; share it, or leave it free.")
    if pooled:  # the joint program's module imports NumPyro: only for a joint fit
        from gaussmix.models.shared_peaks import check_pooled_support

        check_pooled_support(model, pooled)
    return pooled


def shared_site_priors(model: PeakModel, x, y, mask, shared: tuple[str, ...], priors) -> dict:
    """The user's ``priors`` with, for each shared site, its prior on the whole batch
    (:func:`gaussmix.models.shared_peaks.batch_priors`, in NumPy): the prior the joint
    NumPyro program gives it, which the joint MAP then reads from every spectrum's
    program (one prior, counted once).

    Args:
        model: the checked :class:`PeakModel`.
        x, y, mask: checked data, y (B, M).
        shared: checked names (:func:`check_shared`).
        priors: the user's priors, or None.
    """
    from gaussmix.models.shared_peaks import batch_priors

    values = y if mask is None else np.where(mask, y, np.nan)
    y_range = (np.nanmin(values, axis=-1), np.nanmax(values, axis=-1))
    x_range = (float(x.min()), float(x.max()))

    def default_priors(*ranges) -> dict:  # the host's boxes, as the program's distributions
        return {n: p.distribution() for n, p in default_priors_on_host(*ranges).items()}

    batch = batch_priors(model, x_range, y_range, dict(priors or {}), default_priors)
    return {**(priors or {}), **{name: batch[name] for name in shared}}


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
    derived: bool = True,
) -> PeakFit:
    """The joint MAP of a batch with ``shared`` sites, as a :class:`PeakFit`.

    Args:
        model: the checked :class:`PeakModel`.
        x, y, mask: checked data, y (B, M).
        start: site -> number or (B,) starting values (a shared one starts at the mean).
        shared: checked names (:func:`check_shared`).
        program, model_kwargs: the one-spectrum NumPyro program and its keywords (the
            shared sites' priors are set to :func:`shared_site_priors`).
        priors, fixed, degrees_of_freedom: the model's options, as fit_peaks takes them.
        max_iter, tol: the joint Levenberg-Marquardt's.
        derived: add the derived quantities with delta-method errors.
    """
    site_priors = shared_site_priors(model, x, y, mask, shared, priors)
    dtype = np.dtype(jnp.result_type(float))
    model_kwargs = {
        **model_kwargs,
        "priors": jax.tree.map(lambda leaf: np.asarray(leaf, dtype), site_priors),
    }
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
    n_spectra = y.shape[0]
    n_shared = len(result.shared_names)
    shared_stderr = {
        name: float(np.sqrt(result.shared_covariance[k, k]))
        for k, name in enumerate(result.shared_names)
    }
    options = dict(fixed=fixed, priors=priors, degrees_of_freedom=degrees_of_freedom)
    fit = PeakFit.build(
        model, result, **options, backend="map", x=x, y=y, mask=mask, derived=derived,
        shared=shared, shared_params=dict(result.shared_params), shared_stderr=shared_stderr,
        shared_covariance=np.asarray(result.shared_covariance),
    )  # fmt: skip
    _statistics(fit, result, model, n_shared)
    site_priors = priors_of_sites(model, x, y, mask, site_priors)
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
        exact = rss == 0
        if np.any(exact):
            warnings.warn(
                f"The residual sum of squares of {describe_spectra(np.flatnonzero(exact), n_spectra)}"
                " is 0: with a noise per spectrum its noise goes to 0 and its weight in the "
                "joint fit to infinity, so it alone sets the shared values; share 'sigma' too, "
                "or drop it.",
                PeakFitWarning,
                stacklevel=4,
            )
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


def population_marginal(values: np.ndarray, errors: np.ndarray) -> tuple[float, float, float]:
    """(mu, tau, stderr of mu) maximizing the marginal likelihood of a Normal population
    observed with known errors: :math:`v_b \\sim \\mathcal{N}(\\mu, \\tau^2 + s_b^2)`
    (random-effects meta-analysis, ML). tau may be 0: the spread is then explained by the
    errors alone (complete pooling), a legitimate optimum of the marginal likelihood,
    unlike the joint mode's tau = 0, which any data reach."""
    from scipy.optimize import minimize_scalar

    values, variances = np.asarray(values, float), np.asarray(errors, float) ** 2

    def profile(tau):
        weights = 1.0 / (tau**2 + variances)
        mu = np.sum(weights * values) / np.sum(weights)
        return 0.5 * np.sum(np.log(tau**2 + variances) + weights * (values - mu) ** 2), mu

    spread = float(np.std(values)) + float(np.sqrt(np.max(variances)))
    best = minimize_scalar(lambda tau: profile(tau)[0], bounds=(0.0, 10.0 * spread + 1e-300),
                           method="bounded", options={"xatol": 1e-10 * spread + 1e-300})  # fmt: skip
    tau = float(best.x) if profile(best.x)[0] < profile(0.0)[0] else 0.0
    mu = float(profile(tau)[1])
    return mu, tau, float(1.0 / np.sqrt(np.sum(1.0 / (tau**2 + variances))))


def add_population(fit: PeakFit, pooled: tuple[str, ...]) -> None:
    """Partial pooling of the MAP fit of a batch, in the Laplace approximation.

    For each pooled parameter: its population mean and spread (mu, tau) maximize the
    marginal likelihood of the per-spectrum estimates :math:`v_b` with their Laplace
    errors :math:`s_b` (:func:`population_marginal`); then each spectrum's parameters
    are conditioned on the population prior :math:`\\mathcal{N}(\\mu, \\tau^2)` of that
    parameter, exactly for the Gaussian (Laplace) posterior: with C the spectrum's
    covariance and :math:`k = C e_j / (C_{jj} + \\tau^2)`,
    :math:`\\theta \\leftarrow \\theta + k(\\mu - \\theta_j)` and
    :math:`C \\leftarrow C - k e_j^\\top C` (every parameter moves with its correlation to
    the pooled one). The joint mode itself is useless here: it sits at tau = 0 with all
    spectra equal (an unbounded density). ``population_params`` gets ``{name}_mu`` and
    ``{name}_tau``; ``population_stderr`` the mean's standard error. Derived quantities
    and the rss follow the updated parameters; ``backend="mcmc"`` samples the full
    hierarchical posterior instead of this approximation.
    """
    fit.pooled = pooled
    model = fit.model
    names = list(fit.parameter_names)
    theta = np.stack([np.asarray(fit.params[name], float) for name in names], axis=-1)
    covariance = np.array(fit.covariance, float)
    own = np.array([name not in fit.shared for name in names])
    for name in pooled:
        j = names.index(name)
        errors = np.sqrt(covariance[:, j, j])
        if not (np.all(np.isfinite(theta[:, j])) and np.all(np.isfinite(errors))):
            fit.population_params[name + "_mu"] = fit.population_params[name + "_tau"] = np.nan
            continue
        mu, tau, mu_error = population_marginal(theta[:, j], errors)
        fit.population_params[name + "_mu"], fit.population_params[name + "_tau"] = mu, tau
        fit.population_stderr[name + "_mu"] = mu_error
        gain = covariance[:, :, j] / (covariance[:, j, j] + tau**2)[:, None]  # (B, P)
        gain = np.where(own, gain, 0.0)  # shared values stay one for the batch
        theta = theta + gain * (mu - theta[:, j])[:, None]
        covariance = covariance - gain[:, :, None] * covariance[:, j, None, :]
    free = {name: theta[:, k] for k, name in enumerate(names)}
    for name, value in resolve_on_host(model, free, fit.fixed).items():
        fit.params[name] = np.asarray(value, float).copy()
    fit.covariance = covariance
    variances = np.diagonal(covariance, axis1=-2, axis2=-1)
    for k, name in enumerate(names):
        fit.stderr[name] = np.sqrt(variances[:, k])
    for name, target in model.ties:
        fit.stderr[name] = fit.stderr.get(target, fit.stderr[name])
    if model.derived_names and fit.backend == "map" and model.derived_names[0] in fit.params:
        values, errors = delta_method(fit, ("derived", model.derived_names))
        for index, name in enumerate(model.derived_names):
            fit.params[name] = to_numpy(values[..., index])
            fit.stderr[name] = to_numpy(errors[..., index])
    keep = np.ones(fit.y.shape, bool) if fit.mask is None else np.asarray(fit.mask)
    fit.rss = np.sum(np.where(keep, fit.y - fit.predict(), 0.0) ** 2, axis=1)
    fit.redchi = fit.rss / np.maximum(np.asarray(fit.n_points, float) - len(names), 1.0)


@functools.lru_cache(maxsize=32)
def _joint_program(lineshapes, baseline, likelihood, ties, shared, pooled, centered):
    """One function object per structure, so compiled samplers are reused."""
    from gaussmix.models.shared_peaks import shared_peaks

    return functools.partial(
        shared_peaks, lineshapes=lineshapes, baseline=baseline, likelihood=likelihood,
        ties=dict(ties), shared=shared, pooled=pooled, centered=centered,
    )  # fmt: skip


def sample_joint(
    map_fit: PeakFit, shared, pooled, priors, model_kwargs: dict, nuts: dict
) -> PeakFit:
    """NUTS on the joint posterior of the batch (:func:`gaussmix.models.shared_peaks.
    shared_peaks`: shared sites once, the others plated over spectra, pooled ones
    non-centred), started at the MAP fit ``map_fit`` (a pooled parameter's population
    at the mean and spread of its per-spectrum values). A pooled parameter is sampled
    centred where the data pin each spectrum's value: where the median of its MAP
    standard errors is below the spread of its MAP values (non-centred otherwise).

    Returns the PeakFit with posterior means and standard deviations: ``params`` and
    ``stderr`` (B,) per name, ``shared_params``/``shared_stderr`` once, and for each
    pooled parameter ``population_params[name + "_mu" / "_tau"]`` with their posterior
    sd in ``population_stderr``; ``covariance`` (B, P, P) from the draws, ``converged``
    no divergence and R-hat < 1.01 on every site (with several chains), for all
    spectra. Exchangeable peaks are not relabelled: give them distinct priors or
    centres far apart.
    """
    from gaussmix.inference.mcmc import sample

    model = map_fit.model
    centered = tuple(
        name
        for name in pooled
        if np.median(np.asarray(map_fit.stderr[name])) < np.std(map_fit.params[name], ddof=1)
    )
    program = _joint_program(map_fit.lineshapes, map_fit.baseline, map_fit.likelihood,
                             model.ties, tuple(shared), tuple(pooled), centered)  # fmt: skip
    kwargs = dict(model_kwargs)
    if map_fit.mask is not None:
        kwargs["mask"] = np.asarray(map_fit.mask)
    init = {}
    for name in model.site_names:
        values = np.asarray(map_fit.params[name], float)
        if name in shared:
            init[name] = float(values.mean())
        elif name in pooled:
            mu, tau = (
                values.mean(),
                max(float(values.std(ddof=1)), 1e-3 * abs(values.mean()) + 1e-12),
            )
            init[name + "_mu"], init[name + "_tau"] = float(mu), tau
            if name in centered:
                init[name] = values
            else:
                init[name + "_z"] = (values - mu) / tau
        else:
            init[name] = values
    if not all(np.all(np.isfinite(value)) for value in init.values()):
        raise ValueError(
            "The MAP fit that starts the chains failed (non-finite values); give init values "
            "well inside the priors' supports."
        )
    dtype = np.dtype(jnp.result_type(float))
    tree = sample(program, np.asarray(map_fit.x, dtype), np.asarray(map_fit.y, dtype),
                  init=init, **nuts, **kwargs)  # fmt: skip
    posterior = tree["posterior"]
    n_spectra = map_fit.n_spectra

    def per_spectrum(name):
        draws = np.asarray(posterior[name])
        draws = draws.reshape(-1, *draws.shape[2:])
        return np.broadcast_to(
            draws[:, None] if draws.ndim == 1 else draws, (draws.shape[0], n_spectra)
        )

    names = [*model.parameter_names, *model.derived_names]
    if model.has_noise:
        names.append(NOISE_SITE)
    params, stderr = {}, {}
    for name in names:
        draws = per_spectrum(name) if name in posterior else None
        if draws is None:
            continue
        params[name] = draws.mean(axis=0)
        stderr[name] = draws.std(axis=0, ddof=1)
    stacked = np.stack([per_spectrum(name) for name in map_fit.parameter_names], axis=-1)
    centred = stacked - stacked.mean(axis=0)
    covariance = np.einsum("sbp,sbq->bpq", centred, centred) / (stacked.shape[0] - 1)
    shared_params, shared_stderr = {}, {}
    for name in shared:
        draws = np.asarray(posterior[name]).reshape(-1)
        shared_params[name], shared_stderr[name] = float(draws.mean()), float(draws.std(ddof=1))
    population, population_stderr = {}, {}
    for name in pooled:
        for suffix in ("_mu", "_tau"):
            draws = np.asarray(posterior[name + suffix]).reshape(-1)
            population[name + suffix] = float(draws.mean())
            population_stderr[name + suffix] = float(draws.std(ddof=1))
    shared_curve = [name for name in shared if name != NOISE_SITE]
    shared_covariance = None
    if shared_curve:
        draws = np.stack([np.asarray(posterior[n]).reshape(-1) for n in shared_curve], axis=-1)
        shared_covariance = np.cov(draws, rowvar=False).reshape(len(shared_curve), -1)
    diverging = int(np.asarray(tree["sample_stats"]["diverging"]).sum())
    converged = bool(np.all(map_fit.converged)) and diverging == 0
    if nuts["num_chains"] > 1:
        import arviz_stats

        sites = [
            name
            for name in posterior.data_vars
            if name in _sampled(model, shared, pooled, centered)
        ]
        rhat = arviz_stats.rhat(tree, var_names=sites)
        converged = converged and max(float(np.asarray(rhat[n]).max()) for n in sites) < 1.01
    fit = dataclasses.replace(
        map_fit, backend="mcmc", params=params, stderr=stderr, covariance=covariance,
        converged=np.full(n_spectra, converged), posterior=tree, shared=tuple(shared),
        shared_params=shared_params, shared_stderr=shared_stderr,
        shared_covariance=shared_covariance, pooled=tuple(pooled),
        population_params=population, population_stderr=population_stderr,
    )  # fmt: skip
    keep = np.ones(fit.y.shape, bool) if fit.mask is None else fit.mask
    fit.rss = np.sum(np.where(keep, fit.y - fit.predict(), 0.0) ** 2, axis=1)
    fit.redchi = fit.rss / np.maximum(np.asarray(fit.n_points, float) - fit.n_parameters, 1.0)
    return fit


def _sampled(model: PeakModel, shared, pooled, centered) -> set:
    """The latent sites of the joint program."""
    names = set(model.site_names) - (set(pooled) - set(centered))
    for name in pooled:
        names |= {name + "_mu", name + "_tau"}
        if name not in centered:
            names.add(name + "_z")
    return names
