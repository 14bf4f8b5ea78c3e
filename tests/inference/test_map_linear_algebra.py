"""The MAP back end's linear algebra against NumPy: the inverse Cholesky factor and its
solves (:func:`~gaussmix.inference.map.levenberg_marquardt.inverse_cholesky`, what every
Levenberg-Marquardt step factors with, written without LAPACK), and the covariance
inverse (:func:`~gaussmix.inference.map.levenberg_marquardt.inverse_positive_definite`):
an inverse where the matrix is positive definite, however badly scaled, and NaN where it
is singular to working precision, however rounding formed it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussmix.inference.map.levenberg_marquardt import (
    cholesky_solve,
    inverse_cholesky,
    inverse_positive_definite,
    solve_positive_definite,
)


def gram(design: np.ndarray) -> np.ndarray:
    return design.T @ design


def positive_definite(size: int, seed: int, condition: float = 10.0) -> np.ndarray:
    """A random symmetric matrix with eigenvalues from 1 to ``condition``."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(size, size)))
    return (rotation * np.geomspace(1.0, condition, size)) @ rotation.T


@pytest.mark.parametrize("size", [1, 2, 5, 11, 24])
def test_the_inverse_factor_is_numpys_inverse_cholesky_factor(size):
    matrix = positive_definite(size, seed=size)
    inverse_factor = np.asarray(inverse_cholesky(jnp.asarray(matrix)))
    expected = np.linalg.inv(np.linalg.cholesky(matrix))
    assert np.array_equal(np.triu(inverse_factor, 1), np.zeros((size, size)))
    np.testing.assert_allclose(inverse_factor, expected, rtol=1e-12, atol=1e-13)


def test_solves_with_the_inverse_factor_are_numpys_solves():
    """One right-hand side and several, a condition number of 1e8: the forward error is
    the Cholesky solve's, kappa eps, relative."""
    matrix = positive_definite(9, seed=3, condition=1e8)
    rng = np.random.default_rng(4)
    vector, several = rng.normal(size=9), rng.normal(size=(9, 3))
    inverse_factor = inverse_cholesky(jnp.asarray(matrix))
    for right in (vector, several):
        got = np.asarray(cholesky_solve(inverse_factor, jnp.asarray(right)))
        expected = np.linalg.solve(matrix, right)
        assert np.max(np.abs(got - expected)) <= 1e-6 * np.max(np.abs(expected))


def test_the_inverse_factor_under_vmap_is_the_factor_of_each_matrix():
    matrices = np.stack([positive_definite(6, seed) for seed in range(4)])
    batched = np.asarray(jax.vmap(inverse_cholesky)(jnp.asarray(matrices)))
    for matrix, got in zip(matrices, batched, strict=True):
        np.testing.assert_allclose(got, np.linalg.inv(np.linalg.cholesky(matrix)), rtol=1e-12)


@pytest.mark.parametrize(
    "matrix",
    [
        [[1.0, 2.0], [2.0, 1.0]],  # indefinite: the second pivot is negative
        [[1.0, 0.0], [0.0, 0.0]],  # a zero pivot
        [[-1.0, 0.0], [0.0, 1.0]],  # a negative first pivot
        [[1.0, np.nan], [np.nan, 1.0]],
    ],
    ids=["indefinite", "zero pivot", "negative pivot", "nan"],
)
def test_the_inverse_factor_of_a_matrix_that_is_not_positive_definite_is_nan(matrix):
    """As LAPACK's factor is in JAX: NaN, every entry (the fit reads a NaN step as a
    singular curvature)."""
    assert np.all(np.isnan(np.asarray(inverse_cholesky(jnp.asarray(matrix)))))


def solve_reference(matrix, vector):
    solution = np.linalg.solve(matrix, vector)
    return solution, solution @ np.linalg.solve(matrix, solution)


@pytest.mark.parametrize("size", [1, 4, 11])
def test_the_step_solve_is_numpys_for_one_matrix_and_under_vmap(size):
    """solve_positive_definite: x = A^-1 b and x^T A^-1 x, by the elimination for one
    matrix and by LAPACK under vmap (matrices and vectors batched, or either one alone)."""
    rng = np.random.default_rng(size)
    matrices = np.stack([positive_definite(size, seed, condition=1e4) for seed in range(3)])
    vectors = rng.normal(size=(3, size))
    for matrix, vector in zip(matrices, vectors, strict=True):
        solution, curvature = solve_positive_definite(jnp.asarray(matrix), jnp.asarray(vector))
        expected, expected_curvature = solve_reference(matrix, vector)
        np.testing.assert_allclose(solution, expected, rtol=1e-9)
        np.testing.assert_allclose(curvature, expected_curvature, rtol=1e-9)
    batched = [
        jax.vmap(solve_positive_definite)(jnp.asarray(matrices), jnp.asarray(vectors)),
        jax.vmap(solve_positive_definite, in_axes=(None, 0))(jnp.asarray(matrices[0]), vectors),
        jax.vmap(solve_positive_definite, in_axes=(0, None))(matrices, jnp.asarray(vectors[0])),
    ]
    pairs = [
        list(zip(matrices, vectors, strict=True)),
        [(matrices[0], vector) for vector in vectors],
        [(matrix, vectors[0]) for matrix in matrices],
    ]
    for (solutions, curvatures), cases in zip(batched, pairs, strict=True):
        for index, (matrix, vector) in enumerate(cases):
            expected, expected_curvature = solve_reference(matrix, vector)
            np.testing.assert_allclose(solutions[index], expected, rtol=1e-9)
            np.testing.assert_allclose(curvatures[index], expected_curvature, rtol=1e-9)


def test_the_step_solve_of_a_matrix_that_is_not_positive_definite_is_nan():
    """Alone and in a batch beside a positive definite matrix, whose solve is unharmed."""
    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]])
    vector = np.array([1.0, -1.0])
    solution, curvature = solve_positive_definite(jnp.asarray(indefinite), jnp.asarray(vector))
    assert np.all(np.isnan(np.asarray(solution))) and np.isnan(float(curvature))
    matrices = jnp.asarray(np.stack([indefinite, np.eye(2)]))
    solutions, curvatures = jax.vmap(solve_positive_definite, in_axes=(0, None))(
        matrices, jnp.asarray(vector)
    )
    assert np.all(np.isnan(np.asarray(solutions[0]))) and np.isnan(float(curvatures[0]))
    np.testing.assert_allclose(solutions[1], vector, rtol=1e-15)
    assert float(curvatures[1]) == pytest.approx(2.0, rel=1e-15)


def test_the_inverse_factor_keeps_float32():
    matrix = positive_definite(5, seed=7)
    with jax.enable_x64(False):
        inverse_factor = inverse_cholesky(jnp.asarray(matrix, jnp.float32))
        assert inverse_factor.dtype == jnp.float32
    expected = np.linalg.inv(np.linalg.cholesky(matrix))
    np.testing.assert_allclose(np.asarray(inverse_factor), expected, rtol=1e-5, atol=1e-6)


def test_a_badly_scaled_but_well_posed_matrix_is_inverted():
    """Columns of scales 1e-6 to 1e6 and a correlation of 0.999: the Jacobi scaling makes
    it as easy as its correlation matrix; the inverse is NumPy's to 1e-9."""
    rng = np.random.default_rng(0)
    design = rng.normal(size=(50, 4))
    design[:, 1] = 0.999 * design[:, 0] + 0.045 * design[:, 1]
    design *= np.array([1e-6, 1.0, 1e3, 1e6])
    matrix = gram(design)
    inverse = np.asarray(inverse_positive_definite(jnp.asarray(matrix)))
    np.testing.assert_allclose(inverse, np.linalg.inv(matrix), rtol=1e-9)


@pytest.mark.parametrize("order", ["as formed", "reversed", "symmetrized"])
def test_a_rank_deficient_gram_matrix_is_nan_however_rounding_formed_it(order):
    """Four columns spanning three dimensions (the degenerate peak design of
    test_fit_peaks_adversarial): J^T J formed in different orders is positive definite by
    rounding or not, and the inverse is NaN either way, never 1e200."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(40, 3))
    design = np.column_stack([base, base @ np.array([0.3, -1.2, 0.7])])
    matrix = gram(design)
    if order == "reversed":
        matrix = gram(design[::-1])
    elif order == "symmetrized":
        matrix = 0.5 * (matrix + matrix.T)
    assert np.all(np.isnan(np.asarray(inverse_positive_definite(jnp.asarray(matrix)))))


def test_an_indefinite_matrix_or_a_zero_diagonal_is_nan():
    indefinite = jnp.asarray([[1.0, 2.0], [2.0, 1.0]])
    zero_diagonal = jnp.asarray([[1.0, 0.0], [0.0, 0.0]])
    for matrix in (indefinite, zero_diagonal):
        assert np.all(np.isnan(np.asarray(inverse_positive_definite(matrix))))


def test_float32_flags_what_float32_cannot_invert():
    """A correlation of 1 - 1e-9 is invertible in float64 and singular in float32."""
    matrix = np.array([[1.0, 1.0 - 1e-9], [1.0 - 1e-9, 1.0]])
    assert np.all(np.isfinite(np.asarray(inverse_positive_definite(jnp.asarray(matrix)))))
    with jax.enable_x64(False):
        inverse = inverse_positive_definite(jnp.asarray(matrix, jnp.float32))
        assert inverse.dtype == jnp.float32
        assert np.all(np.isnan(np.asarray(inverse)))
