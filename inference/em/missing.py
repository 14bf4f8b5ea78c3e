"""Missing entries (NaN): the E-step of the observed-data likelihood, per missingness pattern.

With entries of :math:`x_n` missing at random, EM maximizes the likelihood of what was
observed (Ghahramani & Jordan 1994). Row :math:`n` observes the coordinates :math:`O`
(its *pattern*) and misses :math:`M`; under component :math:`k`

.. math::

    \\log p(x_{n,O} \\mid k) = \\log \\mathcal{N}(x_{n,O} \\mid \\mu_{k,O}, \\Sigma_{k,OO}),\\qquad
    \\hat x_{nk} = \\mathbb{E}[x_n \\mid x_{n,O}, k]:\\;
    \\hat x_{nk,M} = \\mu_{k,M} + \\Sigma_{k,MO} \\Sigma_{k,OO}^{-1} (x_{n,O} - \\mu_{k,O}),

    C_{pk} = \\operatorname{Cov}[x_n \\mid x_{n,O}, k]:\\;
    C_{pk,MM} = \\Sigma_{k,MM} - \\Sigma_{k,MO} \\Sigma_{k,OO}^{-1} \\Sigma_{k,OM}
    \\text{ (zero elsewhere)}.

The responsibilities come from the marginal densities, and the M-step receives the
expected sufficient statistics :math:`N_k = \\sum_n w_n r_{nk}`,
:math:`s_k = \\sum_n w_n r_{nk} \\hat x_{nk}` and
:math:`S_k = \\sum_n w_n r_{nk} (\\hat x_{nk} \\hat x_{nk}^T + C_{p(n)k})`: the same
:class:`gaussmix.inference.em.statistics.SufficientStatistics` as complete data, so
every M-step (the four classic families, mclust's 14 models, MAP) runs unchanged and
every EM iteration raises the observed-data likelihood.

**Patterns, not rows.** What depends on :math:`O` and :math:`k` alone is computed once per
pattern and component (:func:`pattern_factors`): the Cholesky factor :math:`L` of
:math:`\\tilde\\Sigma = \\Sigma_{OO} \\oplus I_M` (the covariance with its missing rows
and columns replaced by the identity's, so that every pattern has the shape (D, D)),
:math:`W = L^{-1}`, :math:`G = \\Sigma\\, \\mathrm{diag}(o)\\, W^T` and :math:`C`. A row
then gathers its pattern's factors: with :math:`d = o \\odot (x - \\mu_k)`, :math:`z =
W d`, the squared distance is :math:`\\lVert z \\rVert^2`, :math:`\\hat x_{nk} = \\mu_k +
G z` on :math:`M` and :math:`\\hat x_{nk} = x_n` on :math:`O`. The unique patterns are
found on the host (:func:`find_patterns`); their table is an array argument padded to a
power-of-two bucket, so that new data with as many patterns does not recompile. Cost per
iteration: :math:`O(P K D^3)` for the factors plus :math:`O(N K D^2)` for the rows
(full and tied), :math:`O(N K D)` for diagonal and spherical layouts, which need no
factor at all (:math:`\\hat x_{nk,M} = \\mu_{k,M}`, :math:`C` the missing variances).

A seam for measurement errors (a per-row covariance :math:`S_n` added to
:math:`\\Sigma_k`): the factors then belong to rows, not patterns; :func:`row_terms` takes
them gathered per row either way.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from gaussmix.inference import compilation
from gaussmix.inference.em.features import (
    ACCELERATOR_BLOCK_BYTES,
    BLOCK_ALIGNMENT,
    CPU_BLOCK_BYTES,
    MIN_BLOCK_ROWS,
    DataBlocks,
    split_blocks,
)
from gaussmix.inference.em.parameters import LOG_2PI, MixtureParameters, lower_triangular_inverse
from gaussmix.inference.em.statistics import SufficientStatistics
from gaussmix.inference.em.validation import as_float_array
from gaussmix.models.priors import covariance_layout

__all__ = [
    "MIN_PATTERN_BUCKET",
    "NAN_POLICIES",
    "MissingPatterns",
    "PatternFactors",
    "as_data_array",
    "block_statistics",
    "check_missing",
    "default_block_rows",
    "fill_missing",
    "find_patterns",
    "log_responsibilities",
    "marginal_log_responsibilities",
    "pattern_bucket",
    "pattern_factors",
    "row_terms",
    "sufficient_statistics",
]

#: What a fit does with NaN entries: refuse them, maximize the likelihood of the observed
#: entries, or drop the rows that hold any.
NAN_POLICIES = ("raise", "marginalize", "omit")
#: Fewest rows of a pattern table (a power of two): a few patterns more or less do not
#: recompile.
MIN_PATTERN_BUCKET = 8


class MissingPatterns(NamedTuple):
    """Which entries of each row are observed, as a pattern index into a table.

    Attributes:
        pattern: (N,) int32 row -> its pattern (or blocks of it, (n_blocks, block_rows),
            the padding pointing at pattern 0).
        observed: (P, D) 1 where the pattern observes the coordinate, 0 where it misses
            it, in the data's dtype; P a bucket (:func:`pattern_bucket`), the unused
            rows all ones.
    """

    pattern: jax.Array
    observed: jax.Array


class PatternFactors(NamedTuple):
    """Per pattern and component (``K'`` = 1 for a shared covariance), see the module.

    Attributes:
        whiten: (P, K', D, D) :math:`W = L^{-1}`, zero on the missing rows and columns.
        regression: (P, K', D, D) :math:`G = \\Sigma\\, \\mathrm{diag}(o) W^T`.
        half_log_det: (P, K') :math:`\\tfrac12 \\log |\\Sigma_{OO}|`.
        conditional: (P, K', D, D) :math:`C`, the conditional covariance of the
            missing coordinates (zero on observed rows and columns).
    """

    whiten: jax.Array
    regression: jax.Array
    half_log_det: jax.Array
    conditional: jax.Array


def pattern_bucket(n_patterns: int) -> int:
    """Rows of the padded pattern table: the power of two at or above ``n_patterns``, at
    least :data:`MIN_PATTERN_BUCKET`.

    Example:
        >>> pattern_bucket(3), pattern_bucket(9)
        (8, 16)
    """
    return max(MIN_PATTERN_BUCKET, 1 << max(0, int(n_patterns) - 1).bit_length())


def find_patterns(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The missingness patterns of ``x`` (..., N, D) on the host.

    Returns:
        (..., N) int32 pattern of each row and the (P, D) table of observed masks in
        ``x``'s dtype, padded with rows of ones to :func:`pattern_bucket` rows. Patterns
        are numbered in NumPy's sorted order of the masks, so the table depends on the
        set of patterns alone.

    Example:
        >>> pattern, observed = find_patterns(np.array([[1.0, np.nan], [2.0, 3.0], [4.0, np.nan]]))
        >>> pattern.tolist(), observed[:2].tolist()
        ([0, 1, 0], [[1.0, 0.0], [1.0, 1.0]])
    """
    x = np.asarray(x)
    mask = ~np.isnan(x.reshape(-1, x.shape[-1]))
    unique, inverse = np.unique(mask, axis=0, return_inverse=True)
    table = np.ones((pattern_bucket(unique.shape[0]), x.shape[-1]), x.dtype)
    table[: unique.shape[0]] = unique
    return inverse.reshape(x.shape[:-1]).astype(np.int32), table


def check_missing(x: np.ndarray, name: str = "x") -> None:
    """A ValueError for what no policy fits: infinity, a row or a column without any
    observed entry (the column is named, with the fix)."""
    if np.isinf(x).any():
        raise ValueError(
            f"{name} contains infinity; remove those values first (NaN marks a missing entry, "
            "infinity is no number to marginalize)."
        )
    rows = x.reshape(-1, x.shape[-2], x.shape[-1])
    for dataset in rows:
        missing = np.isnan(dataset)
        empty_columns = np.flatnonzero(missing.all(axis=0))
        if empty_columns.size:
            raise ValueError(
                f"column {int(empty_columns[0])} of {name} holds no observed entry (all "
                f"{dataset.shape[0]} values NaN), so nothing can be estimated for it; drop "
                f"that column (x[:, [{', '.join(map(str, empty_columns))}]] are all NaN)."
            )
        empty_rows = np.flatnonzero(missing.all(axis=1))
        if empty_rows.size:
            raise ValueError(
                f"{empty_rows.size} row(s) of {name} have no observed entry (all NaN; "
                f"first: row {int(empty_rows[0])}); they carry no information: drop them."
            )


def _full_covariances(covariances: jax.Array, layout: str) -> jax.Array:
    """(K', D, D) covariances of a full or tied layout (K' = 1 for tied)."""
    return covariances if layout == "full" else covariances[None]


def pattern_factors(covariances: ArrayLike, observed: ArrayLike) -> PatternFactors:
    """:class:`PatternFactors` of (K', D, D) ``covariances`` for the (P, D) ``observed``
    masks (pure). A missing coordinate's row and column of :math:`\\Sigma` are replaced
    by the identity's before the Cholesky factorization, so every shape is fixed.

    Example:
        >>> sigma = jnp.array([[[2.0, 1.0], [1.0, 2.0]]])
        >>> f = pattern_factors(sigma, jnp.array([[1.0, 0.0]]))
        >>> f.conditional[0, 0].tolist()   # 2 - 1 * 1 / 2
        [[0.0, 0.0], [0.0, 1.5]]
    """
    covariances = jnp.asarray(covariances)
    observed = jnp.asarray(observed, covariances.dtype)[:, None, :]  # (P, 1, D)
    missing = 1 - observed
    n_features = covariances.shape[-1]
    identity = jnp.eye(n_features, dtype=covariances.dtype)
    outer = observed[..., :, None] * observed[..., None, :]
    embedded = covariances[None] * outer + identity * missing[..., None]
    lower = jnp.linalg.cholesky(embedded)
    whiten = lower_triangular_inverse(lower) * outer  # exact zeros on the missing block
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(lower, axis1=-2, axis2=-1)), axis=-1)
    regression = covariances[None] @ jnp.swapaxes(whiten, -1, -2)
    conditional = covariances[None] - regression @ jnp.swapaxes(regression, -1, -2)
    conditional = conditional * (missing[..., :, None] * missing[..., None, :])
    return PatternFactors(whiten, regression, half_log_det, conditional)


def row_terms(x, observed, means, log_weights, covariances, factors, layout):
    """Per row and component: the weighted marginal log density (n, K) and the
    conditional means :math:`\\hat x` (n, K, D).

    Args:
        x: (n, D) rows (any finite value in the missing entries), centred as ``means``.
        observed: (n, D) their masks. means: (K, D). log_weights: (K,).
        covariances: the layout's covariances (used by the diagonal layouts).
        factors: :class:`PatternFactors` gathered per row, (n, K', ...) (full and tied),
            or None (diagonal layouts).
        layout: "full", "tied", "diag" or "spherical".
    """
    seen = observed[:, None, :] > 0
    difference = jnp.where(seen, x[:, None, :] - means[None], 0.0)  # (n, K, D)
    n_observed = jnp.sum(observed, axis=1)
    if layout in ("diag", "spherical"):
        variances = covariances if layout == "diag" else covariances[:, None]
        variances = jnp.broadcast_to(variances, means.shape)
        distance = jnp.sum(difference * difference / variances[None], axis=-1)
        half_log_det = 0.5 * observed @ jnp.log(variances).T
        imputed = jnp.where(seen, x[:, None, :], means[None])
    else:
        whitened = (factors.whiten @ difference[..., None])[..., 0]
        distance = jnp.sum(whitened * whitened, axis=-1)
        half_log_det = jnp.broadcast_to(factors.half_log_det, distance.shape)
        regressed = (factors.regression @ whitened[..., None])[..., 0]
        imputed = jnp.where(seen, x[:, None, :], means[None] + regressed)
    log_prob = log_weights - half_log_det - 0.5 * n_observed[:, None] * LOG_2PI - 0.5 * distance
    return log_prob, imputed


def _layout_factors(covariances, observed, layout):
    if layout in ("diag", "spherical"):
        return None
    return pattern_factors(_full_covariances(covariances, layout), observed)


def _gather(factors, pattern):
    return None if factors is None else jax.tree.map(lambda table: table[pattern], factors)


def block_statistics(
    parameters: MixtureParameters,
    blocks: DataBlocks,
    missing: MissingPatterns,
    covariance_type: str,
) -> SufficientStatistics:
    """Expected E-step statistics of data with missing entries (pure, no jit inside).

    The statistics function of in-memory and sharded EM on data with NaN: a
    ``lax.scan`` over the blocks as :func:`gaussmix.inference.em.statistics.block_statistics`,
    each row's terms from its pattern's factors; ``log_likelihood`` is the observed-data
    log-likelihood.

    Args:
        parameters: the current :class:`MixtureParameters`.
        blocks: :class:`gaussmix.inference.em.features.DataBlocks` (missing entries any
            finite value; ``features`` unused).
        missing: :class:`MissingPatterns` whose ``pattern`` is split into the same blocks.
        covariance_type: any EM covariance type (its storage layout decides).
    """
    layout = covariance_layout(covariance_type)
    x_blocks, weight_blocks, _, centre = blocks
    dtype = x_blocks.dtype
    means = parameters.means - centre
    log_weights = jnp.log(parameters.weights)
    covariances = parameters.covariances
    factors = _layout_factors(covariances, missing.observed, layout)
    n_components, n_features = means.shape
    n_patterns = missing.observed.shape[0]
    diagonal = layout in ("diag", "spherical")

    def body(carry, inputs):
        counts, first, second, pattern_counts, log_likelihood = carry
        x_block, w_block, p_block = inputs
        observed = missing.observed[p_block]
        log_prob, imputed = row_terms(
            x_block, observed, means, log_weights, covariances, _gather(factors, p_block), layout
        )
        largest = jnp.max(log_prob, axis=1, keepdims=True)
        unnormalized = jnp.exp(log_prob - largest)
        total = jnp.sum(unnormalized, axis=1, keepdims=True)
        weighted = unnormalized * (w_block[:, None] / total)  # w_n r_nk
        counts = counts + jnp.sum(weighted, axis=0)
        first = first + jnp.einsum("nk,nkd->kd", weighted, imputed)
        if diagonal:
            second = second + jnp.einsum("nk,nkd->kd", weighted, imputed * imputed)
        else:
            second = second + jnp.einsum("nk,nkd,nke->kde", weighted, imputed, imputed)
        pattern_counts = pattern_counts + jax.ops.segment_sum(
            weighted, p_block, num_segments=n_patterns
        )
        norm = largest[:, 0] + jnp.log(total[:, 0])
        log_likelihood = log_likelihood + jnp.sum(jnp.where(w_block > 0, w_block * norm, 0.0))
        return (counts, first, second, pattern_counts, log_likelihood), None

    second_shape = (n_components, n_features) + (() if diagonal else (n_features,))
    init = (
        jnp.zeros(n_components, dtype),
        jnp.zeros((n_components, n_features), dtype),
        jnp.zeros(second_shape, dtype),
        jnp.zeros((n_patterns, n_components), dtype),
        jnp.zeros((), dtype),
    )
    counts, first, second, pattern_counts, log_likelihood = lax.scan(
        body, init, (x_blocks, weight_blocks, missing.pattern)
    )[0]
    # the conditional covariances of the missing coordinates, once per pattern
    if diagonal:
        variances = covariances if layout == "diag" else covariances[:, None]
        variances = jnp.broadcast_to(variances, (n_components, n_features))
        second = second + pattern_counts.T @ (1 - missing.observed) * variances
        if layout == "spherical":
            second = jnp.sum(second, axis=-1)
    else:
        conditional = jnp.broadcast_to(
            factors.conditional, (n_patterns, n_components, n_features, n_features)
        )
        second = second + jnp.einsum("pk,pkde->kde", pattern_counts, conditional)
        if layout == "tied":
            second = jnp.sum(second, axis=0)
    return SufficientStatistics(counts, first, second, log_likelihood, jnp.sum(weight_blocks))


def log_responsibilities(
    x: ArrayLike,
    pattern: ArrayLike,
    observed: ArrayLike,
    weights: ArrayLike,
    means: ArrayLike,
    covariances: ArrayLike,
    covariance_type: str,
    *,
    block_rows: int = 4096,
) -> tuple[jax.Array, jax.Array]:
    """Marginal log-likelihood (N,) and log responsibilities (N, K) of rows with missing
    entries, from the observed coordinates alone.

    .. math::

        \\log p(x_{n,O}) = \\operatorname{logsumexp}_k
          \\left[\\log \\pi_k + \\log \\mathcal{N}(x_{n,O} \\mid \\mu_{k,O}, \\Sigma_{k,OO})\\right]

    Args:
        x: (N, D) rows, any finite value in their missing entries.
        pattern: (N,) int pattern of each row; observed: (P, D) the pattern table
            (:func:`find_patterns`).
        weights: (K,). means: (K, D). covariances: the layout's covariances.
        covariance_type: any EM covariance type.
        block_rows: rows per block.

    Example:
        >>> x = np.array([[0.0, np.nan]])
        >>> pattern, observed = find_patterns(x)
        >>> norm, _ = log_responsibilities(np.nan_to_num(x), pattern, observed,
        ...     np.array([1.0]), np.zeros((1, 2)), np.ones((1, 2)), "diag")
        >>> round(float(norm[0]), 6)   # log N(0 | 0, 1)
        -0.918939
    """
    layout = covariance_layout(covariance_type)
    x = jnp.asarray(x)
    dtype = x.dtype
    observed = jnp.asarray(observed, dtype)
    means = jnp.asarray(means, dtype)
    covariances = jnp.asarray(covariances, dtype)
    log_weights = jnp.log(jnp.asarray(weights, dtype))
    n_rows = x.shape[0]
    block = max(1, min(n_rows, block_rows))
    factors = _layout_factors(covariances, observed, layout)

    def one_block(inputs):
        x_block, p_block = inputs
        log_prob, _ = row_terms(
            x_block,
            observed[p_block],
            means,
            log_weights,
            covariances,
            _gather(factors, p_block),
            layout,
        )
        norm = jax.nn.logsumexp(log_prob, axis=1)
        return norm, log_prob - norm[:, None]

    norm, log_resp = lax.map(
        one_block, (split_blocks(x, block), split_blocks(jnp.asarray(pattern), block, fill=0))
    )
    return norm.reshape(-1)[:n_rows], log_resp.reshape(-1, means.shape[0])[:n_rows]


def as_data_array(value, name: str, nan_policy: str) -> np.ndarray:
    """``value`` as a float array for a fit under ``nan_policy``: NaN refused with
    "raise" (naming the other policies), kept as NaN otherwise; infinity, rows and
    columns without an observed entry refused under every policy."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(
            f"Invalid value for 'nan_policy': {nan_policy!r}; it should be in {list(NAN_POLICIES)}."
        )
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}.")
    holes = np.isnan(array) if array.dtype.kind == "f" else np.zeros(array.shape, bool)
    if nan_policy == "raise" or not holes.any():
        if holes.any():
            raise ValueError(
                f"{name} contains NaN (missing entries) and nan_policy='raise'; pass "
                "nan_policy='marginalize' (the likelihood of the observed entries) or "
                "nan_policy='omit' (drop the rows with NaN), or impute those values first."
            )
        return as_float_array(array, name)
    if array.ndim >= 2:
        check_missing(array, name)
    finite = as_float_array(np.where(holes, 0, array), name)
    return np.where(holes, np.nan, finite).astype(finite.dtype)


def fill_missing(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``x`` (..., N, D) with each NaN replaced by its column's weighted mean of the
    observed entries (per dataset), on the host: the data the initialization sees, and
    the centre of the statistics."""
    holes = np.isnan(x)
    observed_weight = np.where(holes, 0.0, np.asarray(weight, np.float64)[..., None])
    totals = np.sum(observed_weight * np.where(holes, 0.0, x), axis=-2, keepdims=True)
    means = totals / np.maximum(
        np.sum(observed_weight, axis=-2, keepdims=True), np.finfo(float).tiny
    )
    return np.where(holes, means, x).astype(x.dtype)


def default_block_rows(n_features: int, n_components: int, layout: str, itemsize: int) -> int:
    """Default rows per block of the missing-data E-step: a block's gathered factors
    (two (n, K', D, D) for full and tied) and (n, K, D) temporaries within the E-step's
    block budget, at least ``MIN_BLOCK_ROWS``, a multiple of ``BLOCK_ALIGNMENT``."""
    shared = 1 if layout == "tied" else n_components
    width = 5 * n_components * n_features + 4 * n_components
    if layout in ("full", "tied"):
        width += 2 * shared * n_features * n_features
    budget = CPU_BLOCK_BYTES if jax.default_backend() == "cpu" else ACCELERATOR_BLOCK_BYTES
    rows = max(MIN_BLOCK_ROWS, budget // (width * itemsize))
    return max(BLOCK_ALIGNMENT, rows // BLOCK_ALIGNMENT * BLOCK_ALIGNMENT)


_log_responsibilities = compilation.jit(
    log_responsibilities, static_argnames=("covariance_type", "block_rows")
)


def marginal_log_responsibilities(
    x: np.ndarray, parameters: MixtureParameters, covariance_type: str
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`log_responsibilities` of host rows ``x`` (n, D) with NaN entries (each row
    with at least one observed entry): patterns found here, one compiled program per
    shape and pattern bucket. Returns NumPy arrays in ``x``'s dtype."""
    pattern, observed = find_patterns(x)
    norm, log_resp = _log_responsibilities(
        np.where(np.isnan(x), 0, x),
        pattern,
        observed,
        *(np.asarray(a, x.dtype) for a in parameters[:3]),
        covariance_type=covariance_type,
        block_rows=4096,
    )
    return np.asarray(norm), np.asarray(log_resp)


def sufficient_statistics(
    x: ArrayLike,
    pattern: ArrayLike,
    observed: ArrayLike,
    parameters: MixtureParameters,
    *,
    covariance_type: str,
    centre: ArrayLike,
    sample_weight: ArrayLike | None = None,
    block_rows: int | None = None,
) -> SufficientStatistics:
    """Expected E-step statistics of a chunk with missing entries (pure; sum them over
    chunks or devices), as :func:`gaussmix.inference.em.statistics.sufficient_statistics`.

    Args:
        x: (n, D) one chunk, any finite value in the missing entries.
        pattern: (n,) its rows' patterns in ``observed`` (P, D) (:func:`find_patterns`;
            each chunk or device may have its own table).
        parameters: the current :class:`MixtureParameters`.
        covariance_type: any EM covariance type.
        centre: (D,) the same point for every chunk.
        sample_weight: (n,) non-negative weights, default ones.
        block_rows: rows per block (default :func:`default_block_rows`).
    """
    x = jnp.asarray(x)
    dtype = x.dtype
    layout = covariance_layout(covariance_type)
    n_rows, n_features = x.shape
    if block_rows is None:
        block_rows = default_block_rows(
            n_features, parameters.means.shape[0], layout, dtype.itemsize
        )
    block = max(1, min(n_rows, block_rows))
    weight = jnp.ones(n_rows, dtype) if sample_weight is None else jnp.asarray(sample_weight, dtype)
    centre = jnp.asarray(centre, dtype)
    blocks = DataBlocks(split_blocks(x - centre, block), split_blocks(weight, block), None, centre)
    patterns = MissingPatterns(
        split_blocks(jnp.asarray(pattern), block, fill=0), jnp.asarray(observed, dtype)
    )
    return block_statistics(parameters, blocks, patterns, covariance_type)
