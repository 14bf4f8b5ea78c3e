"""Closed-form M-steps: maximum likelihood and the conjugate MAP, per covariance family.

From summed :class:`gaussmix.inference.em.statistics.SufficientStatistics` (moments about
the centre :math:`c`):

* maximum likelihood, scikit-learn's ``GaussianMixture`` formulas (including
  ``reg_covar`` on the diagonal and the ``10 * eps`` added to :math:`N_k`);
* the conjugate MAP (Dirichlet weights, inverse Wishart covariances, inverse gamma
  variances, with the program's mean prior
  :math:`\\mu_k \\mid \\Sigma_k \\sim \\mathcal{N}(m_0, \\Sigma_k/\\kappa_0)`), e.g. for
  ``full``

  .. math::

      \\pi_k \\propto N_k + \\alpha_k - 1,\\quad
      \\mu_k = \\frac{s_k + \\kappa_0 m_0}{N_k + \\kappa_0},\\quad
      \\Sigma_k = \\frac{\\Psi_0 + S_k(\\mu_k) + \\kappa_0 (\\mu_k - m_0)(\\mu_k - m_0)^T}
                       {N_k + \\nu_0 + D + 2}.

Weights and means are the same for every family; a classic family is the function that
turns the statistics into its covariances, one entry of
:data:`MAXIMUM_LIKELIHOOD_COVARIANCES` and one of :data:`CONJUGATE_COVARIANCES`.
mclust's constrained models (:mod:`gaussmix.inference.em.covariance_models`) take the
covariances of their storage layout's classic family (with ``reg_covar``; under a
conjugate prior its MAP covariances, with the prior's pseudo-counts) as the sample
covariances :math:`S_k` of their constrained maximization; a new model is one entry of
:data:`gaussmix.inference.em.covariance_models.COVARIANCE_MODELS`.
"""

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import gammaln, multigammaln
from jax.typing import ArrayLike

from gaussmix.inference.em.background import BACKGROUND_CONCENTRATION, background_log_weight
from gaussmix.inference.em.covariance_models import COVARIANCE_MODELS, n_covariance_parameters
from gaussmix.inference.em.parameters import LOG_2PI, MixtureParameters, with_covariances
from gaussmix.inference.em.statistics import SufficientStatistics
from gaussmix.models.priors import COVARIANCE_SITES, MixturePriorParameters, covariance_layout

__all__ = [
    "CONJUGATE_COVARIANCES",
    "MAXIMUM_LIKELIHOOD_COVARIANCES",
    "ConjugatePrior",
    "base_distribution",
    "conjugate_log_prior",
    "make_conjugate_prior",
    "maximization_step",
    "n_parameters",
    "scatter_about_means",
]


class ConjugatePrior(NamedTuple):
    """Hyperparameters of a conjugate prior (the program's default or a user's).

    Attributes:
        weight_concentration: (K,) Dirichlet :math:`\\alpha`.
        mean_prior: (D,) :math:`m_0` in the data's coordinates.
        mean_precision: () :math:`\\kappa_0`.
        covariance_concentration: full (K,) / tied () inverse Wishart degrees of freedom
            :math:`\\nu`; diag (K, D) / spherical (K,) inverse gamma concentration.
        covariance_scale: full (K, D, D) / tied (D, D) inverse Wishart scale
            :math:`\\Psi`; diag (K, D) / spherical (K,) inverse gamma rate.
    """

    weight_concentration: jax.Array
    mean_prior: jax.Array
    mean_precision: jax.Array
    covariance_concentration: jax.Array
    covariance_scale: jax.Array


def scatter_about_means(statistics: SufficientStatistics, centred_means: jax.Array) -> jax.Array:
    """(K, D, D) per-component :math:`\\sum_n w r (x - \\mu)(x - \\mu)^T` (full statistics)."""
    counts, first, second = statistics.counts, statistics.first, statistics.second
    cross = first[:, :, None] * centred_means[:, None, :]
    return (
        second
        - cross
        - jnp.swapaxes(cross, -1, -2)
        + counts[:, None, None] * centred_means[:, :, None] * centred_means[:, None, :]
    )


def _within_tied(statistics: SufficientStatistics, centred_means: jax.Array) -> jax.Array:
    """(D, D) :math:`\\sum_{n,k} w r (x - \\mu_k)(x - \\mu_k)^T` from tied statistics."""
    counts, first, second = statistics.counts, statistics.first, statistics.second
    cross = first.T @ centred_means
    return (
        second - cross - cross.T + jnp.einsum("k,ki,kj->ij", counts, centred_means, centred_means)
    )


# -- maximum likelihood: (statistics, centred means, regularized counts, reg_covar) ------


def _full_maximum_likelihood(statistics, centred_means, regularized_counts, reg_covar):
    n_features = centred_means.shape[-1]
    dtype = centred_means.dtype
    scatter = scatter_about_means(statistics, centred_means)
    covariances = scatter / regularized_counts[:, None, None] + reg_covar * jnp.eye(
        n_features, dtype=dtype
    )
    return covariances


def _tied_maximum_likelihood(statistics, centred_means, regularized_counts, reg_covar):
    n_features = centred_means.shape[-1]
    dtype = centred_means.dtype
    between = jnp.einsum("k,ki,kj->ij", regularized_counts, centred_means, centred_means)
    return (statistics.second - between) / jnp.sum(regularized_counts) + reg_covar * jnp.eye(
        n_features, dtype=dtype
    )


def _diag_maximum_likelihood(statistics, centred_means, regularized_counts, reg_covar):
    return statistics.second / regularized_counts[:, None] - centred_means**2 + reg_covar


def _spherical_maximum_likelihood(statistics, centred_means, regularized_counts, reg_covar):
    n_features = centred_means.shape[-1]
    return (
        statistics.second / regularized_counts - jnp.sum(centred_means**2, axis=1)
    ) / n_features + reg_covar


#: Covariance type -> its maximum-likelihood covariances from the statistics.
MAXIMUM_LIKELIHOOD_COVARIANCES: dict[str, Callable] = {
    "full": _full_maximum_likelihood,
    "tied": _tied_maximum_likelihood,
    "diag": _diag_maximum_likelihood,
    "spherical": _spherical_maximum_likelihood,
}


# -- conjugate MAP: (statistics, centred means, offset from the prior mean, prior, reg_covar)


def _full_conjugate(statistics, centred_means, offset, prior, reg_covar):
    counts = statistics.counts
    n_features = centred_means.shape[-1]
    kappa, nu, scale = prior.mean_precision, prior.covariance_concentration, prior.covariance_scale
    numerator = (
        scale
        + scatter_about_means(statistics, centred_means)
        + kappa * offset[:, :, None] * offset[:, None, :]
    )
    covariances = numerator / (counts + nu + n_features + 2)[:, None, None]
    return covariances + reg_covar * jnp.eye(n_features, dtype=centred_means.dtype)


def _tied_conjugate(statistics, centred_means, offset, prior, reg_covar):
    n_components, n_features = centred_means.shape
    kappa, nu, scale = prior.mean_precision, prior.covariance_concentration, prior.covariance_scale
    numerator = scale + _within_tied(statistics, centred_means) + kappa * offset.T @ offset
    total = jnp.sum(statistics.counts)
    covariances = numerator / (total + n_components + nu + n_features + 1)
    return covariances + reg_covar * jnp.eye(n_features, dtype=centred_means.dtype)


def _diag_conjugate(statistics, centred_means, offset, prior, reg_covar):
    counts, first, second = statistics.counts, statistics.first, statistics.second
    kappa, nu, scale = prior.mean_precision, prior.covariance_concentration, prior.covariance_scale
    within = second - 2 * centred_means * first + counts[:, None] * centred_means**2
    covariances = (2 * scale + within + kappa * offset**2) / (counts[:, None] + 2 * nu + 3)
    return covariances + reg_covar


def _spherical_conjugate(statistics, centred_means, offset, prior, reg_covar):
    counts, first, second = statistics.counts, statistics.first, statistics.second
    n_features = centred_means.shape[-1]
    kappa, nu, scale = prior.mean_precision, prior.covariance_concentration, prior.covariance_scale
    within = (
        second
        - 2 * jnp.sum(centred_means * first, axis=1)
        + counts * jnp.sum(centred_means**2, axis=1)
    )
    numerator = 2 * scale + within + kappa * jnp.sum(offset**2, axis=1)
    return numerator / (counts * n_features + n_features + 2 * nu + 2) + reg_covar


#: Covariance type -> its conjugate-MAP covariances from the statistics.
CONJUGATE_COVARIANCES: dict[str, Callable] = {
    "full": _full_conjugate,
    "tied": _tied_conjugate,
    "diag": _diag_conjugate,
    "spherical": _spherical_conjugate,
}


def n_parameters(covariance_type: str, n_components: int, n_features: int) -> int:
    """Free parameters of a mixture (BIC, AIC): covariances + K D means + K - 1 weights.

    The covariances' count is mclust's for its 14 models (Scrucca et al. 2016, Table 1;
    :func:`gaussmix.inference.em.covariance_models.n_covariance_parameters`), so that
    ``bic`` is minus mclust's BIC.

    Example:
        >>> n_parameters("diag", 3, 2)  # 6 variances + 6 means + 2 weights
        14
        >>> n_parameters("EEV", 3, 2)  # 1 volume + 1 shape + 3 angles + 6 + 2
        13
    """
    covariance = n_covariance_parameters(covariance_type, n_components, n_features)
    return int(covariance + n_features * n_components + n_components - 1)


def _conjugate_pseudo_counts(counts, prior: ConjugatePrior, layout: str, n_features: int):
    r"""(K,) the weights :math:`n_k'` with which a conjugate prior's log density joins the
    likelihood's in a constrained model's objective (its MAP is the maximizer of
    :math:`-\sum_k n_k' (\log|\Sigma_k| + \operatorname{tr}(\Sigma_k^{-1} S_k'))`
    with :math:`S_k'` the classic family's MAP covariance)."""
    nu = prior.covariance_concentration
    if layout == "full":  # inverse Wishart and the mean's normal: n + nu + D + 2
        return counts + nu + n_features + 2
    if layout == "diag":  # inverse gamma (one concentration per component) and normal
        return counts + 2 * nu[:, 0] + 3
    # spherical: the D variances of a component are one
    return counts + (n_features + 2 * nu + 2) / n_features


def _constrained(model, sample_covariances, counts, previous):
    """The model's covariances from the classic layout's ``sample_covariances``."""
    if model.covariance_fn is None:
        return sample_covariances
    return model.covariance_fn(sample_covariances, counts, previous)


def _background_count(statistics: SufficientStatistics) -> jax.Array:
    """() :math:`N_0 = W - \\sum_k N_k`, the background's share of the total weight (every
    row's responsibilities, the background's included, sum to 1)."""
    return jnp.maximum(statistics.total_weight - jnp.sum(statistics.counts), 0.0)


def _maximum_likelihood_m_step(
    statistics, covariance_type, centre, reg_covar, previous, mask, background=False
):
    counts, first = statistics.counts, statistics.first
    model = COVARIANCE_MODELS[covariance_type]
    regularized_counts = counts + 10 * jnp.finfo(first.dtype).eps
    if mask is None:
        total = jnp.sum(regularized_counts)
        if background:
            total = total + _background_count(statistics)
        weights = regularized_counts / total
        centred_means = first / regularized_counts[:, None]
        covariances = MAXIMUM_LIKELIHOOD_COVARIANCES[model.layout](
            statistics, centred_means, regularized_counts, reg_covar
        )
        covariances = _constrained(model, covariances, regularized_counts, previous)
        return with_covariances(weights, centred_means + centre, covariances, model.layout)
    # Padding components (mask False) weigh exactly 0 in every sum over components and
    # get weight 0, mean 0 and the identity covariance: the others are what they are
    # without them (to rounding).
    regularized_counts = jnp.where(mask, regularized_counts, 0.0)
    divisor = jnp.where(mask, regularized_counts, 1.0)
    weights = regularized_counts / jnp.sum(regularized_counts)
    centred_means = jnp.where(mask[:, None], first / divisor[:, None], 0.0)
    covariances = MAXIMUM_LIKELIHOOD_COVARIANCES[model.layout](
        statistics,
        centred_means,
        regularized_counts if model.layout == "tied" else divisor,
        reg_covar,
    )
    covariances = _identity_where_padding(covariances, mask, model.layout)
    covariances = _constrained(model, covariances, regularized_counts, previous)
    covariances = _identity_where_padding(covariances, mask, model.layout)
    return with_covariances(weights, centred_means + centre, covariances, model.layout)


def _identity_where_padding(covariances, mask, layout):
    """The identity covariance (its layout's) for the padding components (mask False)."""
    if layout == "tied":
        return covariances
    if layout == "full":
        identity = jnp.eye(covariances.shape[-1], dtype=covariances.dtype)
        return jnp.where(mask[:, None, None], covariances, identity)
    if layout == "diag":
        return jnp.where(mask[:, None], covariances, 1.0)
    return jnp.where(mask, covariances, 1.0)


def _conjugate_m_step(
    statistics, covariance_type, centre, reg_covar, prior, previous, background=False
):
    counts, first = statistics.counts, statistics.first
    model = COVARIANCE_MODELS[covariance_type]
    unnormalized = counts + prior.weight_concentration - 1
    total = jnp.sum(unnormalized)
    if background:  # the background's Dirichlet concentration is 1: N_0 + 1 - 1
        total = total + _background_count(statistics) + BACKGROUND_CONCENTRATION - 1
    weights = unnormalized / total
    kappa = prior.mean_precision
    centred_prior_mean = prior.mean_prior - centre
    centred_means = (first + kappa * centred_prior_mean) / (counts + kappa)[:, None]
    offset = centred_means - centred_prior_mean
    covariances = CONJUGATE_COVARIANCES[model.layout](
        statistics, centred_means, offset, prior, reg_covar
    )
    if model.covariance_fn is not None:
        pseudo_counts = _conjugate_pseudo_counts(
            counts, prior, model.layout, centred_means.shape[-1]
        )
        covariances = _constrained(model, covariances, pseudo_counts, previous)
    return with_covariances(weights, centred_means + centre, covariances, model.layout)


def maximization_step(
    statistics: SufficientStatistics,
    *,
    covariance_type: str,
    centre: ArrayLike,
    reg_covar: ArrayLike = 1e-6,
    prior: ConjugatePrior | None = None,
    previous: jax.Array | None = None,
    mask: jax.Array | None = None,
    background: bool = False,
) -> MixtureParameters:
    """The M-step from summed statistics (pure): closed form, or for mclust's iterative
    models a fixed point iterated to convergence inside the program.

    Args:
        statistics: :class:`SufficientStatistics` summed over all data, about ``centre``.
        covariance_type: "full", "tied", "diag", "spherical" or one of mclust's 14
            models (:data:`gaussmix.models.priors.EM_COVARIANCE_TYPES`).
        centre: (D,) the centre the statistics were taken about.
        reg_covar: added to the diagonal of every covariance (of every component's
            sample covariance before a constrained model's maximization, so that the
            result keeps the model's constraint).
        prior: ``None`` for maximum likelihood (scikit-learn's estimates), else the
            :class:`ConjugatePrior` whose MAP is returned.
        previous: the covariances of the step before (the warm start of an iterative
            M-step), or None.
        mask: (K,) bool, maximum likelihood only: False marks padding components (a
            fit of fewer components inside a program of K,
            :mod:`gaussmix.inference.em.candidates`): weight 0, mean 0, identity
            covariance, and no part in the others' estimates. None: every component.
        background: a uniform background component
            (:mod:`gaussmix.inference.em.background`): the weights are
            :math:`N_k / W` (MAP: with the background's Dirichlet concentration
            :data:`gaussmix.inference.em.background.BACKGROUND_CONCENTRATION` among the
            K + 1), summing to one minus the background's :math:`N_0 / W`,
            :math:`N_0 = W - \\sum_k N_k`.

    Returns:
        The new :class:`MixtureParameters`; a component whose covariance is not positive
        definite gets NaN precision factors (checked by the caller).

    Example:
        >>> import jax.numpy as jnp
        >>> s = SufficientStatistics(jnp.array([2.0]), jnp.array([[0.0]]),
        ...     jnp.array([[2.0]]), jnp.array(0.0), jnp.array(2.0))
        >>> maximization_step(s, covariance_type="diag", centre=jnp.zeros(1),
        ...     reg_covar=0.0).covariances.round(4).tolist()
        [[1.0]]
    """
    centre = jnp.asarray(centre, statistics.first.dtype)
    if background and mask is not None:
        raise ValueError("mask (padding components) is not implemented with a background.")
    if prior is None:
        return _maximum_likelihood_m_step(
            statistics, covariance_type, centre, reg_covar, previous, mask, background
        )
    if mask is not None:
        raise ValueError("mask (padding components) is for maximum likelihood only.")
    return _conjugate_m_step(
        statistics, covariance_type, centre, reg_covar, prior, previous, background
    )


def base_distribution(distribution: dist.Distribution) -> dist.Distribution:
    """The distribution under ``Independent`` and ``expand`` wrappers."""
    while isinstance(distribution, dist.Independent | dist.ExpandedDistribution):
        distribution = distribution.base_dist
    return distribution


def make_conjugate_prior(
    priors: Mapping,
    prior_parameters: MixturePriorParameters,
    n_components: int,
    covariance_type: str,
    dtype,
) -> ConjugatePrior:
    """The :class:`ConjugatePrior` of conjugate ``priors`` (the program's default where a
    site has none), from the default prior's hyperparameters ``prior_parameters``."""
    p = prior_parameters
    layout = covariance_layout(covariance_type)
    n_features = p.mean_prior.shape[-1]
    if "weights" in priors:
        alpha = jnp.broadcast_to(priors["weights"].concentration, (n_components,))
    else:
        alpha = jnp.full((n_components,), p.weight_concentration)
    site = COVARIANCE_SITES[covariance_type]
    user = base_distribution(priors[site]) if site in priors else None
    if layout in ("full", "tied"):
        if user is None:
            nu, scale = p.degrees_of_freedom, p.covariance_prior
        else:
            nu = user.concentration
            scale = user.scale_tril @ jnp.swapaxes(user.scale_tril, -1, -2)
        if layout == "full":
            nu = jnp.broadcast_to(nu, (n_components,))
            scale = jnp.broadcast_to(scale, (n_components, n_features, n_features))
        else:
            scale = jnp.broadcast_to(scale, (n_features, n_features))
    else:
        shape = (n_components, n_features) if layout == "diag" else (n_components,)
        if user is None:
            nu, scale = p.degrees_of_freedom / 2, jnp.asarray(p.covariance_prior) / 2
        else:
            nu, scale = user.concentration, user.rate
        nu, scale = jnp.broadcast_to(nu, shape), jnp.broadcast_to(scale, shape)
    return ConjugatePrior(
        *(jnp.asarray(a, dtype) for a in (alpha, p.mean_prior, p.mean_precision, nu, scale))
    )


def conjugate_log_prior(
    parameters: MixtureParameters,
    prior: ConjugatePrior,
    covariance_type: str,
    *,
    background: bool = False,
) -> jax.Array:
    """Log density of a conjugate prior at ``parameters``, in closed form.

    Equals :func:`gaussmix.inference.em.generalized.program_log_prior` of the program with that prior (tested), but uses
    only the precision factors already at hand (no triangular solves):

    .. math::

        \\log \\mathrm{Dir}(\\pi \\mid \\alpha)
        + \\sum_k \\log \\mathcal{W}^{-1}(\\Sigma_k \\mid \\nu, \\Psi)
        + \\sum_k \\log \\mathcal{N}(\\mu_k \\mid m_0, \\Sigma_k / \\kappa_0)

    (inverse gamma per variance for diag / spherical; a constrained model's prior is
    its storage layout's, evaluated at its covariances). With ``background`` the Dirichlet
    is over the K + 1 weights, the background's (one minus the Gaussian weights' sum)
    with concentration
    :data:`gaussmix.inference.em.background.BACKGROUND_CONCENTRATION`.
    """
    covariance_type = covariance_layout(covariance_type)
    weights, means, covariances, factor = parameters
    n_features = means.shape[-1]
    alpha = prior.weight_concentration
    total = (
        gammaln(jnp.sum(alpha)) - jnp.sum(gammaln(alpha)) + jnp.sum((alpha - 1) * jnp.log(weights))
    )
    if background:
        alpha_0 = BACKGROUND_CONCENTRATION
        total = total - gammaln(jnp.sum(alpha)) + gammaln(jnp.sum(alpha) + alpha_0)
        total = total - gammaln(jnp.asarray(alpha_0, weights.dtype))
        if alpha_0 != 1:  # (alpha_0 - 1) log pi_0, which is 0 (not NaN) at pi_0 = 0 for 1
            total = total + (alpha_0 - 1) * background_log_weight(weights)
    kappa = prior.mean_precision
    offset = means - prior.mean_prior
    nu, scale = prior.covariance_concentration, prior.covariance_scale
    if covariance_type in ("full", "tied"):
        precisions = factor @ jnp.swapaxes(factor, -1, -2)
        log_det_precision = 2 * jnp.sum(jnp.log(jnp.diagonal(factor, axis1=-2, axis2=-1)), axis=-1)
        scale_lower = jnp.linalg.cholesky(scale)
        log_det_scale = 2 * jnp.sum(jnp.log(jnp.diagonal(scale_lower, axis1=-2, axis2=-1)), axis=-1)
        inverse_wishart = (
            0.5 * nu * log_det_scale
            - 0.5 * nu * n_features * math.log(2.0)
            - multigammaln(0.5 * nu, n_features)
            + 0.5 * (nu + n_features + 1) * log_det_precision
            - 0.5 * jnp.sum(scale * precisions, axis=(-1, -2))
        )
        if covariance_type == "full":
            projected = jnp.einsum("kd,kde->ke", offset, factor)
        else:
            projected = offset @ factor
        mean_log_density = (
            0.5 * n_features * (jnp.log(kappa) - LOG_2PI)
            + 0.5 * log_det_precision
            - 0.5 * kappa * jnp.sum(projected**2, axis=-1)
        )
        return total + jnp.sum(inverse_wishart) + jnp.sum(mean_log_density)
    inverse_gamma = (
        nu * jnp.log(scale) - gammaln(nu) - (nu + 1) * jnp.log(covariances) - scale / covariances
    )
    variances = covariances if covariance_type == "diag" else covariances[:, None]
    mean_log_density = -0.5 * (LOG_2PI + jnp.log(variances / kappa) + kappa * offset**2 / variances)
    return total + jnp.sum(inverse_gamma) + jnp.sum(mean_log_density)
