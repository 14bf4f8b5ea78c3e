"""MINPACK's Levenberg-Marquardt (``lmder``) as a pure step on one spectrum.

BlackJAX style: :func:`map_init` builds the :class:`MAPState` of a start, and
:func:`map_step` maps ``(state, problem, settings) -> (state, info)``: what the next step
needs (:class:`MAPState`) apart from what a driver reads (:class:`MAPInfo`). The step
neither jits nor loops; :mod:`gaussmix.inference.map.batch` runs it in one
``lax.while_loop`` over slots of spectra.

Curve parameters take Levenberg-Marquardt steps on :math:`\\sigma^2 F` at fixed
:math:`\\sigma`,

.. math::

    (\\tilde H + \\lambda D^2)\\,\\delta = -\\tilde g, \\qquad
    \\tilde H = J^\\top \\tilde W J - \\sigma^2 \\nabla^2 \\log p(\\theta), \\qquad
    \\tilde g = \\sigma^2 \\nabla_\\theta F,

and at each trial point :math:`\\sigma` is updated at fixed :math:`\\theta`
(:func:`gaussmix.inference.map.problem.update_noise`: its maximum in closed form for a
Normal likelihood under a half-normal prior, else Newton steps on :math:`\\log\\sigma`). The damping :math:`\\lambda`, the
scaling :math:`D` and the trust radius follow MINPACK (Moré 1978) step for step.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gaussmix.inference.map.problem import (
    Evaluation,
    MAPProblem,
    jacobian,
    row_sums,
    update_noise,
)

__all__ = [
    "MAPInfo",
    "MAPPoint",
    "MAPSettings",
    "MAPState",
    "cholesky_solve",
    "evaluate_point",
    "inverse_cholesky",
    "inverse_positive_definite",
    "keep_accepted",
    "keeps_half_deviances",
    "map_init",
    "map_propose",
    "map_step",
    "solve_positive_definite",
    "trust_region_step",
]

# MINPACK's constants: initial trust radius factor, inner iterations of lmpar.
RADIUS_FACTOR = 100.0
LMPAR_ITERATIONS = 10
#: Newton steps on log(sigma) at each evaluated point (where sigma has no closed form).
NOISE_STEPS = 2


class MAPSettings(NamedTuple):
    """Stopping rules of :func:`map_step` (arrays, so that changing them recompiles
    nothing).

    Attributes:
        tol: relative actual and predicted decrease of :math:`\\sigma^2 F`, and Newton
            decrement (nats), counted as converged.
        step_tol: trust radius, relative to the scaled parameter norm, counted as
            converged.
        max_iter: trial steps before giving up.
    """

    tol: jax.Array
    step_tol: jax.Array
    max_iter: jax.Array


class MAPPoint(NamedTuple):
    """The objective and its derivatives at one point, in units of :math:`\\sigma^2`.

    Attributes:
        params: (P,) curve parameters :math:`\\theta` (latent sites but the noise),
            raveled, natural coordinates.
        noise: noise scale :math:`\\sigma` (1 without a noise site).
        half_deviances: (M,) pointwise half deviance times the noise variance (half the
            squared residuals for a Normal likelihood), 0 where masked, below float64;
            (0,) in float64 (:func:`keeps_half_deviances`).
        log_prior: log prior of params (the noise prior excluded).
        objective: :math:`\\sigma^2(\\tfrac12\\sum \\mathrm{deviance} - \\log p(\\theta))`,
            half the RSS for a Normal likelihood under flat priors.
        gradient: (P,) :math:`\\tilde g`.
        curvature: (P, P) :math:`\\tilde H`.
        prior_hessian: (P, P) :math:`\\nabla^2 \\log p(\\theta)`.
        scaling: (P,) MINPACK's D.
        gauss_newton: (P,) scaled Gauss-Newton step :math:`q = Dp` (NaN when the scaled
            curvature :math:`\\hat H = D^{-1}\\tilde H D^{-1} = L L^\\top` is singular).
        gauss_newton_curvature: :math:`\\|L^{-1} q\\|^2 = q^\\top \\hat H^{-1} q`, for
            MINPACK's lower bound on the damping.
        decrement: Newton decrement :math:`\\nabla F^\\top H^{-1} \\nabla F` (nats).
        rss: residual sum of squares.
        n_points: unmasked points.
    """

    params: jax.Array
    noise: jax.Array
    half_deviances: jax.Array
    log_prior: jax.Array
    objective: jax.Array
    gradient: jax.Array
    curvature: jax.Array
    prior_hessian: jax.Array
    scaling: jax.Array
    gauss_newton: jax.Array
    gauss_newton_curvature: jax.Array
    decrement: jax.Array
    rss: jax.Array
    n_points: jax.Array


class MAPState(NamedTuple):
    """What the next Levenberg-Marquardt step of one spectrum needs.

    Attributes:
        point: the last accepted :class:`MAPPoint` (unevaluated while ``fresh``).
        radius: trust radius :math:`\\Delta`.
        damping: Levenberg-Marquardt parameter :math:`\\lambda`.
        parameter_norm: :math:`\\|D\\theta\\|` at the last accepted point.
        n_iter: trial steps (the starting point not counted).
        n_accepted: accepted steps.
        fresh: the starting point is still to be evaluated (by the next step).
    """

    point: MAPPoint
    radius: jax.Array
    damping: jax.Array
    parameter_norm: jax.Array
    n_iter: jax.Array
    n_accepted: jax.Array
    fresh: jax.Array


class MAPInfo(NamedTuple):
    """What one :func:`map_step` reports.

    A step from a ``fresh`` state evaluates the start: ``started`` and ``support`` say
    how that went, and a failed start is ``done``. The steps after it continue only from
    a start inside every support that evaluated finitely, so they report ``started``
    True and ``support`` all True. Stepping a state after ``done`` is meaningless.

    Attributes:
        accepted: the trial point (the start, for a fresh state) was accepted.
        converged: a convergence test passed (never after a failed start).
        done: stop: converged, out of iterations, or non-finite (a failed start).
        started: the start was evaluated with a finite objective, gradient and curvature.
        support: (n_sites,) whether each site's starting value lies in its prior support.
    """

    accepted: jax.Array
    converged: jax.Array
    done: jax.Array
    started: jax.Array
    support: jax.Array


def keeps_half_deviances(dtype) -> bool:
    """Whether a :class:`MAPPoint` of this dtype keeps its (M,) half deviances.

    Below float64 a trial's decrease of the objective is summed point by point,
    :math:`\\sum_m (d_m - d'_m)`: in float32 the difference of two sums of M terms would
    lose the small decreases near the optimum. In float64 it is the difference of the
    objectives (rounding about 1e-15 of the objective, far below any tolerance), and the
    state carries no (M,) vector: on P3 (1 000 points) the packed state holds 419 numbers
    per spectrum instead of 1 419, and the fit takes 4-5 % less CPU.
    """
    return jnp.finfo(dtype).bits < 64


# ---------------------------------------------------------------------------------------
# Linear algebra
# ---------------------------------------------------------------------------------------


@jax.custom_batching.custom_vmap
def inverse_cholesky(matrix: jax.Array) -> jax.Array:
    """:math:`W = L^{-1}`, the inverse of the lower Cholesky factor of a symmetric
    positive definite (n, n) matrix; NaN when it is not positive definite.

    Right-looking elimination on :math:`[A \\mid I]`: step :math:`j` divides row
    :math:`j` by :math:`\\sqrt{a_{jj}}` and subtracts :math:`a_{ij}/a_{jj}` times it from
    each row :math:`i > j`, so that the rows apply :math:`L^{-1}` and
    :math:`L^{-1}[A \\mid I] = [L^\\top \\mid L^{-1}]`. One ``lax.fori_loop`` of n steps,
    each one elementwise update of the (n, 2n) array: a few XLA kernels whatever n, and no
    LAPACK call, so a program that factors only here runs without SciPy's LAPACK (whose
    set-up imports ``scipy.linalg``: 0.1 s of a first fit). Solves are then matrix-vector
    products, :math:`A^{-1} b = W^\\top (W b)` (:func:`cholesky_solve`), whose forward
    error is the Cholesky solve's, :math:`O(\\kappa(A)\\,\\epsilon)` relative (the fit
    factors Jacobi-scaled matrices, of unit diagonal). Under ``vmap`` (a batch of spectra)
    LAPACK factors instead (:func:`_inverse_cholesky_batch`).

    Example:
        >>> import jax.numpy as jnp
        >>> inverse_cholesky(jnp.array([[4.0, 2.0], [2.0, 2.0]])).tolist()
        [[0.5, 0.0], [-0.5, 1.0]]
    """
    size = matrix.shape[-1]
    augmented = jnp.concatenate([matrix, jnp.eye(size, dtype=matrix.dtype)], axis=-1)
    rows = np.arange(size)[:, None]

    def eliminate(j, current):
        row = lax.dynamic_slice_in_dim(current, j, 1, axis=0)  # (1, 2n)
        column = lax.dynamic_slice_in_dim(current, j, 1, axis=1)  # (n, 1)
        pivot = lax.dynamic_slice_in_dim(column, j, 1, axis=0)  # (1, 1)
        below = current - column * (row / pivot)
        return jnp.where(rows > j, below, jnp.where(rows == j, row / jnp.sqrt(pivot), current))

    reduced = lax.fori_loop(0, size, eliminate, augmented)
    positive = jnp.all(jnp.diagonal(reduced[:, :size]) > 0)
    return jnp.where(positive, reduced[:, size:], jnp.nan)


@inverse_cholesky.def_vmap
def _inverse_cholesky_batch(axis_size: int, in_batched: list, matrix: jax.Array):
    """:func:`inverse_cholesky` under ``vmap`` (a batch of spectra): LAPACK's batched
    Cholesky factor and its triangular inverse (a batch pays the LAPACK set-up once for
    many spectra, and runs faster than with the elimination's n loop steps)."""
    if not in_batched[0]:
        return inverse_cholesky(matrix), False
    lower = jnp.linalg.cholesky(matrix)  # NaN where not positive definite, as above
    identity = jnp.broadcast_to(np.eye(matrix.shape[-1], dtype=matrix.dtype), matrix.shape)
    return lax.linalg.triangular_solve(lower, identity, left_side=True, lower=True), True


def cholesky_solve(inverse_factor: jax.Array, vector: jax.Array) -> jax.Array:
    """Solve :math:`A x = b` for b of shape (n,) or (n, k), given
    :math:`W = L^{-1}` (:func:`inverse_cholesky`): :math:`x = W^\\top (W b)`."""
    return inverse_factor.T @ (inverse_factor @ vector)


@jax.custom_batching.custom_vmap
def solve_positive_definite(matrix: jax.Array, vector: jax.Array) -> tuple[jax.Array, jax.Array]:
    """:math:`x = A^{-1} b` and :math:`\\|L^{-1} x\\|^2 = x^\\top A^{-1} x` for a symmetric
    positive definite (n, n) A (:math:`A = L L^\\top`) and an (n,) b: what a
    Levenberg-Marquardt step needs of its curvature (the step, and MINPACK's slope of the
    step's length in the damping). NaN when A is not positive definite.

    One spectrum: by :func:`inverse_cholesky` (no LAPACK). Under ``vmap`` (a batch of
    spectra): LAPACK's batched Cholesky factor and three triangular solves with vectors
    (:func:`_solve_positive_definite_batch`), which cost a batch less than forming
    :math:`L^{-1}` (P3, 2 000 spectra of 11 parameters: 5 % of the fit's time).

    Example:
        >>> import jax.numpy as jnp
        >>> x, curvature = solve_positive_definite(
        ...     jnp.array([[4.0, 2.0], [2.0, 2.0]]), jnp.array([2.0, 0.0]))
        >>> x.tolist(), float(curvature)
        ([1.0, -1.0], 2.5)
    """
    inverse_factor = inverse_cholesky(matrix)
    solution = cholesky_solve(inverse_factor, vector)
    return solution, jnp.sum((inverse_factor @ solution) ** 2)


@solve_positive_definite.def_vmap
def _solve_positive_definite_batch(
    axis_size: int, in_batched: list, matrix: jax.Array, vector: jax.Array
):
    """:func:`solve_positive_definite` under ``vmap``: LAPACK's Cholesky factors
    (NaN where not positive definite) and triangular solves, batched."""
    if not any(in_batched):
        return solve_positive_definite(matrix, vector), (False, False)
    matrix = matrix if in_batched[0] else jnp.broadcast_to(matrix, (axis_size, *matrix.shape))
    vector = vector if in_batched[1] else jnp.broadcast_to(vector, (axis_size, *vector.shape))
    lower = jnp.linalg.cholesky(matrix)

    def solve(right, transpose=False):
        return lax.linalg.triangular_solve(
            lower, right[..., None], left_side=True, lower=True, transpose_a=transpose
        )[..., 0]

    solution = solve(solve(vector), transpose=True)
    return (solution, jnp.sum(solve(solution) ** 2, axis=-1)), (True, True)


def inverse_positive_definite(matrix: jax.Array) -> jax.Array:
    """Inverse of a symmetric positive definite matrix (Jacobi-scaled Cholesky); NaN when
    it is not positive definite, or singular to working precision.

    The scaled matrix :math:`S = D^{-1} A D^{-1}` has a unit diagonal; its Cholesky
    factor's pivots :math:`L_{kk}^2` are the Schur complements, each at most 1. A pivot
    below :math:`n\\epsilon` leaves a matrix that rounding alone made positive definite
    (a rank-deficient :math:`J^\\top J`: parameters the data cannot tell apart): whether
    the factorization then fails or returns an "inverse" of size :math:`1/\\epsilon^k`
    depends on the order of the operations that formed it, so such a matrix counts as
    singular.
    """
    diagonal = jnp.diag(matrix)
    scaling = jnp.where(diagonal > 0, jnp.sqrt(jnp.abs(diagonal)), jnp.nan)
    inverse_factor = inverse_cholesky(matrix / jnp.outer(scaling, scaling))
    inverse = (inverse_factor.T @ inverse_factor) / jnp.outer(scaling, scaling)
    # L_kk^2 = 1 / W_kk^2; NaN (not positive definite) makes the inverse NaN already.
    singular = (
        jnp.max(jnp.diag(inverse_factor) ** 2) * (matrix.shape[0] * jnp.finfo(matrix.dtype).eps) > 1
    )
    return jnp.where(singular, jnp.nan, inverse)


# ---------------------------------------------------------------------------------------
# One point, one trust-region step
# ---------------------------------------------------------------------------------------


def evaluate_point(
    problem: MAPProblem,
    theta: jax.Array,
    noise: jax.Array,
    jacobian: jax.Array,
    evaluation: Evaluation,
    scaling: jax.Array,
) -> MAPPoint:
    """Everything at (theta, noise) in units of unit(): objective, gradient, curvature,
    MINPACK's scaling D (never below the previous ``scaling``), and the scaled
    Gauss-Newton step :math:`Dp` with its norm in the scaled curvature
    :math:`D^{-1}\\tilde H D^{-1}` (:func:`solve_positive_definite`).

    Args:
        problem: the spectrum.
        theta: (P,) curve parameters.
        noise: noise scale.
        jacobian: (M, P) Jacobian of the location at theta.
        evaluation: the observed site and prior at theta, with the prior's derivatives
            (from :func:`~gaussmix.inference.map.problem.jacobian`).
        scaling: (P,) MINPACK's D so far.
    """
    weights = problem.weights(evaluation, noise)
    scale = problem.scale(evaluation, noise)
    location, extra = evaluation.location, evaluation.extra
    score = weights * problem.family.score_fn(problem.y, location, scale, extra)
    fisher = weights * problem.family.fisher_fn(location, scale, extra)
    unit = problem.unit(noise)
    prior_gradient, prior_hessian = evaluation.prior_gradient, evaluation.prior_hessian
    gradient = -(jacobian.T @ score) - unit * prior_gradient
    curvature = jacobian.T @ (fisher[:, None] * jacobian) - unit * prior_hessian
    half_deviances = problem.half_deviances(evaluation, noise)
    deviance_sum, rss, n_points = problem.point_sums(evaluation, noise)
    objective = deviance_sum - unit * evaluation.log_prior
    scaling = jnp.maximum(scaling, jnp.sqrt(jnp.maximum(jnp.diag(curvature), 0.0)))
    scaling = jnp.where(scaling > 0, scaling, 1.0)
    scaled_gradient = gradient / scaling
    solution, gauss_newton_curvature = solve_positive_definite(
        curvature / jnp.outer(scaling, scaling), scaled_gradient
    )
    gauss_newton = -solution
    decrement = -jnp.dot(scaled_gradient, gauss_newton) / unit
    decrement = jnp.where(jnp.isfinite(decrement) & (decrement >= 0), decrement, jnp.inf)
    return MAPPoint(
        params=theta,
        noise=noise,
        half_deviances=half_deviances if keeps_half_deviances(theta.dtype) else half_deviances[:0],
        log_prior=evaluation.log_prior,
        objective=objective,
        gradient=gradient,
        curvature=curvature,
        prior_hessian=prior_hessian,
        scaling=scaling,
        gauss_newton=gauss_newton,
        gauss_newton_curvature=gauss_newton_curvature,
        decrement=decrement,
        rss=rss,
        n_points=n_points,
    )


def trust_region_step(
    point: MAPPoint, radius: jax.Array, damping: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """MINPACK's lmpar in scaled coordinates :math:`q = Dp`, :math:`\\hat H = D^{-1}
    \\tilde H D^{-1}`, :math:`\\hat g = D^{-1}\\tilde g`.

    Returns the Gauss-Newton step when :math:`\\|q\\| \\le 1.1\\Delta`, else
    :math:`q(\\lambda) = -(\\hat H + \\lambda I)^{-1}\\hat g` with
    :math:`|\\,\\|q\\| - \\Delta| \\le 0.1\\Delta` from at most 10 of MINPACK's
    safeguarded Newton iterations on the secular equation; and the :math:`\\lambda` used.
    The point's ``gauss_newton`` is the scaled Gauss-Newton step (NaN when
    :math:`\\hat H` is singular) and ``gauss_newton_curvature`` its
    :math:`q^\\top \\hat H^{-1} q`;
    its ``curvature`` :math:`\\tilde H`, whose damped form still gives a step when
    :math:`\\hat H` is singular (a column of zeros in the Jacobian: a peak with no data
    under it).

    Args:
        point: the current point.
        radius: trust radius :math:`\\Delta`.
        damping: the previous :math:`\\lambda`, MINPACK's first guess.

    Returns:
        (P,) step in natural coordinates, and the damping used (0 for Gauss-Newton).
    """
    gauss_newton, gradient = point.gauss_newton, point.gradient
    scaling = point.scaling
    tiny = jnp.finfo(gradient.dtype).tiny
    scaled_gradient = gradient / scaling
    # Sums over the parameters as one reduction (XLA CPU compiles each as a kernel).
    sums = row_sums(gauss_newton**2, scaled_gradient**2, ~jnp.isfinite(gauss_newton))
    norm, gradient_norm = jnp.sqrt(sums[:2])
    full_rank = sums[2] == 0
    excess = jnp.where(full_rank, norm - radius, jnp.inf)
    use_gauss_newton = excess <= 0.1 * radius
    # MINPACK's ||L^{-1} q / ||q|| ||^2: minus the slope of ||q(lambda)|| times ||q||.
    slope = point.gauss_newton_curvature / norm**2
    lower = jnp.where(full_rank, excess / radius / slope, 0.0)
    lower = jnp.where(jnp.isfinite(lower), lower, 0.0)
    upper = gradient_norm / radius
    upper = jnp.where(upper == 0, tiny / jnp.minimum(radius, 0.1), upper)
    start = jnp.minimum(jnp.maximum(damping, lower), upper)
    start = jnp.where(
        (start == 0) & full_rank, gradient_norm / jnp.where(norm > 0, norm, 1.0), start
    )
    identity = np.eye(gradient.shape[0], dtype=gradient.dtype)  # a literal, not a kernel
    curvature = point.curvature / jnp.outer(scaling, scaling)

    # The loop carries one vector, [damping, lower, upper, excess, iteration, done,
    # step...]: XLA CPU compiles each loop-carried value as a kernel of its own, one
    # vector is one kernel.
    size = gradient.shape[0]
    (DAMPING, LOWER, UPPER, EXCESS, ITERATION, DONE), STEP = range(6), 6

    def body(carry: jax.Array) -> jax.Array:
        iteration = carry[ITERATION] + 1
        previous_damping, previous_lower, previous_excess = (
            carry[DAMPING],
            carry[LOWER],
            carry[EXCESS],
        )
        damping = jnp.where(
            previous_damping == 0, jnp.maximum(tiny, 0.001 * carry[UPPER]), previous_damping
        )
        solution, step_curvature = solve_positive_definite(
            curvature + damping * identity, scaled_gradient
        )
        step = -solution
        norm, n_not_finite = row_sums(step**2, ~jnp.isfinite(step))
        norm = jnp.sqrt(norm)
        excess = norm - radius
        done = (
            (jnp.abs(excess) <= 0.1 * radius)
            | ((previous_lower == 0) & (excess <= previous_excess) & (previous_excess < 0))
            | (iteration == LMPAR_ITERATIONS)
            | (n_not_finite > 0)
        )
        slope = step_curvature / norm**2
        correction = excess / radius / slope
        lower = jnp.where(excess > 0, jnp.maximum(previous_lower, damping), previous_lower)
        upper = jnp.where(excess < 0, jnp.minimum(carry[UPPER], damping), carry[UPPER])
        new_damping = jnp.where(done, damping, jnp.maximum(lower, damping + correction))
        scalars = jnp.stack([new_damping, lower, upper, excess, iteration, done.astype(step.dtype)])
        return jnp.concatenate([scalars, step])

    initial = jnp.concatenate(
        [
            jnp.stack([start, lower, upper, excess, jnp.zeros_like(start),
                       use_gauss_newton.astype(start.dtype)]),
            jnp.where(full_rank, gauss_newton, 0.0),
        ]
    )  # fmt: skip
    final = lax.while_loop(lambda carry: carry[DONE] == 0, body, initial)
    final_step, final_damping = final[STEP : STEP + size], final[DAMPING]
    return final_step / scaling, jnp.where(use_gauss_newton, 0.0, final_damping)


# ---------------------------------------------------------------------------------------
# init and step
# ---------------------------------------------------------------------------------------


def map_init(params: jax.Array, noise: jax.Array, problem: MAPProblem) -> MAPState:
    """A ``fresh`` state at (params, noise): nothing evaluated yet, the first
    :func:`map_step` evaluates the start.

    Args:
        params: (P,) raveled curve parameters.
        noise: scalar noise scale (1 without a noise site).
        problem: the spectrum (only its shapes are read).

    Example:
        >>> import jax.numpy as jnp
        >>> from gaussmix.inference.map.problem import MAPProblem, Sites
        >>> sites = Sites(("slope",), ((),), -1)
        >>> problem = MAPProblem(None, sites, "y", None, jnp.zeros(3), jnp.zeros(3), {})
        >>> state = map_init(jnp.ones(1), jnp.ones(()), problem)
        >>> bool(state.fresh), state.point.gradient.shape
        (True, (1,))
    """
    dtype = params.dtype
    size = params.shape[0]
    zero = jnp.zeros((), dtype)
    matrix = jnp.zeros((size, size), dtype)
    point = MAPPoint(
        params=params,
        noise=noise,
        half_deviances=jnp.zeros(problem.y.shape if keeps_half_deviances(dtype) else (0,), dtype),
        log_prior=zero,
        objective=zero,
        gradient=jnp.zeros_like(params),
        curvature=matrix,
        prior_hessian=matrix,
        scaling=jnp.zeros_like(params),
        gauss_newton=jnp.zeros_like(params),
        gauss_newton_curvature=zero,
        decrement=jnp.asarray(jnp.inf, dtype),
        rss=zero,
        n_points=zero,
    )
    return MAPState(
        point=point,
        radius=zero,
        damping=zero,
        parameter_norm=zero,
        n_iter=jnp.asarray(0, jnp.int32),
        n_accepted=jnp.asarray(0, jnp.int32),
        fresh=jnp.asarray(True),
    )


def map_step(
    state: MAPState, problem: MAPProblem, settings: MAPSettings
) -> tuple[MAPState, MAPInfo]:
    """One step of MINPACK's lmder (pure): propose, evaluate, accept or reject.

    :func:`map_propose`, then :func:`keep_accepted`: the next state holds the trial
    point where it was accepted, else the current one. Arguments and results as
    :func:`map_propose`'s.
    """
    proposed, info = map_propose(state, problem, settings)
    return keep_accepted(proposed, state, info), info


def keep_accepted(proposed: MAPState, state: MAPState, info: MAPInfo) -> MAPState:
    """``proposed`` (from :func:`map_propose`) with the point of ``state`` where the trial
    point was not accepted."""
    point = jax.tree.map(
        lambda new, old: jnp.where(info.accepted, new, old), proposed.point, state.point
    )
    return proposed._replace(point=point)


def map_propose(
    state: MAPState, problem: MAPProblem, settings: MAPSettings
) -> tuple[MAPState, MAPInfo]:
    """:func:`map_step` but for its last part: the next state with the trial point
    evaluated in place of the current one, whether or not it was accepted
    (``info.accepted``; :func:`keep_accepted` completes the step). A driver that keeps
    its states raveled selects the point there, in one operation (XLA CPU compiles a
    select per field of the point as a kernel of its own: 17 of them).

    A ``fresh`` state evaluates its starting point instead and sets up MINPACK's scaling
    and trust radius there. With :math:`\\rho` the ratio of actual to predicted decrease
    of :math:`\\sigma^2 F`, a step is accepted when :math:`\\rho \\ge 10^{-4}`; the
    radius shrinks when :math:`\\rho \\le 1/4` and grows when :math:`\\rho \\ge 3/4`.
    Trial points outside a prior's support count as failed steps.

    Args:
        state: from :func:`map_init` or the previous step.
        problem: the spectrum, its priors read (:meth:`MAPProblem.with_priors`).
        settings: the stopping rules.

    Returns:
        The next state (its point the trial point, accepted or not) and the step's
        :class:`MAPInfo`.
    """
    current = state.point
    epsilon = jnp.finfo(current.params.dtype).eps
    fresh = state.fresh
    scaling = current.scaling
    step, damping = trust_region_step(current, state.radius, state.damping)
    step = jnp.where(fresh, 0.0, step)
    damping = jnp.where(fresh, 0.0, damping)
    # ||D step||^2, the model's quadratic step^T H step and the non-finite entries of the
    # step as one reduction.
    squared_norm, quadratic, n_not_finite = row_sums(
        (scaling * step) ** 2, step * (current.curvature @ step), ~jnp.isfinite(step)
    )
    step_norm = jnp.sqrt(squared_norm)
    radius = jnp.where(state.n_accepted == 0, jnp.minimum(state.radius, step_norm), state.radius)
    trial = current.params + step
    jacobian_matrix, evaluation = jacobian(problem, trial, current.noise)
    unit = problem.unit(current.noise)
    half_deviances = problem.half_deviances(evaluation, current.noise)
    if keeps_half_deviances(current.params.dtype):  # point by point: float32 keeps it
        decrease = jnp.sum(current.half_deviances - half_deviances) + unit * (
            evaluation.log_prior - current.log_prior
        )
    else:
        # The sum as evaluate_point takes it (MAPProblem.point_sums: computed once).
        deviance_sum = problem.point_sums(evaluation, current.noise)[0]
        decrease = current.objective - (deviance_sum - unit * evaluation.log_prior)
    reference = jnp.where(current.objective > 0, current.objective, unit * 0.5 * problem.y.shape[0])
    valid = jnp.all(evaluation.support) & jnp.isfinite(decrease) & (n_not_finite == 0)
    small_enough = valid & (current.objective - decrease < 100.0 * reference)
    damped = damping * step_norm**2
    # The quotients of one level as one vector: XLA CPU compiles each divide that has
    # several users as a kernel of its own.
    numerators = jnp.stack([decrease, quadratic + 2.0 * damped, -(quadratic + damped)])
    denominators = jnp.stack([reference, 2.0 * reference, 2.0 * reference])
    actual, predicted, directional = numerators / denominators
    actual = jnp.where(small_enough, actual, -1.0)
    # MINPACK's update of the trust radius and of the damping.
    numerators = jnp.stack([actual, 0.5 * directional])
    denominators = jnp.stack([predicted, directional + 0.5 * actual])
    ratio, shrink = numerators / denominators
    ratio = jnp.where(predicted != 0, ratio, 0.0)
    shrink = jnp.where(actual >= 0, 0.5, shrink)
    shrink = jnp.where(~small_enough | (shrink < 0.1) | ~jnp.isfinite(shrink), 0.1, shrink)
    poor = ratio <= 0.25
    good = ~poor & ((damping == 0) | (ratio >= 0.75))
    new_radius = jnp.where(
        poor,
        shrink * jnp.minimum(radius, step_norm / 0.1),
        jnp.where(good, step_norm / 0.5, radius),
    )
    new_damping = jnp.where(poor, damping / shrink, jnp.where(good, 0.5 * damping, damping))

    noise = update_noise(problem, trial, current.noise, evaluation, NOISE_STEPS)
    local = evaluate_point(problem, trial, noise, jacobian_matrix, evaluation, scaling)
    finite = (
        jnp.isfinite(local.objective)
        & jnp.all(jnp.isfinite(local.gradient))
        & jnp.all(jnp.isfinite(local.curvature))
    )
    accept = valid & finite & (fresh | (ratio >= 1e-4))

    # A fresh state: MINPACK's initial scaling, radius and parameter norm.
    start_norm = jnp.linalg.norm(local.scaling * trial)
    start_radius = jnp.where(start_norm > 0, RADIUS_FACTOR * start_norm, RADIUS_FACTOR)
    new_radius = jnp.where(fresh, start_radius, new_radius)
    new_damping = jnp.where(fresh, 0.0, new_damping)

    parameter_norm = jnp.where(
        fresh,
        start_norm,
        jnp.where(accept, jnp.linalg.norm(scaling * trial), state.parameter_norm),
    )
    tol, step_tol = settings.tol, settings.step_tol
    relative_tests = ~fresh & (0.5 * ratio <= 1) & (predicted >= 0)
    converged = (
        (relative_tests & (jnp.abs(actual) <= tol) & (predicted <= tol))
        | (~fresh & (new_radius <= step_tol * parameter_norm))
        | (relative_tests & (jnp.abs(actual) <= epsilon) & (predicted <= epsilon))
        | (~fresh & (new_radius <= epsilon * parameter_norm))
        | (accept & (local.decrement <= tol))
    )
    n_iter = state.n_iter + (~fresh).astype(state.n_iter.dtype)
    failed = (fresh & ~accept) | ~jnp.isfinite(new_radius)
    new_state = MAPState(
        point=local,
        radius=new_radius,
        damping=new_damping,
        parameter_norm=parameter_norm,
        n_iter=n_iter,
        n_accepted=state.n_accepted + (accept & ~fresh).astype(state.n_accepted.dtype),
        fresh=jnp.zeros_like(fresh),
    )
    info = MAPInfo(
        accepted=accept,
        converged=converged & ~failed,
        done=converged | failed | (n_iter >= settings.max_iter),
        started=jnp.where(fresh, accept, True),
        support=jnp.where(fresh, evaluation.support, True),
    )
    return new_state, info
