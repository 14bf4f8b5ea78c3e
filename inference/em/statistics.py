"""E-step: sufficient statistics of blocks of rows, log responsibilities, log densities.

The M-step needs only the sufficient statistics

.. math::

    N_k = \\sum_n w_n r_{nk},\\quad s_k = \\sum_n w_n r_{nk} x_n,\\quad
    S_k = \\sum_n w_n r_{nk} x_n x_n^T,

which are the matrix product :math:`(w \\odot r)^T \\Phi` of the features
:math:`\\Phi` (:func:`gaussmix.inference.em.features.design_matrix`). Rows are processed in
blocks by ``lax.scan``, so no N x K x D temporary and no full N x F feature matrix is ever
formed. On a CPU a full-covariance E-step is one compiled kernel instead
(:mod:`gaussmix.inference.native`: features, both products and the softmax fused per
cache-sized block; the same statistics to rounding), where a C++ compiler is available.
Statistics are sums over rows: summed over blocks, chunks, devices or processes before
the M-step they give exact EM.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from gaussmix.inference import native
from gaussmix.inference.em.background import background_log_weight
from gaussmix.inference.em.features import (
    ACCELERATOR_BLOCK_BYTES,
    CPU_BLOCK_BYTES,
    MIN_BLOCK_ROWS,
    DataBlocks,
    block_size,
    design_matrix,
    feature_count,
    natural_parameters,
    split_blocks,
    upper_triangle,
)
from gaussmix.inference.em.parameters import LOG_2PI, MixtureParameters
from gaussmix.models.priors import covariance_layout

__all__ = [
    "SufficientStatistics",
    "block_statistics",
    "estimate_weighted_log_prob",
    "log_responsibilities",
    "scan_statistics",
    "sufficient_statistics",
]


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
        budget = CPU_BLOCK_BYTES if jax.default_backend() == "cpu" else ACCELERATOR_BLOCK_BYTES
        width = 3 * n_components * n_features + 4 * n_components
        block_rows = max(MIN_BLOCK_ROWS, budget // (width * x.dtype.itemsize))
    block = block_size(
        n_rows, n_features, n_components, covariance_type, x.dtype.itemsize, block_rows
    )
    blocks = split_blocks(x, block)

    def one_block(x_block):
        return _whitened_block(x_block, means, factor, covariance_type)

    distance, log_distance = lax.map(one_block, blocks)
    constant = jnp.log(weights) + half_log_det - 0.5 * n_features * LOG_2PI
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
    covariance_type = covariance_layout(covariance_type)
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
    covariance_type = covariance_layout(covariance_type)
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
    ties = jnp.sum(nearest, axis=1, keepdims=True, dtype=shifted.dtype)  # not int: keeps float32
    limit = jnp.where(nearest, -jnp.log(ties), -jnp.inf)
    overflowed = (norm == -jnp.inf)[:, None]
    return norm, jnp.where(overflowed, limit, shifted - log_total)


def _unpack_statistics(packed, scatter, log_likelihood, total_weight, n_features, covariance_type):
    quadratic_size = feature_count(n_features, covariance_type) - n_features - 1
    counts = packed[:, -1]
    first = packed[:, quadratic_size : quadratic_size + n_features]
    if covariance_type == "full":
        # position of (min(i, j), max(i, j)) in the packed upper triangle
        rows, cols = upper_triangle(n_features)
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
    x_blocks,
    weight_blocks,
    responsibility_fn,
    n_components,
    covariance_type,
    feature_blocks=None,
    background=False,
):
    """Accumulate packed statistics over row blocks: (packed (K, F), scatter, log-likelihood).

    ``responsibility_fn(index, x_block, features) -> (log p(x) (n,), unnormalized
    responsibilities (n, K), row scale (n,), features (n, F))``; responsibilities are their
    product. ``features`` is the block of ``feature_blocks`` when given (the design matrix
    computed once per fit), else None (computed per block). With ``background`` the
    responsibilities of the K components sum to one minus the background's, and the tied
    scatter weighs each row by that sum (the Gaussian components' share of the row).
    """
    n_features = x_blocks.shape[-1]
    dtype = x_blocks.dtype
    n_columns = feature_count(n_features, covariance_type)
    scatter_size = n_features if covariance_type == "tied" else 0

    def body(carry, inputs):
        packed, scatter, log_likelihood = carry
        index, x_block, w_block, features = inputs
        norm, resp, row_scale, features = responsibility_fn(index, x_block, features)
        weighted_resp = resp * (row_scale * w_block)[:, None]
        packed = packed + weighted_resp.T @ features
        if scatter_size:
            row_weight = jnp.sum(weighted_resp, axis=1) if background else w_block
            scatter = scatter + (x_block * row_weight[:, None]).T @ x_block
        log_likelihood = log_likelihood + jnp.sum(w_block * norm)
        return (packed, scatter, log_likelihood), None

    init = (
        jnp.zeros((n_components, n_columns), dtype),
        jnp.zeros((scatter_size, scatter_size), dtype),
        jnp.zeros((), dtype),
    )
    indices = jnp.arange(x_blocks.shape[0])
    return lax.scan(body, init, (indices, x_blocks, weight_blocks, feature_blocks))[0]


def scan_statistics(
    blocks: DataBlocks, responsibility_fn, n_components: int, covariance_type: str
) -> SufficientStatistics:
    """Statistics of ``blocks`` under the responsibilities of ``responsibility_fn``.

    Args:
        blocks: the dataset's :class:`gaussmix.inference.em.features.DataBlocks`.
        responsibility_fn: ``(index, x_block, features) -> (log p(x) (n,),
            unnormalized responsibilities (n, K), row scale (n,), features (n, F))``;
            the responsibilities are the product of the middle two. ``features`` is the
            block of ``blocks.features`` when given, else None (to compute).
        n_components: K.
        covariance_type: "full", "tied", "diag" or "spherical".
    """
    covariance_type = covariance_layout(covariance_type)
    packed, scatter, log_likelihood = _scan_packed(
        blocks.x, blocks.weight, responsibility_fn, n_components, covariance_type, blocks.features
    )
    return _unpack_statistics(
        packed,
        scatter,
        log_likelihood,
        jnp.sum(blocks.weight),
        blocks.x.shape[-1],
        covariance_type,
    )


def block_statistics(
    parameters: MixtureParameters,
    blocks: DataBlocks,
    covariance_type: str,
    *,
    use_kernel: bool = False,
    background_log_density: jax.Array | None = None,
) -> SufficientStatistics:
    """E-step statistics of a dataset's blocks under ``parameters`` (pure, no jit inside).

    The statistics function of in-memory and sharded EM. With ``use_kernel`` (decided
    on the host by :func:`gaussmix.inference.native.usable`) a full-covariance mixture
    whose features are not cached goes through the compiled CPU kernel, the features
    being built inside it; XLA's blocks on any other platform.

    Args:
        parameters: the current :class:`MixtureParameters`.
        blocks: :class:`gaussmix.inference.em.features.DataBlocks`.
        covariance_type: "full", "tied", "diag" or "spherical".
        use_kernel: through :mod:`gaussmix.inference.native` where possible.
        background_log_density: () :math:`-\\log V` of a uniform background component
            (:mod:`gaussmix.inference.em.background`; the Gaussian ``weights`` then sum to
            one minus its weight, and the kernel is not used), else None.
    """
    covariance_type = covariance_layout(covariance_type)
    x_blocks, weight_blocks, feature_blocks, centre = blocks
    natural = natural_parameters(parameters, centre, covariance_type)
    factor = parameters.precisions_cholesky
    n_components = parameters.means.shape[0]

    background = background_log_density is not None
    if background:
        log_background = background_log_weight(parameters.weights) + background_log_density

    def responsibility_fn(index, x_block, features):
        log_prob, features = _block_log_prob(x_block, natural, factor, covariance_type, features)
        # one exponential per entry: r = exp(l - max) / sum_k exp(l - max)
        largest = jnp.max(log_prob, axis=1, keepdims=True)
        if background:  # one more column, the background's, in the normalization only
            largest = jnp.maximum(largest, log_background)
        unnormalized = jnp.exp(log_prob - largest)
        total = jnp.sum(unnormalized, axis=1)
        if background:
            total = total + jnp.exp(log_background - largest[:, 0])
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

    if use_kernel and feature_blocks is None and not background:
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
            background,
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
    use_kernel: bool | None = None,
    background_log_density: ArrayLike | None = None,
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
        block_rows: rows per matrix product; default as in :func:`gaussmix.inference.em.fit_em`.
        use_kernel: a full-covariance mixture's statistics through the compiled CPU kernel
            (:mod:`gaussmix.inference.native`); None: where
            :func:`gaussmix.inference.native.usable` says so when this is traced. A
            compiled program that calls this passes it as a static argument decided on the
            host, so that its cache key says whether it calls the kernel.
        background_log_density: :math:`-\\log V` of a uniform background component, as
            for :func:`block_statistics`; None: no background.

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
    covariance_type = covariance_layout(covariance_type)
    x = jnp.asarray(x)
    dtype = x.dtype
    weight = (
        jnp.ones(x.shape[0], dtype) if sample_weight is None else jnp.asarray(sample_weight, dtype)
    )
    block = block_size(
        x.shape[0],
        x.shape[1],
        parameters.means.shape[0],
        covariance_type,
        dtype.itemsize,
        block_rows,
    )
    centre = jnp.asarray(centre, dtype)
    blocks = DataBlocks(split_blocks(x - centre, block), split_blocks(weight, block), None, centre)
    if use_kernel is None:
        use_kernel = covariance_type == "full" and native.usable(dtype)
    if background_log_density is not None:
        background_log_density = jnp.asarray(background_log_density, dtype)
    return block_statistics(
        parameters,
        blocks,
        covariance_type,
        use_kernel=use_kernel,
        background_log_density=background_log_density,
    )
