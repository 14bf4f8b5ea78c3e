"""k-means for the initialization of EM: k-means++ seeding and Lloyd iterations.

Both are pure and jittable (scikit-learn's algorithms, with sample weights), so the
initialization of every restart runs inside the compiled EM program.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

__all__ = ["KMeansResult", "kmeans_plusplus", "lloyd"]


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
        # all points equally likely where the potential is zero everywhere (duplicates)
        potential = jnp.where(jnp.sum(potential) > 0, potential, weight)
        cumulative = jnp.cumsum(potential)
        chosen = jnp.searchsorted(
            cumulative, uniform * cumulative[-1], side="right", method="compare_all"
        )
        return jnp.minimum(chosen, n_samples - 1).astype(jnp.int32)

    # One loop for every centre (the first is candidate 0 of a draw by weight alone): a
    # single copy of the draw in the compiled program.
    closest = jnp.full(n_samples, jnp.inf, x.dtype)
    centers = jnp.zeros((n_clusters, x.shape[1]), x.dtype)
    indices = jnp.zeros(n_clusters, jnp.int32)

    def body(index, carry):
        centers, indices, closest = carry
        first = index == 0
        candidates = draw(jnp.where(first, weight, weight * closest), uniforms[index])
        distances = _squared_distances(x, x[candidates], squared_norms)
        new_closest = jnp.minimum(closest[:, None], distances)
        best = jnp.where(first, 0, jnp.argmin(weight @ new_closest))
        chosen = candidates[best]
        return (
            centers.at[index].set(x[chosen]),
            indices.at[index].set(chosen),
            new_closest[:, best],
        )

    centers, indices, _ = lax.fori_loop(0, n_clusters, body, (centers, indices, closest))
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
