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
* ``"VII"`` (spherical, varying volume): :math:`\\sum_k n_k \\log\\big((\\operatorname{tr} W_k
  + a) / n_k\\big)`, with the offset :math:`a` of VVV below (it keeps a singleton's term
  finite).
* ``"EEE"`` (one covariance shared by the groups): the criterion is the pooled scatter
  :math:`W = \\sum_k W_k` (divided by the total count N), in mclust's three stages: for
  the first D - 1 merges (from singletons; a merge cannot make :math:`W` of full rank),
  its trace (Ward's merges); then :math:`|W| + \\operatorname{tr} W`, until the smallest
  reachable :math:`|W|` is at least :math:`\\operatorname{tr} T / (N D)` (:math:`T` the
  scatter of all rows about their mean); from then on :math:`|W|`. Every merge changes
  :math:`W`, so every pair's cost is recomputed at every merge:
  :math:`|W + f\\,d d^T| = |W| + f\\,d^T \\operatorname{adj}(W)\\, d` with
  :math:`f = n_i n_j / (n_i + n_j)` and :math:`d` the difference of the means, O(G^2 D)
  per merge (mclust's ``hcEEE`` updates a Cholesky factor per pair, O(G^2 D^2)).
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

For EII, VII and VVV a merge updates one row of the (G, G) matrix of pair costs (G
groups), vectorized over the other groups; the cheapest pair is found from per-row
minima, so a merge costs O(G D^3) and the clustering O(G^2 D^3) time and O(G^2) memory
(G <= ``subset``). EEE costs O(G^3 D) time.

**Sample weights**: a row of weight :math:`w > 0` is a group of :math:`w` coincident rows
(count :math:`w`, its row as mean, no scatter), and the transformation weighs it as
:math:`w` rows: integer weights give the merges of the data with each row repeated
:math:`w` times, started from the partition of the repeats (mclust's ``dupPartition``),
exactly as far as rounding goes. Fractional weights are fractional counts in the same
formulas; they are not normalized: EII's and EEE's merges do not change when all weights
are scaled, VII's and VVV's do (the counts enter the logarithms), as repeating every row
c times changes them.

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

import hashlib
import threading
from collections import OrderedDict
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
HC_MODELS = ("EII", "VII", "EEE", "VVV")
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
        model: the criterion (one of :data:`HC_MODELS`).
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


def _check_weight(sample_weight: ArrayLike | None, n_rows: int) -> np.ndarray | None:
    """(N,) float64 non-negative finite weights, or None."""
    if sample_weight is None:
        return None
    try:
        weight = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"sample_weight must be a numeric (N,) array: {error}") from None
    if weight.shape != (n_rows,):
        raise ValueError(
            f"sample_weight must give one weight per row of x: shape ({n_rows},), got "
            f"{weight.shape}"
        )
    if not np.all(np.isfinite(weight) & (weight >= 0)):
        rows = np.flatnonzero(~(np.isfinite(weight) & (weight >= 0)))
        raise ValueError(f"sample_weight must be finite and >= 0; rows {rows[:5].tolist()} are not")
    return weight


def transform_data(
    x: ArrayLike, transform: str = "SVD", sample_weight: ArrayLike | None = None
) -> np.ndarray:
    """mclust's ``hcUse`` transformation of data ``x`` (N, D) -> (N, D') with D' <= D.

    Standard deviations use N - 1 (R's ``scale``). Columns (or singular components)
    without spread are dropped where the transformation would divide by zero. With
    ``sample_weight`` (N,) a row counts as that many rows (N the weights' sum): integer
    weights give the transformation of the repeated rows (up to the signs of the
    singular vectors, which no criterion sees).
    """
    if transform not in HC_TRANSFORMS:
        raise ValueError(f"transform must be one of {HC_TRANSFORMS}; got {transform!r}")
    x = _check_data(x)
    weight = _check_weight(sample_weight, x.shape[0])
    if transform == "VARS":
        return x
    if weight is None:
        weight = np.ones(x.shape[0])
    n_rows = float(weight.sum())
    centred = x - (weight @ x) / n_rows
    if transform in ("STD", "PCR", "SVD"):
        spread = np.sqrt((weight @ centred**2) / max(n_rows - 1, 1))
        keep = spread > 0
        centred = centred[:, keep] / spread[keep]
        if transform == "STD":
            return centred
    if centred.shape[1] == 0:
        return centred
    _, singular, vt = np.linalg.svd(np.sqrt(weight)[:, None] * centred, full_matrices=False)
    rotated = centred @ vt.T
    if transform in ("PCS", "PCR"):
        return rotated
    # components without spread would be divided by zero: drop them
    keep = singular > singular[0] * max(n_rows, centred.shape[1]) * np.finfo(np.float64).eps
    if transform == "SVD":
        return rotated[:, keep] / np.sqrt(singular[keep])
    # SPH: the covariance's (divisor N) eigenvalues are singular^2 / N
    return rotated[:, keep] / (singular[keep] / np.sqrt(n_rows))


def _group_statistics(x: np.ndarray, labels: np.ndarray, n_groups: int, weight=None):
    """Counts (the weights' sums), means and scatters of the groups: (G,), (G, D), (G, D, D)."""
    weight = np.ones(len(labels)) if weight is None else weight
    counts = np.bincount(labels, weights=weight, minlength=n_groups)
    means = np.zeros((n_groups, x.shape[1]))
    np.add.at(means, labels, weight[:, None] * x)
    means /= counts[:, None]
    centred = x - means[labels]
    scatter = np.zeros((n_groups, x.shape[1], x.shape[1]))
    np.add.at(scatter, labels, weight[:, None, None] * centred[:, :, None] * centred[:, None, :])
    return counts, means, scatter


class _Criterion(NamedTuple):
    model: str
    offset: float  # a = alpha tr(W) / (N D)   (VII, VVV)
    beta: float  # VVV


def _group_cost(criterion: _Criterion, counts, scatter):
    """Each group's term of the criterion: (G,)."""
    trace = np.trace(scatter, axis1=-2, axis2=-1)
    if criterion.model == "EII":
        return trace
    counts = np.asarray(counts, dtype=np.float64)
    if criterion.model == "VII":
        return counts * np.log((trace + criterion.offset) / counts)
    determinant = np.linalg.det(scatter / counts[..., None, None])
    determinant = np.maximum(determinant, 0.0)  # a singular scatter rounds to +-tiny
    return counts * np.log((trace + criterion.offset) / counts + determinant / criterion.beta)


def _single_cost(criterion: _Criterion, count: float, scatter: np.ndarray, spectrum) -> float:
    """One group's term of the criterion (:func:`_group_cost` of one group), its
    determinant from ``spectrum`` (the scatter's eigenvalues and eigenvectors, or None)
    where given."""
    trace = scatter.trace()
    if criterion.model == "EII":
        return float(trace)
    if criterion.model == "VII":
        return float(count * np.log((trace + criterion.offset) / count))
    if spectrum is not None:
        determinant = float((spectrum[0] / count).prod())
    else:
        determinant = max(float(np.linalg.det(scatter / count)), 0.0)
    return float(count * np.log((trace + criterion.offset) / count + determinant / criterion.beta))


def _target_spectrum(criterion: _Criterion, count: float, scatter: np.ndarray):
    """(eigenvalues, eigenvectors) of a VVV group's (D, D) scatter where the determinant
    lemma of :func:`_merge_row` applies to it (more than D rows, D > 1, condition number
    at most :data:`_RANK_ONE_CONDITION`: beyond it the lemma loses digits that LU
    keeps), else None."""
    n_features = scatter.shape[0]
    if criterion.model != "VVV" or n_features == 1 or not count > n_features:
        return None
    eigenvalues, eigenvectors = np.linalg.eigh(scatter)
    if not eigenvalues[0] > eigenvalues[-1] / _RANK_ONE_CONDITION:
        return None
    return eigenvalues, eigenvectors


def _merge_row(criterion, target, others, counts, means, scatter, costs, traces, spectrum):
    """Cost of merging group ``target`` with each group of ``others``: (len(others),).

    ``traces``: (G,) the groups' scatter traces; ``spectrum``: the target's
    :func:`_target_spectrum`. The merged scatter's trace is
    :math:`\\operatorname{tr} W_t + \\operatorname{tr} W_o + f \\lVert d \\rVert^2`.

    VVV: the determinant only where it can be nonzero. A union of :math:`n \\le D` rows
    has a scatter of rank :math:`n - 1 < D`, whose determinant is 0 (LU returns rounding
    noise there). Where the target has a spectrum (more than D rows, well conditioned),
    a singleton joining it changes the scatter by the rank-one :math:`f\\,d d^T`, so
    (matrix determinant lemma, with :math:`W_t = V \\Lambda V^T`)

    .. math::

        |W_t + f\\,d d^T| = |W_t|\\,(1 + f\\,d^T W_t^{-1} d)
            = \\prod_i \\lambda_i \\Big(1 + f \\sum_i (V^T d)_i^2 / \\lambda_i\\Big),

    one quadratic form per singleton instead of a determinant. The other unions (two
    groups with rows past D together, none a singleton next to a large target) take LU
    determinants.
    """
    n_target, n_other = counts[target], counts[others]
    merged_counts = n_other + n_target
    difference = means[others] - means[target]
    factor = n_target * n_other / merged_counts
    distance = np.einsum("ij,ij->i", difference, difference)
    if criterion.model == "EII":
        return factor * distance
    trace = traces[others] + (traces[target] + factor * distance)
    if criterion.model == "VII":
        merged_costs = merged_counts * np.log((trace + criterion.offset) / merged_counts)
        return merged_costs - costs[target] - costs[others]
    n_features = means.shape[1]
    if n_features == 1:
        determinant = trace  # a (1, 1) scatter is its trace
    else:
        general = merged_counts > n_features
        if spectrum is None:
            determinant = np.zeros(len(others))
        else:
            eigenvalues, eigenvectors = spectrum
            single = n_other == 1
            quadratic = ((difference @ eigenvectors) ** 2) @ (1.0 / eigenvalues)
            determinant = np.where(single, eigenvalues.prod() * (1.0 + factor * quadratic), 0.0)
            general &= ~single
        chosen = general.nonzero()[0]
        if chosen.size:
            step = difference[chosen]
            merged = scatter[others[chosen]] + scatter[target]
            merged += (factor[chosen, None] * step)[:, :, None] * step[:, None, :]
            determinant[chosen] = np.linalg.det(merged)
    determinant = np.maximum(determinant / merged_counts**n_features, 0.0)
    merged_costs = merged_counts * np.log(
        (trace + criterion.offset) / merged_counts + determinant / criterion.beta
    )
    return merged_costs - costs[target] - costs[others]


#: Largest condition number of a target's scatter for the rank-one determinant update.
_RANK_ONE_CONDITION = 1e8
#: Elements of a block of rows of the starting pair costs (:func:`_initial_costs`).
_BLOCK_ELEMENTS = 2**17


def _initial_costs(criterion, x, counts, means, scatter, costs, points):
    n_groups = len(counts)
    if points and np.all(counts == 1.0) and (x.shape[1] > 1 or criterion.model != "VVV"):
        # singletons: f = 1/2, n_ij = 2, every cost log(a) (EII: 0), the determinant 0
        # (rank one above one dimension); in place, by blocks of rows that stay in the
        # core's cache (about 1 MB: 1.7x quicker than whole (G, G) passes at G = 2000)
        pair = np.empty((n_groups, n_groups))
        rows = max(1, _BLOCK_ELEMENTS // n_groups)
        buffer = np.empty((rows, n_groups))
        for start in range(0, n_groups, rows):
            block = pair[start : start + rows]
            squared = buffer[: len(block)]
            block[...] = 0.0
            for column in means.T:
                np.subtract(column[start : start + rows, None], column[None, :], out=squared)
                np.square(squared, out=squared)
                block += squared
            block *= 0.5
            if criterion.model != "EII":
                block += criterion.offset
                block /= 2.0
                np.log(block, out=block)
                block *= 2.0
                block -= costs[0]
                block -= costs[0]
    elif points:
        # two groups without scatter (singletons, weighted rows) of counts n_i, n_j:
        # W_ij = f d d^T, f = n_i n_j / (n_i + n_j), of rank one (|W_ij / n_ij| is
        # f d^2 / n_ij in one dimension, zero above)
        factor = counts[:, None] * counts[None, :] / (counts[:, None] + counts[None, :])
        squared = np.zeros((n_groups, n_groups))
        for column in means.T:  # one feature at a time: no (G, G, D) temporary
            squared += (column[:, None] - column[None, :]) ** 2
        if criterion.model == "EII":
            pair = factor * squared
        else:
            merged_counts = counts[:, None] + counts[None, :]
            determinant = factor * squared / merged_counts
            if x.shape[1] > 1 or criterion.model == "VII":
                determinant = 0.0
            merged = merged_counts * np.log(
                (factor * squared + criterion.offset) / merged_counts + determinant / criterion.beta
            )
            pair = merged - costs[:, None] - costs[None, :]
    else:
        pair = np.full((n_groups, n_groups), np.inf)
        traces = np.trace(scatter, axis1=1, axis2=2)
        for target in range(n_groups - 1):
            others = np.arange(target + 1, n_groups)
            spectrum = _target_spectrum(criterion, counts[target], scatter[target])
            pair[target, others] = _merge_row(
                criterion, target, others, counts, means, scatter, costs, traces, spectrum
            )
        pair = np.minimum(pair, pair.T)
    np.fill_diagonal(pair, np.inf)
    return pair


#: mclust's EPSMIN (2^-53), added to the threshold's trace before its logarithm.
_EPS_MIN = np.finfo(np.float64).eps / 2


def _pooled_merges(counts, means, pooled, total_variance, merges, changes) -> None:
    """EEE: fill ``merges`` and ``changes`` (M, 2), (M,) in place by mclust's three stages.

    ``pooled``: the initial groups' pooled scatter W; ``total_variance``: tr T / N. The
    stage's criterion of W / N is its trace, then |.| + trace, then log|.|
    (mclust's ``hcEEE``: its ``DELOG`` threshold, log(tr T / (N D) + 2^-53)); ``changes``
    holds each merge's increase of the criterion it was chosen by.
    """
    n_features = means.shape[1]
    n_total = float(counts.sum())
    threshold = np.log(total_variance / n_features + _EPS_MIN)
    labels = np.arange(len(counts))
    counts, means = counts.copy(), means.copy()
    scatter = pooled / n_total
    rank = int(np.linalg.matrix_rank(pooled)) if np.any(pooled) else 0
    stage_kind = "trace" if rank < n_features - 1 else "mixed"
    if rank >= n_features and 0.5 * np.linalg.slogdet(scatter)[1] >= threshold:
        stage_kind = "determinant"
    for stage in range(len(merges)):
        n_groups = len(counts)
        factor = counts[:, None] * counts[None, :] / (counts[:, None] + counts[None, :])
        factor /= n_total
        ward = np.zeros((n_groups, n_groups))
        for column in means.T:  # one feature at a time: no (G, G, D) temporary
            ward += (column[:, None] - column[None, :]) ** 2
        ward *= factor  # the increase of tr(W / N)
        lower = np.tri(n_groups, dtype=bool)  # each pair once: i < j
        trace = float(np.trace(scatter))
        if stage_kind == "trace":
            cost = np.where(lower, np.inf, ward)
            chosen = np.unravel_index(np.argmin(cost), cost.shape)
            changes[stage] = cost[chosen]
        else:
            # |S + f d d^T| = |S| + f d^T adj(S) d, adj(S) = V diag(prod_{k != i} l_k) V^T
            eigenvalues, eigenvectors = np.linalg.eigh(scatter)
            eigenvalues = np.maximum(eigenvalues, 0.0)
            others = np.where(np.eye(n_features, dtype=bool), 1.0, eigenvalues[None, :])
            whitened = (means @ eigenvectors) * np.sqrt(np.prod(others, axis=1))
            quadratic = np.zeros((n_groups, n_groups))
            for column in whitened.T:
                quadratic += (column[:, None] - column[None, :]) ** 2
            quadratic *= factor
            quadratic[lower] = np.inf
            determinant = float(np.prod(eigenvalues))
            with np.errstate(divide="ignore"):
                log_determinant = np.log(determinant + quadratic)
                log_now = np.log(determinant)
            by_determinant = stage_kind == "determinant" or np.min(log_determinant) >= threshold
            if by_determinant:
                chosen = np.unravel_index(np.argmin(quadratic), quadratic.shape)
                changes[stage] = log_determinant[chosen] - log_now
            else:
                cost = (determinant + quadratic) + (trace + ward)
                cost[lower] = np.inf
                chosen = np.unravel_index(np.argmin(cost), cost.shape)
                changes[stage] = cost[chosen] - (determinant + trace)
            if log_determinant[chosen] >= threshold:
                stage_kind = "determinant"
        keep, drop = int(chosen[0]), int(chosen[1])
        merges[stage] = labels[keep], labels[drop]
        difference = means[drop] - means[keep]
        scatter += factor[keep, drop] * np.outer(difference, difference)
        means[keep] += difference * (counts[drop] / (counts[keep] + counts[drop]))
        counts[keep] += counts[drop]
        labels, counts, means = (np.delete(a, drop, axis=0) for a in (labels, counts, means))
        rank = min(rank + 1, n_features)
        if stage_kind == "trace" and rank >= n_features - 1:
            stage_kind = "mixed"


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
    sample_weight: ArrayLike | None = None,
) -> HierarchicalClustering:
    """Model-based agglomerative hierarchical clustering of ``x`` (N, D) (mclust's ``hc``).

    Args:
        x: (N, D) data (a 1-D array is one feature), finite.
        model: the criterion (mclust's ``modelName``): "VVV" (mclust's default
            ``hcModelName``), "EEE", "VII" or "EII" (Ward's).
        transform: the transformation applied first (:data:`HC_TRANSFORMS`): "SVD" is
            mclust's default for EM starts (``hcUse``); "VARS" is ``hc()``'s own default.
        partition: (N,) labels of the groups to start from; None starts from singletons
            (as mclust 6's ``hc``, whose ``dupPartition`` default never reaches the
            routine: identical rows merge first, at the lowest cost).
        min_clusters: stop when this many groups are left.
        alpha, beta: VII's and VVV's regularization (mclust's ``alpha``, ``beta``;
            both > 0).
        sample_weight: (N,) weights > 0: a row of weight w counts as w coincident rows
            (see the module's documentation); None: all 1.

    Returns:
        :class:`HierarchicalClustering`; ``.partition(K)`` gives the K groups.

    Ties between equal merge costs go to the pair of the lowest row index, then the
    lowest column index of the pair-cost matrix.
    """
    if model not in HC_MODELS:
        raise ValueError(f"model must be one of {HC_MODELS}; got {model!r}")
    if not (np.isfinite(alpha) and alpha > 0 and np.isfinite(beta) and beta > 0):
        raise ValueError(f"alpha and beta must be finite and > 0; got {alpha}, {beta}")
    if int(min_clusters) < 1:
        raise ValueError(f"min_clusters must be >= 1; got {int(min_clusters)}")
    x = _check_data(x)
    key = _memo_key(x, model, transform, partition, alpha, beta, sample_weight)
    tree = _recall(key, int(min_clusters))
    if tree is None:
        tree = _cluster(
            x, model, transform, partition, int(min_clusters), alpha, beta, sample_weight
        )
        _remember(key, tree, int(min_clusters))
    return tree


#: The last clusterings (:func:`hierarchical_clustering` is a pure function of its
#: inputs): a criterion table's start and its best cell's refit, or the K of a fit and
#: a later K, cluster once. Keyed by a digest of every input; a clustering stopped at
#: ``min_clusters`` serves any larger ``min_clusters`` (its merges are a prefix).
_MEMO: "OrderedDict[bytes, tuple[HierarchicalClustering, int]]" = OrderedDict()
_MEMO_SIZE = 4
_MEMO_LOCK = threading.Lock()


def _memo_key(x, model, transform, partition, alpha, beta, sample_weight) -> bytes:
    digest = hashlib.blake2b(digest_size=20)
    digest.update(repr((x.shape, model, transform, float(alpha), float(beta))).encode())
    digest.update(np.ascontiguousarray(x).tobytes())
    for extra in (partition, sample_weight):
        if extra is None:
            digest.update(b"none")
        else:
            extra = np.asarray(extra)
            digest.update(repr((extra.shape, extra.dtype.str)).encode())
            digest.update(np.ascontiguousarray(extra).tobytes())
    return digest.digest()


def _recall(key: bytes, min_clusters: int) -> HierarchicalClustering | None:
    with _MEMO_LOCK:
        found = _MEMO.get(key)
        if found is None or found[1] > min_clusters:
            return None
        _MEMO.move_to_end(key)
    tree = found[0]
    n_merges = max(tree.n_initial - min_clusters, 0)
    return HierarchicalClustering(
        tree.merges[:n_merges].copy(),
        tree.changes[:n_merges].copy(),
        tree.initial_partition.copy(),
        tree.model,
    )


def _remember(key: bytes, tree: HierarchicalClustering, min_clusters: int) -> None:
    stored = HierarchicalClustering(
        tree.merges.copy(), tree.changes.copy(), tree.initial_partition.copy(), tree.model
    )
    with _MEMO_LOCK:
        _MEMO[key] = (stored, min_clusters)
        _MEMO.move_to_end(key)
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)


def _cluster(x, model, transform, partition, min_clusters, alpha, beta, sample_weight):
    """:func:`hierarchical_clustering` of checked arguments (not memoized)."""
    data = transform_data(x, transform, sample_weight)
    n_rows = data.shape[0]
    weight = _check_weight(sample_weight, n_rows)
    if weight is not None and not np.all(weight > 0):
        raise ValueError(
            "sample_weight must be > 0 in the clustering (a row of weight 0 is no row): "
            "drop those rows, or use start_labels, which classifies them afterwards"
        )
    labels = _as_partition(partition, n_rows)
    n_groups = int(labels.max()) + 1
    n_merges = max(n_groups - min_clusters, 0)
    counts, means, scatter = _group_statistics(data, labels, n_groups, weight)
    if weight is None:
        n_total = float(n_rows)
        total_trace = float(np.sum((data - data.mean(axis=0)) ** 2))
    else:
        n_total = float(weight.sum())
        total_trace = float(weight @ np.sum((data - weight @ data / n_total) ** 2, axis=1))
    offset = alpha * total_trace / (n_total * max(data.shape[1], 1))
    criterion = _Criterion(model, max(offset, np.finfo(np.float64).eps), float(beta))
    merges = np.zeros((n_merges, 2), dtype=np.int64)
    changes = np.zeros(n_merges)
    if n_merges == 0 or data.shape[1] == 0:
        return HierarchicalClustering(merges[:0], changes[:0], labels, model)
    if model == "EEE":
        _pooled_merges(counts, means, scatter.sum(axis=0), total_trace / n_total, merges, changes)
        return HierarchicalClustering(merges, changes, labels, model)
    costs = _group_cost(criterion, counts, scatter)
    pair = _initial_costs(criterion, data, counts, means, scatter, costs, n_groups == n_rows)
    traces = np.trace(scatter, axis1=1, axis2=2)
    members = np.arange(n_groups)  # the groups left, in increasing order
    nearest = np.argmin(pair, axis=1)
    nearest_cost = pair[members, nearest]
    for stage in range(n_merges):
        first = int(nearest_cost.argmin())
        second = int(nearest[first])
        keep, drop = min(first, second), max(first, second)
        merges[stage] = keep, drop
        changes[stage] = pair[keep, drop]
        # the union's statistics replace group `keep`; group `drop` is gone
        n_keep, n_drop = counts[keep], counts[drop]
        merged = n_keep + n_drop
        difference = means[drop] - means[keep]
        outer = difference[:, None] * difference[None, :]
        scatter[keep] += scatter[drop] + (n_keep * n_drop / merged) * outer
        means[keep] += difference * (n_drop / merged)
        counts[keep] = merged
        traces[keep] = scatter[keep].trace()
        spectrum = _target_spectrum(criterion, merged, scatter[keep])
        costs[keep] = _single_cost(criterion, merged, scatter[keep], spectrum)
        pair[drop, :] = np.inf
        pair[:, drop] = np.inf
        nearest_cost[drop] = np.inf
        members = members[members != drop]
        if members.size == 1:
            continue
        row = _merge_row(criterion, keep, members, counts, means, scatter, costs, traces, spectrum)
        row[members.searchsorted(keep)] = np.inf  # no merge with itself
        pair[keep, members] = row
        pair[members, keep] = row
        # rows whose nearest group was one of the two merged: search them again
        nearest_of = nearest[members]
        stale_mask = (nearest_of == keep) | (nearest_of == drop)
        stale = members[stale_mask]
        if stale.size:
            nearest[stale] = pair[stale].argmin(axis=1)
            nearest_cost[stale] = pair[stale, nearest[stale]]
        # the others: the union may now be their nearest (ties to the lower index)
        fresh_mask = ~stale_mask
        fresh, fresh_row = members[fresh_mask], row[fresh_mask]
        closer = (fresh_row < nearest_cost[fresh]) | (
            (fresh_row == nearest_cost[fresh]) & (keep < nearest_of[fresh_mask])
        )
        nearest[fresh[closer]] = keep
        nearest_cost[fresh[closer]] = fresh_row[closer]
        nearest[keep] = int(pair[keep].argmin())
        nearest_cost[keep] = pair[keep, nearest[keep]]
    return HierarchicalClustering(merges, changes, labels, model)


def _classify(x, labels, rows, reg_covar: float, weight=None) -> np.ndarray:
    """Labels of ``rows`` of ``x`` under the Gaussian classifier (weights, means, full
    covariances + ``reg_covar``) of the labelled rows' groups (rows weighted by
    ``weight``)."""
    n_groups = int(labels.max()) + 1
    known = labels >= 0
    counts, means, scatter = _group_statistics(
        x[known], labels[known], n_groups, None if weight is None else weight[known]
    )
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
    sample_weight: ArrayLike | None = None,
) -> np.ndarray:
    """(N,) labels 0..K-1 of mclust's EM start: the K groups of
    :func:`hierarchical_clustering` (``model``, ``transform``, ``sample_weight``).

    With more than ``subset`` rows (None: never), the clustering runs on ``subset`` rows
    drawn without replacement (``numpy.random.default_rng(seed)``) and every other row
    goes to the group of highest posterior under the Gaussian classifier (weights,
    means, full covariances + ``reg_covar`` times the identity, in the units of ``x``)
    of the subset's groups; mclust instead runs EM on the subset before classifying.
    Rows of weight 0 are left out of the clustering (and of the subset's draw) and
    classified the same way.

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
        sample_weight=sample_weight,
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
    sample_weight: ArrayLike | None = None,
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
    weight = _check_weight(sample_weight, n_rows)
    positive = np.arange(n_rows) if weight is None else np.flatnonzero(weight > 0)
    counts = [int(k) for k in n_components]
    if not counts:
        raise ValueError("n_components is empty; give at least one number of groups.")
    for count in counts:
        if not 1 <= count <= positive.size:
            raise ValueError(
                f"n_components={count} must be between 1 and the number of rows "
                f"({positive.size} of weight > 0): the clustering cannot make more groups "
                "than rows"
            )
    if weight is None and (subset is None or n_rows <= subset):
        tree = hierarchical_clustering(
            x, model=model, transform=transform, min_clusters=min(counts)
        )
        return np.stack(tree.partitions(tuple(counts)))
    chosen = positive
    if subset is not None and positive.size > subset:
        if int(subset) < max(counts):
            raise ValueError(f"subset={subset} must be at least n_components={max(counts)}")
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(positive, size=int(subset), replace=False))
    tree = hierarchical_clustering(
        x[chosen],
        model=model,
        transform=transform,
        min_clusters=min(counts),
        sample_weight=None if weight is None else weight[chosen],
    )
    if chosen.size == n_rows:
        return np.stack(tree.partitions(tuple(counts)))
    if weight is None:
        scale = np.mean(np.var(x, axis=0))
    else:
        mean = weight @ x / weight.sum()
        scale = np.mean(weight @ (x - mean) ** 2 / weight.sum())
    regularization = reg_covar * scale + reg_covar
    each = []
    for partition in tree.partitions(tuple(counts)):
        labels = np.full(n_rows, -1)
        labels[chosen] = partition
        rest = np.flatnonzero(labels < 0)
        labels[rest] = _classify(x, labels, rest, regularization, weight)
        each.append(_as_partition(labels, n_rows))
    return np.stack(each)
