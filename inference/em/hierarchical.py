"""Model-based agglomerative hierarchical clustering: mclust's ``hc`` start for EM.

Banfield & Raftery (1993) and Fraley (1998): start from singletons (or a given
partition) and repeatedly merge the two groups whose union increases the classification
criterion of a Gaussian model the least. For a group :math:`k` of :math:`n_k` rows with
scatter :math:`W_k = \\sum_{i \\in k} (x_i - \\bar x_k)(x_i - \\bar x_k)^T`, merging
groups :math:`i` and :math:`j` gives

.. math::

    W_{ij} = W_i + W_j + \\frac{n_i n_j}{n_i + n_j} (\\bar x_i - \\bar x_j)
             (\\bar x_i - \\bar x_j)^T,

and each model has a criterion, a sum over groups, to minimize:

* ``"EII"`` (spherical, equal volume; Ward's method): :math:`\\sum_k \\operatorname{tr}
  W_k`; a merge costs :math:`\\frac{n_i n_j}{n_i + n_j} \\lVert \\bar x_i - \\bar x_j
  \\rVert^2`.
* ``"VVV"`` (unconstrained; mclust's default ``hcModelName``): the classification
  likelihood's :math:`\\sum_k n_k \\log |W_k / n_k|` is undefined while a group has no
  more than D rows, so the criterion is regularized (Fraley 1998; mclust's ``alpha``
  and ``beta``):

  .. math::

      \\sum_k n_k \\log\\Big(\\frac{\\operatorname{tr} W_k + a}{n_k}
          + \\frac{|W_k / n_k|}{\\beta}\\Big),\\qquad
      a = \\alpha \\frac{\\operatorname{tr} W}{N D},

  with :math:`W` the scatter of all N rows. This is the criterion mclust 6.0's ``hcVVV``
  computes: its merge costs, read from its Fortran routine's output on small cases, are
  these to 1e-14 (``tests/inference/test_hierarchical.py`` checks the merge sequences on
  five data sets against committed ``hc`` output).

A merge updates one row of the (G, G) matrix of pair costs (G groups), vectorized over
the other groups; the cheapest pair is found from per-row minima, so a merge costs
O(G D^3) and the clustering O(G^2 D^3) time and O(G^2) memory (G <= ``subset``).

As mclust does before ``hc`` (``mclust.options("hcUse")``, Scrucca & Raftery 2015), the
data are transformed first (``transform``): ``"SVD"`` (mclust's default: standardized,
rotated onto the right singular vectors and each component divided by the square root
of its singular value), ``"VARS"`` (as given), ``"STD"`` (standardized), ``"PCS"``
(principal components of the centred data), ``"PCR"`` (of the standardized data) or
``"SPH"`` (sphered). Columns without spread are dropped where the transformation divides
by it (mclust drops the non-finite columns there). For more than ``subset`` rows
(mclust's ``mclust.options("subset")``, 2000) the clustering runs on ``subset`` rows
drawn at random and :func:`start_labels` classifies the other rows by the Gaussian
(full covariance) classifier of the subset's groups.

Example:
    >>> import numpy as np
    >>> x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.2], [0.0, 0.2]])
    >>> tree = hierarchical_clustering(x, model="EII", transform="VARS")
    >>> tree.partition(2).tolist()
    [0, 0, 1, 1, 0]
"""

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "DEFAULT_SUBSET",
    "HC_MODELS",
    "HC_TRANSFORMS",
    "HierarchicalClustering",
    "hierarchical_clustering",
    "start_labels",
    "start_labels_of_each",
    "transform_data",
]

#: The models whose criterion is implemented (mclust's names).
HC_MODELS = ("EII", "VVV")
#: mclust's ``hcUse`` transformations ("RND", random pairs, is not one of them).
HC_TRANSFORMS = ("SVD", "VARS", "STD", "PCS", "PCR", "SPH")
#: mclust's ``mclust.options("subset")``: rows the clustering runs on at most.
DEFAULT_SUBSET = 2000


class HierarchicalClustering(NamedTuple):
    """The merge sequence of an agglomerative clustering (mclust's ``hc`` object).

    Attributes:
        merges: (M, 2) int, the two groups merged at each stage, smaller label first;
            a group is labelled by its label in ``initial_partition`` and the union
            keeps the smaller label (mclust's convention, 0-based).
        changes: (M,) the increase of the criterion at each merge.
        initial_partition: (N,) int labels 0..G-1 of the groups the merging started from.
        model: the criterion ("EII" or "VVV").
    """

    merges: np.ndarray
    changes: np.ndarray
    initial_partition: np.ndarray
    model: str

    @property
    def n_initial(self) -> int:
        """G, the number of groups the merging started from."""
        return int(self.initial_partition.max()) + 1 if self.initial_partition.size else 0

    def partition(self, n_clusters: int) -> np.ndarray:
        """(N,) labels 0..``n_clusters``-1 after G - ``n_clusters`` merges, numbered in
        order of first appearance in the rows."""
        return self.partitions((n_clusters,))[0]

    def partitions(self, n_clusters: tuple[int, ...]) -> list[np.ndarray]:
        """:meth:`partition` of each number of clusters, the merges replayed once."""
        n_initial = self.n_initial
        lowest = n_initial - len(self.merges)
        for count in n_clusters:
            if not lowest <= int(count) <= n_initial:
                raise ValueError(
                    f"n_clusters={int(count)} is not reachable: the merges go from "
                    f"{n_initial} groups to {lowest}; pass n_clusters between {lowest} and "
                    f"{n_initial} (fewer rows than clusters, or min_clusters above it?)"
                )
        parent = np.arange(n_initial)
        done, found = 0, {}
        for count in sorted({int(count) for count in n_clusters}, reverse=True):
            for keep, drop in self.merges[done : n_initial - count]:
                parent[parent == drop] = keep
            done = n_initial - count
            labels = parent[self.initial_partition]
            _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
            order = np.argsort(np.argsort(first))
            found[count] = order[inverse].astype(np.int64)
        return [found[int(count)] for count in n_clusters]


def _check_data(x: ArrayLike) -> np.ndarray:
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"x must be a numeric (N, D) array: {error}") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array (N, D); got shape {x.shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must have at least one row and one column; got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        rows = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
        raise ValueError(
            f"x has NaN or infinite values (rows {rows[:5].tolist()}...): remove or "
            "impute them before clustering"
        )
    return x


def transform_data(x: ArrayLike, transform: str = "SVD") -> np.ndarray:
    """mclust's ``hcUse`` transformation of data ``x`` (N, D) -> (N, D') with D' <= D.

    Standard deviations use N - 1 (R's ``scale``). Columns (or singular components)
    without spread are dropped where the transformation would divide by zero.
    """
    if transform not in HC_TRANSFORMS:
        raise ValueError(f"transform must be one of {HC_TRANSFORMS}; got {transform!r}")
    x = _check_data(x)
    if transform == "VARS":
        return x
    n_rows = x.shape[0]
    centred = x - x.mean(axis=0)
    if transform in ("STD", "PCR", "SVD"):
        spread = np.sqrt(np.sum(centred**2, axis=0) / max(n_rows - 1, 1))
        keep = spread > 0
        centred = centred[:, keep] / spread[keep]
        if transform == "STD":
            return centred
    if centred.shape[1] == 0:
        return centred
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    rotated = centred @ vt.T
    if transform in ("PCS", "PCR"):
        return rotated
    # components without spread would be divided by zero: drop them
    keep = singular > singular[0] * max(centred.shape) * np.finfo(np.float64).eps
    if transform == "SVD":
        return rotated[:, keep] / np.sqrt(singular[keep])
    # SPH: the covariance's (divisor N) eigenvalues are singular^2 / N
    return rotated[:, keep] / (singular[keep] / np.sqrt(n_rows))


def _group_statistics(x: np.ndarray, labels: np.ndarray, n_groups: int):
    counts = np.bincount(labels, minlength=n_groups).astype(np.float64)
    means = np.zeros((n_groups, x.shape[1]))
    np.add.at(means, labels, x)
    means /= counts[:, None]
    centred = x - means[labels]
    scatter = np.zeros((n_groups, x.shape[1], x.shape[1]))
    np.add.at(scatter, labels, centred[:, :, None] * centred[:, None, :])
    return counts, means, scatter


class _Criterion(NamedTuple):
    model: str
    offset: float  # a = alpha tr(W) / (N D)   (VVV)
    beta: float  # VVV


def _group_cost(criterion: _Criterion, counts, scatter):
    """Each group's term of the criterion: (G,)."""
    trace = np.trace(scatter, axis1=-2, axis2=-1)
    if criterion.model == "EII":
        return trace
    counts = np.asarray(counts, dtype=np.float64)
    determinant = np.linalg.det(scatter / counts[..., None, None])
    determinant = np.maximum(determinant, 0.0)  # a singular scatter rounds to +-tiny
    return counts * np.log((trace + criterion.offset) / counts + determinant / criterion.beta)


def _merge_row(criterion, target, others, counts, means, scatter, costs):
    """Cost of merging group ``target`` with each group of ``others``: (len(others),).

    VVV: the merged scatter's trace from the diagonals alone, and its determinant only
    where it can be nonzero. A union of :math:`n \\le D` rows has a scatter of rank
    :math:`n - 1 < D`, whose determinant is 0 (LU returns rounding noise there, which
    ``_group_cost`` clips to 0 or adds at the 1e-16 level). Where the target has more
    than D rows and a well-conditioned scatter, a singleton joining it changes the
    scatter by the rank-one :math:`f\\,d d^T`, so (matrix determinant lemma)

    .. math::

        |W_t + f\\,d d^T| = |W_t|\\,(1 + f\\,d^T W_t^{-1} d),

    one quadratic form per singleton instead of a determinant. The other unions (two
    groups with rows past D together, none a singleton next to a large target) take LU
    determinants, as before.
    """
    n_target, n_other = counts[target], counts[others]
    merged_counts = n_target + n_other
    difference = means[others] - means[target]
    factor = n_target * n_other / merged_counts
    if criterion.model == "EII":
        return factor * np.sum(difference**2, axis=1)
    n_features = means.shape[1]
    diagonals = np.diagonal(scatter, axis1=1, axis2=2)  # a view: (G, D)
    merged_diagonal = (diagonals[target] + diagonals[others]) + (
        factor[:, None] * difference
    ) * difference
    trace = np.sum(merged_diagonal, axis=1)
    determinant = np.zeros(len(others))
    full_rank = merged_counts > n_features
    rank_one = np.zeros(len(others), dtype=bool)
    if n_target > n_features and n_features > 1:
        rank_one = full_rank & (n_other == 1)
        inverse = _well_conditioned_inverse(scatter[target]) if rank_one.any() else None
        if inverse is None:
            rank_one[:] = False
        else:
            single = difference[rank_one]
            quadratic = np.einsum("ni,ij,nj->n", single, inverse, single)
            determinant[rank_one] = np.linalg.det(scatter[target]) * (
                1.0 + factor[rank_one] * quadratic
            )
    general = full_rank & ~rank_one
    if general.any():
        chosen = difference[general]
        merged = (
            scatter[target]
            + scatter[others[general]]
            + factor[general][:, None, None] * chosen[:, :, None] * chosen[:, None, :]
        )
        determinant[general] = np.linalg.det(merged)
    determinant = np.maximum(determinant / merged_counts**n_features, 0.0)
    merged_costs = merged_counts * np.log(
        (trace + criterion.offset) / merged_counts + determinant / criterion.beta
    )
    return merged_costs - costs[target] - costs[others]


#: Largest condition number of a target's scatter for the rank-one determinant update.
_RANK_ONE_CONDITION = 1e8


def _well_conditioned_inverse(scatter: np.ndarray) -> np.ndarray | None:
    """The inverse of a (D, D) scatter, None where its condition number is above
    :data:`_RANK_ONE_CONDITION` (there the determinant lemma loses digits that LU keeps)."""
    eigenvalues, eigenvectors = np.linalg.eigh(scatter)
    if not eigenvalues[0] > eigenvalues[-1] / _RANK_ONE_CONDITION:
        return None
    return (eigenvectors / eigenvalues) @ eigenvectors.T


def _initial_costs(criterion, x, counts, means, scatter, costs, singletons):
    n_groups = len(counts)
    pair = np.full((n_groups, n_groups), np.inf)
    if singletons:
        # two singletons: W_ij = d d^T / 2, of rank one (its determinant over 2 is
        # d^2 / 4 in one dimension, zero above)
        squared = np.zeros((n_groups, n_groups))
        for column in means.T:  # one feature at a time: no (G, G, D) temporary
            squared += (column[:, None] - column[None, :]) ** 2
        if criterion.model == "EII":
            pair = squared / 2.0
        else:
            determinant = squared / 4.0 if x.shape[1] == 1 else 0.0
            merged = 2.0 * np.log(
                (squared / 2.0 + criterion.offset) / 2.0 + determinant / criterion.beta
            )
            pair = merged - costs[:, None] - costs[None, :]
    else:
        for target in range(n_groups - 1):
            others = np.arange(target + 1, n_groups)
            pair[target, others] = _merge_row(
                criterion, target, others, counts, means, scatter, costs
            )
        pair = np.minimum(pair, pair.T)
    np.fill_diagonal(pair, np.inf)
    return pair


def _as_partition(partition, n_rows: int) -> np.ndarray:
    if partition is None:
        return np.arange(n_rows)
    partition = np.asarray(partition)
    if partition.shape != (n_rows,):
        raise ValueError(
            f"partition must give one label per row of x: shape ({n_rows},), got {partition.shape}"
        )
    _, first, inverse = np.unique(partition, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # labels in order of first appearance, as R's partconv
    return order[inverse.reshape(-1)]


def hierarchical_clustering(
    x: ArrayLike,
    *,
    model: str = "VVV",
    transform: str = "SVD",
    partition: ArrayLike | None = None,
    min_clusters: int = 1,
    alpha: float = 1.0,
    beta: float = 1.0,
) -> HierarchicalClustering:
    """Model-based agglomerative hierarchical clustering of ``x`` (N, D) (mclust's ``hc``).

    Args:
        x: (N, D) data (a 1-D array is one feature), finite.
        model: the criterion, "VVV" (mclust's default) or "EII" (Ward's).
        transform: the transformation applied first (:data:`HC_TRANSFORMS`): "SVD" is
            mclust's default for EM starts (``hcUse``); "VARS" is ``hc()``'s own default.
        partition: (N,) labels of the groups to start from; None starts from singletons
            (as mclust 6's ``hc``, whose ``dupPartition`` default never reaches the
            routine: identical rows merge first, at the lowest cost).
        min_clusters: stop when this many groups are left.
        alpha, beta: VVV's regularization (mclust's ``alpha``, ``beta``; both > 0).

    Returns:
        :class:`HierarchicalClustering`; ``.partition(K)`` gives the K groups.

    Ties between equal merge costs go to the pair of the lowest row index, then the
    lowest column index of the pair-cost matrix.
    """
    if model not in HC_MODELS:
        raise ValueError(f"model must be one of {HC_MODELS}; got {model!r}")
    if not (np.isfinite(alpha) and alpha > 0 and np.isfinite(beta) and beta > 0):
        raise ValueError(f"alpha and beta must be finite and > 0; got {alpha}, {beta}")
    data = transform_data(x, transform)
    n_rows = data.shape[0]
    labels = _as_partition(partition, n_rows)
    n_groups = int(labels.max()) + 1
    min_clusters = int(min_clusters)
    if min_clusters < 1:
        raise ValueError(f"min_clusters must be >= 1; got {min_clusters}")
    n_merges = max(n_groups - min_clusters, 0)
    counts, means, scatter = _group_statistics(data, labels, n_groups)
    total_trace = float(np.sum((data - data.mean(axis=0)) ** 2))
    offset = alpha * total_trace / (n_rows * max(data.shape[1], 1))
    criterion = _Criterion(model, max(offset, np.finfo(np.float64).eps), float(beta))
    costs = _group_cost(criterion, counts, scatter)
    merges = np.zeros((n_merges, 2), dtype=np.int64)
    changes = np.zeros(n_merges)
    if n_merges == 0 or data.shape[1] == 0:
        return HierarchicalClustering(merges[:0], changes[:0], labels, model)
    pair = _initial_costs(criterion, data, counts, means, scatter, costs, n_groups == n_rows)
    alive = np.ones(n_groups, dtype=bool)
    nearest = np.argmin(pair, axis=1)
    nearest_cost = pair[np.arange(n_groups), nearest]
    for stage in range(n_merges):
        first = int(np.argmin(nearest_cost))
        second = int(nearest[first])
        keep, drop = min(first, second), max(first, second)
        merges[stage] = keep, drop
        changes[stage] = pair[keep, drop]
        # the union's statistics replace group `keep`; group `drop` is gone
        n_keep, n_drop = counts[keep], counts[drop]
        difference = means[drop] - means[keep]
        scatter[keep] += scatter[drop] + (n_keep * n_drop / (n_keep + n_drop)) * np.outer(
            difference, difference
        )
        means[keep] += difference * (n_drop / (n_keep + n_drop))
        counts[keep] = n_keep + n_drop
        costs[keep] = _group_cost(criterion, counts[keep : keep + 1], scatter[keep : keep + 1])[0]
        alive[drop] = False
        pair[drop, :] = np.inf
        pair[:, drop] = np.inf
        nearest_cost[drop] = np.inf
        others = np.flatnonzero(alive)
        others = others[others != keep]
        if others.size == 0:
            continue
        row = _merge_row(criterion, keep, others, counts, means, scatter, costs)
        pair[keep, others] = row
        pair[others, keep] = row
        # rows whose nearest group was one of the two merged: search them again
        stale_mask = (nearest[others] == keep) | (nearest[others] == drop)
        stale = others[stale_mask]
        if stale.size:
            nearest[stale] = np.argmin(pair[stale], axis=1)
            nearest_cost[stale] = pair[stale, nearest[stale]]
        # the others: the union may now be their nearest (ties to the lower index)
        fresh, fresh_row = others[~stale_mask], row[~stale_mask]
        closer = (fresh_row < nearest_cost[fresh]) | (
            (fresh_row == nearest_cost[fresh]) & (keep < nearest[fresh])
        )
        nearest[fresh[closer]] = keep
        nearest_cost[fresh[closer]] = fresh_row[closer]
        nearest[keep] = int(np.argmin(pair[keep]))
        nearest_cost[keep] = pair[keep, nearest[keep]]
    return HierarchicalClustering(merges, changes, labels, model)


def _classify(x: np.ndarray, labels: np.ndarray, rows: np.ndarray, reg_covar: float) -> np.ndarray:
    """Labels of ``rows`` of ``x`` under the Gaussian classifier (weights, means, full
    covariances + ``reg_covar``) of the labelled rows' groups."""
    n_groups = int(labels.max()) + 1
    counts, means, scatter = _group_statistics(x[labels >= 0], labels[labels >= 0], n_groups)
    covariances = scatter / counts[:, None, None] + reg_covar * np.eye(x.shape[1])
    factor = np.linalg.cholesky(covariances)
    scores = np.empty((rows.size, n_groups))
    for group in range(n_groups):
        whitened = np.linalg.solve(factor[group], (x[rows] - means[group]).T)
        scores[:, group] = (
            np.log(counts[group])
            - np.sum(np.log(np.diag(factor[group])))
            - 0.5 * np.sum(whitened**2, axis=0)
        )
    return np.argmax(scores, axis=1)


def start_labels(
    x: ArrayLike,
    n_components: int,
    *,
    model: str = "VVV",
    transform: str = "SVD",
    subset: int | None = DEFAULT_SUBSET,
    seed: int = 0,
    reg_covar: float = 1e-6,
) -> np.ndarray:
    """(N,) labels 0..K-1 of mclust's EM start: the K groups of
    :func:`hierarchical_clustering` (``model``, ``transform``).

    With more than ``subset`` rows (None: never), the clustering runs on ``subset`` rows
    drawn without replacement (``numpy.random.default_rng(seed)``) and every other row
    goes to the group of highest posterior under the Gaussian classifier (weights,
    means, full covariances + ``reg_covar`` times the identity, in the units of ``x``)
    of the subset's groups; mclust instead runs EM on the subset before classifying.

    Example:
        >>> x = [[0.0], [0.1], [0.2], [5.0], [5.1]]
        >>> start_labels(x, 2, model="EII", transform="VARS").tolist()
        [0, 0, 0, 1, 1]
    """
    return start_labels_of_each(
        x,
        (n_components,),
        model=model,
        transform=transform,
        subset=subset,
        seed=seed,
        reg_covar=reg_covar,
    )[0]


def start_labels_of_each(
    x: ArrayLike,
    n_components: tuple[int, ...],
    *,
    model: str = "VVV",
    transform: str = "SVD",
    subset: int | None = DEFAULT_SUBSET,
    seed: int = 0,
    reg_covar: float = 1e-6,
) -> np.ndarray:
    """(C, N) :func:`start_labels` of each K of ``n_components`` from ONE clustering
    (the merges down to K are the first ones of the merges down to the smallest K;
    the same subset for every K): row c is ``start_labels(x, n_components[c], ...)``.

    Example:
        >>> x = [[0.0], [0.1], [0.2], [5.0], [5.1]]
        >>> start_labels_of_each(x, (1, 2), model="EII", transform="VARS").tolist()
        [[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]]
    """
    x = _check_data(x)
    n_rows = x.shape[0]
    counts = [int(k) for k in n_components]
    if not counts:
        raise ValueError("n_components is empty; give at least one number of groups.")
    for count in counts:
        if not 1 <= count <= n_rows:
            raise ValueError(
                f"n_components={count} must be between 1 and the number of rows "
                f"({n_rows}): the clustering cannot make more groups than rows"
            )
    if subset is None or n_rows <= subset:
        tree = hierarchical_clustering(
            x, model=model, transform=transform, min_clusters=min(counts)
        )
        return np.stack(tree.partitions(tuple(counts)))
    if int(subset) < max(counts):
        raise ValueError(f"subset={subset} must be at least n_components={max(counts)}")
    chosen = np.sort(np.random.default_rng(seed).choice(n_rows, size=int(subset), replace=False))
    tree = hierarchical_clustering(
        x[chosen], model=model, transform=transform, min_clusters=min(counts)
    )
    regularization = reg_covar * np.mean(np.var(x, axis=0)) + reg_covar
    each = []
    for partition in tree.partitions(tuple(counts)):
        labels = np.full(n_rows, -1)
        labels[chosen] = partition
        rest = np.flatnonzero(labels < 0)
        labels[rest] = _classify(x, labels, rest, regularization)
        each.append(_as_partition(labels, n_rows))
    return np.stack(each)
