"""Online (stochastic) EM, Cappé and Moulines (2009), and incremental EM.

The statistics per unit weight are a running average with a decreasing step size

.. math::

    s_t = (1 - \\rho_t)\\, s_{t-1} + \\rho_t\\, \\hat s(x_{(t)}; \\theta_{t-1}),\\qquad
    \\rho_t = (t + \\tau_0)^{-\\kappa},\\quad \\kappa \\in (0.5, 1],

and :math:`\\theta_t` is the one EM step (:func:`gaussmix.inference.em.core.step`) on
:math:`W_t s_t` (:math:`W_t` the weight seen so far), one pass over the data. The start is
EM on the first chunk. Continuing a fit (:func:`online_em_continue`), the fitted data's
statistics start the average with its weight :math:`W_0` and each chunk enters by its
share, :math:`\\rho_t = w_t / W_t` (incremental EM).
"""

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.typing import ArrayLike

from gaussmix.inference import compilation, native
from gaussmix.inference.em import background as background_module
from gaussmix.inference.em import deconvolution, missing
from gaussmix.inference.em.core import (
    EMContext,
    EMState,
    StepConfig,
    lower_bound,
    make_context,
    step,
)
from gaussmix.inference.em.fit import fit_em
from gaussmix.inference.em.initialization import prior_parameters_of
from gaussmix.inference.em.options import EMOptions, check_options, check_priors
from gaussmix.inference.em.parameters import MixtureParameters, site_values
from gaussmix.inference.em.results import EMResult, parameters_of, raise_on_failure
from gaussmix.inference.em.statistics import SufficientStatistics, sufficient_statistics
from gaussmix.inference.streaming.chunks import ChunkSource, chunk_dtype, pad_rows, prepare_chunk
from gaussmix.models.priors import check_em_covariance_type, covariance_layout

__all__ = [
    "OnlineEMState",
    "check_schedule",
    "fit_em_online",
    "online_em_continue",
    "online_em_result",
    "online_em_start",
    "online_em_step",
    "step_size",
]


class OnlineEMState(NamedTuple):
    """State of online EM.

    Attributes:
        parameters: current :class:`gaussmix.inference.em.MixtureParameters`.
        statistics: running average of the statistics per unit weight (moments about
            ``centre``; ``total_weight`` is 1).
        centre: (D,) weighted mean of the first chunk, the centre of all moments.
        n_updates: () online updates done (chunks after the first).
        total_weight: () weight seen so far, :math:`W_t`.
        lower_bound: () running average of the per-sample log-likelihood (+ log prior /
            :math:`W_t` for MAP) of the parameters that entered each update.
        prior_parameters: the default prior of the first chunk (MAP), else None.
        conjugate_prior: the closed-form MAP prior, else None.
        incremental: () False: step sizes :math:`\\rho_t = (t + \\tau_0)^{-\\kappa}`
            (Cappé and Moulines); True: each chunk's share of all weight seen,
            :math:`\\rho_t = w_t / W_t` (incremental EM, the state continues a fit; see
            :func:`online_em_continue`).
    """

    parameters: MixtureParameters
    statistics: SufficientStatistics
    centre: jax.Array
    n_updates: jax.Array
    total_weight: jax.Array
    lower_bound: jax.Array
    prior_parameters: Any
    conjugate_prior: Any
    incremental: Any = False


def step_size(n_updates: ArrayLike, learning_decay: float, learning_offset: float) -> jax.Array:
    """Step size :math:`\\rho_t = (t + \\tau_0)^{-\\kappa}` of online EM.

    Args:
        n_updates: t >= 1, the index of the update.
        learning_decay: :math:`\\kappa \\in (0.5, 1]` (Robbins-Monro: :math:`\\sum \\rho_t
            = \\infty`, :math:`\\sum \\rho_t^2 < \\infty`).
        learning_offset: :math:`\\tau_0 \\ge 0`; larger values trust early chunks less.

    Example:
        >>> float(step_size(1, 1.0, 0.0))
        1.0
    """
    return (jnp.asarray(n_updates, float) + learning_offset) ** (-learning_decay)


def check_schedule(learning_decay: float, learning_offset: float) -> None:
    """Raise ValueError unless :math:`\\kappa \\in (0.5, 1]` and :math:`\\tau_0 \\ge 0`.

    Example:
        >>> check_schedule(0.7, 10.0)
    """
    if not (0.5 < float(learning_decay) <= 1.0):
        raise ValueError(
            f"learning_decay must be in (0.5, 1] so that the step sizes sum to infinity "
            f"while their squares converge; got {learning_decay!r}."
        )
    if not (np.isfinite(learning_offset) and float(learning_offset) >= 0):
        raise ValueError(f"learning_offset must be a finite number >= 0; got {learning_offset!r}.")


def _normalized(statistics: SufficientStatistics) -> SufficientStatistics:
    return jax.tree.map(lambda leaf: leaf / statistics.total_weight, statistics)


def _chunk_statistics(
    x, weight, parameters, centre, patterns, config, use_kernel, measurements=None, background=None
):
    """A chunk's statistics: expected ones from its
    :class:`gaussmix.inference.em.missing.PatternBlocks` when it has missing entries, or
    of extreme deconvolution with its
    :class:`gaussmix.inference.em.deconvolution.Measurements`; ``background``: a uniform
    background's :class:`gaussmix.inference.em.background.BackgroundArguments` (its
    ``start_weight`` unused), else None."""
    density = sides = None
    if background is not None:
        density, sides = background.log_density, background.log_sides
    if measurements is not None:
        n_rows, n_features = x.shape
        block_rows = deconvolution.block_rows_for(
            n_rows, n_features, parameters.means.shape[0], x.dtype.itemsize
        )
        return deconvolution.block_statistics(
            parameters,
            x,
            weight,
            measurements,
            centre,
            config.covariance_type,
            block_rows,
            density,
            sides,
        )
    if patterns is not None:
        return missing.sufficient_statistics(
            patterns,
            parameters,
            covariance_type=config.covariance_type,
            centre=centre,
            background_log_sides=sides,
        )
    return sufficient_statistics(
        x,
        parameters,
        covariance_type=config.covariance_type,
        centre=centre,
        sample_weight=weight,
        use_kernel=use_kernel,
        background_log_density=density,
    )


def _online_start(
    x,
    weight,
    parameters,
    priors,
    prior_parameters,
    config: StepConfig,
    use_kernel: bool,
    patterns=None,
    measurements=None,
    background=None,
):
    centre = weight @ x / jnp.sum(weight)
    statistics = _chunk_statistics(
        x, weight, parameters, centre, patterns, config, use_kernel, measurements, background
    )
    context = make_context(
        config,
        centre=centre,
        reg_covar=0.0,
        tol=0.0,
        priors=priors,
        prior_parameters=prior_parameters,
        background_log_density=None if background is None else background.log_density,
    )
    bound = lower_bound(statistics, parameters, context, config)
    return OnlineEMState(
        parameters=parameters,
        statistics=_normalized(statistics),
        centre=centre,
        n_updates=jnp.zeros((), jnp.int32),
        total_weight=statistics.total_weight,
        lower_bound=bound,
        prior_parameters=prior_parameters,
        conjugate_prior=context.conjugate_prior,
    )


def _online_step(
    state: OnlineEMState,
    x,
    weight,
    priors,
    reg_covar,
    learning_decay,
    learning_offset,
    config,
    use_kernel,
    patterns=None,
    measurements=None,
    background=None,
):
    """One online EM update (pure): returns the new state and the collapsed component.
    With a background the Gaussian counts' running average carries its weight
    (:math:`N_0 = W - \\sum_k N_k`), blended by the same step size."""
    n_updates = state.n_updates + 1
    chunk = _chunk_statistics(
        x,
        weight,
        state.parameters,
        state.centre,
        patterns,
        config,
        use_kernel,
        measurements,
        background,
    )
    share = chunk.total_weight / (state.total_weight + chunk.total_weight)
    rho = jnp.where(
        jnp.asarray(state.incremental),
        share,
        step_size(n_updates, learning_decay, learning_offset).astype(x.dtype),
    ).astype(x.dtype)
    # a chunk of zero weight carries nothing (and its statistics per unit weight are 0/0)
    present = chunk.total_weight > 0
    rho = jnp.where(present, rho, 0.0).astype(x.dtype)
    normalized = jax.tree.map(
        lambda leaf: jnp.where(present, leaf / jnp.where(present, chunk.total_weight, 1), 0),
        chunk,
    )
    running = jax.tree.map(
        lambda old, new: (1 - rho) * old + rho * new, state.statistics, normalized
    )
    total_weight = state.total_weight + chunk.total_weight
    scaled = jax.tree.map(lambda leaf: leaf * total_weight, running)
    context = EMContext(
        centre=state.centre,
        reg_covar=reg_covar,
        tol=jnp.zeros((), x.dtype),
        priors=priors,
        prior_parameters=state.prior_parameters,
        conjugate_prior=state.conjugate_prior,
        background_log_density=None if background is None else background.log_density,
    )
    start = EMState(state.parameters, state.lower_bound, state.n_updates)
    new_state, info = step(start, scaled, context, config)
    state = state._replace(
        parameters=new_state.parameters,
        statistics=running,
        n_updates=n_updates,
        total_weight=total_weight,
        lower_bound=info.lower_bound,
    )
    return state, info.collapsed_component


# Whether the compiled E-step kernel is used is decided on the host (static): part of
# each program's cache key, and its handler registered before a loaded program runs.
_online_start_jit = compilation.jit(_online_start, static_argnames=("config", "use_kernel"))
_online_step_jit = compilation.jit(_online_step, static_argnames=("config", "use_kernel"))


def _padded_chunk(x, w, dtype, n_features, index, nan_policy="raise"):
    """A validated chunk padded to a power of two of rows (few compiled shapes), NaN
    entries replaced by their columns' weighted means (``nan_policy="marginalize"``) or
    rows with NaN dropped ("omit")."""
    x, w = prepare_chunk(
        x, w, dtype, n_features, f"chunk {index}", validate=True, allow_nan=nan_policy != "raise"
    )
    if nan_policy == "omit":
        keep = ~np.isnan(x).any(axis=1)
        x, w = x[keep], None if w is None else w[keep]
    n = x.shape[0]
    rows = 1 << max(0, n - 1).bit_length()
    weight = np.ones(n, dtype) if w is None else w
    holes = np.isnan(x)
    if holes.any():
        x = missing.fill_missing(x, weight)
    centre = (weight @ x / weight.sum()) if weight.sum() > 0 else np.zeros(x.shape[1], dtype)
    return (*pad_rows(x, weight, rows, centre.astype(dtype)), holes)


def _chunk_patterns(x, weight, holes, centre, n_components, covariance_type):
    """The :class:`gaussmix.inference.em.missing.PatternBlocks` of a padded chunk whose
    entries ``holes`` (of its unpadded rows) are missing, or None."""
    if holes is None or not holes.any():
        return None
    holes = np.concatenate([holes, np.zeros((x.shape[0] - holes.shape[0], x.shape[1]), bool)])
    return missing.prepare_chunk(
        np.where(holes, np.nan, x), weight, centre, n_components, covariance_type
    )


def online_em_start(
    x: ArrayLike,
    parameters: MixtureParameters,
    *,
    covariance_type: str = "full",
    priors: str | Mapping[str, dist.Distribution] | None = None,
    sample_weight: ArrayLike | None = None,
    incremental: bool = False,
    nan_policy: str = "raise",
    measurement_covariances: ArrayLike | None = None,
    background_log_density: float | None = None,
    background_log_sides: ArrayLike | None = None,
) -> OnlineEMState:
    """Online EM state that starts from ``parameters`` with the statistics of chunk ``x``.

    Args:
        x: (n, D) the first chunk (its weighted mean becomes the centre of the moments;
            for MAP, the default prior is scaled from it).
        parameters: starting :class:`gaussmix.inference.em.MixtureParameters`, e.g. EM
            on ``x``.
        covariance_type, priors: as in :func:`gaussmix.inference.em.fit_em`.
        sample_weight: (n,) non-negative weights.
        incremental: False: later steps use :func:`step_size` (online EM from a first
            chunk); True: ``x`` is all the data ``parameters`` were fitted to, and each
            later step weighs its chunk by its share of all weight seen (incremental
            EM, as :func:`online_em_continue`, with the statistics of ``x`` under
            ``parameters``: any priors).
        nan_policy: "raise", "marginalize" (NaN entries missing: expected statistics,
            the centre each column's weighted mean of its observed entries) or "omit"
            (rows with NaN dropped), as in :func:`gaussmix.inference.em.fit_em`.
        measurement_covariances: (n, D, D) or (n, D) measurement covariances of the
            rows of ``x`` (extreme deconvolution, as in ``fit_em``), else None.
        background_log_density, background_log_sides: a uniform background,
            :math:`-\\log V` and the (D,) log side lengths of its box (needed with NaN),
            as in ``fit_em``; ``parameters``' weights then sum to one minus its weight.
            Pass the same to every :func:`online_em_step`.

    Example:
        >>> import numpy as np
        >>> from gaussmix.inference.em import MixtureParameters, fit_em
        >>> x = np.random.default_rng(0).normal(size=(200, 2))
        >>> r = fit_em(x, n_components=1, covariance_type="diag")
        >>> p = MixtureParameters(r.params["weights"], r.params["means"],
        ...     r.params["variances"], r.precisions_cholesky)
        >>> int(online_em_start(x, p, covariance_type="diag").n_updates)
        0
    """
    options = check_options(
        n_components=int(np.shape(parameters.weights)[-1]),
        covariance_type=covariance_type,
        priors=priors,
        max_iter=0,
        tol=0.0,
        reg_covar=0.0,
    )
    dtype = chunk_dtype(np.asarray(x))
    x, w = prepare_chunk(
        x, sample_weight, dtype, None, "x", validate=True, allow_nan=nan_policy != "raise"
    )
    holes = np.isnan(x)
    noise = _noise(measurement_covariances, x, "measurement_covariances")
    if nan_policy == "omit":
        keep = ~holes.any(axis=1)
        x, w, holes = x[keep], None if w is None else w[keep], holes[keep]
        noise = None if noise is None else noise[keep]
    weight = np.ones(x.shape[0], dtype) if w is None else w
    if weight.sum() <= 0:
        raise ValueError("sample_weight sums to zero; give at least one point a positive weight.")
    if holes.any():
        x = missing.fill_missing(x, weight)
    prior_parameters = None
    if options.method != "maximum_likelihood":
        prior_parameters = prior_parameters_of(x, covariance_type)
    config = StepConfig.from_options(options)
    parameters = MixtureParameters(*(jnp.asarray(a, dtype) for a in parameters))
    centre = weight.astype(np.float64) @ x / weight.sum(dtype=np.float64)
    state = _online_start_jit(
        jnp.asarray(x),
        jnp.asarray(weight),
        parameters,
        options.priors,
        prior_parameters,
        config=_with_background(config, background_log_density),
        use_kernel=_use_kernel(covariance_type, dtype, noise, background_log_density),
        patterns=None
        if noise is not None
        else _chunk_patterns(x, weight, holes, centre, options.n_components, covariance_type),
        measurements=_measurements(noise, holes, x.shape[0]),
        background=_background(
            background_log_density, background_log_sides, dtype, holes, x.shape[1]
        ),
    )
    return state._replace(incremental=jnp.asarray(bool(incremental)))


def _noise(value, x, name: str):
    """Validated measurement covariances of the rows of chunk ``x`` (NaN = missing), or
    None; their number of rows checked first."""
    if value is None:
        return None
    if np.ndim(value) not in (2, 3) or np.shape(value)[0] != x.shape[0]:
        raise ValueError(
            f"{name} has shape {np.shape(value)}, but the chunk has {x.shape[0]} row(s); "
            "give one (D, D) covariance or (D,) variances per row, in the order of its rows."
        )
    return deconvolution.as_measurement_covariances(value, x, name)


def _measurements(noise, holes, rows: int):
    """:class:`gaussmix.inference.em.deconvolution.Measurements` of a chunk padded to
    ``rows`` rows (padding rows observed, without error), or None."""
    if noise is None:
        return None
    n, n_features = holes.shape
    padded = np.zeros((rows, *noise.shape[1:]), noise.dtype)
    padded[:n] = noise
    observed = np.ones((rows, n_features), noise.dtype)
    observed[:n] = ~holes
    return deconvolution.Measurements(jnp.asarray(observed), jnp.asarray(padded))


def _background(log_density, log_sides, dtype, holes, n_features: int):
    """The :class:`gaussmix.inference.em.background.BackgroundArguments` of a chunk, or
    None; NaN entries need the box's log side lengths."""
    if log_density is None:
        return None
    if holes.any() and log_sides is None:
        raise ValueError(
            "a uniform background on rows with missing entries needs background_log_sides "
            "(the box's (D,) log side lengths; a volume alone has no density over a row's "
            "observed coordinates); pass them, or drop the rows with NaN."
        )
    sides = None
    if log_sides is not None:
        sides = np.asarray(log_sides, dtype)
        if sides.shape != (n_features,):
            raise ValueError(
                f"background_log_sides has shape {sides.shape}; expected ({n_features},)."
            )
        sides = jnp.asarray(sides)
    density = jnp.asarray(log_density, dtype)
    return background_module.BackgroundArguments(density, jnp.zeros((), dtype), sides)


def _with_background(config: StepConfig, log_density) -> StepConfig:
    return config if log_density is None else config._replace(background=True)


def _use_kernel(covariance_type, dtype, noise, log_density) -> bool:
    """Whether the compiled E-step kernel serves the chunk (plain rows, no background)."""
    return (
        covariance_layout(covariance_type) == "full"
        and native.usable(dtype)
        and noise is None
        and log_density is None
    )


def _fixed_point_statistics(parameters, total_weight, centre, reg_covar, covariance_type):
    """Statistics per unit weight whose maximum-likelihood M-step is ``parameters`` (for
    a constrained model too: its covariances are already the maximizer)."""
    covariance_type = covariance_layout(covariance_type)
    weights, means, covariances, _ = parameters
    n_features = means.shape[-1]
    offset = means - centre  # (K, D)
    identity = jnp.eye(n_features, dtype=means.dtype)
    if covariance_type == "full":
        second = weights[:, None, None] * (
            covariances - reg_covar * identity + offset[:, :, None] * offset[:, None, :]
        )
    elif covariance_type == "tied":
        second = (
            covariances - reg_covar * identity + jnp.einsum("k,ki,kj->ij", weights, offset, offset)
        )
    elif covariance_type == "diag":
        second = weights[:, None] * (covariances - reg_covar + offset**2)
    else:
        second = weights * (n_features * (covariances - reg_covar) + jnp.sum(offset**2, axis=1))
    return SufficientStatistics(
        counts=weights,
        first=weights[:, None] * offset,
        second=second,
        log_likelihood=jnp.zeros((), means.dtype),
        total_weight=jnp.ones((), means.dtype),
    )


def online_em_continue(
    parameters: MixtureParameters,
    *,
    total_weight: float,
    covariance_type: str = "full",
    reg_covar: float = 1e-6,
    lower_bound: float = 0.0,
) -> OnlineEMState:
    """Online EM state that continues a maximum-likelihood fit (incremental EM).

    The fitted data, of total weight :math:`W_0`, is carried by the statistics whose
    M-step gives ``parameters`` (no pass over the data): for component :math:`k` with
    weight :math:`\\pi_k`, mean :math:`\\mu_k` and covariance :math:`\\Sigma_k`, about the
    centre :math:`c = \\sum_k \\pi_k \\mu_k`,

    .. math::

        s_0 = \\Big(\\pi_k,\\ \\pi_k (\\mu_k - c),\\
              \\pi_k \\big(\\Sigma_k - \\lambda I + (\\mu_k - c)(\\mu_k - c)^T\\big)\\Big)_k

    per unit weight (:math:`\\lambda` = ``reg_covar``; the other covariance types
    likewise). These are the statistics of the fit's last E-step, equal to those of the
    data under ``parameters`` at a fixed point of EM (to within the fit's ``tol``).
    Each :func:`online_em_step` then adds a chunk of weight :math:`w_t` by its share of
    all weight seen,

    .. math::

        s_t = \\frac{W_{t-1} s_{t-1} + w_t\\, \\hat s(x_{(t)}; \\theta_{t-1})}{W_t},\\quad
        W_t = W_{t-1} + w_t,\\quad \\theta_t = \\operatorname{M-step}(W_t s_t),

    i.e. :math:`\\rho_t = w_t / W_t`: the summed statistics grow by the chunk's, so a
    chunk moves the model by its share of the data, never by a fresh start's step size.

    Args:
        parameters: the fitted :class:`gaussmix.inference.em.MixtureParameters`
            (maximum likelihood, ``reg_covar`` on the diagonal).
        total_weight: :math:`W_0 > 0`, the total sample weight of the fitted data.
        covariance_type: as in :func:`gaussmix.inference.em.fit_em`.
        reg_covar: the fit's ``reg_covar``.
        lower_bound: the fit's per-sample lower bound (starts the running average).

    Example:
        >>> import numpy as np
        >>> from gaussmix.inference.em import MixtureParameters, fit_em
        >>> x = np.random.default_rng(0).normal(size=(200, 1))
        >>> r = fit_em(x, n_components=1, covariance_type="diag")
        >>> p = MixtureParameters(r.params["weights"], r.params["means"],
        ...     r.params["variances"], r.precisions_cholesky)
        >>> state = online_em_continue(p, total_weight=200.0, covariance_type="diag")
        >>> state = online_em_step(state, x[:1], covariance_type="diag")
        >>> float(state.total_weight)
        201.0
    """
    check_em_covariance_type(covariance_type)
    if not (np.isfinite(total_weight) and total_weight > 0):
        raise ValueError(f"total_weight must be a finite number > 0; got {total_weight!r}.")
    parameters = MixtureParameters(*(jnp.asarray(a) for a in parameters))
    dtype = parameters.means.dtype
    centre = parameters.weights @ parameters.means / jnp.sum(parameters.weights)
    statistics = _fixed_point_statistics(
        parameters, total_weight, centre, jnp.asarray(reg_covar, dtype), covariance_type
    )._replace(log_likelihood=jnp.asarray(lower_bound, dtype))
    return OnlineEMState(
        parameters=parameters,
        statistics=statistics,
        centre=centre,
        n_updates=jnp.zeros((), jnp.int32),
        total_weight=jnp.asarray(total_weight, dtype),
        lower_bound=jnp.asarray(lower_bound, dtype),
        prior_parameters=None,
        conjugate_prior=None,
        incremental=jnp.asarray(True),
    )


def online_em_step(
    state: OnlineEMState,
    x: ArrayLike,
    *,
    covariance_type: str = "full",
    priors: str | Mapping[str, dist.Distribution] | None = None,
    reg_covar: float = 1e-6,
    learning_decay: float = 0.7,
    learning_offset: float = 10.0,
    sample_weight: ArrayLike | None = None,
    nan_policy: str = "raise",
    measurement_covariances: ArrayLike | None = None,
    background_log_density: float | None = None,
    background_log_sides: ArrayLike | None = None,
) -> OnlineEMState:
    """One online EM update with chunk ``x`` (validated, then one jitted pure step).

    .. math::

        s_t = (1 - \\rho_t) s_{t-1} + \\rho_t \\hat s(x;\\theta_{t-1}),\\quad
        \\theta_t = \\operatorname{M-step}(W_t s_t),\\quad \\rho_t = (t + \\tau_0)^{-\\kappa}.

    Args:
        state: from :func:`online_em_start` or a previous step.
        x: (n, D) the next chunk; chunks are padded to a power of two of rows with zero
            weights, so few shapes are compiled.
        covariance_type, priors, reg_covar: as in :func:`gaussmix.inference.em.fit_em`
            (the same as for the start).
        learning_decay: :math:`\\kappa \\in (0.5, 1]`.
        learning_offset: :math:`\\tau_0 \\ge 0`.
        sample_weight: (n,) non-negative weights.
        nan_policy: as in :func:`online_em_start`.
        measurement_covariances, background_log_density, background_log_sides: as in
            :func:`online_em_start` (the background's the same as there).

    Raises:
        ValueError: bad input or a component whose covariance stops being positive
            definite.

    Example:
        >>> import numpy as np
        >>> from gaussmix.inference.em import MixtureParameters, fit_em
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(200, 2))
        >>> r = fit_em(x, n_components=1, covariance_type="diag")
        >>> p = MixtureParameters(r.params["weights"], r.params["means"],
        ...     r.params["variances"], r.precisions_cholesky)
        >>> state = online_em_start(x, p, covariance_type="diag")
        >>> state = online_em_step(state, rng.normal(size=(200, 2)), covariance_type="diag")
        >>> int(state.n_updates)
        1
    """
    check_schedule(learning_decay, learning_offset)
    n_components, n_features = state.parameters.means.shape
    options = check_options(
        n_components=n_components,
        covariance_type=covariance_type,
        priors=priors,
        max_iter=0,
        tol=0.0,
        reg_covar=reg_covar,
    )
    dtype = np.dtype(state.centre.dtype)
    noise = None
    if measurement_covariances is not None:
        raw, _ = prepare_chunk(
            x, None, dtype, n_features, f"chunk {state.n_updates}", validate=True, allow_nan=True
        )
        noise = _noise(
            measurement_covariances, raw, f"measurement_covariances of chunk {int(state.n_updates)}"
        )
        if nan_policy == "omit":
            noise = noise[~np.isnan(raw).any(axis=1)]
    x, weight, holes = _padded_chunk(
        x, sample_weight, dtype, n_features, state.n_updates, nan_policy
    )
    config = _with_background(StepConfig.from_options(options), background_log_density)
    new_state, collapsed = _online_step_jit(
        state,
        jnp.asarray(x),
        jnp.asarray(weight),
        options.priors,
        jnp.asarray(reg_covar, dtype),
        float(learning_decay),
        float(learning_offset),
        config=config,
        use_kernel=_use_kernel(covariance_type, dtype, noise, background_log_density),
        patterns=None
        if noise is not None
        else _chunk_patterns(
            x, weight, holes, np.asarray(state.centre), n_components, covariance_type
        ),
        measurements=_measurements(noise, holes, x.shape[0]),
        background=_background(
            background_log_density, background_log_sides, dtype, holes, n_features
        ),
    )
    raise_on_failure(
        np.asarray(collapsed).reshape(1, 1),
        np.asarray(new_state.n_updates).reshape(1, 1),
        np.asarray(new_state.lower_bound).reshape(1),
        False,
        covariance_type,
        dtype,
    )
    return new_state


def fit_em_online(
    data: Any,
    *,
    n_components: int | None = None,
    covariance_type: str = "full",
    priors: str | Mapping[str, dist.Distribution] | None = None,
    sample_weight: Any = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    n_init: int = 1,
    init_params: str = "kmeans",
    weights_init: ArrayLike | None = None,
    means_init: ArrayLike | None = None,
    precisions_init: ArrayLike | None = None,
    seed: int | jax.Array = 0,
    learning_decay: float = 0.7,
    learning_offset: float = 10.0,
    chunk_rows: int | None = None,
    options: EMOptions | None = None,
    measurement_covariances: Any = None,
) -> EMResult:
    """Online (stochastic) EM: one pass over the chunks, any size of data.

    EM on the first chunk (:func:`gaussmix.inference.em.fit_em` with ``max_iter``,
    ``n_init`` and the initialization options) gives the start; each further chunk is one
    :func:`online_em_step`. A generator is fine: the data is read once.

    Args:
        data: as in :func:`fit_em_chunked` (a one-shot iterator too).
        learning_decay: :math:`\\kappa \\in (0.5, 1]` of :func:`step_size`.
        learning_offset: :math:`\\tau_0 \\ge 0` of :func:`step_size`.
        options: a prebuilt :class:`gaussmix.inference.em.options.EMOptions`; it replaces
            the option keywords of :func:`gaussmix.inference.em.fit_em`.
        measurement_covariances: as in :func:`fit_em_chunked` (array data: read
            alongside; chunks of an iterable carry theirs as ``(x, w, s)``, all or none).
        Others: as in :func:`gaussmix.inference.streaming.fit_em_chunked`.

    Returns:
        :class:`gaussmix.inference.em.EMResult` with ``lower_bound`` the running average
        of :class:`OnlineEMState`, ``lower_bounds`` its value after each update (the EM
        fit of the first chunk when there is no further chunk), ``n_iter`` the number of
        updates and ``converged`` whether the last update changed the running lower bound
        by less than ``tol``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> chunks = (rng.normal(3.0, 1.0, (1000, 1)) for _ in range(20))
        >>> result = fit_em_online(chunks, n_components=1)
        >>> round(float(result.params["means"][0, 0]), 1)
        3.0
    """
    check_schedule(learning_decay, learning_offset)
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
        )
    covariance_type = options.covariance_type
    priors = _priors_keyword(options)
    source = ChunkSource(
        data,
        sample_weight=sample_weight,
        chunk_rows=chunk_rows,
        measurement_covariances=measurement_covariances,
    )
    state = None
    bounds = []
    first_result = None
    with_errors = None
    for index, (x, w, s) in enumerate(source.with_errors()):
        if with_errors is None:
            with_errors = s is not None
        elif with_errors != (s is not None):
            raise ValueError(
                f"chunk {index} {'carries' if s is not None else 'does not carry'} "
                "measurement covariances but the first chunk "
                f"{'does' if with_errors else 'does not'}; give every chunk as (x, w, s), "
                "or none."
            )
        if np.shape(x)[0] == 0:
            continue
        if s is not None:  # checked here, where the chunk's index is known
            rows = np.asarray(x)
            rows = rows.astype(chunk_dtype(rows), copy=False)
            s = _noise(s, rows, f"measurement_covariances of chunk {index}")
        if state is None:
            dtype = chunk_dtype(np.asarray(x))
            x, w = prepare_chunk(x, w, dtype, None, f"chunk {index}", validate=True)
            first_result = fit_em(x, sample_weight=w, options=options, measurement_covariances=s)
            state = online_em_start(
                x,
                parameters_of(first_result, covariance_type),
                covariance_type=covariance_type,
                priors=priors,
                sample_weight=w,
                measurement_covariances=s,
            )
            continue
        state = online_em_step(
            state,
            x,
            covariance_type=covariance_type,
            priors=priors,
            reg_covar=options.reg_covar,
            learning_decay=learning_decay,
            learning_offset=learning_offset,
            sample_weight=w,
            measurement_covariances=s,
        )
        bounds.append(float(state.lower_bound))
    if state is None:
        raise ValueError("data has no rows; pass at least one non-empty chunk.")
    if not bounds:
        return first_result
    return online_em_result(
        state, bounds, covariance_type=covariance_type, priors=priors, tol=options.tol
    )


def online_em_result(
    state: OnlineEMState,
    lower_bounds: Sequence[float],
    *,
    covariance_type: str = "full",
    priors: str | Mapping[str, dist.Distribution] | None = None,
    tol: float = 1e-3,
) -> EMResult:
    """The :class:`gaussmix.inference.em.EMResult` of online EM after some updates.

    Args:
        state: the state after the last :func:`online_em_step`.
        lower_bounds: ``state.lower_bound`` after each update so far (at least one).
        covariance_type, priors: as given to :func:`online_em_start`.
        tol: ``converged`` is whether the last update changed the running lower bound
            by less than ``tol``.

    Returns:
        An ``EMResult`` with the state's parameters, ``lower_bounds`` as given, ``n_iter``
        the number of updates and ``method`` the M-step of ``priors``.

    Example:
        >>> import numpy as np
        >>> from gaussmix.inference.em import MixtureParameters, fit_em
        >>> rng = np.random.default_rng(0)
        >>> r = fit_em(rng.normal(size=(200, 1)), n_components=1, covariance_type="diag")
        >>> p = MixtureParameters(r.params["weights"], r.params["means"],
        ...     r.params["variances"], r.precisions_cholesky)
        >>> state = online_em_start(rng.normal(size=(200, 1)), p, covariance_type="diag")
        >>> state = online_em_step(state, rng.normal(size=(200, 1)), covariance_type="diag")
        >>> result = online_em_result(state, [float(state.lower_bound)], covariance_type="diag")
        >>> int(result.n_iter), bool(result.converged)
        (1, False)
    """
    if len(lower_bounds) == 0:
        raise ValueError("lower_bounds is empty; online_em_result needs at least one update.")
    method, priors = check_priors(priors, covariance_type)
    dtype = np.dtype(state.centre.dtype)
    converged = len(lower_bounds) > 1 and abs(lower_bounds[-1] - lower_bounds[-2]) < tol
    return EMResult(
        params=site_values(state.parameters, covariance_type, with_scales="scales" in priors),
        precisions_cholesky=state.parameters.precisions_cholesky,
        lower_bound=state.lower_bound,
        lower_bounds=jnp.asarray(lower_bounds, dtype),
        n_iter=jnp.asarray(len(lower_bounds), jnp.int32),
        converged=jnp.asarray(converged),
        method=method,
    )


def _priors_keyword(options: EMOptions):
    """The ``priors`` keyword that validated ``options`` came from (None, 'default' or the
    checked dict)."""
    if options.method == "maximum_likelihood":
        return None
    return options.priors or "default"
