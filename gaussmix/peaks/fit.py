"""Fitting peaks: :func:`fit_peaks`, by MAP (Levenberg-Marquardt) or NUTS from the MAP.

The MAP path runs :func:`gaussmix.inference.map.fit_map` on the peak program, refits the
spectra that lost a peak (:func:`gaussmix.peaks.start.reseed_lost_peaks`), and turns the
result into a :class:`~gaussmix.peaks.result.PeakFit` with derived quantities, AIC and
BIC; the MCMC path samples the posterior by NUTS started at the MAP, or at the starting
values when ``init`` gives them all (no MAP fit then).
"""

import dataclasses
import functools
import math
import numbers
import types
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gaussmix.inference.deprecation import UNSET, renamed_keyword
from gaussmix.inference.map import fit_map
from gaussmix.inference.map.families import FAMILIES
from gaussmix.models.peaks import (
    NOISE_SITE,
    PeakModel,
    check_degrees_of_freedom,
    check_fixed,
    check_priors,
    peak_model,
    peaks,
)
from gaussmix.peaks.checks import (
    check_data,
    check_init_support,
    check_init_values,
    check_result,
    describe_spectra,
    priors_of_sites,
)
from gaussmix.peaks.result import PeakFit, PeakFitWarning, baseline_key, to_numpy
from gaussmix.peaks.shared import (
    add_population,
    check_pooled,
    check_shared,
    fit_shared_peaks,
    sample_joint,
)
from gaussmix.peaks.start import auto_init, noise_start, reseed_lost_peaks

__all__ = ["BACKENDS", "fit_peaks"]

BACKENDS = ("map", "mcmc")


@functools.lru_cache(maxsize=64)
def _program(lineshapes: tuple, baseline, likelihood: str, ties: tuple):
    """One function object per model structure, so compiled fits are reused."""
    return functools.partial(
        peaks, lineshapes=lineshapes, baseline=baseline, likelihood=likelihood, ties=dict(ties)
    )


def _model_kwargs(priors, fixed, likelihood, degrees_of_freedom, dtype) -> dict:
    """The program's keyword arguments as arrays of ``dtype``, host (NumPy) arrays where
    they are numbers: converting them to JAX arrays here would compile a program each."""
    kwargs = {}
    if priors:
        kwargs["priors"] = jax.tree.map(lambda leaf: np.asarray(leaf, dtype), dict(priors))
    if fixed:
        kwargs["fixed"] = {name: np.asarray(value, dtype) for name, value in fixed.items()}
    if likelihood == "student_t":
        kwargs["degrees_of_freedom"] = np.asarray(degrees_of_freedom, dtype)
    return kwargs


def fit_peaks(
    x: ArrayLike,
    y: ArrayLike,
    peaks: str | Sequence[str] = ("gaussian", "gaussian"),
    baseline: str | int | None = None,
    *,
    init: str | Mapping[str, ArrayLike] = "auto",
    backend: str = "map",
    priors: Mapping[str, Any] | None = None,
    ties: Mapping[str, str] | None = None,
    fixed: Mapping[str, float] | None = None,
    likelihood: str = "normal",
    degrees_of_freedom: float = 4.0,
    nan_policy: str = "raise",
    max_iter: int = 200,
    tol: float | None = None,
    lost_peak_retries: int = 1,
    batch_size: int = 32,
    devices: int | Sequence[jax.Device] | Any | None = None,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    num_chains: int = 4,
    seed: int = 0,
    progress_bar: bool | None = None,
    max_iterations: int = UNSET,
    tolerance: float | None = UNSET,
    shared: Sequence[str] = (),
    pooled: Sequence[str] = (),
) -> PeakFit:
    """Fit a sum of peaks on a baseline to one spectrum or a batch of spectra.

    .. math::

        y_m = \\sum_i p_i(x_m; \\theta_i) + b(x_m; \\beta) + \\varepsilon_m,\\qquad
        \\varepsilon_m \\sim \\mathcal{N}(0, \\sigma) \\text{ (or StudentT, Poisson)}

    Args:
        x: (M,) abscissae.
        y: (M,) one spectrum, or (B, M) spectra fitted at once (MAP only).
        peaks: one lineshape per peak: "gaussian", "lorentzian", "voigt", "voigt_area",
            "pseudo_voigt", "skewed_gaussian", "pearson7", "doniach_sunjic".
        baseline: None, "constant", "linear", "exponential", a polynomial degree n, or
            the active XPS backgrounds "shirley" and "tougaard", fitted with the peaks
            (x the binding energy, in eV for Tougaard; see
            :mod:`gaussmix.models.backgrounds`).
        init: "auto" (smoothing, baseline from the lower envelope, peaks greedily from
            the highest residual maximum, widths from the half-maximum crossings), or a
            dict of starting values like curve_fit's p0 (numbers, or (B,) arrays); missing
            ones are found automatically; tied, fixed and derived names are ignored, so a
            previous fit's ``params`` can be passed.
        backend: "map" (Levenberg-Marquardt) or "mcmc" (NUTS from the MAP). When
            ``init`` gives every site (``sigma`` too, where the likelihood has a noise
            scale; a previous fit's ``params`` do), the chains start there and no MAP
            fit runs: NUTS's preparation takes its own Newton steps toward the mode.
            The fit's ``log_likelihood``, ``aic`` and ``bic``, the MAP's otherwise, are
            then those at the starting values (the MAP's when they are a MAP fit's
            ``params``), ``n_iter`` is 0 and ``converged`` is the chains' alone.
        priors: site name -> scalar numpyro distribution replacing a default prior.
        ties: ``{name: target}``: e.g. ``{"peak1_sigma": "peak0_sigma"}``.
        fixed: ``{name: value}`` parameters held fixed.
        likelihood: "normal", "student_t" (with ``degrees_of_freedom``) or "poisson".
        degrees_of_freedom: of the StudentT likelihood.
        nan_policy: "raise" (default) or "omit" (drop non-finite points).
        max_iter: Levenberg-Marquardt steps per spectrum.
        tol: convergence tolerance of the MAP, for the relative decrease and the relative
            step (default by dtype, see :func:`gaussmix.inference.map.fit_map`).
        lost_peak_retries: rounds of refits for spectra that lost a peak: a peak whose
            height, area or width ended at zero, or its centre at an end of x, is
            re-seeded at the largest maximum of the residual (the other parameters keep
            their fitted values) and the spectrum refitted; the fit with the higher
            posterior is kept. Only those spectra are refitted, through the same compiled
            fit. 0 returns the first fits as they ended (at a bound, flagged).
        batch_size: spectra iterated together by the MAP back end (per device).
        devices: None (one device), or the devices a batch is split over for the MAP
            fits: an int n (the first n local devices), a list of devices or a one-axis
            ``jax.sharding.Mesh``; same results as one device. On CPU, create devices
            before JAX starts (``XLA_FLAGS=--xla_force_host_platform_device_count=2``
            fits on two cores).
        num_warmup, num_samples, num_chains, seed, progress_bar: NUTS settings (MCMC).
        max_iterations, tolerance: deprecated spellings of ``max_iter`` and ``tol`` (a
            FutureWarning; removed in a future release).
        shared: names of free parameters (``"sigma"`` too) taking one value for the
            whole batch (y of shape (B, M)), e.g. ``("peak0_sigma", "peak1_sigma")``.
            The MAP solves the joint problem (:mod:`gaussmix.peaks.shared`; cost linear
            in B); ``PeakFit.shared_params`` holds each shared value once. With
            ``shared``, ``lost_peak_retries``, ``batch_size`` and ``devices`` do not
            apply. ``backend="mcmc"`` samples the joint posterior of the batch by NUTS.
        pooled: names of real-valued parameters (centres, heights, areas, baseline
            coefficients) drawn per spectrum from a population Normal(mu, tau), partial
            pooling (:mod:`gaussmix.models.shared_peaks`: hyperpriors, non-centred);
            ``PeakFit.population_params`` holds ``{name}_mu`` and ``{name}_tau``.
            ``backend="mcmc"`` samples the hierarchical posterior. The joint mode is
            useless (tau = 0, all spectra equal): the MAP takes (mu, tau) maximizing the
            marginal likelihood of the per-spectrum estimates with their Laplace errors,
            then conditions each spectrum on Normal(mu, tau) in the Laplace
            approximation (:func:`gaussmix.peaks.shared.add_population`).

    Returns:
        :class:`PeakFit`.

    Raises:
        ValueError: x and y of different lengths, NaN or infinity with
            ``nan_policy="raise"``, fewer points than parameters, an unknown lineshape,
            baseline or option; a prior whose support does not lie in its site's (see
            :func:`gaussmix.models.peaks.site_support`: heights, areas, widths and the
            noise positive, fractions in [0, 1], the rest real) or with non-finite or
            invalid parameters; a fixed value that is not one finite number in its
            parameter's support; a tie between parameters of different kinds; an init
            value that is not finite or lies outside its prior's support;
            ``degrees_of_freedom`` not finite and > 0; ``tol`` not in (0, 1); a keyword
            given in both its spellings with different values.

    Warns:
        PeakFitWarning: once per call for the spectra that ended with a parameter at a
            bound of their prior, and once for those whose fit failed: at its start (the
            log posterior not finite at the starting values: params, rss, redchi, stderr
            and covariance NaN), with a singular covariance (stderr NaN), or out of
            iterations. All are flagged False in ``converged``.
        FutureWarning: ``max_iterations`` or ``tolerance`` was given.

    Example:
        >>> import numpy as np
        >>> x = np.arange(10.0)
        >>> y = np.array([0, 1, 2, 3, 4, 5, 4, 3, 2, 1.0])
        >>> fit = fit_peaks(x, y, peaks=("gaussian", "gaussian"),
        ...                 init={"peak0_height": 3, "peak0_center": 3, "peak0_sigma": 1,
        ...                       "peak1_height": 4, "peak1_center": 6, "peak1_sigma": 1})
        >>> round(fit.params["peak0_center"], 2), round(fit.rss, 3)  # curve_fit's optimum
        (4.94, 0.354)
    """
    # A bad value is refused before a deprecated spelling warns, in the caller's words.
    iteration_keyword, given_max_iter = (
        ("max_iter", max_iter) if max_iterations is UNSET else ("max_iterations", max_iterations)
    )
    tolerance_keyword, given_tol = ("tol", tol) if tolerance is UNSET else ("tolerance", tolerance)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}.")
    for name, value, least in (
        (iteration_keyword, given_max_iter, 1),
        ("batch_size", batch_size, 1),
        ("lost_peak_retries", lost_peak_retries, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}.")
    if given_tol is not None and (
        isinstance(given_tol, bool)
        or not isinstance(given_tol, numbers.Real)
        or not 0 < given_tol < 1
    ):
        raise ValueError(
            f"{tolerance_keyword} must be None or a number in (0, 1), got {given_tol!r}."
        )
    max_iter = renamed_keyword(
        "fit_peaks", "max_iterations", max_iterations, "max_iter", max_iter, 200
    )
    tol = renamed_keyword("fit_peaks", "tolerance", tolerance, "tol", tol, None)
    model = peak_model(peaks, baseline, likelihood, ties, {} if fixed is None else fixed)
    fixed = {name: float(value) for name, value in check_fixed(model, fixed).items()}
    check_priors(priors, model)
    check_degrees_of_freedom(degrees_of_freedom)
    degrees_of_freedom = float(degrees_of_freedom)
    x, y, mask = check_data(x, y, nan_policy)
    n_spectra = y.shape[0] if y.ndim == 2 else None
    shared = check_shared(model, shared, n_spectra)
    pooled = check_pooled(model, pooled, shared, n_spectra)
    if backend == "mcmc" and n_spectra is not None and not (shared or pooled):
        raise ValueError(
            "backend='mcmc' fits one spectrum at a time: pass y of shape (M,) (loop over the "
            "rows of a batch)."
        )
    n_free = len(model.free_names)
    counts = (
        np.full(n_spectra or 1, x.shape[0]) if mask is None else mask.reshape(-1, x.size).sum(1)
    )
    if counts.min() <= n_free:
        raise ValueError(
            f"{int(counts.min())} usable points for {n_free} free parameters: a fit needs at "
            f"least {n_free + 1} points (fewer peaks, ties or fixed values reduce the count)."
        )
    if likelihood == "poisson":
        used = y if mask is None else y[mask]
        if np.any(used < 0) or np.any(used != np.round(used)):
            raise ValueError(
                "The Poisson likelihood needs counts: y must hold non-negative integers."
            )
    if isinstance(init, str):
        if init != "auto":
            raise ValueError(f"init must be 'auto' or a dict of starting values, got {init!r}.")
        given = {}
    else:
        given = check_init_values(init, model, n_spectra)
    missing = set(model.site_names) - set(given)
    if missing - {NOISE_SITE}:
        start = auto_init(x, y, mask, model)
    elif missing:
        start = {NOISE_SITE: noise_start(y, mask, model.likelihood)}
    else:
        start = {}
    start.update(given)
    start = {name: start[name] for name in model.site_names}
    check_init_support(given, priors_of_sites(model, x, y, mask, priors))
    nuts = {"num_warmup": num_warmup, "num_samples": num_samples, "num_chains": num_chains}
    nuts.update(seed=seed, progress_bar=progress_bar)
    if shared or pooled:
        return _fit_joint(model, x, y, mask, start, shared, pooled, backend, priors, fixed,
                          degrees_of_freedom, max_iter, tol, nuts)  # fmt: skip
    if backend == "mcmc" and not missing:  # the chains start at the values given
        first = _given_start(model, x, y, mask, start, priors, fixed, degrees_of_freedom)
        return _fit_mcmc(first, priors, **nuts)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Out-of-support values", UserWarning)
        map_fit = _fit_map(
            model,
            x,
            y,
            mask,
            start,
            priors=priors,
            fixed=fixed,
            degrees_of_freedom=degrees_of_freedom,
            max_iter=max_iter,
            tol=tol,
            batch_size=batch_size,
            devices=devices,
            lost_peak_retries=lost_peak_retries,
            derived=backend == "map",  # NUTS gives its own from the draws
        )
    if backend == "map":
        return map_fit
    return _fit_mcmc(map_fit, priors, **nuts)


def _fit_joint(model, x, y, mask, start, shared, pooled, backend, priors, fixed,
               degrees_of_freedom, max_iter, tol, nuts) -> PeakFit:  # fmt: skip
    """``fit_peaks(..., shared=..., pooled=...)``: :mod:`gaussmix.peaks.shared` with this
    module's program and keywords (the MAP of the batch, then NUTS on the joint model)."""
    lineshapes = tuple(shape.name for shape in model.lineshapes)
    program = _program(lineshapes, baseline_key(model), model.likelihood, model.ties)
    dtype = jnp.result_type(float)
    kwargs = _model_kwargs(priors, fixed, model.likelihood, degrees_of_freedom, dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Out-of-support values", UserWarning)
        if shared:
            fit = fit_shared_peaks(
                model, x, y, mask, start, shared, program=program, model_kwargs=kwargs,
                priors=priors, fixed=fixed, degrees_of_freedom=degrees_of_freedom,
                max_iter=max_iter, tol=tol, derived=backend == "map",
            )  # fmt: skip
        else:
            fit = _fit_map(
                model, x, y, mask, start, priors=priors, fixed=fixed,
                degrees_of_freedom=degrees_of_freedom, max_iter=max_iter, tol=tol,
                batch_size=32, devices=None, lost_peak_retries=1, derived=backend == "map",
            )  # fmt: skip
    if pooled:
        add_population(fit, pooled)
    if backend == "map":
        return fit
    return sample_joint(fit, shared, pooled, priors, kwargs, nuts)


def _fit_map(
    model: PeakModel,
    x: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray | None,
    start: dict,
    *,
    priors,
    fixed: dict,
    degrees_of_freedom: float,
    max_iter: int,
    tol: float | None,
    batch_size: int,
    devices,
    lost_peak_retries: int,
    derived: bool = True,
) -> PeakFit:
    """The MAP path of :func:`fit_peaks` on checked input, from ``start`` (site -> value
    or (B,) values): fit, refit the spectra that lost a peak, then the PeakFit (with the
    derived quantities and their delta-method errors if ``derived``)."""
    dtype = jnp.result_type(float)
    program = _program(
        tuple(shape.name for shape in model.lineshapes),
        baseline_key(model),
        model.likelihood,
        model.ties,
    )
    kwargs = _model_kwargs(priors, fixed, model.likelihood, degrees_of_freedom, dtype)
    fit_spectra = functools.partial(
        fit_map,
        program,
        x,
        y,
        mask=mask,
        model_kwargs=kwargs,
        noise_site=NOISE_SITE,
        max_iter=max_iter,
        tol=tol,
        step_tol=tol,
        batch_size=batch_size,
        devices=devices,
        _structure=map_structure(model),
    )
    result = fit_spectra(start)
    site_priors = priors_of_sites(model, x, y, mask, priors)
    for _ in range(lost_peak_retries):
        init, lost = reseed_lost_peaks(model, x, y, mask, result.params, fixed, site_priors)
        if not lost.any():
            break
        retry = fit_spectra(init, active=lost)
        result = _keep_better(result, retry, lost)
    options = dict(fixed=fixed, priors=priors, degrees_of_freedom=degrees_of_freedom)
    fit = PeakFit.build(model, result, **options, backend="map", x=x, y=y, mask=mask,
                        derived=derived)  # fmt: skip
    _statistics(fit, result, model)
    check_result(fit, model, site_priors, result.started, max_iter)
    return fit


def map_structure(model: PeakModel) -> tuple:
    """What :func:`gaussmix.inference.map.fit.probe_program` finds by tracing this model's
    program, read from the :class:`PeakModel` (a test holds them equal): its latent sites
    (name, shape) in program order, its observed site ``y`` and its family. fit_map then
    traces nothing and needs no NumPyro where the compiled fit is cached."""
    latent = tuple((name, ()) for name in model.site_names)
    return latent, "y", FAMILIES[model.likelihood]


def _given_start(model: PeakModel, x, y, mask, start, priors, fixed, degrees_of_freedom):
    """What starts the chains when ``init`` gave every site: those values, no MAP fit (no
    iterations), and the log-likelihood, AIC and BIC at them (the MAP's when they are a
    MAP fit's ``params``)."""
    names = model.free_names
    nan = float("nan")
    point = types.SimpleNamespace(
        params={name: float(value) for name, value in start.items()},
        parameter_names=names,
        covariance=np.full((len(names), len(names)), nan),  # no errors: NaN
        n_points=int(x.size if mask is None else np.count_nonzero(mask)),
        converged=True,
        n_iter=0,
    )
    options = dict(fixed=fixed, priors=priors, degrees_of_freedom=degrees_of_freedom)
    fit = PeakFit.build(model, point, **options, backend="mcmc", x=x, y=y, mask=mask)
    params = fit.params
    keep = np.ones(y.shape, bool) if mask is None else mask
    observed, mean = y[keep], fit.predict()[keep]  # the program the chains' summary runs
    rss = float(np.sum((observed - mean) ** 2))
    log_likelihood = nan  # a Normal likelihood's is maximized over the noise: from the rss
    if model.likelihood == "student_t":
        nu, z = float(degrees_of_freedom), (observed - mean) / params[NOISE_SITE]
        constant = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
        log_likelihood = float(
            np.sum(constant - math.log(params[NOISE_SITE]) - (nu + 1) / 2 * np.log1p(z**2 / nu))
        )
    elif model.likelihood == "poisson":  # the program clips the mean at the tiniest float
        rate = np.maximum(mean, np.finfo(jnp.result_type(float)).tiny)
        factorials = np.array([math.lgamma(count + 1.0) for count in observed])
        log_likelihood = float(np.sum(observed * np.log(rate) - rate - factorials))
    point = types.SimpleNamespace(n_points=fit.n_points, rss=rss, log_likelihood=log_likelihood)
    _statistics(fit, point, model)
    return fit


def _keep_better(result, retry, refitted):
    """Per spectrum, the refit where it was refitted and reached a lower negative log
    posterior, else the first fit; the steps of both count in ``n_iter``."""
    better = np.asarray(refitted) & (np.asarray(retry.objective) < np.asarray(result.objective))

    def pick(new, old):
        new, old = np.asarray(new), np.asarray(old)
        return np.where(better.reshape(better.shape + (1,) * (old.ndim - better.ndim)), new, old)

    fields = {
        name: pick(getattr(retry, name), getattr(result, name))
        for name in ("covariance", "objective", "log_likelihood", "rss", "n_points", "decrement")
    }
    return result._replace(
        params={name: pick(retry.params[name], value) for name, value in result.params.items()},
        converged=pick(retry.converged, result.converged),
        started=pick(retry.started, result.started),
        n_iter=np.where(better, np.asarray(result.n_iter) + retry.n_iter, result.n_iter),
        **fields,
    )


def _statistics(fit: PeakFit, result, model: PeakModel) -> None:
    n = np.asarray(result.n_points, float)
    rss = np.asarray(result.rss, float)
    p = fit.n_parameters
    k = p + (1 if model.has_noise else 0)
    if model.likelihood == "normal" and model.has_noise:
        exact = rss == 0
        if np.any(exact):
            warnings.warn(
                f"The residual sum of squares of {describe_spectra(np.flatnonzero(exact), fit.n_spectra)}"
                " is 0: the curve goes through every point, or y is so small that its "
                "squares underflow (rescale y); its log-likelihood is +inf and AIC and BIC "
                "are -inf.",
                PeakFitWarning,
                stacklevel=4,
            )
        with np.errstate(divide="ignore"):  # rss = 0: log-likelihood +inf, said above
            log_likelihood = -0.5 * n * (np.log(2 * np.pi * rss / n) + 1.0)
    else:
        log_likelihood = np.asarray(result.log_likelihood, float)
    fit.rss = to_numpy(rss)
    fit.redchi = to_numpy(rss / np.maximum(n - p, 1))
    fit.log_likelihood = to_numpy(log_likelihood)
    fit.aic = to_numpy(-2 * log_likelihood + 2 * k)
    fit.bic = to_numpy(-2 * log_likelihood + k * np.log(n))


def _order_by_center(tree, model: PeakModel, priors):
    """Relabel exchangeable peaks draw by draw so that their centres increase.

    Peaks are exchangeable when they share one lineshape and their parameters carry the
    same (default) priors and no ties or fixed values; their labels then switch between
    the modes of the posterior, and summaries need the ordering first (as for mixtures).
    """
    if len({shape.name for shape in model.lineshapes}) != 1 or model.n_peaks < 2:
        return tree
    peak_names = {n for i in range(model.n_peaks) for n in model.peak_parameter_names(i)}
    involved = {n for pair in model.ties for n in pair} | set(model.fixed) | set(priors or {})
    if peak_names & involved:
        return tree
    dataset = tree["posterior"].to_dataset()
    centers = np.stack([np.asarray(dataset[f"peak{i}_center"]) for i in range(model.n_peaks)])
    order = np.argsort(centers, axis=0)  # (K, chain, draw)
    suffixes = {
        name.split("_", 1)[1]
        for name in dataset.data_vars
        if name.startswith("peak") and name.split("_", 1)[0][4:].isdigit()
    }
    for suffix in suffixes:
        names = [f"peak{i}_{suffix}" for i in range(model.n_peaks)]
        stacked = np.stack([np.asarray(dataset[name]) for name in names])
        ordered = np.take_along_axis(
            stacked, order.reshape(order.shape + (1,) * (stacked.ndim - 3)), axis=0
        )
        for index, name in enumerate(names):
            dataset[name] = (dataset[name].dims, ordered[index])
    tree["posterior"] = dataset
    return tree


def _fit_mcmc(
    map_fit: PeakFit, priors, *, num_warmup, num_samples, num_chains, seed, progress_bar
) -> PeakFit:
    """The MCMC path of :func:`fit_peaks`: NUTS started at the MAP fit of one spectrum."""
    from gaussmix.inference.mcmc import sample

    model = map_fit.model
    dtype = jnp.result_type(float)
    program = _program(map_fit.lineshapes, map_fit.baseline, map_fit.likelihood, model.ties)
    kwargs = _model_kwargs(
        priors, map_fit.fixed, model.likelihood, map_fit.degrees_of_freedom, dtype
    )
    if map_fit.mask is not None:
        kwargs["mask"] = np.asarray(map_fit.mask)
    init = {name: float(map_fit.params[name]) for name in model.site_names}
    if not all(math.isfinite(value) for value in init.values()):
        raise ValueError(
            "The MAP fit that starts the chains failed at its start (the log posterior is not "
            "finite at the starting values); give init values well inside the priors' supports."
        )
    tree = sample(
        program,
        np.asarray(map_fit.x, dtype),
        np.asarray(map_fit.y, dtype),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        seed=seed,
        init=init,
        progress_bar=progress_bar,
        **kwargs,
    )
    tree = _order_by_center(tree, model, priors)
    posterior = tree["posterior"]
    names = [*model.parameter_names, *model.derived_names]
    if model.has_noise:
        names.append(NOISE_SITE)
    params = {name: float(np.asarray(posterior[name]).mean()) for name in names}
    stderr = {
        name: float(np.asarray(posterior[name]).std(ddof=1))
        for name in (*model.parameter_names, *model.derived_names)
    }
    draws = np.stack(
        [np.asarray(posterior[name]).reshape(-1) for name in map_fit.parameter_names], axis=-1
    )
    covariance = np.cov(draws, rowvar=False).reshape(len(map_fit.parameter_names), -1)
    diverging = int(np.asarray(tree["sample_stats"]["diverging"]).sum())
    converged = bool(map_fit.converged) and diverging == 0
    if num_chains > 1:
        import arviz_stats

        rhat = arviz_stats.rhat(tree, var_names=list(map_fit.parameter_names))
        worst = max(float(np.asarray(rhat[name]).max()) for name in map_fit.parameter_names)
        converged = converged and worst < 1.01
    fit = dataclasses.replace(
        map_fit,
        backend="mcmc",
        params=params,
        stderr=stderr,
        covariance=covariance,
        converged=converged,
        posterior=tree,
    )
    mean = fit.predict()
    keep = np.ones(fit.y.shape, bool) if fit.mask is None else fit.mask
    fit.rss = float(np.sum((fit.y - mean)[keep] ** 2))
    fit.redchi = fit.rss / max(float(fit.n_points) - fit.n_parameters, 1.0)
    return fit
