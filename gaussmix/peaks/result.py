"""The result of a peak fit: :class:`PeakFit`, its curves, integrals, report and plot.

Derived quantities and integrals carry delta-method standard errors on the Laplace
covariance (MAP) or posterior standard deviations (MCMC).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gaussmix.inference import compilation
from gaussmix.models.lineshapes import integrate_profile
from gaussmix.models.peaks import (
    NOISE_SITE,
    PeakModel,
    baseline_curve,
    derived_quantities,
    mean_curve,
    peak_model,
    resolve_parameters,
)

__all__ = [
    "Integral",
    "PeakFit",
    "PeakFitWarning",
    "baseline_key",
    "component_curves",
    "curve_on_host",
    "delta_method",
    "resolve_on_host",
    "to_numpy",
]

# How each lineshape's integral over [a, b] is computed (see integrate_profile).
_INTEGRAL_METHODS = {
    "gaussian": "closed form (erf)",
    "lorentzian": "closed form (arctan)",
    "pseudo_voigt": "closed form (erf and arctan)",
    "skewed_gaussian": "closed form (normal CDF and Owen's T)",
    "voigt": "quadrature (128-point Gauss-Legendre)",
    "voigt_area": "quadrature (128-point Gauss-Legendre)",
    "pearson7": "quadrature (64-point Gauss-Legendre after a smoothing substitution)",
    "doniach_sunjic": "closed form (complex power)",
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
        log_likelihood: :math:`\\log\\hat L` (with aic and bic, at the starting values for
            ``backend="mcmc"`` from a complete ``init``, where no MAP fit runs: the
            MAP's when ``init`` is a MAP fit's ``params``).
        n_points: points used per spectrum; n_parameters: free curve parameters p.
        converged: the MAP converged to a point inside the prior boxes with a finite
            covariance (and, for MCMC, no divergence and R-hat < 1.01; the chains' alone
            for MCMC from a complete ``init``). A spectrum whose
            fit failed is False, with NaN (never 0) for what could not be computed.
        n_iter: Levenberg-Marquardt iterations (0 for MCMC from a complete ``init``).
        posterior: ``xarray.DataTree`` from NUTS (MCMC only).
        shared: the names fitted with one value for the whole batch (``shared=`` of
            :func:`fit_peaks`), empty otherwise. ``params[name]`` and ``stderr[name]``
            still hold (B,) arrays for them (B equal values), so that every per-spectrum
            method works; ``shared_params`` and ``shared_stderr`` hold each value once,
            ``shared_covariance`` (s, s) their joint Laplace (or posterior) covariance in
            the order of ``shared`` less the noise. ``covariance`` (B, P, P) holds, per
            spectrum, the marginal covariance of its own and the shared parameters.
            ``aic`` and ``bic`` count each shared parameter as 1/B of a parameter per
            spectrum, so that their sums over the batch are the joint fit's.
        pooled: the names drawn from a population (``pooled=`` of :func:`fit_peaks`);
            ``population_params`` holds ``{name}_mu`` and ``{name}_tau``, the population
            mean and spread (posterior means for MCMC; for MAP their marginal maximum
            likelihood in the Laplace approximation, see
            :func:`gaussmix.peaks.shared.add_population`), and ``population_stderr``
            their posterior sd (MAP: the mean's standard error only).
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
    shared: tuple[str, ...] = ()
    shared_params: dict[str, float] = field(default_factory=dict)
    shared_stderr: dict[str, float] = field(default_factory=dict)
    shared_covariance: np.ndarray | None = field(default=None, repr=False)
    pooled: tuple[str, ...] = ()
    population_params: dict[str, float] = field(default_factory=dict)
    population_stderr: dict[str, float] = field(default_factory=dict)

    # -- construction ----------------------------------------------------------------

    @classmethod
    def build(
        cls,
        model: PeakModel,
        point,
        *,
        fixed: dict,
        priors,
        degrees_of_freedom: float,
        backend: str,
        x: np.ndarray,
        y: np.ndarray,
        mask: np.ndarray | None,
        derived: bool = False,
        **shared_fields,
    ) -> "PeakFit":
        """A fit of ``model`` at ``point``: every fit path builds its :class:`PeakFit`
        here (the statistics ``rss`` to ``log_likelihood`` are left None for the caller).

        Args:
            model: the checked :class:`PeakModel`.
            point: a MAP result (:class:`~gaussmix.inference.map.MAPResult`,
                :class:`~gaussmix.inference.map.shared.SharedMAPResult`) or anything with
                its attributes ``params`` (site -> a number or (B,) values, the noise
                site's too), ``parameter_names`` (the free curve parameters, in the order
                of ``covariance``), ``covariance`` ((P, P) or (B, P, P)), ``n_points``,
                ``converged`` and ``n_iter`` (per spectrum, or one for the batch).
            fixed, priors, degrees_of_freedom: the model's options, as :func:`fit_peaks`
                takes them (``priors`` the user's, None or a dict).
            backend: "map" or "mcmc".
            x, y, mask: the checked data: y (M,) or (B, M).
            derived: add the derived quantities with their delta-method errors.
            shared_fields: the batch fields (``shared``, ``shared_params``, ...).

        ``params`` holds every curve parameter (free, tied, fixed) and the noise:
        floats for one spectrum, (B,) arrays for a batch; ``stderr`` the square roots of
        the covariance's diagonal, a tied parameter its target's, a fixed one 0.
        """
        names = tuple(point.parameter_names)
        free = {name: np.asarray(point.params[name]) for name in names}
        covariance = np.asarray(point.covariance)
        converged, n_iter = point.converged, point.n_iter
        resolved = resolve_on_host(model, free, fixed)
        if np.ndim(y) == 2:  # (B,) arrays, from one value for the whole batch too

            def per_spectrum(value):
                return np.broadcast_to(np.asarray(value), np.shape(y)[:1]).copy()

            params = {name: per_spectrum(value) for name, value in resolved.items()}
            converged, n_iter = per_spectrum(converged), per_spectrum(n_iter)
        else:
            params = {name: float(value) for name, value in resolved.items()}
        variances = np.diagonal(covariance, axis1=-2, axis2=-1)
        stderr = {name: np.sqrt(variances[..., i]) for i, name in enumerate(names)}
        for name, target in model.ties:
            stderr[name] = stderr.get(target, np.zeros_like(variances[..., 0]))
        for name in model.fixed:
            stderr[name] = np.zeros_like(variances[..., 0])
        fit = cls(
            lineshapes=tuple(shape.name for shape in model.lineshapes),
            baseline=baseline_key(model),
            likelihood=model.likelihood,
            degrees_of_freedom=float(degrees_of_freedom),
            ties=dict(model.ties),
            fixed=dict(fixed),
            priors=dict(priors) if priors else None,
            backend=backend,
            x=x,
            y=y,
            mask=mask,
            params=params,
            stderr={name: to_numpy(value) for name, value in stderr.items()},
            parameter_names=names,
            covariance=covariance,
            rss=None,
            redchi=None,
            aic=None,
            bic=None,
            log_likelihood=None,
            n_points=to_numpy(point.n_points),
            n_parameters=len(names),
            converged=to_numpy(converged),
            n_iter=to_numpy(n_iter),
            **shared_fields,
        )
        if derived and model.derived_names:
            values, errors = delta_method(fit, ("derived", model.derived_names))
            for index, name in enumerate(model.derived_names):
                fit.params[name] = to_numpy(values[..., index])
                fit.stderr[name] = to_numpy(errors[..., index])
        if model.has_noise:
            fit.params[NOISE_SITE] = to_numpy(point.params[NOISE_SITE])
        return fit

    # -- model -----------------------------------------------------------------------

    @property
    def model(self) -> PeakModel:
        return peak_model(self.lineshapes, self.baseline, self.likelihood, self.ties, self.fixed)

    @property
    def n_spectra(self) -> int | None:
        """B for a batch, None for one spectrum."""
        return None if np.ndim(self.y) == 1 else int(np.shape(self.y)[0])

    def _curve_values(self, draws: bool = False) -> dict[str, np.ndarray]:
        """Curve parameters: MAP / posterior means, or posterior draws when draws: (S,)
        for one spectrum, (S, B) for a batch sampled jointly (shared ones repeated)."""
        names = self.model.parameter_names
        if draws:
            posterior = self.posterior["posterior"]
            values = {}
            for name in names:
                value = np.asarray(posterior[name])
                value = value.reshape(-1, *value.shape[2:])
                if self.n_spectra is not None:
                    value = np.broadcast_to(
                        value.reshape(value.shape[0], -1), (value.shape[0], self.n_spectra)
                    )
                values[name] = value
            return values
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
            >>> from gaussmix import fit_peaks
            >>> x = np.linspace(-5, 5, 41)
            >>> fit = fit_peaks(x, 3 * np.exp(-0.5 * x**2) + 0.01 * np.sin(7 * x),
            ...                 peaks=("gaussian",))
            >>> round(float(fit.predict([0.0])[0]), 2)
            3.0
        """
        grid = self._grid(x)
        values = {k: v[..., None] for k, v in self._curve_values().items()}
        return curve_on_host(grid, self.model, values)

    def components(self, x: ArrayLike | None = None) -> dict[str, np.ndarray]:
        """Each peak (``peak0`` ...) and the ``baseline`` at x: (G,) or (B, G) each."""
        grid = self._grid(x)
        values = {k: v[..., None] for k, v in self._curve_values().items()}
        curves = _components_program(grid, self.model, values)
        return {name: np.array(curve) for name, curve in curves.items()}

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
            >>> from gaussmix import fit_peaks
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
            limits = jnp.asarray([a, b])
            integral = ("integral", selected, bool(baseline))
            values = np.asarray(
                jax.vmap(lambda params: _quantity(model, integral, params, limits)[0])(
                    {k: jnp.asarray(v) for k, v in draws.items()}
                )
            )
            if self.n_spectra is not None:  # a batch sampled jointly: (S, B)
                return Integral(
                    values.mean(axis=0), values.std(axis=0, ddof=1), method + ", posterior"
                )
            return Integral(float(values.mean()), float(values.std(ddof=1)), method + ", posterior")
        value, stderr = delta_method(self, quantity)
        return Integral(to_numpy(value[..., 0]), to_numpy(stderr[..., 0]), method)

    # -- text and figures ------------------------------------------------------------

    def report(self, index: int = 0) -> str:
        """A text table of the fit: statistics, then value, standard error and relative
        error of every parameter and derived quantity (of spectrum ``index`` of a batch).

        Example:
            >>> import numpy as np
            >>> from gaussmix import fit_peaks
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
        width = max(len(name) for name in (*self.params, *self.population_params)) + 2
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
            elif name in self.shared:
                note = "shared"
            elif name in self.pooled:
                note = "pooled"
            if error is None:
                lines.append(f"{name:<{width}}{value:16.8g}{'':>14}{'':>10}  {note}")
                continue
            error = float(pick(error))
            relative = 100 * abs(error / value) if value != 0 else math.inf
            lines.append(f"{name:<{width}}{value:16.8g}{error:14.4g}{relative:10.3g}  {note}")
        for name, value in self.population_params.items():
            error = self.population_stderr.get(name)
            shown = f"{error:14.4g}" if error is not None else f"{'':>14}"
            lines.append(f"{name:<{width}}{value:16.8g}{shown}{'':>10}  population")
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
            if batch is not None:
                draws = {name: value[:, index] for name, value in draws.items()}
            chosen = np.linspace(0, next(iter(draws.values())).size - 1, 400).astype(int)
            values = {k: v[chosen][:, None] for k, v in draws.items()}
            # (400, G) curves by the compiled programs (op by op, the draws' curves
            # compiled a dozen programs, none of them cached across processes).
            total = curve_on_host(grid, self.model, values)
            curves = _components_program(grid, self.model, values)
            components = {name: np.asarray(curve) for name, curve in curves.items()}
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


def _quantity(model: PeakModel, quantity: tuple, params, limits) -> jax.Array:
    """("derived", names) -> derived quantities; ("integral", peaks, baseline) -> the
    integral from ``limits[0]`` to ``limits[1]``."""
    if quantity[0] == "derived":
        derived = derived_quantities(model, params)
        return jnp.stack([derived[name] for name in quantity[1]])
    _, selected, baseline = quantity
    a, b = limits[0], limits[1]
    value = 0.0
    for index in selected:
        arguments = tuple(params[name] for name in model.peak_parameter_names(index))
        value = value + integrate_profile(model.lineshapes[index], a, b, arguments)
    if baseline:
        arguments = [jnp.asarray(params[name]) for name in model.baseline_parameter_names]
        value = value + model.baseline.integral_fn(jnp.asarray(a), jnp.asarray(b), *arguments)
    return jnp.reshape(value, (1,))


def _delta(model: PeakModel, names: tuple, quantity: tuple, free, covariance, fixed, limits):
    """Values of a quantity and their delta-method standard errors, (Q,) or (B, Q).

    ``quantity`` is ("derived", names) or ("integral", peaks, baseline), with the limits
    of an integral in ``limits`` (an array, so that new limits compile nothing new)."""

    def of_vector(vector):
        params = resolve_parameters(model, dict(zip(names, vector, strict=True)), fixed)
        return _quantity(model, quantity, params, limits)

    def one(vector, covariance):
        jacobian = jax.jacfwd(of_vector)(vector)
        variance = jnp.einsum("qi,ij,qj->q", jacobian, covariance, jacobian)
        return of_vector(vector), jnp.sqrt(variance)

    return one(free, covariance) if free.ndim == 1 else jax.vmap(one)(free, covariance)


#: The one program of the delta method, compiled per model, quantity and shapes, without
#: XLA's LLVM optimizations: a few small kernels, whose compile time (27 instead of 34 ms)
#: is all a first fit spends on them.
_delta_program = compilation.jit(
    _delta,
    static_argnames=("model", "names", "quantity"),
    compiler_options={"xla_backend_optimization_level": 0},
)


def _on_device(value, dtype) -> jax.Array:
    """A host value as a JAX array of ``dtype``: ``jax.device_put`` copies it without a
    program (``jnp.asarray`` would compile one per shape and dtype)."""
    return jax.device_put(np.asarray(value, dtype))


def delta_method(fit: PeakFit, quantity: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Quantity values and delta-method standard errors at the MAP: (Q,) or (B, Q).

    ``quantity``: ("derived", names) or ("integral", a, b, peaks, baseline)."""
    names = fit.parameter_names
    free = np.stack([np.asarray(fit.params[name], float) for name in names], axis=-1)
    dtype = jnp.result_type(float)
    fixed = {name: _on_device(value, dtype) for name, value in fit.fixed.items()}
    limits = np.zeros(2)
    if quantity[0] == "integral":
        _, a, b, selected, baseline = quantity
        quantity, limits = ("integral", selected, baseline), np.array([a, b])
    value, error = _delta_program(
        fit.model,
        tuple(names),
        quantity,
        _on_device(free, dtype),
        _on_device(fit.covariance, dtype),
        fixed,
        _on_device(limits, dtype),
    )
    return np.asarray(value), np.asarray(error)


#: The model curve, compiled per model and shapes.
_curve_program = compilation.jit(mean_curve, static_argnames=("model",))


def component_curves(x, model: PeakModel, params: dict) -> dict[str, jax.Array]:
    """Each peak (``peak{i}``) and the ``baseline`` of ``model`` at ``x``, from the values
    of every curve parameter (broadcast against ``x``), the baseline broadcast to the
    peaks' shape."""
    curves = {}
    for index, lineshape in enumerate(model.lineshapes):
        arguments = [params[name] for name in model.peak_parameter_names(index)]
        curves[f"peak{index}"] = lineshape.profile_fn(x, *arguments)
    if model.baseline is not None:
        curves["baseline"] = jnp.broadcast_to(
            baseline_curve(x, model, params), curves["peak0"].shape
        )
    return curves


#: The components' curves, one compiled program per model and shapes (op by op, a
#: plot's curves compiled one program per operation, even with a warm cache).
_components_program = compilation.jit(component_curves, static_argnames=("model",))


def curve_on_host(x, model: PeakModel, params: dict) -> np.ndarray:
    """:func:`gaussmix.models.peaks.mean_curve` at ``x`` from the values of every curve
    parameter, NumPy in and out, by one compiled program (the curve's operations one by
    one would compile one program each)."""
    return np.asarray(_curve_program(x, model, params))


def baseline_key(model: PeakModel) -> str | int | None:
    """The ``baseline`` argument that builds ``model``'s baseline: None, its name, or a
    polynomial's degree."""
    if model.baseline is None:
        return None
    if model.baseline.name != "polynomial":  # exponential, shirley, tougaard
        return model.baseline.name
    return len(model.baseline.parameters) - 1


def resolve_on_host(model: PeakModel, free: dict, fixed: dict) -> dict[str, np.ndarray]:
    """:func:`gaussmix.models.peaks.resolve_parameters` on host values: every curve
    parameter (free, tied, fixed) as a NumPy array of the dtype of floats."""
    dtype = jnp.result_type(float)
    on_device = {name: _on_device(value, dtype) for name, value in {**free, **fixed}.items()}
    resolved = resolve_parameters(model, on_device, on_device)  # on the device: no program
    return {name: np.asarray(value) for name, value in resolved.items()}


def to_numpy(value):
    """A Python scalar (float, int or bool) for 0-d values, else a NumPy array."""
    array = np.asarray(value)
    return array.item() if array.ndim == 0 else array
