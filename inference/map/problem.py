"""One spectrum as the MAP back end sees it: sites, priors, data and family.

:class:`MAPProblem` reads a NumPyro regression program ``model(x, y, **model_kwargs)``:
the location (and scale, mask) of its observed site at given curve parameters
:math:`\\theta` and noise :math:`\\sigma`, the log prior of :math:`\\theta` with its
derivatives, and the half deviances in units of :math:`\\sigma^2` that the
Levenberg-Marquardt step (:mod:`gaussmix.inference.map.levenberg_marquardt`) minimizes.
It reads them from a trace of the program, or from the closed forms the program registered
(:mod:`gaussmix.inference.map.closed_form`): then without NumPyro.
"""

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gaussmix.inference.map.closed_form import closed_form_of, location_jacobian_of
from gaussmix.inference.map.families import ObservationFamily, base_distribution, distribution_mask
from gaussmix.inference.map.trees import canonical, plain
from gaussmix.models.peak_priors import HalfNormalPrior

__all__ = [
    "Evaluation",
    "MAPProblem",
    "PriorTerms",
    "Sites",
    "batch_problems",
    "half_normal_scale",
    "jacobian",
    "newton_on_log_noise",
    "normal_noise_map",
    "residual_log_noise",
    "row_sums",
    "site_derivatives",
    "update_noise",
    "vmap_unless_one",
]


class Sites(NamedTuple):
    """The latent sites of a program, in program order.

    Attributes:
        names: site names.
        shapes: the shape of each site.
        noise: index of the noise site (the observed distribution's scalar scale), or -1.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    noise: int

    @property
    def curve(self) -> tuple[int, ...]:
        """Indices of the curve-parameter sites (every site but the noise)."""
        return tuple(i for i in range(len(self.names)) if i != self.noise)

    def unravel(self, theta: jax.Array, noise: jax.Array) -> dict[str, jax.Array]:
        """Site name -> value, from the (P,) raveled curve parameters and the noise."""
        values, start = {}, 0
        for index in self.curve:
            shape = self.shapes[index]
            size = int(np.prod(shape))
            values[self.names[index]] = theta[start : start + size].reshape(shape)
            start += size
        if self.noise >= 0:
            values[self.names[self.noise]] = noise
        return values


class Evaluation(NamedTuple):
    """The observed site, and the prior of the curve parameters, at one point.

    Attributes:
        location: (M,) location (rate) of the observed distribution.
        scale: (M,) its scale, or None (Poisson).
        extra: the family's further parameters (StudentT: degrees of freedom).
        log_prior: log prior of the curve parameters (0 when not evaluated).
        support: (n_sites,) whether each site's value lies in its prior's support.
        mask: (M,) 1.0 where a point counts, 0.0 where it is masked.
        prior_gradient: (P,) gradient of the log prior of the curve parameters, or None
            when not evaluated.
        prior_hessian: (P, P) its Hessian, or None when not evaluated.
    """

    location: jax.Array
    scale: Any
    extra: Any
    log_prior: jax.Array
    support: jax.Array
    mask: jax.Array
    prior_gradient: Any = None
    prior_hessian: Any = None


class PriorTerms(NamedTuple):
    """The log prior of the curve parameters at one point (:meth:`MAPProblem.prior_terms`).

    Attributes:
        log_prior: log prior of theta (the noise prior excluded).
        support: (n_sites,) whether each site's value lies in its prior's support.
        gradient: (P,) its gradient.
        hessian: (P, P) its Hessian (block diagonal).
    """

    log_prior: jax.Array
    support: jax.Array
    gradient: jax.Array
    hessian: jax.Array


def site_derivatives(prior, value: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Summed log density of one site, its gradient (size,) and Hessian (size, size).

    A scalar site takes one forward-over-reverse pass (value, slope and curvature
    together); another shape its ``jax.grad`` and ``jax.hessian``.
    """
    shape = jnp.shape(value)
    flat = jnp.ravel(value)

    def log_prob(flat):
        return jnp.sum(prior.log_prob(flat.reshape(shape)))

    if flat.shape == (1,):
        (total, gradient), (_, curvature) = jax.jvp(
            jax.value_and_grad(log_prob), (flat,), (jnp.ones_like(flat),)
        )
        return total, gradient, curvature[:, None]
    total, gradient = jax.value_and_grad(log_prob)(flat)
    return total, gradient, jax.hessian(log_prob)(flat)


def stack_for_xla(scalars: list) -> jax.Array:
    """``jnp.stack(scalars)``, as stacks of at most 8 (XLA CPU fuses a concatenate of at
    most 8 operands; beyond that each operand becomes a kernel of its own)."""
    if len(scalars) <= 8:
        return jnp.stack(scalars)
    padding = [jnp.zeros_like(scalars[0])] * (-len(scalars) % 8)
    padded = [*scalars, *padding]
    groups = [stack_for_xla(padded[i : i + 8]) for i in range(0, len(padded), 8)]
    return stack_for_xla(groups).reshape(-1, *jnp.shape(scalars[0]))[: len(scalars)]


def row_sums(*rows: jax.Array) -> jax.Array:
    """The sums of equally long vectors (booleans count their True), as one reduction:
    XLA CPU compiles each reduction as a kernel of its own (two, over many points)."""
    dtype = jnp.result_type(*(row for row in rows if row.dtype != bool))
    return jnp.sum(jnp.stack([row.astype(dtype) for row in rows]), axis=1)


class MAPProblem(NamedTuple):
    """One spectrum: the program, its data, the priors of its sites and its family.

    Built inside traced code (one per spectrum under ``vmap``): the arrays (``x``,
    ``y``, ``model_kwargs``, ``priors``) may be tracers; ``model``, ``sites``,
    ``observed`` and ``family`` are fixed per program (static arguments of a jit).

    Attributes:
        model: NumPyro program called as ``model(x, y, **model_kwargs)``.
        sites: its latent sites (:class:`Sites`).
        observed: name of the observed site.
        family: the observed distribution's
            :class:`~gaussmix.inference.map.families.ObservationFamily`.
        x: (M,) abscissae.
        y: (M,) observations (0 where masked).
        model_kwargs: further keyword arguments of the program (``mask`` included).
        priors: site name -> prior distribution (or a closed form's pytree with its
            ``log_prob`` and ``support``), read once (:meth:`with_priors`); the priors may
            depend on the data but not on other latent sites. None until read.
    """

    model: Callable
    sites: Sites
    observed: str
    family: ObservationFamily
    x: jax.Array
    y: jax.Array
    model_kwargs: dict
    priors: dict | None = None

    def with_priors(self, theta: jax.Array, noise: jax.Array) -> "MAPProblem":
        """The problem with each latent site's prior: the program's registered closed form
        (:class:`~gaussmix.inference.map.closed_form.ClosedForm`), else read from a trace
        at (theta, noise)."""
        closed_form = closed_form_of(self.model)
        priors = None
        if closed_form is not None and closed_form.priors is not None:
            priors = closed_form.priors(self.x, self.y, **self.model_kwargs)
        if priors is None:
            trace = self.trace(theta, noise)
            priors = {name: trace[name]["fn"] for name in self.sites.names}
        return self._replace(priors={name: priors[name] for name in self.sites.names})

    def trace(self, theta: jax.Array, noise: jax.Array):
        """A NumPyro trace of the program with the latent sites set to (theta, noise)."""
        from numpyro import handlers  # imported when a program is traced, not when loaded

        params = self.sites.unravel(theta, noise)
        return handlers.trace(handlers.substitute(self.model, data=params)).get_trace(
            self.x, self.y, **self.model_kwargs
        )

    def observe(self, theta: jax.Array, noise: jax.Array) -> Evaluation:
        """The observed site only (prior fields left empty): cheap to differentiate. From
        the program's registered closed form, else from a trace."""
        closed_form = closed_form_of(self.model)
        if closed_form is not None and closed_form.observation is not None:
            values = self.sites.unravel(theta, noise)
            location, scale, extra, mask = closed_form.observation(
                values, self.x, self.y, **self.model_kwargs
            )
        else:
            observed = self.trace(theta, noise)[self.observed]
            location, scale, extra = self.family.split_fn(base_distribution(observed["fn"]))
            mask = distribution_mask(observed["fn"])
        location = jnp.broadcast_to(location, self.y.shape)
        if scale is not None:
            scale = jnp.broadcast_to(scale, self.y.shape)
        mask = jnp.ones_like(self.y) if mask is None else jnp.broadcast_to(mask, self.y.shape)
        empty = jnp.zeros((), location.dtype)
        support = jnp.ones((len(self.sites.names),), bool)
        return Evaluation(location, scale, extra, empty, support, mask * 1.0)

    def prior_terms(self, theta: jax.Array, noise: jax.Array) -> "PriorTerms":
        """Log prior of theta, its gradient (P,) and Hessian (P, P), and the (n_sites,)
        support checks (noise site included), each site's log density traced once.

        The priors are independent, so the Hessian is block diagonal: a scalar site's
        value, slope and curvature come from one forward-over-reverse pass
        (:func:`site_derivatives`), a site of another shape adds its ``jax.hessian`` block.
        """
        values = self.sites.unravel(theta, noise)
        log_prior = jnp.zeros((), theta.dtype)
        support, gradients, blocks = [], [], []
        for index, name in enumerate(self.sites.names):
            prior = self.priors[name]
            support.append(jnp.all(prior.support(values[name])))
            if index == self.sites.noise:
                continue
            value, gradient, hessian = site_derivatives(prior, values[name])
            log_prior = log_prior + value
            gradients.append(gradient)
            blocks.append(hessian)
        if all(block.shape == (1, 1) for block in blocks):
            hessian = jnp.diag(jnp.concatenate([block[0] for block in blocks]))
        else:
            hessian = jax.scipy.linalg.block_diag(*blocks)
        return PriorTerms(log_prior, stack_for_xla(support), jnp.concatenate(gradients), hessian)

    @property
    def has_noise(self) -> bool:
        """Whether the program has a noise site."""
        return self.sites.noise >= 0

    def noise_log_prior(self, theta: jax.Array, noise: jax.Array) -> jax.Array:
        """Log prior of the noise scale (0 without a noise site)."""
        if not self.has_noise:
            return jnp.zeros((), theta.dtype)
        return jnp.sum(self.priors[self.sites.names[self.sites.noise]].log_prob(noise))

    def scale(self, evaluation: Evaluation, noise: jax.Array):
        """(M,) scale of the observations: the noise, or the program's fixed scale."""
        if self.has_noise:
            return jnp.broadcast_to(noise, self.y.shape)
        return evaluation.scale

    def weights(self, evaluation: Evaluation, noise: jax.Array) -> jax.Array:
        """Mask times the factor turning scaled family quantities into units of unit()."""
        if self.has_noise or evaluation.scale is None:
            return evaluation.mask
        return evaluation.mask / evaluation.scale**2

    def unit(self, noise: jax.Array) -> jax.Array:
        """:math:`\\sigma^2` with a noise site, 1 without."""
        return noise**2 if self.has_noise else jnp.ones_like(noise)

    def half_deviances(self, evaluation: Evaluation, noise: jax.Array) -> jax.Array:
        """(M,) pointwise half deviances in units of unit(), 0 where masked."""
        values = self.family.half_deviance_fn(
            self.y, evaluation.location, self.scale(evaluation, noise), evaluation.extra
        )
        return self.weights(evaluation, noise) * values

    def point_sums(self, evaluation: Evaluation, noise: jax.Array) -> jax.Array:
        """(3,) sums over the points, as one reduction: the half deviances (units of
        unit()), the squared residuals of the unmasked points (the RSS) and their count.

        The noise's update, the trial's decrease and the new point's objective all take
        their sums from here: where the half deviances do not move with the noise (every
        family but StudentT) the three are one computation, which XLA does once.
        """
        residuals = self.y - evaluation.location
        return row_sums(
            self.half_deviances(evaluation, noise), evaluation.mask * residuals**2, evaluation.mask
        )

    def log_likelihood(self, evaluation: Evaluation, noise: jax.Array) -> jax.Array:
        """Log-likelihood of the unmasked observations."""
        values = self.family.log_prob_fn(
            self.y, evaluation.location, self.scale(evaluation, noise), evaluation.extra
        )
        return jnp.sum(jnp.where(evaluation.mask > 0, values, 0.0))


def jacobian(problem: MAPProblem, theta: jax.Array, noise: jax.Array):
    """(M, P) Jacobian of the location, and the :class:`Evaluation` at theta (the prior's
    log density and derivatives included).

    In closed form when the program offers it
    (:func:`~gaussmix.inference.map.closed_form.location_jacobian_of`), else by forward
    mode through the program.
    """
    closed_form = location_jacobian_of(problem.model)
    if closed_form is None:

        def location(theta):
            evaluation = problem.observe(theta, noise)
            return evaluation.location, evaluation

        matrix, evaluation = jax.jacfwd(location, has_aux=True)(theta)
    else:
        evaluation = problem.observe(theta, noise)
        values = problem.sites.unravel(theta, noise)
        location, columns = closed_form(values, problem.x, problem.y, **problem.model_kwargs)
        size = problem.y.shape[0]
        names = problem.sites.names
        # Stacked parameter-major, (P, M), and transposed: XLA then stores each column
        # contiguously, as forward mode's Jacobian is, and J^T J reads it row by row.
        # Concatenated as (M, P) instead, the P3 fit ran 1.5x slower than forward mode.
        matrix = jnp.concatenate(
            [
                jnp.broadcast_to(columns[names[index]], (size, *problem.sites.shapes[index]))
                .reshape(size, -1)
                .astype(theta.dtype)
                .T
                for index in problem.sites.curve
            ],
            axis=0,
        ).T
        evaluation = evaluation._replace(location=jnp.broadcast_to(location, problem.y.shape))
    # A barrier: the prior's scalars are computed once, not again inside every fusion
    # that reads them (XLA duplicates cheap producers into their consumers).
    prior = jax.lax.optimization_barrier(problem.prior_terms(theta, noise))
    # The location once in memory: without the barrier XLA recomputes it from the peaks'
    # exponentials in each of the half deviances, score, RSS and noise fusions that read it.
    location = jax.lax.optimization_barrier(evaluation.location)
    return matrix, evaluation._replace(
        location=location,
        log_prior=prior.log_prior,
        support=prior.support,
        prior_gradient=prior.gradient,
        prior_hessian=prior.hessian,
    )


def batch_problems(
    model: Callable,
    sites: Sites,
    observed: str,
    family: ObservationFamily,
    x: jax.Array,
    model_kwargs: dict,
    theta: jax.Array,
    noise: jax.Array,
    y: jax.Array,
    mask: jax.Array | None,
):
    """The problems of a batch's spectra, and their priors read once.

    Args:
        model, sites, observed, family: the program and what the probe found in it.
        x: (M,) abscissae; model_kwargs: the program's keywords (plain pytrees).
        theta: (B, P) curve parameters and noise (B,) where the priors are read.
        y, mask: (B, M) spectra and their masks (or None).

    Returns:
        (problem_for, priors): ``problem_for(y_one, mask_one, priors=None)`` the
        :class:`MAPProblem` of one spectrum (its mask among the program's keywords; its
        priors read from the program when None), and each spectrum's priors, canonical
        pytrees (flattened in the same order in every process) stacked over B.
    """

    def problem_for(y_one, mask_one, priors=None):
        kwargs = dict(model_kwargs)
        if mask_one is not None:
            kwargs["mask"] = mask_one
        return MAPProblem(model, sites, observed, family, x, y_one, kwargs, plain(priors))

    def priors_of(theta_one, noise_one, y_one, mask_one):
        return canonical(problem_for(y_one, mask_one).with_priors(theta_one, noise_one).priors)

    return problem_for, vmap_unless_one(priors_of)(theta, noise, y, mask)


def vmap_unless_one(fn: Callable) -> Callable:
    """``jax.vmap(fn)``, or for arguments whose leading axis has length one, ``fn`` on
    their one element with the axis put back on its outputs: the same program, traced
    without the batching interpreter (a single spectrum's fit traced in about half the
    time). A None argument stays None."""

    def mapped(*args):
        lengths = {jnp.shape(leaf)[0] for leaf in jax.tree.leaves(args)}
        if lengths != {1}:
            return jax.vmap(fn)(*args)
        one = jax.tree.map(lambda leaf: leaf[0], args)
        return jax.tree.map(lambda leaf: jnp.expand_dims(leaf, 0), fn(*one))

    return mapped


def update_noise(
    problem: MAPProblem, theta: jax.Array, noise: jax.Array, evaluation: Evaluation, n_steps: int
) -> jax.Array:
    """The noise scale at fixed theta (no-op without a noise site): in closed form for a
    Normal likelihood under a half-normal prior (:func:`normal_noise_map`), else
    ``n_steps`` Newton steps on :math:`\\log\\sigma` (a Normal likelihood starting from
    :math:`\\sqrt{\\mathrm{RSS}/n}`, its maximum; the steps then add the noise prior).
    """
    if not problem.has_noise:
        return noise
    prior_scale = half_normal_scale(problem.priors[problem.sites.names[problem.sites.noise]])
    if problem.family.name == "normal" and prior_scale is not None:
        _, residual_sum, n_points = problem.point_sums(evaluation, noise)
        return normal_noise_map(residual_sum, n_points, prior_scale, noise)
    loss = problem.family.noise_loss_fn(
        problem.y, evaluation.location, evaluation.mask, evaluation.extra
    )

    def objective(log_noise):
        noise = jnp.exp(log_noise)
        return loss(noise) - problem.noise_log_prior(theta, noise)

    log_noise = jnp.log(noise)
    if problem.family.name == "normal":
        log_noise = residual_log_noise(problem.y, evaluation.location, evaluation.mask, log_noise)
    return newton_on_log_noise(objective, log_noise, n_steps)


def half_normal_scale(prior: Any) -> Any:
    """The scale of a half-normal prior (:class:`~gaussmix.models.peak_priors.HalfNormalPrior`,
    the peak program's default, or NumPyro's ``HalfNormal``), or None for another prior."""
    if isinstance(prior, HalfNormalPrior):
        return prior.scale
    distributions = sys.modules.get("numpyro.distributions")  # a NumPyro prior: imported
    if distributions is not None and type(prior) is distributions.HalfNormal:
        return prior.scale
    return None


def normal_noise_map(
    residual_sum: jax.Array, n_points: jax.Array, prior_scale: jax.Array, noise: jax.Array
) -> jax.Array:
    """The noise scale maximizing a Normal likelihood times a half-normal prior of scale
    :math:`s` at a fixed location, in closed form, from the residual sum of squares
    :math:`R` of the :math:`n` unmasked points; ``noise`` where :math:`R = 0` (then the
    posterior grows without bound as :math:`\\sigma \\to 0`).

    With :math:`u = \\sigma^2` the negative log posterior is
    :math:`\\tfrac n2 \\log u + R / (2u) + u / (2 s^2)` plus constants; its derivative
    vanishes where :math:`u^2 + n s^2 u - R s^2 = 0`, whose positive root, written without
    cancellation, is

    .. math::

        u = \\frac{2R}{n + \\sqrt{n^2 + 4R/s^2}}.

    (Two Newton steps on :math:`\\log\\sigma` from :math:`\\sqrt{R/n}` approximated it;
    the Levenberg-Marquardt program compiled some 15 more XLA kernels for them.)

    Example:
        >>> import jax.numpy as jnp
        >>> sigma = normal_noise_map(jnp.asarray(2.0), jnp.asarray(2.0), jnp.asarray(1e6),
        ...                          jnp.asarray(5.0))
        >>> round(float(sigma), 6)  # a flat prior: sqrt(R / n)
        1.0
    """
    variance = (
        2.0
        * residual_sum
        / (n_points + jnp.sqrt(n_points**2 + 4.0 * residual_sum / prior_scale**2))
    )
    return jnp.where(residual_sum > 0, jnp.sqrt(variance), noise)


def residual_log_noise(
    y: jax.Array, location: jax.Array, mask: jax.Array, log_noise: jax.Array
) -> jax.Array:
    """:math:`\\log\\sqrt{\\mathrm{RSS}/n}` of the unmasked points (any shape: all of
    them), a Normal likelihood's maximum over :math:`\\sigma`; ``log_noise`` where the
    RSS is 0."""
    variance = jnp.sum(mask * (y - location) ** 2) / jnp.sum(mask)
    return jnp.where(variance > 0, 0.5 * jnp.log(variance), log_noise)


def newton_on_log_noise(
    objective_fn: Callable[[jax.Array], jax.Array], log_noise: jax.Array, n_steps: int
) -> jax.Array:
    """:math:`\\sigma` after ``n_steps`` safeguarded Newton steps on the scalar
    ``objective_fn(log sigma)`` from ``log_noise``: each step clipped to [-1, 1] (down
    the slope where the curvature is not positive), kept only where the objective does
    not increase."""
    # One forward-over-reverse pass gives the objective, its slope and its curvature.
    derivatives = jax.value_and_grad(objective_fn)

    def evaluate(log_noise):
        (value, gradient), (_, second) = jax.jvp(
            derivatives, (log_noise,), (jnp.ones_like(log_noise),)
        )
        return value, gradient, second

    value, gradient, second = evaluate(log_noise)
    for _ in range(n_steps):
        newton = jnp.where(second > 0, -gradient / second, -jnp.sign(gradient))
        new = log_noise + jnp.clip(newton, -1.0, 1.0)
        new_value, new_gradient, new_second = evaluate(new)
        better = new_value <= value
        log_noise = jnp.where(better, new, log_noise)
        value = jnp.where(better, new_value, value)
        gradient = jnp.where(better, new_gradient, gradient)
        second = jnp.where(better, new_second, second)
    return jnp.exp(log_noise)
