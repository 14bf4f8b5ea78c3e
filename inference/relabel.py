"""Label switching: relabel mixture draws to one reference labelling.

The mixture likelihood is invariant under any permutation :math:`\\sigma` of the K
component labels, and so is the default (exchangeable) prior: the posterior has K! copies
of every mode and a chain may visit several of them. Summaries of ``weights[k]`` or
``means[k]`` are meaningless until every draw is put in one labelling. Each draw
:math:`\\theta^{(s)}` is permuted to the reference labelling :math:`\\theta^*` (the MAP,
e.g. the EM answer) by the permutation of least cost

.. math::

    \\sigma^{(s)} = \\arg\\min_{\\sigma} \\sum_{j=1}^{K}
        C_{j, \\sigma(j)}, \\qquad
    C_{jk} = \\mathrm{KL}\\left(\\mathcal{N}(\\mu^{(s)}_k, \\Sigma^{(s)}_k)\\,\\middle\\|\\,
                               \\mathcal{N}(\\mu^*_j, \\Sigma^*_j)\\right),

so that reference label j receives the draw's component :math:`\\sigma(j)`. The
assignment is solved exactly: by enumerating all permutations for K <= 6, by the
Hungarian algorithm beyond. In one dimension the components are ordered by their means
instead (the identifying constraint :math:`\\mu_1 < \\dots < \\mu_K` of Stan's
``ordered`` type). The likelihood, and every label-invariant quantity, is unchanged.

Sites of the mixture program that carry a component axis first and are permuted:
``weights`` (K,), ``means`` (K, D), ``covariances`` (K, D, D), ``variances`` (K, D) or
(K,), ``scales`` (K, D) or (K,), and the varying parts of mclust's constrained models
(:mod:`gaussmix.models.eigen_covariance`): ``volumes`` (K,), ``log_shapes`` and
``shapes`` (K, D), ``orientation_bases`` (K, D-1, D). Shared sites are left as they are:
the tied ``covariance`` (D, D) and a constrained model's ``volume``, ``log_shape``,
``shape`` and ``orientation_basis``. The cost of a constrained model reads its
covariance site (that of its storage layout).
"""

import itertools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from gaussmix.inference import compilation
from gaussmix.models.eigen_covariance import PER_COMPONENT_SITES
from gaussmix.models.priors import COVARIANCE_LAYOUTS, COVARIANCE_SITES, check_covariance_type

__all__ = [
    "COMPONENT_SITES",
    "RELABEL_METHODS",
    "apply_permutation",
    "assignment",
    "component_cost",
    "hungarian",
    "label_switching_fraction",
    "relabel_mixture",
    "relabeling_permutation",
    "sort_components",
]

#: Sites of :func:`gaussmix.models.gaussian_mixture` whose first draw axis is the component.
COMPONENT_SITES = ("weights", "means", "covariances", "variances", "scales", *PER_COMPONENT_SITES)
#: ``"auto"`` orders by the means in one dimension and matches the reference otherwise.
RELABEL_METHODS = ("auto", "order", "match")
#: Largest K for which the assignment enumerates all K! permutations.
_EXHAUSTIVE_MAX_COMPONENTS = 6


def _namespace(*arrays):
    """NumPy when no argument is a JAX array (nothing is compiled), else ``jax.numpy``."""
    return jnp if any(isinstance(array, jax.Array) for array in arrays) else np


def _full_covariances(covariance, covariance_type: str, n_components: int, n_features, xp=jnp):
    """The covariance site as (..., K, D, D) matrices, or (..., K, D) diagonals."""
    if covariance_type == "full":
        return covariance
    if covariance_type == "tied":
        return xp.broadcast_to(
            covariance[..., None, :, :],
            (*covariance.shape[:-2], n_components, *covariance.shape[-2:]),
        )
    if covariance_type == "diag":
        return covariance
    return xp.broadcast_to(covariance[..., None], (*covariance.shape, n_features))


def component_cost(
    means: ArrayLike,
    covariance: ArrayLike,
    reference_means: ArrayLike,
    reference_covariance: ArrayLike,
    covariance_type: str,
) -> jax.Array:
    """Cost of giving each component of a draw each reference label.

    .. math::

        C_{jk} = \\mathrm{KL}\\left(\\mathcal{N}(\\mu_k, \\Sigma_k)\\,\\middle\\|\\,
                                  \\mathcal{N}(\\mu^*_j, \\Sigma^*_j)\\right)
        = \\tfrac12\\left[\\operatorname{tr}(\\Sigma^{*-1}_j \\Sigma_k)
          + (\\mu_k - \\mu^*_j)^T \\Sigma^{*-1}_j (\\mu_k - \\mu^*_j)
          - D + \\log\\frac{|\\Sigma^*_j|}{|\\Sigma_k|}\\right].

    Args:
        means: (..., K, D) draws of the means.
        covariance: draws of the covariance site: (..., K, D, D) full, (..., D, D) tied,
            (..., K, D) diag, (..., K) spherical.
        reference_means: (K, D).
        reference_covariance: the reference covariance site (no batch axes).
        covariance_type: "full", "tied", "diag", "spherical" or one of mclust's 14 (read
            as its storage layout).

    Returns:
        (..., K, K) costs, reference label j first, draw component k second; a NumPy
        array when no argument is a JAX array.

    Example:
        >>> import numpy as np
        >>> means = np.array([[2.0], [0.0]])
        >>> cost = component_cost(means, np.ones(2), np.array([[0.0], [2.0]]), np.ones(2),
        ...                       "spherical")
        >>> np.asarray(cost).round(2).tolist()
        [[2.0, 0.0], [0.0, 2.0]]
    """
    check_covariance_type(covariance_type)
    covariance_type = COVARIANCE_LAYOUTS[covariance_type]
    xp = _namespace(means, covariance, reference_means, reference_covariance)
    means = xp.asarray(means)
    if not xp.issubdtype(means.dtype, xp.floating):
        means = means.astype(jnp.result_type(float))
    reference_means = xp.asarray(reference_means, means.dtype)
    n_components, n_features = means.shape[-2:]
    draws = _full_covariances(
        xp.asarray(covariance, means.dtype), covariance_type, n_components, n_features, xp
    )
    reference = _full_covariances(
        xp.asarray(reference_covariance, means.dtype),
        covariance_type,
        n_components,
        n_features,
        xp,
    )
    # difference[..., j, k, :] = mu_k - mu*_j
    difference = means[..., None, :, :] - reference_means[:, None, :]
    if covariance_type in ("full", "tied"):
        reference_precision = xp.linalg.inv(reference)  # (K, D, D), K and D small
        trace = xp.einsum("jab,...kba->...jk", reference_precision, draws)
        mahalanobis = xp.einsum(
            "...jka,jab,...jkb->...jk", difference, reference_precision, difference
        )
        reference_log_det = xp.linalg.slogdet(reference)[1]
        draw_log_det = xp.linalg.slogdet(draws)[1]
    else:
        trace = xp.sum(draws[..., None, :, :] / reference[:, None, :], axis=-1)
        mahalanobis = xp.sum(difference**2 / reference[:, None, :], axis=-1)
        reference_log_det = xp.sum(xp.log(reference), axis=-1)
        draw_log_det = xp.sum(xp.log(draws), axis=-1)
    return 0.5 * (
        trace + mahalanobis - n_features + reference_log_det[:, None] - draw_log_det[..., None, :]
    )


def hungarian(cost: ArrayLike) -> jax.Array:
    """Exact minimum-cost assignment of a square cost matrix (Hungarian algorithm).

    The shortest-augmenting-path form with row and column potentials, O(K^3); written
    with ``lax`` loops, so it jits and maps over a batch of matrices.

    Args:
        cost: (K, K) finite costs.

    Returns:
        (K,) integer ``permutation`` with ``permutation[j]`` the column assigned to row
        j, minimizing ``sum_j cost[j, permutation[j]]``.

    Example:
        >>> import numpy as np
        >>> hungarian(np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])).tolist()
        [1, 0, 2]
    """
    cost = jnp.asarray(cost)
    n = cost.shape[-1]
    if cost.shape != (n, n):
        raise ValueError(f"cost must be a square (K, K) matrix, got shape {cost.shape}.")
    dtype = cost.dtype if jnp.issubdtype(cost.dtype, jnp.floating) else jnp.result_type(float)
    # 1-based indices as in the textbook form; row/column 0 is the virtual start.
    padded = jnp.zeros((n + 1, n + 1), dtype).at[1:, 1:].set(cost)
    infinity = jnp.asarray(jnp.inf, dtype)

    def add_row(row, carry):
        u, v, match, way = carry  # match[j]: row matched to column j (0: free)
        match = match.at[0].set(jnp.asarray(row, jnp.int32))

        def grow(state):
            u, v, match, way, minimum, used, column = state
            used = used.at[column].set(True)
            current_row = match[column]
            reduced = padded[current_row] - u[current_row] - v
            better = (~used) & (reduced < minimum)
            minimum = jnp.where(better, reduced, minimum)
            way = jnp.where(better, column, way)
            candidates = jnp.where(used, infinity, minimum)
            next_column = jnp.argmin(candidates).astype(jnp.int32)
            delta = candidates[next_column]
            u = u.at[match].add(jnp.where(used, delta, 0.0))
            v = jnp.where(used, v - delta, v)
            minimum = jnp.where(used, minimum, minimum - delta)
            return u, v, match, way, minimum, used, next_column

        state = (
            u,
            v,
            match,
            way,
            jnp.full(n + 1, infinity),
            jnp.zeros(n + 1, bool),
            jnp.asarray(0, jnp.int32),
        )
        # do { grow } while the column reached is matched: the first pass starts at the
        # virtual column 0 that holds the new row.
        state = grow(state)
        u, v, match, way, _, _, column = lax.while_loop(
            lambda state: state[2][state[6]] != 0, grow, state
        )

        def augment(state):
            match, column = state
            previous = way[column]
            return match.at[column].set(match[previous]), previous

        match, _ = lax.while_loop(lambda state: state[1] != 0, augment, (match, column))
        return u, v, match, way

    carry = (
        jnp.zeros(n + 1, dtype),
        jnp.zeros(n + 1, dtype),
        jnp.zeros(n + 1, jnp.int32),
        jnp.zeros(n + 1, jnp.int32),
    )
    _, _, match, _ = lax.fori_loop(1, n + 1, add_row, carry)
    # match[j] = row of column j; invert to the column of each row.
    permutation = (
        jnp.zeros(n + 1, jnp.int32).at[match[1:]].set(jnp.arange(1, n + 1, dtype=jnp.int32))
    )
    return permutation[1:] - 1


@compilation.jit(static_argnames=("exhaustive",))
def _assignment(cost: jax.Array, exhaustive: bool) -> jax.Array:
    n = cost.shape[-1]
    batch_shape = cost.shape[:-2]
    flat = cost.reshape((-1, n, n))
    if exhaustive:
        permutations = jnp.asarray(list(itertools.permutations(range(n))), jnp.int32)  # (P, K)
        totals = jnp.sum(flat[:, jnp.arange(n), permutations], axis=-1)  # (B, P)
        best = permutations[jnp.argmin(totals, axis=-1)]
    else:
        # One matrix after the other: vmapping the while loops compiles far slower.
        best = lax.map(hungarian, flat)
    return best.reshape((*batch_shape, n))


def assignment(cost: ArrayLike) -> jax.Array:
    """Minimum-cost permutations of a batch of square cost matrices.

    Exhaustive over the K! permutations for K <= 6, the Hungarian algorithm beyond.

    Args:
        cost: (..., K, K), row j (reference label) first.

    Returns:
        (..., K) permutations, ``permutation[..., j]`` the column given row j; found in
        NumPy (nothing compiled) for a NumPy ``cost`` and K <= 6.

    Example:
        >>> import numpy as np
        >>> assignment(np.array([[[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])).tolist()
        [[0, 1], [1, 0]]
    """
    xp = _namespace(cost)
    cost = xp.asarray(cost)
    if cost.ndim < 2 or cost.shape[-1] != cost.shape[-2]:
        raise ValueError(f"cost must have shape (..., K, K), got {cost.shape}.")
    if not xp.issubdtype(cost.dtype, xp.floating):
        cost = cost.astype(jnp.result_type(float))
    n = cost.shape[-1]
    cost = xp.where(xp.isfinite(cost), cost, xp.finfo(cost.dtype).max / (4 * n))
    exhaustive = n <= _EXHAUSTIVE_MAX_COMPONENTS
    if xp is np and exhaustive:
        permutations = np.asarray(list(itertools.permutations(range(n))), np.int32)  # (P, K)
        flat = cost.reshape((-1, n, n))
        totals = np.sum(flat[:, np.arange(n), permutations], axis=-1)  # (B, P)
        return permutations[np.argmin(totals, axis=-1)].reshape((*cost.shape[:-2], n))
    return _assignment(jnp.asarray(cost), exhaustive)


def _resolve_method(method: str, n_features: int) -> str:
    if method not in RELABEL_METHODS:
        raise ValueError(
            f"Invalid relabeling method {method!r}; choose one of {list(RELABEL_METHODS)}."
        )
    if method == "auto":
        return "order" if n_features == 1 else "match"
    return method


def relabeling_permutation(
    samples: Mapping[str, ArrayLike],
    reference: Mapping[str, ArrayLike] | None,
    covariance_type: str,
    *,
    method: str = "auto",
) -> jax.Array:
    """The permutation that relabels each draw.

    Args:
        samples: draws of the mixture sites with any leading batch shape, e.g.
            ``means`` (C, S, K, D) and the covariance site.
        reference: the reference labelling (the MAP): ``means`` (K, D) and the covariance
            site; unused by ``method="order"``.
        covariance_type: "full", "tied", "diag", "spherical" or one of mclust's 14.
        method: "order" (sort by the first coordinate of the means; one dimension),
            "match" (least-cost match to the reference) or "auto" (order when D = 1).

    Returns:
        (..., K) integer permutations: the relabeled component j is the draw's component
        ``permutation[..., j]``; NumPy when the draws are (K <= 6).
    """
    check_covariance_type(covariance_type)
    xp = _namespace(samples["means"])
    means = xp.asarray(samples["means"])
    if means.ndim < 2:
        raise ValueError(f"samples['means'] must have shape (..., K, D), got {means.shape}.")
    method = _resolve_method(method, means.shape[-1])
    if method == "order":
        return xp.argsort(means[..., 0], axis=-1, stable=True).astype(xp.int32)
    if reference is None:
        raise ValueError("Matching to a reference labelling needs `reference` (e.g. the MAP).")
    site = COVARIANCE_SITES[covariance_type]
    cost = component_cost(
        means, samples[site], reference["means"], reference[site], covariance_type
    )
    return assignment(cost)


def apply_permutation(
    samples: Mapping[str, ArrayLike], permutation: ArrayLike, covariance_type: str
) -> dict[str, jax.Array]:
    """Permute the component axis of every component site.

    Args:
        samples: ``{site: (..., K, ...)}``; sites outside :data:`COMPONENT_SITES` and the
            tied ``covariance`` pass through unchanged.
        permutation: (..., K) from :func:`relabeling_permutation`.
        covariance_type: tells whether ``covariance`` is shared (tied).

    Returns:
        A new dict with the permuted draws (NumPy arrays when no input is a JAX array).
    """
    xp = _namespace(permutation, *samples.values())
    permutation = xp.asarray(permutation)
    batch_ndim = permutation.ndim - 1
    relabeled = {}
    for name, value in samples.items():
        value = xp.asarray(value)
        if name in COMPONENT_SITES and not (covariance_type == "tied" and name == "covariance"):
            index = permutation.reshape(permutation.shape + (1,) * (value.ndim - batch_ndim - 1))
            relabeled[name] = xp.take_along_axis(value, index, axis=batch_ndim)
        else:
            relabeled[name] = value
    return relabeled


def relabel_mixture(
    samples: Mapping[str, ArrayLike],
    reference: Mapping[str, ArrayLike] | None,
    covariance_type: str,
    *,
    method: str = "auto",
) -> tuple[dict[str, jax.Array], jax.Array]:
    """Relabel mixture draws to the reference labelling.

    Args:
        samples: draws of the program's sites with leading batch axes, e.g. (C, S).
        reference: the reference point (the MAP / EM answer) with the program's site
            names; for ``method="order"`` it may be ``None``.
        covariance_type: "full", "tied", "diag", "spherical" or one of mclust's 14.
        method: "auto", "order" or "match" (see :func:`relabeling_permutation`).

    Returns:
        ``(relabeled, permutation)``: the permuted draws and the (..., K) permutations.

    Example:
        >>> import numpy as np
        >>> draws = {"weights": np.array([[0.3, 0.7], [0.7, 0.3]]),
        ...          "means": np.array([[[5.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [5.0, 0.0]]]),
        ...          "variances": np.ones((2, 2))}
        >>> map_point = {"means": np.array([[0.0, 0.0], [5.0, 0.0]]), "variances": np.ones(2)}
        >>> relabeled, permutation = relabel_mixture(draws, map_point, "spherical")
        >>> permutation.tolist()
        [[1, 0], [0, 1]]
        >>> bool(np.allclose(relabeled["weights"], [[0.7, 0.3], [0.7, 0.3]]))
        True
    """
    permutation = relabeling_permutation(samples, reference, covariance_type, method=method)
    return apply_permutation(samples, permutation, covariance_type), permutation


def sort_components(params: Mapping[str, ArrayLike], covariance_type: str) -> dict:
    """One point (no batch axes) with its components sorted by the first mean coordinate.

    Example:
        >>> import numpy as np
        >>> point = {"weights": np.array([0.3, 0.7]), "means": np.array([[2.0], [-1.0]])}
        >>> sort_components(point, "spherical")["weights"].tolist()
        [0.7, 0.3]
    """
    means = np.asarray(params["means"])
    order = np.argsort(means[:, 0], kind="stable")
    return {
        name: (
            np.asarray(value)[order]
            if name in COMPONENT_SITES and not (covariance_type == "tied" and name == "covariance")
            else np.asarray(value)
        )
        for name, value in params.items()
    }


def label_switching_fraction(permutation: ArrayLike) -> float:
    """Fraction of draws whose permutation differs from the most common one of its chain.

    Zero when every chain stays in one labelling (well separated components); large
    when components swap labels within chains (overlapping components, whose
    per-component summaries then depend on the relabeling convention).

    Args:
        permutation: (C, S, K) from :func:`relabeling_permutation`.
    """
    permutation = np.asarray(permutation)
    n_components = permutation.shape[-1]
    codes = np.sum(permutation * n_components ** np.arange(n_components), axis=-1)
    switched = 0
    for chain in codes.reshape(-1, codes.shape[-1]):
        _, counts = np.unique(chain, return_counts=True)
        switched += chain.size - counts.max()
    return float(switched / codes.size)
