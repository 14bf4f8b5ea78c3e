"""Dirichlet-process and Dirichlet mixtures of Gaussians as NumPyro programs.

Both programs are :func:`gaussmix.models.gaussian_mixture` with another prior on the
weights (the components' means and covariances keep that program's priors,
parameterisation, covariance types and imperfect-data options), so the observed site
``x`` has the labels summed out and its pointwise log-likelihood is the marginal one
that PSIS-LOO needs:

.. math::

    \\log p(x_n \\mid \\theta) = \\log \\sum_{k=1}^{K} \\pi_k\\,
        \\mathcal{N}(x_n \\mid \\mu_k, \\Sigma_k).

:func:`dirichlet_process_mixture` truncates the stick-breaking construction of a
Dirichlet process at :math:`K` = ``max_components`` sticks,

.. math::

    v_k \\sim \\mathrm{Beta}(1, \\alpha)\\ (k < K),\\qquad
    \\pi_k = v_k \\prod_{j<k} (1 - v_j),\\qquad
    \\pi_K = \\prod_{j<K} (1 - v_j),

so that :math:`E[\\pi_k] = \\frac{1}{1+\\alpha}\\left(\\frac{\\alpha}{1+\\alpha}
\\right)^{k-1}` for :math:`k < K` and :math:`E[\\pi_K] = (\\frac{\\alpha}{1+\\alpha})^{K-1}`.
The site is ``weights`` itself, distributed as :class:`StickBreakingWeights`: the density
of :math:`\\pi` on the simplex follows from that of the sticks by the change of
variables :math:`v_k = \\pi_k / r_k`, :math:`r_k = \\sum_{j \\ge k} \\pi_j` (triangular,
Jacobian :math:`\\prod_{k<K} r_k`),

.. math::

    \\log p(\\pi \\mid \\alpha) = \\sum_{k<K} \\left[\\log \\mathrm{Beta}(v_k \\mid 1,
        \\alpha) - \\log r_k\\right] = (K-1)\\log\\alpha + (\\alpha - 1)\\log \\pi_K -
        \\sum_{k=2}^{K-1} \\log r_k .

NUTS moves on numpyro's unconstrained simplex coordinates, which are themselves the
logits of the sticks (shifted), so this is the same geometry as sampling :math:`v`.
:func:`dirichlet_mixture` is the finite counterpart,
:math:`\\pi \\sim \\mathrm{Dirichlet}(\\alpha/K, \\ldots, \\alpha/K)`, whose limit as
:math:`K \\to \\infty` is the Dirichlet process of concentration :math:`\\alpha`. In both
the concentration is a fixed number or, given a distribution (e.g. ``Gamma(1, 1)``), the
latent site ``concentration``.

Example:
    >>> import jax, numpy as np
    >>> draws = StickBreakingWeights(1.0, 4).sample(jax.random.key(0), (2000,))
    >>> expected = [1 / 2, 1 / 4, 1 / 8, 1 / 8]  # alpha = 1
    >>> bool(np.allclose(draws.mean(0), expected, atol=0.03))
    True
"""

from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike
from numpyro.distributions import constraints

from gaussmix.models.mixture import gaussian_mixture
from gaussmix.models.priors import (
    MixturePriorParameters,
    check_prior_parameters,
    check_prior_support,
)

__all__ = [
    "StickBreakingWeights",
    "check_concentration",
    "check_count",
    "dirichlet_mixture",
    "dirichlet_process_mixture",
    "stick_breaking_weights",
]


def stick_breaking_weights(sticks: ArrayLike) -> jax.Array:
    """Weights :math:`\\pi` (..., K) from the K - 1 sticks :math:`v` (..., K - 1).

    .. math::

        \\pi_k = v_k \\prod_{j<k}(1 - v_j),\\qquad \\pi_K = \\prod_{j<K}(1 - v_j).

    Example:
        >>> stick_breaking_weights(np.array([0.5, 0.5])).tolist()
        [0.5, 0.25, 0.25]
    """
    sticks = jnp.asarray(sticks)
    log_rest = jnp.cumsum(jnp.log1p(-sticks), axis=-1)  # log prod_{j<=k} (1 - v_j)
    log_before = jnp.concatenate([jnp.zeros_like(log_rest[..., :1]), log_rest], axis=-1)
    taken = jnp.concatenate([sticks, jnp.ones_like(sticks[..., :1])], axis=-1)
    return taken * jnp.exp(log_before)


class StickBreakingWeights(dist.Distribution):
    """The weights of a Dirichlet process truncated at K sticks (GEM(alpha), truncated).

    Draws :math:`v_k \\sim \\mathrm{Beta}(1, \\alpha)`, k < K, and returns
    :func:`stick_breaking_weights`; its log density on the simplex is that of the sticks
    less the log Jacobian (module docstring). The remaining stick lengths
    :math:`r_k = \\sum_{j \\ge k}\\pi_j` are summed from the end, so tiny tail weights
    keep their relative precision.

    Args:
        concentration: :math:`\\alpha > 0`, a scalar.
        n_components: K >= 1 (K = 1 is the point mass on (1,)).

    Example:
        >>> prior = StickBreakingWeights(2.0, 2)  # pi_1 ~ Beta(1, 2)
        >>> from scipy import stats
        >>> bool(np.isclose(prior.log_prob(np.array([0.3, 0.7])), stats.beta(1, 2).logpdf(0.3)))
        True
    """

    arg_constraints: ClassVar[dict] = {"concentration": constraints.positive}
    support = constraints.simplex
    pytree_data_fields = ("concentration",)
    pytree_aux_fields = ("n_components",)

    def __init__(self, concentration, n_components: int, *, validate_args=None):
        if not isinstance(n_components, int | np.integer) or n_components < 1:
            raise ValueError(
                f"Invalid number of sticks {n_components!r}; it must be an integer >= 1."
            )
        self.concentration = jnp.asarray(concentration)
        if self.concentration.ndim != 0:
            raise ValueError(
                f"concentration must be a scalar, got shape {self.concentration.shape}; "
                "use jax.vmap for batches."
            )
        self.n_components = int(n_components)
        super().__init__(
            batch_shape=(), event_shape=(self.n_components,), validate_args=validate_args
        )

    def sample(self, key, sample_shape=()):
        shape = (*sample_shape, self.n_components - 1)
        sticks = dist.Beta(1.0, self.concentration).sample(key, shape)
        return stick_breaking_weights(sticks)

    def log_prob(self, value):
        value = jnp.asarray(value)
        K = self.n_components
        if K == 1:
            return jnp.zeros(value.shape[:-1], value.dtype)
        alpha = self.concentration
        remaining = jnp.flip(jnp.cumsum(jnp.flip(value, -1), -1), -1)  # r_1 .. r_K
        return (
            (K - 1) * jnp.log(alpha)
            + (alpha - 1) * jnp.log(value[..., -1])
            - jnp.sum(jnp.log(remaining[..., 1 : K - 1]), axis=-1)
        )


def _is_concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


def _concentration(concentration) -> jax.Array | float:
    """The fixed concentration (checked where concrete) or the ``concentration`` site."""
    check_concentration(concentration)
    if isinstance(concentration, dist.Distribution):
        return numpyro.sample("concentration", concentration)
    return concentration


def check_concentration(concentration) -> None:
    """Refuse a concentration that is not a finite number > 0 (checked where concrete) or
    a scalar distribution on the positive reals; the programs and their samplers call it.

    Example:
        >>> check_concentration(0.0)
        Traceback (most recent call last):
        ...
        ValueError: Invalid concentration 0.0; it must be a finite number > 0 (small values favour few occupied components).
    """
    if isinstance(concentration, dist.Distribution):
        check_prior_support(
            concentration,
            "concentration",
            constraints.positive,
            where="the concentration is a positive number",
            advice="use e.g. Gamma(1.0, 1.0)",
        )
        if concentration.batch_shape or concentration.event_shape:
            raise ValueError(
                "The concentration's prior must be a scalar distribution, got batch shape "
                f"{concentration.batch_shape} and event shape {concentration.event_shape}."
            )
        check_prior_parameters(concentration, "concentration")
        return
    if isinstance(concentration, bool) or not isinstance(
        concentration, int | float | np.number | np.ndarray | jax.Array
    ):
        raise ValueError(
            f"concentration must be a number > 0 or a numpyro distribution on the positive "
            f"reals (e.g. Gamma(1.0, 1.0)), got {type(concentration).__name__}."
        )
    if np.ndim(concentration) != 0:
        raise ValueError(f"concentration must be a scalar, got shape {np.shape(concentration)}.")
    if _is_concrete(concentration) and not (
        np.isfinite(float(concentration)) and float(concentration) > 0
    ):
        raise ValueError(
            f"Invalid concentration {float(concentration)!r}; it must be a finite number "
            "> 0 (small values favour few occupied components)."
        )


def check_count(name: str, value) -> int:
    """``value`` as an int, refused unless an integer >= 1 (``name`` in the message)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"Invalid value for {name!r}: {value!r}; it must be an integer >= 1.")
    return int(value)


def _other_priors(priors: Mapping | None, program: str) -> dict:
    if priors is None:
        return {}
    if not isinstance(priors, Mapping):
        raise ValueError(
            "priors must be a dict mapping a site name to a numpyro distribution, "
            f"got {type(priors).__name__}."
        )
    if "weights" in priors:
        raise ValueError(
            f"{program} sets the weights' prior from its concentration: pass "
            "concentration= (a number or a distribution) instead of priors['weights']."
        )
    return dict(priors)


def dirichlet_process_mixture(
    x: ArrayLike | None = None,
    *,
    max_components: int,
    concentration: float | dist.Distribution = 1.0,
    covariance_type: str = "full",
    priors: Mapping[str, dist.Distribution] | None = None,
    sample_weight: ArrayLike | None = None,
    prior_parameters: MixturePriorParameters | None = None,
    n_samples: int | None = None,
    n_features: int | None = None,
    nan_policy: str = "raise",
    missing_patterns=None,
    measurement_covariances: ArrayLike | None = None,
) -> None:
    """Dirichlet-process Gaussian mixture, stick-breaking truncated at ``max_components``.

    Sites: ``concentration`` (when given a distribution), ``weights``
    (:class:`StickBreakingWeights`), ``means`` and the covariance site, observed ``x``
    (labels summed out), as :func:`gaussmix.models.gaussian_mixture`.

    Args:
        x: (N, D) observations, (N,) read as D = 1; ``None`` simulates from the prior
            (give ``n_samples``, ``n_features``).
        max_components: the truncation K >= 1. Take it well above the number of
            components you expect: the sticks beyond the occupied ones carry the prior's
            remaining mass, about :math:`(\\alpha/(1+\\alpha))^{K-1}` in the last.
        concentration: :math:`\\alpha > 0`, or a distribution on the positive reals
            (e.g. ``numpyro.distributions.Gamma(1.0, 1.0)``) for the latent site
            ``concentration``.
        covariance_type, priors, sample_weight, prior_parameters, n_samples, n_features,
            nan_policy, missing_patterns, measurement_covariances: as in
            :func:`gaussmix.models.gaussian_mixture` (``priors`` without ``weights``).

    Example:
        >>> import numpyro
        >>> from numpyro.infer.util import log_density
        >>> x = np.array([[-2.0], [-1.5], [2.0]])
        >>> value, trace = log_density(dirichlet_process_mixture, (x,), {"max_components": 3},
        ...     {"weights": np.array([0.5, 0.3, 0.2]), "means": np.array([[-2.0], [2.0], [0.0]]),
        ...      "covariances": np.ones((3, 1, 1))})
        >>> trace["weights"]["fn"].__class__.__name__, bool(np.isfinite(value))
        ('StickBreakingWeights', True)
    """
    _concentration_mixture(
        "dirichlet_process_mixture", "max_components", StickBreakingWeights, locals()
    )


def dirichlet_mixture(
    x: ArrayLike | None = None,
    *,
    n_components: int,
    concentration: float | dist.Distribution = 1.0,
    covariance_type: str = "full",
    priors: Mapping[str, dist.Distribution] | None = None,
    sample_weight: ArrayLike | None = None,
    prior_parameters: MixturePriorParameters | None = None,
    n_samples: int | None = None,
    n_features: int | None = None,
    nan_policy: str = "raise",
    missing_patterns=None,
    measurement_covariances: ArrayLike | None = None,
) -> None:
    """Finite Gaussian mixture with :math:`\\pi \\sim \\mathrm{Dirichlet}(\\alpha/K \\mathbf 1_K)`.

    The total concentration :math:`\\alpha` is split over the K components (scikit-learn's
    ``weight_concentration_prior`` is the per-component :math:`\\alpha/K`); small values
    empty the superfluous components. Sites and arguments as
    :func:`dirichlet_process_mixture`, with ``n_components`` in place of
    ``max_components``.

    Example:
        >>> from numpyro.infer.util import log_density
        >>> point = {"weights": np.full(4, 0.25), "means": np.zeros((4, 1)),
        ...          "covariances": np.ones((4, 1, 1))}
        >>> _, trace = log_density(dirichlet_mixture, (np.array([[0.0], [1.0]]),),
        ...                        {"n_components": 4, "concentration": 2.0}, point)
        >>> trace["weights"]["fn"].concentration.tolist()
        [0.5, 0.5, 0.5, 0.5]
    """
    _concentration_mixture("dirichlet_mixture", "n_components", _symmetric_dirichlet, locals())


def _symmetric_dirichlet(alpha, K: int) -> dist.Dirichlet:
    """:math:`\\mathrm{Dirichlet}(\\alpha/K \\mathbf 1_K)`: the total concentration split
    over the K components."""
    return dist.Dirichlet(jnp.full((K,), 1.0) * (alpha / K))


def _concentration_mixture(program: str, count_name: str, weights_prior, arguments: dict) -> None:
    """The body of both programs: ``arguments`` are the program's own (its ``locals()``
    on entry), ``count_name`` the one that holds K, ``weights_prior(alpha, K)`` the
    weights' distribution. Checks K, then ``priors`` (no ``weights``), then the
    concentration (sampling the ``concentration`` site when it is a distribution), and
    runs :func:`gaussian_mixture` with K components and those weights."""
    options = dict(arguments)
    K = check_count(count_name, options.pop(count_name))
    priors = _other_priors(options.pop("priors"), program)
    alpha = _concentration(options.pop("concentration"))
    priors["weights"] = weights_prior(alpha, K)
    gaussian_mixture(n_components=K, priors=priors, **options)
