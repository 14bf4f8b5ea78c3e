"""Peak fitting: :func:`fit_peaks`, its result :class:`PeakFit`, and :func:`select_peaks`.

A peak model (peaks of registered lineshapes on an optional baseline, with Normal,
StudentT or Poisson noise) is the NumPyro program :func:`gaussmix.models.peaks.peaks`.
``backend="map"`` fits it by Levenberg-Marquardt (:func:`gaussmix.inference.map.fit_map`),
one spectrum ``y`` of shape (M,) or a batch (B, M) at once; ``backend="mcmc"`` samples its
posterior by NUTS (:func:`gaussmix.inference.mcmc.sample`) started at the MAP.

The default priors are uniform on wide boxes that respect the bounds (positive heights and
widths, centres inside the x range; see :mod:`gaussmix.models.peaks`), flat inside: the
MAP is then the least-squares fit, equal to ``scipy.optimize.curve_fit``'s, and the Laplace
covariance equals its ``pcov``.
"""

import functools
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.typing import ArrayLike

from gaussmix.inference.map import fit_map
from gaussmix.models.lineshapes import GAUSSIAN_FWHM, integrate_profile
from gaussmix.models.peaks import (
    NOISE_SITE,
    PeakModel,
    baseline_curve,
    check_degrees_of_freedom,
    check_fixed,
    check_priors,
    default_priors,
    derived_quantities,
    mean_curve,
    peak_model,
    peaks,
    resolve_parameters,
)

__all__ = ["Integral", "PeakFit", "PeakFitWarning", "PeakSelection", "fit_peaks", "select_peaks"]

BACKENDS = ("map", "mcmc")
NAN_POLICIES = ("raise", "omit")

# How each lineshape's integral over [a, b] is computed (see integrate_profile).
_INTEGRAL_METHODS = {
    "gaussian": "closed form (erf)",
    "lorentzian": "closed form (arctan)",
    "pseudo_voigt": "closed form (erf and arctan)",
    "skewed_gaussian": "closed form (normal CDF and Owen's T)",
    "voigt": "quadrature (128-point Gauss-Legendre)",
    "voigt_area": "quadrature (128-point Gauss-Legendre)",
}


class PeakFitWarning(UserWarning):
    """A fit that did not converge, a singular covariance, or a parameter at a bound."""


class Integral(NamedTuple):
    """Integral of fitted peaks over an interval.

    Attributes:
        value: the integral; (B,) for a batch.
        stderr: its standard error: delta method on the Laplace covariance (MAP), or the
            posterior standard deviation (MCMC).
        method: how it was computed, e.g. "closed form (erf)".
    """

    value: np.ndarray | float
    stderr: np.ndarray | float
    method: str


@dataclass
class PeakFit:
    """Result of :func:`fit_peaks`.

    Scalars for one spectrum; (B,) arrays (and (B, P, P) covariances) for a batch.

    Attributes:
        lineshapes, baseline, likelihood, degrees_of_freedom, ties, fixed, priors: the
            model (see :func:`gaussmix.models.peaks.peaks`).
        backend: "map" or "mcmc".
        x: (M,) abscissae fitted.
        y: (M,) or (B, M) data fitted.
        mask: like y, False where a point was omitted (NaN), or None.
        params: name -> value of every curve parameter (free, tied and fixed), the
            derived ``peak{i}_area``, ``peak{i}_fwhm`` (``peak{i}_height``) and ``sigma``.
            MAP values, or posterior means (MCMC).
        stderr: name -> standard error of the curve parameters and derived quantities:
            Laplace (delta method for derived ones) for MAP, posterior sd for MCMC.
        parameter_names: the free curve parameters, the order of ``covariance``.
        covariance: (P, P) Laplace covariance (= curve_fit's pcov under flat priors), or
            the posterior covariance (MCMC).
        rss: residual sum of squares; redchi = rss / (n - p).
        aic, bic: :math:`-2\\log\\hat L + 2k` and :math:`-2\\log\\hat L + k\\log n`, with
            k the free parameters including the noise scale (for a Normal likelihood
            :math:`\\hat L` is maximized over the noise: lmfit's AIC plus
            :math:`n(1 + \\log 2\\pi) + 2`).
        log_likelihood: :math:`\\log\\hat L`.
        n_points: points used per spectrum; n_parameters: free curve parameters p.
        converged: the MAP converged to a point inside the prior boxes with a finite
            covariance (and, for MCMC, no divergence and R-hat < 1.01). A spectrum whose
            fit failed is False, with NaN (never 0) for what could not be computed.
        n_iter: Levenberg-Marquardt iterations.
        posterior: ``xarray.DataTree`` from NUTS (MCMC only).
    """

    lineshapes: tuple[str, ...]
    baseline: str | int | None
    likelihood: str
    degrees_of_freedom: float
    ties: dict[str, str]
    fixed: dict[str, float]
    priors: dict[str, Any] | None
    backend: str
    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray | None
    params: dict[str, Any]
    stderr: dict[str, Any]
    parameter_names: tuple[str, ...]
    covariance: np.ndarray
    rss: Any
    redchi: Any
    aic: Any
    bic: Any
    log_likelihood: Any
    n_points: Any
    n_parameters: int
    converged: Any
    n_iter: Any
    posterior: Any = field(default=None, repr=False)

    # -- model -----------------------------------------------------------------------

    @property
    def model(self) -> PeakModel:
        return peak_model(self.lineshapes, self.baseline, self.likelihood, self.ties, self.fixed)

    @property
    def n_spectra(self) -> int | None:
        """B for a batch, None for one spectrum."""
        return None if np.ndim(self.y) == 1 else int(np.shape(self.y)[0])

    def _curve_values(self, draws: bool = False) -> dict[str, np.ndarray]:
        """Curve parameters: MAP / posterior means, or posterior draws (S,) when draws."""
        names = self.model.parameter_names
        if draws:
            posterior = self.posterior["posterior"]
            return {name: np.asarray(posterior[name]).reshape(-1) for name in names}
        return {name: np.asarray(self.params[name], float) for name in names}

    def _grid(self, x: ArrayLike | None) -> np.ndarray:
        grid = self.x if x is None else np.asarray(x, float)
        if grid.ndim != 1 or not np.all(np.isfinite(grid)):
            raise ValueError(f"x must be a finite one-dimensional array, got shape {grid.shape}.")
        return grid

    # -- curves ----------------------------------------------------------------------

    def predict(self, x: ArrayLike | None = None) -> np.ndarray:
        """The fitted curve at x (default: the fitted x): (G,) or (B, G) for a batch.

        Example:
            >>> import numpy as np
            >>> x = np.linspace(-5, 5, 41)
            >>> fit = fit_peaks(x, 3 * np.exp(-0.5 * x**2) + 0.01 * np.sin(7 * x),
            ...                 peaks=("gaussian",))
            >>> round(float(fit.predict([0.0])[0]), 2)
            3.0
        """
        grid = self._grid(x)
        values = {k: v[..., None] for k, v in self._curve_values().items()}
        return np.asarray(mean_curve(grid, self.model, values))

    def components(self, x: ArrayLike | None = None) -> dict[str, np.ndarray]:
        """Each peak (``peak0`` ...) and the ``baseline`` at x: (G,) or (B, G) each."""
        grid = self._grid(x)
        model = self.model
        values = {k: v[..., None] for k, v in self._curve_values().items()}
        curves = {}
        for index, lineshape in enumerate(model.lineshapes):
            arguments = [values[name] for name in model.peak_parameter_names(index)]
            curves[f"peak{index}"] = np.asarray(lineshape.profile_fn(grid, *arguments))
        if model.baseline is not None:
            curves["baseline"] = np.broadcast_to(
                np.asarray(baseline_curve(grid, model, values)), curves["peak0"].shape
            ).copy()
        return curves

    # -- integrals -------------------------------------------------------------------

    def integrate(
        self,
        a: float,
        b: float,
        peaks: Sequence[int] | None = None,
        *,
        baseline: bool = False,
    ) -> Integral:
        """Integral of the fitted peaks (and optionally the baseline) from a to b.

        Closed forms where they exist (erf for Gaussian peaks, arctan for Lorentzians,
        Owen's T for skewed Gaussians, the polynomial or exponential baseline); Voigt
        peaks by Gauss-Legendre quadrature (``method`` says which). The standard error
        is the delta method on the Laplace covariance (MAP) or the posterior standard
        deviation over the draws (MCMC).

        Args:
            a, b: limits, a <= b (may be infinite).
            peaks: indices of the peaks to include; all by default.
            baseline: include the baseline.

        Example:
            >>> import numpy as np
            >>> x = np.linspace(-5, 5, 41)
            >>> fit = fit_peaks(x, 2 * np.exp(-0.5 * x**2) + 0.01 * np.cos(5 * x),
            ...                 peaks=("gaussian",))
            >>> result = fit.integrate(-np.inf, np.inf)
            >>> round(float(result.value), 1), result.method
            (5.0, 'closed form (erf)')
        """
        a, b = float(a), float(b)
        if not a <= b:
            raise ValueError(f"integrate needs a <= b, got a={a}, b={b}.")
        model = self.model
        selected = tuple(range(model.n_peaks)) if peaks is None else tuple(int(i) for i in peaks)
        if any(i < 0 or i >= model.n_peaks for i in selected):
            raise ValueError(f"peaks must be indices in [0, {model.n_peaks}), got {selected}.")
        if baseline and model.baseline is None:
            raise ValueError("baseline=True, but the model has no baseline.")
        methods = sorted({_INTEGRAL_METHODS[model.lineshapes[i].name] for i in selected})
        if baseline:
            methods.append("closed form (baseline)")
        method = "; ".join(methods)

        quantity = ("integral", a, b, selected, bool(baseline))
        if self.backend == "mcmc":
            draws = self._curve_values(draws=True)
            values = np.asarray(
                jax.vmap(lambda params: _quantity(model, quantity, params)[0])(
                    {k: jnp.asarray(v) for k, v in draws.items()}
                )
            )
            return Integral(float(values.mean()), float(values.std(ddof=1)), method + ", posterior")
        value, stderr = _delta_method(self, quantity)
        return Integral(_to_numpy(value[..., 0]), _to_numpy(stderr[..., 0]), method)

    # -- text and figures ------------------------------------------------------------

    def report(self, index: int = 0) -> str:
        """A text table of the fit: statistics, then value, standard error and relative
        error of every parameter and derived quantity (of spectrum ``index`` of a batch).

        Example:
            >>> import numpy as np
            >>> x = np.linspace(-5, 5, 41)
            >>> fit = fit_peaks(x, np.exp(-0.5 * x**2) + 0.01 * np.sin(9 * x),
            ...                 peaks=("gaussian",))
            >>> print(fit.report().splitlines()[0])
            Peak fit: 1 peak (gaussian), no baseline, normal likelihood, map backend
        """
        batch = self.n_spectra
        if batch is not None and not 0 <= index < batch:
            raise ValueError(f"index must be in [0, {batch}), got {index}.")

        def pick(value):
            value = np.asarray(value)
            return value[index] if batch is not None and value.ndim > 0 else value

        model = self.model
        shapes = ", ".join(self.lineshapes)
        n_peaks = len(self.lineshapes)
        baseline = "no baseline" if self.baseline is None else f"{self.baseline} baseline"
        lines = [
            f"Peak fit: {n_peaks} peak{'s' if n_peaks > 1 else ''} ({shapes}), {baseline}, "
            f"{self.likelihood} likelihood, {self.backend} backend"
        ]
        if batch is not None:
            lines.append(f"spectrum {index} of {batch}")
        lines.append(
            f"converged: {bool(pick(self.converged))} after {int(pick(self.n_iter))} "
            f"iterations; {int(pick(self.n_points))} points, {self.n_parameters} parameters"
        )
        lines.append(
            f"rss = {float(pick(self.rss)):.6g}   reduced chi-square = "
            f"{float(pick(self.redchi)):.6g}   AIC = {float(pick(self.aic)):.6g}   "
            f"BIC = {float(pick(self.bic)):.6g}"
        )
        width = max(len(name) for name in self.params) + 2
        lines.append(f"{'name':<{width}}{'value':>16}{'stderr':>14}{'rel. %':>10}  note")
        tied = dict(self.ties)
        for name in (*model.parameter_names, *model.derived_names, NOISE_SITE):
            if name not in self.params:
                continue
            value = float(pick(self.params[name]))
            error = self.stderr.get(name)
            note = ""
            if name in tied:
                note = f"= {tied[name]}"
            elif name in self.fixed:
                note = "fixed"
            elif name in model.derived_names:
                note = "derived"
            if error is None:
                lines.append(f"{name:<{width}}{value:16.8g}{'':>14}{'':>10}  {note}")
                continue
            error = float(pick(error))
            relative = 100 * abs(error / value) if value != 0 else math.inf
            lines.append(f"{name:<{width}}{value:16.8g}{error:14.4g}{relative:10.3g}  {note}")
        return "\n".join(lines)

    def plot(self, index: int = 0, *, x: ArrayLike | None = None, ax=None):
        """Data, fitted curve and components (matplotlib, imported here).

        For MCMC the curves are posterior medians with 90 % bands from the draws.

        Args:
            index: spectrum of a batch.
            x: abscissae of the curves (default: 400 points over the data range).
            ax: matplotlib Axes; a new figure when None.

        Returns:
            The Axes.
        """
        from gaussmix import plots

        batch = self.n_spectra
        if batch is not None and not 0 <= index < batch:
            raise ValueError(f"index must be in [0, {batch}), got {index}.")
        grid = np.linspace(self.x.min(), self.x.max(), 400) if x is None else self._grid(x)
        y = self.y if batch is None else self.y[index]
        keep = np.ones(y.shape, bool) if self.mask is None else np.asarray(self.mask)
        keep = keep if batch is None or keep.ndim == 1 else keep[index]
        if self.backend == "mcmc":
            draws = self._curve_values(draws=True)
            chosen = np.linspace(0, next(iter(draws.values())).size - 1, 400).astype(int)
            values = {k: v[chosen][:, None] for k, v in draws.items()}
            model = self.model
            total = np.asarray(mean_curve(grid, model, values))
            components = {}
            for i, lineshape in enumerate(model.lineshapes):
                arguments = [values[name] for name in model.peak_parameter_names(i)]
                components[f"peak{i}"] = np.asarray(lineshape.profile_fn(grid, *arguments))
            if model.baseline is not None:
                components["baseline"] = np.broadcast_to(
                    np.asarray(baseline_curve(grid, model, values)), total.shape
                )
            label = "posterior median"
        else:
            total = self.predict(grid)
            components = self.components(grid)
            if batch is not None:
                total = total[index]
                components = {k: v[index] for k, v in components.items()}
            label = "MAP fit"
        return plots.plot_peaks(
            self.x[keep],
            y[keep],
            grid=grid,
            total=total,
            components=components,
            total_label=label,
            ax=ax,
        )


def _quantity(model: PeakModel, quantity: tuple, params) -> jax.Array:
    """("derived", names) -> derived quantities; ("integral", a, b, peaks, baseline)."""
    if quantity[0] == "derived":
        derived = derived_quantities(model, params)
        return jnp.stack([derived[name] for name in quantity[1]])
    _, a, b, selected, baseline = quantity
    value = 0.0
    for index in selected:
        arguments = tuple(params[name] for name in model.peak_parameter_names(index))
        value = value + integrate_profile(model.lineshapes[index], a, b, arguments)
    if baseline:
        arguments = [jnp.asarray(params[name]) for name in model.baseline_parameter_names]
        value = value + model.baseline.integral_fn(jnp.asarray(a), jnp.asarray(b), *arguments)
    return jnp.reshape(value, (1,))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _delta(model: PeakModel, names: tuple, quantity: tuple, free, covariance, fixed):
    """Values of a quantity and their delta-method standard errors, (Q,) or (B, Q)."""

    def of_vector(vector):
        params = resolve_parameters(model, dict(zip(names, vector, strict=True)), fixed)
        return _quantity(model, quantity, params)

    def one(vector, covariance):
        jacobian = jax.jacfwd(of_vector)(vector)
        variance = jnp.einsum("qi,ij,qj->q", jacobian, covariance, jacobian)
        return of_vector(vector), jnp.sqrt(variance)

    return one(free, covariance) if free.ndim == 1 else jax.vmap(one)(free, covariance)


def _delta_method(fit: PeakFit, quantity: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Quantity values and delta-method standard errors at the MAP: (Q,) or (B, Q)."""
    names = fit.parameter_names
    free = np.stack([np.asarray(fit.params[name], float) for name in names], axis=-1)
    fixed = {name: jnp.asarray(value) for name, value in fit.fixed.items()}
    dtype = jnp.result_type(float)
    value, error = _delta(
        fit.model,
        tuple(names),
        quantity,
        jnp.asarray(free, dtype),
        jnp.asarray(fit.covariance, dtype),
        fixed,
    )
    return np.asarray(value), np.asarray(error)


# ---------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------


def _numeric(name: str, value: ArrayLike) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric; got {type(value).__name__}.") from None
    return array


def _check_data(x, y, nan_policy: str):
    """x (M,), y (M,) or (B, M) as float arrays, and a mask (None when all finite)."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {list(NAN_POLICIES)}, got {nan_policy!r}.")
    x = _numeric("x", x)
    y = _numeric("y", y)
    if x.ndim != 1:
        raise ValueError(f"x must be one-dimensional (M,), got shape {x.shape}.")
    if y.ndim not in (1, 2):
        raise ValueError(f"y must have shape (M,) or (B, M), got shape {y.shape}.")
    if y.shape[-1] != x.shape[0]:
        raise ValueError(
            f"x has {x.shape[0]} points but y has {y.shape[-1]} per spectrum: give one y "
            "value per x (y of shape (M,) or (B, M))."
        )
    bad_x = ~np.isfinite(x)
    if bad_x.any():
        if nan_policy == "raise":
            raise ValueError(
                f"x contains NaN or infinity at {int(bad_x.sum())} point(s); remove them or "
                "pass nan_policy='omit'."
            )
        x, y = x[~bad_x], y[..., ~bad_x]
    finite = np.isfinite(y)
    mask = None
    if not finite.all():
        if nan_policy == "raise":
            raise ValueError(
                f"y contains NaN or infinity at {int((~finite).sum())} point(s); remove them "
                "or pass nan_policy='omit'."
            )
        mask = finite
        y = np.where(finite, y, 0.0)
    if x.size < 2 or np.ptp(x) <= 0:
        raise ValueError("x must hold at least two distinct finite values.")
    return x, y, mask


def _check_init_values(init: Mapping, model: PeakModel, n_spectra: int | None) -> dict:
    if not isinstance(init, Mapping):
        raise ValueError(
            f"init must be 'auto' or a dict of starting values, got {type(init).__name__}."
        )
    allowed = set(model.site_names)
    ignored = set(model.parameter_names) - set(model.free_names) | set(model.derived_names)
    unknown = sorted(set(init) - allowed - ignored)
    if unknown:
        raise ValueError(
            f"init names unknown parameter(s) {unknown}; free parameters: {list(model.site_names)}."
        )
    values = {}
    for name, value in init.items():
        if name not in allowed:
            continue
        array = _numeric(f"init[{name!r}]", value)
        if array.ndim > 1 or (array.ndim == 1 and array.shape[0] != (n_spectra or -1)):
            raise ValueError(
                f"init[{name!r}] has shape {array.shape}; give a number"
                + (f" or {n_spectra} values, one per spectrum." if n_spectra else ".")
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"init[{name!r}] must be finite, got {value!r}.")
        kind = "noise" if name == NOISE_SITE else model.kind(name)
        if kind in ("width", "noise") and np.any(array <= 0):
            raise ValueError(
                f"init[{name!r}] = {value!r}: {'widths' if kind == 'width' else 'sigma'} must "
                "be > 0."
            )
        if kind == "fraction" and np.any((array < 0) | (array > 1)):
            raise ValueError(f"init[{name!r}] = {value!r}: a fraction must lie in [0, 1].")
        values[name] = array
    return values


def _check_init_support(given: Mapping, site_priors: Mapping) -> None:
    """Starting values given by the user inside their priors' supports (per spectrum),
    checked before anything is compiled."""
    for name, value in given.items():
        inside = np.asarray(site_priors[name].support(jnp.asarray(value)), bool)
        if not inside.all():
            raise ValueError(
                f"init[{name!r}] = {np.asarray(value).tolist()} lies outside the support of "
                f"its prior {site_priors[name].support}; start inside it or widen the prior."
            )


# ---------------------------------------------------------------------------------------
# Starting values
# ---------------------------------------------------------------------------------------


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return values
    kernel = np.ones(width) / width
    padded = np.pad(values, width // 2, mode="edge")
    return np.convolve(padded, kernel, mode="valid")[: values.size]


def _baseline_start(x, y, model: PeakModel) -> tuple[dict, np.ndarray]:
    """Baseline parameters from the lower envelope of the data, and the baseline curve."""
    if model.baseline is None:
        return {}, np.zeros_like(y)
    if model.baseline.name == "exponential":
        lower = y <= np.quantile(y, 0.3)
        points_x, points_y = x[lower], y[lower]
        if np.all(points_y > 0) and np.ptp(points_x) > 0:
            slope, intercept = np.polyfit(points_x, np.log(points_y), 1)
            amplitude, rate = float(np.exp(intercept)), float(-slope)
        else:
            amplitude, rate = float(np.median(points_y)), 0.0
        reach = max(abs(x.min()), abs(x.max()))
        rate = float(np.clip(rate, -10.0 / reach, 10.0 / reach))
        values = {"baseline_amplitude": amplitude, "baseline_rate": rate}
        return values, amplitude * np.exp(-rate * x)
    degree = len(model.baseline.parameters) - 1
    keep = np.ones(x.shape, bool)
    for _ in range(4):
        coefficients = np.polyfit(x[keep], y[keep], min(degree, max(int(keep.sum()) - 1, 0)))
        curve = np.polyval(coefficients, x)
        below = y <= curve
        if below.sum() <= degree + 1:
            break
        keep = below
    coefficients = np.pad(coefficients[::-1], (0, degree + 1 - coefficients.size))
    values = {f"baseline_c{k}": float(c) for k, c in enumerate(coefficients)}
    return values, np.polyval(coefficients[::-1], x)


def _sorted_and_smoothed(x: np.ndarray, y: np.ndarray, keep: np.ndarray):
    """The kept points sorted by x, their y smoothed over ~1 % of them, and the median
    spacing of x."""
    order = np.argsort(x[keep])
    xs, ys = x[keep][order], y[keep][order]
    spacing = float(np.median(np.diff(xs))) if xs.size > 1 else 1.0
    spacing = spacing if spacing > 0 else float(np.ptp(xs)) / max(xs.size, 2)
    return xs, ys, _smooth(ys, max(1, (xs.size // 100) | 1)), spacing


def _residual_peaks(xs, residual, n_peaks: int, spacing: float, spread: float) -> list:
    """(centre, height, FWHM) of ``n_peaks`` peaks found greedily in a smoothed residual
    on sorted ``xs``: the highest maximum, its half-maximum crossings, then that peak
    (as a Gaussian) subtracted before the next."""
    found = []
    for _ in range(n_peaks):
        i = int(np.argmax(residual))
        height = float(residual[i])
        if height <= 0:
            height = max(spread, 1e-12) * 0.1
        half = residual >= height / 2
        left, right = i, i
        while left > 0 and half[left - 1]:
            left -= 1
        while right < xs.size - 1 and half[right + 1]:
            right += 1
        fwhm = max(float(xs[right] - xs[left]), 2.0 * spacing)
        found.append((float(xs[i]), height, fwhm))
        sigma = fwhm / GAUSSIAN_FWHM
        residual = residual - height * np.exp(-0.5 * ((xs - xs[i]) / sigma) ** 2)
    return found


def _peak_start(model: PeakModel, index: int, center: float, height: float, fwhm: float):
    """Starting values of peak ``index``'s parameters from its centre, height and FWHM."""
    lineshape = model.lineshapes[index]
    values = {}
    for parameter, kind in zip(lineshape.parameters, lineshape.kinds, strict=True):
        if kind == "height":
            value = height
        elif kind == "area":
            value = height * fwhm * 1.064
        elif kind == "center":
            value = center
        elif kind == "width":
            share = 0.5 if lineshape.name in ("voigt", "voigt_area") else 1.0
            value = share * fwhm / (2.0 if parameter == "gamma" else GAUSSIAN_FWHM)
        elif kind == "fraction":
            value = 0.5
        else:
            value = 0.0
        values[f"peak{index}_{parameter}"] = value
    return values


def _auto_start(x: np.ndarray, y: np.ndarray, keep: np.ndarray, model: PeakModel) -> dict:
    """Starting values for one spectrum: baseline, then peaks greedily by height."""
    xs, ys, smooth, spacing = _sorted_and_smoothed(x, y, keep)
    values, base = _baseline_start(xs, smooth, model)
    found = _residual_peaks(xs, smooth - base, model.n_peaks, spacing, float(np.ptp(ys)))
    for index, (center, height, fwhm) in enumerate(sorted(found)):
        values.update(_peak_start(model, index, center, height, fwhm))
    fitted = mean_curve(xs, model, {**{k: 0.0 for k in model.parameter_names}, **values})
    differences = np.diff(ys)
    noise = float(np.median(np.abs(differences - np.median(differences)))) * 1.4826 / math.sqrt(2)
    if not noise > 0:
        noise = float(np.std(ys - np.asarray(fitted))) or max(float(np.ptp(ys)), 1.0) * 1e-3
    values[NOISE_SITE] = noise
    return values


def _inside(prior: dist.Distribution, value: float, row: int) -> float:
    """``value`` moved strictly inside a uniform prior's box (that of spectrum ``row``
    for per-spectrum bounds); other priors leave it as it is."""
    if not isinstance(prior, dist.Uniform):
        return value
    low, high = (float(np.ravel(bound)[row % np.size(bound)]) for bound in (prior.low, prior.high))
    margin = 1e-6 * (high - low)
    return float(np.clip(value, low + margin, high - margin))


def _clip_to_defaults(values: dict, model: PeakModel, x: np.ndarray, y: np.ndarray, keep) -> dict:
    """Keep automatic starting values strictly inside the default prior boxes."""
    ranges = (x.min(), x.max()), (y[keep].min(), y[keep].max())
    priors = default_priors(model, *ranges)
    return {name: _inside(priors.get(name), value, 0) for name, value in values.items()}


def _median_of_rows(values: np.ndarray, keepdims: bool = False) -> np.ndarray:
    """np.median along the last axis of finite values, by one partition."""
    size = values.shape[-1]
    middle = sorted({(size - 1) // 2, size // 2})
    parted = np.partition(values, middle, axis=-1)[..., middle]
    return parted.mean(axis=-1, keepdims=keepdims)


def _noise_start(y: np.ndarray, mask, likelihood: str) -> np.ndarray | float:
    """Noise scale of each spectrum from the spread of its first differences (MAD).

    A Normal likelihood needs none: the MAP back end starts its scale at the maximum
    :math:`\\sqrt{\\mathrm{RSS}/n}` of the starting curve, so 1 serves as the start.
    """
    if likelihood == "normal":
        return np.ones(y.shape[0]) if y.ndim == 2 else 1.0
    values = np.where(mask, y, np.nan) if mask is not None else y
    # np.nanmedian goes row by row: only with NaN. Without, a partition of the middle
    # element(s) is 4x faster than np.median, which partitions again to look for NaN.
    median = _median_of_rows if mask is None else functools.partial(np.nanmedian, axis=-1)
    differences = np.diff(values, axis=-1)
    centred = differences - median(differences, keepdims=True)
    noise = median(np.abs(centred)) * 1.4826 / math.sqrt(2)
    spread = np.nanmax(values, axis=-1) - np.nanmin(values, axis=-1)
    noise = np.where(noise > 0, noise, np.maximum(spread, 1.0) * 1e-3)
    return _to_numpy(noise)


def _auto_init(x, y, mask, model: PeakModel) -> dict[str, np.ndarray]:
    spectra = y if y.ndim == 2 else y[None]
    masks = np.ones(spectra.shape, bool) if mask is None else np.broadcast_to(mask, spectra.shape)
    rows = []
    for row, keep in zip(spectra, masks, strict=True):
        start = _auto_start(x, row, keep, model)
        rows.append(_clip_to_defaults(start, model, x, row, keep))
    names = [name for name in model.site_names if name in rows[0]]
    stacked = {name: np.array([row[name] for row in rows]) for name in names}
    return stacked if y.ndim == 2 else {name: value[0] for name, value in stacked.items()}


# ---------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _program(lineshapes: tuple, baseline, likelihood: str, ties: tuple):
    """One function object per model structure, so compiled fits are reused."""
    return functools.partial(
        peaks, lineshapes=lineshapes, baseline=baseline, likelihood=likelihood, ties=dict(ties)
    )


def _model_kwargs(priors, fixed, likelihood, degrees_of_freedom, dtype) -> dict:
    kwargs = {}
    if priors:
        kwargs["priors"] = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), dict(priors))
    if fixed:
        kwargs["fixed"] = {name: jnp.asarray(value, dtype) for name, value in fixed.items()}
    if likelihood == "student_t":
        kwargs["degrees_of_freedom"] = jnp.asarray(degrees_of_freedom, dtype)
    return kwargs


def _to_numpy(value):
    """A Python scalar (float, int or bool) for 0-d values, else a NumPy array."""
    array = np.asarray(value)
    return array.item() if array.ndim == 0 else array


def _site_priors(model: PeakModel, x, y, mask, priors) -> dict:
    """The prior of every latent site as the program sets it for this data (per spectrum
    bounds for a batch): the defaults, replaced by the user's."""
    values = y if mask is None else np.where(mask, y, np.nan)
    y_range = (np.nanmin(values, axis=-1), np.nanmax(values, axis=-1))
    site_priors = default_priors(model, (float(x.min()), float(x.max())), y_range)
    site_priors.update(priors or {})
    return site_priors


def _bound_hits(params: Mapping, priors: Mapping, names: Sequence[str]) -> dict:
    """Per parameter of ``names`` with a uniform prior, per spectrum: whether it ended
    within 1e-6 (float32: 1e-4) of a bound, relative to the box."""
    relative = max(1e-6, 1e3 * float(jnp.finfo(jnp.result_type(float)).eps))
    hits = {}
    for name in names:
        prior, value = priors.get(name), params[name]
        if not isinstance(prior, dist.Uniform):
            continue
        low, high = np.asarray(prior.low), np.asarray(prior.high)
        margin = relative * (high - low)
        value = np.asarray(value)
        hits[name] = (value <= low + margin) | (value >= high - margin)
    return hits


def _at_bound(params: Mapping, priors: Mapping, names: Sequence[str]):
    """Per spectrum, whether a parameter of ``names`` ended at a bound of its uniform
    prior (:func:`_bound_hits`); and the names of those parameters."""
    hits = _bound_hits(params, priors, names)
    names = [name for name, hit in hits.items() if np.any(hit)]
    return np.asarray(functools.reduce(np.logical_or, hits.values(), False)), names


def fit_peaks(
    x: ArrayLike,
    y: ArrayLike,
    peaks: str | Sequence[str] = ("gaussian", "gaussian"),
    baseline: str | int | None = None,
    *,
    init: str | Mapping[str, ArrayLike] = "auto",
    backend: str = "map",
    priors: Mapping[str, dist.Distribution] | None = None,
    ties: Mapping[str, str] | None = None,
    fixed: Mapping[str, float] | None = None,
    likelihood: str = "normal",
    degrees_of_freedom: float = 4.0,
    nan_policy: str = "raise",
    max_iterations: int = 200,
    tolerance: float | None = None,
    lost_peak_retries: int = 1,
    batch_size: int = 32,
    devices: int | Sequence[jax.Device] | Any | None = None,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    num_chains: int = 4,
    seed: int = 0,
    progress_bar: bool | None = None,
) -> PeakFit:
    """Fit a sum of peaks on a baseline to one spectrum or a batch of spectra.

    .. math::

        y_m = \\sum_i p_i(x_m; \\theta_i) + b(x_m; \\beta) + \\varepsilon_m,\\qquad
        \\varepsilon_m \\sim \\mathcal{N}(0, \\sigma) \\text{ (or StudentT, Poisson)}

    Args:
        x: (M,) abscissae.
        y: (M,) one spectrum, or (B, M) spectra fitted at once (MAP only).
        peaks: one lineshape per peak: "gaussian", "lorentzian", "voigt", "voigt_area",
            "pseudo_voigt", "skewed_gaussian".
        baseline: None, "constant", "linear", "exponential" or a polynomial degree n.
        init: "auto" (smoothing, baseline from the lower envelope, peaks greedily from
            the highest residual maximum, widths from the half-maximum crossings), or a
            dict of starting values like curve_fit's p0 (numbers, or (B,) arrays); missing
            ones are found automatically; tied, fixed and derived names are ignored, so a
            previous fit's ``params`` can be passed.
        backend: "map" (Levenberg-Marquardt) or "mcmc" (NUTS from the MAP).
        priors: site name -> scalar numpyro distribution replacing a default prior.
        ties: ``{name: target}``: e.g. ``{"peak1_sigma": "peak0_sigma"}``.
        fixed: ``{name: value}`` parameters held fixed.
        likelihood: "normal", "student_t" (with ``degrees_of_freedom``) or "poisson".
        degrees_of_freedom: of the StudentT likelihood.
        nan_policy: "raise" (default) or "omit" (drop non-finite points).
        max_iterations: Levenberg-Marquardt steps per spectrum.
        tolerance: convergence tolerance of the MAP (default by dtype, see
            :func:`gaussmix.inference.map.fit_map`).
        lost_peak_retries: rounds of refits for spectra that lost a peak: a peak whose
            height, area or width ended at zero, or its centre at an end of x, is
            re-seeded at the largest maximum of the residual (the other parameters keep
            their fitted values) and the spectrum refitted; the fit with the higher
            posterior is kept. Only those spectra are refitted, through the same compiled
            fit. 0 returns the first fits as they ended (at a bound, flagged).
        batch_size: spectra iterated together by the MAP back end (per device).
        devices: None (one device), or the devices a batch is split over for the MAP
            fits: an int n (the first n local devices), a list of devices or a one-axis
            ``jax.sharding.Mesh``; same results as one device. On CPU, create devices
            before JAX starts (``XLA_FLAGS=--xla_force_host_platform_device_count=2``
            fits on two cores).
        num_warmup, num_samples, num_chains, seed, progress_bar: NUTS settings (MCMC).

    Returns:
        :class:`PeakFit`.

    Raises:
        ValueError: x and y of different lengths, NaN or infinity with
            ``nan_policy="raise"``, fewer points than parameters, an unknown lineshape,
            baseline or option; a prior whose support does not lie in its site's (see
            :func:`gaussmix.models.peaks.site_support`: heights, areas, widths and the
            noise positive, fractions in [0, 1], the rest real) or with non-finite or
            invalid parameters; a fixed value that is not one finite number in its
            parameter's support; a tie between parameters of different kinds; an init
            value that is not finite or lies outside its prior's support;
            ``degrees_of_freedom`` not finite and > 0; ``tolerance`` not in (0, 1).

    Warns:
        PeakFitWarning: once per call for the spectra that ended with a parameter at a
            bound of their prior, and once for those whose fit failed: at its start (the
            log posterior not finite at the starting values: params, rss, redchi, stderr
            and covariance NaN), with a singular covariance (stderr NaN), or out of
            iterations. All are flagged False in ``converged``.

    Example:
        >>> import numpy as np
        >>> x = np.arange(10.0)
        >>> y = np.array([0, 1, 2, 3, 4, 5, 4, 3, 2, 1.0])
        >>> fit = fit_peaks(x, y, peaks=("gaussian", "gaussian"),
        ...                 init={"peak0_height": 3, "peak0_center": 3, "peak0_sigma": 1,
        ...                       "peak1_height": 4, "peak1_center": 6, "peak1_sigma": 1})
        >>> round(fit.params["peak0_center"], 2), round(fit.rss, 3)  # curve_fit's optimum
        (4.94, 0.354)
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}.")
    for name, value, least in (
        ("max_iterations", max_iterations, 1),
        ("batch_size", batch_size, 1),
        ("lost_peak_retries", lost_peak_retries, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}.")
    if tolerance is not None and (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, numbers.Real)
        or not 0 < tolerance < 1
    ):
        raise ValueError(f"tolerance must be None or a number in (0, 1), got {tolerance!r}.")
    model = peak_model(peaks, baseline, likelihood, ties, {} if fixed is None else fixed)
    fixed = {name: float(value) for name, value in check_fixed(model, fixed).items()}
    check_priors(priors, model)
    check_degrees_of_freedom(degrees_of_freedom)
    degrees_of_freedom = float(degrees_of_freedom)
    x, y, mask = _check_data(x, y, nan_policy)
    n_spectra = y.shape[0] if y.ndim == 2 else None
    if backend == "mcmc" and n_spectra is not None:
        raise ValueError(
            "backend='mcmc' fits one spectrum at a time: pass y of shape (M,) (loop over the "
            "rows of a batch)."
        )
    n_free = len(model.free_names)
    counts = (
        np.full(n_spectra or 1, x.shape[0]) if mask is None else mask.reshape(-1, x.size).sum(1)
    )
    if counts.min() <= n_free:
        raise ValueError(
            f"{int(counts.min())} usable points for {n_free} free parameters: a fit needs at "
            f"least {n_free + 1} points (fewer peaks, ties or fixed values reduce the count)."
        )
    if likelihood == "poisson":
        used = y if mask is None else y[mask]
        if np.any(used < 0) or np.any(used != np.round(used)):
            raise ValueError(
                "The Poisson likelihood needs counts: y must hold non-negative integers."
            )
    if isinstance(init, str):
        if init != "auto":
            raise ValueError(f"init must be 'auto' or a dict of starting values, got {init!r}.")
        given = {}
    else:
        given = _check_init_values(init, model, n_spectra)
    missing = set(model.site_names) - set(given)
    if missing - {NOISE_SITE}:
        start = _auto_init(x, y, mask, model)
    elif missing:
        start = {NOISE_SITE: _noise_start(y, mask, model.likelihood)}
    else:
        start = {}
    start.update(given)
    start = {name: start[name] for name in model.site_names}
    _check_init_support(given, _site_priors(model, x, y, mask, priors))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Out-of-support values", UserWarning)
        map_fit = _fit_map(
            model, x, y, mask, start, priors, fixed, degrees_of_freedom, max_iterations,
            tolerance, batch_size, devices, lost_peak_retries,
        )  # fmt: skip
    if backend == "map":
        return map_fit
    return _fit_mcmc(map_fit, priors, num_warmup, num_samples, num_chains, seed, progress_bar)


def _fit_map(
    model, x, y, mask, start, priors, fixed, degrees_of_freedom, max_iterations, tolerance,
    batch_size, devices, lost_peak_retries,
) -> PeakFit:  # fmt: skip
    dtype = jnp.result_type(float)
    program = _program(
        tuple(shape.name for shape in model.lineshapes),
        _baseline_key(model),
        model.likelihood,
        model.ties,
    )
    kwargs = _model_kwargs(priors, fixed, model.likelihood, degrees_of_freedom, dtype)
    fit_spectra = functools.partial(
        fit_map,
        program,
        x,
        jnp.asarray(y, dtype),  # on the device once for the first fit and the refits
        mask=mask,
        model_kwargs=kwargs,
        noise_site=NOISE_SITE,
        max_iterations=max_iterations,
        tolerance=tolerance,
        step_tolerance=tolerance,
        batch_size=batch_size,
        devices=devices,
    )
    result = fit_spectra(start)
    site_priors = _site_priors(model, x, y, mask, priors)
    for _ in range(lost_peak_retries):
        init, lost = _reseed_lost_peaks(model, x, y, mask, result.params, fixed, site_priors)
        if not lost.any():
            break
        retry = fit_spectra(init, active=lost)
        result = _keep_better(result, retry, lost)
    names = result.parameter_names
    free = {name: np.asarray(result.params[name]) for name in names}
    covariance = np.asarray(result.covariance)
    fixed_values = {name: jnp.asarray(value) for name, value in fixed.items()}
    batched = y.ndim == 2
    resolved = resolve_parameters(model, free, fixed_values)
    params = {
        name: np.broadcast_to(np.asarray(value), (y.shape[0],)).copy() if batched else float(value)
        for name, value in resolved.items()
    }
    variances = np.diagonal(covariance, axis1=-2, axis2=-1)
    stderr = {name: np.sqrt(variances[..., i]) for i, name in enumerate(names)}
    for name, target in model.ties:
        stderr[name] = stderr.get(target, np.zeros_like(variances[..., 0]))
    for name in model.fixed:
        stderr[name] = np.zeros_like(variances[..., 0])
    fit = PeakFit(
        lineshapes=tuple(shape.name for shape in model.lineshapes),
        baseline=_baseline_key(model),
        likelihood=model.likelihood,
        degrees_of_freedom=float(degrees_of_freedom),
        ties=dict(model.ties),
        fixed=dict(fixed),
        priors=dict(priors) if priors else None,
        backend="map",
        x=x,
        y=y,
        mask=mask,
        params=params,
        stderr={k: _to_numpy(v) for k, v in stderr.items()},
        parameter_names=tuple(names),
        covariance=covariance,
        rss=None,
        redchi=None,
        aic=None,
        bic=None,
        log_likelihood=None,
        n_points=_to_numpy(result.n_points),
        n_parameters=len(names),
        converged=_to_numpy(result.converged),
        n_iter=_to_numpy(result.n_iter),
    )
    if model.derived_names:
        values, errors = _delta_method(fit, ("derived", model.derived_names))
        for index, name in enumerate(model.derived_names):
            fit.params[name] = _to_numpy(values[..., index])
            fit.stderr[name] = _to_numpy(errors[..., index])
    if model.has_noise:
        fit.params[NOISE_SITE] = _to_numpy(result.params[NOISE_SITE])
    _statistics(fit, result, model)
    _check_result(fit, model, site_priors, result.started, max_iterations)
    return fit


def _reseed_lost_peaks(model: PeakModel, x, y, mask, params, fixed, site_priors):
    """Starting values for a refit of the spectra that lost a peak, and which those are.

    A peak is lost when a parameter of it ended at a bound of its uniform prior: a height
    or area at zero (the peak faded while far from its data), a width at zero or a centre
    at an end of x. Its parameters are re-seeded from the largest maximum of the smoothed
    residual (centre, height, FWHM), as ``init="auto"`` seeds peaks; every other parameter
    keeps its fitted value. Spectra whose new start would leave a prior's support are not
    refitted. Returns (B,) arrays (scalars for one spectrum) and (B,) booleans.
    """
    hits = _bound_hits(params, site_priors, model.free_names)
    values = {name: np.atleast_1d(np.array(params[name], float)) for name in model.site_names}
    n_spectra = values[model.site_names[0]].shape[0]
    lost = np.zeros((n_spectra, model.n_peaks), bool)
    for index in range(model.n_peaks):
        for name in model.peak_parameter_names(index):
            if name in hits:
                lost[:, index] |= np.atleast_1d(hits[name])
    active = lost.any(axis=1)
    rows = np.flatnonzero(active)
    if rows.size:
        spectra = np.atleast_2d(y)[rows]
        keeps = np.ones(spectra.shape, bool) if mask is None else np.atleast_2d(mask)[rows]
        free = {name: value[rows, None] for name, value in values.items()}
        curves = np.asarray(mean_curve(x, model, resolve_parameters(model, free, fixed)))
        for row, spectrum, curve, keep in zip(rows, spectra, curves, keeps, strict=True):
            xs, residual, smooth, spacing = _sorted_and_smoothed(x, spectrum - curve, keep)
            peaks = np.flatnonzero(lost[row])
            found = _residual_peaks(xs, smooth, peaks.size, spacing, float(np.ptp(residual)))
            for index, (center, height, fwhm) in zip(peaks, sorted(found), strict=True):
                for name, value in _peak_start(model, index, center, height, fwhm).items():
                    if name in values:
                        values[name][row] = _inside(site_priors[name], value, row)
        for name in model.site_names:  # uniform priors: _inside keeps the values inside
            if not isinstance(site_priors[name], dist.Uniform):
                active[rows] &= np.asarray(site_priors[name].support(values[name][rows]), bool)
    if np.ndim(y) == 1:
        return {name: value[0] for name, value in values.items()}, active[0]
    return values, active


def _keep_better(result, retry, refitted):
    """Per spectrum, the refit where it was refitted and reached a lower negative log
    posterior, else the first fit; the steps of both count in ``n_iter``."""
    better = np.asarray(refitted) & (np.asarray(retry.objective) < np.asarray(result.objective))

    def pick(new, old):
        new, old = np.asarray(new), np.asarray(old)
        return np.where(better.reshape(better.shape + (1,) * (old.ndim - better.ndim)), new, old)

    fields = {
        name: pick(getattr(retry, name), getattr(result, name))
        for name in ("covariance", "objective", "log_likelihood", "rss", "n_points", "decrement")
    }
    return result._replace(
        params={name: pick(retry.params[name], value) for name, value in result.params.items()},
        converged=pick(retry.converged, result.converged),
        started=pick(retry.started, result.started),
        n_iter=np.where(better, np.asarray(result.n_iter) + retry.n_iter, result.n_iter),
        **fields,
    )


def _baseline_key(model: PeakModel):
    if model.baseline is None:
        return None
    if model.baseline.name == "exponential":
        return "exponential"
    return len(model.baseline.parameters) - 1


def _statistics(fit: PeakFit, result, model: PeakModel) -> None:
    n = np.asarray(result.n_points, float)
    rss = np.asarray(result.rss, float)
    p = fit.n_parameters
    k = p + (1 if model.has_noise else 0)
    if model.likelihood == "normal" and model.has_noise:
        exact = rss == 0
        if np.any(exact):
            warnings.warn(
                f"The residual sum of squares of {_spectra(np.flatnonzero(exact), fit.n_spectra)}"
                " is 0: the curve goes through every point, or y is so small that its "
                "squares underflow (rescale y); its log-likelihood is +inf and AIC and BIC "
                "are -inf.",
                PeakFitWarning,
                stacklevel=4,
            )
        with np.errstate(divide="ignore"):  # rss = 0: log-likelihood +inf, said above
            log_likelihood = -0.5 * n * (np.log(2 * np.pi * rss / n) + 1.0)
    else:
        log_likelihood = np.asarray(result.log_likelihood, float)
    fit.rss = _to_numpy(rss)
    fit.redchi = _to_numpy(rss / np.maximum(n - p, 1))
    fit.log_likelihood = _to_numpy(log_likelihood)
    fit.aic = _to_numpy(-2 * log_likelihood + 2 * k)
    fit.bic = _to_numpy(-2 * log_likelihood + k * np.log(n))


def _spectra(indices: np.ndarray, batch: int | None) -> str:
    if batch is None:
        return "the spectrum"
    shown = indices[:10].tolist()
    return f"spectra {shown}" + (f" (and {indices.size - 10} more)" if indices.size > 10 else "")


def _check_result(
    fit: PeakFit, model: PeakModel, site_priors: Mapping, started, max_iterations: int
) -> None:
    """Flag spectra that ended at a prior bound of ``site_priors`` (:func:`_site_priors`)
    as not converged, and warn; then one warning for all the spectra whose fit failed
    (at its start, with a singular covariance, or out of iterations)."""
    at_bound, names = _at_bound(fit.params, site_priors, model.free_names)
    if names:
        fit.converged = _to_numpy(np.asarray(fit.converged) & ~at_bound)
        which = "" if fit.n_spectra is None else f" in {int(np.sum(at_bound))} spectra"
        warnings.warn(
            f"Parameter(s) {names} ended at a bound of their prior{which}: a constrained, "
            "not a stationary, optimum (a lost peak, or a start far from it); flagged as not "
            "converged. Give better starting values, fewer peaks or a wider prior.",
            PeakFitWarning,
            stacklevel=3,
        )
    converged = np.atleast_1d(fit.converged) | np.atleast_1d(at_bound)
    if converged.all():
        return
    started = np.atleast_1d(np.asarray(started, bool))
    variances = np.diagonal(np.asarray(fit.covariance), axis1=-2, axis2=-1)
    singular = ~np.all(np.isfinite(np.reshape(variances, (converged.size, -1))), axis=-1)
    failed = ~converged
    reasons = []
    for kind, text in (
        (
            failed & ~started,
            "failed at the start: the log posterior, its gradient or its curvature is "
            "not finite at the starting values (give init values well inside the priors, "
            "or rescale the data), so params are NaN",
        ),
        (
            failed & started & singular,
            "ended with a singular covariance (an unidentified parameter: a peak without "
            "data under it, or a degenerate baseline), so stderr and covariance are NaN",
        ),
        (
            failed & started & ~singular,
            f"did not converge in {max_iterations} iterations (or stalled)",
        ),
    ):
        if kind.any():
            reasons.append(f"{_spectra(np.flatnonzero(kind), fit.n_spectra)} {text}")
    bad = np.flatnonzero(failed)
    warnings.warn(
        f"The MAP fit of {_spectra(bad, fit.n_spectra)} did not converge ({bad.size} of "
        f"{converged.size}): " + "; ".join(reasons) + ". They are flagged in "
        "PeakFit.converged, with NaN for what could not be computed (rss, redchi, stderr, "
        "covariance). Try better starting values, fewer peaks or more iterations.",
        PeakFitWarning,
        stacklevel=3,
    )


def _order_by_center(tree, model: PeakModel, priors):
    """Relabel exchangeable peaks draw by draw so that their centres increase.

    Peaks are exchangeable when they share one lineshape and their parameters carry the
    same (default) priors and no ties or fixed values; their labels then switch between
    the modes of the posterior, and summaries need the ordering first (as for mixtures).
    """
    if len({shape.name for shape in model.lineshapes}) != 1 or model.n_peaks < 2:
        return tree
    peak_names = {n for i in range(model.n_peaks) for n in model.peak_parameter_names(i)}
    involved = {n for pair in model.ties for n in pair} | set(model.fixed) | set(priors or {})
    if peak_names & involved:
        return tree
    dataset = tree["posterior"].to_dataset()
    centers = np.stack([np.asarray(dataset[f"peak{i}_center"]) for i in range(model.n_peaks)])
    order = np.argsort(centers, axis=0)  # (K, chain, draw)
    suffixes = {
        name.split("_", 1)[1]
        for name in dataset.data_vars
        if name.startswith("peak") and name.split("_", 1)[0][4:].isdigit()
    }
    for suffix in suffixes:
        names = [f"peak{i}_{suffix}" for i in range(model.n_peaks)]
        stacked = np.stack([np.asarray(dataset[name]) for name in names])
        ordered = np.take_along_axis(
            stacked, order.reshape(order.shape + (1,) * (stacked.ndim - 3)), axis=0
        )
        for index, name in enumerate(names):
            dataset[name] = (dataset[name].dims, ordered[index])
    tree["posterior"] = dataset
    return tree


def _fit_mcmc(map_fit: PeakFit, priors, num_warmup, num_samples, num_chains, seed, progress_bar):
    from gaussmix.inference.mcmc import sample

    model = map_fit.model
    dtype = jnp.result_type(float)
    program = _program(map_fit.lineshapes, map_fit.baseline, map_fit.likelihood, model.ties)
    kwargs = _model_kwargs(
        priors, map_fit.fixed, model.likelihood, map_fit.degrees_of_freedom, dtype
    )
    if map_fit.mask is not None:
        kwargs["mask"] = jnp.asarray(map_fit.mask)
    init = {name: float(map_fit.params[name]) for name in model.site_names}
    if not all(math.isfinite(value) for value in init.values()):
        raise ValueError(
            "The MAP fit that starts the chains failed at its start (the log posterior is not "
            "finite at the starting values); give init values well inside the priors' supports."
        )
    tree = sample(
        program,
        jnp.asarray(map_fit.x, dtype),
        jnp.asarray(map_fit.y, dtype),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        seed=seed,
        init=init,
        progress_bar=progress_bar,
        **kwargs,
    )
    tree = _order_by_center(tree, model, priors)
    posterior = tree["posterior"]
    names = [*model.parameter_names, *model.derived_names]
    if model.has_noise:
        names.append(NOISE_SITE)
    params = {name: float(np.asarray(posterior[name]).mean()) for name in names}
    stderr = {
        name: float(np.asarray(posterior[name]).std(ddof=1))
        for name in (*model.parameter_names, *model.derived_names)
    }
    draws = np.stack(
        [np.asarray(posterior[name]).reshape(-1) for name in map_fit.parameter_names], axis=-1
    )
    covariance = np.cov(draws, rowvar=False).reshape(len(map_fit.parameter_names), -1)
    diverging = int(np.asarray(tree["sample_stats"]["diverging"]).sum())
    converged = bool(map_fit.converged) and diverging == 0
    if num_chains > 1:
        import arviz_stats

        rhat = arviz_stats.rhat(tree, var_names=list(map_fit.parameter_names))
        worst = max(float(np.asarray(rhat[name]).max()) for name in map_fit.parameter_names)
        converged = converged and worst < 1.01
    fit = PeakFit(
        **{
            **{f: getattr(map_fit, f) for f in map_fit.__dataclass_fields__},
            "backend": "mcmc",
            "params": params,
            "stderr": stderr,
            "covariance": covariance,
            "converged": converged,
            "posterior": tree,
        }
    )
    mean = fit.predict()
    keep = np.ones(fit.y.shape, bool) if fit.mask is None else fit.mask
    fit.rss = float(np.sum((fit.y - mean)[keep] ** 2))
    fit.redchi = fit.rss / max(float(fit.n_points) - fit.n_parameters, 1.0)
    return fit


# ---------------------------------------------------------------------------------------
# Number of peaks
# ---------------------------------------------------------------------------------------


class PeakSelection(NamedTuple):
    """Result of :func:`select_peaks`: one entry per candidate number of peaks.

    Attributes:
        n_peaks: the chosen number (lowest BIC; highest LOO elpd with MCMC).
        candidates: (K,) numbers of peaks tried.
        bic: (K,) BIC of each MAP fit.
        elpd_loo: (K,) PSIS-LOO expected log predictive density (MCMC), else None.
        converged: (K,) whether each MAP fit converged.
        fits: the K :class:`PeakFit` (MCMC fits with ``backend="mcmc"``).
    """

    n_peaks: int
    candidates: np.ndarray
    bic: np.ndarray
    elpd_loo: np.ndarray | None
    converged: np.ndarray
    fits: tuple[PeakFit, ...]

    @property
    def best(self) -> PeakFit:
        return self.fits[int(np.flatnonzero(self.candidates == self.n_peaks)[0])]


def select_peaks(
    x: ArrayLike,
    y: ArrayLike,
    max_peaks: int,
    *,
    lineshape: str = "gaussian",
    baseline: str | int | None = None,
    min_peaks: int = 1,
    backend: str = "map",
    **fit_options,
) -> PeakSelection:
    """Choose the number of peaks: BIC of the MAP fits, or PSIS-LOO with ``backend="mcmc"``.

    Every candidate starts from ``init="auto"``.

    Args:
        x: (M,) abscissae.
        y: (M,) one spectrum.
        max_peaks: largest number of peaks tried.
        lineshape: the lineshape of every peak.
        baseline: as in :func:`fit_peaks`.
        min_peaks: smallest number tried (>= 1).
        backend: "map" (BIC) or "mcmc" (LOO from ``arviz_stats.loo``; BIC reported too).
        **fit_options: further arguments of :func:`fit_peaks`.

    Example:
        >>> import numpy as np
        >>> x = np.linspace(0, 10, 200)
        >>> y = (np.exp(-0.5 * (x - 3) ** 2 / 0.3) + np.exp(-0.5 * (x - 7) ** 2 / 0.3)
        ...      + 0.02 * np.random.default_rng(0).normal(size=200))
        >>> select_peaks(x, y, 3).n_peaks
        2
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}.")
    if np.ndim(y) != 1:
        raise ValueError("select_peaks takes one spectrum: y of shape (M,).")
    if not isinstance(max_peaks, int | np.integer) or not 1 <= min_peaks <= max_peaks:
        raise ValueError(
            f"Need 1 <= min_peaks <= max_peaks, got min_peaks={min_peaks}, max_peaks={max_peaks}."
        )
    candidates = np.arange(int(min_peaks), int(max_peaks) + 1)
    fits, bic, elpd, converged = [], [], [], []
    for count in candidates:
        peaks_tuple = (lineshape,) * int(count)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PeakFitWarning)
            fit = fit_peaks(x, y, peaks_tuple, baseline, backend="map", **fit_options)
        bic.append(float(fit.bic))
        converged.append(bool(fit.converged))
        if backend == "mcmc":
            import arviz_stats

            fit = fit_peaks(
                x, y, peaks_tuple, baseline, init=fit.params, backend="mcmc", **fit_options
            )
            elpd.append(float(arviz_stats.loo(fit.posterior).elpd))
        fits.append(fit)
    bic, converged = np.array(bic), np.array(converged)
    if backend == "mcmc":
        elpd_loo = np.array(elpd)
        chosen = int(candidates[int(np.argmax(elpd_loo))])
    else:
        elpd_loo = None
        chosen = int(candidates[int(np.argmin(bic))])
    return PeakSelection(chosen, candidates, bic, elpd_loo, converged, tuple(fits))
