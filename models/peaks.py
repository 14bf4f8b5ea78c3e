"""The peak model as one NumPyro program: peaks on a baseline, with noise.

.. math::

    f(x; \\theta) = \\sum_{i} p_i(x; \\theta_i) + b(x; \\beta), \\qquad
    y_m \\sim \\mathcal{N}(f(x_m; \\theta), \\sigma) \\;\\text{(or StudentT, Poisson)}

with :math:`p_i` a lineshape of :mod:`gaussmix.models.lineshapes` and :math:`b` an
optional baseline. Sites (in this order): ``peak{i}_{parameter}`` for each peak i and each
parameter of its lineshape (``peak0_height``, ``peak0_center``, ``peak0_sigma``,
``peak0_gamma``, ``peak0_fraction``, ``peak0_skew``, ``peak0_area``), then
``baseline_c0``, ``baseline_c1``, ... (polynomial), ``baseline_amplitude``,
``baseline_rate`` (exponential), ``baseline_offset``, ``baseline_step`` (Shirley) or
``baseline_offset``, ``baseline_b`` (Tougaard), then the noise scale ``sigma`` (not for Poisson), and the
observed ``y``. Deterministic sites: ``peak{i}_area`` and ``peak{i}_fwhm`` (and
``peak{i}_height`` where the height is not a parameter; no area for a Doniach-Sunjic
peak, whose integral diverges), tied and fixed parameters.

The Shirley and Tougaard backgrounds (:mod:`gaussmix.models.backgrounds`) are functions of
the peaks: :math:`b(x; \\beta, \\theta)` then depends on the peak parameters too.

Default priors are uniform on wide boxes scaled from the data, so that they respect the
bounds and are flat inside them: the MAP then equals least squares (``curve_fit``) unless
the optimum sits on a bound. With :math:`[x_0, x_1]` the x range, :math:`Y` the y range,
:math:`A = \\max|y|` and :math:`S = \\max(|x_0|, |x_1|)`:

==================  ===========================================================
parameter kind      default prior
==================  ===========================================================
height              :math:`\\mathrm{U}(0, 10Y)`
area                :math:`\\mathrm{U}(0, 10Y(x_1-x_0))`
center              :math:`\\mathrm{U}(x_0, x_1)`
width (sigma,       :math:`\\mathrm{U}(0, x_1-x_0)`
gamma)
fraction            :math:`\\mathrm{U}(0, 1)`
skew                :math:`\\mathrm{U}(-20, 20)`
exponent (Pearson   :math:`\\mathrm{U}(1/2, 50)`
VII)
asymmetry (alpha,   :math:`\\mathrm{U}(0, 0.9)`
Doniach-Sunjic)
baseline c_k        :math:`\\mathrm{U}(-B/S^k, B/S^k)`, :math:`B = 10(A+Y)`
amplitude           :math:`\\mathrm{U}(-B, B)`
rate                :math:`\\mathrm{U}(-20/S, 20/S)`
offset (Shirley,    :math:`\\mathrm{U}(-B, B)`
Tougaard)
step (Shirley)      :math:`\\mathrm{U}(-k, k)`, :math:`k = 1000/(x_1-x_0)`
b (Tougaard)        :math:`\\mathrm{U}(-2Ck, 2Ck)`, C = 1643 eV^2
sigma               :math:`\\mathrm{HalfNormal}(Y)`
==================  ===========================================================

Any of them can be replaced through ``priors`` (a dict site name -> scalar NumPyro
distribution). ``ties`` makes parameters equal (``{"peak1_sigma": "peak0_sigma"}``: one
width shared by two peaks), ``fixed`` holds parameters at given values.

Every site has a support (:func:`site_support`): heights, areas, widths and the noise
scale positive, fractions in [0, 1], centres, skews and baseline parameters real. A prior
must have its support inside its site's and finite, valid parameters; a fixed value must
be one finite number inside; a tie must join two parameters of the same kind; the StudentT
degrees of freedom must be finite and > 0. The program refuses anything else with a
ValueError before computing, values compared where they are concrete (not JAX tracers).
"""

import contextlib
import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gaussmix.models.backgrounds import active_background
from gaussmix.models.lineshape_derivatives import (
    baseline_value_and_jacobian,
    lineshape_value_and_jacobian,
)
from gaussmix.models.lineshapes import Baseline, Lineshape, baseline_model, get_lineshape
from gaussmix.models.peak_priors import (
    data_ranges,
    default_prior_boxes,
    default_priors,
    program_priors,
)

__all__ = [
    "LIKELIHOODS",
    "PeakModel",
    "baseline_curve",
    "check_degrees_of_freedom",
    "check_fixed",
    "check_priors",
    "check_program_inputs",
    "data_ranges",
    "default_priors",
    "derived_quantities",
    "latent_priors",
    "location_and_jacobian",
    "mean_and_jacobian",
    "mean_curve",
    "observed_parts",
    "peak_curves",
    "peak_model",
    "peaks",
    "program_priors",
    "resolve_parameters",
    "site_support",
]

LIKELIHOODS = ("normal", "student_t", "poisson")
NOISE_SITE = "sigma"


class PeakModel(NamedTuple):
    """The structure of a peak model: which lineshapes, baseline, likelihood, ties, fixed.

    Hashable (a static argument of compiled fits). Build it with :func:`peak_model`.

    Attributes:
        lineshapes: one :class:`Lineshape` per peak.
        baseline: the :class:`Baseline`, or None.
        likelihood: "normal", "student_t" or "poisson".
        ties: ``(name, target)`` pairs: parameter ``name`` equals parameter ``target``.
        fixed: names of parameters held at given values.
    """

    lineshapes: tuple[Lineshape, ...]
    baseline: Baseline | None
    likelihood: str
    ties: tuple[tuple[str, str], ...]
    fixed: tuple[str, ...]

    @property
    def n_peaks(self) -> int:
        return len(self.lineshapes)

    def peak_parameter_names(self, index: int) -> tuple[str, ...]:
        return tuple(f"peak{index}_{name}" for name in self.lineshapes[index].parameters)

    @property
    def baseline_parameter_names(self) -> tuple[str, ...]:
        if self.baseline is None:
            return ()
        return tuple(f"baseline_{name}" for name in self.baseline.parameters)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Every curve parameter (free, tied and fixed), peaks first, then the baseline."""
        names = []
        for index in range(self.n_peaks):
            names.extend(self.peak_parameter_names(index))
        return (*names, *self.baseline_parameter_names)

    @property
    def free_names(self) -> tuple[str, ...]:
        """Curve parameters that are sample sites (neither tied nor fixed)."""
        tied = {name for name, _ in self.ties}
        return tuple(n for n in self.parameter_names if n not in tied and n not in self.fixed)

    @property
    def has_active_baseline(self) -> bool:
        """Whether the baseline is a function of the peaks (Shirley, Tougaard)."""
        return self.baseline is not None and self.baseline.name in ("shirley", "tougaard")

    @property
    def has_noise(self) -> bool:
        return self.likelihood != "poisson"

    @property
    def site_names(self) -> tuple[str, ...]:
        """The latent sample sites of the program, in order."""
        return (*self.free_names, NOISE_SITE) if self.has_noise else self.free_names

    @property
    def derived_names(self) -> tuple[str, ...]:
        names = []
        for index, lineshape in enumerate(self.lineshapes):
            for quantity in ("area", "fwhm", "height"):
                if quantity not in lineshape.parameters and (
                    quantity != "area" or lineshape.area_fn is not None
                ):
                    names.append(f"peak{index}_{quantity}")
        return tuple(names)

    def kind(self, name: str) -> str:
        """Kind of a parameter (height, area, center, width, fraction, shape, exponent,
        asymmetry, or ``baseline_<name>``)."""
        for index, lineshape in enumerate(self.lineshapes):
            prefix = f"peak{index}_"
            if name.startswith(prefix) and name[len(prefix) :] in lineshape.parameters:
                return lineshape.kinds[lineshape.parameters.index(name[len(prefix) :])]
        if name in self.baseline_parameter_names:
            return "baseline_" + name[len("baseline_") :]
        raise ValueError(f"{name!r} is not a parameter of this model: {self.parameter_names}.")


def peak_model(
    lineshapes: str | tuple[str, ...] | list[str] = ("gaussian",),
    baseline: str | int | None = None,
    likelihood: str = "normal",
    ties: Mapping[str, str] | None = None,
    fixed: tuple[str, ...] | list[str] | Mapping[str, object] = (),
) -> PeakModel:
    """Validate a model description and return its :class:`PeakModel`.

    Args:
        lineshapes: one registered lineshape name per peak (a single name is one peak).
        baseline: None, "constant", "linear", "exponential" or a polynomial degree n.
        likelihood: "normal", "student_t" or "poisson".
        ties: ``{name: target}``: parameter ``name`` is set equal to ``target`` (a free or
            fixed parameter of the same model).
        fixed: names (or a dict with them as keys) of parameters held fixed.

    Example:
        >>> model = peak_model(("gaussian", "gaussian"), "linear",
        ...                    ties={"peak1_sigma": "peak0_sigma"})
        >>> model.free_names
        ('peak0_height', 'peak0_center', 'peak0_sigma', 'peak1_height', 'peak1_center', 'baseline_c0', 'baseline_c1')
    """
    if isinstance(lineshapes, str):
        lineshapes = (lineshapes,)
    if not isinstance(lineshapes, tuple | list) or len(lineshapes) == 0:
        raise ValueError(f"peaks must be a non-empty tuple of lineshape names, got {lineshapes!r}.")
    shapes = tuple(get_lineshape(name) for name in lineshapes)
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"Unknown likelihood {likelihood!r}; choose one of {list(LIKELIHOODS)}.")
    structure = PeakModel(shapes, baseline_model(baseline), likelihood, (), ())
    names = structure.parameter_names
    if not isinstance(fixed, Mapping | tuple | list):
        raise ValueError(
            f"fixed must be a dict {{name: value}} (or a list of names), got {type(fixed).__name__}."
        )
    if ties is not None and not isinstance(ties, Mapping):
        raise ValueError(
            f"ties must be a dict {{name: target}} such as {{'peak1_sigma': 'peak0_sigma'}}, "
            f"got {type(ties).__name__}."
        )
    fixed_names = tuple(fixed.keys() if isinstance(fixed, Mapping) else fixed)
    unknown = [n for n in fixed_names if n not in names]
    if unknown:
        raise ValueError(f"fixed names unknown parameter(s) {unknown}; parameters: {list(names)}.")
    tie_pairs = tuple((ties or {}).items())
    for name, target in tie_pairs:
        if name not in names or target not in names:
            raise ValueError(
                f"tie {name!r} -> {target!r} names an unknown parameter; parameters: {list(names)}."
            )
        if name == target or name in fixed_names:
            raise ValueError(f"Parameter {name!r} cannot be tied to {target!r} (and fixed).")
        if target in dict(tie_pairs):
            raise ValueError(f"tie target {target!r} is itself tied; tie to a free parameter.")
        if structure.kind(name) != structure.kind(target):
            raise ValueError(
                f"tie {name!r} -> {target!r} joins a {structure.kind(name)} to a "
                f"{structure.kind(target)}: a parameter can only be tied to one of the same "
                "kind (a width to a width, a centre to a centre, ...)."
            )
    return PeakModel(shapes, structure.baseline, likelihood, tie_pairs, fixed_names)


def resolve_parameters(
    model: PeakModel, free: Mapping[str, ArrayLike], fixed: Mapping[str, ArrayLike] | None = None
) -> dict[str, jax.Array]:
    """All curve parameters from the free ones, the fixed values and the ties."""
    values = {name: free[name] for name in model.free_names}
    fixed = fixed or {}
    for name in model.fixed:
        if name not in fixed:
            raise ValueError(f"No value given for the fixed parameter {name!r}.")
        values[name] = fixed[name]
    for name, target in model.ties:
        values[name] = values[target]
    return {name: jnp.asarray(values[name]) for name in model.parameter_names}


def _peak_arguments(model: PeakModel, index: int, params: Mapping[str, ArrayLike]) -> list:
    return [params[name] for name in model.peak_parameter_names(index)]


def peak_curves(x: ArrayLike, model: PeakModel, params: Mapping[str, ArrayLike]) -> jax.Array:
    """Each peak's curve at x: (K, *x.shape) for K peaks (parameters broadcast with x)."""
    return jnp.stack(
        [
            lineshape.profile_fn(x, *_peak_arguments(model, index, params))
            for index, lineshape in enumerate(model.lineshapes)
        ]
    )


def baseline_curve(x: ArrayLike, model: PeakModel, params: Mapping[str, ArrayLike]) -> jax.Array:
    """The baseline at x (zeros without a baseline); the Shirley and Tougaard backgrounds
    from the peaks (:mod:`gaussmix.models.backgrounds`)."""
    x = jnp.asarray(x, jnp.result_type(float, x))
    if model.baseline is None:
        return jnp.zeros_like(x)
    arguments = [params[name] for name in model.baseline_parameter_names]
    if model.has_active_baseline:
        pairs = [
            (lineshape, _peak_arguments(model, index, params))
            for index, lineshape in enumerate(model.lineshapes)
        ]
        return active_background(model.baseline.name, x, arguments, pairs)
    return model.baseline.profile_fn(x, *arguments)


def mean_curve(x: ArrayLike, model: PeakModel, params: Mapping[str, ArrayLike]) -> jax.Array:
    """The model curve :math:`f(x; \\theta)`: sum of the peaks plus the baseline.

    Example:
        >>> model = peak_model("gaussian", "constant")
        >>> params = {"peak0_height": 2.0, "peak0_center": 0.0, "peak0_sigma": 1.0,
        ...           "baseline_c0": 1.0}
        >>> float(mean_curve(0.0, model, params))
        3.0
    """
    total = baseline_curve(x, model, params)
    for index, lineshape in enumerate(model.lineshapes):
        total = total + lineshape.profile_fn(x, *_peak_arguments(model, index, params))
    return total


def mean_and_jacobian(
    x: jax.Array, model: PeakModel, params: Mapping[str, ArrayLike]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """:func:`mean_curve` (by the same functions) and its derivative by every curve
    parameter (free, tied and fixed): ``{name: (M,) column}``, each peak's and the
    baseline's in closed form (:mod:`gaussmix.models.lineshape_derivatives`); with a
    Shirley or Tougaard background, which depends on every peak, by forward mode.
    """
    x = jnp.asarray(x, jnp.result_type(float, x))
    if model.has_active_baseline:
        values = {name: jnp.asarray(params[name], x.dtype) for name in model.parameter_names}
        columns = jax.jacfwd(lambda p: mean_curve(x, model, p))(values)
        return mean_curve(x, model, values), columns
    columns = {}
    if model.baseline is None:
        total = jnp.zeros_like(x)
    else:
        names = model.baseline_parameter_names
        total, jacobian = baseline_value_and_jacobian(
            model.baseline, x, [params[name] for name in names]
        )
        columns.update({name: jacobian[..., k] for k, name in enumerate(names)})
    for index, lineshape in enumerate(model.lineshapes):
        value, jacobian = lineshape_value_and_jacobian(
            lineshape, x, _peak_arguments(model, index, params)
        )
        total = total + value
        names = model.peak_parameter_names(index)
        columns.update({name: jacobian[..., k] for k, name in enumerate(names)})
    return total, columns


def location_and_jacobian(
    values: Mapping[str, ArrayLike],
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    lineshapes: str | tuple[str, ...] = ("gaussian",),
    baseline: str | int | None = None,
    likelihood: str = "normal",
    ties: Mapping[str, str] | None = None,
    fixed: Mapping[str, ArrayLike] | None = None,
    **other_options,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The location of :func:`peaks`' observed site and its Jacobian in closed form.

    Takes the sites' values and then :func:`peaks`' own arguments (the options that do
    not move the location, such as ``priors`` or ``mask``, are ignored). The location is
    the program's, computed by the same functions: the mean curve (clipped at the smallest positive number
    for a Poisson likelihood, as the program clips it); a tied parameter's column adds to
    its target's, a fixed one has none.

    Args:
        values: site name -> value of (at least) every free curve parameter.
        x: (M,) abscissae.
        y, lineshapes, baseline, likelihood, ties, fixed: as for :func:`peaks`.
        other_options: :func:`peaks`' other keywords, unused.

    Returns:
        (M,) location and ``{free parameter: (M,) column}``.

    Example:
        >>> location, columns = location_and_jacobian(
        ...     {"peak0_height": 2.0, "peak0_center": 0.0, "peak0_sigma": 1.0,
        ...      "baseline_c0": 1.0}, np.zeros(1), baseline="constant")
        >>> location.tolist(), {name: column.tolist() for name, column in columns.items()}
        ([3.0], {'peak0_height': [1.0], 'peak0_center': [0.0], 'peak0_sigma': [0.0], 'baseline_c0': [1.0]})
    """
    model, x, params = _program_parameters(values, x, lineshapes, baseline, likelihood, ties, fixed)
    mean, columns = mean_and_jacobian(x, model, params)
    free = {name: columns[name] for name in model.free_names}
    for name, target in model.ties:
        if target in free:  # a parameter tied to a fixed one moves nothing
            free[target] = free[target] + columns[name]
    if model.likelihood == "poisson":
        tiny = jnp.finfo(x.dtype).tiny
        # The derivative of maximum(mean, tiny) as JAX takes it: one half at a tie.
        factor = jnp.where(mean > tiny, 1.0, jnp.where(mean == tiny, 0.5, 0.0))
        return jnp.maximum(mean, tiny), {name: factor * c for name, c in free.items()}
    return mean, free


def _program_model(x, lineshapes, baseline, likelihood, ties, fixed):
    """(model, x as floats) as :func:`peaks` sets them from its arguments."""
    model = peak_model(lineshapes, baseline, likelihood, ties, fixed or {})
    x = jnp.asarray(x)
    return model, x.astype(jnp.result_type(float, x))


def _program_parameters(values, x, lineshapes, baseline, likelihood, ties, fixed):
    """(model, x, every curve parameter) as :func:`peaks` sets them from its arguments
    and the free sites' ``values``."""
    model, x = _program_model(x, lineshapes, baseline, likelihood, ties, fixed)
    fixed_values = {name: jnp.asarray((fixed or {})[name], x.dtype) for name in model.fixed}
    return model, x, resolve_parameters(model, values, fixed_values)


def observed_parts(
    values: Mapping[str, ArrayLike],
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    lineshapes: str | tuple[str, ...] = ("gaussian",),
    baseline: str | int | None = None,
    likelihood: str = "normal",
    degrees_of_freedom: ArrayLike = 4.0,
    ties: Mapping[str, str] | None = None,
    fixed: Mapping[str, ArrayLike] | None = None,
    mask: ArrayLike | None = None,
    **other_options,
) -> tuple[jax.Array, Any, Any, jax.Array | None]:
    """The observed site ``y`` of :func:`peaks` at the sites' ``values``, without tracing
    the program: the parameters of its distribution as the program computes them.

    Args:
        values: site name -> value of every free curve parameter (and ``sigma``).
        x, y, lineshapes, baseline, likelihood, degrees_of_freedom, ties, fixed, mask: as
            for :func:`peaks`.
        other_options: :func:`peaks`' other keywords, unused.

    Returns:
        (location, scale, extra, mask): the (M,) mean curve (Poisson: its rate, clipped
        at the smallest positive number), the noise ``sigma`` (None for Poisson), the
        StudentT degrees of freedom (else ``()``), and the mask as booleans (or None).

    Example:
        >>> parts = observed_parts({"peak0_height": 2.0, "peak0_center": 0.0,
        ...                         "peak0_sigma": 1.0, "sigma": 0.5}, np.zeros(1))
        >>> parts[0].tolist(), parts[1:]
        ([2.0], (0.5, (), None))
    """
    model, x, params = _program_parameters(values, x, lineshapes, baseline, likelihood, ties, fixed)
    mean = mean_curve(x, model, params)
    mask = None if mask is None else jnp.asarray(mask, bool)
    if model.likelihood == "normal":
        return mean, values[NOISE_SITE], (), mask
    if model.likelihood == "student_t":
        return mean, values[NOISE_SITE], jnp.asarray(degrees_of_freedom, x.dtype), mask
    return jnp.maximum(mean, jnp.finfo(x.dtype).tiny), None, (), mask


def latent_priors(
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    lineshapes: str | tuple[str, ...] = ("gaussian",),
    baseline: str | int | None = None,
    likelihood: str = "normal",
    priors: Mapping[str, Any] | None = None,
    ties: Mapping[str, str] | None = None,
    fixed: Mapping[str, ArrayLike] | None = None,
    mask: ArrayLike | None = None,
    y_range: tuple[ArrayLike, ArrayLike] | None = None,
    **other_options,
) -> dict[str, Any] | None:
    """The prior of every latent site of :func:`peaks`, without tracing the program or
    importing NumPyro: the default priors on the data's ranges as
    :func:`gaussmix.models.peak_priors.default_prior_boxes` gives them (their
    ``log_prob`` and ``support`` NumPyro's, bit for bit), or None when the caller gave
    ``priors`` of its own (NumPyro distributions: read them from a trace).

    Args:
        x, y, lineshapes, baseline, likelihood, priors, ties, fixed, mask, y_range: as for
            :func:`peaks`.
        other_options: :func:`peaks`' other keywords, unused.

    Example:
        >>> boxes = latent_priors(np.linspace(0.0, 10.0, 5), np.array([0, 1, 2, 1, 0.0]))
        >>> float(boxes["peak0_height"].high), float(boxes["sigma"].scale)
        (20.0, 2.0)
    """
    if priors:
        return None
    model, x = _program_model(x, lineshapes, baseline, likelihood, ties, fixed)
    y = None if y is None else jnp.asarray(y, x.dtype)
    mask = None if mask is None else jnp.asarray(mask, bool)
    x_low, x_high, y_low, y_high = data_ranges(x, y, mask, y_range)
    return default_prior_boxes(model, (x_low, x_high), (y_low, y_high))


def derived_quantities(model: PeakModel, params: Mapping[str, ArrayLike]) -> dict[str, jax.Array]:
    """``peak{i}_area``, ``peak{i}_fwhm`` (and ``peak{i}_height`` where not a parameter)."""
    derived = {}
    for index, lineshape in enumerate(model.lineshapes):
        arguments = _peak_arguments(model, index, params)
        functions = {
            "area": lineshape.area_fn,
            "fwhm": lineshape.fwhm_fn,
            "height": lineshape.height_fn,
        }
        for quantity, function in functions.items():
            if quantity not in lineshape.parameters and function is not None:
                derived[f"peak{index}_{quantity}"] = jnp.asarray(function(*arguments))
    return derived


# ---------------------------------------------------------------------------------------
# Supports: what each site may take, and the checks of priors, fixed values and options
# ---------------------------------------------------------------------------------------

#: Constraint (numpyro's, by name) of each parameter kind and of the noise scale ``sigma``.
#: Heights and areas take either sign (absorption lines, dips, a basis of Gaussians with
#: signed coefficients); their default priors keep them positive.
KIND_SUPPORTS = {
    "height": "real", "area": "real", "center": "real", "shape": "real", "baseline": "real",
    "width": "positive", "noise": "positive", "fraction": "unit_interval",
    "exponent": "greater_than(0.5)", "asymmetry": "interval(0.0, 1.0)",
}  # fmt: skip


@functools.cache
def _constraint(name: str):
    """numpyro's constraint of that name (one object per name; NumPyro imported here)."""
    from numpyro.distributions import constraints

    kind, _, argument = name.partition("(")
    factory = getattr(constraints, kind)
    return factory(*(float(v) for v in argument.rstrip(")").split(","))) if argument else factory


def _kind_of_site(model: PeakModel, name: str) -> str:
    if name == NOISE_SITE:
        return "noise"
    kind = model.kind(name)
    return "baseline" if kind.startswith("baseline_") else kind


def site_support(model: PeakModel, name: str) -> Any:
    """The support of a parameter or of the noise site ``sigma``.

    ==================================  ==========================
    site                                support
    ==================================  ==========================
    widths (sigma, gamma), noise        :math:`(0, \\infty)`
    ``sigma``
    fractions                           :math:`[0, 1]`
    Pearson VII exponent                :math:`(1/2, \\infty)`
    Doniach-Sunjic asymmetry alpha      :math:`[0, 1)` (the prior's closure
                                        may reach 1)
    heights, areas (either sign: a      :math:`\\mathbb{R}`
    dip or absorption line), centres,
    skews, baseline coefficients,
    amplitude and rate
    ==================================  ==========================

    The default priors are narrower (heights and areas positive, centres inside the x
    range); a user's prior may use all of the site's support.

    A prior fits a site when its support lies in the site's (the closure of it: a
    continuous prior on :math:`[0, b]` puts no mass on 0).

    Example:
        >>> site_support(peak_model("gaussian"), "peak0_sigma")
        Positive(lower_bound=0.0)
    """
    return _constraint(KIND_SUPPORTS[_kind_of_site(model, name)])


#: Where a site of each support lives and which priors fit it, for error messages.
_SUPPORT_HELP = {
    "positive": ("the positive reals",
                 "use HalfNormal, Gamma, LogNormal, Exponential or Uniform(a >= 0, b)"),
    "unit_interval": ("the interval [0, 1]", "use Beta or Uniform(a >= 0, b <= 1)"),
    "greater_than(0.5)": ("(1/2, infinity) (the Pearson VII area is finite only there)",
                          "use Uniform(a >= 0.5, b) or a shifted positive prior"),
    "interval(0.0, 1.0)": ("[0, 1) (alpha = 1 is no peak)",
                           "use Beta or Uniform(a >= 0, b <= 1)"),
    "real": ("the real numbers", "use a continuous prior such as Normal"),
}  # fmt: skip


def _check_prior(name: str, prior, model: PeakModel) -> None:
    from gaussmix.models.priors import check_prior_parameters, check_prior_support

    lives_on, advice = _SUPPORT_HELP[KIND_SUPPORTS[_kind_of_site(model, name)]]
    support = site_support(model, name)
    check_prior_support(prior, name, support, where=f"{name} lives on {lives_on}", advice=advice)
    check_prior_parameters(prior, name)


def check_priors(priors, model: PeakModel) -> dict:
    """Validate user priors: a dict of free sites to scalar numpyro distributions whose
    support lies in the site's (:func:`site_support`) and whose parameters are finite and
    valid. Parameters that are traced (inside ``jax.jit``) are not compared; their
    support's kind still is.

    Raises:
        ValueError: naming the site, the prior's support and the support expected.

    Example:
        >>> import numpyro.distributions as dist
        >>> model = peak_model("gaussian")
        >>> check_priors({"peak0_sigma": dist.Normal(1.0, 1.0)}, model)
        Traceback (most recent call last):
        ...
        ValueError: priors['peak0_sigma'] is Normal with support real, but peak0_sigma lives on the positive reals; use HalfNormal, Gamma, LogNormal, Exponential or Uniform(a >= 0, b).
    """
    if priors is None or (isinstance(priors, Mapping) and not priors):
        return {}  # no user priors: NumPyro is not needed (nor imported)
    import numpyro.distributions as dist

    if not isinstance(priors, Mapping):
        raise ValueError(
            "priors must be a dict mapping a site name to a numpyro distribution, "
            f"got {type(priors).__name__}."
        )
    unknown = sorted(set(priors) - set(model.site_names), key=str)
    if unknown:
        raise ValueError(
            f"Unknown prior site(s) {unknown}; priors apply to the free sites "
            f"{list(model.site_names)} (tied and fixed parameters take no prior)."
        )
    for name, prior in priors.items():
        if not isinstance(prior, dist.Distribution):
            raise ValueError(
                f"priors[{name!r}] must be a numpyro distribution, got {type(prior).__name__}."
            )
        if prior.event_shape != () or prior.batch_shape != ():
            raise ValueError(
                f"priors[{name!r}] must be a scalar distribution, got batch shape "
                f"{prior.batch_shape} and event shape {prior.event_shape}."
            )
        _check_prior(name, prior, model)
    return dict(priors)


def _in_support(kind: str, value: np.ndarray) -> np.ndarray:
    if kind == "fraction":
        return (value >= 0) & (value <= 1)
    if kind == "asymmetry":
        return (value >= 0) & (value < 1)
    if kind == "exponent":
        return value > 0.5
    if KIND_SUPPORTS[kind] == "positive":
        return value > 0
    return np.isfinite(value)


def check_fixed(model: PeakModel, fixed: Mapping | None) -> dict:
    """Validate fixed values: one finite number each, inside the parameter's support
    (:func:`site_support`). Traced values are checked for shape only.

    Raises:
        ValueError: e.g. ``fixed peak0_sigma = -1.0 is outside its support: sigma must be
            > 0``.

    Example:
        >>> check_fixed(peak_model("gaussian", fixed=["peak0_sigma"]), {"peak0_sigma": -1})
        Traceback (most recent call last):
        ...
        ValueError: fixed peak0_sigma = -1 is outside its support: sigma must be > 0; fix it at a value inside, or leave it free.
    """
    fixed = {} if fixed is None else fixed
    if not isinstance(fixed, Mapping):
        raise ValueError(f"fixed must be a dict {{name: value}}, got {type(fixed).__name__}.")
    for name, value in fixed.items():
        if name not in model.parameter_names:
            continue  # peak_model names the unknown ones
        if _is_concrete(value):
            try:
                array = np.asarray(value, dtype=float)
            except (TypeError, ValueError):
                raise ValueError(
                    f"fixed[{name!r}] must be a number, got {type(value).__name__}."
                ) from None
        else:
            array = value
        if np.shape(array) != ():
            raise ValueError(
                f"fixed[{name!r}] has shape {np.shape(array)}: give one number, shared by all "
                "spectra (fit separately where the fixed values differ)."
            )
        if not _is_concrete(value):
            continue
        kind = _kind_of_site(model, name)
        if not np.isfinite(array):
            raise ValueError(f"fixed {name} = {float(array):g} is not finite; give a finite value.")
        if not _in_support(kind, array):
            parameter = name.split("_", 1)[1]
            bound = {
                "fraction": "must lie in [0, 1]",
                "asymmetry": "must lie in [0, 1)",
                "exponent": "must be > 0.5",
            }.get(kind, "must be > 0")
            raise ValueError(
                f"fixed {name} = {float(array):g} is outside its support: {parameter} {bound}; "
                "fix it at a value inside, or leave it free."
            )
    return dict(fixed)


def check_degrees_of_freedom(degrees_of_freedom) -> None:
    """The StudentT degrees of freedom: one finite number > 0 (checked when concrete)."""
    if np.shape(degrees_of_freedom) != ():
        raise ValueError(
            f"degrees_of_freedom must be one number, got shape {np.shape(degrees_of_freedom)}."
        )
    if not _is_concrete(degrees_of_freedom):
        return
    try:
        value = float(np.asarray(degrees_of_freedom, dtype=float))
    except (TypeError, ValueError):
        raise ValueError(
            f"degrees_of_freedom must be a number, got {type(degrees_of_freedom).__name__}."
        ) from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(
            f"degrees_of_freedom = {value} is invalid: the StudentT likelihood needs a finite "
            "number > 0 (small values, e.g. 4, for heavy tails)."
        )


def _is_concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


def check_program_inputs(
    model: PeakModel,
    x: ArrayLike,
    y: ArrayLike | None,
    mask: ArrayLike | None,
    *,
    priors,
    fixed,
    degrees_of_freedom,
    y_range,
    n_spectra: int | None = None,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None, dict]:
    """The checks of a peak program's arguments (:func:`peaks`, and with ``n_spectra``
    (B) the batch program :func:`gaussmix.models.shared_peaks.shared_peaks`): the
    priors, fixed values and degrees of freedom; x (M,) finite; y (M,) ((B, M) for a
    batch), finite where not masked, counts for a Poisson likelihood, or ``y_range``
    without it; mask of y's shape. Values are compared where concrete (not tracers).

    Returns:
        (x, y, mask, priors): x in a floating dtype, y in x's, mask boolean, the user's
        priors as a dict.

    Raises:
        ValueError: naming the argument and what it should be.
    """
    user_priors = check_priors(priors, model)
    check_fixed(model, fixed)
    if model.likelihood == "student_t":
        check_degrees_of_freedom(degrees_of_freedom)
    x = jnp.asarray(x)
    x = x.astype(jnp.result_type(float, x))
    if x.ndim != 1:
        raise ValueError(f"x must be one-dimensional (M,), got shape {x.shape}.")
    if _is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError("x contains NaN or infinity; give finite abscissae.")
    batch = n_spectra is not None
    if y is not None:
        y = jnp.asarray(y, x.dtype)
        if batch and (y.ndim != 2 or y.shape[1] != x.shape[0]):
            raise ValueError(
                f"y has shape {y.shape}; x has shape {x.shape}: give y of shape (B, "
                f"{x.shape[0]}), one row per spectrum."
            )
        if not batch and y.shape != x.shape:
            raise ValueError(f"y has shape {y.shape}; x has shape {x.shape}: give one y per x.")
    elif y_range is None:
        raise ValueError("Without data y, give y_range=(low, high) to scale the default priors.")
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        expected = y.shape if y is not None else x.shape
        if batch and y is None:
            expected = (n_spectra, x.shape[0])
        if mask.shape != expected:
            raise ValueError(f"mask has shape {mask.shape}; expected {expected}.")
    if y is not None and _is_concrete(y) and (mask is None or _is_concrete(mask)):
        used = np.asarray(y) if mask is None else np.asarray(y)[np.asarray(mask)]
        if not np.all(np.isfinite(used)):
            raise ValueError(
                "y contains NaN or infinity; drop those points or mask them (mask=False)."
            )
        if model.likelihood == "poisson" and (np.any(used < 0) or np.any(used != np.round(used))):
            raise ValueError(
                "The Poisson likelihood needs counts: y must hold non-negative integers."
            )
    return x, y, mask, user_priors


def peaks(
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    lineshapes: str | tuple[str, ...] = ("gaussian",),
    baseline: str | int | None = None,
    likelihood: str = "normal",
    degrees_of_freedom: ArrayLike = 4.0,
    priors: Mapping[str, Any] | None = None,
    ties: Mapping[str, str] | None = None,
    fixed: Mapping[str, ArrayLike] | None = None,
    mask: ArrayLike | None = None,
    y_range: tuple[ArrayLike, ArrayLike] | None = None,
) -> None:
    """Peaks on a baseline as a NumPyro program (see the module docstring for the sites).

    Args:
        x: (M,) abscissae.
        y: (M,) observations, or None to simulate (then give ``y_range`` for the default
            priors).
        lineshapes: one lineshape name per peak (:data:`gaussmix.models.lineshapes.LINESHAPES`).
        baseline: None, "constant", "linear", "exponential" or a polynomial degree n.
        likelihood: "normal", "student_t" (outliers; ``degrees_of_freedom``) or
            "poisson" (counts; no ``sigma`` site).
        degrees_of_freedom: of the StudentT likelihood.
        priors: site name -> scalar numpyro distribution replacing the default prior.
        ties: ``{name: target}``, e.g. ``{"peak1_sigma": "peak0_sigma"}``.
        fixed: ``{name: value}`` parameters held at a value.
        mask: (M,) booleans; False drops a point from the likelihood.
        y_range: (low, high) setting the default priors' scale instead of y's range.

    Example:
        >>> import jax, numpy as np
        >>> from numpyro.infer import Predictive
        >>> x = np.linspace(0.0, 10.0, 50)
        >>> draws = Predictive(peaks, num_samples=4)(
        ...     jax.random.key(0), x, lineshapes=("gaussian", "lorentzian"),
        ...     baseline="linear", y_range=(0.0, 5.0))
        >>> draws["y"].shape, draws["peak1_fwhm"].shape
        ((4, 50), (4,))
    """
    from gaussmix.models import load_numpyro

    numpyro = load_numpyro()  # NumPyro is imported where a program runs
    dist, handlers = numpyro.distributions, numpyro.handlers
    model = peak_model(lineshapes, baseline, likelihood, ties, fixed or {})
    x, y, mask, user_priors = check_program_inputs(
        model, x, y, mask, priors=priors, fixed=fixed,
        degrees_of_freedom=degrees_of_freedom, y_range=y_range,
    )  # fmt: skip
    x_low, x_high, y_low, y_high = data_ranges(x, y, mask, y_range)
    site_priors = program_priors(model, (x_low, x_high), (y_low, y_high), user_priors)

    free = {name: numpyro.sample(name, site_priors[name]) for name in model.free_names}
    fixed = fixed or {}
    for name in model.fixed:
        fixed = {**fixed, name: numpyro.deterministic(name, jnp.asarray(fixed[name], x.dtype))}
    params = resolve_parameters(model, free, fixed)
    for name, _ in model.ties:
        numpyro.deterministic(name, params[name])
    for name, value in derived_quantities(model, params).items():
        numpyro.deterministic(name, value)
    mean = mean_curve(x, model, params)

    if model.likelihood == "normal":
        noise = numpyro.sample(NOISE_SITE, site_priors[NOISE_SITE])
        observation = dist.Normal(mean, noise)
    elif model.likelihood == "student_t":
        noise = numpyro.sample(NOISE_SITE, site_priors[NOISE_SITE])
        observation = dist.StudentT(jnp.asarray(degrees_of_freedom, x.dtype), mean, noise)
    else:
        observation = dist.Poisson(jnp.maximum(mean, jnp.finfo(x.dtype).tiny))
    with numpyro.plate("points", x.shape[0]):
        context = handlers.mask(mask=mask) if mask is not None else contextlib.nullcontext()
        with context:
            numpyro.sample("y", observation, obs=y)
