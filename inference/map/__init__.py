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
decrease of :math:`\\sigma^2 F` at most ``tol``, or trust radius at most
``step_tol`` times the scaled parameter norm, or either at machine precision, or the
Newton decrement :math:`\\nabla F^\\top H^{-1} \\nabla F` below ``tol`` nats. A
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

Modules, one concern each:

* :mod:`~gaussmix.inference.map.families`: the observation families (half deviance,
  score, Fisher information); a new family is one row there.
* :mod:`~gaussmix.inference.map.problem`: one spectrum (:class:`MAPProblem`): the
  program's sites, priors and observed site.
* :mod:`~gaussmix.inference.map.levenberg_marquardt`: the pure step,
  ``map_step(state, problem, settings) -> (state, info)`` (``map_propose``, then
  ``keep_accepted``), ``map_init``, and the linear algebra (``inverse_cholesky``).
* :mod:`~gaussmix.inference.map.batch`: the compiled loop over slots of spectra, on one
  device or several, and the covariance after it.
* :mod:`~gaussmix.inference.map.fit`: :func:`fit_map`, the entry point.
* :mod:`~gaussmix.inference.map.shared`: :func:`fit_shared_map`, the joint MAP of a
  batch whose shared sites take one value for all spectra (block-arrow
  Levenberg-Marquardt, Schur complement on the shared block, cost linear in the batch).
"""

from gaussmix.inference.map.fit import TOLERANCES, MAPResult, fit_map
from gaussmix.inference.map.levenberg_marquardt import (
    MAPInfo,
    MAPPoint,
    MAPSettings,
    MAPState,
    map_init,
    map_step,
)
from gaussmix.inference.map.problem import MAPProblem
from gaussmix.inference.map.shared import SharedMAPResult, fit_shared_map

__all__ = [
    "TOLERANCES",
    "MAPInfo",
    "MAPPoint",
    "MAPProblem",
    "MAPResult",
    "MAPSettings",
    "MAPState",
    "SharedMAPResult",
    "fit_map",
    "fit_shared_map",
    "map_init",
    "map_step",
]
