"""The estimator's side of a uniform background (noise) component (``background="uniform"``).

:class:`gaussmix.GaussianMixture` with ``background="uniform"`` fits mclust's noise
component (Banfield & Raftery 1993): the density

.. math::

    p(x) = \\sum_{k=1}^K \\pi_k \\mathcal{N}(x \\mid \\mu_k, \\Sigma_k) + \\frac{\\pi_0}{V},
    \\qquad \\pi_0 + \\sum_k \\pi_k = 1,

with :math:`V` the ``background_volume`` given, or by default the volume of the axis-aligned
bounding box of the fitting data (mclust's ``hypvol`` takes the smaller of that box and
the box of the principal components; pass ``background_volume`` to use another). The
constant density :math:`\\pi_0 / V` also holds outside the box: the background is a
constant term, not a density that vanishes there. The EM side is
:mod:`gaussmix.inference.em.background`; here are the volume, the prediction's extra
column, the labels (-1 for the background), the parameter count and the draws.
"""

import math
import warnings

import numpy as np

from gaussmix.inference.streaming.processes import process_gather

__all__ = [
    "BACKGROUNDS",
    "FITTED_NAMES",
    "BackgroundBox",
    "background_box",
    "box_of",
    "check_background",
    "extra_parameters",
    "labels",
    "processes_box",
    "sample_background",
    "with_background",
]

#: The background components ``GaussianMixture(background=...)`` takes (None: none).
BACKGROUNDS = ("uniform",)


def check_background(background, volume, name: str) -> None:
    """A ValueError naming a bad ``background`` or ``background_volume``."""
    if background is not None and (
        not isinstance(background, str) or background not in BACKGROUNDS
    ):
        raise ValueError(
            f"The 'background' parameter of {name} must be None or a str among "
            f"{set(BACKGROUNDS)}. Got {background!r} instead."
        )
    if volume is None:
        return
    if background is None:
        raise ValueError(
            f"background_volume={volume!r} is the volume of a background component, but "
            "background is None; pass background='uniform' too, or leave "
            "background_volume=None."
        )
    if isinstance(volume, bool | np.bool_) or not isinstance(volume, int | float | np.number):
        raise ValueError(
            f"The 'background_volume' parameter of {name} must be None or a positive "
            f"finite float. Got {volume!r} instead."
        )
    if not (math.isfinite(float(volume)) and float(volume) > 0):
        raise ValueError(
            f"background_volume must be a positive, finite volume (the region the uniform "
            f"background covers), got {volume!r}; leave it None for the data's bounding box."
        )


class BackgroundBox:
    """The bounding box of the fitting data and the volume the background uses.

    Attributes:
        lower, upper: (D,) the box's corners (of the observed entries).
        log_volume: log of the volume used (the box's, or the given one).
    """

    def __init__(self, lower: np.ndarray, upper: np.ndarray, log_volume: float):
        self.lower, self.upper, self.log_volume = lower, upper, log_volume


def background_box(X: np.ndarray, volume: float | None) -> BackgroundBox:
    """The box of ``X`` (N, D) (NaN entries ignored) and the background's volume.

    Raises:
        ValueError: with ``volume`` None, a box of zero volume (a constant feature), or
            one whose volume is beyond float64's range.

    Warns:
        UserWarning: a ``volume`` smaller than the box's (a density 1/V above that of a
            uniform over the data's box: the background then is no proper density over
            the data's range).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are refused before
        lower = np.nanmin(X, axis=0).astype(np.float64)
        upper = np.nanmax(X, axis=0).astype(np.float64)
    return box_of(lower, upper, volume)


def box_of(lower: np.ndarray, upper: np.ndarray, volume: float | None) -> BackgroundBox:
    """The :class:`BackgroundBox` of the corners ``lower``, ``upper`` (D,) and the given
    ``volume`` (None: the box's); errors and warnings as :func:`background_box`."""
    sides = upper - lower
    with np.errstate(divide="ignore"):
        box_log_volume = float(np.sum(np.log(sides)))
    if volume is not None:
        log_volume = math.log(float(volume))
        if np.all(sides > 0) and log_volume < box_log_volume - 1e-12:
            warnings.warn(
                f"background_volume={volume!r} is smaller than the volume of the data's "
                f"bounding box ({math.exp(box_log_volume):.6g}): the uniform background's "
                "density 1/V is then above that of a uniform over the data's range, so it "
                "is no proper density there; pass at least the box's volume, or leave "
                "background_volume=None.",
                UserWarning,
                stacklevel=5,
            )
        return BackgroundBox(lower, upper, log_volume)
    flat = np.flatnonzero(sides <= 0)
    if flat.size:
        raise ValueError(
            f"the data's bounding box has zero volume: feature {int(flat[0])} is constant "
            f"({flat.size} constant feature(s)), so the uniform background's default "
            "density 1/V is infinite; pass background_volume=... (the volume of the region "
            "the background covers), or drop the constant feature(s)."
        )
    if not math.isfinite(box_log_volume) or abs(box_log_volume) > math.log(np.finfo(float).max):
        raise ValueError(
            f"the volume of the data's bounding box, exp({box_log_volume:.6g}), is beyond "
            "float64's range; rescale the data (e.g. standardize its columns) or pass "
            "background_volume=..."
        )
    return BackgroundBox(lower, upper, box_log_volume)


def with_background(norm: np.ndarray, log_resp: np.ndarray, log_background: float):
    """Log-likelihood (n,) and (n, K + 1) log responsibilities, the background's last,
    from the Gaussian components' ``norm`` (n,) (:math:`\\log \\sum_k \\pi_k N_k`, weights
    summing to one minus the background's) and ``log_resp`` (n, K), and
    ``log_background`` :math:`\\log \\pi_0 - \\log V`."""
    log_background = np.asarray(log_background, norm.dtype)
    total = np.logaddexp(norm, log_background)
    # where every density underflows (a zero background weight, a point far out) the
    # Gaussian components' limit responsibilities stay; where only the Gaussian ones
    # underflow the background takes the point
    lost = np.isneginf(total)
    with np.errstate(invalid="ignore"):
        gaussian = log_resp + (norm - total)[:, None]
        column = log_background - total
    gaussian = np.where(lost[:, None], log_resp, gaussian)
    gaussian = np.where(np.isneginf(norm)[:, None] & ~lost[:, None], -np.inf, gaussian)
    column = np.where(lost, -np.inf, column)
    return total, np.concatenate([gaussian, column[:, None]], axis=1).astype(log_resp.dtype)


def labels(log_resp: np.ndarray, n_components: int) -> np.ndarray:
    """The most probable column of each row; -1 where it is the background's (column K)."""
    best = np.argmax(log_resp, axis=1)
    return np.where(best >= n_components, -1, best)


def extra_parameters(estimator) -> int:
    """Free parameters a fitted background adds to BIC/AIC: 2, as mclust counts its noise
    (``nMclustParams(..., noise = TRUE)`` adds 2: the noise proportion and the volume
    :math:`V`, which mclust estimates from the data by ``hypvol``), 0 without; so that
    ``bic`` stays minus mclust's BIC."""
    return 2 if fitted(estimator) else 0


def sample_background(rng, n_samples: int, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """(n_samples, D) points drawn uniformly in the box [lower, upper]."""
    return lower + rng.uniform(size=(int(n_samples), lower.shape[0])) * (upper - lower)


# -- the estimator's hooks (GaussianMixture calls these; its own code stays thin) --------


def fitted(estimator) -> bool:
    """Whether ``estimator``'s fitted attributes include a background."""
    return hasattr(estimator, "background_log_density_")


def check_parameters(estimator, name: str) -> None:
    """:func:`check_background` of the estimator's parameters."""
    check_background(estimator.background, estimator.background_volume, name)


#: The fitted attributes of a background (what :func:`gaussmix.save` stores with it).
FITTED_NAMES = (
    "background_weight_",
    "background_volume_",
    "background_log_density_",
    "background_lower_",
    "background_upper_",
)


def fit_arguments(estimator, X: np.ndarray) -> dict:
    """The keyword arguments of :func:`gaussmix.inference.em.fit_em` for the estimator's
    background on the fitting data ``X`` (N, D), its box kept for the fitted attributes;
    ``{}`` without background. A warm start continues from the fitted background weight."""
    estimator.__dict__.pop("_background_box", None)
    if estimator.background is None:
        return {}
    any_nan = bool(np.isnan(X).any())
    if getattr(estimator, "devices", None) is None:
        box = background_box(X, estimator.background_volume)
    else:  # a sharded fit: under jax.distributed X is this process's rows
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lower, upper = np.nanmin(X, axis=0), np.nanmax(X, axis=0)
        lower, upper, any_nan = processes_box(lower, upper, any_nan)
        box = box_of(lower, upper, estimator.background_volume)
    arguments = box_arguments(estimator, box)
    if any_nan:  # the uniform's marginal over a row's observed coordinates
        _refuse_given_volume(estimator)
        arguments["background_log_sides"] = np.log(box.upper - box.lower)
    return arguments


def box_arguments(estimator, box: BackgroundBox) -> dict:
    """``fit_em``'s background keywords for ``box`` (kept for the fitted attributes); a
    warm start continues from the fitted background weight."""
    estimator._background_box = box  # read and removed by set_attributes
    arguments = {"background_log_density": -box.log_volume}
    if estimator.warm_start and fitted(estimator) and hasattr(estimator, "converged_"):
        arguments["background_weight_init"] = float(min(estimator.background_weight_, 1.0 - 1e-6))
    return arguments


def chunk_arguments(estimator, source) -> dict:
    """:func:`fit_arguments` for data read by chunks: one more pass over ``source`` (the
    ``(x, w)`` chunks) finds the bounding box of all its rows (of their observed entries
    under ``nan_policy="marginalize"``, of the rows without NaN under "omit"), so that
    the default volume is the in-memory fit's."""
    estimator.__dict__.pop("_background_box", None)
    if estimator.background is None:
        return {}
    lower = upper = None
    any_nan = False
    for x, _ in source:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[0] == 0 or x.dtype.kind not in "fiu":
            continue  # the survey names the bad chunk
        x = x.astype(np.float64)
        holes = np.isnan(x)
        if estimator.nan_policy != "marginalize":
            x = x[~holes.any(axis=1)]  # "raise" is the survey's to raise
        any_nan = any_nan or bool(np.isnan(x).any())
        if x.shape[0]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
                low, high = np.nanmin(x, axis=0), np.nanmax(x, axis=0)
            lower = low if lower is None else np.fmin(lower, low)
            upper = high if upper is None else np.fmax(upper, high)
    if lower is None or np.isnan(lower).any():  # no rows, a column never observed:
        return {}  # the survey raises its own error
    lower, upper, any_nan = processes_box(lower, upper, any_nan)  # jax.distributed
    box = box_of(lower, upper, estimator.background_volume)
    arguments = box_arguments(estimator, box)
    if any_nan:
        _refuse_given_volume(estimator)
        arguments["background_log_sides"] = np.log(box.upper - box.lower)
    return arguments


def processes_box(lower: np.ndarray, upper: np.ndarray, any_nan: bool):
    """The corners (D,) of the box of all processes' rows and whether any process's rows
    hold NaN (``jax.distributed``: every process then fits with the same volume); the
    arguments unchanged with one process."""
    lower = np.asarray(lower, np.float64)
    upper = np.asarray(upper, np.float64)
    packed = process_gather(np.concatenate([lower, -upper, [float(any_nan)]]))
    if packed.shape[0] == 1:
        return lower, upper, any_nan
    n_features = lower.shape[0]
    combined = np.fmin.reduce(packed[:, : 2 * n_features], axis=0)  # NaN: a column unseen
    return combined[:n_features], -combined[n_features:], bool(packed[:, -1].max() > 0)


def _refuse_given_volume(estimator) -> None:
    """A NotImplementedError for rows with NaN under a given ``background_volume``."""
    if estimator.background_volume is not None:
        raise NotImplementedError(
            f"background_volume={estimator.background_volume!r} with rows holding NaN: "
            "a volume alone has no density over a row's observed coordinates; leave "
            "background_volume=None (the data's bounding box, whose sides give it), or "
            "pass nan_policy='omit'."
        )


def normalized_inits(estimator, inits: dict) -> dict:
    """A warm start's ``weights_init`` normalized over the Gaussian components when the
    last fit had a background (its ``weights_`` sum to one minus the background's)."""
    weights = inits.get("weights_init")
    if weights is estimator.__dict__.get("weights_") and fitted(estimator):
        total = float(np.sum(weights, dtype=np.float64))
        if total > 0:
            inits = {**inits, "weights_init": np.asarray(weights / total, weights.dtype)}
    return inits


def set_attributes(estimator, result) -> None:
    """The fitted background attributes of an EM result (removed for a fit without)."""
    box = estimator.__dict__.pop("_background_box", None)
    if result.background_weight is None or box is None:
        for name in FITTED_NAMES:
            estimator.__dict__.pop(name, None)
        return
    estimator.background_weight_ = float(result.background_weight)
    estimator.background_volume_ = math.exp(box.log_volume)
    estimator.background_log_density_ = -box.log_volume
    estimator.background_lower_ = np.asarray(box.lower, np.float64)
    estimator.background_upper_ = np.asarray(box.upper, np.float64)


def log_background(estimator) -> float:
    """:math:`\\log \\pi_0 - \\log V` of the fitted background (-inf at a zero weight)."""
    weight = estimator.background_weight_
    with np.errstate(divide="ignore"):
        return float(np.log(weight)) + estimator.background_log_density_


def _log_sides(estimator) -> np.ndarray | None:
    """(D,) log side lengths of the fitted box when V is its volume, else None (a
    ``background_volume`` was given: no density over a row's observed coordinates)."""
    with np.errstate(divide="ignore"):
        log_sides = np.log(estimator.background_upper_ - estimator.background_lower_)
    total = float(np.sum(log_sides))
    if math.isfinite(total) and abs(total + estimator.background_log_density_) <= 1e-9 * max(
        1.0, abs(total)
    ):
        return log_sides
    return None


def check_rows(estimator, X: np.ndarray, measurement_covariances) -> None:
    """A NotImplementedError for rows a fitted background cannot score: NaN entries under
    a given volume, which has no box (``measurement_covariances``: unused, the
    background's density does not depend on them)."""
    del measurement_covariances
    if fitted(estimator) and np.isnan(X).any() and _log_sides(estimator) is None:
        raise NotImplementedError(
            "scoring rows with NaN entries under a given background_volume (no box: no "
            "density over a row's observed coordinates) is not implemented; score "
            "complete rows, or refit with background_volume=None (the data's box) or "
            "background=None."
        )


def marginal(estimator, X: np.ndarray, norm: np.ndarray, log_resp: np.ndarray):
    """:func:`with_background` of rows ``X`` (measurement errors do not change the
    background), their Gaussian ``norm`` (n,) and ``log_resp`` (n, K) from their
    observed coordinates O (NaN entries): the background's column
    :math:`\\log \\pi_0 - \\sum_{d \\in O} \\log \\mathrm{side}_d` (the uniform on the
    box, marginalized); unchanged without a fitted background."""
    if not fitted(estimator):
        return norm, log_resp
    holes = np.isnan(X)
    if not holes.any():  # complete rows: pi_0 / V
        return with_background(norm, log_resp, log_background(estimator))
    with np.errstate(divide="ignore"):
        log_weight = float(np.log(estimator.background_weight_))
    column = log_weight - (~holes).astype(np.float64) @ _log_sides(estimator)
    return with_background(norm, log_resp, column)


def sample(estimator, n_samples: int, rng, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Draws of a fitted mixture with background: counts over the K + 1 weights, the
    Gaussian components' draws as scikit-learn's, the background's uniform in the data's
    bounding box (label -1)."""
    weights = np.append(estimator.weights_.astype(np.float64), estimator.background_weight_)
    counts = rng.multinomial(n_samples, weights / weights.sum())
    means = estimator.means_.astype(np.float64)
    covariances = estimator.covariances_.astype(np.float64)
    n_features = means.shape[1]
    parts = []
    for k, n in enumerate(counts[:-1]):
        if layout in ("full", "tied"):
            covariance = covariances if layout == "tied" else covariances[k]
            parts.append(rng.multivariate_normal(means[k], covariance, int(n)))
        else:
            scale = np.sqrt(covariances[k])
            parts.append(means[k] + rng.standard_normal(size=(int(n), n_features)) * scale)
    lower, upper = estimator.background_lower_, estimator.background_upper_
    parts.append(sample_background(rng, counts[-1], lower, upper))
    labels = np.concatenate(
        [np.full(int(n), k, dtype=np.int64) for k, n in enumerate(counts[:-1])]
        + [np.full(int(counts[-1]), -1, dtype=np.int64)]
    )
    return np.vstack(parts).astype(estimator.means_.dtype), labels
