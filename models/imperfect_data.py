"""The mixture's likelihood on imperfect data: missing entries, measurement errors, noise.

:func:`gaussmix.models.gaussian_mixture` observes each row through this module's
:class:`ImperfectMixtureDistribution` when its data has missing entries (NaN, under
``nan_policy="marginalize"``), per-row measurement covariances :math:`S_n` (extreme
deconvolution, Bovy, Hogg & Roweis 2011) or a uniform background (mclust's noise
component, Banfield & Raftery 1993). Row :math:`n` observes the coordinates :math:`O_n`;
its log-likelihood is the marginal density of what was observed,

.. math::

    \\log p(x_{n,O} \\mid \\theta) = \\log \\Big[\\sum_{k=1}^{K} \\pi_k\\,
        \\mathcal{N}\\big(x_{n,O} \\mid \\mu_{k,O}, (\\Sigma_k + S_n)_{OO}\\big)
        + \\pi_0\\, e^{b_n}\\Big],

with :math:`\\pi_0` the background's weight and :math:`b_n` its log density at the row
(:math:`-\\log V` for a volume :math:`V`); without a background :math:`\\pi_0 = 0`,
without errors :math:`S_n = 0`. This is the density the observed site ``x`` carries, so
the pointwise log-likelihood ArviZ's LOO reads is this one.

**One shape for every row.** The covariance of the observed coordinates is written as the
(D, D) matrix :math:`T = (\\Sigma_k + S_n)_{OO} \\oplus I_M`: its missing rows and columns
replaced by the identity's. Its Cholesky factor :math:`L` is that of
:math:`(\\Sigma_k + S_n)_{OO}` with ones on the missing diagonal, so on the residual
:math:`r = o \\odot (x_n - \\mu_k)` (zero on the missing coordinates)

.. math::

    \\log \\mathcal{N}(x_{n,O} \\mid \\mu_{k,O}, T_{OO}) = -\\tfrac12 \\lVert L^{-1} r
        \\rVert^2 - \\sum_d \\log L_{dd} - \\tfrac{|O_n|}{2} \\log 2\\pi,

smooth in the parameters (NUTS differentiates it) and vectorized over rows (no loop).
Without measurement errors :math:`T` depends on the row only through its pattern
:math:`O_n`: the factors are formed once per pattern and component
(:class:`MissingPatterns`, the unique patterns found on the host, as
:mod:`gaussmix.inference.em.missing` does) and gathered per row. With measurement errors
they are per row and component, :math:`O(N K D^3)`. Diagonal and spherical covariances
with diagonal (or no) errors need no factor: the variances add coordinate by coordinate.
"""

import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.typing import ArrayLike
from numpyro.distributions import constraints

from gaussmix.models.priors import COVARIANCE_LAYOUTS

__all__ = [
    "MIN_PATTERN_BUCKET",
    "NAN_POLICIES",
    "UNROLLED_MAX_FEATURES",
    "ImperfectMixtureDistribution",
    "MissingPatterns",
    "check_background_log_density",
    "check_measurement_covariances",
    "check_missing_data",
    "fill_missing_columns",
    "find_missing_patterns",
    "imperfect_component_log_density",
]

#: What the program does with NaN in ``x``: refuse it, or read it as a missing entry.
NAN_POLICIES = ("raise", "marginalize")
#: Fewest rows of a pattern table (a power of two): a few patterns more or less give the
#: same shapes, so the compiled programs are reused.
MIN_PATTERN_BUCKET = 8


class MissingPatterns(NamedTuple):
    """The missingness patterns of a data set (arrays: traced by the NUTS back end).

    Attributes:
        observed: (P, D) bool, True where pattern p observes feature d; padded to a
            power of two with fully observed rows that no data row uses.
        index: (N,) int32, the pattern of each row.
    """

    observed: jax.Array
    index: jax.Array


def _is_concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


def find_missing_patterns(x: ArrayLike) -> MissingPatterns:
    """The unique missingness patterns of concrete data ``x`` (N, D), on the host.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1.0, np.nan], [2.0, 3.0], [np.nan, 1.0], [0.0, np.nan]])
        >>> patterns = find_missing_patterns(x)
        >>> patterns.observed.shape, patterns.index.tolist()
        ((8, 2), [1, 2, 0, 1])
        >>> patterns.observed[:3].tolist()
        [[False, True], [True, False], [True, True]]
    """
    observed = ~np.isnan(np.asarray(x))
    table, index = np.unique(observed, axis=0, return_inverse=True)
    bucket = max(MIN_PATTERN_BUCKET, 1 << max(0, int(table.shape[0] - 1).bit_length()))
    padded = np.ones((bucket, observed.shape[1]), bool)
    padded[: table.shape[0]] = table
    return MissingPatterns(padded, np.asarray(index, np.int32).reshape(-1))


def check_missing_data(x: np.ndarray) -> None:
    """Refuse what no policy reads: infinity, and rows without any observed entry."""
    if np.any(np.isinf(x)):
        raise ValueError(
            "x contains infinity; only NaN marks a missing entry. Remove or replace "
            "the infinite values."
        )
    empty = np.flatnonzero(np.all(np.isnan(x), axis=1))
    if empty.size:
        raise ValueError(
            f"x has {empty.size} row(s) without any observed entry (first: row "
            f"{int(empty[0])}); they carry no information: drop them."
        )
    empty_columns = np.flatnonzero(np.all(np.isnan(x), axis=0))
    if empty_columns.size:
        raise ValueError(
            f"x has feature(s) {empty_columns.tolist()} without any observed entry; "
            "drop those columns."
        )


def fill_missing_columns(x: jax.Array) -> jax.Array:
    """``x`` (N, D) with each NaN replaced by its column's mean of the observed entries
    (what the default prior is scaled from, as the EM back end's)."""
    observed = ~jnp.isnan(x)
    filled = jnp.where(observed, x, 0.0)
    count = jnp.maximum(observed.sum(axis=0), 1)
    return jnp.where(observed, x, filled.sum(axis=0) / count)


def check_measurement_covariances(
    measurement_covariances: ArrayLike, x_shape: tuple, observed: np.ndarray | None = None
) -> None:
    """Checked per-row measurement covariances: (N, D, D) matrices or (N, D) variances.

    Entries in a missing row or column of a row (``observed`` False) are ignored and may
    be NaN. Concrete values must be finite where read, symmetric and positive
    semi-definite (variances non-negative).

    Raises:
        ValueError: naming the problem and the fix.
    """
    n_samples, n_features = x_shape
    errors = measurement_covariances
    if not hasattr(errors, "shape"):
        errors = np.asarray(errors)
    if errors.shape not in ((n_samples, n_features, n_features), (n_samples, n_features)):
        raise ValueError(
            f"measurement_covariances has shape {errors.shape}; expected ({n_samples}, "
            f"{n_features}, {n_features}) (one covariance per row) or ({n_samples}, "
            f"{n_features}) (one variance per row and feature)."
        )
    if not (np.issubdtype(errors.dtype, np.number) or errors.dtype == np.bool_):
        raise ValueError(f"measurement_covariances must be numbers, got dtype {errors.dtype}.")
    if not _is_concrete(errors):
        return
    values = np.asarray(errors, np.float64)
    if observed is None:
        observed = np.ones((n_samples, n_features), bool)
    read = observed if values.ndim == 2 else observed[:, :, None] & observed[:, None, :]
    values = np.where(read, values, 0.0)
    if not np.all(np.isfinite(values)):
        raise ValueError(
            "measurement_covariances has NaN or infinite entries on observed coordinates; "
            "give finite (co)variances (NaN is allowed only where x is missing)."
        )
    if values.ndim == 2:
        if np.any(values < 0):
            raise ValueError(
                "measurement_covariances (N, D) are variances and must be >= 0; found "
                f"{values.min():.3g}."
            )
        return
    scale = np.maximum(np.abs(values).max(axis=(1, 2)), np.finfo(float).tiny)
    asymmetry = np.abs(values - np.swapaxes(values, 1, 2)).max(axis=(1, 2)) / scale
    if np.any(asymmetry > 1e-8):
        row = int(np.argmax(asymmetry))
        raise ValueError(
            f"measurement_covariances[{row}] is not symmetric (relative asymmetry "
            f"{asymmetry[row]:.2g}); give symmetric matrices, e.g. (S + S^T) / 2."
        )
    smallest = np.linalg.eigvalsh(values)[:, 0] / scale
    if np.any(smallest < -1e-8):
        row = int(np.argmin(smallest))
        raise ValueError(
            f"measurement_covariances[{row}] is not positive semi-definite (smallest "
            f"eigenvalue {smallest[row] * scale[row]:.3g}); a covariance needs "
            "eigenvalues >= 0."
        )


def check_background_log_density(value: ArrayLike, n_samples: int) -> jax.Array:
    """The background's log density: a scalar (:math:`-\\log V`) or one per row (N,)."""
    value = jnp.asarray(value)
    if value.shape not in ((), (n_samples,)):
        raise ValueError(
            f"background_log_density has shape {value.shape}; expected () (minus the log "
            f"of the background's volume) or ({n_samples},) (one value per row)."
        )
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.result_type(float))
    if _is_concrete(value) and not np.all(np.isfinite(np.asarray(value))):
        raise ValueError(
            "background_log_density must be finite (-log V for a volume V > 0); check "
            "background_volume."
        )
    return value


def _full_covariances(covariance: jax.Array, layout: str, n_components: int, n_features: int):
    """The covariance site as (K', D, D) matrices (K' = 1 when tied)."""
    if layout == "full":
        return covariance
    if layout == "tied":
        return covariance[None]
    variances = covariance if layout == "diag" else covariance[:, None] * jnp.ones(n_features)
    return variances[..., None] * jnp.eye(n_features, dtype=variances.dtype)


def _masked_factor(matrix: jax.Array, observed: jax.Array):
    """Cholesky factor of ``matrix`` (..., D, D) restricted to ``observed`` (..., D)
    and padded with the identity, and :math:`\\sum_d \\log L_{dd}`."""
    both = observed[..., :, None] & observed[..., None, :]
    eye = jnp.eye(matrix.shape[-1], dtype=matrix.dtype)
    cholesky = jnp.linalg.cholesky(jnp.where(both, matrix, eye))
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(cholesky, axis1=-2, axis2=-1)), axis=-1)
    return cholesky, half_log_det


def _unrolled_whiten(matrix: jax.Array, residual: jax.Array):
    """:math:`L^{-1} r` and :math:`\\sum_d \\log L_{dd}` for :math:`L L^T` = ``matrix``
    (..., D, D), by a Cholesky factorization and forward substitution written out entry
    by entry: elementwise operations over the batch (rows x components), much faster on
    a CPU than batches of tiny LAPACK calls for small D."""
    n_features = matrix.shape[-1]
    factor = [[None] * n_features for _ in range(n_features)]
    whitened = []
    half_log_det = 0.0
    for j in range(n_features):
        pivot = matrix[..., j, j] - sum(factor[j][k] ** 2 for k in range(j))
        factor[j][j] = jnp.sqrt(pivot)
        half_log_det = half_log_det + jnp.log(factor[j][j])
        for i in range(j + 1, n_features):
            entry = matrix[..., i, j] - sum(factor[i][k] * factor[j][k] for k in range(j))
            factor[i][j] = entry / factor[j][j]
        value = residual[..., j] - sum(factor[j][k] * whitened[k] for k in range(j))
        whitened.append(value / factor[j][j])
    return jnp.stack(whitened, axis=-1), half_log_det


#: Largest D whose per-row factors are written out entry by entry (:func:`_unrolled_whiten`);
#: above, batched LAPACK Cholesky factors and triangular solves.
UNROLLED_MAX_FEATURES = 8


def imperfect_component_log_density(
    x: jax.Array,
    means: jax.Array,
    covariance: jax.Array,
    covariance_type: str,
    *,
    patterns: MissingPatterns | None = None,
    measurement_covariances: jax.Array | None = None,
) -> jax.Array:
    """(K, N) :math:`\\log \\mathcal{N}(x_{n,O} \\mid \\mu_{k,O}, (\\Sigma_k + S_n)_{OO})`.

    Args:
        x: (N, D), NaN where an entry is missing.
        means: (K, D).
        covariance: the covariance site's value (storage layout of ``covariance_type``).
        covariance_type: a program covariance type (read as its storage layout).
        patterns: the rows' missingness patterns (:func:`find_missing_patterns`); ``None``
            treats every row as its own pattern (read from ``x``; what a traced ``x``
            without a pattern table gets).
        measurement_covariances: ``None``, (N, D, D) or (N, D) (variances).

    Example:
        >>> import numpy as np
        >>> from scipy import stats
        >>> x = np.array([[0.5, np.nan], [1.0, -1.0]])
        >>> cov = np.array([[[2.0, 0.5], [0.5, 1.0]]])
        >>> value = imperfect_component_log_density(x, np.zeros((1, 2)), cov, "full")
        >>> expected = [stats.norm(0, np.sqrt(2.0)).logpdf(0.5),
        ...             stats.multivariate_normal(np.zeros(2), cov[0]).logpdf(x[1])]
        >>> bool(np.allclose(value[0], expected))
        True
    """
    layout = COVARIANCE_LAYOUTS[covariance_type]
    n_components, n_features = means.shape
    observed = ~jnp.isnan(x)
    x0 = jnp.where(observed, x, 0.0)
    residual = jnp.where(observed, x0 - means[:, None, :], 0.0)  # (K, N, D)
    constant = 0.5 * math.log(2.0 * math.pi) * observed.sum(axis=-1)  # (N,)
    errors = measurement_covariances
    if layout in ("diag", "spherical") and (errors is None or errors.ndim == 2):
        variances = covariance if layout == "diag" else covariance[:, None] * jnp.ones(n_features)
        total = variances[:, None, :]
        if errors is not None:
            total = total + jnp.where(observed, errors, 0.0)
        total = jnp.where(observed, total, 1.0)
        terms = jnp.where(observed, residual**2 / total + jnp.log(total), 0.0)
        return -0.5 * jnp.sum(terms, axis=-1) - constant
    matrices = _full_covariances(covariance, layout, n_components, n_features)  # (K', D, D)
    if errors is None:  # factors per pattern and component, gathered per row
        if patterns is None:
            patterns = MissingPatterns(observed, jnp.arange(x.shape[0]))
        table = jnp.asarray(patterns.observed)
        cholesky, half_log_det = _masked_factor(matrices[None], table[:, None, :])
        eye = jnp.broadcast_to(jnp.eye(n_features, dtype=cholesky.dtype), cholesky.shape)
        whiten = jax.scipy.linalg.solve_triangular(cholesky, eye, lower=True)  # (P, K', D, D)
        whiten = jnp.swapaxes(whiten[patterns.index], 0, 1)  # (K', N, D, D)
        whitened = (whiten @ residual[..., None])[..., 0]
        half_log_det = half_log_det[patterns.index].T  # (K', N)
    else:
        if errors.ndim == 2:
            errors = errors[..., None] * jnp.eye(n_features, dtype=errors.dtype)
        both = observed[:, :, None] & observed[:, None, :]
        eye = jnp.eye(n_features, dtype=residual.dtype)
        total = jnp.where(both, matrices[:, None] + jnp.where(both, errors, 0.0), eye)
        if n_features <= UNROLLED_MAX_FEATURES:
            whitened, half_log_det = _unrolled_whiten(total, residual)
        else:
            cholesky, half_log_det = _masked_factor(total, observed[None])
            cholesky = jnp.broadcast_to(cholesky, (n_components, *cholesky.shape[1:]))
            whitened = jax.scipy.linalg.solve_triangular(cholesky, residual[..., None], lower=True)[
                ..., 0
            ]
    squared = jnp.sum(whitened**2, axis=-1)
    return -0.5 * squared - half_log_det - constant


class ImperfectMixtureDistribution(dist.Distribution):
    """A Gaussian mixture of N rows with missing entries, errors and a background.

    ``log_prob`` of the (N, D) data gives each row's marginal log density of its observed
    coordinates (see the module): batch shape (N,), event (D,). The arguments other than
    the mixture's describe the data, so this distribution only scores the data it was
    built for; it draws no samples.

    Args:
        weights: (K,) the Gaussian components' weights.
        means: (K, D).
        covariance: the covariance site's value.
        covariance_type: a program covariance type.
        patterns: :class:`MissingPatterns` of the rows, or ``None``.
        measurement_covariances: ``None``, (N, D, D) or (N, D).
        background_weight: ``None`` (no background) or the background's weight; the
            weights and it sum to one.
        background_log_density: the background's log density, () or (N,).
        n_samples: N.

    Example:
        >>> import numpy as np
        >>> mixture = ImperfectMixtureDistribution(
        ...     np.array([0.6, 0.3]), np.array([[-1.0], [2.0]]), np.array([0.5, 1.0]),
        ...     "spherical", background_weight=0.1, background_log_density=-np.log(10.0),
        ...     n_samples=3)
        >>> mixture.batch_shape, mixture.log_prob(np.array([[0.0], [np.nan], [50.0]])).shape
        ((3,), (3,))
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real_vector
    pytree_data_fields = (
        "weights",
        "means",
        "covariance",
        "patterns",
        "measurement_covariances",
        "background_weight",
        "background_log_density",
    )
    pytree_aux_fields = ("covariance_type",)

    def __init__(
        self,
        weights,
        means,
        covariance,
        covariance_type: str,
        *,
        patterns: MissingPatterns | None = None,
        measurement_covariances=None,
        background_weight=None,
        background_log_density=None,
        n_samples: int,
        validate_args=None,
    ):
        self.weights = jnp.asarray(weights)
        self.means = jnp.asarray(means)
        self.covariance = jnp.asarray(covariance)
        self.covariance_type = COVARIANCE_LAYOUTS[covariance_type]
        self.patterns = patterns
        self.measurement_covariances = measurement_covariances
        self.background_weight = background_weight
        self.background_log_density = background_log_density
        super().__init__(
            batch_shape=(n_samples,),
            event_shape=self.means.shape[-1:],
            validate_args=validate_args,
        )

    def log_prob(self, value):
        value = jnp.asarray(value)
        safe = jnp.where(self.weights > 0, self.weights, 1.0)
        log_weights = jnp.where(self.weights > 0, jnp.log(safe), -jnp.inf)
        joint = log_weights[:, None] + imperfect_component_log_density(
            value,
            self.means,
            self.covariance,
            self.covariance_type,
            patterns=self.patterns,
            measurement_covariances=self.measurement_covariances,
        )
        if self.background_weight is not None:
            background = jnp.log(self.background_weight) + jnp.broadcast_to(
                self.background_log_density, joint.shape[1:]
            )
            joint = jnp.concatenate([joint, background[None]], axis=0)
        # value-preserving: no gradient flows into components of zero weight
        joint = jnp.where(jnp.isneginf(joint), -jnp.inf, joint)
        return jax.nn.logsumexp(joint, axis=0)

    def sample(self, key, sample_shape=()):
        raise NotImplementedError(
            "Data with missing entries, measurement errors or a background is scored, not "
            "simulated, by this program; draw from GaussianMixtureDistribution (or "
            "GaussianMixture.sample) for new points."
        )
