"""The peak model's default priors: boxes without NumPyro, and as NumPyro distributions.

:func:`default_prior_boxes` writes the bounds of every default prior (the table of
:mod:`gaussmix.models.peaks`) once, in JAX (inside compiled fits) or NumPy (the host-side
checks of a fit), as :class:`UniformPrior` and :class:`HalfNormalPrior`: NamedTuples, so
JAX pytrees, whose ``log_prob`` and ``support`` compute what NumPyro's ``Uniform`` and
``HalfNormal`` compute, operation for operation (bit for bit; a test holds them equal):

.. math::

    \\log p_{\\mathrm{U}(a, b)}(v) = -\\log(b - a), \\qquad
    \\log p_{\\mathrm{HN}(s)}(v) = -\\tfrac12 (v / s)^2 - \\log(\\sqrt{2\\pi}\\, s) + \\log 2,

with supports :math:`[a, b]` (NumPyro's closed ``interval``) and :math:`(0, \\infty)`
(``positive``). :func:`gaussmix.models.peaks.default_priors` turns them into NumPyro
distributions (:meth:`UniformPrior.distribution`); the MAP back end uses them as they are,
so that a fit with the default priors neither imports nor traces NumPyro.

``log_prob`` is the density's formula wherever the value lies, as NumPyro's with its
validation off (``validate_args=False``); the callers check ``support`` (the MAP back end
rejects a trial point outside it). That is what the MAP back end computed with NumPyro's
priors: read from a trace, they crossed a ``vmap`` boundary into the compiled loop, and a
NumPyro distribution that crosses one loses its default validation (its pytree does not
carry the class attribute). Its -inf outside the support cost the cold fit 8 more XLA
kernels.

Example:
    >>> from gaussmix.models.peaks import peak_model
    >>> priors = default_prior_boxes(peak_model("gaussian"), (0.0, 10.0), (0.0, 2.0))
    >>> float(priors["peak0_center"].high), float(priors["peak0_sigma"].log_prob(1.0))
    (10.0, -2.302585092994046)
"""

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gaussmix.models.backgrounds import TOUGAARD_C

__all__ = [
    "ASYMMETRY_BOUND",
    "BASELINE_FACTOR",
    "EXPONENT_BOUND",
    "HEIGHT_FACTOR",
    "RATE_BOUND",
    "SKEW_BOUND",
    "STEP_BOUND",
    "HalfNormalPrior",
    "UniformPrior",
    "data_ranges",
    "default_prior_boxes",
    "default_priors",
    "integer_power",
    "program_priors",
]

# Widths of the default prior boxes, relative to the data ranges.
HEIGHT_FACTOR = 10.0
BASELINE_FACTOR = 10.0
RATE_BOUND = 20.0
SKEW_BOUND = 20.0
EXPONENT_BOUND = 50.0
ASYMMETRY_BOUND = 0.9
#: Bound of the Shirley step per unit of peak area, times the x range.
STEP_BOUND = 1000.0


def _namespace(value: Any):
    """NumPy for host values, jax.numpy for JAX arrays and tracers (as NumPyro's
    constraints choose)."""
    return jnp if isinstance(value, jax.Array) else np


class UniformPrior(NamedTuple):
    """Uniform on the box [low, high], as ``numpyro.distributions.Uniform(low, high)``.

    Attributes:
        low: lower bound (a JAX or NumPy array; (B,) for per-spectrum boxes).
        high: upper bound, of low's shape.
    """

    low: Any
    high: Any

    def log_prob(self, value: ArrayLike) -> jax.Array:
        """:math:`-\\log(\\mathrm{high} - \\mathrm{low})`, broadcast to value's shape
        (wherever it lies: see the module docstring)."""
        batch_shape = jnp.broadcast_shapes(jnp.shape(self.low), jnp.shape(self.high))
        shape = jnp.broadcast_shapes(jnp.shape(value), batch_shape)
        return -jnp.broadcast_to(jnp.log(self.high - self.low), shape)

    def support(self, value: ArrayLike) -> Any:
        """Whether ``value`` lies in [low, high] (NumPyro's ``interval`` constraint)."""
        xp = _namespace(value)
        return xp.greater_equal(value, self.low) & xp.less_equal(value, self.high)

    def describe(self) -> str:
        return f"[{self.low}, {self.high}]"

    def distribution(self) -> Any:
        """The NumPyro distribution (imports NumPyro)."""
        import numpyro.distributions as dist

        return dist.Uniform(self.low, self.high)


class HalfNormalPrior(NamedTuple):
    """Half-normal of scale ``scale``, as ``numpyro.distributions.HalfNormal(scale)``.

    Attributes:
        scale: the scale (a JAX or NumPy array).
    """

    scale: Any

    def log_prob(self, value: ArrayLike) -> jax.Array:
        """:math:`-\\tfrac12 (v/s)^2 - \\log(\\sqrt{2\\pi}\\,s) + \\log 2` (NumPyro's
        ``Normal(0, s).log_prob(v) + log 2``, in its order), wherever v lies."""
        normalize_term = jnp.log(jnp.sqrt(2 * jnp.pi) * self.scale)
        value_scaled = (value - 0.0) / self.scale
        return -0.5 * value_scaled**2 - normalize_term + jnp.log(2)

    def support(self, value: ArrayLike) -> Any:
        """Whether ``value`` is > 0 (NumPyro's ``positive`` constraint)."""
        return _namespace(value).greater(value, 0.0)

    def describe(self) -> str:
        return "(0, inf)"

    def distribution(self) -> Any:
        """The NumPyro distribution (imports NumPyro)."""
        import numpyro.distributions as dist

        return dist.HalfNormal(self.scale)


def integer_power(base: Any, exponent: int) -> Any:
    """``base ** exponent`` (exponent >= 0) by binary powering, the multiplications
    ``jax.lax.integer_pow`` lowers to: the same bits in NumPy (whose ``**`` calls the C
    library's ``pow``) as in JAX."""
    if exponent == 0:
        return _namespace(base).ones_like(base)
    result = None
    while exponent > 0:
        if exponent & 1:
            result = base if result is None else result * base
        exponent >>= 1
        if exponent > 0:
            base = base * base
    return result


def default_prior_boxes(
    model: Any,
    x_range: tuple[ArrayLike, ArrayLike],
    y_range: tuple[ArrayLike, ArrayLike],
    xp: Any = jnp,
) -> dict[str, UniformPrior | HalfNormalPrior]:
    """The default prior of every latent site of a peak model, by site name (the table
    of :mod:`gaussmix.models.peaks`): one :class:`UniformPrior` per free curve parameter,
    shared by the parameters of one kind, and a :class:`HalfNormalPrior` for the noise
    scale ``sigma``.

    Args:
        model: the :class:`~gaussmix.models.peaks.PeakModel`.
        x_range: (low, high) of x.
        y_range: (low, high) of y (or (B,) lows and highs: per-spectrum boxes).
        xp: ``jax.numpy`` (the default; traceable) or ``numpy`` (host numbers, no program
            compiled): the same arithmetic in the same dtype either way.
    """
    dtype = np.dtype(jnp.result_type(float, *x_range, *y_range))
    x_low, x_high = (xp.asarray(value, dtype) for value in x_range)
    y_low, y_high = (xp.asarray(value, dtype) for value in y_range)
    magnitude = xp.maximum(xp.abs(y_low), xp.abs(y_high))
    spread = y_high - y_low
    spread = xp.where(spread > 0, spread, xp.maximum(magnitude, dtype.type(1.0)))
    length = x_high - x_low
    length = xp.where(length > 0, length, dtype.type(1.0))
    reach = xp.maximum(xp.maximum(xp.abs(x_low), xp.abs(x_high)), length)
    bound = dtype.type(BASELINE_FACTOR) * (magnitude + spread)
    zero = xp.zeros((), dtype)

    def symmetric(limit: float) -> tuple:
        return dtype.type(-limit) + zero, dtype.type(limit) + zero

    def box(kind: str) -> tuple:
        if kind == "height":
            return zero, dtype.type(HEIGHT_FACTOR) * spread
        if kind == "area":
            return zero, dtype.type(HEIGHT_FACTOR) * spread * length
        if kind == "center":
            return x_low, x_high
        if kind == "width":
            return zero, length
        if kind == "fraction":
            return zero, xp.ones((), dtype)
        if kind == "shape":
            return symmetric(SKEW_BOUND)
        if kind == "exponent":
            return dtype.type(0.5) + zero, dtype.type(EXPONENT_BOUND) + zero
        if kind == "asymmetry":
            return zero, dtype.type(ASYMMETRY_BOUND) + zero
        if kind in ("baseline_offset", "baseline_amplitude"):
            return -bound, bound
        if kind in ("baseline_step", "baseline_b"):
            factor = STEP_BOUND if kind == "baseline_step" else 2.0 * TOUGAARD_C * STEP_BOUND
            return dtype.type(-factor) / length, dtype.type(factor) / length
        if kind == "baseline_rate":
            return dtype.type(-RATE_BOUND) / reach, dtype.type(RATE_BOUND) / reach
        # polynomial coefficient c_k
        power = integer_power(reach, int(kind[len("baseline_c") :]))
        return -bound / power, bound / power

    # One prior per kind, shared by its sites (the two peaks' heights take the same box):
    # traced, each bound is computed once, not once per site.
    by_kind = {}
    priors = {}
    for name in model.free_names:
        kind = model.kind(name)
        if kind not in by_kind:
            low, high = box(kind)
            by_kind[kind] = UniformPrior(xp.asarray(low, dtype), xp.asarray(high, dtype))
        priors[name] = by_kind[kind]
    if model.has_noise:  # the noise site, last of the model's sites
        priors[model.site_names[-1]] = HalfNormalPrior(xp.asarray(spread, dtype))
    return priors


def data_ranges(x: jax.Array, y: jax.Array | None, mask, y_range):
    """(x_low, x_high, y_low, y_high) that scale the default priors: x's range, and y's
    (along its last axis: (B,) lows and highs for a batch (B, M)), points masked out left
    out, or ``y_range`` (low, high) when given."""
    # Each minimum is minus the maximum of the negated values, found by the reduction
    # that finds the maximum (XLA CPU compiles a reduction over many points as two
    # kernels; four reductions cost a compiled fit eight).
    x_high, x_negated_low = jnp.max(jnp.stack([x, -x]), axis=-1)
    x_low = -x_negated_low
    if y_range is not None:
        y_low, y_high = (jnp.asarray(value, x.dtype) for value in y_range)
    else:
        # NumPy's nanmin, nanmax over the points that count (jnp's: 5x slower on XLA CPU)
        counts = ~jnp.isnan(y) if mask is None else jnp.asarray(mask, bool) & ~jnp.isnan(y)
        high, negated_low = jnp.max(jnp.where(counts, jnp.stack([y, -y]), -jnp.inf), axis=-1)
        low = -negated_low
        y_low, y_high = (jnp.where(low > high, jnp.nan, v) for v in (low, high))  # none counts
    return x_low, x_high, y_low, y_high


def program_priors(
    model: Any,
    x_range: tuple[ArrayLike, ArrayLike],
    y_range: tuple[ArrayLike, ArrayLike],
    priors: Mapping[str, Any],
) -> dict[str, Any]:
    """The prior of every latent site as a peak program uses it: the user's ``priors``
    (checked, :func:`gaussmix.models.peaks.check_priors`), else the default
    (:func:`default_priors`) on these ranges."""
    site_priors = default_priors(model, x_range, y_range)
    site_priors.update(priors)
    return site_priors


def default_priors(
    model: Any,
    x_range: tuple[ArrayLike, ArrayLike],
    y_range: tuple[ArrayLike, ArrayLike],
) -> dict[str, Any]:
    """The default prior of every latent site (the table of :mod:`gaussmix.models.peaks`),
    by site name: NumPyro distributions (imports NumPyro), one per kind of parameter, of
    the boxes of :func:`default_prior_boxes` (which gives them without NumPyro, in JAX or
    NumPy).

    Args:
        model: the :class:`~gaussmix.models.peaks.PeakModel`.
        x_range: (low, high) of x.
        y_range: (low, high) of y.

    Example:
        >>> from gaussmix.models.peaks import peak_model
        >>> priors = default_priors(peak_model("gaussian"), (0.0, 10.0), (0.0, 2.0))
        >>> float(priors["peak0_center"].high), float(priors["peak0_sigma"].high)
        (10.0, 10.0)
    """
    distributions = {}  # one distribution per shared box
    priors = {}
    for name, box in default_prior_boxes(model, x_range, y_range).items():
        if id(box) not in distributions:
            distributions[id(box)] = box.distribution()
        priors[name] = distributions[id(box)]
    return priors
