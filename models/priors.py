"""Default conjugate priors of the Gaussian mixture, scaled from the data.

The hyperparameters follow scikit-learn's ``BayesianGaussianMixture`` defaults so that
the mixture program's default prior is weakly informative and the MAP M-step of the EM
back end stays closed form:

.. math::

    \\pi &\\sim \\mathrm{Dirichlet}(\\alpha \\mathbf{1}_K), \\\\
    \\Sigma_k &\\sim \\mathcal{W}^{-1}(\\nu_0, \\Psi_0), \\qquad
    \\mu_k \\mid \\Sigma_k \\sim \\mathcal{N}(m_0, \\Sigma_k / \\kappa_0),

with :math:`\\alpha = 1`, :math:`m_0` the data mean, :math:`\\kappa_0 = 1`,
:math:`\\nu_0 = D` and :math:`\\Psi_0` the sample covariance of the data (its diagonal for
``diag``, the mean of that diagonal for ``spherical``; diagonal and spherical variances get
the one-dimensional inverse Wishart, :math:`\\mathrm{InvGamma}(\\nu_0/2, \\psi_0/2)`).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.typing import ArrayLike
from numpyro.distributions import constraints

#: The four classic covariance types (scikit-learn's names and storage layouts).
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

#: mclust's 14 models :math:`\\Sigma_k = \\lambda_k D_k A_k D_k^T` (Celeux & Govaert 1995):
#: volume :math:`\\lambda`, shape :math:`A` (diagonal, :math:`|A| = 1`) and orientation
#: :math:`D` (orthogonal), each Equal across components, Variable, or the Identity.
MCLUST_MODELS = (
    "EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE",
    "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV",
)  # fmt: skip

#: mclust's names of the four classic types: the same code, the same numbers.
COVARIANCE_ALIASES = {"VVV": "full", "EEE": "tied", "VVI": "diag", "VII": "spherical"}

#: Every covariance type the EM back end fits: the four classic ones and mclust's 14.
EM_COVARIANCE_TYPES = COVARIANCE_TYPES + tuple(
    name for name in MCLUST_MODELS if name not in COVARIANCE_ALIASES
)

#: The covariance types of the NumPyro program (and so of NUTS): the same as EM's.
PROGRAM_COVARIANCE_TYPES = EM_COVARIANCE_TYPES

#: Covariance type -> the classic type whose storage its covariances use (and so its
#: E-step statistics and precision factors): (K,) spherical, (K, D) diag, (D, D) tied,
#: (K, D, D) full. A constrained model stores its covariances in the smallest layout
#: that holds every component's (EII: one variance repeated K times).
COVARIANCE_LAYOUTS = {
    **{name: name for name in COVARIANCE_TYPES},
    **COVARIANCE_ALIASES,
    "EII": "spherical",
    "EEI": "diag",
    "VEI": "diag",
    "EVI": "diag",
    **{name: "full" for name in ("VEE", "EVE", "VVE", "EEV", "VEV", "EVV")},
}

_LAYOUT_SITES = {
    "full": "covariances",
    "tied": "covariance",
    "diag": "variances",
    "spherical": "variances",
}

#: Name of the covariance site of each covariance type (that of its layout).
COVARIANCE_SITES = {name: _LAYOUT_SITES[layout] for name, layout in COVARIANCE_LAYOUTS.items()}


#: Support of the value of each site (one component's value for the per-component sites);
#: the sites of mclust's constrained models are in :mod:`gaussmix.models.eigen_covariance`.
SITE_SUPPORTS = {
    "weights": constraints.simplex,
    "means": constraints.real_vector,
    "covariances": constraints.positive_definite,
    "covariance": constraints.positive_definite,
    "variances": constraints.positive,
    "scales": constraints.positive,
    "volume": constraints.positive,
    "volumes": constraints.positive,
    "log_shape": constraints.real_vector,
    "log_shapes": constraints.real_vector,
    "orientation_basis": constraints.real,
    "orientation_bases": constraints.real,
}


class MixturePriorParameters(NamedTuple):
    """Hyperparameters of the conjugate default prior.

    Attributes:
        weight_concentration: Dirichlet concentration :math:`\\alpha` (scalar).
        mean_prior: :math:`m_0`, shape (D,).
        mean_precision: :math:`\\kappa_0` (scalar).
        degrees_of_freedom: :math:`\\nu_0` (scalar), > D - 1 for full and tied.
        covariance_prior: :math:`\\Psi_0`: (D, D) for full and tied, (D,) for diag,
            scalar for spherical.
    """

    weight_concentration: ArrayLike
    mean_prior: ArrayLike
    mean_precision: ArrayLike
    degrees_of_freedom: ArrayLike
    covariance_prior: ArrayLike


def check_covariance_type(covariance_type: str) -> None:
    """Raise ValueError unless ``covariance_type`` is one of the program's types: the
    four classic ones and mclust's 14 (:data:`PROGRAM_COVARIANCE_TYPES`, the aliases
    VVV, EEE, VVI, VII included), the same as the EM back end's.

    Example:
        >>> check_covariance_type("EVE")
    """
    check_em_covariance_type(covariance_type)


def check_em_covariance_type(covariance_type: str) -> None:
    """Raise ValueError unless ``covariance_type`` is one the EM back end fits.

    Example:
        >>> check_em_covariance_type("VEV")
    """
    if not isinstance(covariance_type, str) or covariance_type not in COVARIANCE_LAYOUTS:
        raise ValueError(
            f"Invalid value for 'covariance_type': {covariance_type!r}; "
            f"'covariance_type' should be in {list(EM_COVARIANCE_TYPES)} or an alias "
            f"among {list(COVARIANCE_ALIASES)} (mclust's names of the classic four)."
        )


def covariance_layout(covariance_type: str) -> str:
    """The classic type whose storage ``covariance_type`` uses (see
    :data:`COVARIANCE_LAYOUTS`).

    Example:
        >>> covariance_layout("EEV"), covariance_layout("EII"), covariance_layout("tied")
        ('full', 'spherical', 'tied')
    """
    check_em_covariance_type(covariance_type)
    return COVARIANCE_LAYOUTS[covariance_type]


def canonical_covariance_type(covariance_type: str) -> str:
    """The classic name of an alias (``"VVV"`` -> ``"full"``), any other name as it is.

    Example:
        >>> canonical_covariance_type("EEE"), canonical_covariance_type("EVE")
        ('tied', 'EVE')
    """
    check_em_covariance_type(covariance_type)
    return COVARIANCE_ALIASES.get(covariance_type, covariance_type)


def default_prior_parameters(
    x: ArrayLike | None,
    covariance_type: str = "full",
    *,
    n_features: int | None = None,
) -> MixturePriorParameters:
    """Default hyperparameters, scaled from data ``x`` of shape (N, D).

    Without data (prior predictive simulation) the prior is centred at the origin with
    identity scale in ``n_features`` dimensions.

    Example:
        >>> import numpy as np
        >>> p = default_prior_parameters(np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 2.0]]))
        >>> p.mean_prior.tolist(), p.covariance_prior.shape
        ([2.0, 2.0], (2, 2))
    """
    covariance_type = covariance_layout(covariance_type)
    dtype = jnp.asarray(0.0).dtype
    if x is None:
        if n_features is None:
            raise ValueError("Without data, give n_features to build the default prior.")
        mean = jnp.zeros(n_features, dtype)
        covariance = jnp.eye(n_features, dtype=dtype)
    else:
        data = jnp.asarray(x, dtype=dtype)
        if data.ndim == 1:
            data = data[:, None]
        mean = data.mean(axis=0)
        if data.shape[0] > 1:
            centred = data - mean
            covariance = centred.T @ centred / (data.shape[0] - 1)
        else:
            covariance = jnp.eye(data.shape[1], dtype=dtype)
        # A constant feature would give a singular prior scale: load the diagonal.
        floor = 1e-6 * jnp.maximum(jnp.trace(covariance) / covariance.shape[0], 1e-12)
        covariance = covariance + floor * jnp.eye(covariance.shape[0], dtype=dtype)
    n_dims = mean.shape[0]
    if covariance_type in ("full", "tied"):
        covariance_prior = covariance
    elif covariance_type == "diag":
        covariance_prior = jnp.diag(covariance)
    else:
        covariance_prior = jnp.diag(covariance).mean()
    return MixturePriorParameters(
        weight_concentration=jnp.asarray(1.0, dtype),
        mean_prior=mean,
        mean_precision=jnp.asarray(1.0, dtype),
        degrees_of_freedom=jnp.asarray(float(n_dims), dtype),
        covariance_prior=covariance_prior,
    )


# ---------------------------------------------------------------------------------------
# Supports: is a prior's support inside its site's support?


def _element_constraint(constraint: constraints.Constraint) -> constraints.Constraint:
    """The constraint on one entry: ``independent`` wrappers (``real_vector`` too) removed."""
    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    return constraint


def _at_least(value, bound) -> bool:
    """``value >= bound`` everywhere; a traced value (inside ``jax.jit``) cannot be read."""
    if isinstance(value, jax.core.Tracer):
        return True
    value = np.asarray(value)
    return bool(np.all(value >= bound)) and not np.any(np.isnan(value))


def support_within(
    distribution_support: constraints.Constraint, site_support: constraints.Constraint
) -> bool:
    """Whether every value of ``distribution_support`` lies in ``site_support``.

    Compares entry-wise constraints (``independent`` wrappers removed; event shapes are
    checked separately) and is conservative: a pair it does not know is ``False``. It knows

    * real (``real``, ``real_vector``): every continuous constraint on reals
      (``greater_than``, ``less_than``, ``interval``, ``positive``, ``ordered_vector``, ...);
    * ``greater_than(b)`` (``positive`` is b = 0): ``greater_than(c)``,
      ``greater_than_eq(c)`` and ``interval(c, d)`` with c >= b, ``positive_ordered_vector``
      (b <= 0); a closed bound at b is a set of zero probability for a continuous prior,
      so ``Uniform(0, 10)`` lies in ``positive``;
    * ``interval(a, b)``: intervals with both bounds inside;
    * ``simplex``: ``simplex``;
    * ``positive_definite``: ``positive_definite`` and ``corr_matrix`` (LKJ); not Cholesky
      factors (``lower_cholesky``, ``corr_cholesky``), whose values are not the matrix.

    Discrete and ``dependent`` supports are never within (the sites are continuous). Bounds that are JAX
    tracers (inside ``jax.jit``) cannot be compared and count as inside; the back ends
    check their priors before tracing, with concrete bounds.

    Args:
        distribution_support: a prior's ``.support``.
        site_support: the site's, e.g. ``SITE_SUPPORTS["variances"]``.

    Example:
        >>> import numpyro.distributions as dist
        >>> support_within(dist.HalfNormal(1.0).support, constraints.positive)
        True
        >>> support_within(dist.Uniform(0.0, 10.0).support, constraints.positive)
        True
        >>> support_within(dist.Normal(0.0, 1.0).support, constraints.positive)
        False
        >>> support_within(dist.Normal(0.0, 1.0).support, constraints.simplex)
        False
    """
    inner = _element_constraint(distribution_support)
    outer = _element_constraint(site_support)
    if constraints.is_dependent(inner) or constraints.is_dependent(outer):
        return False  # known only from a distribution's parameters
    if inner.is_discrete or outer.is_discrete:
        return False
    if isinstance(outer, type(constraints.real)):
        return isinstance(
            inner,
            type(constraints.real)
            | constraints.greater_than
            | constraints.less_than
            | constraints.interval
            | type(constraints.ordered_vector)
            | type(constraints.positive_ordered_vector),
        )
    if isinstance(outer, constraints.greater_than):
        bound = outer.lower_bound
        if isinstance(inner, constraints.greater_than | constraints.interval):
            return _at_least(inner.lower_bound, bound)
        return isinstance(inner, type(constraints.positive_ordered_vector)) and _at_least(
            0.0, bound
        )
    if isinstance(outer, constraints.interval):
        return (
            isinstance(inner, constraints.interval)
            and _at_least(inner.lower_bound, outer.lower_bound)
            and _at_least(-np.asarray(inner.upper_bound), -np.asarray(outer.upper_bound))
        )
    if isinstance(outer, type(constraints.simplex)):
        return isinstance(inner, type(constraints.simplex))
    if isinstance(outer, type(constraints.positive_definite)):
        return isinstance(
            inner, type(constraints.positive_definite) | type(constraints.corr_matrix)
        )
    return False


_SUPPORT_NAMES = (
    (type(constraints.simplex), "the simplex"),
    (type(constraints.positive_definite), "positive definite matrices"),
    (type(constraints.positive_semidefinite), "positive semidefinite matrices"),
    (type(constraints.corr_matrix), "correlation matrices"),
    (type(constraints.corr_cholesky), "Cholesky factors of correlation matrices"),
    (type(constraints.lower_cholesky), "lower Cholesky factors"),
    (type(constraints.ordered_vector), "ordered vectors"),
    (type(constraints.positive_ordered_vector), "positive ordered vectors"),
    (type(constraints.real), "real"),
)


def describe_support(support: constraints.Constraint) -> str:
    """A short name of a support for error messages: "real", "positive", "the simplex".

    Example:
        >>> describe_support(constraints.independent(constraints.positive, 1))
        'positive'
        >>> describe_support(constraints.interval(0.0, 10.0))
        'the interval [0.0, 10.0]'
    """
    element = _element_constraint(support)
    if constraints.is_dependent(element):
        return "unknown (dependent on the parameters)"
    if element.is_discrete:
        return f"discrete ({element!r})"
    for kind, name in _SUPPORT_NAMES:
        if isinstance(element, kind):
            return name
    if isinstance(element, type(constraints.positive)) or (
        type(element) is type(constraints.softplus_positive)
    ):
        return "positive"
    if isinstance(element, constraints.interval):
        return f"the interval [{element.lower_bound}, {element.upper_bound}]"
    if isinstance(element, constraints.greater_than_eq):
        return f">= {element.lower_bound}"
    if isinstance(element, constraints.greater_than):
        return f"> {element.lower_bound}"
    if isinstance(element, constraints.less_than):
        return f"< {element.upper_bound}"
    return repr(element)


# ---------------------------------------------------------------------------------------
# Checks of a user's prior, shared by the mixture and peak programs


def per_component_prior(
    distribution: dist.Distribution, event_shape: tuple, site: str, n_components: int
) -> dist.Distribution:
    """Adapt a user's prior to one component's value of shape ``event_shape``.

    Accepted: event shape ``event_shape`` with batch shape () (shared by the components)
    or (K,) (one prior per component); or a scalar distribution of batch shape (),
    ``event_shape`` or (K, *event_shape), whose entries become the event.

    Example:
        >>> per_component_prior(dist.HalfNormal(1.0), (2,), "scales", 3).event_shape
        (2,)
    """
    event_shape, batch_shape = tuple(event_shape), tuple(distribution.batch_shape)
    per_component = ((), (n_components,))
    if tuple(distribution.event_shape) == event_shape and batch_shape in per_component:
        return distribution
    if distribution.event_shape == () and event_shape:
        if batch_shape in ((), event_shape):
            return distribution.expand(event_shape).to_event(len(event_shape))
        if batch_shape == (n_components, *event_shape):
            return distribution.to_event(len(event_shape))
    raise ValueError(
        f"priors[{site!r}] has event shape {tuple(distribution.event_shape)} and batch shape "
        f"{batch_shape}; it must describe one component's value of shape {event_shape} "
        f"(batch shape () shared by the components, or ({n_components},), one per component; "
        "a scalar distribution is expanded to that shape)."
    )


def whole_site_prior(distribution: dist.Distribution, shape: tuple, site: str) -> dist.Distribution:
    """Check a prior on a whole site (``weights``, the tied ``covariance``): one value.

    Example:
        >>> whole_site_prior(dist.Dirichlet(np.ones(3)), (3,), "weights").event_shape
        (3,)
    """
    if tuple(distribution.event_shape) != tuple(shape) or tuple(distribution.batch_shape) != ():
        raise ValueError(
            f"priors[{site!r}] has event shape {tuple(distribution.event_shape)} and batch "
            f"shape {tuple(distribution.batch_shape)}; it must be one distribution of the whole "
            f"{site} site: event shape {tuple(shape)}, batch shape ()."
        )
    return distribution


def shared_prior(distribution: dist.Distribution, shape: tuple, site: str) -> dist.Distribution:
    """Adapt a user's prior to a site shared by the components, of shape ``shape``.

    Accepted: event shape ``shape`` with batch shape (); or a scalar distribution of
    batch shape () or ``shape``, whose entries become the event.

    Example:
        >>> shared_prior(dist.Normal(0.0, 1.0), (3,), "log_shape").event_shape
        (3,)
    """
    shape, batch_shape = tuple(shape), tuple(distribution.batch_shape)
    if distribution.event_shape == () and shape and batch_shape in ((), shape):
        return distribution.expand(shape).to_event(len(shape))
    return whole_site_prior(distribution, shape, site)


def _is_concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


def prior_parts(distribution: dist.Distribution):
    """The distribution and those it is built on (base, mixing and component ones)."""
    yield distribution
    for name in ("base_dist", "mixing_distribution", "component_distribution"):
        part = distribution.__dict__.get(name)
        if isinstance(part, dist.Distribution):
            yield from prior_parts(part)


def _shown(value) -> str:
    array = np.asarray(value)
    return str(array.tolist()) if array.size <= 6 else f"an array of shape {array.shape}"


def _refuse_non_finite(array: np.ndarray, subject: str, parameter: str) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise ValueError(
            f"{subject} with a non-finite {parameter} ({_shown(array)}); give finite parameters."
        )


def check_prior_parameters(distribution: dist.Distribution, site: str) -> None:
    """Refuse a prior with NaN/inf parameters or parameters outside their constraints.

    Reads the distribution and those it is built on (:func:`prior_parts`): each named
    parameter must be finite and satisfy numpyro's ``arg_constraints`` (a Dirichlet
    concentration > 0, a HalfNormal scale > 0, an interval's bounds in order, Wishart
    degrees of freedom > D - 1), and so must every other array it holds. Only concrete
    values are read; traced ones (inside ``jax.jit``) were checked before tracing by the
    back ends. numpyro checks most of this itself when a distribution is built with
    ``validate_args``; this check also covers distributions built without it and names
    the site.

    Raises:
        ValueError: naming the site, the distribution, the parameter and its valid values.

    Example:
        >>> import numpyro
        >>> with numpyro.validation_enabled(False):
        ...     prior = dist.HalfNormal(-1.0)
        >>> check_prior_parameters(prior, "scales")
        Traceback (most recent call last):
        ...
        ValueError: priors['scales'] is HalfNormal with an invalid scale (-1.0); valid values are positive.
    """
    name = type(distribution).__name__
    parts = list(prior_parts(distribution))

    def where(part):
        return name if part is distribution else f"{name} (its {type(part).__name__})"

    for part in parts:  # named parameters first: the clearest message
        for parameter, value in part.get_args().items():
            if value is None or not _is_concrete(value):
                continue
            array = np.asarray(value)
            _refuse_non_finite(array, f"priors[{site!r}] is {where(part)}", parameter)
            constraint = part.arg_constraints[parameter]
            if constraints.is_dependent(constraint):
                continue
            with jax.ensure_compile_time_eval():
                valid = bool(np.all(np.asarray(constraint(value))))
            if not valid:
                raise ValueError(
                    f"priors[{site!r}] is {where(part)} with an invalid {parameter} "
                    f"({_shown(array)}); valid values are {describe_support(constraint)}."
                )
    for part in parts:
        if isinstance(part, dist.InverseWishartCholesky | dist.WishartCholesky):
            concentration, dimension = part.concentration, part.event_shape[-1]
            if _is_concrete(concentration) and np.any(np.asarray(concentration) <= dimension - 1):
                raise ValueError(
                    f"priors[{site!r}] is {where(part)} with concentration "
                    f"{_shown(concentration)}; in {dimension} dimensions it must be > "
                    f"{dimension - 1}."
                )
        for leaf in jax.tree.leaves(part):  # what the named parameters do not cover
            if not _is_concrete(leaf):
                continue
            _refuse_non_finite(np.asarray(leaf), f"priors[{site!r}] is {where(part)}", "parameter")


def check_prior_support(
    distribution: dist.Distribution,
    site: str,
    site_support: constraints.Constraint,
    *,
    where: str,
    advice: str,
) -> None:
    """Refuse a prior whose support does not lie in its site's (:func:`support_within`),
    is unknown, or is an empty interval.

    Args:
        distribution: the user's prior.
        site: its site's name, for the message.
        site_support: the support of the site's value.
        where: the message's statement of where the site's value lives, e.g. "weights
            live on the simplex".
        advice: which priors to use instead, e.g. "use a Dirichlet prior".

    Raises:
        ValueError: naming the site, the prior's support and ``where``/``advice``.

    Example:
        >>> check_prior_support(
        ...     dist.Normal(0.0, 1.0), "peak0_sigma", constraints.positive,
        ...     where="peak0_sigma lives on the positive reals", advice="use a HalfNormal")
        Traceback (most recent call last):
        ...
        ValueError: priors['peak0_sigma'] is Normal with support real, but peak0_sigma lives on the positive reals; use a HalfNormal.
    """
    name = type(distribution).__name__
    support = distribution.support
    if support is None or constraints.is_dependent(support):
        raise ValueError(
            f"priors[{site!r}] is {name}, whose support is unknown; {where}, {advice}."
        )
    if not support_within(support, site_support):
        hint = ""
        if isinstance(
            _element_constraint(support),
            type(constraints.corr_cholesky) | type(constraints.lower_cholesky),
        ):
            hint = " (its values are Cholesky factors; the site takes the matrix itself)"
        raise ValueError(
            f"priors[{site!r}] is {name} with support {describe_support(support)}{hint}, but "
            f"{where}; {advice}."
        )
    element = _element_constraint(support)
    if isinstance(element, constraints.interval):
        low, high = element.lower_bound, element.upper_bound
        if _is_concrete(low) and _is_concrete(high) and not np.all(np.less(low, high)):
            raise ValueError(
                f"priors[{site!r}] is {name} with support {describe_support(support)}, which is "
                "empty or a single point; give a lower bound below the upper bound."
            )
