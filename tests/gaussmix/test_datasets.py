"""Data generators: sizes, determinism and sample moments within sampling error."""

import numpy as np
import pytest

from gaussmix import datasets


def assert_moments(x, mean, cov):
    """Sample mean within 5 standard errors; sample covariance within 5 standard errors."""
    n = len(x)
    mean, cov = np.asarray(mean, float), np.asarray(cov, float)
    standard_error = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - mean) < 5 * standard_error)
    # Var of a sample covariance entry (Gaussian): (S_ij^2 + S_ii S_jj) / n.
    cov_error = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / n)
    assert np.all(np.abs(np.cov(x, rowvar=False) - cov) < 5 * cov_error)


def test_multivariate_normal_moments_and_determinism():
    cov = [[2.0, 0.8, 0.0], [0.8, 1.0, -0.3], [0.0, -0.3, 0.5]]
    x, labels = datasets.multivariate_normal([1.0, -2.0, 0.5], cov, 20_000, seed=3)
    assert x.shape == (20_000, 3) and labels.shape == (20_000,)
    assert_moments(x, [1.0, -2.0, 0.5], cov)
    again, _ = datasets.multivariate_normal([1.0, -2.0, 0.5], cov, 20_000, seed=3)
    np.testing.assert_array_equal(x, again)
    other, _ = datasets.multivariate_normal([1.0, -2.0, 0.5], cov, 20_000, seed=4)
    assert not np.allclose(x, other)


def test_sm1():
    x, labels = datasets.sm1()
    assert x.shape == (400, 2)
    assert np.bincount(labels).tolist() == [100, 300]
    assert_moments(x[labels == 0], [0, 0], np.eye(2))
    assert_moments(x[labels == 1], [30, 30], 50 * np.eye(2))


def test_sm2():
    x, labels = datasets.sm2()
    assert x.shape == (2400, 2)
    assert np.bincount(labels).tolist() == [600] * 4
    for k in range(4):
        assert_moments(x[labels == k], [5 * k, 5 * k], 2 * np.eye(2))


def test_blobs_and_stretched():
    x, labels = datasets.blobs()
    assert x.shape == (400, 2) and np.bincount(labels).tolist() == [100] * 4
    for k in range(4):
        assert_moments(x[labels == k], datasets.BLOB_CENTERS[k], 0.36 * np.eye(2))
    stretched, same_labels = datasets.stretched()
    np.testing.assert_array_equal(same_labels, labels)
    np.testing.assert_allclose(stretched, x @ datasets.STRETCH)


def test_moons():
    x, labels = datasets.moons(n=201, noise=0.05, seed=1)
    assert x.shape == (201, 2) and np.bincount(labels).tolist() == [101, 100]
    outer = x[labels == 0]
    radius = np.hypot(outer[:, 0], outer[:, 1])
    assert abs(radius.mean() - 1.0) < 0.02
    inner = x[labels == 1]
    radius = np.hypot(inner[:, 0] - 1.0, inner[:, 1] - 0.5)
    assert abs(radius.mean() - 1.0) < 0.02


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: datasets.multivariate_normal([0, 0], [[1, 2], [2, 1]], 10), "positive definite"),
        (lambda: datasets.multivariate_normal([0, 0], np.eye(3), 10), "cov"),
        (lambda: datasets.multivariate_normal([0], [[1]], 0), "positive integer"),
        (lambda: datasets.moons(noise=-1), "non-negative"),
        (lambda: datasets.blobs(cluster_std=0), "positive"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
