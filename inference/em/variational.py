"""Variational Bayesian Gaussian mixtures: scikit-learn's ``BayesianGaussianMixture`` updates.

Mean-field variational inference (Bishop, *Pattern Recognition and Machine Learning*,
10.2) with a Dirichlet distribution or a truncated Dirichlet process (stick-breaking) on
the weights and a Normal-Wishart on each component's mean and precision, written on the
EM core's statistics seam: the E-step is the Gaussian E-step
(:func:`gaussmix.inference.em.statistics.block_statistics`) under per-component
log weights

.. math::

    c_k = \\mathbb{E}[\\log \\pi_k] + \\tfrac12 \\mathbb{E}[\\log |\\Lambda_k|]
      - \\tfrac{D}{2} \\log \\nu_k - \\tfrac{D}{2 \\beta_k},\\qquad
    \\mathbb{E}[\\log |\\Lambda_k|] = D \\log 2 + \\log |W_k|
      + \\sum_{d=0}^{D-1} \\psi\\big(\\tfrac{\\nu_k - d}{2}\\big),

(the Gaussian being :math:`\\mathcal{N}(x \\mid m_k, (\\nu_k W_k)^{-1})`, whose
:math:`\\tfrac12 \\log |\\nu_k W_k|` the :math:`-\\tfrac D2 \\log \\nu_k` takes back),
with :math:`\\mathbb{E}[\\log \\pi_k] = \\psi(\\alpha_k) - \\psi(\\sum_j \\alpha_j)`
for the Dirichlet distribution and
:math:`\\psi(a_k) - \\psi(a_k + b_k) + \\sum_{j<k} [\\psi(b_j) - \\psi(a_j + b_j)]` for
the stick-breaking process. The update takes only the summed statistics
:math:`N_k, \\bar x_k, S_k` (scikit-learn's ``_estimate_gaussian_parameters``, with its
``10 eps`` and ``reg_covar``):

.. math::

    \\alpha_k = \\alpha_0 + N_k \\;\\text{or}\\; (a_k, b_k) = (1 + N_k,
      \\alpha_0 + \\textstyle\\sum_{j>k} N_j),\\quad \\beta_k = \\beta_0 + N_k,\\quad
    m_k = (\\beta_0 m_0 + N_k \\bar x_k) / \\beta_k,\\quad \\nu_k = \\nu_0 + N_k,

    \\nu_k \\Sigma_k = W_0^{-1} + N_k S_k + \\frac{\\beta_0 N_k}{\\beta_k}
      (\\bar x_k - m_0)(\\bar x_k - m_0)^T

(``covariances_`` is :math:`\\Sigma_k = (\\nu_k W_k)^{-1}`, as scikit-learn normalizes
it; tied, diag and spherical as scikit-learn's ``_estimate_wishart_*``). The lower bound
is scikit-learn's ``_compute_lower_bound`` (up to its constant):

.. math::

    \\mathcal{L} = -\\sum_{n,k} w_n r_{nk} \\log r_{nk} - \\sum_k \\log B(W_k, \\nu_k)
      - \\log C(\\alpha) - \\tfrac D2 \\sum_k \\log \\beta_k,

:math:`\\log B` the Wishart normalizer without its :math:`\\pi` term and
:math:`\\log C` the Dirichlet's (or the sum of the Beta functions' logarithms for the
process). The entropy comes from the statistics: :math:`\\sum_{n} w_n r_{nk} \\ell_{nk}`
is :math:`N_k \\gamma_k - \\tfrac12 \\operatorname{tr}(P_k \\sum_n w_n r_{nk} (x_n -
\\mu_k)(x_n - \\mu_k)^T)`, and :math:`\\sum_{n,k} w_n r_{nk} \\log r_{nk} = \\sum_{n,k}
w_n r_{nk} \\ell_{nk} - \\sum_n w_n \\log \\sum_k e^{\\ell_{nk}}`. So every execution mode
that sums statistics (chunks, devices) runs it unchanged.

Covariance types: "full", "tied", "diag", "spherical" and mclust's names of these four
("VVV", "EEE", "VVI", "VII"); the other mclust models have no such closed-form update.

Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> x = np.concatenate([np.zeros((20, 1)), np.full((20, 1), 6.0)])
    >>> x = x + np.random.default_rng(0).normal(size=x.shape)
    >>> config = VariationalConfig(2, "diag", "dirichlet_distribution")
    >>> prior = default_prior(x, config)
    >>> state, converged, history = fit(
    ...     restart_start(0, x, None, prior, 1e-6, config, "kmeans"),
    ...     x, None, prior, 1e-6, 1e-3, config, max_iter=100)
    >>> sorted(np.round(np.asarray(state.parameters.means[:, 0])).astype(int).tolist())
    [0, 6]
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import betaln, digamma, gammaln
from jax.sharding import NamedSharding, PartitionSpec
from jax.typing import ArrayLike

from gaussmix.inference import compilation, native
from gaussmix.inference.em.core import StepConfig
from gaussmix.inference.em.features import DataBlocks, block_size, data_blocks
from gaussmix.inference.em.initialization import initial_statistics, restart_key
from gaussmix.inference.em.maximization import MAXIMUM_LIKELIHOOD_COVARIANCES, scatter_about_means
from gaussmix.inference.em.parameters import (
    LOG_2PI,
    MixtureParameters,
    precisions_cholesky_from_covariances,
)
from gaussmix.inference.em.statistics import (
    SufficientStatistics,
    block_statistics,
    sufficient_statistics,
)
from gaussmix.models.priors import COVARIANCE_ALIASES, COVARIANCE_TYPES

__all__ = [
    "PRIOR_TYPES",
    "VariationalConfig",
    "VariationalInfo",
    "VariationalParameters",
    "VariationalPrior",
    "VariationalState",
    "data_moments",
    "default_prior",
    "estep_parameters",
    "expected_log_weights",
    "fit",
    "fit_sharded",
    "lower_bound",
    "moment_prior",
    "restart_start",
    "step",
    "update",
    "variational_layout",
    "variational_statistics",
    "weights_of",
]

#: The two priors on the weights (scikit-learn's ``weight_concentration_prior_type``).
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


def variational_layout(covariance_type) -> str:
    """The classic layout of a covariance type that has variational updates.

    Example:
        >>> variational_layout("VVI")
        'diag'
    """
    if isinstance(covariance_type, str):
        if covariance_type in COVARIANCE_TYPES:
            return covariance_type
        if covariance_type in COVARIANCE_ALIASES:
            return COVARIANCE_ALIASES[covariance_type]
    names = list(COVARIANCE_TYPES) + list(COVARIANCE_ALIASES)
    raise ValueError(
        f"The 'covariance_type' parameter of BayesianGaussianMixture must be a str among "
        f"{names}. Got {covariance_type!r} instead: the variational updates exist for "
        "these four families only (mclust's other constrained models have no closed-form "
        "Wishart update; fit them with GaussianMixture)."
    )


class VariationalConfig(NamedTuple):
    """The static description of a variational fit (hashable).

    Attributes:
        n_components: K (the truncation level for the Dirichlet process).
        covariance_type: "full", "tied", "diag" or "spherical".
        prior_type: "dirichlet_process" or "dirichlet_distribution".
    """

    n_components: int
    covariance_type: str
    prior_type: str


class VariationalPrior(NamedTuple):
    """Hyperparameters (scikit-learn's ``*_prior_`` attributes), in the data's dtype.

    Attributes:
        weight_concentration: () :math:`\\alpha_0`.
        mean_precision: () :math:`\\beta_0`.
        mean: (D,) :math:`m_0`.
        degrees_of_freedom: () :math:`\\nu_0`.
        covariance: :math:`W_0^{-1}`: full / tied (D, D), diag (D,), spherical ().
    """

    weight_concentration: jax.Array
    mean_precision: jax.Array
    mean: jax.Array
    degrees_of_freedom: jax.Array
    covariance: jax.Array


class VariationalParameters(NamedTuple):
    """The variational posterior (scikit-learn's fitted attributes of the same names).

    Attributes:
        weight_concentration: (K,) Dirichlet :math:`\\alpha`, or (2, K) the Beta pairs
            :math:`(a_k, b_k)` of the sticks.
        mean_precision: (K,) :math:`\\beta`.
        means: (K, D) :math:`m`.
        degrees_of_freedom: (K,) :math:`\\nu` (tied: ()).
        covariances: :math:`(\\nu W)^{-1}` in scikit-learn's layout.
        precisions_cholesky: its precision's factor in scikit-learn's layout.
    """

    weight_concentration: jax.Array
    mean_precision: jax.Array
    means: jax.Array
    degrees_of_freedom: jax.Array
    covariances: jax.Array
    precisions_cholesky: jax.Array


class VariationalState(NamedTuple):
    """What the next step needs: the posterior, the last lower bound, steps done."""

    parameters: VariationalParameters
    lower_bound: jax.Array
    n_iter: jax.Array


class VariationalInfo(NamedTuple):
    """What a step reports: the change of the lower bound and whether it is below tol."""

    delta: jax.Array
    converged: jax.Array


def data_moments(x: ArrayLike, sample_weight: ArrayLike | None = None):
    """(D,) the (weighted) mean and (D, D) covariance of ``x`` (N, D) of the default prior:
    ``ddof=1``, or with ``sample_weight`` (N,) the covariance of frequency weights (divided
    by :math:`\\sum w - 1`): a row of weight 2 counts as the row twice."""
    x = np.asarray(x)
    if sample_weight is None:
        return x.mean(axis=0), np.atleast_2d(np.cov(x.T))
    weight = np.asarray(sample_weight, np.float64)
    mean = weight @ x / weight.sum()
    centred = x - mean
    return mean, (centred * weight[:, None]).T @ centred / (weight.sum() - 1.0)


def moment_prior(
    mean: ArrayLike, covariance: ArrayLike, config: VariationalConfig, dtype, /, **given
) -> VariationalPrior:
    """scikit-learn's default hyperparameters of data of this (D,) mean and (D, D)
    covariance, replaced by ``given`` (any field of :class:`VariationalPrior`, not None):
    what :func:`default_prior` computes, from moments summed over chunks or devices."""
    full = np.atleast_2d(np.asarray(covariance, np.float64))
    variances = np.diagonal(full).copy()
    layout = config.covariance_type
    values = {
        "weight_concentration": 1.0 / config.n_components,
        "mean_precision": 1.0,
        "mean": mean,
        "degrees_of_freedom": float(full.shape[0]),
        "covariance": {"full": full, "tied": full, "diag": variances}.get(layout, variances.mean()),
    }
    values.update({name: value for name, value in given.items() if value is not None})
    return VariationalPrior(**{name: np.asarray(value, dtype) for name, value in values.items()})


def default_prior(
    x: ArrayLike, config: VariationalConfig, sample_weight: ArrayLike | None = None, **given
) -> VariationalPrior:
    """scikit-learn's default hyperparameters of ``x`` (N, D), replaced by ``given``.

    :math:`\\alpha_0 = 1/K`, :math:`\\beta_0 = 1`, :math:`m_0` the data mean,
    :math:`\\nu_0 = D`, :math:`W_0^{-1}` the sample covariance (``ddof=1``; its diagonal
    for diag, the mean of that for spherical). With ``sample_weight`` (N,) the weighted
    mean and the covariance of frequency weights (:func:`data_moments`). ``given``: any
    field of :class:`VariationalPrior`, not None.
    """
    x = np.asarray(x)
    return moment_prior(*data_moments(x, sample_weight), config, x.dtype, **given)


# -- the update (M-step) -----------------------------------------------------------------


def _gaussian_estimates(statistics: SufficientStatistics, reg_covar, layout):
    """scikit-learn's ``_estimate_gaussian_parameters``: counts + 10 eps, centred means,
    covariances with ``reg_covar``."""
    counts = statistics.counts + 10 * jnp.finfo(statistics.first.dtype).eps
    centred_means = statistics.first / counts[:, None]
    covariances = MAXIMUM_LIKELIHOOD_COVARIANCES[layout](
        statistics, centred_means, counts, reg_covar
    )
    return counts, centred_means, covariances


def update(
    statistics: SufficientStatistics,
    prior: VariationalPrior,
    centre: ArrayLike,
    reg_covar: ArrayLike,
    config: VariationalConfig,
) -> VariationalParameters:
    """The variational posterior of the statistics (moments about ``centre``), pure.

    scikit-learn's ``_m_step`` (``_estimate_weights``, ``_estimate_means``,
    ``_estimate_precisions``): the formulas of the module docstring.
    """
    layout, n_components = config.covariance_type, config.n_components
    counts, centred, sample_covariances = _gaussian_estimates(statistics, reg_covar, layout)
    dtype = counts.dtype
    alpha0, beta0, mean0, nu0, covariance0 = (jnp.asarray(a, dtype) for a in prior)
    if config.prior_type == "dirichlet_process":
        tail = jnp.cumsum(counts[::-1])[::-1]  # sum_{j >= k} N_j
        later = jnp.concatenate([tail[1:], jnp.zeros(1, dtype)])
        weight_concentration = jnp.stack([1.0 + counts, alpha0 + later])
    else:
        weight_concentration = alpha0 + counts
    mean_precision = beta0 + counts
    centred_prior = mean0 - centre
    means = (beta0 * centred_prior + counts[:, None] * centred) / mean_precision[:, None]
    diff = centred - centred_prior
    shrink = beta0 / mean_precision
    if layout == "full":
        degrees = nu0 + counts
        outer = diff[:, :, None] * diff[:, None, :]
        covariances = (
            covariance0
            + counts[:, None, None] * sample_covariances
            + (counts * shrink)[:, None, None] * outer
        ) / degrees[:, None, None]
    elif layout == "tied":
        degrees = nu0 + jnp.sum(counts) / n_components
        between = ((counts / mean_precision) * diff.T) @ diff
        covariances = (
            covariance0
            + sample_covariances * jnp.sum(counts) / n_components
            + beta0 / n_components * between
        ) / degrees
    elif layout == "diag":
        degrees = nu0 + counts
        covariances = (
            covariance0 + counts[:, None] * (sample_covariances + shrink[:, None] * diff**2)
        ) / degrees[:, None]
    else:
        degrees = nu0 + counts
        covariances = (
            covariance0 + counts * (sample_covariances + shrink * jnp.mean(diff**2, axis=1))
        ) / degrees
    factor = precisions_cholesky_from_covariances(covariances, layout)
    return VariationalParameters(
        weight_concentration, mean_precision, means + centre, degrees, covariances, factor
    )


# -- the E-step's weights ------------------------------------------------------------------


def expected_log_weights(weight_concentration: jax.Array, prior_type: str) -> jax.Array:
    """(K,) :math:`\\mathbb{E}[\\log \\pi_k]` (scikit-learn's ``_estimate_log_weights``)."""
    if prior_type == "dirichlet_process":
        a, b = weight_concentration[0], weight_concentration[1]
        total = digamma(a + b)
        later = jnp.cumsum(digamma(b) - total)
        return digamma(a) - total + jnp.concatenate([jnp.zeros(1, later.dtype), later[:-1]])
    return digamma(weight_concentration) - digamma(jnp.sum(weight_concentration))


def weights_of(weight_concentration: ArrayLike, prior_type: str) -> jax.Array:
    """(K,) scikit-learn's ``weights_``: the posterior mean weights (stick-breaking
    products for the process), normalized."""
    weight_concentration = jnp.asarray(weight_concentration)
    if prior_type == "dirichlet_process":
        a, b = weight_concentration[0], weight_concentration[1]
        remaining = b / (a + b)
        before = jnp.concatenate([jnp.ones(1, a.dtype), jnp.cumprod(remaining[:-1])])
        weights = a / (a + b) * before
    else:
        weights = weight_concentration
    return weights / jnp.sum(weights)


def _log_lambda(degrees, n_features):
    """:math:`D \\log 2 + \\sum_d \\psi((\\nu - d)/2)`, shaped as ``degrees``."""
    d = jnp.arange(n_features, dtype=degrees.dtype)
    return n_features * jnp.log(2.0) + jnp.sum(
        digamma(0.5 * (jnp.expand_dims(degrees, -1) - d)), axis=-1
    )


def _log_constants(parameters: VariationalParameters, config: VariationalConfig):
    """(K,) the E-step's log weights :math:`c_k`, floored at the log of the dtype's
    smallest normal number (exp of it is exact; such a component's responsibilities
    are 0 to the dtype anyway)."""
    n_features = parameters.means.shape[-1]
    degrees = parameters.degrees_of_freedom
    log_weights = expected_log_weights(parameters.weight_concentration, config.prior_type)
    correction = -0.5 * n_features * jnp.log(degrees) + 0.5 * (
        _log_lambda(degrees, n_features) - n_features / parameters.mean_precision
    )
    floor = jnp.log(jnp.finfo(log_weights.dtype).tiny)
    return jnp.maximum(log_weights + correction, floor)


def estep_parameters(
    parameters: VariationalParameters, config: VariationalConfig
) -> MixtureParameters:
    """The Gaussian mixture whose E-step is the variational E-step: weights
    :math:`e^{c_k}` (not normalized), means :math:`m_k`, covariances
    :math:`(\\nu_k W_k)^{-1}`. Its ``estimate_weighted_log_prob`` is scikit-learn's
    ``_estimate_weighted_log_prob``."""
    return MixtureParameters(
        jnp.exp(_log_constants(parameters, config)),
        parameters.means,
        parameters.covariances,
        parameters.precisions_cholesky,
    )


# -- the lower bound -----------------------------------------------------------------------


def _half_log_det(factor, layout, n_features):
    if layout in ("full", "tied"):
        return jnp.sum(jnp.log(jnp.diagonal(factor, axis1=-2, axis2=-1)), axis=-1)
    if layout == "diag":
        return jnp.sum(jnp.log(factor), axis=-1)
    return n_features * jnp.log(factor)


def _quadratic(statistics: SufficientStatistics, centred_means, factor, layout):
    """(K,) :math:`\\sum_n w_n r_{nk} (x_n - \\mu_k)^T P_k (x_n - \\mu_k)` (tied: summed
    over k, shape ())."""
    counts, first, second = statistics.counts, statistics.first, statistics.second
    if layout == "full":
        precisions = factor @ jnp.swapaxes(factor, -1, -2)
        return jnp.sum(precisions * scatter_about_means(statistics, centred_means), axis=(-2, -1))
    if layout == "tied":
        cross = first.T @ centred_means
        within = (
            second
            - cross
            - cross.T
            + jnp.einsum("k,ki,kj->ij", counts, centred_means, centred_means)
        )
        return jnp.sum((factor @ factor.T) * within)
    if layout == "diag":
        about = second - 2 * centred_means * first + counts[:, None] * centred_means**2
        return jnp.sum(factor * factor * about, axis=-1)
    about = (
        second
        - 2 * jnp.sum(centred_means * first, axis=-1)
        + counts * jnp.sum(centred_means**2, axis=-1)
    )
    return factor * factor * about


def responsibility_log_sum(
    statistics: SufficientStatistics,
    parameters: VariationalParameters,
    centre: ArrayLike,
    config: VariationalConfig,
) -> jax.Array:
    """() :math:`\\sum_{n,k} w_n r_{nk} \\log r_{nk}` of statistics taken under
    ``estep_parameters(parameters)`` (see the module docstring)."""
    layout = config.covariance_type
    n_features = parameters.means.shape[-1]
    constant = (
        _log_constants(parameters, config)
        + _half_log_det(parameters.precisions_cholesky, layout, n_features)
        - 0.5 * n_features * LOG_2PI
    )
    centred_means = parameters.means - centre
    quadratic = _quadratic(statistics, centred_means, parameters.precisions_cholesky, layout)
    weighted = jnp.sum(statistics.counts * constant) - 0.5 * jnp.sum(quadratic)
    return weighted - statistics.log_likelihood


def lower_bound(
    parameters: VariationalParameters, log_sum: ArrayLike, config: VariationalConfig
) -> jax.Array:
    """() scikit-learn's ``_compute_lower_bound`` of the updated ``parameters`` and the
    E-step's :math:`\\sum w r \\log r` (``log_sum``)."""
    layout, n_components = config.covariance_type, config.n_components
    n_features = parameters.means.shape[-1]
    degrees = parameters.degrees_of_freedom
    log_det = _half_log_det(parameters.precisions_cholesky, layout, n_features)
    log_det = log_det - 0.5 * n_features * jnp.log(degrees)
    d = jnp.arange(n_features, dtype=degrees.dtype)
    log_wishart = -(
        degrees * log_det
        + degrees * n_features * 0.5 * jnp.log(2.0)
        + jnp.sum(gammaln(0.5 * (jnp.expand_dims(degrees, -1) - d)), axis=-1)
    )
    log_wishart = n_components * log_wishart if layout == "tied" else jnp.sum(log_wishart)
    concentration = parameters.weight_concentration
    if config.prior_type == "dirichlet_process":
        log_norm_weight = -jnp.sum(betaln(concentration[0], concentration[1]))
    else:
        log_norm_weight = gammaln(jnp.sum(concentration)) - jnp.sum(gammaln(concentration))
    return (
        -log_sum
        - log_wishart
        - log_norm_weight
        - 0.5 * n_features * jnp.sum(jnp.log(parameters.mean_precision))
    )


# -- one step and the loop -----------------------------------------------------------------


def variational_statistics(
    parameters: VariationalParameters,
    blocks: DataBlocks,
    config: VariationalConfig,
    *,
    use_kernel: bool = False,
) -> SufficientStatistics:
    """E-step statistics of ``blocks`` under the posterior (pure): the Gaussian E-step of
    :func:`estep_parameters`; the compiled CPU kernel with ``use_kernel``."""
    return block_statistics(
        estep_parameters(parameters, config),
        blocks,
        config.covariance_type,
        use_kernel=use_kernel,
    )


def step(
    state: VariationalState,
    statistics: SufficientStatistics,
    prior: VariationalPrior,
    centre: ArrayLike,
    reg_covar: ArrayLike,
    tol: ArrayLike,
    config: VariationalConfig,
) -> tuple[VariationalState, VariationalInfo]:
    """One variational step from the statistics of all rows under ``state`` (pure).

    Statistics summed over blocks, chunks or devices all give the same step.
    """
    log_sum = responsibility_log_sum(statistics, state.parameters, centre, config)
    parameters = update(statistics, prior, centre, reg_covar, config)
    bound = lower_bound(parameters, log_sum, config)
    delta = bound - state.lower_bound
    state = VariationalState(parameters, bound, state.n_iter + 1)
    return state, VariationalInfo(delta, jnp.abs(delta) < tol)


def _iterate(start, blocks, prior, reg_covar, tol, lower_bound0, config, max_iter, use_kernel):
    def statistics_fn(parameters):
        return variational_statistics(parameters, blocks, config, use_kernel=use_kernel)

    return _loop(
        start, statistics_fn, blocks.centre, prior, reg_covar, tol, lower_bound0, config, max_iter
    )


def _loop(start, statistics_fn, centre, prior, reg_covar, tol, lower_bound0, config, max_iter):
    """The variational steps as one ``lax.while_loop``; ``statistics_fn(parameters)`` the
    E-step statistics of all rows (moments about ``centre``)."""
    dtype = centre.dtype
    history = jnp.full(max(max_iter, 1), jnp.nan, dtype)
    state = VariationalState(start, jnp.asarray(lower_bound0, dtype), jnp.zeros((), jnp.int32))

    def cond(carry):
        state, converged, _ = carry
        return (state.n_iter < max_iter) & ~converged

    def body(carry):
        state, _, history = carry
        statistics = statistics_fn(state.parameters)
        new_state, info = step(state, statistics, prior, centre, reg_covar, tol, config)
        history = history.at[state.n_iter].set(new_state.lower_bound)
        return new_state, info.converged, history

    state, converged, history = lax.while_loop(cond, body, (state, jnp.zeros((), bool), history))
    return state, converged, history


def _fit_program(
    start, x, weight, prior, reg_covar, tol, lower_bound0, *, config, max_iter, block_rows, kernel
):
    blocks = data_blocks(x, weight, block_rows, config.covariance_type)
    return _iterate(start, blocks, prior, reg_covar, tol, lower_bound0, config, max_iter, kernel)


_fit_jit = compilation.jit(
    _fit_program, static_argnames=("config", "max_iter", "block_rows", "kernel")
)


def _start_program(key, x, weight, prior, reg_covar, *, config, block_rows, init_params):
    blocks = data_blocks(x, weight, block_rows, config.covariance_type)
    step_config = StepConfig(config.n_components, config.covariance_type)
    statistics = initial_statistics(key, blocks, step_config, init_params)
    return update(statistics, prior, blocks.centre, reg_covar, config)


_start_jit = compilation.jit(
    _start_program, static_argnames=("config", "block_rows", "init_params")
)


def _block_rows(x, config):
    return block_size(
        x.shape[0], x.shape[1], config.n_components, config.covariance_type, x.dtype.itemsize, None
    )


def _weight(x, sample_weight):
    if sample_weight is None:
        return np.ones(x.shape[0], x.dtype)
    return np.asarray(sample_weight, x.dtype)


def restart_start(
    seed,
    x: ArrayLike,
    sample_weight: ArrayLike | None,
    prior: VariationalPrior,
    reg_covar: float,
    config: VariationalConfig,
    init_params: str,
    restart: int = 0,
) -> VariationalParameters:
    """The posterior after the first update from ``init_params``'s responsibilities
    (scikit-learn's ``_initialize_parameters``) of restart ``restart`` of ``seed``.

    Args:
        seed: an int or a JAX key; restart ``i`` uses ``restart_key(seed, i)``.
        x: (N, D). sample_weight: (N,) or None.
        init_params: "kmeans", "k-means++", "random" or "random_from_data".
    """
    x = np.asarray(x)
    return _start_jit(
        restart_key(seed, restart),
        x,
        _weight(x, sample_weight),
        prior,
        np.asarray(reg_covar, x.dtype),
        config=config,
        block_rows=_block_rows(x, config),
        init_params=init_params,
    )


def fit(
    start: VariationalParameters,
    x: ArrayLike,
    sample_weight: ArrayLike | None,
    prior: VariationalPrior,
    reg_covar: float,
    tol: float,
    config: VariationalConfig,
    *,
    max_iter: int,
    lower_bound0: float = -np.inf,
) -> tuple[VariationalState, jax.Array, jax.Array]:
    """Variational steps from ``start`` until the lower bound changes by less than
    ``tol`` or ``max_iter`` steps: one compiled ``lax.while_loop``.

    Args:
        start: :class:`VariationalParameters` (:func:`restart_start`, or a previous fit).
        x: (N, D) data. sample_weight: (N,) non-negative weights, or None.
        prior: :class:`VariationalPrior` (:func:`default_prior`).
        lower_bound0: the lower bound the first step's change is taken from (a warm
            start's last one).

    Returns:
        (:class:`VariationalState`, converged (), the lower bound after each step
        (max(max_iter, 1),), NaN past ``state.n_iter``).
    """
    x = np.asarray(x)
    kernel = config.covariance_type == "full" and native.usable(x.dtype)
    state, converged, history = _fit_jit(
        start,
        x,
        _weight(x, sample_weight),
        prior,
        np.asarray(reg_covar, x.dtype),
        np.asarray(tol, x.dtype),
        np.asarray(lower_bound0, x.dtype),
        config=config,
        max_iter=int(max_iter),
        block_rows=_block_rows(x, config),
        kernel=kernel,
    )
    return state, converged, history


# -- rows split over devices ---------------------------------------------------------------


def _sharded_program(
    start, x, weight, prior, reg_covar, tol, lower_bound0, centre, *, mesh, config, max_iter,
    block_rows,
):  # fmt: skip
    from gaussmix.inference.shard import ROW_AXIS

    def per_device(x, weight, start, prior, reg_covar, tol, lower_bound0, centre):
        def statistics_fn(parameters):
            local = sufficient_statistics(
                x,
                estep_parameters(parameters, config),
                covariance_type=config.covariance_type,
                centre=centre,
                sample_weight=weight,
                block_rows=block_rows,
                use_kernel=False,
            )
            return lax.psum(local, ROW_AXIS)

        return _loop(
            start, statistics_fn, centre, prior, reg_covar, tol, lower_bound0, config, max_iter
        )

    rows, replicated = PartitionSpec(ROW_AXIS), PartitionSpec()
    return jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(rows, rows, *(replicated,) * 6),
        out_specs=replicated,
        check_vma=False,  # the block scan starts from unvarying zeros (as inference.shard)
    )(x, weight, start, prior, reg_covar, tol, lower_bound0, centre)


# A Mesh static argument is not deterministic between processes: jax.jit, as
# inference.shard's programs.
_sharded_jit = jax.jit(
    _sharded_program, static_argnames=("mesh", "config", "max_iter", "block_rows")
)


def fit_sharded(
    start: VariationalParameters,
    x: ArrayLike,
    sample_weight: ArrayLike | None,
    prior: VariationalPrior,
    reg_covar: float,
    tol: float,
    config: VariationalConfig,
    *,
    devices,
    max_iter: int,
    lower_bound0: float = -np.inf,
) -> tuple[VariationalState, jax.Array, jax.Array]:
    """:func:`fit` with the rows split over ``devices`` (one process): each device's
    statistics summed by ``psum``, then the same step on every device, all iterations
    one compiled ``lax.while_loop`` inside ``jax.shard_map``.

    Args:
        devices: as :func:`gaussmix.inference.shard.device_mesh` takes them (an int n:
            the first n of ``jax.devices()``).
        the others: as :func:`fit`.
    """
    from gaussmix.inference.shard import ROW_AXIS, device_mesh

    if jax.process_count() > 1:
        raise NotImplementedError(
            "BayesianGaussianMixture with devices= runs in one process; under "
            "jax.distributed fit each process's rows by chunks, or gather the data."
        )
    mesh = device_mesh(devices)
    x = np.asarray(x)
    weight = _weight(x, sample_weight)
    centre = (weight.astype(np.float64) @ x / weight.sum(dtype=np.float64)).astype(x.dtype)
    n_devices = mesh.devices.size
    per_device = max(1, -(-x.shape[0] // n_devices))
    padding = per_device * n_devices - x.shape[0]  # the centre, of zero weight
    padded_x = np.concatenate([x, np.broadcast_to(centre, (padding, x.shape[1]))])
    padded_w = np.concatenate([weight, np.zeros(padding, x.dtype)])
    sharding = NamedSharding(mesh, PartitionSpec(ROW_AXIS))
    return _sharded_jit(
        start,
        jax.device_put(padded_x, sharding),
        jax.device_put(padded_w, sharding),
        prior,
        np.asarray(reg_covar, x.dtype),
        np.asarray(tol, x.dtype),
        np.asarray(lower_bound0, x.dtype),
        centre,
        mesh=mesh,
        config=config,
        max_iter=int(max_iter),
        block_rows=_block_rows(padded_x[:per_device], config),
    )
