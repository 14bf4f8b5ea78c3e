"""Generalized EM: the M-step for priors without a closed form, and the program's log prior.

With priors that are not conjugate the M-step climbs the expected complete-data log
posterior

.. math::

    Q(\\theta) = \\log p(\\theta)
      + \\sum_k N_k \\log \\pi_k
      + \\sum_{n,k} w_n r_{nk} \\log \\mathcal{N}(x_n \\mid \\mu_k, \\Sigma_k)

(log prior read from the NumPyro program :func:`gaussmix.models.gaussian_mixture`, the
likelihood from the sufficient statistics) by BFGS in the unconstrained space of each
site's support, and keeps the step only if it does not decrease :math:`Q`.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike
from numpyro import handlers
from numpyro.distributions.transforms import biject_to

from gaussmix.inference.em.maximization import scatter_about_means
from gaussmix.inference.em.parameters import (
    LOG_2PI,
    MixtureParameters,
    lower_triangular_inverse,
    site_values,
    with_covariances,
)
from gaussmix.inference.em.statistics import SufficientStatistics
from gaussmix.models.mixture import gaussian_mixture
from gaussmix.models.priors import COVARIANCE_SITES, MixturePriorParameters

__all__ = ["generalized_m_step", "program_log_prior"]

#: BFGS iterations per generalized M-step.
_GENERALIZED_M_STEP_ITERATIONS = 100


def _latent_values(values: Mapping, covariance_type: str, priors: Mapping) -> dict:
    """The latent sites of the program among ``values`` (``scales`` replaces variances)."""
    site = COVARIANCE_SITES[covariance_type]
    latent = {"weights": values["weights"], "means": values["means"]}
    if "scales" in priors:
        latent["scales"] = values["scales"] if "scales" in values else jnp.sqrt(values[site])
    else:
        latent[site] = values[site]
    return latent


def _program_trace(values, *, n_components, covariance_type, priors, prior_parameters):
    n_features = values["means"].shape[-1]
    data = dict(_latent_values(values, covariance_type, priors))
    data["x"] = jnp.zeros((1, n_features), values["means"].dtype)
    model = handlers.substitute(gaussian_mixture, data=data)
    return handlers.trace(model).get_trace(
        None,
        n_components=n_components,
        covariance_type=covariance_type,
        priors=dict(priors) or None,
        prior_parameters=prior_parameters,
        n_samples=1,
        n_features=n_features,
    )


def program_log_prior(
    values: Mapping[str, ArrayLike],
    *,
    n_components: int,
    covariance_type: str,
    priors: Mapping | None,
    prior_parameters: MixturePriorParameters,
) -> jax.Array:
    """Log prior density (no Jacobian) of the mixture program at constrained ``values``.

    Read from the NumPyro program :func:`gaussmix.models.gaussian_mixture` itself: the
    sum of the log densities of every sample site except the observed ``x``.

    Args:
        values: site dict with ``weights``, ``means`` and the covariance site (or
            ``scales``).
        priors: the program's ``priors`` (``None`` for its defaults).
        prior_parameters: the default prior's hyperparameters.

    Example:
        >>> import jax.numpy as jnp
        >>> from gaussmix.models.priors import default_prior_parameters
        >>> v = {"weights": jnp.array([0.5, 0.5]), "means": jnp.zeros((2, 1)),
        ...      "variances": jnp.ones(2)}
        >>> lp = program_log_prior(v, n_components=2, covariance_type="spherical",
        ...     priors=None, prior_parameters=default_prior_parameters(None, "spherical",
        ...     n_features=1))
        >>> bool(jnp.isfinite(lp))
        True
    """
    trace = _program_trace(
        values,
        n_components=n_components,
        covariance_type=covariance_type,
        priors=priors or {},
        prior_parameters=prior_parameters,
    )
    total = jnp.zeros((), values["means"].dtype)
    for name, site in trace.items():
        if site["type"] == "sample" and name != "x":
            total = total + jnp.sum(site["fn"].log_prob(site["value"]))
    return total


def _expected_log_likelihood(statistics, values, centre, covariance_type, priors):
    """:math:`\\sum_k N_k \\log\\pi_k + \\sum_{n,k} w_n r_{nk} \\log \\mathcal{N}(x_n|\\mu_k,\\Sigma_k)`."""
    site = COVARIANCE_SITES[covariance_type]
    covariances = values["scales"] ** 2 if "scales" in priors else values[site]
    counts, first, second = statistics.counts, statistics.first, statistics.second
    centred_means = values["means"] - centre
    n_features = centred_means.shape[-1]
    total = jnp.sum(counts * jnp.log(values["weights"]))
    total = total - 0.5 * n_features * LOG_2PI * jnp.sum(counts)
    if covariance_type == "full":
        lower = jnp.linalg.cholesky(covariances)
        inverse = lower_triangular_inverse(lower)
        scatter = scatter_about_means(statistics, centred_means)
        trace = jnp.sum((inverse @ scatter) * inverse, axis=(-1, -2))
        log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(lower, axis1=-2, axis2=-1)), axis=-1)
        return total - 0.5 * jnp.sum(trace + counts * log_det)
    if covariance_type == "tied":
        lower = jnp.linalg.cholesky(covariances)
        cross = first.T @ centred_means
        within = (
            second
            - cross
            - cross.T
            + jnp.einsum("k,ki,kj->ij", counts, centred_means, centred_means)
        )
        inverse = lower_triangular_inverse(lower)
        trace = jnp.sum((inverse @ within) * inverse)
        log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(lower)))
        return total - 0.5 * (trace + jnp.sum(counts) * log_det)
    if covariance_type == "diag":
        within = second - 2 * centred_means * first + counts[:, None] * centred_means**2
        return total - 0.5 * jnp.sum(within / covariances + counts[:, None] * jnp.log(covariances))
    within = (
        second
        - 2 * jnp.sum(centred_means * first, axis=1)
        + counts * jnp.sum(centred_means**2, axis=1)
    )
    return total - 0.5 * jnp.sum(within / covariances + counts * n_features * jnp.log(covariances))


def generalized_m_step(
    statistics: SufficientStatistics,
    parameters: MixtureParameters,
    *,
    centre: jax.Array,
    reg_covar: ArrayLike,
    n_components: int,
    covariance_type: str,
    priors: Mapping,
    prior_parameters: MixturePriorParameters,
) -> MixtureParameters:
    """Maximize the expected complete-data log posterior by BFGS on unconstrained sites.

    Args:
        statistics: summed statistics about ``centre`` under ``parameters``.
        parameters: the current :class:`MixtureParameters`, also the fallback: the new
            parameters are kept only if they do not lower the objective.
        centre: (D,) the centre of the statistics.
        reg_covar: added to the diagonal of the new covariances.
        n_components, covariance_type, priors, prior_parameters: the program's.

    Returns:
        The new :class:`MixtureParameters`.
    """
    site = COVARIANCE_SITES[covariance_type]

    def log_posterior(values):
        log_prior = program_log_prior(
            values,
            n_components=n_components,
            covariance_type=covariance_type,
            priors=priors,
            prior_parameters=prior_parameters,
        )
        ell = _expected_log_likelihood(statistics, values, centre, covariance_type, priors)
        return (ell + log_prior) / statistics.total_weight

    start = _latent_values(site_values(parameters, covariance_type), covariance_type, priors)
    trace = _program_trace(
        start,
        n_components=n_components,
        covariance_type=covariance_type,
        priors=priors,
        prior_parameters=prior_parameters,
    )
    transforms = {name: biject_to(trace[name]["fn"].support) for name in start}
    unconstrained = {name: transforms[name].inv(value) for name, value in start.items()}
    flat_start, unravel = ravel_pytree(unconstrained)

    def constrain(flat):
        return {name: transforms[name](value) for name, value in unravel(flat).items()}

    def objective(flat):
        value = -log_posterior(constrain(flat))
        return jnp.where(jnp.isfinite(value), value, jnp.inf)

    solution = jax.scipy.optimize.minimize(
        objective,
        flat_start,
        method="BFGS",
        options={
            "maxiter": _GENERALIZED_M_STEP_ITERATIONS,
            # per-sample gradient norm; well below what the EM tolerance can resolve
            "gtol": float(jnp.finfo(flat_start.dtype).eps) ** 0.6,
        },
    )
    values = constrain(solution.x)
    covariances = values["scales"] ** 2 if "scales" in priors else values[site]
    if covariance_type in ("full", "tied"):
        covariances = 0.5 * (covariances + jnp.swapaxes(covariances, -1, -2))
        covariances = covariances + reg_covar * jnp.eye(
            covariances.shape[-1], dtype=covariances.dtype
        )
    else:
        covariances = covariances + reg_covar
    candidate = with_covariances(values["weights"], values["means"], covariances, covariance_type)
    old_value = log_posterior(start)
    new_value = log_posterior(
        _latent_values(site_values(candidate, covariance_type), covariance_type, priors)
    )
    accept = jnp.isfinite(new_value) & ((new_value >= old_value) | ~jnp.isfinite(old_value))
    return jax.tree.map(lambda new, old: jnp.where(accept, new, old), candidate, parameters)
