"""gaussmix.KMeans and the k-means building blocks against scikit-learn's KMeans."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans as SklearnKMeans

from gaussmix import KMeans
from gaussmix.inference.em import kmeans_plusplus, lloyd

K = 4


def blobs(seed=0, n_per_cluster=50, spread=1.0, distance=6.0):
    rng = np.random.default_rng(seed)
    centres = distance * np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    return np.concatenate([rng.normal(scale=spread, size=(n_per_cluster, 2)) + c for c in centres])


def test_lloyd_matches_scikit_learn_from_the_same_centres():
    x = blobs(spread=2.5)  # overlapping: several Lloyd iterations
    start = x[[0, 1, 2, 3]]
    reference = SklearnKMeans(K, init=start, n_init=1, algorithm="lloyd", tol=1e-4).fit(x)
    ours = KMeans(K, init=start, tol=1e-4).fit(x)
    np.testing.assert_allclose(ours.cluster_centers_, reference.cluster_centers_, rtol=1e-12)
    np.testing.assert_array_equal(ours.labels_, reference.labels_)
    np.testing.assert_allclose(ours.inertia_, reference.inertia_, rtol=1e-12)
    assert ours.n_iter_ == reference.n_iter_
    np.testing.assert_array_equal(ours.predict(x), reference.predict(x))
    np.testing.assert_allclose(ours.transform(x), reference.transform(x), rtol=1e-10)
    np.testing.assert_allclose(ours.score(x), reference.score(x), rtol=1e-12)


def test_kmeans_plus_plus_finds_the_optimum_of_separated_blobs():
    x = blobs(distance=50.0)
    reference = SklearnKMeans(K, n_init=10, random_state=0).fit(x)
    for seed in range(3):
        ours = KMeans(K, random_state=seed).fit(x)
        np.testing.assert_allclose(ours.inertia_, reference.inertia_, rtol=1e-10)
        np.testing.assert_array_equal(ours.fit_predict(x), ours.labels_)


def test_seeds_are_distinct_points_one_per_separated_blob():
    x = jnp.asarray(blobs(distance=100.0))
    seeding = jax.jit(lambda key: kmeans_plusplus(x, K, key=key))
    for seed in range(5):
        centers, indices = seeding(jax.random.key(seed))
        np.testing.assert_array_equal(centers, x[indices])
        assert sorted((np.asarray(indices) // 50).tolist()) == [0, 1, 2, 3]


def test_zero_weight_points_are_never_seeds_and_weights_equal_repeats():
    x = blobs(spread=2.0)
    weight = np.random.default_rng(1).integers(0, 3, len(x)).astype(float)
    _, indices = jax.jit(
        lambda key: kmeans_plusplus(jnp.asarray(x), K, key=key, sample_weight=jnp.asarray(weight))
    )(jax.random.key(0))
    assert np.all(weight[np.asarray(indices)] > 0)
    start = jnp.asarray(x[weight > 0][:K])
    weighted = lloyd(jnp.asarray(x), start, sample_weight=jnp.asarray(weight))
    repeated = lloyd(jnp.asarray(np.repeat(x, weight.astype(int), axis=0)), start)
    np.testing.assert_allclose(weighted.centers, repeated.centers, rtol=1e-12)
    np.testing.assert_allclose(weighted.inertia, repeated.inertia, rtol=1e-12)


def test_more_restarts_never_raise_the_inertia():
    x = blobs(spread=3.0, seed=2)
    for seed in range(3):
        one = KMeans(K, init="random", n_init=1, random_state=seed).fit(x)
        many = KMeans(K, init="random", n_init=5, random_state=seed).fit(x)
        assert many.inertia_ <= one.inertia_ + 1e-9


@pytest.mark.parametrize(
    ("kwargs", "X", "message"),
    [
        ({"n_clusters": 300}, blobs(), "should be >= n_clusters"),
        ({"init": np.zeros((3, 2))}, blobs(), "does not match"),
        ({"init": "banana"}, blobs(), "'init' parameter"),
        ({}, np.array([[np.nan, 0.0]] * 10), "NaN"),
        ({"n_clusters": 0}, blobs(), "'n_clusters' parameter"),
    ],
)
def test_bad_input_is_refused(kwargs, X, message):
    with pytest.raises(ValueError, match=message):
        KMeans(**kwargs).fit(X)
