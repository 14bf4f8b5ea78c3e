"""The Gaussian mixture as one NumPyro program.

Every back end (EM/MAP in :mod:`gaussmix.inference.em`, NUTS in
:mod:`gaussmix.inference.mcmc`) reads this program. The observed site ``x`` has the
component index summed out, so its pointwise log-likelihood is the marginal one that
PSIS-LOO needs:

.. math::

    \\log p(x_n \\mid \\theta) = \\log \\sum_{k=1}^{K} \\pi_k\\,
        \\mathcal{N}(x_n \\mid \\mu_k, \\Sigma_k).

The site's distribution, :class:`GaussianMixtureDistribution`, computes the K component
densities of all N points at once from the Cholesky factors, :math:`\\Sigma_k = L_k
L_k^\\top`,

.. math::

    \\log \\mathcal{N}(x_n \\mid \\mu_k, \\Sigma_k) = -\\tfrac12 \\lVert L_k^{-1} x_n -
        L_k^{-1} \\mu_k \\rVert^2 - \\sum_d \\log (L_k)_{dd} - \\tfrac{D}{2} \\log 2\\pi,

with :math:`L_k^{-1}` formed once per component (a D x D triangular solve) and applied
to the data by one contraction, then a log-sum-exp over k. For full and tied covariances
its gradient is about twice as fast as that of numpyro's ``MixtureSameFamily`` of
``MultivariateNormal`` (``benchmarks/mixture_gradient.py``), which solves triangular
systems for every point and component.

Covariance types and their sites (D features, K components):

==========  =========================  ===========================================
type        site (shape)               :math:`\\Sigma_k`
==========  =========================  ===========================================
full        ``covariances`` (K, D, D)  :math:`\\Sigma_k`
tied        ``covariance`` (D, D)      :math:`\\Sigma` shared by all components
diag        ``variances`` (K, D)       :math:`\\mathrm{diag}(\\sigma^2_{k\\cdot})`
spherical   ``variances`` (K,)         :math:`\\sigma^2_k I`
==========  =========================  ===========================================

mclust's names VVV, EEE, VVI, VII are these four (the same program, the same draws).
mclust's ten other models (EII, EEI, VEI, EVI, VEE, EVE, VVE, EEV, VEV, EVV) sample
volume, shape and orientation, :math:`\\Sigma_k = \\lambda_k D_k A_k D_k^\\top`, and record
the covariance they imply as the deterministic site of their storage layout (``variances``
(K,) for EII, (K, D) for the diagonal ones, ``covariances`` (K, D, D) for the others);
see :mod:`gaussmix.models.eigen_covariance` for their sites and priors.

Imperfect data: with ``nan_policy="marginalize"`` (NaN entries), per-row
``measurement_covariances`` :math:`S_n` or a uniform background
(``background_log_density``, :math:`-\\log V`), the observed site scores each row by the
marginal density of its observed coordinates under :math:`\\Sigma_k + S_n`, plus
:math:`\\pi_0 / V` (:class:`gaussmix.models.imperfect_data.ImperfectMixtureDistribution`);
with a background the latent ``proportions`` (K + 1, the last the background's) replace
``weights``, which become deterministic with ``background_weight``.

The default prior (see :mod:`gaussmix.models.priors`) is conjugate:

.. math::

    \\pi \\sim \\mathrm{Dirichlet}(\\alpha \\mathbf{1}_K),\\quad
    \\Sigma_k \\sim \\mathcal{W}^{-1}(\\nu_0, \\Psi_0),\\quad
    \\mu_k \\mid \\Sigma_k \\sim \\mathcal{N}(m_0, \\Sigma_k/\\kappa_0),

and for diag / spherical variances
:math:`\\sigma^2 \\sim \\mathrm{InvGamma}(\\nu_0/2, \\psi_0/2)` with
:math:`\\mu \\mid \\sigma^2 \\sim \\mathcal{N}(m_0, \\sigma^2/\\kappa_0)` per feature.
"""

import contextlib
import math
from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike
from numpyro import handlers
from numpyro.distributions import constraints

from gaussmix.models.eigen_covariance import EIGEN_MODELS, eigen_sites, sample_eigen_covariance
from gaussmix.models.imperfect_data import (
    NAN_POLICIES,
    ImperfectMixtureDistribution,
    MissingPatterns,
    check_background_log_density,
    check_measurement_covariances,
    check_missing_data,
    fill_missing_columns,
    find_missing_patterns,
)
from gaussmix.models.priors import (
    COVARIANCE_LAYOUTS,
    COVARIANCE_SITES,
    SITE_SUPPORTS,
    MixturePriorParameters,
    canonical_covariance_type,
    check_covariance_type,
    check_prior_parameters,
    check_prior_support,
    default_prior_parameters,
    per_component_prior,
    prior_parts,
    shared_prior,
    whole_site_prior,
)

__all__ = [
    "COVARIANCE_SITES",
    "GaussianMixtureDistribution",
    "check_priors",
    "component_distribution",
    "component_log_density",
    "full_covariance_potential",
    "gaussian_mixture",
    "prior_site_names",
]


def prior_site_names(covariance_type: str, n_features: int | None = None) -> tuple[str, ...]:
    """Site names a user may give in ``priors`` for this covariance type (in D =
    ``n_features`` dimensions: a constrained model has no shape and orientation in one).

    Example:
        >>> prior_site_names("diag"), prior_site_names("EVE")
        (('weights', 'means', 'variances', 'scales'), ('weights', 'means', 'volume', 'log_shapes', 'orientation_basis'))
    """
    check_covariance_type(covariance_type)
    covariance_type = canonical_covariance_type(covariance_type)
    if covariance_type in EIGEN_MODELS:
        sites = eigen_sites(covariance_type, n_features)
        parts = (sites.volume, sites.log_shape, sites.orientation)
        return ("weights", "means", *(name for name in parts if name is not None))
    names = ["weights", "means", COVARIANCE_SITES[covariance_type]]
    if covariance_type in ("diag", "spherical"):
        names.append("scales")
    return tuple(names)


def component_distribution(
    means: jax.Array, covariance: jax.Array, covariance_type: str
) -> dist.Distribution:
    """The K Gaussian components as one distribution of batch shape (K,), event (D,).

    Args:
        means: (K, D).
        covariance: the covariance site's value: (K, D, D) full, (D, D) tied,
            (K, D) diag, (K,) spherical.
        covariance_type: "full", "tied", "diag", "spherical" or one of mclust's models
            (its storage layout's covariance).
    """
    covariance_type = COVARIANCE_LAYOUTS[covariance_type]
    if covariance_type in ("full", "tied"):
        scale_tril = jnp.linalg.cholesky(covariance)
        if covariance_type == "tied":
            scale_tril = jnp.broadcast_to(scale_tril, means.shape[:-1] + scale_tril.shape)
        return dist.MultivariateNormal(loc=means, scale_tril=scale_tril)
    if covariance_type == "diag":
        scale = jnp.sqrt(covariance)
    else:
        scale = jnp.broadcast_to(jnp.sqrt(covariance)[..., None], means.shape)
    return dist.Normal(means, scale).to_event(1)


def component_log_density(
    x: ArrayLike, means: jax.Array, covariance: jax.Array, covariance_type: str
) -> jax.Array:
    """:math:`\\log \\mathcal{N}(x_n \\mid \\mu_k, \\Sigma_k)` of every point and component.

    Full and tied covariances go through the inverse Cholesky factor
    :math:`L_k^{-1}` (formed once per component), diag and spherical through the
    standard deviations; no (N, K, D, D) array is formed.

    Args:
        x: (..., D) points.
        means: (K, D), one mixture's means (no batch axes; ``jax.vmap`` for batches).
        covariance: the covariance site's value: (K, D, D) full, (D, D) tied,
            (K, D) diag, (K,) spherical.
        covariance_type: "full", "tied", "diag", "spherical" or one of mclust's models
            (its storage layout's covariance).

    Returns:
        (..., K) log densities.

    Example:
        >>> import numpy as np
        >>> from scipy import stats
        >>> x = np.array([[0.5, -1.0], [2.0, 0.0]])
        >>> means, covariances = np.zeros((1, 2)), np.array([[[2.0, 0.5], [0.5, 1.0]]])
        >>> value = component_log_density(x, means, covariances, "full")[:, 0]
        >>> bool(np.allclose(value, stats.multivariate_normal(means[0], covariances[0]).logpdf(x)))
        True
    """
    x = jnp.asarray(x)
    flat = x.reshape((-1, x.shape[-1]))
    layout = COVARIANCE_LAYOUTS[covariance_type]
    log_density = _component_log_density_by_row(flat, means, covariance, layout)
    return log_density.T.reshape((*x.shape[:-1], means.shape[0]))


def _component_log_density_by_row(
    x: jax.Array, means: jax.Array, covariance: jax.Array, covariance_type: str
) -> jax.Array:
    """(K, N) component log densities of (N, D) points.

    Components lead: the reductions over features and components then run across
    whole rows of N values (about 2x faster on CPU than reducing a short last axis).
    """
    n_features = means.shape[-1]
    constant = 0.5 * n_features * math.log(2.0 * math.pi)
    if covariance_type in ("full", "tied"):
        cholesky = jnp.linalg.cholesky(covariance)
        inverse, log_determinant = _inverse_cholesky(cholesky)
        return _projected_log_density(x, means, inverse, log_determinant, covariance_type)
    if covariance_type == "diag":
        variances = covariance
    else:
        variances = jnp.broadcast_to(covariance[..., None], means.shape)
    squared = jnp.sum((x.T - means[..., None]) ** 2 / variances[..., None], axis=1)
    log_determinant = 0.5 * jnp.sum(jnp.log(variances), axis=-1)
    return -0.5 * squared - (log_determinant + constant)[:, None]


def _inverse_cholesky(cholesky: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(L^{-1}, sum_d log L_dd)`` of lower Cholesky factors (..., D, D)."""
    identity = jnp.broadcast_to(jnp.eye(cholesky.shape[-1], dtype=cholesky.dtype), cholesky.shape)
    inverse = jax.scipy.linalg.solve_triangular(cholesky, identity, lower=True)
    log_determinant = jnp.sum(jnp.log(jnp.diagonal(cholesky, axis1=-2, axis2=-1)), axis=-1)
    return inverse, log_determinant


def _projected_log_density(x, means, inverse, log_determinant, covariance_type: str):
    """(K, N) Gaussian log densities of (N, D) points from the inverse Cholesky factors
    :math:`L_k^{-1}` ((K, D, D) full, (D, D) tied) and :math:`\\sum_d \\log (L_k)_{dd}`."""
    n_features = means.shape[-1]
    constant = 0.5 * n_features * math.log(2.0 * math.pi)
    if covariance_type == "tied":  # one projection of the data serves every component
        projected = (inverse @ x.T)[None]  # (1, D, N)
        projected_means = means @ inverse.T  # (K, D)
    else:  # rows k * D + i of the stacked inverses: one matrix product for all k
        stacked = inverse.reshape((-1, n_features))
        projected = (stacked @ x.T).reshape((means.shape[0], n_features, x.shape[0]))
        projected_means = jnp.einsum("kij,kj->ki", inverse, means)
    squared = jnp.sum((projected - projected_means[..., None]) ** 2, axis=1)
    return -0.5 * squared - (log_determinant + constant)[..., None]


def _mixture_log_likelihood(weights, component_log_densities):
    """(N,) :math:`\\log \\sum_k \\pi_k p_k(x_n)` of (K, N) component log densities;
    components of zero weight contribute nothing (and no gradient)."""
    safe = jnp.where(weights > 0, weights, 1.0)
    log_weights = jnp.where(weights > 0, jnp.log(safe), -jnp.inf)
    joint = log_weights[:, None] + component_log_densities
    joint = jnp.where(jnp.isneginf(joint), -jnp.inf, joint)
    return jax.nn.logsumexp(joint, axis=0)


class GaussianMixtureDistribution(dist.Distribution):
    """One Gaussian mixture as a distribution of a (D,) point, the label summed out.

    .. math::

        \\log p(x \\mid \\theta) = \\log \\sum_k \\pi_k\\,\\mathcal{N}(x \\mid \\mu_k, \\Sigma_k)

    by :func:`component_log_density` and a log-sum-exp; components of zero weight
    contribute nothing (and no gradient). Sampling draws a label, then the point (as
    ``MixtureSameFamily`` of :func:`component_distribution`, with the same random
    numbers).

    Args:
        weights: (K,) on the simplex.
        means: (K, D).
        covariance: the covariance site's value (see :func:`component_log_density`).
        covariance_type: "full", "tied", "diag", "spherical" or one of mclust's models
            (read as its storage layout).

    Example:
        >>> import numpy as np
        >>> mixture = GaussianMixtureDistribution(
        ...     np.array([0.3, 0.7]), np.array([[-1.0], [2.0]]), np.array([0.5, 1.0]), "spherical")
        >>> mixture.event_shape, mixture.log_prob(np.zeros((4, 1))).shape
        ((1,), (4,))
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real_vector
    pytree_data_fields = ("weights", "means", "covariance")
    pytree_aux_fields = ("covariance_type",)

    def __init__(self, weights, means, covariance, covariance_type: str, *, validate_args=None):
        check_covariance_type(covariance_type)
        covariance_type = COVARIANCE_LAYOUTS[covariance_type]
        self.weights = jnp.asarray(weights)
        self.means = jnp.asarray(means)
        self.covariance = jnp.asarray(covariance)
        self.covariance_type = covariance_type
        if self.weights.ndim != 1 or self.means.shape[:-1] != self.weights.shape:
            raise ValueError(
                f"weights (K,) and means (K, D) of one mixture are needed, got shapes "
                f"{self.weights.shape} and {self.means.shape}; use jax.vmap for batches."
            )
        super().__init__(
            batch_shape=(), event_shape=self.means.shape[-1:], validate_args=validate_args
        )

    def log_prob(self, value):
        value = jnp.asarray(value)
        flat = value.reshape((-1, value.shape[-1]))
        component = _component_log_density_by_row(
            flat, self.means, self.covariance, self.covariance_type
        )
        return _mixture_log_likelihood(self.weights, component).reshape(value.shape[:-1])

    def sample(self, key, sample_shape=()):
        mixture = dist.MixtureSameFamily(
            dist.Categorical(probs=self.weights),
            component_distribution(self.means, self.covariance, self.covariance_type),
        )
        return mixture.sample(key, sample_shape)


def _is_concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


#: Where each site's value lives and which priors to use instead, for error messages.
_SITE_HELP = {
    "weights": ("weights live on the simplex", "use a Dirichlet prior"),
    "means": ("means live on the real numbers", "use e.g. Normal or MultivariateNormal"),
    "covariances": (
        "covariances live on positive definite matrices",
        "use e.g. InverseWishart, Wishart or LKJ",
    ),
    "covariance": (
        "the tied covariance lives on positive definite matrices",
        "use e.g. InverseWishart, Wishart or LKJ",
    ),
    "variances": (
        "variances live on the positive reals",
        "use e.g. InverseGamma, HalfNormal, Gamma or LogNormal",
    ),
    "scales": (
        "scales (standard deviations) live on the positive reals",
        "use e.g. HalfNormal, HalfCauchy or LogNormal",
    ),
    "volume": (
        "the volume lives on the positive reals",
        "use e.g. InverseGamma, Gamma or LogNormal",
    ),
    "volumes": (
        "volumes live on the positive reals",
        "use e.g. InverseGamma, Gamma or LogNormal",
    ),
    "log_shape": ("log-shapes live on the real numbers", "use e.g. Normal or StudentT"),
    "log_shapes": ("log-shapes live on the real numbers", "use e.g. Normal or StudentT"),
    "orientation_basis": (
        "orientation bases live on the real numbers",
        "use e.g. Normal (iid entries give a uniform orientation)",
    ),
    "orientation_bases": (
        "orientation bases live on the real numbers",
        "use e.g. Normal (iid entries give a uniform orientation)",
    ),
}

#: Distributions without a proper density on their support (or a point mass).
_IMPROPER = (dist.ImproperUniform, dist.Delta, dist.Unit, dist.MaskedDistribution)


def _check_support(distribution: dist.Distribution, site: str) -> None:
    where, advice = _SITE_HELP[site]
    improper = [part for part in prior_parts(distribution) if isinstance(part, _IMPROPER)]
    if improper:
        built_on = (
            "" if improper[0] is distribution else f" (built on {type(improper[0]).__name__})"
        )
        raise ValueError(
            f"priors[{site!r}] is {type(distribution).__name__}{built_on}, an improper or "
            f"point-mass prior, but {where} and a mixture needs a proper prior there (a "
            f"component without points keeps its prior as posterior); {advice}."
        )
    check_prior_support(distribution, site, SITE_SUPPORTS[site], where=where, advice=advice)


def check_priors(
    priors: Mapping[str, dist.Distribution] | None,
    covariance_type: str,
    *,
    n_components: int | None = None,
    n_features: int | None = None,
) -> dict[str, dist.Distribution]:
    """Validate a user's ``priors`` for :func:`gaussian_mixture`; every back end calls it.

    Checks, for each ``{site: distribution}``:

    * the site exists for the covariance type (:func:`prior_site_names`) and is given
      once (``scales`` or ``variances``, not both), and the value is a numpyro
      distribution;
    * its support lies in the site's (:data:`gaussmix.models.priors.SITE_SUPPORTS`, by
      :func:`gaussmix.models.priors.support_within`): weights on the simplex, means real,
      variances and scales positive, covariances positive definite; improper and
      point-mass distributions (``ImproperUniform``, ``Delta``, masked) are refused;
    * its parameters (where concrete, i.e. outside ``jax.jit``) are finite and satisfy
      numpyro's argument constraints (a Dirichlet concentration > 0, a HalfNormal scale
      > 0, Wishart degrees of freedom > D - 1, an interval's bounds in order);
    * with ``n_components`` and ``n_features``: its shapes (``weights`` event (K,),
      tied ``covariance`` event (D, D), both batch (); the shared parts of a
      constrained model, ``volume`` (), ``log_shape`` (D,), ``orientation_basis``
      (D-1, D), batch () or a scalar distribution expanded; per-component sites as in
      :func:`gaussian_mixture`).

    Args:
        priors: ``None`` or a mapping site name -> numpyro distribution.
        covariance_type: "full", "tied", "diag", "spherical" or one of mclust's 14.
        n_components: K (an int >= 1), to check shapes.
        n_features: D, to check shapes.

    Returns:
        A new dict of the same distributions (empty for ``None``).

    Raises:
        ValueError: naming the site, what is wrong and which prior to use instead.

    Example:
        >>> import numpyro.distributions as dist
        >>> try:
        ...     check_priors({"weights": dist.Normal(0.0, 1.0)}, "full")
        ... except ValueError as error:
        ...     print(str(error)[:63])
        priors['weights'] is Normal with support real, but weights live
        >>> sorted(check_priors({"scales": dist.HalfNormal(1.0)}, "diag"))
        ['scales']
    """
    check_covariance_type(covariance_type)
    if priors is None:
        return {}
    if not isinstance(priors, Mapping):
        raise ValueError(
            "priors must be a dict mapping a site name to a numpyro distribution, "
            f"got {type(priors).__name__}."
        )
    given_type = covariance_type
    covariance_type = canonical_covariance_type(covariance_type)
    allowed = prior_site_names(covariance_type, n_features)
    unknown = sorted(set(priors) - set(allowed), key=str)
    if unknown:
        one_dimensional = covariance_type in EIGEN_MODELS and n_features == 1
        raise ValueError(
            f"Unknown prior site(s) {unknown} for covariance_type={given_type!r}; "
            f"allowed: {list(allowed)}"
            + (
                " (in one dimension a constrained model has its volumes only)."
                if one_dimensional
                else "."
            )
        )
    site = COVARIANCE_SITES[covariance_type]
    if "scales" in priors and site in priors:
        raise ValueError(f"Give a prior for either 'scales' or {site!r}, not both.")
    for name, distribution in priors.items():
        if not isinstance(distribution, dist.Distribution):
            raise ValueError(
                f"priors[{name!r}] must be a numpyro distribution, got "
                f"{type(distribution).__name__}."
            )
        _check_support(distribution, name)
        check_prior_parameters(distribution, name)
    valid_count = isinstance(n_components, int | np.integer) and n_components >= 1
    if valid_count and "weights" in priors:  # K alone fixes the weights' shape
        whole_site_prior(priors["weights"], (int(n_components),), "weights")
    if valid_count and n_features is not None:  # shapes (the program checks K itself)
        K, D = int(n_components), int(n_features)
        shapes = {
            "weights": (K,),
            "means": (D,),
            "covariances": (D, D),
            "covariance": (D, D),
            "variances": (D,) if covariance_type == "diag" else (),
            "scales": (D,) if covariance_type == "diag" else (),
            "volume": (),
            "volumes": (),
            "log_shape": (D,),
            "log_shapes": (D,),
            "orientation_basis": (D - 1, D),
            "orientation_bases": (D - 1, D),
        }
        for name, distribution in priors.items():
            if name in ("weights", "covariance"):
                whole_site_prior(distribution, shapes[name], name)
            elif name in ("volume", "log_shape", "orientation_basis"):  # shared parts
                shared_prior(distribution, shapes[name], name)
            else:
                per_component_prior(distribution, shapes[name], name, K)
    return dict(priors)


def _check_sample_weight(sample_weight, n_samples: int) -> jax.Array | None:
    if sample_weight is None:
        return None
    weight = jnp.asarray(sample_weight)
    if weight.shape != (n_samples,):
        raise ValueError(
            f"sample_weight has shape {weight.shape}; expected ({n_samples},), one weight per point."
        )
    if _is_concrete(weight) and (
        not np.all(np.isfinite(np.asarray(weight))) or np.any(np.asarray(weight) < 0)
    ):
        raise ValueError("sample_weight must be finite and non-negative.")
    return weight


def _check_imperfect_data(x, nan_policy, patterns, measurement_covariances, background_log_density):
    """``(imperfect, measurement_covariances, background_log_density)``, checked:
    whether the rows need :class:`ImperfectMixtureDistribution` (missing entries,
    measurement errors or a background)."""
    if x is None:
        if nan_policy != "raise" or any(
            value is not None
            for value in (patterns, measurement_covariances, background_log_density)
        ):
            raise ValueError(
                "Missing entries, measurement errors and a background describe observed "
                "data: pass x (simulation from the prior draws complete, error-free rows)."
            )
        return False, None, None
    if patterns is not None and nan_policy != "marginalize":
        raise ValueError("missing_patterns needs nan_policy='marginalize'.")
    if patterns is not None and jnp.shape(patterns.index) != (x.shape[0],):
        raise ValueError(
            f"missing_patterns.index has shape {jnp.shape(patterns.index)}; expected "
            f"({x.shape[0]},), one pattern per row."
        )
    if measurement_covariances is not None:
        observed = ~np.isnan(np.asarray(x)) if _is_concrete(x) else None
        check_measurement_covariances(measurement_covariances, x.shape, observed)
        measurement_covariances = jnp.asarray(measurement_covariances, x.dtype)
    if background_log_density is not None:
        background_log_density = check_background_log_density(
            background_log_density, x.shape[0]
        ).astype(x.dtype)
    imperfect = nan_policy == "marginalize" or any(
        value is not None for value in (measurement_covariances, background_log_density)
    )
    return imperfect, measurement_covariances, background_log_density


def _split_proportions_prior(priors, background: bool, n_components: int):
    """``(priors without "proportions", its distribution or None)``; with a background the
    K + 1 proportions take the weights' place."""
    if priors is None or not isinstance(priors, Mapping):
        return priors, None
    priors = dict(priors)
    if not background:
        return priors, None
    if "weights" in priors:
        raise ValueError(
            "With a background the mixing weights are K + 1 proportions (the last the "
            "background's): give priors['proportions'] (e.g. a Dirichlet of length "
            f"{n_components + 1}) instead of priors['weights']."
        )
    proportions = priors.pop("proportions", None)
    if proportions is not None:
        if not isinstance(proportions, dist.Distribution):
            raise ValueError(
                "priors['proportions'] must be a numpyro distribution, got "
                f"{type(proportions).__name__}."
            )
        check_prior_support(
            proportions,
            "proportions",
            constraints.simplex,
            where="proportions live on the simplex",
            advice="use a Dirichlet prior",
        )
        check_prior_parameters(proportions, "proportions")
        whole_site_prior(proportions, (n_components + 1,), "proportions")
    return priors, proportions


@contextlib.contextmanager
def _weighting(weight: jax.Array | None):
    """Multiply each point's log-likelihood by its weight inside this context."""
    if weight is None:
        yield
        return
    # numpyro's scale handler refuses zeros: mask points of zero weight instead.
    positive = weight > 0
    with handlers.scale(scale=jnp.where(positive, weight, 1.0)), handlers.mask(mask=positive):
        yield


def gaussian_mixture(
    x: ArrayLike | None = None,
    *,
    n_components: int,
    covariance_type: str = "full",
    priors: Mapping[str, dist.Distribution] | None = None,
    sample_weight: ArrayLike | None = None,
    prior_parameters: MixturePriorParameters | None = None,
    n_samples: int | None = None,
    n_features: int | None = None,
    nan_policy: str = "raise",
    missing_patterns: MissingPatterns | None = None,
    measurement_covariances: ArrayLike | None = None,
    background_log_density: ArrayLike | None = None,
) -> None:
    """Gaussian mixture model as a NumPyro program.

    Args:
        x: observations (N, D); (N,) is read as D = 1. ``None`` simulates data from the
            prior (give ``n_samples`` and ``n_features``).
        n_components: K >= 1.
        covariance_type: "full", "tied", "diag", "spherical" or one of mclust's 14
            (VVV, EEE, VVI, VII are the classic four; the ten others sample volume,
            shape and orientation, :mod:`gaussmix.models.eigen_covariance`, and record
            their covariance as the deterministic site of their storage layout).
        priors: ``{site: distribution}`` replacing default priors. ``weights`` takes a
            distribution on the K-simplex; ``means``, ``covariances``, ``variances`` and
            ``scales`` (standard deviations, diag / spherical only, in place of
            ``variances``) take one component's prior, scalar ones are expanded; the tied
            ``covariance`` takes a (D, D) distribution. A constrained model takes
            ``volume(s)`` (positive), ``log_shape(s)`` (D,) and ``orientation_basis`` /
            ``orientation_bases`` (D-1, D) (real), a singular name one value shared by
            the components, a plural one per component.
        sample_weight: (N,) non-negative weights multiplying each point's log-likelihood.
        prior_parameters: hyperparameters of the default prior; by default scaled from
            ``x`` (:func:`gaussmix.models.priors.default_prior_parameters`).
        n_samples, n_features: data shape for prior-predictive simulation.
        nan_policy: "raise" (NaN in ``x`` is an error) or "marginalize": NaN marks a
            missing entry and each row's likelihood is the marginal density of its
            observed coordinates (:mod:`gaussmix.models.imperfect_data`).
        missing_patterns: the rows' missingness patterns
            (:func:`gaussmix.models.imperfect_data.find_missing_patterns`); by default found
            from a concrete ``x``, or each row its own pattern when ``x`` is traced.
        measurement_covariances: per-row measurement error covariances :math:`S_n`,
            (N, D, D) or (N, D) variances: row n is observed as
            :math:`\\mathcal{N}(\\mu_k, \\Sigma_k + S_n)` (extreme deconvolution; the
            sites describe the error-free distribution).
        background_log_density: adds a uniform background (noise) component of this log
            density, :math:`-\\log V` (or one value per row, (N,)). The latent site
            ``proportions`` ((K + 1,), the last the background's) then takes the
            Dirichlet prior (``priors["proportions"]`` replaces it), and ``weights``
            (K,) and ``background_weight`` are its deterministic parts.

    Example:
        >>> import jax, numpy as np
        >>> from numpyro.infer import Predictive
        >>> x = np.random.default_rng(0).normal(size=(50, 2))
        >>> prior = Predictive(gaussian_mixture, num_samples=3)(
        ...     jax.random.key(0), n_components=2, n_samples=50, n_features=2)
        >>> prior["x"].shape, prior["covariances"].shape
        ((3, 50, 2), (3, 2, 2, 2))
    """
    check_covariance_type(covariance_type)
    covariance_type = canonical_covariance_type(covariance_type)  # VVV -> full, ...
    if not isinstance(n_components, int | np.integer) or n_components < 1:
        raise ValueError(f"Invalid value for 'n_components': {n_components}; it must be >= 1.")
    if x is not None:
        x = jnp.asarray(x)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise ValueError(f"x must have shape (N, D) or (N,), got shape {x.shape}.")
        if nan_policy not in NAN_POLICIES:
            raise ValueError(
                f"Invalid nan_policy {nan_policy!r}; choose one of {list(NAN_POLICIES)}."
            )
        if nan_policy == "marginalize":
            if _is_concrete(x):
                check_missing_data(np.asarray(x))
                if missing_patterns is None:
                    missing_patterns = find_missing_patterns(np.asarray(x))
        elif _is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
            raise ValueError(
                "x contains NaN or infinity; remove or impute those rows first, or pass "
                "nan_policy='marginalize' to read NaN as missing entries."
            )
        n_samples, n_features = x.shape
    elif n_samples is None or n_features is None:
        raise ValueError("Without data x, give n_samples and n_features to simulate data.")
    sample_weight = _check_sample_weight(sample_weight, n_samples)
    imperfect, measurement_covariances, background_log_density = _check_imperfect_data(
        x, nan_policy, missing_patterns, measurement_covariances, background_log_density
    )
    priors, proportions_prior = _split_proportions_prior(
        priors, background_log_density is not None, n_components
    )
    user_priors = check_priors(
        priors, covariance_type, n_components=n_components, n_features=n_features
    )
    if prior_parameters is None:
        prior_data = fill_missing_columns(x) if nan_policy == "marginalize" else x
        prior_parameters = default_prior_parameters(
            prior_data, covariance_type, n_features=n_features
        )
    p = prior_parameters
    K, D = n_components, n_features
    site = COVARIANCE_SITES[covariance_type]
    layout = COVARIANCE_LAYOUTS[covariance_type]

    if background_log_density is None:
        weights = numpyro.sample(
            "weights",
            user_priors.get("weights", dist.Dirichlet(jnp.full((K,), p.weight_concentration))),
        )
    else:  # a Dirichlet over K + 1 proportions, the background's last
        proportions = numpyro.sample(
            "proportions",
            proportions_prior or dist.Dirichlet(jnp.full((K + 1,), p.weight_concentration)),
        )
        weights = numpyro.deterministic("weights", proportions[:K])
        background_weight = numpyro.deterministic("background_weight", proportions[K])
    if covariance_type == "tied":
        covariance = numpyro.sample(
            "covariance",
            user_priors.get(
                "covariance", dist.InverseWishart(p.degrees_of_freedom, p.covariance_prior)
            ),
        )
    elif covariance_type in EIGEN_MODELS:
        covariance = sample_eigen_covariance(covariance_type, K, D, p, user_priors)
    with numpyro.plate("components", K):
        if covariance_type == "full":
            covariance = numpyro.sample(
                "covariances",
                per_component_prior(
                    user_priors.get(
                        "covariances",
                        dist.InverseWishart(p.degrees_of_freedom, p.covariance_prior),
                    ),
                    (D, D),
                    "covariances",
                    K,
                ),
            )
        elif covariance_type in ("diag", "spherical"):
            event_shape = (D,) if covariance_type == "diag" else ()
            if "scales" in user_priors:
                scales = numpyro.sample(
                    "scales", per_component_prior(user_priors["scales"], event_shape, "scales", K)
                )
                covariance = numpyro.deterministic(site, scales**2)
            else:
                default = dist.InverseGamma(
                    p.degrees_of_freedom / 2, jnp.asarray(p.covariance_prior) / 2
                )
                covariance = numpyro.sample(
                    site, per_component_prior(user_priors.get(site, default), event_shape, site, K)
                )
        if "means" in user_priors:
            mean_prior = per_component_prior(user_priors["means"], (D,), "means", K)
        elif layout in ("full", "tied"):
            mean_prior = dist.MultivariateNormal(
                p.mean_prior, covariance_matrix=covariance / p.mean_precision
            )
        else:
            variances = covariance if layout == "diag" else covariance[..., None]
            mean_prior = dist.Normal(p.mean_prior, jnp.sqrt(variances / p.mean_precision)).to_event(
                1
            )
        means = numpyro.sample("means", mean_prior)

    if imperfect:
        mixture = ImperfectMixtureDistribution(
            weights,
            means,
            covariance,
            layout,
            patterns=missing_patterns,
            measurement_covariances=measurement_covariances,
            background_weight=None if background_log_density is None else background_weight,
            background_log_density=background_log_density,
            n_samples=n_samples,
        )
    else:
        mixture = GaussianMixtureDistribution(weights, means, covariance, layout)
    with numpyro.plate("data", n_samples), _weighting(sample_weight):
        numpyro.sample("x", mixture, obs=x)


def _default_scalar_hyperparameters(n_features: int) -> tuple[float, float, float]:
    """:math:`(\\alpha, \\kappa_0, \\nu_0)` of
    :func:`~gaussmix.models.priors.default_prior_parameters`, as Python numbers
    (``tests/inference/test_mcmc_potential.py`` checks that they are its values)."""
    return 1.0, 1.0, float(n_features)


def _normalizing_constant(p, n_components: int, n_features: int):
    """:math:`\\log \\Gamma(\\sum_k \\alpha_k) - \\sum_k \\log \\Gamma(\\alpha_k)
    + K [\\tfrac{D}{2}(2 - \\nu_0) \\log 2 - \\log \\Gamma_D(\\nu_0 / 2)]`: by SciPy
    when :math:`\\alpha, \\nu_0` are concrete numbers, else in the program (its log-gamma
    is a large piece of code)."""
    alpha, nu = p.weight_concentration, p.degrees_of_freedom
    concrete = not isinstance(alpha, jax.core.Tracer) and not isinstance(nu, jax.core.Tracer)
    if concrete:
        import scipy.special as special

        alpha, nu = float(np.asarray(alpha)), float(np.asarray(nu))
    else:
        special, alpha, nu = jax.scipy.special, jnp.asarray(alpha), jnp.asarray(nu)
    constant = (
        special.gammaln(n_components * alpha)
        - n_components * special.gammaln(alpha)
        + n_components
        * (n_features * (1 - nu / 2) * math.log(2.0) - special.multigammaln(nu / 2, n_features))
    )
    return float(constant) if concrete else constant  # a Python number keeps x's precision


def full_covariance_potential(
    x: ArrayLike,
    n_components: int,
    prior_parameters: MixturePriorParameters | None = None,
):
    """The potential energy of :func:`gaussian_mixture` with full covariances and its
    default priors (complete, unweighted data), in closed form.

    It is the function NumPyro derives from the program (``potential_energy``), in the
    same unconstrained coordinates (NumPyro's ``biject_to`` of each site's support):
    ``weights`` :math:`v \\in \\mathbb{R}^{K-1}` by stick breaking, ``covariances``
    :math:`u_k \\in \\mathbb{R}^{D(D+1)/2}` to the Cholesky factor :math:`L_k` (strict lower
    entries as they are, diagonal :math:`e^{u_{k,dd}}`) and :math:`\\Sigma_k = L_k
    L_k^\\top`, ``means`` unchanged:

    .. math::

        -U = \\log \\mathrm{Dir}(\\pi \\mid \\alpha) + \\log |J_{\\mathrm{SB}}(v)|
            + \\sum_k \\Big[\\log p_{\\mathcal{W}^{-1}}(L_k \\mid \\nu_0, \\Psi_0)
            + \\sum_d u_{k,dd}
            + \\log \\mathcal{N}(\\mu_k \\mid m_0, L_k L_k^\\top / \\kappa_0)\\Big]
            + \\sum_n \\log \\sum_k \\pi_k \\mathcal{N}(x_n \\mid \\mu_k, L_k L_k^\\top),

    :math:`p_{\\mathcal{W}^{-1}}(L)` the density of the Cholesky factor of an inverse
    Wishart matrix (NumPyro's ``InverseWishartCholesky``): the Jacobian of
    :math:`L \\mapsto L L^\\top` that NumPyro's potential adds (the transform) and removes
    (the inverse Wishart's density of :math:`\\Sigma`) cancels. Every term is computed
    from :math:`L_k^{-1}` (one triangular solve), where NumPyro's potential factors
    :math:`L_k L_k^\\top` again for each of the three densities that read
    :math:`\\Sigma_k`: the values agree to rounding, and the program that evaluates it
    and its gradient is smaller and compiles faster.

    Args:
        x: (N, D) data, or (N,) read as D = 1.
        n_components: K.
        prior_parameters: the prior's hyperparameters; by default those of
            :func:`gaussmix.models.priors.default_prior_parameters` of ``x`` (as the
            program's).

    Returns:
        ``potential(sites) -> U``, ``sites`` the dict of unconstrained values
        ``{"weights": (K-1,), "covariances": (K, D(D+1)/2), "means": (K, D)}``.
    """
    x = jnp.asarray(x)
    x = x[:, None] if x.ndim == 1 else x
    n_features = x.shape[-1]
    p = prior_parameters
    if p is None:  # the default's scalars as Python numbers: no log-gamma compiled
        alpha, kappa, nu = _default_scalar_hyperparameters(n_features)
        p = default_prior_parameters(x, "full", n_features=n_features)._replace(
            weight_concentration=alpha, mean_precision=kappa, degrees_of_freedom=nu
        )
    # What does not depend on the sites, computed once (outside the sampler's loops).
    concentration = jnp.full((n_components,), p.weight_concentration)
    degrees_of_freedom = jnp.asarray(p.degrees_of_freedom)
    mean_precision = jnp.asarray(p.mean_precision)
    prior_cholesky = jnp.linalg.cholesky(jnp.asarray(p.covariance_prior))
    constant = _normalizing_constant(p, n_components, n_features) + n_components * (
        degrees_of_freedom * jnp.sum(jnp.log(jnp.diagonal(prior_cholesky)))
        + 0.5 * n_features * jnp.log(mean_precision / (2.0 * math.pi))
    )
    stick_breaking = dist.transforms.StickBreakingTransform()
    lower_cholesky = dist.transforms.LowerCholeskyTransform()
    # the power of (L_k)_dd in the inverse Wishart density of L_k (that of the means'
    # prior, -1, and of the transform's Jacobian, +1, cancel)
    diagonal_power = -(degrees_of_freedom + 1 + jnp.arange(n_features))

    def potential(sites: Mapping[str, jax.Array]) -> jax.Array:
        free_weights, free_covariances = sites["weights"], sites["covariances"]
        means = sites["means"]
        weights = stick_breaking(free_weights)
        log_density = jnp.sum(jax.scipy.special.xlogy(concentration - 1, weights))
        log_density += stick_breaking.log_abs_det_jacobian(free_weights, weights)
        cholesky = lower_cholesky(free_covariances)  # (K, D, D)
        log_diagonal = free_covariances[..., -n_features:]  # log (L_k)_dd
        inverse, log_determinant = _inverse_cholesky(cholesky)
        log_density += jnp.sum(diagonal_power * log_diagonal)
        log_density -= 0.5 * jnp.sum((inverse @ prior_cholesky) ** 2)
        standardized = jnp.einsum("kij,kj->ki", inverse, means - p.mean_prior)
        log_density -= 0.5 * mean_precision * jnp.sum(standardized**2)
        component = _projected_log_density(x, means, inverse, log_determinant, "full")
        log_density += jnp.sum(_mixture_log_likelihood(weights, component))
        return -(log_density + constant)

    return potential
