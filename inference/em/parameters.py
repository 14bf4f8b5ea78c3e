"""Mixture parameters in scikit-learn's layout and the precision factors of each family.

A component's covariance :math:`\\Sigma_k` is carried with scikit-learn's
``precisions_cholesky_``: for ``full`` and ``tied`` the upper triangular :math:`U` with
precision :math:`P = \\Sigma^{-1} = U U^T`, for ``diag`` and ``spherical``
:math:`1/\\sigma`. The conversions here are pure XLA (no LAPACK triangular solve inside a
compiled loop).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from gaussmix.models.priors import COVARIANCE_SITES, covariance_layout

__all__ = [
    "LOG_2PI",
    "MixtureParameters",
    "collapsed_components",
    "covariances_from_precisions_cholesky",
    "lower_triangular_inverse",
    "precisions_cholesky_from_covariances",
    "precisions_cholesky_from_precisions",
    "site_values",
    "with_covariances",
]

#: :math:`\\log 2\\pi`, the Gaussian normalizing constant.
LOG_2PI = math.log(2.0 * math.pi)


class MixtureParameters(NamedTuple):
    """Parameters of a Gaussian mixture in scikit-learn's layout.

    Attributes:
        weights: (K,).
        means: (K, D).
        covariances: (K, D, D) full | (D, D) tied | (K, D) diag | (K,) spherical.
        precisions_cholesky: same shape as ``covariances``; for full and tied the upper
            triangular :math:`U` with precision :math:`P = U U^T` (scikit-learn's
            ``precisions_cholesky_``), for diag and spherical :math:`1/\\sigma`.
    """

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array
    precisions_cholesky: jax.Array


def lower_triangular_inverse(lower: ArrayLike) -> jax.Array:
    """Inverse of lower-triangular matrices (..., D, D) by forward substitution.

    Pure XLA (a ``fori_loop`` over rows): on CPU this avoids LAPACK's ``trsm``, whose
    OpenBLAS threads contend with XLA's own thread pool inside a compiled loop.

    Example:
        >>> import jax.numpy as jnp
        >>> lower_triangular_inverse(jnp.array([[2.0, 0.0], [1.0, 1.0]])).tolist()
        [[0.5, 0.0], [-0.5, 1.0]]
    """
    lower = jnp.asarray(lower)
    n = lower.shape[-1]
    identity = jnp.eye(n, dtype=lower.dtype)

    def body(i, inverse):
        # rows >= i of `inverse` are still zero, so the full row product is the sum j < i
        row = lax.dynamic_index_in_dim(lower, i, axis=lower.ndim - 2, keepdims=False)
        done = jnp.einsum("...j,...jk->...k", row, inverse)
        pivot = lax.dynamic_index_in_dim(row, i, axis=row.ndim - 1, keepdims=True)
        new_row = (identity[i] - done) / pivot
        return lax.dynamic_update_index_in_dim(inverse, new_row, i, axis=lower.ndim - 2)

    return lax.fori_loop(0, n, body, jnp.zeros_like(lower))


def precisions_cholesky_from_covariances(covariances: ArrayLike, covariance_type: str) -> jax.Array:
    """scikit-learn's ``precisions_cholesky_`` from covariances (NaN where not PD).

    For full / tied :math:`U = L^{-T}` with :math:`\\Sigma = L L^T`, so :math:`P = U U^T`.
    """
    covariance_type = covariance_layout(covariance_type)
    covariances = jnp.asarray(covariances)
    if covariance_type in ("full", "tied"):
        lower = jnp.linalg.cholesky(covariances)
        return jnp.swapaxes(lower_triangular_inverse(lower), -1, -2)
    return 1.0 / jnp.sqrt(covariances)


def precisions_cholesky_from_precisions(precisions: ArrayLike, covariance_type: str) -> jax.Array:
    """scikit-learn's upper factor :math:`U` with :math:`P = U U^T` from precisions."""
    covariance_type = covariance_layout(covariance_type)
    precisions = jnp.asarray(precisions)
    if covariance_type in ("full", "tied"):
        flipped = jnp.flip(precisions, axis=(-1, -2))
        return jnp.flip(jnp.linalg.cholesky(flipped), axis=(-1, -2))
    return jnp.sqrt(precisions)


def covariances_from_precisions_cholesky(factor: ArrayLike, covariance_type: str) -> jax.Array:
    """Covariances :math:`(U U^T)^{-1} = U^{-T} U^{-1}` from scikit-learn's factor."""
    covariance_type = covariance_layout(covariance_type)
    factor = jnp.asarray(factor)
    if covariance_type in ("full", "tied"):
        inverse_transposed = lower_triangular_inverse(jnp.swapaxes(factor, -1, -2))
        return inverse_transposed @ jnp.swapaxes(inverse_transposed, -1, -2)
    return 1.0 / (factor * factor)


def collapsed_components(parameters: MixtureParameters, covariance_type: str) -> jax.Array:
    """(K,) True where a component's covariance is not positive definite."""
    covariance_type = covariance_layout(covariance_type)
    factor = parameters.precisions_cholesky
    n_components = parameters.means.shape[0]
    if covariance_type == "full":
        return ~jnp.all(jnp.isfinite(factor), axis=(-1, -2)) | jnp.any(
            jnp.diagonal(factor, axis1=-2, axis2=-1) <= 0, axis=-1
        )
    if covariance_type == "tied":
        bad = ~jnp.all(jnp.isfinite(factor)) | jnp.any(jnp.diagonal(factor) <= 0)
        return jnp.broadcast_to(bad, (n_components,))
    bad = ~jnp.isfinite(factor) | (parameters.covariances <= 0)
    return bad if covariance_type == "spherical" else jnp.any(bad, axis=-1)


def with_covariances(weights, means, covariances, covariance_type: str) -> MixtureParameters:
    """Parameters with these covariances and their precision factors (NaN where not PD)."""
    factor = precisions_cholesky_from_covariances(covariances, covariance_type)
    return MixtureParameters(weights, means, covariances, factor)


def site_values(
    parameters: MixtureParameters, covariance_type: str, *, with_scales: bool = False
) -> dict[str, jax.Array]:
    """The program's site dict for these parameters (``scales`` added on request)."""
    site = COVARIANCE_SITES[covariance_type]
    values = {
        "weights": parameters.weights,
        "means": parameters.means,
        site: parameters.covariances,
    }
    if with_scales:
        values["scales"] = jnp.sqrt(parameters.covariances)
    return values
