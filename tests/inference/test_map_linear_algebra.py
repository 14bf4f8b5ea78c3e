"""The MAP back end's covariance inverse
(:func:`gaussmix.inference.map.levenberg_marquardt.inverse_positive_definite`) against
NumPy: an inverse where the matrix is positive definite, however badly scaled, and NaN
where it is singular to working precision, however rounding formed it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussmix.inference.map.levenberg_marquardt import inverse_positive_definite


def gram(design: np.ndarray) -> np.ndarray:
    return design.T @ design


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
