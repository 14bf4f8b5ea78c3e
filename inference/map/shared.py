"""MAP of a batch of spectra some of whose parameters are shared: one joint problem.

Spectrum :math:`b` has its own curve parameters :math:`\\theta_b` (p of them) and
all spectra share :math:`\\phi` (s of them). The negative log posterior is

.. math::

    F(\\theta_1, \\dots, \\theta_B, \\phi) = \\sum_b \\Big[-\\log p(y_b \\mid
    \\theta_b, \\phi, \\sigma_b) - \\log p(\\theta_b) - \\tfrac1B \\log p_b(\\phi)\\Big]
    - \\log p(\\sigma),

each shared site's prior counted once: the mean over spectra of its prior in each
spectrum's program. ``fit_peaks(..., shared=...)`` gives every spectrum's program the
same prior for a shared site, the one of the joint NumPyro program
(:func:`gaussmix.peaks.shared.shared_site_priors`), so that F is minus that program's log
density. The noise scale is per spectrum, or one for the batch when the noise site is
among the shared names.

Its Gauss-Newton Hessian is block-arrow: per-spectrum blocks :math:`A_b`
(p x p), couplings :math:`C_b` (p x s) and the shared block :math:`D = \\sum_b D_b`
(s x s). A Levenberg-Marquardt step solves

.. math::

    \\begin{pmatrix} A_b + \\lambda\\,\\mathrm{diag}(d_b) & C_b \\\\ C_b^\\top &
    D + \\lambda\\,\\mathrm{diag}(d_\\phi) \\end{pmatrix}
    \\begin{pmatrix}\\delta_b\\\\ \\delta_\\phi\\end{pmatrix} =
    -\\begin{pmatrix} g_b \\\\ g_\\phi \\end{pmatrix}

by eliminating each spectrum's block: :math:`S = D - \\sum_b C_b^\\top A_b^{-1} C_b`
(the Schur complement), :math:`S\\,\\delta_\\phi = -g_\\phi + \\sum_b C_b^\\top
A_b^{-1} g_b`, :math:`\\delta_b = -A_b^{-1}(g_b + C_b\\delta_\\phi)`. Cost and memory are
linear in B (:math:`O(B p^2 + s^2)` memory). The damping :math:`\\lambda` follows
Nielsen's rule (1999) on the gain ratio, with Marquardt's scaling :math:`d` (the largest
diagonal of the Hessian seen so far); after each accepted step the noise scales take
Newton steps on :math:`\\log\\sigma` at fixed curve parameters. Trial points outside a
prior's support are rejected.

One compiled program (``vmap`` over spectra inside, the shared update outside, a
``lax.while_loop`` around the steps); the priors of each spectrum are read from its
program once, before the loop.

The Laplace covariance is the inverse of the joint Gauss-Newton Hessian at the MAP. For a
Normal likelihood with a fitted noise scale it uses, as ``curve_fit`` does, the residual
variance :math:`\\mathrm{RSS}_b/(n_b - p - s/B)` per spectrum (with a shared noise:
:math:`\\sum_b \\mathrm{RSS}_b / (N - Bp - s)`, so that under flat priors it equals
``least_squares``' :math:`s^2 (J^\\top J)^{-1}` of the stacked problem). Its blocks, by
the block-inverse formula: :math:`\\Sigma_{\\phi\\phi} = S^{-1}`,
:math:`\\Sigma_{b\\phi} = -A_b^{-1} C_b S^{-1}`, :math:`\\Sigma_{bb} = A_b^{-1} +
A_b^{-1} C_b S^{-1} C_b^\\top A_b^{-1}`. The covariances between two spectra's own
parameters (:math:`A_b^{-1}C_b S^{-1} C_{b'}^\\top A_{b'}^{-1}`) are not formed.
"""

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from gaussmix.inference import compilation
from gaussmix.inference.map.fit import TOLERANCES, probe_program
from gaussmix.inference.map.levenberg_marquardt import (
    NOISE_STEPS,
    MAPSettings,
    cholesky_solve,
    inverse_cholesky,
)
from gaussmix.inference.map.problem import (
    Sites,
    batch_problems,
    jacobian,
    newton_on_log_noise,
    residual_log_noise,
    update_noise,
)
from gaussmix.inference.map.trees import canonical, plain

__all__ = ["SharedMAPResult", "fit_shared_map"]

#: Nielsen's damping: the starting lambda (relative to the scaled diagonal), and the
#: lambda past which a step is hopeless (the fit stalls).
INITIAL_DAMPING = 1e-3
MAX_DAMPING = 1e16


class SharedMAPResult(NamedTuple):
    """The joint MAP of a batch with shared parameters.

    Attributes:
        params: site name -> (B,) values (B copies of a shared site's value; the noise
            site's (B,) values, equal when it is shared).
        shared_params: shared site name -> its value.
        covariance: (B, P, P) Laplace covariance of each spectrum's curve parameters
            (its own and the shared ones, in ``parameter_names`` order): the marginal
            blocks of the joint covariance.
        shared_covariance: (s, s) Laplace covariance of the shared curve parameters.
        parameter_names: the P curve-parameter names of one spectrum.
        shared_names: the shared curve-parameter names (the noise site excluded).
        objective: negative log posterior F of the batch (nats).
        log_likelihood: (B,) log-likelihood of each spectrum at the MAP.
        rss: (B,) residual sums of squares.
        n_points: (B,) unmasked points.
        converged: whether the joint fit converged (finite objective and covariance).
        started: whether the starting point had a finite objective and curvature.
        n_iter: trial steps.
        initial_in_support: (B, n_sites) whether each site's start lay in its prior's
            support.
    """

    params: dict[str, np.ndarray]
    shared_params: dict[str, float]
    covariance: np.ndarray
    shared_covariance: np.ndarray
    parameter_names: tuple[str, ...]
    shared_names: tuple[str, ...]
    objective: float
    log_likelihood: np.ndarray
    rss: np.ndarray
    n_points: np.ndarray
    converged: bool
    started: bool
    n_iter: int
    initial_in_support: np.ndarray


class _Point(NamedTuple):
    """The batch at one point, in units of nats (not of sigma^2).

    objective: F at fixed noise (scalar); gradient (B, P); curvature (B, P, P) Gauss-
    Newton with the shared sites' prior divided by B; support (B, n_sites); rss,
    n_points (B,); noise (B,).
    """

    local: jax.Array
    shared: jax.Array
    noise: jax.Array
    objective: jax.Array
    gradient: jax.Array
    curvature: jax.Array
    rss: jax.Array
    n_points: jax.Array


class _State(NamedTuple):
    point: _Point
    damping: jax.Array
    growth: jax.Array
    scaling_local: jax.Array
    scaling_shared: jax.Array
    n_iter: jax.Array
    done: jax.Array
    converged: jax.Array


def _split(matrix_or_vector, local_index, shared_index):
    """(A, C, D) of a (P, P) matrix, or (g_local, g_shared) of a (P,) vector."""
    if matrix_or_vector.ndim == 1:
        return matrix_or_vector[local_index], matrix_or_vector[shared_index]
    rows_local = matrix_or_vector[local_index]
    return (
        rows_local[:, local_index],
        rows_local[:, shared_index],
        matrix_or_vector[shared_index][:, shared_index],
    )


def _schur_solve(gradient, curvature, damping, scaling_local, scaling_shared, local, shared):
    """The damped joint step (B, p) and (s,) by eliminating each spectrum's block, and
    the damped Schur complement (for the covariance when damping = 0).

    ``gradient`` (B, P), ``curvature`` (B, P, P); ``local``, ``shared`` index arrays.
    Returns (delta_local, delta_shared, schur, solves) with solves = A_b^{-1}[g_b, C_b].
    """
    g_local, g_shared = jax.vmap(lambda g: _split(g, local, shared))(gradient)
    a, c, d = jax.vmap(lambda h: _split(h, local, shared))(curvature)
    a = a + damping * jax.vmap(jnp.diag)(scaling_local**2)
    d_total = jnp.sum(d, axis=0) + damping * jnp.diag(scaling_shared**2)

    def eliminate(a_b, c_b, g_b):
        scale = jnp.sqrt(jnp.abs(jnp.diag(a_b)))
        scale = jnp.where(scale > 0, scale, 1.0)
        inverse_factor = inverse_cholesky(a_b / jnp.outer(scale, scale))
        right = jnp.concatenate([g_b[:, None], c_b], axis=1) / scale[:, None]
        return cholesky_solve(inverse_factor, right) / scale[:, None]

    solves = jax.vmap(eliminate)(a, c, g_local)  # (B, p, 1 + s)
    schur = d_total - jnp.einsum("bps,bpt->st", c, solves[:, :, 1:])
    rhs = -jnp.sum(g_shared, axis=0) + jnp.einsum("bps,bp->s", c, solves[:, :, 0])
    scale = jnp.sqrt(jnp.abs(jnp.diag(schur)))
    scale = jnp.where(scale > 0, scale, 1.0)
    inverse_factor = inverse_cholesky(schur / jnp.outer(scale, scale))
    delta_shared = cholesky_solve(inverse_factor, rhs / scale) / scale
    delta_local = -(solves[:, :, 0] + jnp.einsum("bps,s->bp", solves[:, :, 1:], delta_shared))
    return delta_local, delta_shared, schur, solves


def _fit_shared(
    model, sites, observed, family, shared_index, shared_noise,
    x, y, mask, theta, noise, model_kwargs, settings,
):  # fmt: skip
    """The compiled joint fit (see the module docstring). ``theta`` (B, P) starts, the
    shared columns equal; ``noise`` (B,)."""
    model_kwargs = plain(model_kwargs)
    n_spectra, n_params = theta.shape
    shared = jnp.asarray(shared_index, jnp.int32)
    local = jnp.asarray([i for i in range(n_params) if i not in shared_index], jnp.int32)
    weight = jnp.ones((n_params,), theta.dtype).at[shared].set(1.0 / n_spectra)
    shared_sites = tuple(
        sites.names[sites.curve[i]] for i in shared_index if sites.shapes[sites.curve[i]] == ()
    )

    problem_for, priors = batch_problems(
        model, sites, observed, family, x, model_kwargs, theta, noise, y, mask
    )

    def assemble(local_values, shared_values):
        return (
            jnp.zeros((n_params,), theta.dtype)
            .at[local]
            .set(local_values)
            .at[shared]
            .set(shared_values)
        )

    def one_spectrum(local_values, shared_values, noise_one, old_noise, y_one, mask_one, prior):
        """Trial terms of one spectrum: its objective at ``old_noise`` (the accept
        test), the noise update, and gradient and curvature at the new noise."""
        problem = problem_for(y_one, mask_one, prior)
        theta_one = assemble(local_values, shared_values)
        matrix, evaluation = jacobian(problem, theta_one, old_noise)
        values = problem.sites.unravel(theta_one, old_noise)
        shared_log_prior = sum(
            (jnp.sum(problem.priors[name].log_prob(values[name])) for name in shared_sites),
            jnp.zeros((), theta.dtype),
        )
        log_prior = evaluation.log_prior - (1.0 - 1.0 / n_spectra) * shared_log_prior
        old_unit = problem.unit(old_noise)
        trial = jnp.sum(problem.half_deviances(evaluation, old_noise)) / old_unit - log_prior
        if not shared_noise:
            noise_one = update_noise(problem, theta_one, old_noise, evaluation, NOISE_STEPS)
        unit = problem.unit(noise_one)
        weights = problem.weights(evaluation, noise_one)
        scale = problem.scale(evaluation, noise_one)
        location, extra = evaluation.location, evaluation.extra
        score = weights * family.score_fn(problem.y, location, scale, extra)
        fisher = weights * family.fisher_fn(location, scale, extra)
        gradient = -(matrix.T @ score) / unit - weight * evaluation.prior_gradient
        curvature = (
            matrix.T @ (fisher[:, None] * matrix) / unit
            - weight[:, None] * evaluation.prior_hessian
        )
        objective = jnp.sum(problem.half_deviances(evaluation, noise_one)) / unit - log_prior
        residuals = problem.y - location
        rss = jnp.dot(evaluation.mask * residuals, residuals)
        # The likelihood's parts in units of sigma^2 (a Normal's do not depend on sigma),
        # and the prior's, for a shared noise updated after this.
        parts = (
            -(matrix.T @ score),
            matrix.T @ (fisher[:, None] * matrix),
            jnp.sum(problem.half_deviances(evaluation, noise_one)),
            weight * evaluation.prior_gradient,
            weight[:, None] * evaluation.prior_hessian,
            log_prior,
        )
        return (trial, objective, gradient, curvature, evaluation.support, rss,
                jnp.sum(evaluation.mask), noise_one, evaluation, parts)  # fmt: skip

    def shared_noise_update(local_values, shared_values, noise_value, evaluations):
        """One noise for the batch: Newton steps on log sigma of the summed loss and the
        mean of the spectra's noise priors."""
        if not sites.noise >= 0:
            return noise_value

        def total(log_noise):
            sigma = jnp.exp(log_noise)

            def one(evaluation, y_one, mask_one, prior, local_one):
                problem = problem_for(y_one, mask_one, prior)
                loss = family.noise_loss_fn(y_one, evaluation.location, evaluation.mask,
                                            evaluation.extra)  # fmt: skip
                theta_one = assemble(local_one, shared_values)
                return loss(sigma), problem.noise_log_prior(theta_one, sigma)

            losses, log_priors = jax.vmap(one)(evaluations, y, mask, priors, local_values)
            return jnp.sum(losses) - jnp.mean(log_priors)

        log_noise = jnp.log(noise_value)
        if family.name == "normal":
            log_noise = residual_log_noise(y, evaluations.location, evaluations.mask, log_noise)
        return newton_on_log_noise(total, log_noise, NOISE_STEPS)

    def evaluate(local_values, shared_values, noise_values):
        """The trial objective at the current noise, and the new point."""
        outputs = jax.vmap(one_spectrum, in_axes=(0, None, 0, 0, 0, 0, 0))(
            local_values, shared_values, noise_values, noise_values, y, mask, priors
        )
        (
            trial,
            objective,
            gradient,
            curvature,
            support,
            rss,
            n_points,
            new_noise,
            evaluations,
            parts,
        ) = outputs
        if shared_noise and sites.noise >= 0:
            sigma = shared_noise_update(local_values, shared_values, noise_values[0], evaluations)
            new_noise = jnp.broadcast_to(sigma, noise_values.shape)
            if family.name == "normal":  # rescale: the parts do not depend on sigma
                score_part, fisher_part, half_deviance, prior_gradient, prior_hessian, log_prior = (
                    parts
                )
                unit = sigma**2
                gradient = score_part / unit - prior_gradient
                curvature = fisher_part / unit - prior_hessian
                objective = half_deviance / unit - log_prior
            else:  # StudentT: score and information depend on the scale
                outputs = jax.vmap(one_spectrum, in_axes=(0, None, 0, 0, 0, 0, 0))(
                    local_values, shared_values, new_noise, new_noise, y, mask, priors
                )
                _, objective, gradient, curvature, *_ = outputs
        point = _Point(
            local_values,
            shared_values,
            new_noise,
            jnp.sum(objective),
            gradient,
            curvature,
            rss,
            n_points,
        )
        return jnp.sum(trial), point, jnp.all(support)

    def valid_point(point):
        return (
            jnp.isfinite(point.objective)
            & jnp.all(jnp.isfinite(point.gradient))
            & jnp.all(jnp.isfinite(point.curvature))
        )

    def diagonal_scaling(point, old_local, old_shared):
        diagonal = jnp.sqrt(jnp.maximum(jax.vmap(jnp.diag)(point.curvature), 0.0))
        local_scale = jnp.maximum(old_local, diagonal[:, local])
        shared_scale = jnp.maximum(old_shared, jnp.sqrt(jnp.sum(diagonal[:, shared] ** 2, 0)))
        return (
            jnp.where(local_scale > 0, local_scale, 1.0),
            jnp.where(shared_scale > 0, shared_scale, 1.0),
        )

    _, first, support = evaluate(theta[:, local], theta[0, shared], noise)
    started = support & valid_point(first)
    scaling_local, scaling_shared = diagonal_scaling(
        first, jnp.zeros((n_spectra, local.shape[0]), theta.dtype),
        jnp.zeros((shared.shape[0],), theta.dtype),
    )  # fmt: skip
    reference_points = jnp.sum(first.n_points)

    def body(state: _State) -> _State:
        point = state.point
        delta_local, delta_shared, _, _ = _schur_solve(
            point.gradient, point.curvature, state.damping,
            state.scaling_local, state.scaling_shared, local, shared,
        )  # fmt: skip
        new_local = point.local + delta_local
        new_shared = point.shared + delta_shared
        trial, candidate, support = evaluate(new_local, new_shared, point.noise)
        full_delta = jax.vmap(assemble, in_axes=(0, None))(delta_local, delta_shared)
        # Each spectrum's vector holds delta_phi: the sums give g_phi . delta_phi with
        # g_phi summed over spectra, and delta_phi' D delta_phi with D = sum_b D_b.
        linear = jnp.sum(point.gradient * full_delta)
        quadratic = jnp.einsum("bp,bpq,bq->", full_delta, point.curvature, full_delta)
        predicted = -(linear + 0.5 * quadratic)
        actual = point.objective - trial
        finite = (
            jnp.all(jnp.isfinite(delta_local))
            & jnp.all(jnp.isfinite(delta_shared))
            & jnp.isfinite(trial)
        )
        ratio = jnp.where(predicted > 0, actual / predicted, -1.0)
        accept = finite & support & valid_point(candidate) & (ratio > 0)
        damping = jnp.where(
            accept,
            state.damping * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3),
            state.damping * state.growth,
        )
        growth = jnp.where(accept, 2.0, 2.0 * state.growth)
        reference = jnp.maximum(jnp.abs(point.objective), 0.5 * reference_points)
        step_norm = jnp.sqrt(
            jnp.sum((state.scaling_local * delta_local) ** 2)
            + jnp.sum((state.scaling_shared * delta_shared) ** 2)
        )
        parameter_norm = jnp.sqrt(
            jnp.sum((state.scaling_local * point.local) ** 2)
            + jnp.sum((state.scaling_shared * point.shared) ** 2)
        )
        small = (
            accept
            & (jnp.abs(actual) <= settings.tol * reference)
            & (predicted <= settings.tol * reference)
        )
        tiny_step = finite & (step_norm <= settings.step_tol * parameter_norm)
        converged = small | tiny_step
        new_point = jax.tree.map(lambda new, old: jnp.where(accept, new, old), candidate, point)
        scaling_local, scaling_shared = diagonal_scaling(
            new_point, state.scaling_local, state.scaling_shared
        )
        n_iter = state.n_iter + 1
        stalled = damping > MAX_DAMPING
        return _State(
            new_point, damping, growth, scaling_local, scaling_shared, n_iter,
            converged | stalled | (n_iter >= settings.max_iter), converged,
        )  # fmt: skip

    state = _State(
        first,
        jnp.asarray(INITIAL_DAMPING, theta.dtype),
        jnp.asarray(2.0, theta.dtype),
        scaling_local,
        scaling_shared,
        jnp.asarray(0, jnp.int32),
        ~started,
        jnp.asarray(False),
    )
    state = lax.while_loop(lambda state: ~state.done, body, state)
    point = state.point
    return _finish(
        point, state, started, _support_of_start(theta, noise, priors, problem_for),
        family, sites, local, shared, weight, problem_for, y, mask, priors, assemble,
        shared_noise,
    )  # fmt: skip


def _support_of_start(theta, noise, priors, problem_for):
    """(B, n_sites): each site's start inside its prior's support."""

    def one(theta_one, noise_one, prior):
        problem = problem_for(jnp.zeros(()), None, prior)
        values = problem.sites.unravel(theta_one, noise_one)
        return jnp.stack(
            [jnp.all(problem.priors[n].support(values[n])) for n in problem.sites.names]
        )

    return jax.vmap(one)(theta, noise, priors)


def _finish(point, state, started, support, family, sites, local, shared, weight, problem_for,
            y, mask, priors, assemble, shared_noise):  # fmt: skip
    """The joint Laplace covariance's blocks and each spectrum's log-likelihood."""
    n_spectra = point.local.shape[0]
    n_local, n_shared = local.shape[0], shared.shape[0]
    curvature = point.curvature
    if family.name == "normal" and sites.noise >= 0:
        # curve_fit's convention: the residual variance from the rss and the degrees of
        # freedom, not the MAP noise.
        if shared_noise:
            dof = jnp.sum(point.n_points) - n_spectra * n_local - n_shared
            variance = jnp.broadcast_to(jnp.sum(point.rss) / jnp.maximum(dof, 1.0), (n_spectra,))
        else:
            dof = point.n_points - n_local - n_shared / n_spectra
            variance = point.rss / jnp.maximum(dof, 1.0)

        def rescale(theta_one, noise_one, y_one, mask_one, prior, curvature_one, variance_one):
            problem = problem_for(y_one, mask_one, prior)
            terms = problem.prior_terms(theta_one, noise_one)
            prior_part = -weight[:, None] * terms.hessian
            likelihood_part = curvature_one - prior_part
            return likelihood_part * unit_one_ratio(noise_one, variance_one) + prior_part

        def unit_one_ratio(noise_one, variance_one):
            return noise_one**2 / jnp.where(variance_one > 0, variance_one, noise_one**2)

        thetas = jax.vmap(assemble, in_axes=(0, None))(point.local, point.shared)
        curvature = jax.vmap(rescale)(thetas, point.noise, y, mask, priors, curvature, variance)
    zeros = jnp.zeros_like(point.gradient)
    _, _, schur, solves = _schur_solve(
        zeros, curvature, 0.0, jnp.ones((n_spectra, n_local)), jnp.ones((n_shared,)), local, shared
    )
    scale = jnp.sqrt(jnp.abs(jnp.diag(schur)))
    scale = jnp.where(scale > 0, scale, 1.0)
    inverse_factor = inverse_cholesky(schur / jnp.outer(scale, scale))
    shared_covariance = cholesky_solve(
        inverse_factor, jnp.eye(n_shared, dtype=schur.dtype)
    ) / jnp.outer(scale, scale)

    def blocks(curvature_one, solve_one):
        a = curvature_one[local][:, local]
        a_scale = jnp.sqrt(jnp.abs(jnp.diag(a)))
        a_scale = jnp.where(a_scale > 0, a_scale, 1.0)
        a_inverse_factor = inverse_cholesky(a / jnp.outer(a_scale, a_scale))
        a_inverse = cholesky_solve(a_inverse_factor, jnp.eye(n_local, dtype=a.dtype)) / jnp.outer(
            a_scale, a_scale
        )
        coupling = solve_one[:, 1:]  # A^{-1} C
        cross = -coupling @ shared_covariance
        own = a_inverse + coupling @ shared_covariance @ coupling.T
        size = n_local + n_shared
        full = jnp.zeros((size, size), a.dtype)
        full = full.at[local[:, None], local[None, :]].set(own)
        full = full.at[local[:, None], shared[None, :]].set(cross)
        full = full.at[shared[:, None], local[None, :]].set(cross.T)
        full = full.at[shared[:, None], shared[None, :]].set(shared_covariance)
        return full

    covariance = jax.vmap(blocks)(curvature, solves)

    def log_likelihood_of(local_one, noise_one, y_one, mask_one, prior):
        problem = problem_for(y_one, mask_one, prior)
        theta_one = assemble(local_one, point.shared)
        evaluation = problem.observe(theta_one, noise_one)
        half_deviance = jnp.sum(problem.half_deviances(evaluation, noise_one))
        return (
            problem.log_likelihood(evaluation, noise_one),
            half_deviance / problem.unit(noise_one),
            problem.noise_log_prior(theta_one, noise_one),
        )

    log_likelihood, half_deviances, noise_priors = jax.vmap(log_likelihood_of)(
        point.local, point.noise, y, mask, priors
    )
    noise_term = jnp.mean(noise_priors) if shared_noise else jnp.sum(noise_priors)
    # point.objective is the half deviances minus the curve prior: F from those.
    curve_log_prior = jnp.sum(half_deviances) - point.objective
    objective = -jnp.sum(log_likelihood) - curve_log_prior - noise_term
    finite = jnp.all(jnp.isfinite(covariance)) & jnp.isfinite(point.objective)
    return {
        "local": point.local,
        "shared": point.shared,
        "noise": point.noise,
        "covariance": covariance,
        "shared_covariance": shared_covariance,
        "objective": objective,
        "log_likelihood": log_likelihood,
        "rss": point.rss,
        "n_points": point.n_points,
        "converged": state.converged & started & finite,
        "started": started,
        "n_iter": state.n_iter,
        "support": support,
    }


#: The compiled joint fit by work (spectra x points x parameters), as the batch fit is.
_fit_shared_program_for = compilation.programs_by_optimization_level(
    _fit_shared,
    static_argnames=("model", "sites", "observed", "family", "shared_index", "shared_noise"),
)


def fit_shared_map(
    model: Callable,
    x: ArrayLike,
    y: ArrayLike,
    init: Mapping[str, ArrayLike],
    shared: tuple[str, ...],
    *,
    mask: ArrayLike | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    noise_site: str | None = "sigma",
    max_iter: int = 200,
    tol: float | None = None,
    step_tol: float | None = None,
) -> SharedMAPResult:
    """Joint MAP of a batch of spectra whose ``shared`` sites take one value for all.

    Args:
        model: NumPyro program ``model(x, y, **model_kwargs)`` of one spectrum (as for
            :func:`~gaussmix.inference.map.fit_map`); static: the same function object
            reuses the compilation.
        x: (M,) abscissae.
        y: (B, M) spectra, B >= 2.
        init: starting value of every latent site: a number or a (B,) array; a shared
            site starts at the mean of its (B,) values.
        shared: names of scalar latent sites taking one value for the batch (the noise
            site too: one noise scale for all spectra).
        mask: (B, M) booleans, False drops a point.
        model_kwargs: further keyword arguments of the program (traced).
        noise_site: the observed distribution's scale site, None without one.
        max_iter: Levenberg-Marquardt steps of the joint problem.
        tol: relative decrease of F counted as converged (default 1e-10 in float64).
        step_tol: relative scaled step counted as converged (same defaults).

    Returns:
        :class:`SharedMAPResult`.

    Raises:
        ValueError: y not (B, M) with B >= 2, a shared name that is not a scalar latent
            site, no shared curve parameter, a start outside a prior's support.

    Example:
        >>> import functools
        >>> from gaussmix.models.peaks import peaks
        >>> program = functools.partial(peaks, lineshapes=("gaussian",))
        >>> x = np.linspace(-3.0, 3.0, 30)
        >>> y = np.stack([h * np.exp(-0.5 * ((x - c) / 0.8) ** 2)
        ...               for h, c in ((1.0, -0.2), (2.0, 0.3))]) + 0.01 * np.sin(7 * x)
        >>> init = {"peak0_height": [1.0, 2.0], "peak0_center": 0.0, "peak0_sigma": 1.0,
        ...         "sigma": 0.1}
        >>> result = fit_shared_map(program, x, y, init, ("peak0_sigma",))
        >>> round(result.shared_params["peak0_sigma"], 3), result.converged
        (0.8, True)
        >>> [round(float(center), 3) for center in result.params["peak0_center"]]
        [-0.2, 0.3]
    """
    dtype = np.dtype(jnp.result_type(float))
    x = np.asarray(x, dtype)
    y = np.asarray(y, dtype)
    if x.ndim != 1 or y.ndim != 2 or y.shape[1] != x.shape[0] or y.shape[0] < 2:
        raise ValueError(
            "Shared parameters need a batch: x of shape (M,) and y of shape (B, M) with "
            f"B >= 2; got {x.shape} and {y.shape}."
        )
    n_spectra = y.shape[0]
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask, bool), y.shape)
        y = np.where(mask, y, dtype.type(0))
    model_kwargs = dict(model_kwargs or {})
    init = {name: np.asarray(value, dtype) for name, value in init.items()}
    probe_kwargs = dict(model_kwargs)
    if mask is not None:
        probe_kwargs["mask"] = mask[0]
    first = {
        name: value[0] if value.ndim == 1 and value.shape[0] == n_spectra else value
        for name, value in init.items()
    }
    latent, observed, family = probe_program(model, x, y[0], first, probe_kwargs)
    names = tuple(name for name, _ in latent)
    shapes = dict(latent)
    missing = [name for name in names if name not in init]
    if missing:
        raise ValueError(f"init must give every latent site: missing {missing}.")
    noise = names.index(noise_site) if noise_site in names else -1
    sites = Sites(names, tuple(shape for _, shape in latent), noise)
    bad = [name for name in shared if name not in names or shapes[name] != ()]
    if bad:
        raise ValueError(
            f"shared names {bad} are not scalar latent sites; the sites are {list(names)} "
            "(tied and fixed parameters are not sites)."
        )
    curve_names = [names[i] for i in sites.curve]
    if any(shapes[name] != () for name in curve_names):
        raise ValueError("Shared fits need scalar latent sites.")
    shared_index = tuple(sorted(curve_names.index(name) for name in shared if name in curve_names))
    if not shared_index:
        raise ValueError(
            f"shared must name at least one curve parameter; got {list(shared)}. (To share "
            "only the noise, fit the spectra stacked.)"
        )
    if len(shared_index) == len(curve_names):
        raise ValueError(
            "Every curve parameter is shared: fit the mean spectrum instead (or leave a "
            "parameter per spectrum)."
        )
    shared_noise = noise >= 0 and names[noise] in shared

    def column(name):
        value = init[name]
        if value.shape not in ((), (n_spectra,)):
            raise ValueError(
                f"init[{name!r}] has shape {value.shape}; expected () or ({n_spectra},)."
            )
        value = np.broadcast_to(value, (n_spectra,))
        if name in shared:
            value = np.full(n_spectra, value.mean(), dtype)
        return value

    theta = np.stack([column(name) for name in curve_names], axis=1)
    noise_start = column(names[noise]) if noise >= 0 else np.ones(n_spectra, dtype)
    key = "float64" if dtype == np.float64 else "float32"
    default_tol, default_step = TOLERANCES[key]
    settings = MAPSettings(
        tol=np.asarray(default_tol if tol is None else tol, dtype),
        step_tol=np.asarray(default_step if step_tol is None else step_tol, dtype),
        max_iter=np.asarray(max_iter, np.int32),
    )
    outputs = _fit_shared_program_for(y.size * theta.shape[1])(
        model, sites, observed, family, shared_index, bool(shared_noise),
        x, y, mask, theta, noise_start, canonical(model_kwargs), settings,
    )  # fmt: skip
    outputs = jax.tree.map(np.asarray, outputs)
    if not np.all(outputs["support"]):
        spectrum, site = (int(i) for i in np.argwhere(~outputs["support"])[0])
        raise ValueError(
            f"init[{names[site]!r}] (spectrum {spectrum}) lies outside the support of its "
            "prior; start inside it or widen the prior."
        )
    started = bool(outputs["started"])

    def known(value):
        return value if started else np.full_like(value, np.nan)

    local_names = [name for i, name in enumerate(curve_names) if i not in shared_index]
    params = {}
    for k, name in enumerate(local_names):
        params[name] = known(outputs["local"][:, k])
    shared_params = {}
    for k, index in enumerate(shared_index):
        shared_params[curve_names[index]] = float(known(outputs["shared"][k]))
        params[curve_names[index]] = np.full(n_spectra, shared_params[curve_names[index]])
    if noise >= 0:
        params[names[noise]] = known(outputs["noise"])
        if shared_noise:
            shared_params[names[noise]] = float(params[names[noise]][0])
    params = {name: params[name] for name in names}
    objective = float(outputs["objective"])
    return SharedMAPResult(
        params=params,
        shared_params=shared_params,
        covariance=known(outputs["covariance"]),
        shared_covariance=known(outputs["shared_covariance"]),
        parameter_names=tuple(curve_names),
        shared_names=tuple(curve_names[i] for i in shared_index),
        objective=objective if started else float("nan"),
        log_likelihood=known(outputs["log_likelihood"]),
        rss=known(outputs["rss"]),
        n_points=outputs["n_points"],
        converged=bool(outputs["converged"]),
        started=started,
        n_iter=int(outputs["n_iter"]),
        initial_in_support=outputs["support"],
    )
