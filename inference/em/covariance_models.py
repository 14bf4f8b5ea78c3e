"""mclust's covariance models: the constrained M-steps and the free-parameter counts.

Celeux & Govaert (1995) write a component's covariance as volume, shape and orientation,

.. math::

    \\Sigma_k = \\lambda_k D_k A_k D_k^T,\\qquad \\lambda_k > 0,\\quad
    A_k = \\mathrm{diag}(a_{k1}, \\dots, a_{kd}),\\ |A_k| = 1,\\quad D_k^T D_k = I,

and a model is named by three letters, E (equal across components), V (variable) or I
(the identity), for :math:`\\lambda`, :math:`A` and :math:`D`: EII, VII, EEI, VEI, EVI,
VVI, EEE, VEE, EVE, VVE, EEV, VEV, EVV, VVV. VVV, EEE, VVI and VII are scikit-learn's
``full``, ``tied``, ``diag`` and ``spherical`` and keep their own code
(:mod:`gaussmix.inference.em.maximization`); this module holds the other ten.

**The M-step of every model** maximizes the expected complete-data log-likelihood over
the model's covariances, which, with :math:`n_k = \\sum_n w_n r_{nk}` and
:math:`S_k = W_k / n_k + \\varepsilon I` (:math:`W_k` the scatter about the new mean,
:math:`\\varepsilon` = ``reg_covar``), is

.. math::

    \\max_{\\Sigma \\in \\mathcal{M}} -\\tfrac12 \\sum_k n_k
        \\left(\\log |\\Sigma_k| + \\operatorname{tr}(\\Sigma_k^{-1} S_k)\\right).

So ``reg_covar`` loads the diagonal of each component's sample covariance *before* the
constrained maximization: the result obeys the model's constraint (equal volumes stay
equal), and for an unconstrained model it is scikit-learn's ``W_k / n_k + reg_covar I``.
The conjugate MAP has the same form (inverse Wishart, or inverse gamma per variance, on
each component, evaluated on the model's covariances): :math:`n_k` becomes
:math:`n_k + \\nu + D + 2` and :math:`S_k` the classic type's MAP covariance
(:mod:`gaussmix.inference.em.maximization`), so every model below serves both.

Closed forms (Celeux & Govaert 1995), with :math:`n = \\sum_k n_k` and
:math:`\\omega_k` the eigenvalues of :math:`S_k` in decreasing order, :math:`L_k` its
eigenvectors:

* EII :math:`\\lambda = \\sum_k n_k \\operatorname{tr} S_k / (n d)`;
* EEI :math:`\\Sigma = \\mathrm{diag}(\\sum_k n_k S_k) / n`;
* EVI :math:`\\Sigma_k = \\lambda B_k`, :math:`B_k = \\mathrm{diag}(S_k) /
  |\\mathrm{diag}(S_k)|^{1/d}`, :math:`\\lambda = \\sum_k n_k
  |\\mathrm{diag}(S_k)|^{1/d} / n`;
* EEV :math:`D_k = L_k`, :math:`A = \\Omega / |\\Omega|^{1/d}`,
  :math:`\\lambda = |\\Omega|^{1/d} / n` with :math:`\\Omega = \\sum_k n_k
  \\mathrm{diag}(\\omega_k)` (von Neumann's trace inequality pairs the largest
  eigenvalues);
* EVV :math:`\\Sigma_k = \\lambda C_k`, :math:`C_k = S_k / |S_k|^{1/d}`,
  :math:`\\lambda = \\sum_k n_k |S_k|^{1/d} / n`.

Iterative ones, each a block-coordinate ascent of the objective above (so it never
decreases), run in a ``lax.while_loop`` until the relative change of the objective is
below :func:`iteration_tolerance` or :data:`MAX_ITERATIONS` passes, warm-started from
the previous EM step's covariances when given, else from the closed-form neighbour:

* VEI :math:`\\lambda_k = \\operatorname{tr}(S_k B^{-1}) / d`, then :math:`B \\propto
  \\mathrm{diag}(\\sum_k n_k S_k / \\lambda_k)`, :math:`|B| = 1` (start: EEI's shape);
* VEE the same with a full :math:`C = D A D^T`, :math:`|C| = 1` (start: EEE's);
* VEV :math:`D_k = L_k` for any decreasing :math:`A`, then :math:`\\lambda_k =
  \\sum_j \\omega_{kj} / (d a_j)` and :math:`A \\propto \\sum_k n_k \\omega_k / \\lambda_k`;
* EVE and VVE (Browne & McNicholas 2014): given :math:`D`, with
  :math:`E_k = \\mathrm{diag}(D^T S_k D)`, VVE's :math:`\\lambda_k A_k = E_k`, EVE's
  :math:`A_k = E_k / |E_k|^{1/d}`, :math:`\\lambda = \\sum_k n_k |E_k|^{1/d} / n`;
  given those, :math:`D` minimizes :math:`f(D) = \\sum_k n_k \\operatorname{tr}(S_k D
  M_k D^T)` (:math:`M_k = (\\lambda_k A_k)^{-1}`) by two majorize-minimize steps: with
  :math:`\\alpha_k` the largest eigenvalue of :math:`n_k S_k`, the concave
  :math:`\\operatorname{tr}((n_k S_k - \\alpha_k I) D M_k D^T)` lies below its tangent,
  so :math:`D \\leftarrow U V^T` of the SVD :math:`U \\Sigma V^T = \\sum_k (\\alpha_k I -
  n_k S_k) D M_k`; then the same with the roles of :math:`S_k` and :math:`M_k` swapped
  (for :math:`D^T`).

Example:
    >>> import jax.numpy as jnp
    >>> s = jnp.array([[[2.0, 0.0], [0.0, 1.0]], [[4.0, 0.0], [0.0, 1.0]]])
    >>> evv = COVARIANCE_MODELS["EVV"].covariance_fn(s, jnp.ones(2), None)
    >>> # equal volumes: |Sigma_k| = lambda^2, lambda = (|S_1|^(1/2) + |S_2|^(1/2)) / 2
    >>> [round(float(jnp.linalg.det(c)), 6) for c in evv]
    [2.914214, 2.914214]
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gaussmix.inference.em.parameters import lower_triangular_inverse
from gaussmix.models.priors import (
    COVARIANCE_ALIASES,
    COVARIANCE_LAYOUTS,
    COVARIANCE_TYPES,
    check_em_covariance_type,
)

__all__ = [
    "COVARIANCE_MODELS",
    "MAX_ITERATIONS",
    "CovarianceModel",
    "StartOrWarm",
    "constrained_objective",
    "iteration_tolerance",
    "n_covariance_parameters",
]

#: Passes at most of an iterative M-step (each pass cannot lower the objective).
MAX_ITERATIONS = 1000


def iteration_tolerance(dtype) -> float:
    """Relative change of the objective below which an iterative M-step stops: 16
    :math:`\\epsilon` of the dtype (3.6e-15 in float64, 1.9e-6 in float32), near its
    rounding, as the objective is flat (quadratic) at the optimum: parameters within
    about :math:`\\sqrt{16 \\epsilon}` of it."""
    return 16 * float(jnp.finfo(dtype).eps)


class CovarianceModel(NamedTuple):
    """One covariance model: how its covariances are stored and estimated, and counted.

    Attributes:
        name: mclust's name (or the classic type's).
        layout: the classic type whose storage it uses ("spherical", "diag", "tied" or
            "full"), which decides the E-step statistics and the precision factors.
        covariance_fn: ``(sample_covariances, counts, previous) -> covariances``: the
            model's maximizer of :math:`-\\sum_k n_k (\\log |\\Sigma_k| +
            \\operatorname{tr}(\\Sigma_k^{-1} S_k))` (see the module), from the per-
            component regularized sample covariances :math:`S_k` in ``layout``'s shape
            ((K, D, D) full, (K, D) diag: the diagonals, (K,) spherical: the mean
            variances), the (K,) weights :math:`n_k`, and the previous EM step's
            covariances (a warm start), None, or a :class:`StartOrWarm` choosing
            between the two at run time; None for the classic four, whose
            functions are in :mod:`gaussmix.inference.em.maximization`.
        n_parameters_fn: ``(K, D) -> free covariance parameters`` (mclust's counts).
    """

    name: str
    layout: str
    covariance_fn: Callable | None
    n_parameters_fn: Callable[[int, int], float]


class StartOrWarm(NamedTuple):
    """``previous`` of an M-step that is either a start or a warm-started step, decided
    at run time (one M-step in a program for both, :mod:`gaussmix.inference.em.
    candidates`): ``start`` (a () bool array) True gives exactly the start's result
    (``previous`` None), False the warm start from ``covariances``."""

    covariances: jax.Array
    start: jax.Array


def _warm_start(previous, cold_fn, warm_fn):
    """An iterative M-step's starting point: ``cold_fn()`` without ``previous``,
    ``warm_fn(covariances)`` from the previous step's covariances, or either one by
    :class:`StartOrWarm`'s flag (the other computed and discarded)."""
    if previous is None:
        return cold_fn()
    if isinstance(previous, StartOrWarm):
        return jnp.where(previous.start, cold_fn(), warm_fn(previous.covariances))
    return warm_fn(previous)


# -- helpers ------------------------------------------------------------------------------


def _geometric_mean(values: jax.Array) -> jax.Array:
    """:math:`(\\prod_j v_j)^{1/d}` over the last axis, in log space."""
    return jnp.exp(jnp.mean(jnp.log(values), axis=-1))


def _log_det(matrices: jax.Array) -> jax.Array:
    """:math:`\\log |M|` of SPD matrices (..., D, D) through their Cholesky factors."""
    lower = jnp.linalg.cholesky(matrices)
    return 2 * jnp.sum(jnp.log(jnp.diagonal(lower, axis1=-2, axis2=-1)), axis=-1)


def _unit_determinant(matrices: jax.Array) -> jax.Array:
    """:math:`M / |M|^{1/d}` of SPD matrices (..., D, D)."""
    n_features = matrices.shape[-1]
    return matrices * jnp.exp(-_log_det(matrices) / n_features)[..., None, None]


def _spd_inverse(matrices: jax.Array) -> jax.Array:
    """Inverse of SPD matrices (..., D, D) through the Cholesky factor."""
    inverse_lower = lower_triangular_inverse(jnp.linalg.cholesky(matrices))
    return jnp.swapaxes(inverse_lower, -1, -2) @ inverse_lower


def _symmetric(matrices: jax.Array) -> jax.Array:
    return 0.5 * (matrices + jnp.swapaxes(matrices, -1, -2))


def _descending_eigh(matrices: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Eigenvalues (..., D) in decreasing order and their eigenvectors (columns)."""
    values, vectors = jnp.linalg.eigh(_symmetric(matrices))
    return jnp.flip(values, axis=-1), jnp.flip(vectors, axis=-1)


def _iterate(update_fn, objective_fn, start, scale):
    """``update_fn`` until the objective (to minimize) changes by less than
    :func:`iteration_tolerance` relative to ``|objective| + scale``, or
    :data:`MAX_ITERATIONS` passes; a NaN objective stops at once."""
    first = objective_fn(start)
    tolerance = iteration_tolerance(first.dtype)

    def cond(carry):
        iteration, _, _, change = carry
        return (iteration < MAX_ITERATIONS) & (change > 0)

    def body(carry):
        iteration, state, objective, _ = carry
        new_state = update_fn(state)
        new_objective = objective_fn(new_state)
        change = jnp.abs(objective - new_objective) - tolerance * (jnp.abs(new_objective) + scale)
        # a NaN stops the loop: a NaN change compares False
        change = jnp.where(jnp.isnan(new_objective), -1.0, change)
        return iteration + 1, new_state, new_objective, change

    carry = (jnp.zeros((), jnp.int32), start, first, jnp.ones((), first.dtype))
    return lax.while_loop(cond, body, carry)[1]


def constrained_objective(covariances: jax.Array, sample_covariances: jax.Array, counts, layout):
    """() :math:`\\sum_k n_k (\\log |\\Sigma_k| + \\operatorname{tr}(\\Sigma_k^{-1} S_k))`,
    the quantity every M-step of this module minimizes (``layout``'s shapes)."""
    if layout == "full":
        inverse = _spd_inverse(covariances)
        trace = jnp.sum(inverse * sample_covariances, axis=(-1, -2))
        return jnp.sum(counts * (_log_det(covariances) + trace))
    if layout == "diag":
        terms = jnp.log(covariances) + sample_covariances / covariances
        return jnp.sum(counts * jnp.sum(terms, axis=-1))
    raise ValueError(f"no constrained objective for layout {layout!r}")


# -- spherical and diagonal models -------------------------------------------------------


def _eii(sample_variances, counts, previous):
    """EII: :math:`\\lambda I` with :math:`\\lambda = \\sum_k n_k \\bar s_k / n`
    (:math:`\\bar s_k = \\operatorname{tr}(S_k) / d`, the spherical layout's statistic)."""
    del previous
    common = jnp.sum(counts * sample_variances) / jnp.sum(counts)
    return jnp.broadcast_to(common, sample_variances.shape)


def _eei(sample_variances, counts, previous):
    """EEI: one diagonal :math:`\\mathrm{diag}(\\sum_k n_k S_k) / n`."""
    del previous
    common = counts @ sample_variances / jnp.sum(counts)
    return jnp.broadcast_to(common, sample_variances.shape)


def _evi(sample_variances, counts, previous):
    """EVI: :math:`\\lambda B_k`, :math:`B_k = \\mathrm{diag}(S_k) / |\\mathrm{diag}
    (S_k)|^{1/d}`, :math:`\\lambda = \\sum_k n_k |\\mathrm{diag}(S_k)|^{1/d} / n`."""
    del previous
    volumes = _geometric_mean(sample_variances)  # (K,)
    common = jnp.sum(counts * volumes) / jnp.sum(counts)
    return common * sample_variances / volumes[:, None]


def _fitted(counts, like):
    """Components with a positive count (a padding component of a masked M-step has 0,
    :func:`gaussmix.inference.em.maximization_step`), broadcast against ``like``."""
    return (counts > 0).reshape(counts.shape + (1,) * (like.ndim - 1))


def _mean_of_fitted(values, counts):
    """The mean over the components with a positive count of ``values`` (K, ...): a
    warm start that padding components do not move."""
    fitted = _fitted(counts, values)
    return jnp.sum(jnp.where(fitted, values, 0.0), axis=0) / jnp.sum(counts > 0)


def _vei(sample_variances, counts, previous):
    """VEI: :math:`\\lambda_k B`, alternating :math:`\\lambda_k = \\sum_j s_{kj} / (d
    b_j)` and :math:`B \\propto \\sum_k n_k S_k / \\lambda_k`, :math:`|B| = 1`."""
    shape = _warm_start(
        previous,
        lambda: counts @ sample_variances,  # EEI's
        lambda previous: _mean_of_fitted(previous / _geometric_mean(previous)[:, None], counts),
    )
    return _varying_volumes_common_shape(sample_variances, counts, shape / _geometric_mean(shape))


def _varying_volumes_common_shape(variances, counts, shape):
    """:math:`\\lambda_k B` (K, d) for per-component variances (K, d) along common axes:
    alternating :math:`\\lambda_k = \\sum_j s_{kj} / (d b_j)` and :math:`B \\propto \\sum_k
    n_k S_k / \\lambda_k`, :math:`|B| = 1`, from ``shape`` (|shape| = 1). VEI on the
    sample variances, VEV on each component's eigenvalues."""

    def volumes_of(shape):
        return jnp.mean(variances / shape, axis=-1)

    def update(shape):
        pooled = (counts / volumes_of(shape)) @ variances
        return pooled / _geometric_mean(pooled)

    def objective(shape):
        return constrained_objective(volumes_of(shape)[:, None] * shape, variances, counts, "diag")

    n_features = variances.shape[-1]
    shape = _iterate(update, objective, shape, n_features * jnp.sum(counts))
    return volumes_of(shape)[:, None] * shape


# -- full-layout models -------------------------------------------------------------------


def _vee(sample_covariances, counts, previous):
    """VEE: :math:`\\lambda_k C`, alternating :math:`\\lambda_k =
    \\operatorname{tr}(C^{-1} S_k) / d` and :math:`C \\propto \\sum_k n_k S_k /
    \\lambda_k`, :math:`|C| = 1`."""
    n_features = sample_covariances.shape[-1]
    shape = _warm_start(
        previous,
        lambda: jnp.einsum("k,kij->ij", counts, sample_covariances),  # EEE's
        lambda previous: _mean_of_fitted(_unit_determinant(previous), counts),
    )
    shape = _unit_determinant(shape)

    def volumes_of(shape):
        return jnp.sum(_spd_inverse(shape) * sample_covariances, axis=(-1, -2)) / n_features

    def update(shape):
        pooled = jnp.einsum("k,kij->ij", counts / volumes_of(shape), sample_covariances)
        return _unit_determinant(_symmetric(pooled))

    def objective(shape):
        covariances = volumes_of(shape)[:, None, None] * shape
        return constrained_objective(covariances, sample_covariances, counts, "full")

    shape = _iterate(update, objective, shape, n_features * jnp.sum(counts))
    return volumes_of(shape)[:, None, None] * shape


def _rotate(orientations, eigenvalues):
    """:math:`D_k \\mathrm{diag}(e_k) D_k^T` for (K, D, D) or (D, D) orientations."""
    if orientations.ndim == 2:
        orientations = orientations[None]
    scaled = orientations * eigenvalues[:, None, :]
    return _symmetric(scaled @ jnp.swapaxes(orientations, -1, -2))


def _eev(sample_covariances, counts, previous):
    """EEV: :math:`D_k = L_k`, :math:`\\lambda A = \\sum_k n_k \\mathrm{diag}
    (\\omega_k) / n` (the closed form of Celeux & Govaert)."""
    del previous
    values, vectors = _descending_eigh(sample_covariances)
    common = counts @ values / jnp.sum(counts)  # (D,) decreasing
    return _rotate(vectors, jnp.broadcast_to(common, values.shape))


def _vev(sample_covariances, counts, previous):
    """VEV: :math:`D_k = L_k`; alternating :math:`\\lambda_k = \\sum_j \\omega_{kj} /
    (d a_j)` and :math:`A \\propto \\sum_k n_k \\omega_k / \\lambda_k`, :math:`|A| = 1`."""
    values, vectors = _descending_eigh(sample_covariances)
    n_features = values.shape[-1]
    volumes = _warm_start(
        previous,
        lambda: _geometric_mean(values),  # EVV's
        lambda previous: jnp.exp(_log_det(previous) / n_features),
    )
    shape = (counts / volumes) @ values
    shape = shape / _geometric_mean(shape)
    return _rotate(vectors, _varying_volumes_common_shape(values, counts, shape))


def _evv(sample_covariances, counts, previous):
    """EVV: :math:`\\lambda C_k`, :math:`C_k = S_k / |S_k|^{1/d}`,
    :math:`\\lambda = \\sum_k n_k |S_k|^{1/d} / n`."""
    del previous
    n_features = sample_covariances.shape[-1]
    volumes = jnp.exp(_log_det(sample_covariances) / n_features)
    common = jnp.sum(counts * volumes) / jnp.sum(counts)
    return (common / volumes)[:, None, None] * sample_covariances


def _common_orientation(sample_covariances, counts, previous, eigenvalues_fn):
    """EVE and VVE: :math:`\\Sigma_k = D \\mathrm{diag}(e_k) D^T` with one orientation
    :math:`D`, alternating ``eigenvalues_fn(E, counts)`` on :math:`E_k =
    \\mathrm{diag}(D^T S_k D)` and two majorize-minimize steps on :math:`D`."""
    n_features = sample_covariances.shape[-1]
    pooled = _warm_start(
        previous,
        lambda: jnp.einsum("k,kij->ij", counts, sample_covariances),  # EEE's orientation
        lambda previous: jnp.sum(jnp.where(_fitted(counts, previous), previous, 0.0), axis=0),
    )
    _, orientation = _descending_eigh(pooled)
    weighted = counts[:, None, None] * sample_covariances
    # largest eigenvalue of each n_k S_k (the majorization's constant)
    largest = jnp.max(jnp.linalg.eigvalsh(_symmetric(weighted)), axis=-1)

    def eigenvalues_of(orientation):
        projected = jnp.einsum("ji,kjl,li->ki", orientation, sample_covariances, orientation)
        return eigenvalues_fn(projected, counts)

    def polar(matrix):
        left, _, right = jnp.linalg.svd(matrix)
        return left @ right

    def update(orientation):
        inverse = 1.0 / eigenvalues_of(orientation)  # (K, D): M_k
        # D <- polar(sum_k (alpha_k I - n_k S_k) D M_k)
        moved = largest[:, None, None] * orientation[None] - weighted @ orientation
        orientation = polar(jnp.sum(moved * inverse[:, None, :], axis=0))
        # the same for D^T: D^T <- polar(sum_k (beta_k I - M_k) D^T n_k S_k)
        beta = jnp.max(inverse, axis=-1)
        transposed = orientation.T
        moved = (beta[:, None] - inverse)[:, :, None] * (transposed[None] @ weighted)
        return polar(jnp.sum(moved, axis=0)).T

    def objective(orientation):
        eigenvalues = eigenvalues_of(orientation)
        projected = jnp.einsum("ji,kjl,li->ki", orientation, sample_covariances, orientation)
        terms = jnp.log(eigenvalues) + projected / eigenvalues
        return jnp.sum(counts * jnp.sum(terms, axis=-1))

    orientation = _iterate(update, objective, orientation, n_features * jnp.sum(counts))
    return _rotate(orientation, eigenvalues_of(orientation))


def _eve_eigenvalues(projected, counts):
    volumes = _geometric_mean(projected)
    common = jnp.sum(counts * volumes) / jnp.sum(counts)
    return common * projected / volumes[:, None]


def _vve_eigenvalues(projected, counts):
    del counts
    return projected


def _eve(sample_covariances, counts, previous):
    """EVE: :math:`\\lambda D A_k D^T` (Browne & McNicholas 2014), see
    :func:`_common_orientation`."""
    return _common_orientation(sample_covariances, counts, previous, _eve_eigenvalues)


def _vve(sample_covariances, counts, previous):
    """VVE: :math:`\\lambda_k D A_k D^T` (Browne & McNicholas 2014), see
    :func:`_common_orientation`."""
    return _common_orientation(sample_covariances, counts, previous, _vve_eigenvalues)


# -- the registry -------------------------------------------------------------------------


def _model(name, covariance_fn, n_parameters_fn):
    return CovarianceModel(name, COVARIANCE_LAYOUTS[name], covariance_fn, n_parameters_fn)


def _rotations(d):
    return d * (d - 1) / 2.0


#: Covariance type -> its :class:`CovarianceModel` (the classic four and their aliases
#: share an entry without ``covariance_fn``). Counts of Scrucca et al. (2016), Table 1.
COVARIANCE_MODELS: dict[str, CovarianceModel] = {
    "spherical": _model("spherical", None, lambda k, d: k),
    "diag": _model("diag", None, lambda k, d: k * d),
    "tied": _model("tied", None, lambda k, d: d * (d + 1) / 2.0),
    "full": _model("full", None, lambda k, d: k * d * (d + 1) / 2.0),
    "EII": _model("EII", _eii, lambda k, d: 1),
    "EEI": _model("EEI", _eei, lambda k, d: d),
    "VEI": _model("VEI", _vei, lambda k, d: k + (d - 1)),
    "EVI": _model("EVI", _evi, lambda k, d: 1 + k * (d - 1)),
    "VEE": _model("VEE", _vee, lambda k, d: k + (d - 1) + _rotations(d)),
    "EVE": _model("EVE", _eve, lambda k, d: 1 + k * (d - 1) + _rotations(d)),
    "VVE": _model("VVE", _vve, lambda k, d: k * d + _rotations(d)),
    "EEV": _model("EEV", _eev, lambda k, d: 1 + (d - 1) + k * _rotations(d)),
    "VEV": _model("VEV", _vev, lambda k, d: k + (d - 1) + k * _rotations(d)),
    "EVV": _model("EVV", _evv, lambda k, d: 1 + k * (d - 1) + k * _rotations(d)),
}
COVARIANCE_MODELS.update({alias: COVARIANCE_MODELS[t] for alias, t in COVARIANCE_ALIASES.items()})
assert set(COVARIANCE_MODELS) == set(COVARIANCE_LAYOUTS)
assert all(COVARIANCE_MODELS[t].covariance_fn is None for t in COVARIANCE_TYPES)


def n_covariance_parameters(covariance_type: str, n_components: int, n_features: int) -> int:
    """Free covariance parameters of K components of D features (mclust's counts).

    Example:
        >>> n_covariance_parameters("EVE", 3, 4)  # 1 + 3 * 3 + 6
        16
    """
    check_em_covariance_type(covariance_type)
    count = COVARIANCE_MODELS[covariance_type].n_parameters_fn(n_components, n_features)
    return round(count)
