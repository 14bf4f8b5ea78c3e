"""EM and MAP-EM for the Gaussian mixture program :func:`gaussmix.models.gaussian_mixture`.

One call of :func:`fit_em` is one ``jax.jit``-compiled program: every EM iteration runs
inside a ``lax.while_loop``, the ``n_init`` restarts are vmapped, the best restart is
chosen by its lower bound, and ``B`` independent datasets of one shape (``x`` of shape
(B, N, D)) are vmapped as well. A second call with the same shapes does not recompile.

E-step in exponential-family form. On data centred at :math:`c` (the weighted data mean)
the log density of component :math:`k` with precision :math:`P_k` is linear in the
per-point features :math:`\\phi(x) = [\\operatorname{vech}(x x^T), x, 1]`:

.. math::

    \\log \\pi_k + \\log \\mathcal{N}(x \\mid \\mu_k, P_k^{-1})
      = -\\tfrac12 x^T P_k x + x^T P_k \\mu_k
        - \\tfrac12 \\mu_k^T P_k \\mu_k + \\tfrac12 \\log |P_k|
        - \\tfrac{D}{2} \\log 2\\pi + \\log \\pi_k
      = \\phi(x)^T \\eta_k,

so the weighted log probabilities of a block of rows are one (n, F) @ (F, K) matrix
product with the natural parameters :math:`\\eta` (F = D(D+1)/2 + D + 1 for ``full``,
2D + 1 for ``diag``, D + 2 for ``spherical``; ``tied`` adds the shared quadratic form
row by row). The M-step needs only the sufficient statistics

.. math::

    N_k = \\sum_n w_n r_{nk},\\quad s_k = \\sum_n w_n r_{nk} x_n,\\quad
    S_k = \\sum_n w_n r_{nk} x_n x_n^T,

which are the matrix product :math:`(w \\odot r)^T \\Phi` of the same features. Rows are
processed in blocks by ``lax.scan``, so no N x K x D temporary and no full N x F feature
matrix is ever formed. On a CPU a full-covariance E-step is one compiled kernel instead
(:mod:`gaussmix.inference.native`: features, both products and the softmax fused per
cache-sized block; the same statistics to rounding), where a C++ compiler is available.
:func:`sufficient_statistics` and :func:`maximization_step` are pure: summing the
statistics of several blocks, files or devices (``lax.psum``) before the M-step gives
exact EM.

M-step:

* ``priors=None``: maximum likelihood, scikit-learn's ``GaussianMixture`` formulas
  (including ``reg_covar`` on the diagonal and the ``10 * eps`` added to :math:`N_k`).
* ``priors="default"`` or conjugate user priors (Dirichlet weights, inverse Wishart
  covariances, inverse gamma variances, with the program's mean prior
  :math:`\\mu_k \\mid \\Sigma_k \\sim \\mathcal{N}(m_0, \\Sigma_k/\\kappa_0)`): the closed-form
  MAP, e.g. for ``full``

  .. math::

      \\pi_k \\propto N_k + \\alpha_k - 1,\\quad
      \\mu_k = \\frac{s_k + \\kappa_0 m_0}{N_k + \\kappa_0},\\quad
      \\Sigma_k = \\frac{\\Psi_0 + S_k(\\mu_k) + \\kappa_0 (\\mu_k - m_0)(\\mu_k - m_0)^T}
                       {N_k + \\nu_0 + D + 2}.

* any other priors: generalized EM; the M-step climbs the expected complete-data log
  posterior (log prior from the NumPyro program, likelihood from the statistics) by BFGS
  in the unconstrained space of each site's support, and keeps the step only if it does
  not decrease the objective.

The lower bound is scikit-learn's: the mean per-sample log-likelihood (weighted mean with
``sample_weight``) of the parameters entering the iteration, plus the log prior divided
by the total weight for MAP; iterations stop when it changes by less than ``tol``.
"""

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.scipy.special import gammaln, multigammaln
from jax.typing import ArrayLike
from numpyro import handlers
from numpyro.distributions.transforms import biject_to

from gaussmix.inference import native
from gaussmix.models.mixture import check_priors, gaussian_mixture
from gaussmix.models.priors import (
    COVARIANCE_SITES,
    MixturePriorParameters,
    check_covariance_type,
    default_prior_parameters,
)

__all__ = [
    "INIT_PARAMS",
    "METHODS",
    "ConjugatePrior",
    "ConvergenceWarning",
    "EMResult",
    "EMState",
    "KMeansResult",
    "MixtureParameters",
    "SufficientStatistics",
    "check_finite_input",
    "conjugate_log_prior",
    "covariances_from_precisions_cholesky",
    "design_matrix",
    "estimate_weighted_log_prob",
    "fit_em",
    "kmeans_plusplus",
    "lloyd",
    "log_responsibilities",
    "lower_triangular_inverse",
    "maximization_step",
    "natural_parameters",
    "precision_advice",
    "precisions_cholesky_from_covariances",
    "precisions_cholesky_from_precisions",
    "program_log_prior",
    "site_values",
    "sufficient_statistics",
]

#: The M-step that ran, as reported in :attr:`EMResult.method`.
METHODS = ("maximum_likelihood", "conjugate_map", "generalized_em")
#: Initialization methods (scikit-learn's ``init_params``).
INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")

_LOG_2PI = math.log(2.0 * math.pi)
#: Bytes of one block of rows (features and (n, K) temporaries) per scan step: on a CPU a
#: block stays in the cache between the E-step and M-step products; an accelerator wants
#: few, large products.
_CPU_BLOCK_BYTES = 4 * 2**20
_ACCELERATOR_BLOCK_BYTES = 256 * 2**20
#: A batch of datasets whose design matrices and (N, K) temporaries take at most this
#: much is one block per dataset, its features computed once per fit: measured 1.2-1.7x
#: faster than streaming for batches (one dataset alone runs faster streamed).
_BATCH_DESIGN_CACHE_BYTES = 2**30
#: Fewest rows per block (a power of two): smaller blocks cost more in loop steps than
#: they save in cache (many small datasets fitted as a batch).
_MIN_BLOCK_ROWS = 256
#: Rows per block are a multiple of this: XLA's CPU kernels lose up to a third of their
#: speed on odd sizes (E2's 5405-row blocks against 5400 or 4096).
_BLOCK_ALIGNMENT = 64
#: Above this many features the full-covariance design matrix is one gather instead of
#: one slice product per feature (fewer operations to compile).
_SLICED_PRODUCTS_MAX_FEATURES = 64
#: BFGS iterations per generalized M-step.
_GENERALIZED_M_STEP_ITERATIONS = 100


class ConvergenceWarning(UserWarning):
    """The best initialization stopped at ``max_iter`` before the lower bound converged."""


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


class SufficientStatistics(NamedTuple):
    """Sums over data points; add them over blocks or devices, then call the M-step.

    All first and second moments are of the centred data ``x - centre``.

    Attributes:
        counts: (K,) :math:`\\sum_n w_n r_{nk}`.
        first: (K, D) :math:`\\sum_n w_n r_{nk} x_n`.
        second: full (K, D, D) :math:`\\sum_n w_n r_{nk} x_n x_n^T`; tied (D, D)
            :math:`\\sum_n w_n x_n x_n^T`; diag (K, D) :math:`\\sum_n w_n r_{nk} x_n^2`;
            spherical (K,) :math:`\\sum_n w_n r_{nk} \\lVert x_n \\rVert^2`.
        log_likelihood: () :math:`\\sum_n w_n \\log p(x_n)` under the parameters of the
            E-step.
        total_weight: () :math:`\\sum_n w_n`.
    """

    counts: jax.Array
    first: jax.Array
    second: jax.Array
    log_likelihood: jax.Array
    total_weight: jax.Array


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


class EMState(NamedTuple):
    """State of one EM run.

    Attributes:
        parameters: current :class:`MixtureParameters`.
        lower_bound: () lower bound of the parameters that entered the last iteration.
        n_iter: () iterations done.
        converged: () whether the last change of the lower bound was below ``tol``.
        lower_bounds: (max_iter + 1,) lower bound of each iteration (one spare slot).
        collapsed_component: () index of the first component whose covariance stopped
            being positive definite, -1 if none.
    """

    parameters: MixtureParameters
    lower_bound: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    lower_bounds: jax.Array
    collapsed_component: jax.Array


class EMResult(NamedTuple):
    """Result of :func:`fit_em`; with batched data every field has a leading (B,) axis.

    Attributes:
        params: the program's sites: ``weights`` (K,), ``means`` (K, D) and the
            covariance site (``covariances`` (K, D, D) | ``covariance`` (D, D) |
            ``variances`` (K, D) or (K,)); plus ``scales`` when the priors name it. A
            valid point of :func:`gaussmix.models.gaussian_mixture`, usable as NUTS
            init values.
        precisions_cholesky: scikit-learn's ``precisions_cholesky_`` layout.
        lower_bound: () mean per-sample log-likelihood (+ log prior / total weight for
            MAP) of the last iteration, scikit-learn's ``lower_bound_``.
        lower_bounds: (max_iter,) the lower bound of each iteration, entries past
            ``n_iter`` filled with the final value.
        n_iter: () iterations run by the best initialization.
        converged: () whether it converged.
        method: ``"maximum_likelihood"``, ``"conjugate_map"`` or ``"generalized_em"``.
    """

    params: dict[str, jax.Array]
    precisions_cholesky: jax.Array
    lower_bound: jax.Array
    lower_bounds: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    method: str


class KMeansResult(NamedTuple):
    """Result of :func:`lloyd`.

    Attributes:
        centers: (K, D). labels: (N,) index of the closest centre.
        inertia: () :math:`\\sum_n w_n \\lVert x_n - c_{\\ell_n} \\rVert^2`.
        n_iter: () Lloyd iterations. converged: () whether it stopped before max_iter.
    """

    centers: jax.Array
    labels: jax.Array
    inertia: jax.Array
    n_iter: jax.Array
    converged: jax.Array


# ---------------------------------------------------------------------------------------
# Feature maps, natural parameters, precision factors


def _triangle(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n_features)


def _product_columns(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Column pairs (i, j) of ``[x, 1]`` whose products are the full-covariance features
    ``[x_i x_j (i <= j), x, 1]``; index D is the column of ones."""
    rows, cols = _triangle(n_features)
    linear = np.arange(n_features)
    ones = np.full(n_features, n_features)
    left = np.concatenate([rows, linear, [n_features]])
    right = np.concatenate([cols, ones, [n_features]])
    return left, right


def design_matrix(x_centred: jax.Array, covariance_type: str) -> jax.Array:
    """Per-point exponential-family features :math:`[q(x), x, 1]`.

    Args:
        x_centred: (n, D) centred data.
        covariance_type: "full" (q = upper triangle of :math:`x x^T`, D(D+1)/2 columns),
            "diag" (:math:`x^2`, D), "spherical" (:math:`\\lVert x\\rVert^2`, 1) or
            "tied" (no quadratic columns).

    Returns:
        (n, F) features.
    """
    n = x_centred.shape[0]
    extended = jnp.concatenate([x_centred, jnp.ones((n, 1), x_centred.dtype)], axis=1)
    if covariance_type == "diag":
        return jnp.concatenate([x_centred * x_centred, extended], axis=1)
    if covariance_type == "full":
        n_features = x_centred.shape[1]
        if n_features > _SLICED_PRODUCTS_MAX_FEATURES:
            # one gather-multiply fusion: fewer operations to compile for wide data
            left, right = _product_columns(n_features)
            return extended[:, left] * extended[:, right]
        # row i of the upper triangle, x_i * x_(i..D-1): contiguous slices vectorize
        # (XLA's gather over columns does not)
        rows = [x_centred[:, i : i + 1] * x_centred[:, i:] for i in range(n_features)]
        return jnp.concatenate([*rows, extended], axis=1)
    if covariance_type == "spherical":
        squared_norm = jnp.sum(x_centred * x_centred, axis=1, keepdims=True)
        return jnp.concatenate([squared_norm, extended], axis=1)
    return extended


def natural_parameters(
    parameters: MixtureParameters, centre: jax.Array, covariance_type: str
) -> jax.Array:
    """Natural parameters :math:`\\eta` (F, K) so that ``design_matrix(x - centre) @ eta``
    is :math:`\\log \\pi_k + \\log \\mathcal{N}(x \\mid \\mu_k, \\Sigma_k)` (minus the shared
    quadratic form for ``tied``, see :func:`estimate_weighted_log_prob`)."""
    weights, means, _, factor = parameters
    centred_means = means - centre
    n_features = means.shape[-1]
    if covariance_type == "full":
        precisions = factor @ jnp.swapaxes(factor, -1, -2)
        rows, cols = _triangle(n_features)
        scale = jnp.asarray(np.where(rows == cols, -0.5, -1.0), precisions.dtype)
        quadratic = precisions[:, rows, cols] * scale
        linear = jnp.einsum("kij,kj->ki", precisions, centred_means)
        half_log_det = jnp.sum(jnp.log(jnp.diagonal(factor, axis1=-2, axis2=-1)), axis=-1)
    elif covariance_type == "tied":
        precision = factor @ factor.T
        quadratic = jnp.zeros((means.shape[0], 0), means.dtype)
        linear = centred_means @ precision
        half_log_det = jnp.sum(jnp.log(jnp.diagonal(factor)))
    elif covariance_type == "diag":
        precisions = factor * factor
        quadratic = -0.5 * precisions
        linear = precisions * centred_means
        half_log_det = jnp.sum(jnp.log(factor), axis=-1)
    else:
        precisions = factor * factor
        quadratic = -0.5 * precisions[:, None]
        linear = precisions[:, None] * centred_means
        half_log_det = n_features * jnp.log(factor)
    constant = (
        jnp.log(weights)
        - 0.5 * jnp.sum(centred_means * linear, axis=-1)
        + half_log_det
        - 0.5 * n_features * _LOG_2PI
    )
    return jnp.concatenate([quadratic, linear, constant[:, None]], axis=1).T


def _shared_quadratic(x_centred: jax.Array, factor: jax.Array) -> jax.Array:
    """(n,) :math:`-\\tfrac12 x^T P x` of the tied precision :math:`P = U U^T`."""
    projected = x_centred @ factor
    return -0.5 * jnp.sum(projected * projected, axis=1)


def _block_log_prob(x_centred, natural, factor, covariance_type, features=None):
    if features is None:
        features = design_matrix(x_centred, covariance_type)
    log_prob = features @ natural
    if covariance_type == "tied":
        log_prob = log_prob + _shared_quadratic(x_centred, factor)[:, None]
    return log_prob, features


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
    covariances = jnp.asarray(covariances)
    if covariance_type in ("full", "tied"):
        lower = jnp.linalg.cholesky(covariances)
        return jnp.swapaxes(lower_triangular_inverse(lower), -1, -2)
    return 1.0 / jnp.sqrt(covariances)


def precisions_cholesky_from_precisions(precisions: ArrayLike, covariance_type: str) -> jax.Array:
    """scikit-learn's upper factor :math:`U` with :math:`P = U U^T` from precisions."""
    precisions = jnp.asarray(precisions)
    if covariance_type in ("full", "tied"):
        flipped = jnp.flip(precisions, axis=(-1, -2))
        return jnp.flip(jnp.linalg.cholesky(flipped), axis=(-1, -2))
    return jnp.sqrt(precisions)


def covariances_from_precisions_cholesky(factor: ArrayLike, covariance_type: str) -> jax.Array:
    """Covariances :math:`(U U^T)^{-1} = U^{-T} U^{-1}` from scikit-learn's factor."""
    factor = jnp.asarray(factor)
    if covariance_type in ("full", "tied"):
        inverse_transposed = lower_triangular_inverse(jnp.swapaxes(factor, -1, -2))
        return inverse_transposed @ jnp.swapaxes(inverse_transposed, -1, -2)
    return 1.0 / (factor * factor)


def _collapsed(parameters: MixtureParameters, covariance_type: str) -> jax.Array:
    """(K,) True where a component's covariance is not positive definite."""
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


def _with_covariances(weights, means, covariances, covariance_type) -> MixtureParameters:
    factor = precisions_cholesky_from_covariances(covariances, covariance_type)
    return MixtureParameters(weights, means, covariances, factor)


# ---------------------------------------------------------------------------------------
# E-step for prediction and scoring


def _block_size(
    n_rows: int,
    n_features: int,
    n_components: int,
    covariance_type: str,
    itemsize: int,
    block_rows: int | None,
    n_datasets: int = 1,
) -> int:
    """Rows per block: ``block_rows`` when given, else blocks of features and a few (n, K)
    temporaries near ``_CPU_BLOCK_BYTES`` per dataset (``_ACCELERATOR_BLOCK_BYTES`` off the
    CPU), at least ``_MIN_BLOCK_ROWS``: as many blocks as the largest power of two of rows
    within that budget needs, evened out and rounded up to ``_BLOCK_ALIGNMENT`` rows; data
    of at most two such blocks is one block. The ``n_datasets`` of a batch are processed
    together: one block each while the whole batch takes at most
    ``_BATCH_DESIGN_CACHE_BYTES``, else blocks of at most ``_ACCELERATOR_BLOCK_BYTES`` in
    all (the many small products of a batch gain more from long blocks than from the
    cache)."""
    if block_rows is not None:
        return int(max(1, min(n_rows, block_rows)))
    width = _feature_count(n_features, covariance_type) + 2 * n_components
    whole_batch = n_rows * (2 * width + n_components) * itemsize * n_datasets
    if n_datasets > 1 and whole_batch <= _BATCH_DESIGN_CACHE_BYTES:
        return int(max(1, n_rows))
    on_cpu = jax.default_backend() == "cpu"
    budget = _CPU_BLOCK_BYTES if on_cpu else _ACCELERATOR_BLOCK_BYTES
    batch_budget = min(budget * n_datasets, _ACCELERATOR_BLOCK_BYTES)
    target = max(_MIN_BLOCK_ROWS, batch_budget // (width * itemsize * n_datasets))
    if n_rows <= 2 * target:
        return int(max(1, n_rows))
    # as many blocks as the power of two below the target needs, evened out so that the
    # last block's padding stays small, aligned
    n_blocks = -(-n_rows // (1 << (target.bit_length() - 1)))
    rows = -(-n_rows // n_blocks)
    return -(-rows // _BLOCK_ALIGNMENT) * _BLOCK_ALIGNMENT


def _feature_count(n_features: int, covariance_type: str) -> int:
    quadratic = {
        "full": n_features * (n_features + 1) // 2,
        "tied": 0,
        "diag": n_features,
        "spherical": 1,
    }[covariance_type]
    return quadratic + n_features + 1


def _split_blocks(array: jax.Array, block_rows: int, fill=0.0) -> jax.Array:
    """(N, ...) -> (n_blocks, block_rows, ...), padding the last block with ``fill``."""
    n_rows = array.shape[0]
    n_blocks = -(-n_rows // block_rows)
    padding = n_blocks * block_rows - n_rows
    if padding:
        pad_width = [(0, padding)] + [(0, 0)] * (array.ndim - 1)
        array = jnp.pad(array, pad_width, constant_values=fill)
    return array.reshape((n_blocks, block_rows, *array.shape[1:]))


def _whitened_block(x_block, means, factor, covariance_type):
    """(n, K) squared Mahalanobis distances and their logarithms.

    Centred and whitened per component, :math:`z = U_k^T (x - \\mu_k) / h^2` with
    :math:`h = 2^{\\lceil e/2 \\rceil}` for :math:`\\max_d |x_d - \\mu_{kd}| < 2^e`, so
    that :math:`\\lVert z\\rVert^2` stays finite for any finite point; the squared
    distance is :math:`\\lVert z\\rVert^2 h^4` (infinite only where it exceeds the
    dtype's range; its logarithm never is). Scaling by powers of two is exact, and by
    :math:`h^{-1}` twice keeps every factor a normal number (XLA flushes subnormals).
    """
    difference = x_block[:, None, :] - means[None]  # (n, K, D)
    _, exponent = jnp.frexp(jnp.max(jnp.abs(difference), axis=-1))  # (n, K)
    half = (exponent + 1) // 2
    inverse = jnp.ldexp(jnp.ones((), x_block.dtype), -half)[..., None]
    unit = difference * inverse * inverse
    if covariance_type == "full":
        whitened = jnp.einsum("nkd,kde->nke", unit, factor)
    elif covariance_type == "tied":
        whitened = jnp.einsum("nkd,de->nke", unit, factor)
    elif covariance_type == "diag":
        whitened = unit * factor
    else:
        whitened = unit * factor[:, None]
    unit_distance = jnp.sum(whitened * whitened, axis=-1)  # (n, K)
    scale = jnp.ldexp(jnp.ones((), x_block.dtype), half)
    distance = unit_distance * scale * scale * scale * scale
    log_distance = jnp.log(unit_distance) + 4 * jnp.log(scale)
    return distance, log_distance


def _prediction_terms(x, weights, means, precisions_cholesky, covariance_type, block_rows):
    """(K,) :math:`\\log \\pi_k + \\tfrac12 \\log |P_k| - \\tfrac{D}{2} \\log 2\\pi`, (N, K)
    squared Mahalanobis distances and their logarithms, block by block."""
    x = jnp.asarray(x)
    weights, means, factor = (
        jnp.asarray(a, x.dtype) for a in (weights, means, precisions_cholesky)
    )
    if covariance_type in ("full", "tied"):
        half_log_det = jnp.sum(jnp.log(jnp.diagonal(factor, axis1=-2, axis2=-1)), axis=-1)
    elif covariance_type == "diag":
        half_log_det = jnp.sum(jnp.log(factor), axis=-1)
    else:
        half_log_det = means.shape[-1] * jnp.log(factor)
    n_rows, n_features = x.shape
    n_components = means.shape[0]
    if block_rows is None:
        # three (n, K, D) temporaries per block within the E-step's block budget
        budget = _CPU_BLOCK_BYTES if jax.default_backend() == "cpu" else _ACCELERATOR_BLOCK_BYTES
        width = 3 * n_components * n_features + 4 * n_components
        block_rows = max(_MIN_BLOCK_ROWS, budget // (width * x.dtype.itemsize))
    block = _block_size(
        n_rows, n_features, n_components, covariance_type, x.dtype.itemsize, block_rows
    )
    blocks = _split_blocks(x, block)

    def one_block(x_block):
        return _whitened_block(x_block, means, factor, covariance_type)

    distance, log_distance = lax.map(one_block, blocks)
    constant = jnp.log(weights) + half_log_det - 0.5 * n_features * _LOG_2PI
    return (
        constant,
        distance.reshape(-1, n_components)[:n_rows],
        log_distance.reshape(-1, n_components)[:n_rows],
    )


def estimate_weighted_log_prob(
    x: ArrayLike,
    weights: ArrayLike,
    means: ArrayLike,
    precisions_cholesky: ArrayLike,
    covariance_type: str,
    *,
    block_rows: int | None = None,
) -> jax.Array:
    """:math:`\\log \\pi_k + \\log \\mathcal{N}(x_n \\mid \\mu_k, \\Sigma_k)`, shape (N, K).

    .. math::

        \\log \\pi_k + \\tfrac12 \\log |P_k| - \\tfrac{D}{2} \\log 2\\pi
          - \\tfrac12 \\lVert U_k^T (x_n - \\mu_k) \\rVert^2,\\qquad P_k = U_k U_k^T,

    centred at each mean and whitened by the precision's Cholesky factor before squaring
    (no expanded :math:`x^T P x - 2 \\mu^T P x + \\mu^T P \\mu`, which cancels or
    overflows far from the data), block by block. A point so far out that its squared
    distance exceeds the dtype's range gets :math:`-\\infty`.

    Args:
        x: (N, D). weights: (K,). means: (K, D).
        precisions_cholesky: scikit-learn's layout for ``covariance_type``.
        block_rows: rows per block (default: (n, K, D) temporaries of about 4 MiB on a
            CPU).

    Example:
        >>> import jax.numpy as jnp
        >>> lp = estimate_weighted_log_prob(jnp.zeros((3, 2)), jnp.array([0.5, 0.5]),
        ...     jnp.zeros((2, 2)), jnp.ones((2, 2)), "diag")
        >>> lp.shape
        (3, 2)
    """
    constant, distance, _ = _prediction_terms(
        x, weights, means, precisions_cholesky, covariance_type, block_rows
    )
    return constant - 0.5 * distance


def log_responsibilities(
    x: ArrayLike,
    weights: ArrayLike,
    means: ArrayLike,
    precisions_cholesky: ArrayLike,
    covariance_type: str,
    *,
    block_rows: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Per-point log-likelihood (N,) and log responsibilities (N, K).

    .. math::

        \\log p(x_n) = \\operatorname{logsumexp}_k \\ell_{nk},\\qquad
        \\log r_{nk} = \\ell_{nk} - \\log p(x_n),

    with :math:`\\ell` of :func:`estimate_weighted_log_prob`. Responsibilities are finite
    and sum to 1 for every finite point: where all :math:`\\ell_{nk}` overflow to
    :math:`-\\infty` (a squared Mahalanobis distance beyond the dtype's range) they are
    their limit, all the mass on the component nearest in Mahalanobis distance (shared
    equally by exact ties); :math:`\\log p(x_n)` is then :math:`-\\infty`. A NaN
    log-likelihood means that ``x - means`` itself overflowed.

    Example:
        >>> import jax.numpy as jnp
        >>> norm, log_resp = log_responsibilities(jnp.zeros((3, 2)), jnp.array([0.5, 0.5]),
        ...     jnp.zeros((2, 2)), jnp.ones(2), "spherical")
        >>> jnp.exp(log_resp).sum(axis=1).tolist()
        [1.0, 1.0, 1.0]
    """
    constant, distance, log_distance = _prediction_terms(
        x, weights, means, precisions_cholesky, covariance_type, block_rows
    )
    # Relative to the nearest component's distance, so that far out (where -d/2 ~ -1e45
    # would absorb log weights and log determinants) the terms that tell the components
    # apart survive: l_k - l_max = r_k - r_max with r_k = c_k - (d_k - d_min) / 2.
    nearest_distance = jnp.min(distance, axis=1, keepdims=True)
    relative = constant - 0.5 * (distance - nearest_distance)
    largest = jnp.max(relative, axis=1, keepdims=True)
    shifted = relative - jnp.where(jnp.isfinite(largest), largest, 0.0)
    log_total = jnp.log(jnp.sum(jnp.exp(shifted), axis=1, keepdims=True))
    norm = (largest + log_total - 0.5 * nearest_distance)[:, 0]
    norm = jnp.where(jnp.isinf(nearest_distance[:, 0]), -jnp.inf, norm)
    # the limit far out: the nearest components (in Mahalanobis distance) share the mass
    nearest = log_distance == jnp.min(log_distance, axis=1, keepdims=True)
    limit = jnp.where(nearest, -jnp.log(jnp.sum(nearest, axis=1, keepdims=True)), -jnp.inf)
    overflowed = (norm == -jnp.inf)[:, None]
    return norm, jnp.where(overflowed, limit, shifted - log_total)


# ---------------------------------------------------------------------------------------
# Sufficient statistics


def _unpack_statistics(packed, scatter, log_likelihood, total_weight, n_features, covariance_type):
    quadratic_size = _feature_count(n_features, covariance_type) - n_features - 1
    counts = packed[:, -1]
    first = packed[:, quadratic_size : quadratic_size + n_features]
    if covariance_type == "full":
        # position of (min(i, j), max(i, j)) in the packed upper triangle
        rows, cols = _triangle(n_features)
        position = np.zeros((n_features, n_features), dtype=np.int32)
        position[rows, cols] = np.arange(rows.size)
        position[cols, rows] = np.arange(rows.size)
        second = packed[:, :quadratic_size][:, position]
    elif covariance_type == "tied":
        second = scatter
    elif covariance_type == "diag":
        second = packed[:, :n_features]
    else:
        second = packed[:, 0]
    return SufficientStatistics(counts, first, second, log_likelihood, total_weight)


def _scan_packed(
    x_blocks, weight_blocks, responsibility_fn, n_components, covariance_type, feature_blocks=None
):
    """Accumulate packed statistics over row blocks: (packed (K, F), scatter, log-likelihood).

    ``responsibility_fn(index, x_block, features) -> (log p(x) (n,), unnormalized
    responsibilities (n, K), row scale (n,), features (n, F))``; responsibilities are their
    product. ``features`` is the block of ``feature_blocks`` when given (the design matrix
    computed once per fit), else None (computed per block).
    """
    n_features = x_blocks.shape[-1]
    dtype = x_blocks.dtype
    n_columns = _feature_count(n_features, covariance_type)
    scatter_size = n_features if covariance_type == "tied" else 0

    def body(carry, inputs):
        packed, scatter, log_likelihood = carry
        index, x_block, w_block, features = inputs
        norm, resp, row_scale, features = responsibility_fn(index, x_block, features)
        weighted_resp = resp * (row_scale * w_block)[:, None]
        packed = packed + weighted_resp.T @ features
        if scatter_size:
            scatter = scatter + (x_block * w_block[:, None]).T @ x_block
        log_likelihood = log_likelihood + jnp.sum(w_block * norm)
        return (packed, scatter, log_likelihood), None

    init = (
        jnp.zeros((n_components, n_columns), dtype),
        jnp.zeros((scatter_size, scatter_size), dtype),
        jnp.zeros((), dtype),
    )
    indices = jnp.arange(x_blocks.shape[0])
    return lax.scan(body, init, (indices, x_blocks, weight_blocks, feature_blocks))[0]


def _scan_statistics(
    x_blocks, weight_blocks, responsibility_fn, n_components, covariance_type, feature_blocks=None
):
    """:func:`_scan_packed`, unpacked into :class:`SufficientStatistics`."""
    packed, scatter, log_likelihood = _scan_packed(
        x_blocks, weight_blocks, responsibility_fn, n_components, covariance_type, feature_blocks
    )
    return _unpack_statistics(
        packed,
        scatter,
        log_likelihood,
        jnp.sum(weight_blocks),
        x_blocks.shape[-1],
        covariance_type,
    )


def _estep_statistics(
    x_blocks, weight_blocks, parameters, centre, covariance_type, use_kernel, feature_blocks=None
):
    """Statistics of the blocks; ``use_kernel``: through the compiled CPU kernel of a
    full-covariance mixture (:mod:`gaussmix.inference.native`) when ``feature_blocks`` is
    None, the features being built inside it."""
    natural = natural_parameters(parameters, centre, covariance_type)
    factor = parameters.precisions_cholesky
    n_components = parameters.means.shape[0]

    def responsibility_fn(index, x_block, features):
        log_prob, features = _block_log_prob(x_block, natural, factor, covariance_type, features)
        # one exponential per entry: r = exp(l - max) / sum_k exp(l - max)
        largest = jnp.max(log_prob, axis=1, keepdims=True)
        unnormalized = jnp.exp(log_prob - largest)
        total = jnp.sum(unnormalized, axis=1)
        norm = largest[:, 0] + jnp.log(total)
        return norm, unnormalized, 1.0 / total, features

    def with_xla(x_blocks, weight_blocks, natural):
        del natural  # responsibility_fn holds the same
        packed, _, log_likelihood = _scan_packed(
            x_blocks, weight_blocks, responsibility_fn, n_components, covariance_type
        )
        return packed, log_likelihood

    def with_kernel(x_blocks, weight_blocks, natural):
        rows = x_blocks.reshape(-1, x_blocks.shape[-1])
        return native.full_statistics(rows, weight_blocks.reshape(-1), natural)

    if use_kernel and feature_blocks is None:
        # the compiled CPU kernel; XLA's blocks on any other platform
        packed, log_likelihood = lax.platform_dependent(
            x_blocks, weight_blocks, natural, cpu=with_kernel, default=with_xla
        )
        scatter = jnp.zeros((0, 0), x_blocks.dtype)
    else:
        packed, scatter, log_likelihood = _scan_packed(
            x_blocks,
            weight_blocks,
            responsibility_fn,
            n_components,
            covariance_type,
            feature_blocks,
        )
    return _unpack_statistics(
        packed, scatter, log_likelihood, jnp.sum(weight_blocks), x_blocks.shape[-1], covariance_type
    )


def sufficient_statistics(
    x: ArrayLike,
    parameters: MixtureParameters,
    *,
    covariance_type: str,
    centre: ArrayLike,
    sample_weight: ArrayLike | None = None,
    block_rows: int | None = None,
) -> SufficientStatistics:
    """E-step statistics of a chunk of data (pure; sum them over chunks or devices).

    Args:
        x: (n, D) one chunk of the data, in the data's coordinates.
        parameters: the current :class:`MixtureParameters`.
        covariance_type: "full", "tied", "diag" or "spherical".
        centre: (D,) the same point for every chunk (the global weighted data mean):
            moments are taken about it, so that the expanded quadratic forms stay
            accurate.
        sample_weight: (n,) non-negative weights, default ones.
        block_rows: rows per matrix product; default as in :func:`fit_em`.

    A full-covariance mixture's statistics go through the compiled CPU kernel where
    :func:`gaussmix.inference.native.usable` says so when this is traced.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[0.0, 0.0], [1.0, 1.0], [4.0, 4.0], [5.0, 5.0]])
        >>> p = MixtureParameters(jnp.array([0.5, 0.5]), jnp.array([[0.5, 0.5], [4.5, 4.5]]),
        ...     jnp.ones((2, 2)), jnp.ones((2, 2)))
        >>> a = sufficient_statistics(x[:2], p, covariance_type="diag", centre=x.mean(0))
        >>> b = sufficient_statistics(x[2:], p, covariance_type="diag", centre=x.mean(0))
        >>> total = jax.tree.map(jnp.add, a, b)
        >>> [round(float(c), 3) for c in total.counts]
        [2.0, 2.0]
    """
    x = jnp.asarray(x)
    dtype = x.dtype
    weight = (
        jnp.ones(x.shape[0], dtype) if sample_weight is None else jnp.asarray(sample_weight, dtype)
    )
    block = _block_size(
        x.shape[0],
        x.shape[1],
        parameters.means.shape[0],
        covariance_type,
        dtype.itemsize,
        block_rows,
    )
    x_blocks = _split_blocks(x - jnp.asarray(centre, dtype), block)
    weight_blocks = _split_blocks(weight, block)
    use_kernel = covariance_type == "full" and native.usable(dtype)
    return _estep_statistics(
        x_blocks, weight_blocks, parameters, jnp.asarray(centre, dtype), covariance_type, use_kernel
    )


# ---------------------------------------------------------------------------------------
# M-step


def _scatter_about_means(statistics, centred_means):
    """Per-component :math:`\\sum_n w r (x - \\mu)(x - \\mu)^T` (full) from statistics."""
    counts, first, second = statistics.counts, statistics.first, statistics.second
    cross = first[:, :, None] * centred_means[:, None, :]
    return (
        second
        - cross
        - jnp.swapaxes(cross, -1, -2)
        + counts[:, None, None] * centred_means[:, :, None] * centred_means[:, None, :]
    )


def _maximum_likelihood_m_step(statistics, covariance_type, centre, reg_covar):
    counts, first, second = statistics.counts, statistics.first, statistics.second
    dtype = first.dtype
    n_features = first.shape[-1]
    regularized_counts = counts + 10 * jnp.finfo(dtype).eps
    weights = regularized_counts / jnp.sum(regularized_counts)
    centred_means = first / regularized_counts[:, None]
    if covariance_type == "full":
        scatter = _scatter_about_means(statistics, centred_means)
        covariances = scatter / regularized_counts[:, None, None] + reg_covar * jnp.eye(
            n_features, dtype=dtype
        )
    elif covariance_type == "tied":
        between = jnp.einsum("k,ki,kj->ij", regularized_counts, centred_means, centred_means)
        covariances = (second - between) / jnp.sum(regularized_counts) + reg_covar * jnp.eye(
            n_features, dtype=dtype
        )
    elif covariance_type == "diag":
        covariances = second / regularized_counts[:, None] - centred_means**2 + reg_covar
    else:
        covariances = (
            second / regularized_counts - jnp.sum(centred_means**2, axis=1)
        ) / n_features + reg_covar
    return _with_covariances(weights, centred_means + centre, covariances, covariance_type)


def _conjugate_m_step(statistics, covariance_type, centre, reg_covar, prior: ConjugatePrior):
    counts, first, second = statistics.counts, statistics.first, statistics.second
    dtype = first.dtype
    n_components, n_features = first.shape
    unnormalized = counts + prior.weight_concentration - 1
    weights = unnormalized / jnp.sum(unnormalized)
    kappa = prior.mean_precision
    centred_prior_mean = prior.mean_prior - centre
    centred_means = (first + kappa * centred_prior_mean) / (counts + kappa)[:, None]
    offset = centred_means - centred_prior_mean
    nu, scale = prior.covariance_concentration, prior.covariance_scale
    identity = jnp.eye(n_features, dtype=dtype)
    if covariance_type == "full":
        numerator = (
            scale
            + _scatter_about_means(statistics, centred_means)
            + kappa * offset[:, :, None] * offset[:, None, :]
        )
        covariances = numerator / (counts + nu + n_features + 2)[:, None, None]
        covariances = covariances + reg_covar * identity
    elif covariance_type == "tied":
        cross = first.T @ centred_means
        within = (
            second
            - cross
            - cross.T
            + jnp.einsum("k,ki,kj->ij", counts, centred_means, centred_means)
        )
        numerator = scale + within + kappa * offset.T @ offset
        total = jnp.sum(counts)
        covariances = numerator / (total + n_components + nu + n_features + 1)
        covariances = covariances + reg_covar * identity
    elif covariance_type == "diag":
        within = second - 2 * centred_means * first + counts[:, None] * centred_means**2
        covariances = (2 * scale + within + kappa * offset**2) / (counts[:, None] + 2 * nu + 3)
        covariances = covariances + reg_covar
    else:
        within = (
            second
            - 2 * jnp.sum(centred_means * first, axis=1)
            + counts * jnp.sum(centred_means**2, axis=1)
        )
        numerator = 2 * scale + within + kappa * jnp.sum(offset**2, axis=1)
        covariances = numerator / (counts * n_features + n_features + 2 * nu + 2) + reg_covar
    return _with_covariances(weights, centred_means + centre, covariances, covariance_type)


def maximization_step(
    statistics: SufficientStatistics,
    *,
    covariance_type: str,
    centre: ArrayLike,
    reg_covar: ArrayLike = 1e-6,
    prior: ConjugatePrior | None = None,
) -> MixtureParameters:
    """Closed-form M-step from summed statistics (pure).

    Args:
        statistics: :class:`SufficientStatistics` summed over all data, about ``centre``.
        covariance_type: "full", "tied", "diag" or "spherical".
        centre: (D,) the centre the statistics were taken about.
        reg_covar: added to the diagonal of every covariance.
        prior: ``None`` for maximum likelihood (scikit-learn's estimates), else the
            :class:`ConjugatePrior` whose MAP is returned.

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
    if prior is None:
        return _maximum_likelihood_m_step(statistics, covariance_type, centre, reg_covar)
    return _conjugate_m_step(statistics, covariance_type, centre, reg_covar, prior)


# ---------------------------------------------------------------------------------------
# Priors: classification, the program's log prior, generalized M-step


def _unwrap(distribution):
    while isinstance(distribution, dist.Independent | dist.ExpandedDistribution):
        distribution = distribution.base_dist
    return distribution


def _is_conjugate(priors: Mapping, covariance_type: str) -> bool:
    """Whether the user's priors keep the closed-form MAP M-step."""
    if "means" in priors or "scales" in priors:
        return False
    if "weights" in priors and not isinstance(priors["weights"], dist.Dirichlet):
        return False
    site = COVARIANCE_SITES[covariance_type]
    if site in priors:
        family = dist.InverseWishart if covariance_type in ("full", "tied") else dist.InverseGamma
        if not isinstance(_unwrap(priors[site]), family):
            return False
    return True


def _conjugate_prior(
    priors: Mapping, prior_parameters: MixturePriorParameters, n_components, covariance_type, dtype
) -> ConjugatePrior:
    p = prior_parameters
    n_features = p.mean_prior.shape[-1]
    if "weights" in priors:
        alpha = jnp.broadcast_to(priors["weights"].concentration, (n_components,))
    else:
        alpha = jnp.full((n_components,), p.weight_concentration)
    site = COVARIANCE_SITES[covariance_type]
    user = _unwrap(priors[site]) if site in priors else None
    if covariance_type in ("full", "tied"):
        if user is None:
            nu, scale = p.degrees_of_freedom, p.covariance_prior
        else:
            nu = user.concentration
            scale = user.scale_tril @ jnp.swapaxes(user.scale_tril, -1, -2)
        if covariance_type == "full":
            nu = jnp.broadcast_to(nu, (n_components,))
            scale = jnp.broadcast_to(scale, (n_components, n_features, n_features))
        else:
            scale = jnp.broadcast_to(scale, (n_features, n_features))
    else:
        shape = (n_components, n_features) if covariance_type == "diag" else (n_components,)
        if user is None:
            nu, scale = p.degrees_of_freedom / 2, jnp.asarray(p.covariance_prior) / 2
        else:
            nu, scale = user.concentration, user.rate
        nu, scale = jnp.broadcast_to(nu, shape), jnp.broadcast_to(scale, shape)
    return ConjugatePrior(
        *(jnp.asarray(a, dtype) for a in (alpha, p.mean_prior, p.mean_precision, nu, scale))
    )


def conjugate_log_prior(
    parameters: MixtureParameters, prior: ConjugatePrior, covariance_type: str
) -> jax.Array:
    """Log density of a conjugate prior at ``parameters``, in closed form.

    Equals :func:`program_log_prior` of the program with that prior (tested), but uses
    only the precision factors already at hand (no triangular solves):

    .. math::

        \\log \\mathrm{Dir}(\\pi \\mid \\alpha)
        + \\sum_k \\log \\mathcal{W}^{-1}(\\Sigma_k \\mid \\nu, \\Psi)
        + \\sum_k \\log \\mathcal{N}(\\mu_k \\mid m_0, \\Sigma_k / \\kappa_0)

    (inverse gamma per variance for diag / spherical).
    """
    weights, means, covariances, factor = parameters
    n_features = means.shape[-1]
    alpha = prior.weight_concentration
    total = (
        gammaln(jnp.sum(alpha)) - jnp.sum(gammaln(alpha)) + jnp.sum((alpha - 1) * jnp.log(weights))
    )
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
            0.5 * n_features * (jnp.log(kappa) - _LOG_2PI)
            + 0.5 * log_det_precision
            - 0.5 * kappa * jnp.sum(projected**2, axis=-1)
        )
        return total + jnp.sum(inverse_wishart) + jnp.sum(mean_log_density)
    inverse_gamma = (
        nu * jnp.log(scale) - gammaln(nu) - (nu + 1) * jnp.log(covariances) - scale / covariances
    )
    variances = covariances if covariance_type == "diag" else covariances[:, None]
    mean_log_density = -0.5 * (
        _LOG_2PI + jnp.log(variances / kappa) + kappa * offset**2 / variances
    )
    return total + jnp.sum(inverse_gamma) + jnp.sum(mean_log_density)


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
    total = total - 0.5 * n_features * _LOG_2PI * jnp.sum(counts)
    if covariance_type == "full":
        lower = jnp.linalg.cholesky(covariances)
        inverse = lower_triangular_inverse(lower)
        scatter = _scatter_about_means(statistics, centred_means)
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


def _generalized_m_step(statistics, parameters, centre, reg_covar, context):
    """Maximize the expected complete-data log posterior by BFGS on unconstrained sites."""
    covariance_type, priors = context.covariance_type, context.priors
    site = COVARIANCE_SITES[covariance_type]

    def log_posterior(values):
        log_prior = program_log_prior(
            values,
            n_components=context.n_components,
            covariance_type=covariance_type,
            priors=priors,
            prior_parameters=context.prior_parameters,
        )
        ell = _expected_log_likelihood(statistics, values, centre, covariance_type, priors)
        return (ell + log_prior) / statistics.total_weight

    start = _latent_values(site_values(parameters, covariance_type), covariance_type, priors)
    trace = _program_trace(
        start,
        n_components=context.n_components,
        covariance_type=covariance_type,
        priors=priors,
        prior_parameters=context.prior_parameters,
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
    candidate = _with_covariances(values["weights"], values["means"], covariances, covariance_type)
    old_value = log_posterior(start)
    new_value = log_posterior(
        _latent_values(site_values(candidate, covariance_type), covariance_type, priors)
    )
    accept = jnp.isfinite(new_value) & ((new_value >= old_value) | ~jnp.isfinite(old_value))
    return jax.tree.map(lambda new, old: jnp.where(accept, new, old), candidate, parameters)


# ---------------------------------------------------------------------------------------
# k-means


def _squared_distances(x, centers, x_squared_norms):
    distances = (
        x_squared_norms[:, None] - 2 * x @ centers.T + jnp.sum(centers * centers, axis=1)[None, :]
    )
    return jnp.maximum(distances, 0.0)


def kmeans_plusplus(
    x: ArrayLike,
    n_clusters: int,
    *,
    key: jax.Array,
    sample_weight: ArrayLike | None = None,
    n_local_trials: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Greedy k-means++ seeding (scikit-learn's algorithm), pure and jittable.

    Each new centre is the best of ``n_local_trials`` candidates drawn with probability
    proportional to :math:`w_n\\, d(x_n)^2`, judged by the resulting potential.

    Args:
        x: (N, D), best centred. n_clusters: K. key: a JAX random key.
        sample_weight: (N,) non-negative; zero-weight rows are never chosen.
        n_local_trials: default :math:`2 + \\lfloor \\log K \\rfloor`.

    Returns:
        centers (K, D) and their row indices (K,).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.array([[0.0], [0.1], [10.0], [10.1]])
        >>> centers, idx = kmeans_plusplus(x, 2, key=jax.random.key(0))
        >>> sorted(round(float(c)) for c in centers[:, 0])
        [0, 10]
    """
    x = jnp.asarray(x)
    n_samples = x.shape[0]
    weight = (
        jnp.ones(n_samples, x.dtype)
        if sample_weight is None
        else jnp.asarray(sample_weight, x.dtype)
    )
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    squared_norms = jnp.sum(x * x, axis=1)
    # All random numbers at once: candidate i of step c is the point where the
    # cumulative potential first exceeds uniforms[c, i] times its total.
    uniforms = jax.random.uniform(key, (n_clusters, n_local_trials), x.dtype)

    def draw(potential, uniform):
        cumulative = jnp.cumsum(potential)
        fallback = jnp.cumsum(weight)
        cumulative = jnp.where(cumulative[-1] > 0, cumulative, fallback)
        chosen = jnp.searchsorted(
            cumulative, uniform * cumulative[-1], side="right", method="compare_all"
        )
        return jnp.minimum(chosen, n_samples - 1).astype(jnp.int32)

    first = draw(weight, uniforms[0, :1])[0]
    closest = _squared_distances(x, x[first][None, :], squared_norms)[:, 0]
    centers = jnp.zeros((n_clusters, x.shape[1]), x.dtype).at[0].set(x[first])
    indices = jnp.zeros(n_clusters, jnp.int32).at[0].set(first)

    def body(index, carry):
        centers, indices, closest = carry
        candidates = draw(weight * closest, uniforms[index])
        distances = _squared_distances(x, x[candidates], squared_norms)
        new_closest = jnp.minimum(closest[:, None], distances)
        best = jnp.argmin(weight @ new_closest)
        chosen = candidates[best]
        return (
            centers.at[index].set(x[chosen]),
            indices.at[index].set(chosen),
            new_closest[:, best],
        )

    centers, indices, _ = lax.fori_loop(1, n_clusters, body, (centers, indices, closest))
    return centers, indices


def lloyd(
    x: ArrayLike,
    centers: ArrayLike,
    *,
    sample_weight: ArrayLike | None = None,
    max_iter: int = 300,
    tol: ArrayLike = 1e-4,
) -> KMeansResult:
    """Lloyd iterations from ``centers``, pure and jittable (one ``lax.while_loop``).

    Stops when the labels no longer change or the squared shift of the centres falls to
    ``tol`` times the mean per-feature variance of ``x`` (scikit-learn's rule); labels are
    then recomputed from the final centres. A cluster that loses all its points keeps its
    centre.

    Args:
        x: (N, D). centers: (K, D) initial centres. sample_weight: (N,).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[0.0], [1.0], [10.0], [11.0]])
        >>> result = lloyd(x, jnp.array([[0.0], [10.0]]))
        >>> result.centers[:, 0].tolist(), float(result.inertia)
        ([0.5, 10.5], 1.0)
    """
    x = jnp.asarray(x)
    centers = jnp.asarray(centers, x.dtype)
    n_clusters = centers.shape[0]
    weight = (
        jnp.ones(x.shape[0], x.dtype)
        if sample_weight is None
        else jnp.asarray(sample_weight, x.dtype)
    )
    squared_norms = jnp.sum(x * x, axis=1)
    total = jnp.sum(weight)
    mean = weight @ x / total
    variance = weight @ (x - mean) ** 2 / total
    threshold = tol * jnp.mean(variance)

    def assign(centers):
        return jnp.argmin(_squared_distances(x, centers, squared_norms), axis=1).astype(jnp.int32)

    def update(labels, centers):
        one_hot = (labels[:, None] == jnp.arange(n_clusters)) * weight[:, None]
        counts = jnp.sum(one_hot, axis=0)
        sums = one_hot.T @ x
        safe = jnp.where(counts > 0, counts, 1.0)
        return jnp.where((counts > 0)[:, None], sums / safe[:, None], centers)

    def cond(state):
        _, _, n_iter, done = state
        return (n_iter < max_iter) & ~done

    def body(state):
        centers, labels, n_iter, _ = state
        new_labels = assign(centers)
        new_centers = update(new_labels, centers)
        shift = jnp.sum((new_centers - centers) ** 2)
        done = jnp.all(new_labels == labels) | (shift <= threshold)
        return new_centers, new_labels, n_iter + 1, done

    start = (
        centers,
        jnp.full(x.shape[0], -1, jnp.int32),
        jnp.zeros((), jnp.int32),
        jnp.array(False),
    )
    centers, _, n_iter, done = lax.while_loop(cond, body, start)
    distances = _squared_distances(x, centers, squared_norms)
    labels = jnp.argmin(distances, axis=1)
    inertia = jnp.sum(weight * jnp.take_along_axis(distances, labels[:, None], axis=1)[:, 0])
    return KMeansResult(centers, labels, inertia, n_iter, done)


# ---------------------------------------------------------------------------------------
# The EM program


class _Config(NamedTuple):
    """Static configuration of one compiled fit."""

    n_components: int
    covariance_type: str
    max_iter: int
    n_init: int
    init_params: str
    method: str
    block_rows: int
    with_scales: bool
    batched: bool
    cache_design: bool = False
    #: E-step statistics through the compiled CPU kernel (gaussmix.inference.native)
    use_kernel: bool = False


class _Context(NamedTuple):
    """What the M-step needs besides statistics (one dataset)."""

    n_components: int
    covariance_type: str
    priors: Any
    prior_parameters: Any
    conjugate_prior: Any


def _closed_form_m_step(statistics, centre, reg_covar, config, context):
    prior = context.conjugate_prior if config.method == "conjugate_map" else None
    return maximization_step(
        statistics,
        covariance_type=config.covariance_type,
        centre=centre,
        reg_covar=reg_covar,
        prior=prior,
    )


def _m_step(statistics, parameters, centre, reg_covar, config, context):
    if config.method == "generalized_em":
        return _generalized_m_step(statistics, parameters, centre, reg_covar, context)
    return _closed_form_m_step(statistics, centre, reg_covar, config, context)


def _lower_bound(statistics, parameters, config, context):
    bound = statistics.log_likelihood
    if config.method == "conjugate_map":
        bound = bound + conjugate_log_prior(
            parameters, context.conjugate_prior, config.covariance_type
        )
    elif config.method == "generalized_em":
        bound = bound + program_log_prior(
            site_values(parameters, config.covariance_type, with_scales=config.with_scales),
            n_components=config.n_components,
            covariance_type=config.covariance_type,
            priors=context.priors,
            prior_parameters=context.prior_parameters,
        )
    return bound / statistics.total_weight


def _initial_parameters(
    key, x_blocks, w_blocks, feature_blocks, centre, inits, reg_covar, config, context
):
    """Initial parameters of one restart (scikit-learn's ``_initialize_parameters``)."""
    weights_init, means_init, precisions_init = inits
    covariance_type, n_components = config.covariance_type, config.n_components
    dtype = x_blocks.dtype
    if weights_init is not None and means_init is not None and precisions_init is not None:
        factor = precisions_cholesky_from_precisions(precisions_init, covariance_type)
        covariances = covariances_from_precisions_cholesky(factor, covariance_type)
        return MixtureParameters(weights_init, means_init, covariances, factor)
    block_rows = x_blocks.shape[1]
    x_flat = x_blocks.reshape(-1, x_blocks.shape[-1])
    w_flat = w_blocks.reshape(-1)
    labels = None
    if config.init_params == "kmeans":
        seed_key, _ = jax.random.split(key)
        centers, _ = kmeans_plusplus(x_flat, n_components, key=seed_key, sample_weight=w_flat)
        labels = lloyd(x_flat, centers, sample_weight=w_flat).labels
    elif config.init_params == "k-means++":
        _, indices = kmeans_plusplus(x_flat, n_components, key=key, sample_weight=w_flat)
        labels = (
            jnp.full(x_flat.shape[0], -1, jnp.int32)
            .at[indices]
            .set(jnp.arange(n_components, dtype=jnp.int32))
        )
    elif config.init_params == "random_from_data":
        positive = w_flat > 0
        scores = jnp.where(positive, jax.random.uniform(key, w_flat.shape, dtype), -1.0)
        _, indices = lax.top_k(scores, n_components)
        labels = (
            jnp.full(x_flat.shape[0], -1, jnp.int32)
            .at[indices]
            .set(jnp.arange(n_components, dtype=jnp.int32))
        )
    label_blocks = None if labels is None else labels.reshape(-1, block_rows)
    design = jnp.arange(n_components)

    def responsibility_fn(index, x_block, features):
        if label_blocks is None:
            uniform = jax.random.uniform(
                jax.random.fold_in(key, index), (x_block.shape[0], n_components), dtype
            )
            resp = uniform / jnp.sum(uniform, axis=1, keepdims=True)
        else:
            resp = (label_blocks[index][:, None] == design).astype(dtype)
        norm = jnp.zeros(x_block.shape[0], dtype)
        if features is None:
            features = design_matrix(x_block, covariance_type)
        return norm, resp, jnp.ones_like(norm), features

    statistics = _scan_statistics(
        x_blocks, w_blocks, responsibility_fn, n_components, covariance_type, feature_blocks
    )
    init_config = (
        config if config.method == "conjugate_map" else config._replace(method="maximum_likelihood")
    )
    parameters = _closed_form_m_step(statistics, centre, reg_covar, init_config, context)
    weights, means, covariances, factor = parameters
    if weights_init is not None:
        weights = weights_init
    if means_init is not None:
        means = means_init
    if precisions_init is not None:
        factor = precisions_cholesky_from_precisions(precisions_init, covariance_type)
        covariances = covariances_from_precisions_cholesky(factor, covariance_type)
    return MixtureParameters(weights, means, covariances, factor)


def _run_em(
    parameters,
    start_bound,
    x_blocks,
    w_blocks,
    feature_blocks,
    centre,
    tol,
    reg_covar,
    config,
    context,
):
    """One EM run from ``parameters`` (scikit-learn's inner loop), a ``lax.while_loop``."""
    dtype = x_blocks.dtype

    def em_step(state: EMState) -> EMState:
        statistics = _estep_statistics(
            x_blocks,
            w_blocks,
            state.parameters,
            centre,
            config.covariance_type,
            config.use_kernel,
            feature_blocks,
        )
        bound = _lower_bound(statistics, state.parameters, config, context)
        parameters = _m_step(statistics, state.parameters, centre, reg_covar, config, context)
        collapsed = _collapsed(parameters, config.covariance_type)
        collapsed_component = jnp.where(jnp.any(collapsed), jnp.argmax(collapsed), -1)
        change = bound - state.lower_bound
        return EMState(
            parameters=parameters,
            lower_bound=bound,
            n_iter=state.n_iter + 1,
            converged=jnp.abs(change) < tol,
            lower_bounds=state.lower_bounds.at[state.n_iter].set(bound),
            collapsed_component=collapsed_component.astype(jnp.int32),
        )

    def cond(state: EMState):
        return (state.n_iter < config.max_iter) & ~state.converged & (state.collapsed_component < 0)

    start = EMState(
        parameters=parameters,
        lower_bound=jnp.asarray(start_bound, dtype),
        n_iter=jnp.zeros((), jnp.int32),
        converged=jnp.array(False),
        # one spare slot keeps the (never executed) update valid when max_iter == 0
        lower_bounds=jnp.full((config.max_iter + 1,), -jnp.inf, dtype),
        collapsed_component=jnp.full((), -1, jnp.int32),
    )
    return lax.while_loop(cond, em_step, start)


def _fit_dataset(x, sample_weight, inits, priors, key, tol, reg_covar, start_bound, config):
    """Fit one dataset: vmapped restarts, best by lower bound."""
    dtype = x.dtype
    covariance_type = config.covariance_type
    total = jnp.sum(sample_weight)
    centre = sample_weight @ x / total
    x_blocks = _split_blocks(x - centre, config.block_rows)
    w_blocks = _split_blocks(sample_weight, config.block_rows)
    # The design matrix depends on the data alone: data of one block computes it once per
    # fit (config.cache_design), larger data once per block per iteration.
    feature_blocks = (
        jax.vmap(design_matrix, in_axes=(0, None))(x_blocks, covariance_type)
        if config.cache_design
        else None
    )
    prior_parameters = None
    conjugate_prior = None
    if config.method != "maximum_likelihood":
        prior_parameters = MixturePriorParameters(
            *(jnp.asarray(a, dtype) for a in default_prior_parameters(x, covariance_type))
        )
        if config.method == "conjugate_map":
            conjugate_prior = _conjugate_prior(
                priors, prior_parameters, config.n_components, covariance_type, dtype
            )
    context = _Context(
        config.n_components, covariance_type, priors, prior_parameters, conjugate_prior
    )

    def one_restart(restart_key):
        parameters = _initial_parameters(
            restart_key,
            x_blocks,
            w_blocks,
            feature_blocks,
            centre,
            inits,
            reg_covar,
            config,
            context,
        )
        return _run_em(
            parameters,
            start_bound,
            x_blocks,
            w_blocks,
            feature_blocks,
            centre,
            tol,
            reg_covar,
            config,
            context,
        )

    # Restart i uses fold_in(key, i): restart 0 does not depend on n_init, so more
    # restarts can only raise the lower bound.
    restart_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(config.n_init))
    states = _map_or_call(one_restart, restart_keys)
    best = jnp.argmax(states.lower_bound)
    state = jax.tree.map(lambda leaf: leaf[best], states)
    filled = jnp.where(
        jnp.arange(config.max_iter) < state.n_iter,
        state.lower_bounds[: config.max_iter],
        state.lower_bound,
    )
    return state._replace(lower_bounds=filled), states.collapsed_component, states.n_iter


def _fit_program(x, sample_weight, inits, priors, key, tol, reg_covar, start_bound, config):
    """The whole fit of one dataset (N, D) or a batch (B, N, D), compiled once per shape and
    configuration. Returns the best state, the program's site dict and failure flags."""

    def one_dataset(x, sample_weight, inits, key):
        state, collapsed, n_iters = _fit_dataset(
            x, sample_weight, inits, priors, key, tol, reg_covar, start_bound, config
        )
        params = site_values(
            state.parameters, config.covariance_type, with_scales=config.with_scales
        )
        return state, params, collapsed, n_iters

    # Dataset b uses fold_in(key, b): an unbatched fit equals dataset 0 of a batch.
    if not config.batched:
        return one_dataset(x, sample_weight, inits, jax.random.fold_in(key, 0))
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(x.shape[0]))
    init_axes = tuple(
        None if a is None or a.ndim == base else 0
        for a, base in zip(inits, _init_ndims(config), strict=True)
    )
    return jax.vmap(one_dataset, in_axes=(0, 0, init_axes, 0))(x, sample_weight, inits, keys)


def _map_or_call(fn, keys):
    """``vmap(fn)(keys)``, without the batching machinery for a single key (faster to
    compile)."""
    if keys.shape[0] == 1:
        return jax.tree.map(lambda leaf: leaf[None], fn(keys[0]))
    return jax.vmap(fn)(keys)


#: Work (rows x features x components x restarts x datasets) below which compile time,
#: not run time, dominates a fit; such fits get fewer LLVM optimizations (XLA
#: ``xla_backend_optimization_level``), which roughly halves compile time on CPU.
_SMALL_WORK, _MEDIUM_WORK = 1e6, 1e8
_fit_programs = {
    level: jax.jit(
        _fit_program,
        static_argnames=("config",),
        compiler_options=None if level is None else {"xla_backend_optimization_level": level},
    )
    for level in (0, 1, None)
}


def _fit_program_for(work: float):
    """The compiled fit for a problem of this size (see ``_SMALL_WORK``)."""
    if work < _SMALL_WORK:
        return _fit_programs[0]
    if work < _MEDIUM_WORK:
        return _fit_programs[1]
    return _fit_programs[None]


def _init_ndims(config: _Config) -> tuple[int, int, int]:
    precision_ndim = {"full": 3, "tied": 2, "diag": 2, "spherical": 1}[config.covariance_type]
    return (1, 2, precision_ndim)


# ---------------------------------------------------------------------------------------
# Validation and the public entry point


def precision_advice(dtype) -> str:
    """What to do when a computation in ``dtype`` overflows (the end of an error message).

    JAX computes in float32 unless ``jax_enable_x64`` is on, whatever the input's dtype,
    so the advice for float32 depends on that option.

    Example:
        >>> precision_advice(np.float64)
        'rescale the data (e.g. standardize its columns).'
    """
    if np.dtype(dtype) != np.float32:
        return "rescale the data (e.g. standardize its columns)."
    if not jax.config.jax_enable_x64:
        return (
            "JAX computes in float32 unless 64-bit mode is on, even for float64 input: "
            "enable it with jax.config.update('jax_enable_x64', True) before fitting, or "
            "rescale the data (e.g. standardize its columns)."
        )
    return (
        "the data is float32: pass float64 data (x.astype(np.float64)), or rescale the "
        "data (e.g. standardize its columns)."
    )


def check_finite_input(array: np.ndarray, name: str, dtype=None) -> np.ndarray:
    """``array`` cast to ``dtype`` (default its own), or a ValueError naming the cause.

    NaN or infinity in the user's data is reported as such; finite values that do not fit
    ``dtype`` (float64 input computed in float32) are reported as an overflow in that
    dtype, with :func:`precision_advice`.

    Example:
        >>> check_finite_input(np.array([1.0, 2.0]), "x").tolist()
        [1.0, 2.0]
    """
    array = np.asarray(array)
    dtype = array.dtype if dtype is None else np.dtype(dtype)
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise ValueError(f"{name} contains NaN; remove or impute those values first.")
        if np.isinf(array).any():
            raise ValueError(f"{name} contains infinity; remove those values first.")
    with np.errstate(over="ignore"):
        cast = array.astype(dtype, copy=False)
    if cast.dtype.kind == "f" and not np.isfinite(cast).all():
        largest = float(np.max(np.abs(array)))
        raise ValueError(
            f"overflow in {dtype}: {name} holds values up to {largest:.3g}, beyond the "
            f"range of {dtype} (largest {float(np.finfo(dtype).max):.3g}); "
            + precision_advice(dtype)
        )
    return cast


def _as_float_array(value, name: str, dtype=None) -> np.ndarray:
    """A finite NumPy array of a float dtype JAX can hold (validated on the host, moved to
    the device once, by the compiled fit)."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}.")
    if dtype is None:
        dtype = array.dtype if array.dtype.kind == "f" else np.float64
    return check_finite_input(array, name, jax.dtypes.canonicalize_dtype(dtype))


def _check_range(x: np.ndarray, weight: np.ndarray) -> None:
    """A ValueError when the E-step's sums of squares would overflow ``x``'s dtype.

    The E-step sums :math:`w_n (x_n - c)(x_n - c)^T` about the weighted mean :math:`c`;
    their total, computed here in float64, must stay below the dtype's largest value (a
    factor 4 of headroom for the products with responsibilities and precisions).
    """
    dtype = x.dtype
    limit = float(np.finfo(dtype).max) / 4
    data = x.astype(np.float64).reshape(-1, x.shape[-2], x.shape[-1])
    weights = np.broadcast_to(weight, data.shape[:2]).astype(np.float64)
    for rows, row_weight in zip(data, weights, strict=True):
        centre = row_weight @ rows / row_weight.sum()
        spread = np.max(np.abs(rows - centre))
        if spread == 0:
            continue
        # scaled so that squaring cannot overflow float64 either
        total = float(row_weight @ np.sum(((rows - centre) / spread) ** 2, axis=1))
        if not np.log(total) + 2 * np.log(spread) < np.log(limit):
            raise ValueError(
                f"overflow in {dtype}: the data spreads {spread:.3g} from its mean, so its "
                f"sums of squares exceed the range of {dtype}; " + precision_advice(dtype)
            )


def _check_init(value, shape, name, covariance_type, dtype, batch):
    if value is None:
        return None
    array = _as_float_array(value, name, dtype)
    if array.shape != shape and array.shape != (batch, *shape):
        raise ValueError(
            f"The parameter '{name}' should have the shape of {shape}, but got {array.shape}"
        )
    if name == "weights":
        if np.any(array < 0) or np.any(array > 1):
            raise ValueError(
                "The parameter 'weights' should be in the range [0, 1], but got max value "
                f"{float(array.max()):.5f}, min value {float(array.min()):.5f}"
            )
        atol = 1e-6 if array.dtype == np.float32 else 1e-8
        if not np.allclose(array.sum(axis=-1), 1.0, atol=atol, rtol=0):
            raise ValueError(
                "The parameter 'weights' should be normalized, but got sum(weights) = "
                f"{float(array.sum(axis=-1).ravel()[0]):.5f}"
            )
    if name.endswith("precision"):
        values = array
        if covariance_type in ("full", "tied"):
            symmetric = np.allclose(values, np.swapaxes(values, -1, -2))
            if not symmetric or np.any(np.linalg.eigvalsh(values) <= 0):
                raise ValueError(
                    f"'{covariance_type} precision' should be symmetric, positive-definite"
                )
        elif np.any(values <= 0):
            raise ValueError(f"'{covariance_type} precision' should be positive")
    return array


def _check_priors(
    priors,
    covariance_type: str,
    *,
    n_components: int | None = None,
    n_features: int | None = None,
) -> tuple[str, dict]:
    """(method, priors): the M-step the priors call for, after the program's checks.

    Sites, supports, parameters and (given K and D) shapes are checked by
    :func:`gaussmix.models.mixture.check_priors`, the check NUTS and the program run too.
    """
    if priors is None:
        return "maximum_likelihood", {}
    if isinstance(priors, str):
        if priors != "default":
            raise ValueError(
                f"priors must be None (maximum likelihood), 'default' (MAP under the "
                f"program's default prior) or a dict {{site: distribution}}, got {priors!r}."
            )
        return "conjugate_map", {}
    if not isinstance(priors, Mapping):
        raise ValueError(
            "priors must be None, 'default' or a dict mapping a site name to a numpyro "
            f"distribution, got {type(priors).__name__}."
        )
    priors = check_priors(priors, covariance_type, n_components=n_components, n_features=n_features)
    weights = priors.get("weights")
    if isinstance(weights, dist.Dirichlet) and np.any(np.asarray(weights.concentration) < 1):
        raise ValueError(
            "A Dirichlet weight prior with concentration < 1 has no MAP (the posterior "
            "is unbounded where a weight reaches 0); use concentration >= 1."
        )
    if not _is_conjugate(priors, covariance_type):
        return "generalized_em", priors
    return "conjugate_map", priors


def fit_em(
    x: ArrayLike,
    *,
    n_components: int,
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
) -> EMResult:
    """Fit the Gaussian mixture program by EM (maximum likelihood or MAP), one jit call.

    Args:
        x: (N, D) data, or (B, N, D) for B independent datasets fitted together.
        n_components: K >= 1.
        covariance_type: "full", "tied", "diag" or "spherical".
        priors: ``None`` maximum likelihood (equals scikit-learn's GaussianMixture);
            ``"default"`` MAP under the program's default conjugate prior; a dict
            ``{site: numpyro distribution}`` as the program's ``priors``: MAP under it
            (closed form when conjugate, generalized EM otherwise).
        sample_weight: (N,) or (B, N) non-negative weights multiplying each point's
            log-likelihood.
        max_iter: EM iterations at most (0 returns the initialization).
        tol: convergence threshold on the change of the lower bound.
        reg_covar: added to the diagonal of every covariance the M-step returns.
        n_init: restarts (vmapped); the one with the largest lower bound is kept.
        init_params: "kmeans", "k-means++", "random" or "random_from_data".
        weights_init: (K,) or (B, K). means_init: (K, D) or (B, K, D).
        precisions_init: precisions in scikit-learn's shapes, optionally with (B,).
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
    check_covariance_type(covariance_type)
    if (
        not isinstance(n_components, int | np.integer)
        or isinstance(n_components, bool)
        or n_components < 1
    ):
        raise ValueError(
            f"Invalid value for 'n_components': {n_components!r}; it must be an int >= 1."
        )
    if init_params not in INIT_PARAMS:
        raise ValueError(
            f"Invalid value for 'init_params': {init_params!r}; it should be in {list(INIT_PARAMS)}."
        )
    for name, value, low in (("max_iter", max_iter, 0), ("n_init", n_init, 1)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
            raise ValueError(f"Invalid value for '{name}': {value!r}; it must be an int >= {low}.")
    for name, value in (("tol", tol), ("reg_covar", reg_covar)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(
                f"Invalid value for '{name}': {value!r}; it must be a finite number >= 0."
            )
    x = _as_float_array(x, "x")
    batched = x.ndim == 3
    if x.ndim not in (2, 3):
        raise ValueError(
            f"x must have shape (N, D) or (B, N, D), got shape {x.shape}; reshape 1-D data "
            "with x.reshape(-1, 1)."
        )
    n_datasets = x.shape[0] if batched else 1
    n_samples, n_features = x.shape[-2:]
    if n_features < 1:
        raise ValueError("x has no features (D = 0).")
    method, priors = _check_priors(
        priors, covariance_type, n_components=n_components, n_features=n_features
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
        weight = _as_float_array(sample_weight, "sample_weight", dtype)
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
    _check_range(x, weight)
    precision_shape = {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]
    inits = (
        _check_init(weights_init, (n_components,), "weights", covariance_type, dtype, n_datasets),
        _check_init(
            means_init, (n_components, n_features), "means", covariance_type, dtype, n_datasets
        ),
        _check_init(
            precisions_init,
            precision_shape,
            f"{covariance_type} precision",
            covariance_type,
            dtype,
            n_datasets,
        ),
    )
    if all(value is not None for value in inits):
        n_init = 1  # every restart would start from the same point
    # Blocks of rows stream through the cache, their features recomputed every iteration
    # (cheaper than reading a stored design matrix back from memory); data of one block
    # (and a batch of at most 1 GiB) computes its features once per fit, except where the
    # compiled kernel serves one full-covariance dataset (1.2-1.9x faster on E3-sized data).
    block = _block_size(
        n_samples,
        n_features,
        n_components,
        covariance_type,
        dtype.itemsize,
        block_rows,
        n_datasets,
    )
    use_kernel = covariance_type == "full" and native.usable(dtype)
    config = _Config(
        n_components=int(n_components),
        covariance_type=covariance_type,
        max_iter=int(max_iter),
        n_init=int(n_init),
        init_params=init_params,
        method=method,
        block_rows=block,
        with_scales="scales" in priors,
        batched=batched,
        cache_design=block == n_samples and not (use_kernel and not batched),
        use_kernel=use_kernel,
    )
    key = seed if isinstance(seed, jax.Array) else jax.random.key(int(seed))
    work = n_samples * _feature_count(n_features, covariance_type) * n_components
    state, params, collapsed, n_iters = _fit_program_for(work * n_init * n_datasets)(
        x,
        weight,
        inits,
        priors,
        key,
        np.asarray(tol, dtype),
        np.asarray(reg_covar, dtype),
        np.asarray(start_lower_bound, dtype),
        config=config,
    )
    _raise_on_failure(
        np.asarray(collapsed).reshape(n_datasets, -1),
        np.asarray(n_iters).reshape(n_datasets, -1),
        np.asarray(state.lower_bound),
        batched,
        config,
        dtype,
    )
    return EMResult(
        params=params,
        precisions_cholesky=state.parameters.precisions_cholesky,
        lower_bound=state.lower_bound,
        lower_bounds=state.lower_bounds,
        n_iter=state.n_iter,
        converged=state.converged,
        method=method,
    )


def _raise_on_failure(collapsed, n_iters, lower_bound, batched, config, dtype):
    failed = np.argwhere(collapsed >= 0)
    if failed.size:
        dataset, restart = failed[0]
        component = collapsed[dataset, restart]
        where = f"dataset {dataset}, " if batched else ""
        tied = " (the shared tied covariance)" if config.covariance_type == "tied" else ""
        message = (
            f"Fitting the mixture model failed because component {component}{tied} has an "
            f"ill-defined empirical covariance ({where}restart {restart}, iteration "
            f"{n_iters[dataset, restart]}), for instance caused by singleton or collapsed "
            "samples. Try to increase reg_covar, decrease the number of components, or "
            "scale the input data."
        )
        if dtype == jnp.float32:
            message += (
                " The computation ran in float32, whose rounding can also collapse a "
                "component: " + precision_advice(dtype)
            )
        raise ValueError(message)
    if np.any(np.isnan(lower_bound)) or np.any(lower_bound == np.inf):
        raise ValueError(
            f"The lower bound became NaN or infinite in {np.dtype(dtype)} (the data had "
            "none): the parameters left the support of a prior or the computation "
            "overflowed; check the priors, or " + precision_advice(dtype)
        )
