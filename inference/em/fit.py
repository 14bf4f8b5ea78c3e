"""The in-memory EM driver: :func:`fit_em`, one ``jax.jit``-compiled program per shape.

Every EM iteration runs inside one ``lax.while_loop``
(:func:`gaussmix.inference.em.core.iterate`) whose statistics function is a ``lax.scan``
over blocks of rows (:func:`gaussmix.inference.em.statistics.block_statistics`, or the
compiled CPU kernel of :mod:`gaussmix.inference.native`); the ``n_init`` restarts run one
after another inside the program (``lax.map``), the best restart is chosen by its lower
bound, and ``B`` independent datasets of one shape (``x`` of shape (B, N, D)) are vmapped. A second call with the same
shapes does not recompile.
"""

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import lax
from jax.typing import ArrayLike

from gaussmix.inference import compilation, native
from gaussmix.inference.em import background, deconvolution, initialization, missing
from gaussmix.inference.em.background import BackgroundArguments
from gaussmix.inference.em.core import StepConfig, init, iterate, make_context
from gaussmix.inference.em.features import block_size, data_blocks, feature_count
from gaussmix.inference.em.hierarchical import start_labels
from gaussmix.inference.em.initialization import PRECISION_NDIM, check_inits, prior_parameters_of
from gaussmix.inference.em.options import EMOptions, check_options, hierarchical_model
from gaussmix.inference.em.parameters import site_values
from gaussmix.inference.em.results import EMResult, raise_on_failure
from gaussmix.inference.em.statistics import block_statistics
from gaussmix.inference.em.validation import as_float_array, check_range
from gaussmix.models.mixture import check_priors as check_program_priors
from gaussmix.models.priors import covariance_layout

__all__ = ["fit_em"]


class FitConfig(NamedTuple):
    """Static configuration of one compiled fit."""

    step: StepConfig
    max_iter: int
    n_init: int
    init_params: str
    block_rows: int
    batched: bool
    cache_design: bool = False
    #: E-step statistics through the compiled CPU kernel (gaussmix.inference.native)
    use_kernel: bool = False
    #: rows per scan step of the measurement-error E-step (gaussmix.inference.em.deconvolution)
    measurement_block_rows: int = 0


class _Arguments(NamedTuple):
    """Traced arguments of one compiled fit (a change does not recompile)."""

    priors: dict
    tol: jax.Array
    reg_covar: jax.Array
    start_lower_bound: jax.Array
    #: a uniform background's BackgroundArguments (StepConfig.background), else None
    background: BackgroundArguments | None = None


def _fit_dataset(
    x,
    sample_weight,
    inits,
    labels,
    key,
    arguments: _Arguments,
    config: FitConfig,
    patterns=None,
    measurements=None,
):
    """Fit one dataset: the restarts one after another, the best by its lower bound.

    ``labels``: the hc start's (N,) labels (``init_params="hc"``), else None.
    ``patterns``: the :class:`gaussmix.inference.em.missing.PatternBlocks` of data with
    missing entries (``x`` holding the column means there, as the initialization sees
    it), else None. ``measurements``: the
    :class:`gaussmix.inference.em.deconvolution.Measurements` of rows with measurement
    errors (and any missing entries: then ``patterns`` is None), else None."""
    covariance_type = config.step.covariance_type
    # The design matrix depends on the data alone: data of one block computes it once per
    # fit (config.cache_design), larger data once per block per iteration.
    blocks = data_blocks(
        x, sample_weight, config.block_rows, covariance_type, cache_design=config.cache_design
    )
    prior_parameters = None
    if config.step.method != "maximum_likelihood":
        prior_parameters = prior_parameters_of(x, covariance_type)
    context = make_context(
        config.step,
        centre=blocks.centre,
        reg_covar=arguments.reg_covar,
        tol=arguments.tol,
        priors=arguments.priors,
        prior_parameters=prior_parameters,
    )

    def statistics_fn(parameters):
        return block_statistics(parameters, blocks, covariance_type, use_kernel=config.use_kernel)

    if config.step.background:  # a uniform background: its column in the E-step
        context = context._replace(background_log_density=arguments.background.log_density)

        def statistics_fn(parameters):
            return block_statistics(
                parameters,
                blocks,
                covariance_type,
                background_log_density=context.background_log_density,
            )

    sides = None if arguments.background is None else arguments.background.log_sides
    if patterns is not None:

        def statistics_fn(parameters):
            return missing.block_statistics(
                parameters, patterns, blocks.centre, covariance_type, sides
            )

    if measurements is not None:

        def statistics_fn(parameters):
            return deconvolution.block_statistics(
                parameters,
                x,
                sample_weight,
                measurements,
                blocks.centre,
                covariance_type,
                config.measurement_block_rows,
                context.background_log_density,
                sides,
            )

    def one_restart(restart):
        if hierarchical_model(config.init_params) is not None:
            restart_key, index = restart
            extra = {"labels": labels, "restart": index}
        else:
            restart_key, extra = restart, {}
        parameters = initialization.initial_parameters(
            restart_key, blocks, context, config.step, config.init_params, inits, **extra
        )
        if config.step.background:
            parameters = background.start_parameters(parameters, arguments.background.start_weight)
        start = init(parameters, arguments.start_lower_bound)
        return iterate(start, statistics_fn, context, config.step, config.max_iter)

    # Restart i uses fold_in(key, i): restart 0 does not depend on n_init, so more
    # restarts can only raise the lower bound. With "hc", restart 0 starts from the
    # hierarchical clustering and the others from k-means.
    restart_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(config.n_init))
    restarts = restart_keys
    if hierarchical_model(config.init_params) is not None:
        restarts = (restart_keys, jnp.arange(config.n_init))
    states, infos, traces = _map_or_call(one_restart, restarts)
    # a static index where there is one restart (no gather per leaf in the program)
    best = 0 if config.n_init == 1 else jnp.argmax(states.lower_bound)
    state, info, trace = jax.tree.map(lambda leaf: leaf[best], (states, infos, traces))
    filled = jnp.where(
        jnp.arange(config.max_iter) < state.n_iter, trace[: config.max_iter], state.lower_bound
    )
    return state, info, filled, infos.collapsed_component, states.n_iter


def _fit_program(
    x,
    sample_weight,
    inits,
    labels,
    key,
    arguments: _Arguments,
    config: FitConfig,
    patterns=None,
    measurements=None,
):
    """The whole fit of one dataset (N, D) or a batch (B, N, D), compiled once per shape and
    configuration. ``labels``: the hc start's labels, (N,) or (B, N), an array argument
    (None unless ``init_params="hc"``). ``patterns``: the missingness patterns (their
    ``pattern`` (N,) or (B, N), one table for the batch), None for complete data (the
    program of complete data is unchanged by the argument). ``measurements``: the
    measurement errors (:class:`gaussmix.inference.em.deconvolution.Measurements`, one
    per dataset), None without. Returns the best state and
    info, the lower bounds, the program's site dict and failure flags."""

    def one_dataset(x, sample_weight, inits, labels, key, patterns, measurements):
        state, info, lower_bounds, collapsed, n_iters = _fit_dataset(
            x, sample_weight, inits, labels, key, arguments, config, patterns, measurements
        )
        params = site_values(
            state.parameters, config.step.covariance_type, with_scales=config.step.with_scales
        )
        return state, info, lower_bounds, params, collapsed, n_iters

    # Dataset b uses fold_in(key, b): an unbatched fit equals dataset 0 of a batch.
    if not config.batched:
        return one_dataset(
            x, sample_weight, inits, labels, jax.random.fold_in(key, 0), patterns, measurements
        )
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(x.shape[0]))
    base_ndims = (1, 2, PRECISION_NDIM[covariance_layout(config.step.covariance_type)])
    init_axes = tuple(
        None if a is None or a.ndim == base else 0
        for a, base in zip(inits, base_ndims, strict=True)
    )
    label_axis = None if labels is None else 0
    pattern_axes = None if patterns is None else missing.PatternBlocks(0, 0, 0, None)
    measurement_axes = None if measurements is None else 0
    return jax.vmap(
        one_dataset, in_axes=(0, 0, init_axes, label_axis, 0, pattern_axes, measurement_axes)
    )(x, sample_weight, inits, labels, keys, patterns, measurements)


def _map_or_call(fn, keys):
    """``fn`` over the restart ``keys`` (or a tuple of arrays led by the keys), stacked: one after another by ``lax.map``.

    Each restart is the very computation of a single fit (``n_init=1``), not a lane of a
    vmap, whose rounding differs in the last bits: so more restarts never end below one
    restart with the same seed (scikit-learn's ``test_init``). The loop body is compiled
    once, as for one restart, and each restart stops at its own convergence (a vmapped
    ``while_loop`` runs every lane until the slowest converges): measured as fast or
    faster than vmapped restarts, and a third quicker to compile for ``n_init=4``.
    A single key needs no loop at all.
    """
    if jax.tree.leaves(keys)[0].shape[0] == 1:
        return jax.tree.map(lambda leaf: leaf[None], fn(jax.tree.map(lambda k: k[0], keys)))
    return lax.map(fn, keys)


#: The compiled fit for a problem of this work (rows x features x components x restarts
#: x datasets): fewer LLVM optimizations where compile time, not run time, dominates.
_fit_program_for = compilation.programs_by_optimization_level(
    _fit_program, static_argnames=("config",)
)


def _hc_seed(seed) -> int:
    """An integer of the fit's seed (an int or a JAX key) for the hc subset's draw."""
    if isinstance(seed, jax.Array):
        data = np.asarray(
            jax.random.key_data(seed) if jnp.issubdtype(seed.dtype, jax.dtypes.prng_key) else seed
        )
        return int(np.bitwise_xor.reduce(data.astype(np.uint64).ravel()))
    return int(seed) % 2**63


def _hc_labels(
    x: np.ndarray, n_components: int, seed, batched: bool, weight=None, model: str = "VVV"
) -> np.ndarray:
    """mclust's hc start (:func:`start_labels`, criterion ``model``) of each dataset, in
    NumPy: (N,) or (B, N) int32 labels. Dataset b draws its subset (above 2000 rows) from ``(seed, b)``; a row
    of weight w counts as w coincident rows (weights all 1: the unweighted clustering)."""
    base = _hc_seed(seed)
    datasets = x if batched else x[None]
    weights = np.broadcast_to(np.asarray(1.0 if weight is None else weight), datasets.shape[:2])
    labels = np.stack(
        [
            start_labels(
                np.asarray(data, np.float64),
                n_components,
                model=model,
                seed=int(np.random.SeedSequence([base, index]).generate_state(1)[0]),
                sample_weight=None if np.all(rows == 1.0) else rows,
            )
            for index, (data, rows) in enumerate(zip(datasets, weights, strict=True))
        ]
    ).astype(np.int32)
    return labels if batched else labels[0]


def _check_background(
    log_density, weight_init, options, has_nan, measurements, dtype, log_sides, n_features
):
    """The :class:`BackgroundArguments` of a fit with a uniform background, or an error
    naming what it does not combine with yet."""
    if has_nan and log_sides is None:
        raise NotImplementedError(
            "a uniform background with missing entries (nan_policy='marginalize') needs "
            "background_log_sides (its box; a volume alone has no density over a row's "
            "observed coordinates); pass them, or fit complete rows (nan_policy='omit'), "
            "or without background."
        )
    if options.method == "generalized_em":
        raise NotImplementedError(
            "a uniform background with non-conjugate priors (generalized EM) is not "
            "implemented; use priors=None, 'default' or conjugate priors (a Dirichlet on "
            "'weights', an InverseWishart or InverseGamma on the covariance site)."
        )
    if weight_init is None:
        weight_init = background.DEFAULT_START_WEIGHT
    return background.check_background_arguments(
        log_density, weight_init, dtype, log_sides if has_nan else None, n_features
    )


def fit_em(
    x: ArrayLike,
    *,
    n_components: int | None = None,
    covariance_type: str = "full",
    priors: str | Mapping[str, dist.Distribution] | None = None,
    sample_weight: ArrayLike | None = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    n_init: int = 1,
    init_params: str = "kmeans",
    weights_init: ArrayLike | None = None,
    means_init: ArrayLike | None = None,
    precisions_init: ArrayLike | None = None,
    seed: int | jax.Array = 0,
    start_lower_bound: float = -np.inf,
    block_rows: int | None = None,
    options: EMOptions | None = None,
    nan_policy: str = "raise",
    measurement_covariances: ArrayLike | None = None,
    background_log_density: float | None = None,
    background_weight_init: float | None = None,
    background_log_sides: ArrayLike | None = None,
) -> EMResult:
    """Fit the Gaussian mixture program by EM (maximum likelihood or MAP), one jit call.

    Args:
        x: (N, D) data, or (B, N, D) for B independent datasets fitted together.
        n_components: K >= 1.
        covariance_type: "full", "tied", "diag", "spherical" or one of mclust's 14
            models :math:`\\Sigma_k = \\lambda_k D_k A_k D_k^T` ("EII", "VII", "EEI", "VEI",
            "EVI", "VVI", "EEE", "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV"; VVV,
            EEE, VVI and VII are full, tied, diag and spherical:
            :mod:`gaussmix.inference.em.covariance_models`). A constrained model's
            ``params`` use its storage layout's site and shape (e.g. EEV's
            ``covariances`` (K, D, D), EII's ``variances`` (K,)).
        priors: ``None`` maximum likelihood (equals scikit-learn's GaussianMixture);
            ``"default"`` MAP under the program's default conjugate prior; a dict
            ``{site: numpyro distribution}`` as the program's ``priors``: MAP under it
            (closed form when conjugate, generalized EM otherwise).
        sample_weight: (N,) or (B, N) non-negative weights multiplying each point's
            log-likelihood.
        max_iter: EM iterations at most (0 returns the initialization).
        tol: convergence threshold on the change of the lower bound.
        reg_covar: added to the diagonal of every covariance the M-step returns.
        n_init: restarts (one after another inside the compiled program; restart 0 is
            the ``n_init=1`` fit); the one with the largest lower bound is kept.
        init_params: "kmeans", "k-means++", "random", "random_from_data" or "hc"
            (mclust's start, :func:`gaussmix.inference.em.hierarchical.start_labels` of
            each dataset, computed on the host; its subset above 2000 rows is drawn from
            ``seed``; with ``n_init`` > 1 the other restarts start from k-means).
        weights_init: (K,) or (B, K). means_init: (K, D) or (B, K, D).
        precisions_init: precisions in scikit-learn's shapes (a constrained model's:
            its storage layout's), optionally with (B,). A constrained model's start
            need not obey its constraint: the first M-step imposes it.
        seed: int or JAX key for the initialization.
        start_lower_bound: lower bound of the starting point (warm start), so that the
            first iteration can already converge.
        block_rows: rows per block of XLA's E-step (the compiled kernel of a
            full-covariance fit on a CPU picks its own cache-sized blocks within each).
            Default: blocks whose features and (n, K) temporaries take at most about 4 MiB
            on a CPU (256 MiB on an accelerator), so that each block stays in the cache
            from the E-step product to the M-step product; its features are recomputed
            every iteration, and memory does not grow with N. Data of at most two such
            blocks, and a batch of datasets of at most 1 GiB in all, is one block per
            dataset, its features computed once per fit (except through the kernel).
        options: a prebuilt :class:`gaussmix.inference.em.options.EMOptions`
            (:func:`gaussmix.inference.em.options.check_options`), validated once by the
            caller; it replaces every option keyword above (all but ``x``,
            ``sample_weight`` and ``nan_policy``).
        nan_policy: what NaN entries of ``x`` mean: "raise" refuses them; "marginalize"
            treats them as missing at random and maximizes the likelihood of the observed
            entries (:mod:`gaussmix.inference.em.missing`; the initialization sees each
            NaN replaced by its column's mean, MAP's default prior is scaled from that
            data); "omit" drops the rows holding any (not for a batch). Data without NaN
            runs the same program under every policy. Infinity, and rows or columns
            without an observed entry, are errors under every policy.
        measurement_covariances: None (no errors), or the covariances :math:`S_n` of
            each row's Gaussian measurement error, (N, D, D) (symmetric positive
            semi-definite) or (N, D) (variances), with (B,) first for a batch: extreme
            deconvolution (:mod:`gaussmix.inference.em.deconvolution`): the fitted
            parameters describe the error-free distribution, the lower bound is the
            observed-data log-likelihood under :math:`\\Sigma_k + S_n`. Combines with
            NaN under ``nan_policy="marginalize"`` (entries of :math:`S_n` in a missing
            row or column are ignored) and with ``sample_weight``; the initialization
            sees the observed rows. Cast to ``x``'s dtype.
        background_log_density: None (no background), or :math:`-\\log V`: a uniform
            background component of density :math:`1/V` whose weight is fitted
            (mclust's noise; :mod:`gaussmix.inference.em.background`). ``params
            ["weights"]`` are then the Gaussian components', summing to one minus
            ``EMResult.background_weight``. With measurement errors the background's
            column is unchanged (uniform over the observed space); with NaN only given
            ``background_log_sides``; not with non-conjugate priors
            (NotImplementedError).
        background_weight_init: the background weight of the start (the Gaussian start's
            weights scaled by one minus it; ``weights_init`` stays normalized), default
            :data:`gaussmix.inference.em.background.DEFAULT_START_WEIGHT`.
        background_log_sides: None, or the (D,) log side lengths of the box whose volume
            is V (summing to :math:`\\log V`): needed with NaN under "marginalize", where
            a row observing the coordinates O has the background density
            :math:`\\pi_0 \\prod_{d \\in O} 1/\\mathrm{side}_d` (the uniform on the box,
            marginalized); unused without NaN.

    Returns:
        :class:`EMResult`.

    Raises:
        ValueError: bad input, or a component whose covariance stops being positive
            definite (name and remedy in the message).

    Example:
        >>> import numpy as np
        >>> x = np.concatenate([np.random.default_rng(0).normal(m, 1, (100, 2)) for m in (-5, 5)])
        >>> result = fit_em(x, n_components=2, covariance_type="diag")
        >>> sorted(np.round(np.asarray(result.params["means"][:, 0])).tolist())
        [-5.0, 5.0]
    """
    if options is None:
        options = check_options(
            n_components=n_components,
            covariance_type=covariance_type,
            priors=priors,
            max_iter=max_iter,
            tol=tol,
            reg_covar=reg_covar,
            n_init=n_init,
            init_params=init_params,
            weights_init=weights_init,
            means_init=means_init,
            precisions_init=precisions_init,
            seed=seed,
            start_lower_bound=start_lower_bound,
            block_rows=block_rows,
        )
    n_components, covariance_type = options.n_components, options.covariance_type
    if np.ndim(x) not in (2, 3):
        raise ValueError(
            f"x must have shape (N, D) or (B, N, D), got shape {np.shape(x)}; reshape 1-D "
            "data with x.reshape(-1, 1)."
        )
    x = missing.as_data_array(x, "x", nan_policy)
    batched = x.ndim == 3
    has_nan = bool(np.isnan(x).any())
    if has_nan and nan_policy == "omit":
        if batched:
            raise ValueError(
                "nan_policy='omit' drops rows, so the datasets of a batch would differ in "
                "length; fit them one by one, or pass nan_policy='marginalize'."
            )
        keep = ~np.isnan(x).any(axis=1)
        if measurement_covariances is not None and np.shape(measurement_covariances)[:1] == (
            x.shape[0],
        ):
            measurement_covariances = np.asarray(measurement_covariances)[keep]
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight)
            if sample_weight.shape == (x.shape[0],):
                sample_weight = sample_weight[keep]
        x, has_nan = x[keep], False
    n_datasets = x.shape[0] if batched else 1
    n_samples, n_features = x.shape[-2:]
    if n_features < 1:
        raise ValueError("x has no features (D = 0).")
    layout = covariance_layout(covariance_type)
    if options.priors:  # their shapes, now that D is known
        check_program_priors(
            options.priors, layout, n_components=n_components, n_features=n_features
        )
    if n_samples < n_components:
        raise ValueError(
            "Expected n_samples >= n_components "
            f"but got n_components = {n_components}, n_samples = {n_samples}"
        )
    dtype = x.dtype
    expected = (n_datasets, n_samples) if batched else (n_samples,)
    if sample_weight is None:
        weight = np.ones(expected, dtype)
    else:
        weight = as_float_array(sample_weight, "sample_weight", dtype)
        if weight.shape != expected and not (batched and weight.shape == (n_samples,)):
            raise ValueError(
                f"sample_weight has shape {weight.shape}; expected {expected}, one weight per point."
            )
        if np.any(weight < 0):
            raise ValueError("sample_weight must be non-negative.")
        weight = np.broadcast_to(weight, expected)
        if np.any(weight.sum(axis=-1) <= 0):
            raise ValueError(
                "sample_weight sums to zero; give at least one point a positive weight."
            )
    patterns = measurements = None
    if measurement_covariances is not None:
        measurements = deconvolution.Measurements(
            (~np.isnan(x)).astype(dtype),
            deconvolution.as_measurement_covariances(measurement_covariances, x),
        )
        if has_nan:
            x = missing.fill_missing(x, weight)
    elif has_nan:
        pattern, observed = missing.find_patterns(x)
        x = missing.fill_missing(x, weight)
        shape = missing.block_shape(
            n_samples, observed.shape[0], n_features, n_components, layout, dtype.itemsize
        )
        datasets = [
            missing.pattern_blocks(*rows, observed, shape)
            for rows in zip(
                x.reshape(-1, n_samples, n_features),
                weight.reshape(-1, n_samples),
                pattern.reshape(-1, n_samples),
                strict=True,
            )
        ]
        patterns = missing.PatternBlocks(
            *(np.stack(parts) if batched else parts[0] for parts in zip(*datasets, strict=True))
        )._replace(observed=observed)
    check_range(x, weight)
    background_arguments = None
    if background_log_density is not None:
        background_arguments = _check_background(
            background_log_density,
            background_weight_init,
            options,
            has_nan,
            measurements,
            dtype,
            background_log_sides,
            n_features,
        )
    inits = check_inits(options, n_features, dtype, n_datasets)
    n_init = options.n_init
    if all(value is not None for value in inits):
        n_init = 1  # every restart would start from the same point
    # Blocks of rows stream through the cache, their features recomputed every iteration
    # (cheaper than reading a stored design matrix back from memory); data of one block
    # (and a batch of at most 1 GiB) computes its features once per fit, except where the
    # compiled kernel serves one full-covariance dataset (1.2-1.9x faster on E3-sized data).
    block = block_size(
        n_samples,
        n_features,
        n_components,
        covariance_type,
        dtype.itemsize,
        options.block_rows,
        n_datasets,
    )
    use_kernel = (
        layout == "full" and native.usable(dtype) and patterns is None and measurements is None
    )
    labels = None
    hc_model = hierarchical_model(options.init_params)
    if hc_model is not None and not all(value is not None for value in inits):
        labels = _hc_labels(x, n_components, options.seed, batched, weight, hc_model)
    config = FitConfig(
        step=StepConfig.from_options(options),
        max_iter=options.max_iter,
        n_init=int(n_init),
        # the hc models differ only in the labels, an array argument: one program for all
        init_params="hc" if hc_model is not None else options.init_params,
        block_rows=block,
        batched=batched,
        cache_design=block == n_samples and not (use_kernel and not batched) and patterns is None,
        use_kernel=use_kernel,
    )
    if measurements is not None:
        config = config._replace(
            cache_design=False,
            measurement_block_rows=deconvolution.block_rows_for(
                n_samples, n_features, n_components, dtype.itemsize
            ),
        )
    arguments = _Arguments(
        priors=options.priors,
        tol=np.asarray(options.tol, dtype),
        reg_covar=np.asarray(options.reg_covar, dtype),
        start_lower_bound=np.asarray(options.start_lower_bound, dtype),
    )
    if background_arguments is not None:  # the background's static flag, traced values
        config = config._replace(
            step=config.step._replace(background=True),
            use_kernel=False,
            cache_design=block == n_samples and patterns is None and measurements is None,
        )
        arguments = arguments._replace(background=background_arguments)
    # The optimization level does not depend on n_init: restart 0 must be compiled as
    # the single fit is (see _map_or_call).
    work = n_samples * feature_count(n_features, covariance_type) * n_components
    state, info, lower_bounds, params, collapsed, n_iters = _fit_program_for(work * n_datasets)(
        x,
        weight,
        inits,
        labels,
        options.key,
        arguments,
        config=config,
        patterns=patterns,
        measurements=measurements,
    )
    raise_on_failure(
        np.asarray(collapsed).reshape(n_datasets, -1),
        np.asarray(n_iters).reshape(n_datasets, -1),
        np.asarray(state.lower_bound),
        batched,
        covariance_type,
        dtype,
    )
    return EMResult(
        params=params,
        precisions_cholesky=state.parameters.precisions_cholesky,
        lower_bound=state.lower_bound,
        lower_bounds=lower_bounds,
        n_iter=state.n_iter,
        converged=info.converged,
        method=options.method,
        background_weight=(
            None
            if background_arguments is None
            else background.background_weight(params["weights"])
        ),
    )
