"""Starting values of a peak fit: ``init="auto"``, the noise scale, and new starts for
peaks lost at a bound.

Automatic starts smooth the spectrum, take the baseline from its lower envelope, then
find the peaks greedily at the highest maxima of the residual (heights, and widths from
the half-maximum crossings), kept strictly inside the default prior boxes. A Shirley or
Tougaard background starts from the classic (data) Shirley: the levels at the two ends of
x, the step spread in proportion to the cumulative area of the data above the low end;
its step per unit of peak area then follows from the peaks found.
"""

import functools
import math

import numpy as np

from gaussmix.models.backgrounds import TOUGAARD_C
from gaussmix.models.lineshapes import GAUSSIAN_FWHM
from gaussmix.models.peaks import NOISE_SITE, PeakModel, mean_curve, resolve_parameters
from gaussmix.peaks.checks import bound_hits, default_priors_on_host, uniform_bounds
from gaussmix.peaks.result import to_numpy

__all__ = ["auto_init", "noise_start", "reseed_lost_peaks"]


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
    if model.has_active_baseline:
        return _step_start(x, y)
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


def _step_start(x, y) -> tuple[dict, np.ndarray]:
    """The static Shirley of sorted, smoothed data: the end levels (the mean of the first
    and last 5 % of the points) joined in proportion to the cumulative area above the low
    level; its step (high - low) is kept under ``"step_height"``."""
    edge = max(1, x.size // 20)
    low, high = float(np.mean(y[:edge])), float(np.mean(y[-edge:]))
    above = np.maximum(y - low, 0.0)
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (above[1:] + above[:-1]) * np.diff(x))])
    fraction = cumulative / cumulative[-1] if cumulative[-1] > 0 else np.zeros_like(x)
    return {"baseline_offset": low, "step_height": high - low}, low + (high - low) * fraction


def _active_step(values: dict, model: PeakModel, found) -> None:
    """The Shirley step per unit area (or the Tougaard B) that makes the background rise by
    the data's step across the peaks found (areas as Gaussians of their height and FWHM)."""
    step_height = values.pop("step_height")
    area = sum(height * fwhm * 1.0645 for _, height, fwhm in found)
    step = step_height / area if area > 0 else 0.0
    if model.baseline.name == "shirley":
        values["baseline_step"] = step
    else:  # far above a peak the Tougaard background has risen by B A / (2C)
        values["baseline_b"] = 2.0 * TOUGAARD_C * step


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


#: Starting Pearson VII exponent (between the Lorentzian's 1 and a Gaussian) and its FWHM
#: per unit sigma, :math:`2\\sqrt{2^{1/m} - 1}`; starting Doniach-Sunjic asymmetry.
PEARSON7_START_EXPONENT = 2.0
PEARSON7_START_FWHM = 2.0 * math.sqrt(2.0 ** (1.0 / PEARSON7_START_EXPONENT) - 1.0)
DONIACH_SUNJIC_START_ALPHA = 0.1


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
        elif kind == "width" and lineshape.name == "pearson7":
            value = fwhm / PEARSON7_START_FWHM
        elif kind == "width":
            share = 0.5 if lineshape.name in ("voigt", "voigt_area") else 1.0
            value = share * fwhm / (2.0 if parameter == "gamma" else GAUSSIAN_FWHM)
        elif kind == "fraction":
            value = 0.5
        elif kind == "exponent":
            value = PEARSON7_START_EXPONENT
        elif kind == "asymmetry":
            value = DONIACH_SUNJIC_START_ALPHA
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
    if model.has_active_baseline:
        _active_step(values, model, found)
    differences = np.diff(ys)
    noise = float(np.median(np.abs(differences - np.median(differences)))) * 1.4826 / math.sqrt(2)
    if not noise > 0:
        # The curve op by op, as before (a compiled curve can differ in the last bit).
        fitted = mean_curve(xs, model, {**{k: 0.0 for k in model.parameter_names}, **values})
        noise = float(np.std(ys - np.asarray(fitted))) or max(float(np.ptp(ys)), 1.0) * 1e-3
    values[NOISE_SITE] = noise
    return values


def _inside(prior, value: float, row: int) -> float:
    """``value`` moved strictly inside a uniform prior's box (that of spectrum ``row``
    for per-spectrum bounds); other priors leave it as it is."""
    bounds = uniform_bounds(prior)
    if bounds is None:
        return value
    low, high = (float(np.ravel(bound)[row % np.size(bound)]) for bound in bounds)
    margin = 1e-6 * (high - low)
    return float(np.clip(value, low + margin, high - margin))


def _clip_to_defaults(values: dict, model: PeakModel, x: np.ndarray, y: np.ndarray, keep) -> dict:
    """Keep automatic starting values strictly inside the default prior boxes."""
    ranges = (x.min(), x.max()), (y[keep].min(), y[keep].max())
    priors = default_priors_on_host(model, *ranges)
    return {name: _inside(priors.get(name), value, 0) for name, value in values.items()}


def _median_of_rows(values: np.ndarray, keepdims: bool = False) -> np.ndarray:
    """np.median along the last axis of finite values, by one partition."""
    size = values.shape[-1]
    middle = sorted({(size - 1) // 2, size // 2})
    parted = np.partition(values, middle, axis=-1)[..., middle]
    return parted.mean(axis=-1, keepdims=keepdims)


def noise_start(y: np.ndarray, mask, likelihood: str) -> np.ndarray | float:
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
    return to_numpy(noise)


def auto_init(x, y, mask, model: PeakModel) -> dict[str, np.ndarray]:
    spectra = y if y.ndim == 2 else y[None]
    masks = np.ones(spectra.shape, bool) if mask is None else np.broadcast_to(mask, spectra.shape)
    rows = []
    for row, keep in zip(spectra, masks, strict=True):
        start = _auto_start(x, row, keep, model)
        rows.append(_clip_to_defaults(start, model, x, row, keep))
    names = [name for name in model.site_names if name in rows[0]]
    stacked = {name: np.array([row[name] for row in rows]) for name in names}
    return stacked if y.ndim == 2 else {name: value[0] for name, value in stacked.items()}


def reseed_lost_peaks(model: PeakModel, x, y, mask, params, fixed, site_priors):
    """Starting values for a refit of the spectra that lost a peak, and which those are.

    A peak is lost when a parameter of it ended at a bound of its uniform prior: a height
    or area at zero (the peak faded while far from its data), a width at zero or a centre
    at an end of x. Its parameters are re-seeded from the largest maximum of the smoothed
    residual (centre, height, FWHM), as ``init="auto"`` seeds peaks; every other parameter
    keeps its fitted value. Spectra whose new start would leave a prior's support are not
    refitted. Returns (B,) arrays (scalars for one spectrum) and (B,) booleans.
    """
    hits = bound_hits(params, site_priors, model.free_names)
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
        # The curve op by op (small programs, compiled only when a peak is lost): a
        # compiled curve can differ in the last bit, which moves the new start by as much,
        # and on an ill-posed fit (tests: a degenerate design) decides how the refit ends.
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
            if uniform_bounds(site_priors[name]) is None:
                active[rows] &= np.asarray(site_priors[name].support(values[name][rows]), bool)
    if np.ndim(y) == 1:
        return {name: value[0] for name, value in values.items()}, active[0]
    return values, active
