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
:math:`W = L^{-1}` masked, the masked precision :math:`Q = W^T W` (:math:`\\Sigma_{OO}^{-1}`
padded with zeros), :math:`\\Sigma Q` and :math:`C`. On the rows with their missing entries
zeroed, :math:`x_0`, the marginal log density of pattern :math:`p` is linear in the
complete-data features :math:`[\\mathrm{vech}(x_0 x_0^T), x_0, 1]` (natural parameters from
:math:`Q`), and the conditional mean is affine, :math:`\\hat x = A x_0 + c`; so the
E-step is the complete-data one on each pattern's rows (one product with the pattern's
natural parameters, a softmax, the responsibility-weighted features summed per pattern)
followed by one transformation per pattern (:math:`s = A s_0 + N c`,
:math:`S = A S_0 A^T + A s_0 c^T + c s_0^T A^T + N (c c^T + C)`). The rows are sorted by
pattern on the host into blocks of one pattern (:func:`pattern_blocks`), so a block
gathers its pattern's parameters once; the unique patterns are found on the host
(:func:`find_patterns`) and their table is an array argument padded to a power-of-two
bucket, and every shape is a function of N, D, K and the bucket: new data with as many
patterns does not recompile. Cost per iteration: the complete-data E-step's
:math:`O(N K F)` on at most a quarter more rows (the blocks' padding), plus
:math:`O(P K D^3)`. The initialization sees each missing entry as its column's mean.

Prediction (:func:`log_responsibilities`) gathers each row's factors instead
(:func:`row_terms`): one pass, no sorting. A seam for measurement errors (a per-row
covariance :math:`S_n` added to :math:`\\Sigma_k`): the factors then belong to rows, not
patterns, which :func:`row_terms` already takes per row.
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
    BLOCK_ALIGNMENT,
    CPU_BLOCK_BYTES,
    MIN_BLOCK_ROWS,
    design_matrix,
    feature_count,
    split_blocks,
    upper_triangle,
)
from gaussmix.inference.em.parameters import LOG_2PI, MixtureParameters, lower_triangular_inverse
from gaussmix.inference.em.statistics import SufficientStatistics
from gaussmix.inference.em.validation import as_float_array
from gaussmix.models.priors import covariance_layout

__all__ = [
    "MIN_PATTERN_BUCKET",
    "NAN_POLICIES",
    "PatternBlocks",
    "PatternFactors",
    "as_data_array",
    "block_shape",
    "block_statistics",
    "check_missing",
    "default_block_rows",
    "fill_missing",
    "find_patterns",
    "log_responsibilities",
    "marginal_log_responsibilities",
    "pattern_blocks",
    "pattern_bucket",
    "pattern_factors",
    "prepare_chunk",
    "row_terms",
    "sufficient_statistics",
]

#: What a fit does with NaN entries: refuse them, maximize the likelihood of the observed
#: entries, or drop the rows that hold any.
NAN_POLICIES = ("raise", "marginalize", "omit")
#: Fewest rows of a pattern table (a power of two): a few patterns more or less do not
#: recompile.
MIN_PATTERN_BUCKET = 8


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


class PatternBlocks(NamedTuple):
    """Rows sorted by missingness pattern into blocks of one pattern each, in groups.

    Built on the host by :func:`pattern_blocks`; the E-step scans over the groups, so a
    block gathers its pattern's factors once, not each row.

    Attributes:
        x: (n_groups, G, b, D) rows, any finite value in their missing entries (the
            column means), the padding any finite value.
        weight: (n_groups, G, b) sample weights, zero on the padding.
        pattern: (n_groups, G) int32 the pattern of each block (0 for unused blocks).
        observed: (P, D) the pattern table (:func:`find_patterns`).
    """

    x: jax.Array
    weight: jax.Array
    pattern: jax.Array
    observed: jax.Array


def block_shape(
    n_rows: int, n_patterns: int, n_features: int, n_components: int, layout: str, itemsize: int
) -> tuple[int, int, int]:
    """(rows per block b, blocks per group G, groups) of :func:`pattern_blocks` for
    ``n_rows`` rows and a pattern table of ``n_patterns`` (its bucket) rows: b the power
    of two (8 to 256) at most ``n_rows / (4 P)``, so that the blocks' padding adds at
    most about a quarter; G blocks per scan step within the E-step's block budget;
    enough groups for any split of the rows among the patterns. A function of the
    shapes alone: new data of the same size and bucket does not recompile."""
    per_pattern = max(1, n_rows // (4 * n_patterns))
    rows = int(min(256, max(8, 1 << (per_pattern.bit_length() - 1))))
    n_blocks = -(-n_rows // rows) + n_patterns
    group = max(
        1, min(n_blocks, default_block_rows(n_features, n_components, layout, itemsize) // rows)
    )
    return rows, group, -(-n_blocks // group)


def pattern_blocks(
    x: np.ndarray,
    weight: np.ndarray,
    pattern: np.ndarray,
    observed: np.ndarray,
    shape: tuple[int, int, int],
) -> PatternBlocks:
    """The rows of ``x`` (n, D) sorted by ``pattern`` (stable) into the blocks of
    ``shape`` (:func:`block_shape`), on the host (NumPy arrays).

    Example:
        >>> x = np.array([[1.0, 0.0], [2.0, 3.0], [4.0, 0.0]])
        >>> blocks = pattern_blocks(x, np.ones(3), np.array([0, 1, 0]), np.ones((8, 2)), (2, 2, 2))
        >>> blocks.pattern.tolist(), blocks.weight.reshape(-1).tolist()
        ([[0, 1], [0, 0]], [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    """
    rows, group, n_groups = shape
    n_patterns, n_features = observed.shape
    order = np.argsort(pattern, kind="stable")
    counts = np.bincount(pattern, minlength=n_patterns)
    blocks = -(-counts // rows)
    first_block = np.concatenate([[0], np.cumsum(blocks)[:-1]])
    first_row = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_pattern = pattern[order]
    rank = np.arange(pattern.shape[0]) - first_row[sorted_pattern]
    destination = first_block[sorted_pattern] * rows + rank
    total = n_groups * group * rows
    x_out = np.zeros((total, n_features), x.dtype)
    x_out[destination] = x[order]
    w_out = np.zeros(total, x.dtype)
    w_out[destination] = weight[order]
    block_pattern = np.zeros(n_groups * group, np.int32)
    block_pattern[: blocks.sum()] = np.repeat(np.arange(n_patterns), blocks)
    return PatternBlocks(
        x_out.reshape(n_groups, group, rows, n_features),
        w_out.reshape(n_groups, group, rows),
        block_pattern.reshape(n_groups, group),
        observed,
    )


def _pattern_natural_parameters(parameters, centred_means, observed, factors, layout):
    """(P, F, K) natural parameters of each pattern's marginal densities on the
    design matrix of the rows with their missing entries zeroed (full features for the
    full and tied layouts, :math:`[x^2, x, 1]` for the diagonal ones)."""
    n_features = centred_means.shape[-1]
    log_weights = jnp.log(parameters.weights)
    n_observed = jnp.sum(observed, axis=-1)[:, None]  # (P, 1)
    if factors is None:
        variances = _variances(parameters.covariances, layout, centred_means.shape)
        precisions = observed[:, None, :] / variances  # (P, K, D), zero where missing
        quadratic = -0.5 * precisions
        linear = precisions * centred_means
        half_log_det = 0.5 * observed @ jnp.log(variances).T  # (P, K)
    else:
        whiten = factors.whiten  # (P, K', D, D)
        precisions = jnp.swapaxes(whiten, -1, -2) @ whiten  # masked precisions
        rows, cols = upper_triangle(n_features)
        scale = jnp.asarray(np.where(rows == cols, -0.5, -1.0), precisions.dtype)
        shape = (observed.shape[0], centred_means.shape[0])
        quadratic = jnp.broadcast_to(precisions[..., rows, cols] * scale, (*shape, rows.size))
        linear = jnp.einsum("pkij,kj->pki", precisions, centred_means)
        half_log_det = jnp.broadcast_to(factors.half_log_det, shape)
    constant = (
        log_weights
        - 0.5 * jnp.sum(centred_means * linear, axis=-1)
        - half_log_det
        - 0.5 * n_observed * LOG_2PI
    )
    return jnp.swapaxes(jnp.concatenate([quadratic, linear, constant[..., None]], axis=-1), 1, 2)


def _variances(covariances, layout, shape):
    """(K, D) variances of a diagonal or spherical layout."""
    return jnp.broadcast_to(covariances if layout == "diag" else covariances[:, None], shape)


def _expected_statistics(packed, observed, centred_means, covariances, factors, layout):
    r"""The M-step's statistics from each pattern's statistics of its zero-filled rows.

    With :math:`\hat x = A x_0 + c` (:math:`A = \mathrm{diag}(o) + \mathrm{diag}(1 - o)
    \Sigma Q`, :math:`Q` the masked precision, :math:`c = (1 - o) \odot (\mu - \Sigma Q
    \mu)`) the sums of pattern p give :math:`s = A s_0 + N c` and
    :math:`S = A S_0 A^T + A s_0 c^T + c s_0^T A^T + N (c c^T + C)`.
    """
    n_patterns, n_components, _ = packed.shape
    n_features = centred_means.shape[-1]
    counts = packed[..., -1]  # (P, K)
    first0 = packed[..., -1 - n_features : -1]  # (P, K, D)
    missing = 1 - observed[:, None, :]  # (P, 1, D)
    if factors is None:
        variances = _variances(covariances, layout, centred_means.shape)
        second0 = packed[..., :n_features]
        offset = missing * centred_means  # c
        first = observed[:, None, :] * first0 + counts[..., None] * offset
        second = observed[:, None, :] * second0 + counts[..., None] * (
            offset * offset + missing * variances
        )
        second = jnp.sum(second, axis=0)
        return jnp.sum(counts, axis=0), jnp.sum(first, axis=0), second
    rows, cols = upper_triangle(n_features)
    position = np.zeros((n_features, n_features), np.int32)
    position[rows, cols] = np.arange(rows.size)
    position[cols, rows] = np.arange(rows.size)
    second0 = packed[..., position]  # (P, K, D, D)
    shape = (n_patterns, n_components, n_features, n_features)
    regression = jnp.broadcast_to(factors.regression @ factors.whiten, shape)  # Sigma Q
    identity = jnp.eye(n_features, dtype=packed.dtype)
    transform = identity * observed[:, None, None, :] + missing[..., :, None] * regression
    offset = missing * (centred_means - jnp.einsum("pkij,kj->pki", regression, centred_means))
    first = jnp.einsum("pkij,pkj->pki", transform, first0) + counts[..., None] * offset
    moved = jnp.einsum("pkij,pkj->pki", transform, first0)
    cross = moved[..., :, None] * offset[..., None, :]
    conditional = jnp.broadcast_to(factors.conditional, shape)
    second = (
        transform @ second0 @ jnp.swapaxes(transform, -1, -2)
        + cross
        + jnp.swapaxes(cross, -1, -2)
        + counts[..., None, None] * (offset[..., :, None] * offset[..., None, :] + conditional)
    )
    return jnp.sum(counts, axis=0), jnp.sum(first, axis=0), jnp.sum(second, axis=0)


def block_statistics(
    parameters: MixtureParameters,
    blocks: PatternBlocks,
    centre: jax.Array,
    covariance_type: str,
    background_log_sides: jax.Array | None = None,
) -> SufficientStatistics:
    """Expected E-step statistics of data with missing entries (pure, no jit inside).

    The statistics function of in-memory, chunked and sharded EM on data with NaN. Rows
    come in single-pattern blocks (:class:`PatternBlocks`): on each block's design
    matrix of its rows with the missing entries zeroed, the marginal log densities are
    one product with its pattern's natural parameters, and the responsibility-weighted
    features are summed per pattern (the complete-data E-step's work, one ``lax.scan``
    over groups of blocks); after the scan each pattern's sums become the expected
    statistics (:func:`_expected_statistics`: :math:`O(P K D^3)`).
    ``log_likelihood`` is the observed-data log-likelihood.

    Args:
        parameters: the current :class:`MixtureParameters`.
        blocks: :class:`PatternBlocks` (uncentred rows).
        centre: (D,) the point the moments are taken about.
        covariance_type: any EM covariance type (its storage layout decides).
        background_log_sides: None, or the (D,) log side lengths of a uniform background's
            box (:mod:`gaussmix.inference.em.background`; the Gaussian weights then sum to
            one minus its weight): pattern p's rows get the column
            :math:`\\log \\pi_0 - \\sum_{d \\in O_p} \\log \\mathrm{side}_d` (the
            uniform's marginal density over the observed coordinates) in the
            normalization only; the components' expected statistics (the tied scatter
            included) then carry the Gaussian share of each row.
    """
    layout = covariance_layout(covariance_type)
    dtype = blocks.x.dtype
    centred_means = parameters.means - centre
    observed_table = blocks.observed
    n_patterns, n_features = observed_table.shape
    n_components = centred_means.shape[0]
    diagonal = layout in ("diag", "spherical")
    feature_layout = "diag" if diagonal else "full"
    factors = None
    if not diagonal:
        factors = pattern_factors(_full_covariances(parameters.covariances, layout), observed_table)
    natural = _pattern_natural_parameters(
        parameters, centred_means, observed_table, factors, layout
    )  # (P, F, K)
    n_columns = natural.shape[1]
    background = background_log_sides is not None
    if background:  # (P,) log pi_0 - sum_{d in O_p} log side_d
        log_background = background_log_weight(parameters.weights) - observed_table @ jnp.asarray(
            background_log_sides, dtype
        )

    def body(carry, inputs):
        packed, log_likelihood = carry
        x_group, w_group, p_group = inputs  # (G, b, D), (G, b), (G,)
        observed = observed_table[p_group][:, None, :]
        zeroed = jnp.where(observed > 0, x_group - centre, 0.0)
        features = design_matrix(zeroed.reshape(-1, n_features), feature_layout)
        features = features.reshape(*x_group.shape[:2], n_columns)  # (G, b, F)
        log_prob = jnp.einsum("gbf,gfk->gbk", features, natural[p_group])
        largest = jnp.max(log_prob, axis=-1, keepdims=True)
        if background:  # one more column, the background's, in the normalization only
            column = log_background[p_group][:, None, None]  # (G, 1, 1)
            largest = jnp.maximum(largest, column)
        unnormalized = jnp.exp(log_prob - largest)
        total = jnp.sum(unnormalized, axis=-1, keepdims=True)
        if background:
            total = total + jnp.exp(column - largest)
        weighted = unnormalized * (w_group[..., None] / total)  # w_n r_nk, (G, b, K)
        sums = jnp.einsum("gbk,gbf->gkf", weighted, features)
        packed = packed.at[p_group].add(sums)
        norm = largest[..., 0] + jnp.log(total[..., 0])
        log_likelihood = log_likelihood + jnp.sum(jnp.where(w_group > 0, w_group * norm, 0.0))
        return (packed, log_likelihood), None

    init = (jnp.zeros((n_patterns, n_components, n_columns), dtype), jnp.zeros((), dtype))
    packed, log_likelihood = lax.scan(body, init, (blocks.x, blocks.weight, blocks.pattern))[0]
    counts, first, second = _expected_statistics(
        packed, observed_table, centred_means, parameters.covariances, factors, layout
    )
    if layout == "spherical":
        second = jnp.sum(second, axis=-1)
    elif layout == "tied":
        second = jnp.sum(second, axis=0)
    return SufficientStatistics(counts, first, second, log_likelihood, jnp.sum(blocks.weight))


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
    """Rows per scan step of the missing-data E-step: a step's design matrix (full
    features for full and tied layouts, :math:`[x^2, x, 1]` for the diagonal ones) and
    (n, K) temporaries within the E-step's block budget, at least ``MIN_BLOCK_ROWS``, a
    multiple of ``BLOCK_ALIGNMENT``."""
    features = feature_count(n_features, "diag" if layout in ("diag", "spherical") else "full")
    width = features + 3 * n_components
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
    blocks: PatternBlocks,
    parameters: MixtureParameters,
    *,
    covariance_type: str,
    centre: ArrayLike,
    background_log_sides: ArrayLike | None = None,
) -> SufficientStatistics:
    """Expected E-step statistics of a chunk with missing entries (pure; sum them over
    chunks or devices), as :func:`gaussmix.inference.em.statistics.sufficient_statistics`.

    Args:
        blocks: the chunk's :class:`PatternBlocks` (:func:`prepare_chunk`; each chunk
            or device may have its own pattern table).
        parameters: the current :class:`MixtureParameters`.
        covariance_type: any EM covariance type.
        centre: (D,) the same point for every chunk.
        background_log_sides: a uniform background's box, as for :func:`block_statistics`.
    """
    centre = jnp.asarray(centre, blocks.x.dtype)
    return block_statistics(parameters, blocks, centre, covariance_type, background_log_sides)


def prepare_chunk(
    x: np.ndarray,
    weight: np.ndarray | None,
    fill: np.ndarray,
    n_components: int,
    covariance_type: str,
) -> PatternBlocks:
    """The :class:`PatternBlocks` of a chunk ``x`` (n, D) with NaN entries, on the host:
    its patterns, NaN replaced by ``fill`` (D,), the block shape of its size and
    pattern bucket."""
    pattern, observed = find_patterns(x)
    weight = np.ones(x.shape[0], x.dtype) if weight is None else np.asarray(weight, x.dtype)
    shape = block_shape(
        x.shape[0],
        observed.shape[0],
        x.shape[1],
        n_components,
        covariance_layout(covariance_type),
        x.dtype.itemsize,
    )
    filled = np.where(np.isnan(x), np.asarray(fill, x.dtype), x)
    return pattern_blocks(filled, weight, pattern, observed, shape)
