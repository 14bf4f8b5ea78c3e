"""EM and MAP-EM for the Gaussian mixture program :func:`gaussmix.models.gaussian_mixture`.

One call of :func:`fit_em` is one ``jax.jit``-compiled program: every EM iteration runs
inside a ``lax.while_loop``, the ``n_init`` restarts run one after another (``lax.map``:
restart 0 is the ``n_init=1`` fit to the last bit), the best restart is chosen by its
lower bound, and ``B`` independent datasets of one shape (``x`` of shape (B, N, D)) are
vmapped. A second call with the same shapes does not recompile.

E-step in exponential-family form. On data centred at :math:`c` (the weighted data mean)
the log density of component :math:`k` with precision :math:`P_k` is linear in the
per-point features :math:`\\phi(x) = [\\operatorname{vech}(x x^T), x, 1]`:

.. math::

    \\log \\pi_k + \\log \\mathcal{N}(x \\mid \\mu_k, P_k^{-1})
      = -\\tfrac12 x^T P_k x + x^T P_k \\mu_k
        - \\tfrac12 \\mu_k^T P_k \\mu_k + \\tfrac12 \\log |P_k|
        - \\tfrac{D}{2} \\log 2\\pi + \\log \\pi_k
      = \\phi(x)^T \\eta_k,

so the weighted log probabilities of a block of rows are one (n, F) @ (F, K) matrix
product with the natural parameters :math:`\\eta` (F = D(D+1)/2 + D + 1 for ``full``,
2D + 1 for ``diag``, D + 2 for ``spherical``; ``tied`` adds the shared quadratic form
row by row). The M-step needs only the sufficient statistics

.. math::

    N_k = \\sum_n w_n r_{nk},\\quad s_k = \\sum_n w_n r_{nk} x_n,\\quad
    S_k = \\sum_n w_n r_{nk} x_n x_n^T,

which are the matrix product :math:`(w \\odot r)^T \\Phi` of the same features. Rows are
processed in blocks by ``lax.scan``, so no N x K x D temporary and no full N x F feature
matrix is ever formed. On a CPU a full-covariance E-step is one compiled kernel instead
(:mod:`gaussmix.inference.native`: features, both products and the softmax fused per
cache-sized block; the same statistics to rounding), where a C++ compiler is available.
:func:`sufficient_statistics` and :func:`maximization_step` are pure: summing the
statistics of several blocks, files or devices (``lax.psum``) before the M-step gives
exact EM.

M-step:

* ``priors=None``: maximum likelihood, scikit-learn's ``GaussianMixture`` formulas
  (including ``reg_covar`` on the diagonal and the ``10 * eps`` added to :math:`N_k`).
* ``priors="default"`` or conjugate user priors (Dirichlet weights, inverse Wishart
  covariances, inverse gamma variances, with the program's mean prior
  :math:`\\mu_k \\mid \\Sigma_k \\sim \\mathcal{N}(m_0, \\Sigma_k/\\kappa_0)`): the closed-form
  MAP, e.g. for ``full``

  .. math::

      \\pi_k \\propto N_k + \\alpha_k - 1,\\quad
      \\mu_k = \\frac{s_k + \\kappa_0 m_0}{N_k + \\kappa_0},\\quad
      \\Sigma_k = \\frac{\\Psi_0 + S_k(\\mu_k) + \\kappa_0 (\\mu_k - m_0)(\\mu_k - m_0)^T}
                       {N_k + \\nu_0 + D + 2}.

* any other priors: generalized EM; the M-step climbs the expected complete-data log
  posterior (log prior from the NumPyro program, likelihood from the statistics) by BFGS
  in the unconstrained space of each site's support, and keeps the step only if it does
  not decrease the objective.

The package is split by concern, one module each: :mod:`~gaussmix.inference.em.options`
(:class:`EMOptions`, validated once), :mod:`~gaussmix.inference.em.parameters`,
:mod:`~gaussmix.inference.em.features` (design matrix, natural parameters, blocks),
:mod:`~gaussmix.inference.em.statistics` (E-step), :mod:`~gaussmix.inference.em.maximization`
(closed-form M-steps per covariance family), :mod:`~gaussmix.inference.em.generalized`,
:mod:`~gaussmix.inference.em.kmeans`, :mod:`~gaussmix.inference.em.initialization`,
:mod:`~gaussmix.inference.em.core` (``EMState``, ``EMInfo``, ``init``, ``step``: the one EM
step every execution mode shares), :mod:`~gaussmix.inference.em.results` and
:mod:`~gaussmix.inference.em.fit` (the compiled in-memory driver).

The lower bound is scikit-learn's: the mean per-sample log-likelihood (weighted mean with
``sample_weight``) of the parameters entering the iteration, plus the log prior divided
by the total weight for MAP; iterations stop when it changes by less than ``tol``.
"""

from gaussmix.inference.em.core import (
    EMContext,
    EMInfo,
    EMState,
    StepConfig,
    init,
    iterate,
    make_context,
    step,
)
from gaussmix.inference.em.features import design_matrix, natural_parameters
from gaussmix.inference.em.fit import fit_em
from gaussmix.inference.em.generalized import program_log_prior
from gaussmix.inference.em.initialization import initialize, restart_key
from gaussmix.inference.em.kmeans import KMeansResult, kmeans_plusplus, lloyd
from gaussmix.inference.em.maximization import (
    ConjugatePrior,
    conjugate_log_prior,
    maximization_step,
    n_parameters,
)
from gaussmix.inference.em.options import (
    INIT_PARAMS,
    METHODS,
    EMOptions,
    check_options,
    hierarchical_model,
    key_of,
)
from gaussmix.inference.em.parameters import (
    MixtureParameters,
    covariances_from_precisions_cholesky,
    lower_triangular_inverse,
    precisions_cholesky_from_covariances,
    precisions_cholesky_from_precisions,
    site_values,
)
from gaussmix.inference.em.results import ConvergenceWarning, EMResult
from gaussmix.inference.em.statistics import (
    SufficientStatistics,
    estimate_weighted_log_prob,
    log_responsibilities,
    sufficient_statistics,
)
from gaussmix.inference.em.validation import check_finite_input, precision_advice

__all__ = [
    "INIT_PARAMS",
    "METHODS",
    "ConjugatePrior",
    "ConvergenceWarning",
    "EMContext",
    "EMInfo",
    "EMOptions",
    "EMResult",
    "EMState",
    "KMeansResult",
    "MixtureParameters",
    "StepConfig",
    "SufficientStatistics",
    "check_finite_input",
    "check_options",
    "conjugate_log_prior",
    "covariances_from_precisions_cholesky",
    "design_matrix",
    "estimate_weighted_log_prob",
    "fit_em",
    "hierarchical_model",
    "init",
    "initialize",
    "iterate",
    "key_of",
    "kmeans_plusplus",
    "lloyd",
    "log_responsibilities",
    "lower_triangular_inverse",
    "make_context",
    "maximization_step",
    "n_parameters",
    "natural_parameters",
    "precision_advice",
    "precisions_cholesky_from_covariances",
    "precisions_cholesky_from_precisions",
    "program_log_prior",
    "restart_key",
    "site_values",
    "step",
    "sufficient_statistics",
]
