"""One spectrum as the MAP back end sees it: sites, priors, data and family.

:class:`MAPProblem` reads a NumPyro regression program ``model(x, y, **model_kwargs)``:
the location (and scale, mask) of its observed site at given curve parameters
:math:`\\theta` and noise :math:`\\sigma`, the log prior of :math:`\\theta` with its
derivatives, and the half deviances in units of :math:`\\sigma^2` that the
Levenberg-Marquardt step (:mod:`gaussmix.inference.map.levenberg_marquardt`) minimizes.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers

from gaussmix.inference.map.families import ObservationFamily, base_distribution, distribution_mask

__all__ = ["Evaluation", "MAPProblem", "Sites", "jacobian", "update_noise"]


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
    """

    location: jax.Array
    scale: Any
    extra: Any
    log_prior: jax.Array
    support: jax.Array
    mask: jax.Array


class MAPProblem(NamedTuple):
    """One spectrum: the program, its data, the priors of its sites and its family.

    Built inside traced code (one per spectrum under ``vmap``): the arrays (``x``,
    ``y``, ``model_kwargs``, ``priors``) may be tracers; ``model``, ``sites``,
    ``observed`` and ``family`` are fixed per program (static arguments of a jit).

    Attributes:
        model: NumPyro program called as ``model(x, y, **model_kwargs)``.
        sites: its latent sites (:class:`Sites`).
        observed: name of the observed site.
        family: the observed distribution's :class:`~gaussmix.inference.map.families.
            ObservationFamily`.
        x: (M,) abscissae.
        y: (M,) observations (0 where masked).
        model_kwargs: further keyword arguments of the program (``mask`` included).
        priors: site name -> prior distribution, read once from a trace of the program
            (:meth:`with_priors`); the priors may depend on the data but not on other
            latent sites. None until read.
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
        """The problem with each latent site's prior read from a trace at (theta, noise)."""
        trace = self.trace(theta, noise)
        return self._replace(priors={name: trace[name]["fn"] for name in self.sites.names})

    def trace(self, theta: jax.Array, noise: jax.Array):
        """A NumPyro trace of the program with the latent sites set to (theta, noise)."""
        params = self.sites.unravel(theta, noise)
        return handlers.trace(handlers.substitute(self.model, data=params)).get_trace(
            self.x, self.y, **self.model_kwargs
        )

    def observe(self, theta: jax.Array, noise: jax.Array) -> Evaluation:
        """The observed site only (prior fields left empty): cheap to differentiate."""
        observed = self.trace(theta, noise)[self.observed]
        location, scale, extra = self.family.split_fn(base_distribution(observed["fn"]))
        location = jnp.broadcast_to(location, self.y.shape)
        if scale is not None:
            scale = jnp.broadcast_to(scale, self.y.shape)
        mask = distribution_mask(observed["fn"])
        mask = jnp.ones_like(self.y) if mask is None else jnp.broadcast_to(mask, self.y.shape)
        empty = jnp.zeros((), location.dtype)
        support = jnp.ones((len(self.sites.names),), bool)
        return Evaluation(location, scale, extra, empty, support, mask * 1.0)

    def prior_terms(self, theta: jax.Array, noise: jax.Array) -> tuple[jax.Array, jax.Array]:
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

    def prior_derivatives(self, theta: jax.Array, noise: jax.Array) -> tuple[jax.Array, jax.Array]:
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

    def log_likelihood(self, evaluation: Evaluation, noise: jax.Array) -> jax.Array:
        """Log-likelihood of the unmasked observations."""
        values = self.family.log_prob_fn(
            self.y, evaluation.location, self.scale(evaluation, noise), evaluation.extra
        )
        return jnp.sum(jnp.where(evaluation.mask > 0, values, 0.0))


def jacobian(problem: MAPProblem, theta: jax.Array, noise: jax.Array):
    """(M, P) forward-mode Jacobian of the location, and the :class:`Evaluation` at theta."""

    def location(theta):
        evaluation = problem.observe(theta, noise)
        return evaluation.location, evaluation

    matrix, evaluation = jax.jacfwd(location, has_aux=True)(theta)
    log_prior, support = problem.prior_terms(theta, noise)
    return matrix, evaluation._replace(log_prior=log_prior, support=support)


def update_noise(
    problem: MAPProblem, theta: jax.Array, noise: jax.Array, evaluation: Evaluation, n_steps: int
) -> jax.Array:
    """Newton steps on :math:`\\log\\sigma` at fixed theta (no-op without a noise site).

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
