"""Exponential-family features of the E-step, natural parameters, and blocks of rows.

On data centred at :math:`c` (the weighted data mean) the weighted log density of
component :math:`k` is linear in the per-point features
:math:`\\phi(x) = [q(x), x, 1]`:

.. math::

    \\log \\pi_k + \\log \\mathcal{N}(x \\mid \\mu_k, P_k^{-1}) = \\phi(x)^T \\eta_k,

with :math:`q(x)` the upper triangle of :math:`x x^T` (``full``), :math:`x^2` (``diag``),
:math:`\\lVert x \\rVert^2` (``spherical``) or nothing (``tied``, whose shared quadratic
form is added row by row). Rows are processed in blocks (:func:`block_size`,
:func:`split_blocks`) sized for the cache.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gaussmix.inference.em.parameters import LOG_2PI, MixtureParameters
from gaussmix.models.priors import covariance_layout

__all__ = [
    "ACCELERATOR_BLOCK_BYTES",
    "BATCH_DESIGN_CACHE_BYTES",
    "BLOCK_ALIGNMENT",
    "CPU_BLOCK_BYTES",
    "MIN_BLOCK_ROWS",
    "SLICED_PRODUCTS_MAX_FEATURES",
    "DataBlocks",
    "block_size",
    "data_blocks",
    "design_matrix",
    "feature_count",
    "natural_parameters",
    "split_blocks",
    "upper_triangle",
]

#: Bytes of one block of rows (features and (n, K) temporaries) per scan step: on a CPU a
#: block stays in the cache between the E-step and M-step products; an accelerator wants
#: few, large products.
CPU_BLOCK_BYTES = 4 * 2**20
ACCELERATOR_BLOCK_BYTES = 256 * 2**20
#: A batch of datasets whose design matrices and (N, K) temporaries take at most this
#: much is one block per dataset, its features computed once per fit: measured 1.2-1.7x
#: faster than streaming for batches (one dataset alone runs faster streamed).
BATCH_DESIGN_CACHE_BYTES = 2**30
#: Fewest rows per block (a power of two): smaller blocks cost more in loop steps than
#: they save in cache (many small datasets fitted as a batch).
MIN_BLOCK_ROWS = 256
#: Rows per block are a multiple of this: XLA's CPU kernels lose up to a third of their
#: speed on odd sizes (E2's 5405-row blocks against 5400 or 4096).
BLOCK_ALIGNMENT = 64
#: Above this many features the full-covariance design matrix is one gather instead of
#: one slice product per feature (fewer operations to compile).
SLICED_PRODUCTS_MAX_FEATURES = 64


def upper_triangle(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the upper triangle of a (D, D) matrix, row by row."""
    return np.triu_indices(n_features)


def _product_columns(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Column pairs (i, j) of ``[x, 1]`` whose products are the full-covariance features
    ``[x_i x_j (i <= j), x, 1]``; index D is the column of ones."""
    rows, cols = upper_triangle(n_features)
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
    covariance_type = covariance_layout(covariance_type)
    n = x_centred.shape[0]
    extended = jnp.concatenate([x_centred, jnp.ones((n, 1), x_centred.dtype)], axis=1)
    if covariance_type == "diag":
        return jnp.concatenate([x_centred * x_centred, extended], axis=1)
    if covariance_type == "full":
        n_features = x_centred.shape[1]
        if n_features > SLICED_PRODUCTS_MAX_FEATURES:
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
    covariance_type = covariance_layout(covariance_type)
    weights, means, _, factor = parameters
    centred_means = means - centre
    n_features = means.shape[-1]
    if covariance_type == "full":
        precisions = factor @ jnp.swapaxes(factor, -1, -2)
        rows, cols = upper_triangle(n_features)
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
        - 0.5 * n_features * LOG_2PI
    )
    return jnp.concatenate([quadratic, linear, constant[:, None]], axis=1).T


def block_size(
    n_rows: int,
    n_features: int,
    n_components: int,
    covariance_type: str,
    itemsize: int,
    block_rows: int | None,
    n_datasets: int = 1,
) -> int:
    """Rows per block: ``block_rows`` when given, else blocks of features and a few (n, K)
    temporaries near ``CPU_BLOCK_BYTES`` per dataset (``ACCELERATOR_BLOCK_BYTES`` off the
    CPU), at least ``MIN_BLOCK_ROWS``: as many blocks as the largest power of two of rows
    within that budget needs, evened out and rounded up to ``BLOCK_ALIGNMENT`` rows; data
    of at most two such blocks is one block. The ``n_datasets`` of a batch are processed
    together: one block each while the whole batch takes at most
    ``BATCH_DESIGN_CACHE_BYTES``, else blocks of at most ``ACCELERATOR_BLOCK_BYTES`` in
    all (the many small products of a batch gain more from long blocks than from the
    cache)."""
    if block_rows is not None:
        return int(max(1, min(n_rows, block_rows)))
    width = feature_count(n_features, covariance_type) + 2 * n_components
    whole_batch = n_rows * (2 * width + n_components) * itemsize * n_datasets
    if n_datasets > 1 and whole_batch <= BATCH_DESIGN_CACHE_BYTES:
        return int(max(1, n_rows))
    on_cpu = jax.default_backend() == "cpu"
    budget = CPU_BLOCK_BYTES if on_cpu else ACCELERATOR_BLOCK_BYTES
    batch_budget = min(budget * n_datasets, ACCELERATOR_BLOCK_BYTES)
    target = max(MIN_BLOCK_ROWS, batch_budget // (width * itemsize * n_datasets))
    if n_rows <= 2 * target:
        return int(max(1, n_rows))
    # as many blocks as the power of two below the target needs, evened out so that the
    # last block's padding stays small, aligned
    n_blocks = -(-n_rows // (1 << (target.bit_length() - 1)))
    rows = -(-n_rows // n_blocks)
    return -(-rows // BLOCK_ALIGNMENT) * BLOCK_ALIGNMENT


def feature_count(n_features: int, covariance_type: str) -> int:
    """F, the columns of :func:`design_matrix` for D features."""
    covariance_type = covariance_layout(covariance_type)
    quadratic = {
        "full": n_features * (n_features + 1) // 2,
        "tied": 0,
        "diag": n_features,
        "spherical": 1,
    }[covariance_type]
    return quadratic + n_features + 1


def split_blocks(array: jax.Array, block_rows: int, fill=0.0) -> jax.Array:
    """(N, ...) -> (n_blocks, block_rows, ...), padding the last block with ``fill``."""
    n_rows = array.shape[0]
    n_blocks = -(-n_rows // block_rows)
    padding = n_blocks * block_rows - n_rows
    if padding:
        pad_width = [(0, padding)] + [(0, 0)] * (array.ndim - 1)
        array = jnp.pad(array, pad_width, constant_values=fill)
    return array.reshape((n_blocks, block_rows, *array.shape[1:]))


class DataBlocks(NamedTuple):
    """One dataset as blocks of rows, centred, as every E-step scan reads it.

    Attributes:
        x: (n_blocks, block_rows, D) the data minus ``centre``, the last block padded
            with zero rows.
        weight: (n_blocks, block_rows) sample weights, zero on the padding.
        features: (n_blocks, block_rows, F) the design matrix computed once per fit, or
            None (computed per block, every iteration).
        centre: (D,) the weighted data mean the moments are taken about.
    """

    x: jax.Array
    weight: jax.Array
    features: jax.Array | None
    centre: jax.Array


def data_blocks(
    x: jax.Array,
    sample_weight: jax.Array,
    block_rows: int,
    covariance_type: str,
    *,
    cache_design: bool = False,
) -> DataBlocks:
    """Centre ``x`` (N, D) at its weighted mean and split it into blocks of ``block_rows``.

    The design matrix depends on the data alone: with ``cache_design`` it is computed
    once here (data of one block), else once per block per iteration by the scan.
    """
    centre = sample_weight @ x / jnp.sum(sample_weight)
    x_blocks = split_blocks(x - centre, block_rows)
    weight_blocks = split_blocks(sample_weight, block_rows)
    features = (
        jax.vmap(design_matrix, in_axes=(0, None))(x_blocks, covariance_type)
        if cache_design
        else None
    )
    return DataBlocks(x_blocks, weight_blocks, features, centre)
