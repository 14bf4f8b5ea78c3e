"""Measurement errors: extreme deconvolution (Bovy, Hogg & Roweis 2011), on the one EM core.

Each row is observed with a known Gaussian error, :math:`w_n = x_n + e_n`,
:math:`e_n \\sim \\mathcal{N}(0, S_n)`, the :math:`x_n` drawn from the mixture; so under
component :math:`k`

.. math::

    p(w_n \\mid k) = \\mathcal{N}(w_n \\mid \\mu_k, T_{nk}),\\qquad T_{nk} = \\Sigma_k + S_n,

and, the :math:`x_n` being the complete data, the E-step gives their conditional moments

.. math::

    b_{nk} = \\mathbb{E}[x_n \\mid w_n, k] = \\mu_k + \\Sigma_k T_{nk}^{-1} (w_n - \\mu_k),\\qquad
    B_{nk} = \\operatorname{Cov}[x_n \\mid w_n, k] = \\Sigma_k - \\Sigma_k T_{nk}^{-1} \\Sigma_k,

and the expected sufficient statistics :math:`N_k = \\sum_n w_n r_{nk}`,
:math:`s_k = \\sum_n w_n r_{nk} b_{nk}`, :math:`S_k = \\sum_n w_n r_{nk} (b_{nk} b_{nk}^T +
B_{nk})`: the same :class:`gaussmix.inference.em.statistics.SufficientStatistics` as complete
data, so every M-step (the four classic families, mclust's 14 models, MAP) runs unchanged
and each iteration raises the observed-data likelihood
:math:`\\sum_n w_n \\log \\sum_k \\pi_k \\mathcal{N}(w_n \\mid \\mu_k, T_{nk})`, the lower bound
reported.

**Missing entries too, in one formulation.** A row observing the coordinates :math:`O`
(mask :math:`o`) uses :math:`T = (\\Sigma + S)_{OO}`: its Cholesky factor is taken of
:math:`\\tilde T = (\\Sigma + S) \\odot o o^T + \\mathrm{diag}(1 - o)` (the missing rows and
columns replaced by the identity's, so every shape is (D, D)), :math:`W = L^{-1} \\odot
o o^T`; then :math:`b = \\mu + \\Sigma W^T W (w - \\mu)_O` and
:math:`B = \\Sigma - (\\Sigma W^T)(\\Sigma W^T)^T` are the formulas above with
:math:`\\Sigma_{:,O}`, the missing-data E-step of :mod:`gaussmix.inference.em.missing` when
:math:`S = 0`. Entries of :math:`S_n` in a missing row or column are ignored.

Cost: a (D, D) Cholesky factorization per row and component, :math:`O(N K D^3)` per
iteration (:math:`O(N K D)` where both are diagonal: errors given as (N, D) variances with
a diag or spherical model, :func:`diagonal_row_terms`), vmapped over the rows of a block, ``lax.scan`` over blocks (memory bounded by
the block, not N); for D <= :data:`UNROLLED_CHOLESKY_MAX` the factorization is unrolled
into elementwise operations over the block (no LAPACK call per small matrix).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from gaussmix.inference import compilation
from gaussmix.inference.em.background import background_log_weight
from gaussmix.inference.em.features import (
    ACCELERATOR_BLOCK_BYTES,
    CPU_BLOCK_BYTES,
    split_blocks,
)
from gaussmix.inference.em.parameters import LOG_2PI, MixtureParameters, lower_triangular_inverse
from gaussmix.inference.em.statistics import SufficientStatistics
from gaussmix.models.priors import covariance_layout

__all__ = [
    "UNROLLED_CHOLESKY_MAX",
    "Measurements",
    "as_measurement_covariances",
    "block_rows_for",
    "block_statistics",
    "diagonal_row_terms",
    "full_covariances",
    "log_responsibilities",
    "measurement_log_responsibilities",
    "row_terms",
]

#: Largest D whose Cholesky factorization is unrolled into elementwise operations.
UNROLLED_CHOLESKY_MAX = 12
#: Relative tolerance of the symmetry and positive semi-definiteness checks of S.
SYMMETRY_RTOL = 1e-6


class Measurements(NamedTuple):
    """The per-row error model of a fit, rows in the order of ``x``.

    Attributes:
        observed: (..., N, D) 1 where the entry of ``x`` is observed, 0 where missing.
        noise: (..., N, D, D) the measurement covariances :math:`S_n`, zero in missing
            rows and columns, or (..., N, D) their diagonals (independent errors).
    """

    observed: jax.Array
    noise: jax.Array


def as_measurement_covariances(
    value, x: np.ndarray, name: str = "measurement_covariances", validate: bool = True
):
    """Validated measurement covariances of rows ``x`` (..., N, D) (NaN = missing), on
    the host, in ``x``'s dtype, zero in missing rows and columns: (..., N, D, D), or
    (..., N, D) variances where those were given.

    ``value`` is (..., N, D, D) (symmetric positive semi-definite) or (..., N, D) (the
    variances of independent errors). Wrong shape, non-finite values in observed
    coordinates, asymmetry or a negative eigenvalue beyond rounding are ValueErrors;
    ``validate=False`` skips those checks (values already checked, e.g. a chunk read again
    on a later pass) and only zeroes and symmetrizes.

    Example:
        >>> s = as_measurement_covariances(np.array([[1.0, 2.0]]), np.zeros((1, 2)))
        >>> s.tolist()
        [[1.0, 2.0]]
    """
    x = np.asarray(x)
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}.")
    lead, n_features = x.shape[:-1], x.shape[-1]
    full_shape, diagonal_shape = (*lead, n_features, n_features), (*lead, n_features)
    if array.shape not in (full_shape, diagonal_shape):
        raise ValueError(
            f"{name} has shape {array.shape}; expected {full_shape} (one covariance per "
            f"row of X) or {diagonal_shape} (the error variances of each row), matching "
            f"X of shape {x.shape}."
        )
    observed = ~np.isnan(x)
    array = array.astype(np.float64)
    if not validate:
        if array.shape == diagonal_shape:
            return np.where(observed, array, 0.0).astype(x.dtype)
        array = np.where(observed[..., :, None] & observed[..., None, :], array, 0.0)
        return (0.5 * (array + np.swapaxes(array, -1, -2))).astype(x.dtype)
    if array.shape == diagonal_shape:
        seen = observed
        bad = seen & ~np.isfinite(array)
        _refuse_non_finite(bad, name)
        negative = seen & (array < 0)
        if negative.any():
            row = np.argwhere(negative)[0]
            raise ValueError(
                f"{name} holds negative variances (first at index {tuple(row.tolist())}: "
                f"{array[tuple(row)]:.3g}); variances of measurement errors are >= 0: pass "
                "the squared standard errors."
            )
        return np.where(seen, array, 0.0).astype(x.dtype)
    seen = observed[..., :, None] & observed[..., None, :]
    _refuse_non_finite(seen & ~np.isfinite(array), name)
    array = np.where(seen, array, 0.0)
    scale = np.max(np.abs(array), axis=(-2, -1), keepdims=True)
    asymmetry = np.abs(array - np.swapaxes(array, -1, -2)) > SYMMETRY_RTOL * scale
    if asymmetry.any():
        row = np.argwhere(asymmetry.any(axis=(-2, -1)))[0]
        raise ValueError(
            f"{name}[{', '.join(map(str, row.tolist()))}] is not symmetric; a covariance "
            "matrix equals its transpose: pass (S + S.swapaxes(-1, -2)) / 2 if the "
            "asymmetry is rounding."
        )
    array = 0.5 * (array + np.swapaxes(array, -1, -2))
    smallest = np.linalg.eigvalsh(array)[..., 0]
    tolerance = SYMMETRY_RTOL * scale[..., 0, 0] * n_features
    indefinite = smallest < -tolerance
    if indefinite.any():
        row = np.argwhere(indefinite)[0]
        raise ValueError(
            f"{name}[{', '.join(map(str, row.tolist()))}] is not positive semi-definite "
            f"(smallest eigenvalue {float(smallest[tuple(row)]):.3g}); each measurement "
            "covariance must be a covariance matrix (e.g. A @ A.T, or np.diag of variances)."
        )
    return array.astype(x.dtype)


def _refuse_non_finite(bad: np.ndarray, name: str) -> None:
    if bad.any():
        row = np.argwhere(bad)[0]
        raise ValueError(
            f"{name} has a non-finite (NaN or infinite) entry at index "
            f"{tuple(row.tolist())} of an observed coordinate; give every observed "
            "coordinate a finite error (NaN is allowed only where X itself is NaN)."
        )


def full_covariances(covariances: jax.Array, layout: str, n_components: int, n_features: int):
    """(K, D, D) covariances of any storage layout."""
    identity = jnp.eye(n_features, dtype=covariances.dtype)
    if layout == "full":
        return covariances
    if layout == "tied":
        return jnp.broadcast_to(covariances, (n_components, n_features, n_features))
    if layout == "diag":
        return covariances[..., :, None] * identity
    return covariances[:, None, None] * identity


def _cholesky(matrix: jax.Array) -> jax.Array:
    """Lower Cholesky factors of (..., D, D) positive definite matrices; unrolled into
    elementwise operations over the batch for small D."""
    n = matrix.shape[-1]
    if n > UNROLLED_CHOLESKY_MAX:
        return jnp.linalg.cholesky(matrix)
    columns = [[None] * n for _ in range(n)]
    for j in range(n):
        diagonal = matrix[..., j, j] - sum(columns[j][m] ** 2 for m in range(j))
        pivot = jnp.sqrt(diagonal)
        columns[j][j] = pivot
        for i in range(j + 1, n):
            off = matrix[..., i, j] - sum(columns[i][m] * columns[j][m] for m in range(j))
            columns[i][j] = off / pivot
    zero = jnp.zeros_like(matrix[..., 0, 0])
    rows = [
        jnp.stack([columns[i][j] if j <= i else zero for j in range(n)], axis=-1) for i in range(n)
    ]
    return jnp.stack(rows, axis=-2)


def diagonal_row_terms(x, observed, noise, means, log_weights, variances):
    """:func:`row_terms` where the covariances and errors are diagonal: ``noise`` (n, D)
    and ``variances`` (K, D); the conditional covariances come back as their diagonals
    (n, K, D)."""
    mask = observed[:, None, :] > 0  # (n, 1, D)
    total = jnp.where(mask, variances[None] + noise[:, None, :], 1.0)  # (n, K, D)
    difference = jnp.where(mask, x[:, None, :] - means[None], 0.0)
    distance = jnp.sum(difference * difference / total, axis=-1)
    half_log_det = 0.5 * jnp.sum(jnp.log(total), axis=-1)
    n_observed = jnp.sum(observed, axis=-1)[:, None]
    log_prob = log_weights - half_log_det - 0.5 * n_observed * LOG_2PI - 0.5 * distance
    gain = jnp.where(mask, variances[None] / total, 0.0)
    return log_prob, means[None] + gain * difference, variances[None] * (1 - gain)


def _row_function(layout: str, diagonal_noise: bool, n_components: int, n_features: int):
    """The per-block row terms of a layout and error shape, and the covariances they
    take: diagonal ones (K, D) where both are diagonal, else full (K, D, D)."""
    if diagonal_noise and layout in ("diag", "spherical"):

        def diagonal(covariances):
            return jnp.broadcast_to(
                covariances if layout == "diag" else covariances[:, None],
                (n_components, n_features),
            )

        return diagonal_row_terms, diagonal, True

    def full(covariances):
        return full_covariances(covariances, layout, n_components, n_features)

    def terms(x, observed, noise, means, log_weights, sigma):
        if diagonal_noise:
            noise = noise[..., :, None] * jnp.eye(n_features, dtype=noise.dtype)
        return row_terms(x, observed, noise, means, log_weights, sigma)

    return terms, full, False


def row_terms(x, observed, noise, means, log_weights, sigma):
    """Per row and component: the weighted log density of the observation (n, K), the
    conditional means :math:`b` (n, K, D) and covariances :math:`B` (n, K, D, D).

    Args:
        x: (n, D) rows (any finite value in missing entries), centred as ``means``.
        observed: (n, D) their masks. noise: (n, D, D) their :math:`S_n`.
        means: (K, D). log_weights: (K,). sigma: (K, D, D) the covariances.
    """
    mask = observed[:, None, :]  # (n, 1, D)
    outer = mask[..., :, None] * mask[..., None, :]  # (n, 1, D, D)
    identity = jnp.eye(x.shape[-1], dtype=x.dtype)
    total = (sigma[None] + noise[:, None]) * outer + identity * (1 - mask)[..., None]
    lower = _cholesky(total)
    whiten = lower_triangular_inverse(lower) * outer  # (n, K, D, D)
    difference = jnp.where(mask > 0, x[:, None, :] - means[None], 0.0)  # (n, K, D)
    whitened = jnp.einsum("nkij,nkj->nki", whiten, difference)
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(lower, axis1=-2, axis2=-1)), axis=-1)
    distance = jnp.sum(whitened * whitened, axis=-1)
    n_observed = jnp.sum(observed, axis=-1)[:, None]
    log_prob = log_weights - half_log_det - 0.5 * n_observed * LOG_2PI - 0.5 * distance
    regression = sigma[None] @ jnp.swapaxes(whiten, -1, -2)  # Sigma_{:,O} W^T
    conditional_means = means[None] + jnp.einsum("nkij,nkj->nki", regression, whitened)
    conditional_covariances = sigma[None] - regression @ jnp.swapaxes(regression, -1, -2)
    return log_prob, conditional_means, conditional_covariances


def block_rows_for(
    n_rows: int, n_features: int, n_components: int, itemsize: int, block_rows=None
) -> int:
    """Rows per scan step: about eight (K, D, D) temporaries per row within the E-step's
    block budget (4 MiB on a CPU), 8 to ``n_rows`` rows."""
    if block_rows is not None:
        return max(1, min(int(block_rows), n_rows))
    budget = CPU_BLOCK_BYTES if jax.default_backend() == "cpu" else ACCELERATOR_BLOCK_BYTES
    per_row = 8 * n_components * (n_features * n_features + n_features + 1) * itemsize
    return int(max(1, min(n_rows, max(8, budget // per_row))))


def block_statistics(
    parameters: MixtureParameters,
    x: jax.Array,
    sample_weight: jax.Array,
    measurements: Measurements,
    centre: jax.Array,
    covariance_type: str,
    block_rows: int,
    background_log_density: jax.Array | None = None,
    background_log_sides: jax.Array | None = None,
) -> SufficientStatistics:
    """Expected E-step statistics of rows with measurement errors (and missing entries):
    the statistics function of an in-memory fit (pure, no jit inside).

    Args:
        parameters: the current :class:`MixtureParameters`.
        x: (N, D) rows (any finite value in missing entries), uncentred.
        sample_weight: (N,) weights.
        measurements: :class:`Measurements` of the rows.
        centre: (D,) the point the moments are taken about.
        covariance_type: any EM covariance type (its storage layout decides).
        block_rows: rows per scan step (static).
        background_log_density: None, or :math:`-\\log V` of a uniform background
            (:mod:`gaussmix.inference.em.background`; the Gaussian weights then sum to one
            minus its weight): one more column :math:`\\log \\pi_0 - \\log V` in each
            row's normalization (the background is uniform over the observed space:
            measurement errors do not change it).
        background_log_sides: None, or the (D,) log side lengths of the background's box:
            a row's column is then :math:`\\log \\pi_0 - \\sum_{d \\in O} \\log
            \\mathrm{side}_d` over its observed coordinates O (rows with NaN).
    """
    layout = covariance_layout(covariance_type)
    dtype = x.dtype
    n_components, n_features = parameters.means.shape
    centred_means = parameters.means - centre
    terms_fn, covariances_fn, diagonal = _row_function(
        layout, measurements.noise.ndim == x.ndim, n_components, n_features
    )
    sigma = covariances_fn(parameters.covariances)
    log_weights = jnp.log(parameters.weights)
    background = background_log_density is not None
    if background:
        log_background = background_log_weight(parameters.weights)
    blocks = (
        split_blocks(x - centre, block_rows),
        split_blocks(sample_weight, block_rows),
        split_blocks(measurements.observed, block_rows, fill=1.0),
        split_blocks(measurements.noise, block_rows),
    )

    def body(carry, inputs):
        counts, first, second, log_likelihood = carry
        x_block, w_block, o_block, s_block = inputs
        log_prob, b, cov = terms_fn(x_block, o_block, s_block, centred_means, log_weights, sigma)
        if background:  # one more column, the background's, in the normalization only
            if background_log_sides is None:
                column = jnp.broadcast_to(log_background + background_log_density, w_block.shape)
            else:
                column = log_background - o_block @ jnp.asarray(background_log_sides, dtype)
            log_prob_all = jnp.concatenate([log_prob, column[:, None]], axis=1)
            norm = jax.nn.logsumexp(log_prob_all, axis=1)
        else:
            norm = jax.nn.logsumexp(log_prob, axis=1)
        weighted = jnp.exp(log_prob - norm[:, None]) * w_block[:, None]  # (b, K)
        counts = counts + jnp.sum(weighted, axis=0)
        first = first + jnp.einsum("nk,nki->ki", weighted, b)
        if diagonal:
            second = second + jnp.einsum("nk,nki->ki", weighted, b * b + cov)
        else:
            second = (
                second
                + jnp.einsum("nk,nki,nkj->kij", weighted, b, b)
                + jnp.einsum("nk,nkij->kij", weighted, cov)
            )
        log_likelihood = log_likelihood + jnp.sum(jnp.where(w_block > 0, w_block * norm, 0.0))
        return (counts, first, second, log_likelihood), None

    init = (
        jnp.zeros((n_components,), dtype),
        jnp.zeros((n_components, n_features), dtype),
        jnp.zeros((n_components, n_features) + (() if diagonal else (n_features,)), dtype),
        jnp.zeros((), dtype),
    )
    counts, first, second, log_likelihood = lax.scan(body, init, blocks)[0]
    if diagonal:
        second = jnp.sum(second, axis=-1) if layout == "spherical" else second
    elif layout == "tied":
        second = jnp.sum(second, axis=0)
    elif layout in ("diag", "spherical"):
        second = jnp.diagonal(second, axis1=-2, axis2=-1)
        if layout == "spherical":
            second = jnp.sum(second, axis=-1)
    return SufficientStatistics(counts, first, second, log_likelihood, jnp.sum(sample_weight))


def log_responsibilities(
    x: ArrayLike,
    observed: ArrayLike,
    noise: ArrayLike,
    weights: ArrayLike,
    means: ArrayLike,
    covariances: ArrayLike,
    covariance_type: str,
    *,
    block_rows: int = 1024,
) -> tuple[jax.Array, jax.Array]:
    """Log-likelihood (N,) and log responsibilities (N, K) of noisy rows (the marginal
    answers of their observed coordinates).

    .. math::

        \\log p(w_{n,O}) = \\operatorname{logsumexp}_k \\left[\\log \\pi_k +
          \\log \\mathcal{N}(w_{n,O} \\mid \\mu_{k,O}, (\\Sigma_k + S_n)_{OO})\\right]

    Args:
        x: (N, D) rows, any finite value in missing entries. observed: (N, D) masks.
        noise: (N, D, D) measurement covariances, or (N, D) variances.
        weights: (K,). means: (K, D). covariances: the layout's covariances.
        covariance_type: any EM covariance type.
        block_rows: rows per block.

    Example:
        >>> norm, _ = log_responsibilities(np.zeros((1, 1)), np.ones((1, 1)),
        ...     np.full((1, 1, 1), 3.0), np.array([1.0]), np.zeros((1, 1)),
        ...     np.ones((1, 1)), "diag")
        >>> round(float(norm[0]), 6)   # log N(0 | 0, 1 + 3)
        -1.612086
    """
    layout = covariance_layout(covariance_type)
    x = jnp.asarray(x)
    dtype = x.dtype
    means = jnp.asarray(means, dtype)
    n_components, n_features = means.shape
    noise = jnp.asarray(noise, dtype)
    terms_fn, covariances_fn, _ = _row_function(
        layout, noise.ndim == x.ndim, n_components, n_features
    )
    sigma = covariances_fn(jnp.asarray(covariances, dtype))
    log_weights = jnp.log(jnp.asarray(weights, dtype))
    n_rows = x.shape[0]
    block = max(1, min(n_rows, block_rows))

    def one_block(inputs):
        log_prob, _, _ = terms_fn(*inputs, means, log_weights, sigma)
        norm = jax.nn.logsumexp(log_prob, axis=1)
        return norm, log_prob - norm[:, None]

    norm, log_resp = lax.map(
        one_block,
        (
            split_blocks(x, block),
            split_blocks(jnp.asarray(observed, dtype), block, fill=1.0),
            split_blocks(noise, block),
        ),
    )
    return norm.reshape(-1)[:n_rows], log_resp.reshape(-1, n_components)[:n_rows]


_log_responsibilities = compilation.jit(
    log_responsibilities, static_argnames=("covariance_type", "block_rows")
)


def measurement_log_responsibilities(
    x: np.ndarray, noise: np.ndarray, parameters: MixtureParameters, covariance_type: str
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`log_responsibilities` of host rows ``x`` (n, D) (NaN = missing) with
    validated ``noise`` (n, D, D) or (n, D) (:func:`as_measurement_covariances`). NumPy
    out."""
    holes = np.isnan(x)
    norm, log_resp = _log_responsibilities(
        np.where(holes, 0, x),
        (~holes).astype(x.dtype),
        noise,
        *(np.asarray(a, x.dtype) for a in parameters[:3]),
        covariance_type=covariance_type,
        block_rows=1024,
    )
    return np.asarray(norm), np.asarray(log_resp)
