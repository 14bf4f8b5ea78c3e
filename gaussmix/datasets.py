"""Seeded synthetic datasets of the reference material.

Every generator is deterministic given ``seed`` and returns ``(x, labels)`` as NumPy
arrays: ``x`` float64 of shape (N, D), ``labels`` int64 of shape (N,) naming the
generating component.
"""

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["blobs", "moons", "multivariate_normal", "sm1", "sm2", "stretched"]

#: Centres of :func:`blobs`' four default clusters (well separated at sd 0.6).
BLOB_CENTERS = np.array([[0.9, 4.3], [2.0, 0.9], [-1.6, 2.9], [-1.3, 7.8]])

#: Linear map applied by :func:`stretched`.
STRETCH = np.array([[0.6, -0.64], [-0.41, 0.85]])


def _check_count(n, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}.")
    return int(n)


def multivariate_normal(
    mean: ArrayLike, cov: ArrayLike, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` points from N(mean, cov) through the Cholesky factor of ``cov``.

    .. math:: x = \\mu + L z,\\quad L L^\\top = \\Sigma,\\quad z \\sim \\mathcal{N}(0, I).

    Args:
        mean: (D,).
        cov: (D, D), symmetric positive definite.
        n: number of points.
        seed: seed of the NumPy generator.

    Returns:
        x (n, D) and labels (n,) of zeros.

    Example:
        >>> x, _ = multivariate_normal([0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]], 1000)
        >>> x.shape
        (1000, 2)
    """
    n = _check_count(n)
    mean = np.atleast_1d(np.asarray(mean, dtype=float))
    cov = np.atleast_2d(np.asarray(cov, dtype=float))
    if mean.ndim != 1 or cov.shape != (mean.size, mean.size):
        raise ValueError(
            f"mean must be (D,) and cov (D, D); got mean {mean.shape} and cov {cov.shape}."
        )
    if not np.allclose(cov, cov.T):
        raise ValueError("cov must be symmetric.")
    try:
        cholesky = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError("cov must be positive definite (its Cholesky factor failed).") from None
    z = np.random.default_rng(seed).standard_normal((n, mean.size))
    return mean + z @ cholesky.T, np.zeros(n, dtype=np.int64)


def _stack(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([np.full(len(p[0]), k, dtype=np.int64) for k, p in enumerate(parts)])
    return x, labels


def sm1(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """100 points from N([0, 0], I) and 300 from N([30, 30], 50 I).

    Example:
        >>> x, labels = sm1()
        >>> x.shape, int(labels.sum())
        ((400, 2), 300)
    """
    return _stack(
        [
            multivariate_normal([0.0, 0.0], np.eye(2), 100, seed=seed),
            multivariate_normal([30.0, 30.0], 50.0 * np.eye(2), 300, seed=seed + 1),
        ]
    )


def sm2(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """4 x 600 points with means (0,0), (5,5), (10,10), (15,15) and covariance 2 I.

    Example:
        >>> x, labels = sm2()
        >>> x.shape, np.bincount(labels).tolist()
        ((2400, 2), [600, 600, 600, 600])
    """
    return _stack(
        [
            multivariate_normal([5.0 * k, 5.0 * k], 2.0 * np.eye(2), 600, seed=seed + k)
            for k in range(4)
        ]
    )


def blobs(
    n_samples: int = 400,
    centers: int | ArrayLike = 4,
    cluster_std: float = 0.6,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic Gaussian blobs (like scikit-learn's ``make_blobs``).

    Args:
        n_samples: total number of points, split as evenly as possible.
        centers: an array (C, D) of centres, or a count: 4 uses :data:`BLOB_CENTERS`,
            any other count draws centres uniformly in [-10, 10]^2.
        cluster_std: standard deviation of each blob.
        seed: seed of the NumPy generator.

    Example:
        >>> x, labels = blobs()
        >>> x.shape, np.bincount(labels).tolist()
        ((400, 2), [100, 100, 100, 100])
    """
    n_samples = _check_count(n_samples, "n_samples")
    rng = np.random.default_rng(seed)
    if isinstance(centers, int | np.integer):
        count = _check_count(centers, "centers")
        centers = BLOB_CENTERS if count == 4 else rng.uniform(-10.0, 10.0, size=(count, 2))
    centers = np.atleast_2d(np.asarray(centers, dtype=float))
    if not cluster_std > 0:
        raise ValueError(f"cluster_std must be positive, got {cluster_std}.")
    counts = np.full(len(centers), n_samples // len(centers))
    counts[: n_samples % len(centers)] += 1
    labels = np.repeat(np.arange(len(centers)), counts)
    x = centers[labels] + cluster_std * rng.standard_normal((n_samples, centers.shape[1]))
    return x, labels.astype(np.int64)


def stretched(
    n_samples: int = 400, cluster_std: float = 0.6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`blobs` mapped through the fixed linear map :data:`STRETCH`: elongated,
    correlated clusters where k-means fails and a full-covariance mixture does not.

    Example:
        >>> x, labels = stretched()
        >>> x.shape
        (400, 2)
    """
    x, labels = blobs(n_samples, 4, cluster_std, seed)
    return x @ STRETCH, labels


def moons(n: int = 200, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles (like scikit-learn's ``make_moons``).

    Args:
        n: total number of points (outer moon gets the extra one when odd).
        noise: standard deviation of Gaussian noise added to each coordinate.
        seed: seed of the NumPy generator.

    Example:
        >>> x, labels = moons()
        >>> x.shape
        (200, 2)
    """
    n = _check_count(n)
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}.")
    rng = np.random.default_rng(seed)
    n_outer = n - n // 2
    n_inner = n // 2
    t_outer = np.linspace(0.0, np.pi, n_outer)
    t_inner = np.linspace(0.0, np.pi, n_inner)
    outer = np.column_stack([np.cos(t_outer), np.sin(t_outer)])
    inner = np.column_stack([1.0 - np.cos(t_inner), 0.5 - np.sin(t_inner)])
    x = np.concatenate([outer, inner]) + noise * rng.standard_normal((n, 2))
    labels = np.concatenate([np.zeros(n_outer, np.int64), np.ones(n_inner, np.int64)])
    order = rng.permutation(n)
    return x[order], labels[order]
