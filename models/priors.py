"""Default conjugate priors of the Gaussian mixture, scaled from the data.

The hyperparameters follow scikit-learn's ``BayesianGaussianMixture`` defaults so that
the mixture program's default prior is weakly informative and the MAP M-step of the EM
back end stays closed form:

.. math::

    \\pi &\\sim \\mathrm{Dirichlet}(\\alpha \\mathbf{1}_K), \\\\
    \\Sigma_k &\\sim \\mathcal{W}^{-1}(\\nu_0, \\Psi_0), \\qquad
    \\mu_k \\mid \\Sigma_k \\sim \\mathcal{N}(m_0, \\Sigma_k / \\kappa_0),

with :math:`\\alpha = 1`, :math:`m_0` the data mean, :math:`\\kappa_0 = 1`,
:math:`\\nu_0 = D` and :math:`\\Psi_0` the sample covariance of the data (its diagonal for
``diag``, the mean of that diagonal for ``spherical``; diagonal and spherical variances get
the one-dimensional inverse Wishart, :math:`\\mathrm{InvGamma}(\\nu_0/2, \\psi_0/2)`).
"""

from typing import NamedTuple

import jax.numpy as jnp
from jax.typing import ArrayLike

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

#: Name of the covariance site of each covariance type.
COVARIANCE_SITES = {
    "full": "covariances",
    "tied": "covariance",
    "diag": "variances",
    "spherical": "variances",
}


class MixturePriorParameters(NamedTuple):
    """Hyperparameters of the conjugate default prior.

    Attributes:
        weight_concentration: Dirichlet concentration :math:`\\alpha` (scalar).
        mean_prior: :math:`m_0`, shape (D,).
        mean_precision: :math:`\\kappa_0` (scalar).
        degrees_of_freedom: :math:`\\nu_0` (scalar), > D - 1 for full and tied.
        covariance_prior: :math:`\\Psi_0`: (D, D) for full and tied, (D,) for diag,
            scalar for spherical.
    """

    weight_concentration: ArrayLike
    mean_prior: ArrayLike
    mean_precision: ArrayLike
    degrees_of_freedom: ArrayLike
    covariance_prior: ArrayLike


def check_covariance_type(covariance_type: str) -> None:
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"Invalid value for 'covariance_type': {covariance_type!r}; "
            f"'covariance_type' should be in {list(COVARIANCE_TYPES)}"
        )


def default_prior_parameters(
    x: ArrayLike | None,
    covariance_type: str = "full",
    *,
    n_features: int | None = None,
) -> MixturePriorParameters:
    """Default hyperparameters, scaled from data ``x`` of shape (N, D).

    Without data (prior predictive simulation) the prior is centred at the origin with
    identity scale in ``n_features`` dimensions.

    Example:
        >>>         >>> p = default_prior_parameters(np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 2.0]]))
        >>> p.mean_prior.tolist(), p.covariance_prior.shape
        ([2.0, 2.0], (2, 2))
    """
    check_covariance_type(covariance_type)
    dtype = jnp.asarray(0.0).dtype
    if x is None:
        if n_features is None:
            raise ValueError("Without data, give n_features to build the default prior.")
        mean = jnp.zeros(n_features, dtype)
        covariance = jnp.eye(n_features, dtype=dtype)
    else:
        data = jnp.asarray(x, dtype=dtype)
        if data.ndim == 1:
            data = data[:, None]
        mean = data.mean(axis=0)
        if data.shape[0] > 1:
            centred = data - mean
            covariance = centred.T @ centred / (data.shape[0] - 1)
        else:
            covariance = jnp.eye(data.shape[1], dtype=dtype)
        # A constant feature would give a singular prior scale: load the diagonal.
        floor = 1e-6 * jnp.maximum(jnp.trace(covariance) / covariance.shape[0], 1e-12)
        covariance = covariance + floor * jnp.eye(covariance.shape[0], dtype=dtype)
    n_dims = mean.shape[0]
    if covariance_type in ("full", "tied"):
        covariance_prior = covariance
    elif covariance_type == "diag":
        covariance_prior = jnp.diag(covariance)
    else:
        covariance_prior = jnp.diag(covariance).mean()
    return MixturePriorParameters(
        weight_concentration=jnp.asarray(1.0, dtype),
        mean_prior=mean,
        mean_precision=jnp.asarray(1.0, dtype),
        degrees_of_freedom=jnp.asarray(float(n_dims), dtype),
        covariance_prior=covariance_prior,
    )
