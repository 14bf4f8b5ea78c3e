"""A uniform background (noise) component: mclust's noise (Banfield & Raftery 1993).

The mixture density becomes

.. math::

    p(x) = \\sum_{k=1}^K \\pi_k \\mathcal{N}(x \\mid \\mu_k, \\Sigma_k) + \\frac{\\pi_0}{V},
    \\qquad \\pi_0 = 1 - \\sum_k \\pi_k,

with :math:`V` a fixed volume (mclust's ``1/Vinv``) and :math:`\\pi_0` fitted. The
Gaussian weights :math:`\\pi_k` of :class:`gaussmix.inference.em.parameters.MixtureParameters`
then sum to :math:`1 - \\pi_0`: the background weight is not stored, it is what the
Gaussian weights leave. In the E-step the background is one more column
:math:`\\log \\pi_0 - \\log V` of the weighted log probabilities before the logsumexp; its
responsibility is not summed, since :math:`N_0 = W - \\sum_k N_k` (every row's
responsibilities sum to 1), so that statistics summed over blocks, chunks or devices
carry it unchanged. The M-step gives :math:`\\pi_k = N_k / W` and :math:`\\pi_0 = N_0 / W`
(maximum likelihood), or under a conjugate prior the MAP of a Dirichlet over the K + 1
weights whose background concentration is 1 (:data:`BACKGROUND_CONCENTRATION`: no pull
on the background weight; the default prior's concentration is 1 for every weight).

The static flag is :attr:`gaussmix.inference.em.core.StepConfig.background`; the log
density :math:`-\\log V` is a traced argument of the compiled programs (a new volume
does not recompile), and a fit without background runs the program it ran before.

Example:
    >>> import jax.numpy as jnp
    >>> round(float(background_log_weight(jnp.array([0.5, 0.3]))), 4)
    -1.6094
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "BACKGROUND_CONCENTRATION",
    "DEFAULT_START_WEIGHT",
    "BackgroundArguments",
    "background_log_weight",
    "background_weight",
    "check_background_arguments",
    "log_prob_with_background",
    "start_parameters",
    "streamed_arguments",
]

#: The Dirichlet concentration of the background weight under a conjugate prior (MAP).
BACKGROUND_CONCENTRATION = 1.0

#: The background weight a fit starts from, unless given (the Gaussian start's weights
#: are scaled by one minus it); a warm start continues from the fitted weight.
DEFAULT_START_WEIGHT = 0.1


class BackgroundArguments(NamedTuple):
    """The traced arguments of a fit with background (a change does not recompile).

    Attributes:
        log_density: () :math:`-\\log V`.
        start_weight: () the background weight of the start, in [0, 1).
        log_sides: (D,) the log side lengths of the box :math:`V` is the volume of (rows
            with missing entries: the background's marginal density over the observed
            coordinates :math:`O` is :math:`\\prod_{d \\in O} 1/\\mathrm{side}_d`), or
            None (a volume without a box: no NaN).
    """

    log_density: jax.Array
    start_weight: jax.Array
    log_sides: jax.Array | None = None


def background_log_weight(weights: ArrayLike) -> jax.Array:
    """() :math:`\\log \\pi_0 = \\log(1 - \\sum_k \\pi_k)` of the Gaussian ``weights``
    (..., K); :math:`-\\infty` where they sum to 1 or (by rounding) above."""
    weights = jnp.asarray(weights)
    left = 1.0 - jnp.sum(weights, axis=-1)
    return jnp.where(left > 0, jnp.log(jnp.where(left > 0, left, 1.0)), -jnp.inf)


def background_weight(weights: ArrayLike) -> np.ndarray:
    """:math:`\\pi_0 = \\max(1 - \\sum_k \\pi_k, 0)` of the Gaussian ``weights`` (..., K), on
    the host, in their dtype."""
    weights = np.asarray(weights)
    return np.maximum(1.0 - weights.sum(axis=-1), 0.0).astype(weights.dtype)


def log_prob_with_background(log_prob: jax.Array, log_background: jax.Array) -> jax.Array:
    """(n, K + 1) the weighted log probabilities ``log_prob`` (n, K) with the background's
    :math:`\\log \\pi_0 - \\log V` (a scalar) as the last column."""
    column = jnp.broadcast_to(jnp.asarray(log_background, log_prob.dtype), log_prob.shape[:-1])
    return jnp.concatenate([log_prob, column[..., None]], axis=-1)


def start_parameters(parameters, start_weight: jax.Array):
    """The Gaussian start ``parameters`` (weights summing to 1) with the background weight
    ``start_weight``: their weights scaled by :math:`1 - \\pi_0`."""
    weights = parameters.weights * (1.0 - start_weight).astype(parameters.weights.dtype)
    return parameters._replace(weights=weights)


def check_background_arguments(
    log_density: float, start_weight: float, dtype, log_sides=None, n_features: int | None = None
) -> BackgroundArguments:
    """:class:`BackgroundArguments` in ``dtype``, or a ValueError naming the bad value.

    Args:
        log_density: :math:`-\\log V`, finite.
        start_weight: the start's background weight, in [0, 1).
        dtype: the computing dtype.
        log_sides: None, or the (D,) finite log side lengths of the box, summing to
            :math:`\\log V` (to 1e-9).
        n_features: D, to check ``log_sides`` against.
    """
    log_density = float(log_density)
    if not math.isfinite(log_density):
        raise ValueError(
            f"background_log_density must be finite (minus the log of a positive, finite "
            f"volume), got {log_density}; pass the volume of the region the background "
            "covers."
        )
    start_weight = float(start_weight)
    if not 0.0 <= start_weight < 1.0:
        raise ValueError(
            f"background_weight_init must be in [0, 1) (the background weight of the start), "
            f"got {start_weight}."
        )
    # exp(-log V) must be a normal number of the dtype for the E-step's column
    tiny, largest = np.finfo(dtype).tiny, np.finfo(dtype).max
    if not math.log(tiny) < log_density < math.log(largest):
        raise ValueError(
            f"the background density 1/V = exp({log_density:.6g}) is beyond the range of "
            f"{np.dtype(dtype)}; rescale the data (e.g. standardize its columns) or pass "
            "float64 data."
        )
    if log_sides is not None:
        log_sides = np.asarray(log_sides, np.float64)
        if log_sides.shape != (n_features,) or not np.all(np.isfinite(log_sides)):
            raise ValueError(
                f"background_log_sides must be ({n_features},) finite log side lengths of "
                f"the background's box, got shape {log_sides.shape}."
            )
        if abs(log_density + float(np.sum(log_sides))) > 1e-9 * max(1.0, abs(log_density)):
            raise ValueError(
                f"background_log_density={log_density:.12g} is not minus the sum of "
                f"background_log_sides ({-float(np.sum(log_sides)):.12g}): V must be the "
                "volume of the box whose sides are given."
            )
        log_sides = np.asarray(log_sides, dtype)
    return BackgroundArguments(
        np.asarray(log_density, dtype), np.asarray(start_weight, dtype), log_sides
    )


def streamed_arguments(
    log_density, start_weight, method: str, dtype, log_sides=None, n_features=None
) -> BackgroundArguments | None:
    """:class:`BackgroundArguments` of a chunked or sharded fit (None without background:
    ``log_density`` None), or an error naming what the background does not combine with.

    Args:
        log_density: None, or :math:`-\\log V`.
        start_weight: None (:data:`DEFAULT_START_WEIGHT`) or the start's background weight.
        method: the fit's EM method (generalized EM is refused).
        dtype: the computing dtype.
        log_sides, n_features: the box's (D,) log side lengths (rows with NaN) or None,
            as for :func:`check_background_arguments`.
    """
    if log_density is None:
        return None
    if method == "generalized_em":
        raise NotImplementedError(
            "a uniform background with non-conjugate priors (generalized EM) is not "
            "implemented; use priors=None, 'default' or conjugate priors."
        )
    if start_weight is None:
        start_weight = DEFAULT_START_WEIGHT
    return check_background_arguments(log_density, start_weight, dtype, log_sides, n_features)
