"""MAP back end for regression programs: Levenberg-Marquardt on the log posterior.

The program is a NumPyro model ``model(x, y, **model_kwargs)`` with latent sample sites
and one observed site whose distribution is Normal, StudentT or Poisson; its location
(rate) depends on the curve parameters :math:`\\theta` (every latent site but the noise
scale) and its scale, if any, is the scalar noise site (``sigma``) or a constant. The
prior of each latent site may depend on the data but not on other latent sites. Such a
program is :func:`gaussmix.models.peaks.peaks`.

The MAP minimizes the negative log posterior
:math:`F(\\theta, \\sigma) = -\\sum_m \\log p(y_m \\mid \\mu_m(\\theta), \\sigma) -
\\log p(\\theta) - \\log p(\\sigma)` in the natural (constrained) coordinates. Curve
parameters take Levenberg-Marquardt steps on :math:`\\sigma^2 F` at fixed :math:`\\sigma`,

.. math::

    (\\tilde H + \\lambda D^2)\\,\\delta = -\\tilde g, \\qquad
    \\tilde H = J^\\top \\tilde W J - \\sigma^2 \\nabla^2 \\log p(\\theta), \\qquad
    \\tilde g = \\sigma^2 \\nabla_\\theta F,

with :math:`J` the forward-mode Jacobian of :math:`\\mu`, :math:`\\tilde W = \\sigma^2 W`
the Fisher information of :math:`\\mu_m` in units of :math:`\\sigma^{-2}` (1 for the
Normal likelihood: Gauss-Newton; :math:`(\\nu+1)/(\\nu+3)` for StudentT; :math:`1/\\mu`
for Poisson, with :math:`\\sigma = 1`) and :math:`\\nabla^2 \\log p` the exact Hessian of
the log prior; after each accepted step :math:`\\sigma` takes Newton steps on
:math:`\\log\\sigma`. The damping :math:`\\lambda`, the scaling :math:`D` and the trust
radius follow MINPACK's ``lmder`` (Moré 1978) step for step, so that for a Normal
likelihood and flat priors (uniform boxes with the optimum inside) the iterates, and the
optimum reached from a given start, are those of ``scipy.optimize.curve_fit``. Trial
points outside a prior's support count as failed steps.

The Laplace covariance of :math:`\\theta` is the inverse of the Gauss-Newton (Fisher)
Hessian of :math:`F` at the MAP. For a Normal likelihood with a fitted noise scale the
noise variance in it is :math:`s^2 = \\mathrm{RSS}/(n - p)`, so that under flat priors it
equals ``curve_fit``'s ``pcov`` (``absolute_sigma=False``); with a fixed scale the scale is
used as known (``absolute_sigma=True``).

Convergence (MINPACK's tests, with tighter defaults): relative actual and predicted
decrease of :math:`\\sigma^2 F` at most ``tolerance``, or trust radius at most
``step_tolerance`` times the scaled parameter norm, or either at machine precision, or the
Newton decrement :math:`\\nabla F^\\top H^{-1} \\nabla F` below ``tolerance`` nats. A
spectrum that runs out of iterations, whose trial steps all turn non-finite, or whose
optimum has a singular covariance is flagged not converged. One whose starting point
already has a non-finite objective, gradient or curvature fails at its start: it comes
back with ``started`` False and NaN for everything that could not be computed (params,
covariance, objective, log-likelihood, rss), never zeros.

One ``jax.jit`` around a ``lax.while_loop``. Spectra are fitted in ``batch_size`` slots
(``vmap``): a slot whose spectrum has finished takes the next one, so a spectrum needing
many iterations holds up nothing. The loop holds only the Levenberg-Marquardt steps: each
spectrum's priors are read from the program before it, and its covariance and
log-likelihood computed after it. A second call with the same shapes and static arguments
does not recompile. With ``devices`` the spectra are split over several devices
(:func:`gaussmix.inference.shard.shard_batch`), each running its own loop.
"""

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import lax
from jax.typing import ArrayLike
from numpyro import handlers

__all__ = ["TOLERANCES", "MAPResult", "MAPState", "fit_map", "map_step"]

#: Default tolerances by dtype: relative decrease / Newton decrement, relative step.
TOLERANCES = {"float64": (1e-10, 1e-10), "float32": (1e-5, 1e-5)}
# MINPACK's constants: initial trust radius factor, inner iterations of lmpar.
_RADIUS_FACTOR = 100.0
_LMPAR_ITERATIONS = 10
# Newton steps on log(sigma) at each evaluated point.
_NOISE_STEPS = 2


class MAPState(NamedTuple):
    """State of one spectrum's Levenberg-Marquardt iteration.

    Attributes:
        params: (P,) curve parameters :math:`\\theta` (latent sites but the noise),
            raveled, natural coordinates.
        noise: noise scale :math:`\\sigma` (1 without a noise site).
        half_deviances: (M,) pointwise half deviance times the noise variance (half the
            squared residuals for a Normal likelihood), 0 where masked.
        log_prior: log prior of params (the noise prior excluded).
        objective: :math:`\\sigma^2(\\tfrac12\\sum \\mathrm{deviance} - \\log p(\\theta))`,
            half the RSS for a Normal likelihood under flat priors.
        gradient: (P,) :math:`\\tilde g`.
        curvature: (P, P) :math:`\\tilde H`.
        prior_hessian: (P, P) :math:`\\nabla^2 \\log p(\\theta)`.
        scaling: (P,) MINPACK's D.
        factor: (P, P) Cholesky factor of the scaled curvature
            :math:`D^{-1}\\tilde H D^{-1}` (NaN when singular).
        gauss_newton: (P,) scaled Gauss-Newton step :math:`Dp`.
        radius: trust radius :math:`\\Delta`.
        damping: Levenberg-Marquardt parameter :math:`\\lambda`.
        parameter_norm: :math:`\\|D\\theta\\|` at the last accepted point.
        decrement: Newton decrement (nats).
        rss: residual sum of squares at params.
        n_points: unmasked points.
        support: (n_sites,) whether each site's starting value lay in its prior support.
        started: the starting point was evaluated with a finite objective, gradient and
            curvature (False until then, and for good when it was not: a failed start).
        n_iter: trial steps (the starting point not counted).
        n_accepted: accepted steps.
        fresh: the starting point is still to be evaluated.
        converged: a convergence test passed.
        done: stopped (converged, out of iterations, or non-finite).
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
    factor: jax.Array
    gauss_newton: jax.Array
    radius: jax.Array
    damping: jax.Array
    parameter_norm: jax.Array
    decrement: jax.Array
    rss: jax.Array
    n_points: jax.Array
    support: jax.Array
    started: jax.Array
    n_iter: jax.Array
    n_accepted: jax.Array
    fresh: jax.Array
    converged: jax.Array
    done: jax.Array


class MAPResult(NamedTuple):
    """MAP fits; a leading (B,) axis on every array when y was (B, M).

    A spectrum whose fit failed at its start (a non-finite objective, gradient or
    curvature at the starting values) has ``started`` False and NaN for everything that
    could not be computed: params, covariance, objective, log-likelihood, rss and
    decrement. ``converged`` is False for it, and for any spectrum whose optimum has a
    non-finite objective, rss or covariance (a singular curvature).

    Attributes:
        params: site name -> value at the MAP (the noise site included).
        covariance: (P, P) Laplace covariance of the curve parameters.
        parameter_names: the P raveled curve-parameter names (``name`` or ``name[i]``).
        objective: negative log posterior F at the MAP (nats).
        log_likelihood: log-likelihood at the MAP.
        rss: :math:`\\sum (y - \\mu)^2` over unmasked points.
        n_points: number of unmasked points.
        decrement: Newton decrement at the MAP (nats).
        converged: convergence flag (and finite objective, rss and covariance).
        n_iter: trial steps used.
        initial_in_support: (n_sites,) whether each site's start lay in its prior support.
        started: whether the starting point had a finite objective, gradient and
            curvature (False: the fit failed at its start).
    """

    params: dict[str, jax.Array]
    covariance: jax.Array
    parameter_names: tuple[str, ...]
    objective: jax.Array
    log_likelihood: jax.Array
    rss: jax.Array
    n_points: jax.Array
    decrement: jax.Array
    converged: jax.Array
    n_iter: jax.Array
    initial_in_support: jax.Array
    started: jax.Array


# ---------------------------------------------------------------------------------------
# Observation families, in units of the noise variance: half deviance, score and Fisher
# information of the location, each multiplied by scale**2 (Poisson: scale 1).
# ---------------------------------------------------------------------------------------


class _Family(NamedTuple):
    name: str
    split_fn: Callable  # distribution -> (location, scale or None, extra)
    log_prob_fn: Callable  # (y, location, scale, extra) -> pointwise log density
    half_deviance_fn: Callable  # (y, location, scale, extra) -> scale**2 * deviance / 2
    score_fn: Callable  # (y, location, scale, extra) -> scale**2 * d log p / d location
    fisher_fn: Callable  # (location, scale, extra) -> scale**2 * Fisher information
    noise_loss_fn: Callable | None  # (y, location, mask, extra) -> (scale -> -log lik)


def _normal_noise_loss(y, location, mask, extra):
    n_points = jnp.sum(mask)
    residual_sum = jnp.sum(mask * (y - location) ** 2)
    return lambda scale: n_points * jnp.log(scale) + residual_sum / (2.0 * scale**2)


def _student_t_half_deviance(y, location, scale, df):
    return 0.5 * scale**2 * (df + 1.0) * jnp.log1p((y - location) ** 2 / (df * scale**2))


def _student_t_score(y, location, scale, df):
    residual = y - location
    return (df + 1.0) * residual * scale**2 / (df * scale**2 + residual**2)


def _student_t_noise_loss(y, location, mask, df):
    return lambda scale: -jnp.sum(mask * dist.StudentT(df, location, scale).log_prob(y))


def _poisson_half_deviance(y, rate, scale, extra):
    return jax.scipy.special.xlogy(y, y) - jax.scipy.special.xlogy(y, rate) - y + rate


_FAMILIES = {
    dist.Normal: _Family(
        "normal",
        lambda fn: (fn.loc, fn.scale, ()),
        lambda y, loc, scale, extra: dist.Normal(loc, scale).log_prob(y),
        lambda y, loc, scale, extra: 0.5 * (y - loc) ** 2,
        lambda y, loc, scale, extra: y - loc,
        lambda loc, scale, extra: jnp.ones_like(loc),
        _normal_noise_loss,
    ),
    dist.StudentT: _Family(
        "student_t",
        lambda fn: (fn.loc, fn.scale, fn.df),
        lambda y, loc, scale, df: dist.StudentT(df, loc, scale).log_prob(y),
        _student_t_half_deviance,
        _student_t_score,
        lambda loc, scale, df: jnp.broadcast_to((df + 1.0) / (df + 3.0), loc.shape),
        _student_t_noise_loss,
    ),
    dist.Poisson: _Family(
        "poisson",
        lambda fn: (fn.rate, None, ()),
        lambda y, rate, scale, extra: dist.Poisson(rate).log_prob(y),
        _poisson_half_deviance,
        lambda y, rate, scale, extra: y / rate - 1.0,
        lambda rate, scale, extra: 1.0 / rate,
        None,
    ),
}


def _base_distribution(fn):
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def _distribution_mask(fn):
    """The mask of numpyro's ``handlers.mask`` (a MaskedDistribution wrapper), or None."""
    mask = None
    while hasattr(fn, "base_dist"):
        if isinstance(fn, dist.MaskedDistribution) and not isinstance(fn._mask, bool):
            mask = fn._mask if mask is None else mask & fn._mask
        elif isinstance(fn, dist.MaskedDistribution) and fn._mask is False:
            mask = False
        fn = fn.base_dist
    return mask


def _family_of(fn) -> _Family:
    base = _base_distribution(fn)
    for kind, family in _FAMILIES.items():
        if type(base) is kind:
            return family
    raise ValueError(
        "The MAP back end fits Normal, StudentT or Poisson observations; the observed site "
        f"has a {type(base).__name__} distribution."
    )


# ---------------------------------------------------------------------------------------
# One spectrum
# ---------------------------------------------------------------------------------------


class _Sites(NamedTuple):
    """Latent sites in program order; ``noise`` indexes the noise site or is -1."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    noise: int

    @property
    def curve(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(self.names)) if i != self.noise)

    def unravel(self, theta: jax.Array, noise: jax.Array) -> dict[str, jax.Array]:
        values, start = {}, 0
        for index in self.curve:
            shape = self.shapes[index]
            size = int(np.prod(shape))
            values[self.names[index]] = theta[start : start + size].reshape(shape)
            start += size
        if self.noise >= 0:
            values[self.names[self.noise]] = noise
        return values


class _Evaluation(NamedTuple):
    location: jax.Array  # (M,)
    scale: Any  # (M,) or None (Poisson)
    extra: Any
    log_prior: jax.Array  # log prior of the curve parameters
    support: jax.Array  # (n_sites,) bool
    mask: jax.Array  # (M,) 0/1


class _Problem(NamedTuple):
    """One spectrum: the program, its data, the priors of its sites and its family.

    ``priors`` holds each latent site's prior distribution, read once from a trace of the
    program: the priors may depend on the data but not on other latent sites.
    """

    model: Callable
    sites: _Sites
    observed: str
    family: _Family
    x: jax.Array
    y: jax.Array
    model_kwargs: dict
    priors: dict | None = None

    def with_priors(self, theta, noise) -> "_Problem":
        trace = self.trace(theta, noise)
        return self._replace(priors={name: trace[name]["fn"] for name in self.sites.names})

    def trace(self, theta, noise):
        params = self.sites.unravel(theta, noise)
        return handlers.trace(handlers.substitute(self.model, data=params)).get_trace(
            self.x, self.y, **self.model_kwargs
        )

    def evaluate(self, theta, noise) -> _Evaluation:
        """Location, scale and mask of the observed site at (theta, noise), and the log
        prior of theta with the support check of every site."""
        evaluation = self.observe(theta, noise)
        log_prior, support = self.prior_terms(theta, noise)
        return evaluation._replace(log_prior=log_prior, support=support)

    def observe(self, theta, noise) -> _Evaluation:
        """The observed site only (prior fields left empty): cheap to differentiate."""
        observed = self.trace(theta, noise)[self.observed]
        location, scale, extra = self.family.split_fn(_base_distribution(observed["fn"]))
        location = jnp.broadcast_to(location, self.y.shape)
        if scale is not None:
            scale = jnp.broadcast_to(scale, self.y.shape)
        mask = _distribution_mask(observed["fn"])
        mask = jnp.ones_like(self.y) if mask is None else jnp.broadcast_to(mask, self.y.shape)
        empty = jnp.zeros((), location.dtype)
        support = jnp.ones((len(self.sites.names),), bool)
        return _Evaluation(location, scale, extra, empty, support, mask * 1.0)

    def prior_terms(self, theta, noise) -> tuple[jax.Array, jax.Array]:
        """Log prior of theta and (n_sites,) support checks (noise site included)."""
        values = self.sites.unravel(theta, noise)
        log_prior = jnp.zeros((), theta.dtype)
        support = []
        for index, name in enumerate(self.sites.names):
            prior = self.priors[name]
            support.append(jnp.all(prior.support(values[name])))
            if index != self.sites.noise:
                log_prior = log_prior + jnp.sum(prior.log_prob(values[name]))
        return log_prior, jnp.stack(support)

    def prior_derivatives(self, theta, noise) -> tuple[jax.Array, jax.Array]:
        """Gradient (P,) and Hessian (P, P) of the log prior of theta, site by site (the
        priors are independent, so the Hessian is block diagonal)."""
        values = self.sites.unravel(theta, noise)
        gradients, blocks = [], []
        for index in self.sites.curve:
            name = self.sites.names[index]
            prior = self.priors[name]
            value = jnp.ravel(values[name])
            shape = values[name].shape

            def log_prob(flat, prior=prior, shape=shape):
                return jnp.sum(prior.log_prob(flat.reshape(shape)))

            gradients.append(jax.grad(log_prob)(value))
            blocks.append(jax.hessian(log_prob)(value))
        return jnp.concatenate(gradients), jax.scipy.linalg.block_diag(*blocks)

    @property
    def has_noise(self) -> bool:
        return self.sites.noise >= 0

    def noise_log_prior(self, theta, noise) -> jax.Array:
        if not self.has_noise:
            return jnp.zeros((), theta.dtype)
        return jnp.sum(self.priors[self.sites.names[self.sites.noise]].log_prob(noise))

    def scale(self, evaluation: _Evaluation, noise):
        if self.has_noise:
            return jnp.broadcast_to(noise, self.y.shape)
        return evaluation.scale

    def weights(self, evaluation: _Evaluation, noise):
        """Mask times the factor turning scaled family quantities into units of unit()."""
        if self.has_noise or evaluation.scale is None:
            return evaluation.mask
        return evaluation.mask / evaluation.scale**2

    def unit(self, noise):
        """:math:`\\sigma^2` with a noise site, 1 without."""
        return noise**2 if self.has_noise else jnp.ones_like(noise)

    def half_deviances(self, evaluation: _Evaluation, noise) -> jax.Array:
        values = self.family.half_deviance_fn(
            self.y, evaluation.location, self.scale(evaluation, noise), evaluation.extra
        )
        return self.weights(evaluation, noise) * values

    def log_likelihood(self, evaluation: _Evaluation, noise) -> jax.Array:
        values = self.family.log_prob_fn(
            self.y, evaluation.location, self.scale(evaluation, noise), evaluation.extra
        )
        return jnp.sum(jnp.where(evaluation.mask > 0, values, 0.0))


def _jacobian(problem: _Problem, theta, noise) -> tuple[jax.Array, _Evaluation]:
    """(M, P) forward-mode Jacobian of the location, and the evaluation at theta."""

    def location(theta):
        evaluation = problem.observe(theta, noise)
        return evaluation.location, evaluation

    jacobian, evaluation = jax.jacfwd(location, has_aux=True)(theta)
    log_prior, support = problem.prior_terms(theta, noise)
    return jacobian, evaluation._replace(log_prior=log_prior, support=support)


def _update_noise(problem: _Problem, theta, noise, evaluation: _Evaluation, n_steps: int):
    """Newton steps on log(sigma) at fixed theta (no-op without a noise site).

    A Normal likelihood starts from :math:`\\sqrt{\\mathrm{RSS}/n}`, its maximum; the steps
    then add the noise prior.
    """
    if not problem.has_noise:
        return noise
    loss = problem.family.noise_loss_fn(
        problem.y, evaluation.location, evaluation.mask, evaluation.extra
    )

    def objective(log_noise):
        noise = jnp.exp(log_noise)
        return loss(noise) - problem.noise_log_prior(theta, noise)

    log_noise = jnp.log(noise)
    if problem.family.name == "normal":
        mask = evaluation.mask
        variance = jnp.sum(mask * (problem.y - evaluation.location) ** 2) / jnp.sum(mask)
        log_noise = jnp.where(variance > 0, 0.5 * jnp.log(variance), log_noise)
    gradient_fn = jax.grad(objective)
    second_fn = jax.grad(gradient_fn)
    for _ in range(n_steps):
        gradient, second = gradient_fn(log_noise), second_fn(log_noise)
        newton = jnp.where(second > 0, -gradient / second, -jnp.sign(gradient))
        new = log_noise + jnp.clip(newton, -1.0, 1.0)
        log_noise = jnp.where(objective(new) <= objective(log_noise), new, log_noise)
    return jnp.exp(log_noise)


class _Local(NamedTuple):
    """Everything at one evaluated point, in units of unit() (theta only): objective,
    gradient, curvature, MINPACK's scaling D, the Cholesky factor of the scaled curvature
    :math:`D^{-1}\\tilde H D^{-1}` and the scaled Gauss-Newton step :math:`Dp`."""

    noise: jax.Array
    half_deviances: jax.Array
    log_prior: jax.Array
    objective: jax.Array
    gradient: jax.Array
    curvature: jax.Array
    prior_hessian: jax.Array
    scaling: jax.Array
    factor: jax.Array
    gauss_newton: jax.Array
    decrement: jax.Array
    rss: jax.Array
    n_points: jax.Array


def _local(problem: _Problem, theta, noise, jacobian, evaluation: _Evaluation, scaling) -> _Local:
    weights = problem.weights(evaluation, noise)
    scale = problem.scale(evaluation, noise)
    location, extra = evaluation.location, evaluation.extra
    score = weights * problem.family.score_fn(problem.y, location, scale, extra)
    fisher = weights * problem.family.fisher_fn(location, scale, extra)
    unit = problem.unit(noise)
    prior_gradient, prior_hessian = problem.prior_derivatives(theta, noise)
    gradient = -(jacobian.T @ score) - unit * prior_gradient
    curvature = jacobian.T @ (fisher[:, None] * jacobian) - unit * prior_hessian
    half_deviances = problem.half_deviances(evaluation, noise)
    objective = jnp.sum(half_deviances) - unit * evaluation.log_prior
    scaling = jnp.maximum(scaling, jnp.sqrt(jnp.maximum(jnp.diag(curvature), 0.0)))
    scaling = jnp.where(scaling > 0, scaling, 1.0)
    factor = _cholesky(curvature / jnp.outer(scaling, scaling))
    scaled_gradient = gradient / scaling
    gauss_newton = -_cholesky_solve(factor, scaled_gradient)
    decrement = -jnp.dot(scaled_gradient, gauss_newton) / unit
    decrement = jnp.where(jnp.isfinite(decrement) & (decrement >= 0), decrement, jnp.inf)
    residuals = problem.y - location
    mask = evaluation.mask
    return _Local(
        noise=noise,
        half_deviances=half_deviances,
        log_prior=evaluation.log_prior,
        objective=objective,
        gradient=gradient,
        curvature=curvature,
        prior_hessian=prior_hessian,
        scaling=scaling,
        factor=factor,
        gauss_newton=gauss_newton,
        decrement=decrement,
        rss=jnp.dot(mask * residuals, residuals),
        n_points=jnp.sum(mask),
    )


def _cholesky(matrix):
    """Lower Cholesky factor (LAPACK); NaN when the matrix is not positive definite."""
    return jnp.linalg.cholesky(matrix)


def _solve_lower(factor, vector):
    """Solve :math:`L y = b` for b of shape (n,) or (n, k)."""
    return jax.scipy.linalg.solve_triangular(factor, vector, lower=True)


def _solve_upper(factor, vector):
    """Solve :math:`L^\\top x = b`."""
    return jax.scipy.linalg.solve_triangular(factor, vector, lower=True, trans="T")


def _cholesky_solve(factor, vector):
    return _solve_upper(factor, _solve_lower(factor, vector))


def _trust_region_step(factor, gauss_newton, gradient, scaling, radius, damping, curvature):
    """MINPACK's lmpar in scaled coordinates :math:`q = Dp`, :math:`\\hat H = D^{-1}
    \\tilde H D^{-1}`, :math:`\\hat g = D^{-1}\\tilde g`.

    Returns the Gauss-Newton step when :math:`\\|q\\| \\le 1.1\\Delta`, else
    :math:`q(\\lambda) = -(\\hat H + \\lambda I)^{-1}\\hat g` with
    :math:`|\\,\\|q\\| - \\Delta| \\le 0.1\\Delta` from at most 10 of MINPACK's
    safeguarded Newton iterations on the secular equation; and the :math:`\\lambda` used.
    ``factor`` is the Cholesky factor of :math:`\\hat H` and ``gauss_newton`` the scaled
    Gauss-Newton step (NaN when :math:`\\hat H` is singular); ``curvature`` is
    :math:`\\tilde H`, whose damped form still gives a step when :math:`\\hat H` is
    singular (a column of zeros in the Jacobian: a peak with no data under it).
    """
    tiny = jnp.finfo(gradient.dtype).tiny
    scaled_gradient = gradient / scaling
    full_rank = jnp.all(jnp.isfinite(gauss_newton))
    norm = jnp.linalg.norm(gauss_newton)
    excess = jnp.where(full_rank, norm - radius, jnp.inf)
    use_gauss_newton = excess <= 0.1 * radius
    # MINPACK's ||L^{-1} q / ||q|| ||^2: minus the slope of ||q(lambda)|| times ||q||.
    slope = jnp.sum(_solve_lower(factor, gauss_newton / norm) ** 2)
    lower = jnp.where(full_rank, excess / radius / slope, 0.0)
    lower = jnp.where(jnp.isfinite(lower), lower, 0.0)
    gradient_norm = jnp.linalg.norm(scaled_gradient)
    upper = gradient_norm / radius
    upper = jnp.where(upper == 0, tiny / jnp.minimum(radius, 0.1), upper)
    start = jnp.minimum(jnp.maximum(damping, lower), upper)
    start = jnp.where(
        (start == 0) & full_rank, gradient_norm / jnp.where(norm > 0, norm, 1.0), start
    )
    identity = jnp.eye(gradient.shape[0], dtype=gradient.dtype)
    curvature = jnp.where(full_rank, factor @ factor.T, curvature / jnp.outer(scaling, scaling))

    class Carry(NamedTuple):
        iteration: jax.Array
        damping: jax.Array
        lower: jax.Array
        upper: jax.Array
        excess: jax.Array
        step: jax.Array
        done: jax.Array

    def body(carry: Carry) -> Carry:
        iteration = carry.iteration + 1
        damping = jnp.where(
            carry.damping == 0, jnp.maximum(tiny, 0.001 * carry.upper), carry.damping
        )
        damped_factor = _cholesky(curvature + damping * identity)
        step = -_cholesky_solve(damped_factor, scaled_gradient)
        norm = jnp.linalg.norm(step)
        excess = norm - radius
        done = (
            (jnp.abs(excess) <= 0.1 * radius)
            | ((carry.lower == 0) & (excess <= carry.excess) & (carry.excess < 0))
            | (iteration == _LMPAR_ITERATIONS)
            | ~jnp.all(jnp.isfinite(step))
        )
        slope = jnp.sum(_solve_lower(damped_factor, step / norm) ** 2)
        correction = excess / radius / slope
        lower = jnp.where(excess > 0, jnp.maximum(carry.lower, damping), carry.lower)
        upper = jnp.where(excess < 0, jnp.minimum(carry.upper, damping), carry.upper)
        new_damping = jnp.where(done, damping, jnp.maximum(lower, damping + correction))
        return Carry(iteration, new_damping, lower, upper, excess, step, done)

    initial = Carry(
        jnp.asarray(0, jnp.int32),
        start,
        lower,
        upper,
        excess,
        jnp.where(full_rank, gauss_newton, 0.0),
        use_gauss_newton,
    )
    final = lax.while_loop(lambda carry: ~carry.done, body, initial)
    return final.step / scaling, jnp.where(use_gauss_newton, 0.0, final.damping)


class _Settings(NamedTuple):
    tolerance: jax.Array
    step_tolerance: jax.Array
    max_iterations: jax.Array


def _empty_state(theta, noise, n_points: int, n_sites: int) -> MAPState:
    """A state to be started at (theta, noise): ``fresh``, nothing evaluated yet."""
    size = theta.shape[0]
    zero = jnp.zeros((), theta.dtype)
    matrix = jnp.zeros((size, size), theta.dtype)
    return MAPState(
        params=theta,
        noise=noise,
        half_deviances=jnp.zeros((n_points,), theta.dtype),
        log_prior=zero,
        objective=zero,
        gradient=jnp.zeros_like(theta),
        curvature=matrix,
        prior_hessian=matrix,
        scaling=jnp.zeros_like(theta),
        factor=matrix,
        gauss_newton=jnp.zeros_like(theta),
        radius=zero,
        damping=zero,
        parameter_norm=zero,
        decrement=jnp.asarray(jnp.inf, theta.dtype),
        rss=zero,
        n_points=zero,
        support=jnp.ones((n_sites,), bool),
        started=jnp.asarray(False),
        n_iter=jnp.asarray(0, jnp.int32),
        n_accepted=jnp.asarray(0, jnp.int32),
        fresh=jnp.asarray(True),
        converged=jnp.asarray(False),
        done=jnp.asarray(False),
    )


def map_step(problem: _Problem, state: MAPState, settings: _Settings) -> MAPState:
    """One step of MINPACK's lmder (pure): propose, evaluate, accept or reject.

    A ``fresh`` state evaluates its starting point instead and sets up MINPACK's scaling
    and trust radius there.
    """
    epsilon = jnp.finfo(state.params.dtype).eps
    fresh = state.fresh
    scaling = state.scaling
    step, damping = _trust_region_step(
        state.factor,
        state.gauss_newton,
        state.gradient,
        scaling,
        state.radius,
        state.damping,
        state.curvature,
    )
    step = jnp.where(fresh, 0.0, step)
    damping = jnp.where(fresh, 0.0, damping)
    step_norm = jnp.linalg.norm(scaling * step)
    radius = jnp.where(state.n_accepted == 0, jnp.minimum(state.radius, step_norm), state.radius)
    trial = state.params + step
    jacobian, evaluation = _jacobian(problem, trial, state.noise)
    unit = problem.unit(state.noise)
    half_deviances = problem.half_deviances(evaluation, state.noise)
    # Point-by-point differences keep the decrease accurate in float32.
    decrease = jnp.sum(state.half_deviances - half_deviances) + unit * (
        evaluation.log_prior - state.log_prior
    )
    reference = jnp.where(state.objective > 0, state.objective, unit * 0.5 * problem.y.shape[0])
    valid = jnp.all(evaluation.support) & jnp.isfinite(decrease) & jnp.all(jnp.isfinite(step))
    small_enough = valid & (state.objective - decrease < 100.0 * reference)
    actual = jnp.where(small_enough, decrease / reference, -1.0)
    quadratic = jnp.dot(step, state.curvature @ step)
    damped = damping * step_norm**2
    predicted = (quadratic + 2.0 * damped) / (2.0 * reference)
    directional = -(quadratic + damped) / (2.0 * reference)
    ratio = jnp.where(predicted != 0, actual / predicted, 0.0)

    # MINPACK's update of the trust radius and of the damping.
    shrink = jnp.where(actual >= 0, 0.5, 0.5 * directional / (directional + 0.5 * actual))
    shrink = jnp.where(~small_enough | (shrink < 0.1) | ~jnp.isfinite(shrink), 0.1, shrink)
    poor = ratio <= 0.25
    good = ~poor & ((damping == 0) | (ratio >= 0.75))
    new_radius = jnp.where(
        poor,
        shrink * jnp.minimum(radius, step_norm / 0.1),
        jnp.where(good, step_norm / 0.5, radius),
    )
    new_damping = jnp.where(poor, damping / shrink, jnp.where(good, 0.5 * damping, damping))

    noise = _update_noise(problem, trial, state.noise, evaluation, _NOISE_STEPS)
    local = _local(problem, trial, noise, jacobian, evaluation, scaling)
    finite = (
        jnp.isfinite(local.objective)
        & jnp.all(jnp.isfinite(local.gradient))
        & jnp.all(jnp.isfinite(local.curvature))
    )
    accept = valid & finite & (fresh | (ratio >= 1e-4))

    # A fresh state: MINPACK's initial scaling, radius and parameter norm.
    start_norm = jnp.linalg.norm(local.scaling * trial)
    start_radius = jnp.where(start_norm > 0, _RADIUS_FACTOR * start_norm, _RADIUS_FACTOR)
    new_radius = jnp.where(fresh, start_radius, new_radius)
    new_damping = jnp.where(fresh, 0.0, new_damping)

    def pick(new, old):
        return jnp.where(accept, new, old)

    parameter_norm = jnp.where(
        fresh, start_norm, pick(jnp.linalg.norm(scaling * trial), state.parameter_norm)
    )
    tolerance, step_tolerance = settings.tolerance, settings.step_tolerance
    relative_tests = ~fresh & (0.5 * ratio <= 1) & (predicted >= 0)
    converged = (
        (relative_tests & (jnp.abs(actual) <= tolerance) & (predicted <= tolerance))
        | (~fresh & (new_radius <= step_tolerance * parameter_norm))
        | (relative_tests & (jnp.abs(actual) <= epsilon) & (predicted <= epsilon))
        | (~fresh & (new_radius <= epsilon * parameter_norm))
        | (accept & (local.decrement <= tolerance))
    )
    n_iter = state.n_iter + (~fresh).astype(state.n_iter.dtype)
    failed = (fresh & ~accept) | ~jnp.isfinite(new_radius)
    return MAPState(
        params=pick(trial, state.params),
        noise=pick(local.noise, state.noise),
        half_deviances=pick(local.half_deviances, state.half_deviances),
        log_prior=pick(local.log_prior, state.log_prior),
        objective=pick(local.objective, state.objective),
        gradient=pick(local.gradient, state.gradient),
        curvature=pick(local.curvature, state.curvature),
        prior_hessian=pick(local.prior_hessian, state.prior_hessian),
        scaling=pick(local.scaling, scaling),
        factor=pick(local.factor, state.factor),
        gauss_newton=pick(local.gauss_newton, state.gauss_newton),
        radius=new_radius,
        damping=new_damping,
        parameter_norm=parameter_norm,
        decrement=pick(local.decrement, state.decrement),
        rss=pick(local.rss, state.rss),
        n_points=pick(local.n_points, state.n_points),
        support=jnp.where(fresh, evaluation.support, state.support),
        started=jnp.where(fresh, accept, state.started),
        n_iter=n_iter,
        n_accepted=state.n_accepted + (accept & ~fresh).astype(state.n_accepted.dtype),
        fresh=jnp.zeros_like(fresh),
        converged=converged & ~failed,
        done=converged | failed | (n_iter >= settings.max_iterations),
    )


def _inverse(matrix):
    """Inverse of a symmetric positive definite matrix (Jacobi-scaled Cholesky); NaN when
    it is not positive definite."""
    diagonal = jnp.diag(matrix)
    scaling = jnp.where(diagonal > 0, jnp.sqrt(jnp.abs(diagonal)), jnp.nan)
    factor = _cholesky(matrix / jnp.outer(scaling, scaling))
    identity = jnp.eye(matrix.shape[0], dtype=matrix.dtype)
    return _cholesky_solve(factor, identity) / jnp.outer(scaling, scaling)


class _Outputs(NamedTuple):
    theta: jax.Array
    noise: jax.Array
    covariance: jax.Array
    objective: jax.Array
    log_likelihood: jax.Array
    rss: jax.Array
    n_points: jax.Array
    decrement: jax.Array
    converged: jax.Array
    n_iter: jax.Array
    support: jax.Array
    started: jax.Array


def _finish(problem: _Problem, state: MAPState) -> _Outputs:
    """Results of a finished state: the Laplace covariance from its curvature, and the
    log-likelihood at the MAP (evaluated here once rather than at every step).

    A state that failed at its start gives NaN for all it could not compute; a state whose
    optimum has a non-finite objective, rss or covariance is not converged.
    """
    unit = problem.unit(state.noise)
    if problem.family.name == "normal" and problem.has_noise:
        # curve_fit's pcov: J^T J over the residual variance s^2 = RSS / (n - p), written
        # s^2 (J^T J - s^2 prior Hessian)^{-1} so that a perfect fit (s^2 = 0) gives zeros.
        gram = state.curvature + unit * state.prior_hessian
        dof = jnp.maximum(state.n_points - state.params.shape[0], 1.0)
        variance = state.rss / dof
        covariance = variance * _inverse(gram - variance * state.prior_hessian)
    else:
        covariance = _inverse(state.curvature / unit)
    evaluation = problem.observe(state.params, state.noise)
    log_likelihood = problem.log_likelihood(evaluation, state.noise)
    objective = (
        -log_likelihood - state.log_prior - problem.noise_log_prior(state.params, state.noise)
    )
    started = state.started

    def known(value):
        return jnp.where(started, value, jnp.nan)

    objective, log_likelihood, rss = known(objective), known(log_likelihood), known(state.rss)
    covariance = known(covariance)
    theta, noise = known(state.params), known(state.noise)
    finite = (
        jnp.isfinite(objective)
        & jnp.isfinite(rss)
        & jnp.all(jnp.isfinite(theta))
        & jnp.all(jnp.isfinite(covariance))
    )
    return _Outputs(
        theta,
        noise,
        covariance,
        objective,
        log_likelihood,
        rss,
        jnp.sum(evaluation.mask),
        known(state.decrement),
        state.converged & started & finite,
        state.n_iter,
        state.support,
        started,
    )


#: Fields of a finished MAPState that _finish reads (kept for every spectrum).
_FINAL_FIELDS = (
    "params", "noise", "curvature", "prior_hessian", "log_prior", "rss", "n_points",
    "decrement", "converged", "n_iter", "support", "started",
)  # fmt: skip


def _fit_batch(
    model, sites, observed, family, n_slots,
    x, y, mask, active, theta, noise, model_kwargs, tolerance, step_tolerance, max_iterations,
):  # fmt: skip
    """Fit the ``active`` ones of B spectra through ``n_slots`` slots iterated together;
    finished slots refill. The other spectra come back as unfitted zeros.

    Per spectrum and outside the loop: the priors (read from the program once, before)
    and the covariance and log-likelihood (:func:`_finish`, once, after); inside it only
    Levenberg-Marquardt steps, and the gathers and scatters that move spectra in and out
    of the slots.
    """
    settings = _Settings(tolerance, step_tolerance, max_iterations)
    n_spectra, n_points = y.shape
    n_sites = len(sites.names)

    def problem_for(y_one, mask_one, priors=None):
        kwargs = dict(model_kwargs)
        if mask_one is not None:
            kwargs["mask"] = mask_one
        return _Problem(model, sites, observed, family, x, y_one, kwargs, priors)

    def priors_of(theta_one, noise_one, y_one, mask_one):
        return problem_for(y_one, mask_one).with_priors(theta_one, noise_one).priors

    priors = jax.vmap(priors_of)(theta, noise, y, mask)
    # The active spectra first, in their order; slots visit order[:n_active].
    order = jnp.argsort(~active, stable=True).astype(jnp.int32)
    n_active = jnp.sum(active, dtype=jnp.int32)

    def start(index):
        pick = jax.tree.map(lambda leaf: leaf[index], (y, mask, priors))
        return (_empty_state(theta[index], noise[index], n_points, n_sites), *pick)

    class Slots(NamedTuple):
        index: jax.Array  # (S,) spectrum index, -1 when empty
        state: MAPState
        y: jax.Array
        mask: Any
        priors: Any

    class Carry(NamedTuple):
        slots: Slots
        next_index: jax.Array
        finals: dict  # field of _FINAL_FIELDS -> (B, ...) finished states

    def refill(carry: Carry) -> Carry:
        slots = carry.slots
        empty = slots.index < 0
        rank = jnp.cumsum(empty, dtype=jnp.int32) - 1
        candidate = carry.next_index + rank
        take = empty & (candidate < n_active)
        candidate = order[jnp.clip(candidate, 0, n_spectra - 1)]
        fresh = jax.vmap(start)(candidate)
        new_slots = Slots(jnp.where(take, candidate, slots.index), *fresh)
        merged = jax.tree.map(
            lambda new, old: jnp.where(take.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
            new_slots,
            slots,
        )
        n_taken = jnp.sum(take, dtype=jnp.int32)
        return carry._replace(slots=merged, next_index=carry.next_index + n_taken)

    def step(carry: Carry) -> Carry:
        slots = carry.slots

        def one(state, y_one, mask_one, priors_one):
            return map_step(problem_for(y_one, mask_one, priors_one), state, settings)

        state = jax.vmap(one)(slots.state, slots.y, slots.mask, slots.priors)
        return carry._replace(slots=slots._replace(state=state))

    def harvest(carry: Carry) -> Carry:
        slots = carry.slots
        finished = (slots.index >= 0) & slots.state.done
        target = jnp.where(finished, slots.index, jnp.int32(n_spectra))
        finals = {
            name: stored.at[target].set(getattr(slots.state, name), mode="drop")
            for name, stored in carry.finals.items()
        }
        index = jnp.where(finished, jnp.int32(-1), slots.index)
        return carry._replace(slots=slots._replace(index=index), finals=finals)

    def body(carry: Carry) -> Carry:
        carry = lax.cond(jnp.any(carry.slots.index < 0), refill, lambda carry: carry, carry)
        carry = step(carry)
        return lax.cond(
            jnp.any((carry.slots.index >= 0) & carry.slots.state.done),
            harvest,
            lambda carry: carry,
            carry,
        )

    def running(carry: Carry) -> jax.Array:
        return (carry.next_index < n_active) | jnp.any(carry.slots.index >= 0)

    n_slots = min(n_slots, n_spectra)
    initial_slots = jax.vmap(start)(jnp.zeros((n_slots,), jnp.int32))
    slots = Slots(jnp.full((n_slots,), -1, jnp.int32), *initial_slots)
    finals = {
        name: jnp.zeros((n_spectra, *leaf.shape[1:]), leaf.dtype)
        for name, leaf in slots.state._asdict().items()
        if name in _FINAL_FIELDS
    }
    carry = Carry(slots, jnp.asarray(0, jnp.int32), finals)
    finals = lax.while_loop(running, body, carry).finals
    template = _empty_state(theta[0], noise[0], n_points, n_sites)
    states = jax.vmap(lambda fields: template._replace(**fields))(finals)

    def finish(state, y_one, mask_one, priors_one):
        return _finish(problem_for(y_one, mask_one, priors_one), state)

    return jax.vmap(finish)(states, y, mask, priors)


_fit_batch_jit = jax.jit(
    _fit_batch, static_argnames=("model", "sites", "observed", "family", "n_slots")
)

#: Compiled multi-device fits by (static arguments, mask given, devices).
_SHARDED_FITS: dict[tuple, Callable] = {}


def _fit_batch_sharded(devices, model, sites, observed, family, n_slots, x, y, mask, *rest):
    """:func:`_fit_batch` with the spectra split over ``devices``
    (:func:`gaussmix.inference.shard.shard_batch`): each device runs its own slots and
    loop over its share, so none waits for another's slowest spectrum."""
    from gaussmix.inference.shard import BATCH_AXIS, device_mesh, shard_batch

    mesh = device_mesh(devices, axis_name=BATCH_AXIS)
    key = (model, sites, observed, family, n_slots, mask is None, tuple(mesh.devices.flat))
    if key not in _SHARDED_FITS:
        batch = functools.partial(_fit_batch, model, sites, observed, family, n_slots)
        in_axes = (None, 0, None if mask is None else 0, 0, 0, 0, None, None, None, None)
        _SHARDED_FITS[key] = shard_batch(batch, devices=mesh, in_axes=in_axes)
    return _SHARDED_FITS[key](x, y, mask, *rest)


def _probe(model, x, y, init, model_kwargs):
    """Latent sites (names, shapes), the observed site and its family, by abstract tracing.

    x, y and init are traced; ``model_kwargs`` stay concrete, so that the program's own
    checks of its options (e.g. the supports of priors and fixed values in
    :func:`gaussmix.models.peaks.peaks`) see their values and refuse bad ones here, before
    anything is compiled.
    """
    found = {}

    def run(x, y, init, model_kwargs):
        with handlers.seed(rng_seed=0):
            trace = handlers.trace(handlers.substitute(model, data=init)).get_trace(
                x, y, **model_kwargs
            )
        found["latent"] = [
            (name, tuple(site["value"].shape))
            for name, site in trace.items()
            if site["type"] == "sample" and not site["is_observed"]
        ]
        found["observed"] = [
            (name, site["fn"])
            for name, site in trace.items()
            if site["type"] == "sample" and site["is_observed"]
        ]
        return jnp.zeros(())

    jax.eval_shape(lambda x, y, init: run(x, y, init, model_kwargs), x, y, init)
    if len(found["observed"]) != 1:
        raise ValueError(
            "The MAP back end needs exactly one observed site; the program has "
            f"{[name for name, _ in found['observed']]}."
        )
    observed, fn = found["observed"][0]
    return found["latent"], observed, _family_of(fn)


def fit_map(
    model: Callable,
    x: ArrayLike,
    y: ArrayLike,
    init: Mapping[str, ArrayLike],
    *,
    mask: ArrayLike | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    noise_site: str | None = "sigma",
    max_iterations: int = 200,
    tolerance: float | None = None,
    step_tolerance: float | None = None,
    batch_size: int = 128,
    devices: int | Sequence[jax.Device] | Any | None = None,
    active: ArrayLike | None = None,
) -> MAPResult:
    """MAP of a regression program, one spectrum or a batch, by Levenberg-Marquardt.

    Args:
        model: NumPyro program called as ``model(x, y, **model_kwargs)`` (and with
            ``mask=...`` when a mask is given). A static argument of the compiled fit:
            pass the same function object to reuse the compilation.
        x: (M,) abscissae shared by all spectra.
        y: (M,) one spectrum or (B, M) a batch.
        init: starting value of every latent site (natural coordinates): of the site's
            shape, or with a leading (B,) axis. The noise site of a Normal likelihood
            restarts at its maximum, :math:`\\sqrt{\\mathrm{RSS}/n}` of the starting curve.
        mask: (M,) or (B, M) booleans, False drops a point (its y may be NaN).
        model_kwargs: further keyword arguments of the program, a pytree of arrays
            (distributions included), traced rather than static.
        noise_site: the scalar site that is the observed distribution's scale; None or a
            name the program lacks when there is none (a Poisson likelihood, a fixed scale).
        max_iterations: trial steps per spectrum.
        tolerance: relative decrease (and Newton decrement, nats) counted as converged;
            default 1e-10 in float64, 1e-5 in float32.
        step_tolerance: relative trust radius counted as converged; same defaults.
        batch_size: spectra iterated together (vmap) in the slots of each device.
        devices: None (one device, the default one), or the devices the spectra are split
            over: an int n (the first n local devices), a sequence of devices or a
            one-axis ``jax.sharding.Mesh``. Each device fits its share of the batch with
            its own ``batch_size`` slots; the results are those of one device (the
            arithmetic per spectrum is the same) and come back split over the devices.
            On CPU, create devices before JAX starts:
            ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` uses two cores.
        active: (B,) booleans: fit only these spectra of a batch, through the same
            compiled fit as all of them; the others come back NaN (``converged`` False,
            ``n_iter`` 0). A refit of a few spectra this way compiles nothing new.

    Returns:
        :class:`MAPResult`.

    Raises:
        ValueError: x and y of mismatched shapes, init missing or naming unknown sites
            or lying outside a prior's support, a non-scalar noise site, a program
            without exactly one Normal, StudentT or Poisson observed site, or more
            devices than exist.

    Example:
        >>> import numpy as np, numpyro, numpyro.distributions as dist
        >>> def line(x, y):
        ...     slope = numpyro.sample("slope", dist.Normal(0.0, 10.0))
        ...     numpyro.sample("y", dist.Normal(slope * x, 1.0), obs=y)
        >>> x = np.arange(5.0)
        >>> result = fit_map(line, x, 2.0 * x, {"slope": 1.0})
        >>> round(float(result.params["slope"]), 3), bool(result.converged)  # 60 / 30.01
        (1.999, True)
    """
    dtype = jnp.result_type(float)
    x = jnp.asarray(x, dtype)
    y = jnp.asarray(y, dtype)
    if x.ndim != 1 or y.ndim not in (1, 2) or y.shape[-1] != x.shape[0]:
        raise ValueError(
            f"x must be (M,) and y (M,) or (B, M) with the same M; got {x.shape} and {y.shape}."
        )
    batched = y.ndim == 2
    y = y if batched else y[None]
    n_spectra = y.shape[0]
    if mask is not None:
        mask = jnp.broadcast_to(jnp.asarray(mask, bool), y.shape)
        y = jnp.where(mask, y, 0.0)  # masked points may hold NaN
    model_kwargs = dict(model_kwargs or {})
    if active is None:
        active = np.ones(n_spectra, bool)
    else:
        active = np.asarray(active)
        if active.dtype != bool or active.size != n_spectra or (batched and active.ndim != 1):
            raise ValueError(
                f"active must hold one boolean per spectrum, shape ({n_spectra},); got "
                f"{active.dtype} of shape {active.shape}."
            )
        active = active.reshape(n_spectra)

    def first(value):
        value = jnp.asarray(value, dtype)
        return value[0] if batched and value.ndim > 0 and value.shape[0] == n_spectra else value

    probe_kwargs = dict(model_kwargs)
    if mask is not None:
        probe_kwargs["mask"] = mask[0]
    first_init = {name: first(value) for name, value in init.items()}
    latent, observed, family = _probe(model, x, y[0], first_init, probe_kwargs)
    names = tuple(name for name, _ in latent)
    missing = [name for name in names if name not in init]
    unknown = [name for name in init if name not in names]
    if missing or unknown:
        raise ValueError(
            f"init must give every latent site: missing {missing}, unknown {unknown}; "
            f"sites: {list(names)}."
        )
    noise = names.index(noise_site) if noise_site in names else -1
    if noise >= 0 and latent[noise][1] != ():
        raise ValueError(f"The noise site {noise_site!r} must be a scalar.")
    sites = _Sites(names, tuple(shape for _, shape in latent), noise)
    values = {}
    for name, shape in latent:
        value = jnp.asarray(init[name], dtype)
        if value.shape == shape:
            value = jnp.broadcast_to(value, (n_spectra, *shape))
        elif value.shape != (n_spectra, *shape):
            raise ValueError(
                f"init[{name!r}] has shape {value.shape}; expected {shape} or "
                f"{(n_spectra, *shape)}."
            )
        values[name] = value.reshape(n_spectra, -1)
    theta = jnp.concatenate([values[names[i]] for i in sites.curve], axis=1)
    noise_start = values[noise_site][:, 0] if noise >= 0 else jnp.ones(n_spectra, dtype)
    key = "float64" if dtype == jnp.float64 else "float32"
    default_tolerance, default_step = TOLERANCES[key]
    fit_batch = (
        _fit_batch_jit if devices is None else functools.partial(_fit_batch_sharded, devices)
    )
    outputs = fit_batch(
        model,
        sites,
        observed,
        family,
        int(batch_size),
        x,
        y,
        mask,
        active,
        theta,
        noise_start,
        model_kwargs,
        jnp.asarray(default_tolerance if tolerance is None else tolerance, dtype),
        jnp.asarray(default_step if step_tolerance is None else step_tolerance, dtype),
        jnp.asarray(max_iterations, jnp.int32),
    )
    if not active.all():
        skipped = jnp.asarray(~active)

        def blank(value):
            if not jnp.issubdtype(value.dtype, jnp.floating):
                return value  # converged False, n_iter 0: as the loop left them
            return jnp.where(skipped.reshape((-1,) + (1,) * (value.ndim - 1)), jnp.nan, value)

        outputs = jax.tree.map(blank, outputs._replace(support=outputs.support | skipped[:, None]))
    theta, noise_value, covariance, *rest, support, started = outputs
    if not bool(jnp.all(support)):
        spectrum, site = (int(i) for i in np.argwhere(~np.asarray(support))[0])
        name = names[site]
        start = np.asarray(init[name])
        shown = start if start.ndim == 0 or not batched else start[spectrum]
        raise ValueError(
            f"init[{name!r}] = {shown} (spectrum {spectrum}) lies outside the support of its "
            "prior; start inside it or widen the prior."
        )
    parameter_names = []
    for index in sites.curve:
        name, shape = names[index], sites.shapes[index]
        if shape == ():
            parameter_names.append(name)
        else:
            parameter_names.extend(f"{name}[{i}]" for i in range(int(np.prod(shape))))
    params = jax.vmap(sites.unravel)(theta, noise_value)
    arrays = (covariance, *rest, support, started)
    if not batched:
        params = {name: value[0] for name, value in params.items()}
        arrays = tuple(value[0] for value in arrays)
    covariance, *rest = arrays
    return MAPResult(params, covariance, tuple(parameter_names), *rest)
