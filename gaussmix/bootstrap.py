"""Choose the number of components by a parametric bootstrap of the likelihood-ratio
statistic, as mclust's ``mclustBootstrapLRT`` does (McLachlan 1987).

For :math:`g = 1, 2, \\dots` the test of :math:`H_0`: g components against :math:`H_1`:
g + 1 components of the same covariance model uses

.. math::

    \\mathrm{LRTS} = 2\\,(\\log L_{g+1} - \\log L_g),

whose null distribution is not the :math:`\\chi^2` of regular models (the g-component
mixture sits on the boundary of the (g + 1)-component one). It is estimated by
``n_boot`` datasets of the same size drawn from the fitted :math:`H_0` mixture, each
fitted with g and g + 1 components, and

.. math::

    p = \\frac{1 + \\#\\{b : \\mathrm{LRTS}^*_b \\ge \\mathrm{LRTS}\\}}{B + 1},

mclust's formula (``mclustBootstrapLRT``, mclust 6.0; Davison & Hinkley 1997, eq. 4.11),
with B the replicates whose fits succeeded.

As mclust: the observed data are fitted with g = 1 .. G + 1 components; on each replicate
the g-component fit starts at the fitted :math:`H_0` parameters (the truth of the
replicate) and the (g + 1)-component fit at the observed :math:`H_1` fit, and EM runs to
convergence. ``max_components=None`` tests g = 1, 2, ... and stops at the first
p-value above ``level`` (at most 8 against 9, mclust's ``G = 1:9``); an integer G tests
every g = 1 .. G.

Numerics (mclust redraws a replicate whose statistic is NA, and keeps negative ones):

* **failed replicate fits**: a fit whose covariance stops being positive definite or
  becomes singular to working precision (reciprocal condition number below the dtype's
  machine epsilon, as mclust's test) or whose log-likelihood is not finite is *failed*:
  its statistic is NaN in :attr:`BootstrapLRT.replicates`, it is counted in
  :attr:`BootstrapLRT.n_failed` (and a warning names the count) and left out of the
  p-value, whose B is that much smaller. mclust redraws such a replicate; conditioning
  on success is the same estimator with fewer replicates.
* **H1 below H0** (LRTS* < 0: the (g + 1)-component fit stopped at a worse local
  optimum than the g-component one, impossible at the maxima since the models are
  nested). Default: the statistic is set to 0 and counted in
  :attr:`BootstrapLRT.n_clipped`; as any LRTS* < 0 is below a positive observed
  statistic, the p-value is mclust's. ``refit_negative=True``: where the
  (g + 1)-component fit failed or ended below the g-component one, it is run again from
  the replicate's g-component fit with its heaviest component split in two along its
  main axis (means at :math:`\\mu \\pm \\tfrac12 \\sqrt{\\lambda_1} v_1`, half the
  weight each, EM climbs from there) and the better fit is kept (counted in
  :attr:`BootstrapLRT.n_refit`); what is still below 0 (both fits at the g-component
  solution, within ``tol``) is clipped. The statistics are then closer to the
  likelihood ratio at the maxima, which mclust's single warm start underestimates when
  the observed H1 is a poor start for the replicates (the p-values are then larger than
  mclust's: on the simulated reference set, 0.91 against 0.85 and 0.28 against 0.24).
  The observed fits get the same split start when the (g + 1)-component fit ends below
  the g-component one.
* replicate fits that stop at ``max_iter`` are kept (their statistic is a lower bound)
  and counted in :attr:`BootstrapLRT.n_not_converged`, with a warning.

All ``n_boot`` replicates of one g are one compiled program (or a few, for data past
:data:`BATCH_BYTES`): the datasets are drawn inside it, and their fits run through
:func:`pool_fit`, a ``lax.while_loop`` of :func:`gaussmix.inference.em.step` vmapped over
:data:`SLOTS` lanes, each lane taking the next replicate when its fit ends. On the CPU,
VVV, VVI and VII fit each replicate to the end in a compiled kernel instead
(:func:`gaussmix.inference.native.pool_fit`: E-step, M-step and stopping rule in C++,
one call for all replicates), and the other models' E-step is one call of a compiled
kernel for all lanes (:func:`gaussmix.inference.native.lane_statistics`); XLA where the
kernel is off or absent (the same fits to rounding). The observed
fits of every K (1 .. G + 1) are one compiled program as well
(:mod:`gaussmix.inference.em.candidates`, k-means starts: the fits
:class:`~gaussmix.GaussianMixture` makes one K at a time; other ``init_params`` fit one K
at a time), and a thread loads the tests' replicate programs meanwhile.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(-4, 1, (60, 1)), rng.normal(4, 1, (60, 1))])
    >>> test = bootstrap_likelihood_ratio(x, "VVV", max_components=1, n_boot=19, random_state=0)
    >>> test.p_value.tolist()  # no replicate of one component reaches the observed LRTS
    [0.05]
"""

import threading
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gaussmix._base import seed_from_random_state, validate_data
from gaussmix.inference import compilation, em
from gaussmix.inference.em import sweep
from gaussmix.inference.em.pool import fit_kernel_serves, kernel_serves, pool_fit
from gaussmix.mixture import GaussianMixture
from gaussmix.models.priors import (
    canonical_covariance_type,
    check_em_covariance_type,
    covariance_layout,
)

__all__ = [
    "BATCH_BYTES",
    "SEQUENTIAL_LIMIT",
    "SLOTS",
    "BootstrapLRT",
    "ReplicateFits",
    "ReplicateStatistics",
    "bootstrap_likelihood_ratio",
    "bootstrap_p_value",
    "draw",
    "ill_conditioned",
    "replicate_fits",
    "replicate_statistics",
    "split_heaviest",
]

#: mclust's ``G = 1:9``: the largest g + 1 of a sequential test without ``max_components``.
SEQUENTIAL_LIMIT = 9
#: Bytes of replicate data (and its design matrices) one compiled call holds at most.
BATCH_BYTES = 256 * 2**20
#: Lanes of :func:`pool_fit` (fits run side by side) of a batch of replicates.
SLOTS = 64


class BootstrapLRT(NamedTuple):
    """The bootstrap likelihood-ratio tests of g against g + 1 components, one row per g.

    Attributes:
        n_components: (G,) the g of each H0.
        statistic: (G,) the observed LRTS, 2 (log L_{g+1} - log L_g).
        p_value: (G,) the bootstrap p-values.
        replicates: (G, n_boot) the replicate statistics, NaN for a failed replicate.
        n_failed: (G,) replicates left out (a fit failed).
        n_refit: (G,) replicates whose g + 1 fit was rerun from a split of the g fit.
        n_clipped: (G,) replicate statistics below 0 set to 0.
        n_not_converged: (G,) replicates with a fit stopped at ``max_iter``.
        log_likelihood: (G + 1,) log-likelihood of the observed data with 1 .. G + 1
            components.
        selected: the first g whose p-value exceeds ``level``; G + 1 when every test
            rejected (more components may fit better still).
        covariance_type: the covariance model.
        n_boot: replicates drawn per test.
        level: the level of the tests.
    """

    n_components: np.ndarray
    statistic: np.ndarray
    p_value: np.ndarray
    replicates: np.ndarray
    n_failed: np.ndarray
    n_refit: np.ndarray
    n_clipped: np.ndarray
    n_not_converged: np.ndarray
    log_likelihood: np.ndarray
    selected: int
    covariance_type: str
    n_boot: int
    level: float

    def summary(self) -> str:
        """mclust's table: one line per test, LRTS and bootstrap p-value."""
        lines = [
            f"Bootstrap sequential LRT for the number of mixture components "
            f"(model {self.covariance_type}, {self.n_boot} replicates, level {self.level:g})",
            f"{'':>10} {'LRTS':>12} {'p-value':>9} {'failed':>7} {'refit':>6} "
            f"{'clipped':>8} {'not conv.':>10}",
        ]
        for row in zip(
            self.n_components,
            self.statistic,
            self.p_value,
            self.n_failed,
            self.n_refit,
            self.n_clipped,
            self.n_not_converged,
            strict=True,
        ):
            g, statistic, p_value, failed, refit, clipped, not_converged = row
            lines.append(
                f"{f'{g} vs {g + 1}':>10} {statistic:12.6g} {p_value:9.4g} {failed:7d} "
                f"{refit:6d} {clipped:8d} {not_converged:10d}"
            )
        lines.append(f"selected: {self.selected} component(s)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


class ReplicateFits(NamedTuple):
    """The fits of one batch of bootstrap replicates (leading axis: replicates).

    Attributes:
        log_likelihood0: log-likelihood of the g-component fit.
        log_likelihood1: of the (g + 1)-component fit started at the observed H1.
        log_likelihood_split: of the (g + 1)-component fit started at the split g fit
            (only where it ran: ``refit``; -inf elsewhere).
        failed0, failed1, failed_split: whether each fit failed.
        converged0, converged1, converged_split: whether each converged (True where the
            split fit did not run).
        refit: whether the split fit ran.
        n_iter: (3,) EM steps of the three fits (0 where the split fit did not run).
    """

    log_likelihood0: jax.Array
    log_likelihood1: jax.Array
    log_likelihood_split: jax.Array
    failed0: jax.Array
    failed1: jax.Array
    failed_split: jax.Array
    converged0: jax.Array
    converged1: jax.Array
    converged_split: jax.Array
    refit: jax.Array
    n_iter: jax.Array


class ReplicateConfig(NamedTuple):
    """Static description of one compiled batch of replicates."""

    n_components: int
    covariance_type: str
    n_samples: int
    batch: int
    max_iter: int
    slots: int
    refit: bool
    #: the E-step through the compiled CPU kernel (:func:`gaussmix.inference.em.pool_fit`)
    use_kernel: bool = False
    #: each fit to the end in the compiled CPU kernel (pool_fit's ``whole_fit``)
    whole_fit: bool = False
    #: the key folded with the test's number first
    fold: bool = False


def _cholesky_factor(covariances, layout):
    """Square roots of the covariances in their storage layout (for drawing)."""
    if layout in ("full", "tied"):
        return jnp.linalg.cholesky(covariances)
    return jnp.sqrt(covariances)


def draw(parameters: em.MixtureParameters, key: jax.Array, n_samples: int, layout: str):
    """(n_samples, D) points drawn from the mixture (pure, jittable)."""
    label_key, noise_key = jax.random.split(key)
    means = parameters.means
    labels = jax.random.categorical(label_key, jnp.log(parameters.weights), shape=(n_samples,))
    noise = jax.random.normal(noise_key, (n_samples, means.shape[1]), means.dtype)
    factor = _cholesky_factor(parameters.covariances, layout)
    if layout == "full":
        scaled = jnp.einsum("nij,nj->ni", factor[labels], noise)
    elif layout == "tied":
        scaled = noise @ factor.T
    elif layout == "diag":
        scaled = noise * factor[labels]
    else:
        scaled = noise * factor[labels][:, None]
    return means[labels] + scaled


def split_heaviest(parameters: em.MixtureParameters, layout: str) -> em.MixtureParameters:
    """K + 1 components: the heaviest one split in two along its main axis.

    Means at :math:`\\mu \\pm \\tfrac12 \\sqrt{\\lambda_1} v_1` (:math:`\\lambda_1, v_1`
    the largest eigenpair of its covariance), half its weight each, its covariance and
    precision factor repeated; every other component unchanged. Duplicated components
    keep every equality constraint of mclust's models.
    """
    weights, means, covariances, factor = parameters
    heaviest = jnp.argmax(weights)
    n_features = means.shape[1]
    if layout == "full":
        dense = covariances[heaviest]
    elif layout == "tied":
        dense = covariances
    elif layout == "diag":
        dense = jnp.diag(covariances[heaviest])
    else:
        dense = covariances[heaviest] * jnp.eye(n_features, dtype=means.dtype)
    eigenvalues, eigenvectors = jnp.linalg.eigh(dense)
    offset = 0.5 * jnp.sqrt(jnp.maximum(eigenvalues[-1], 0.0)) * eigenvectors[:, -1]
    half = weights[heaviest] / 2
    weights = jnp.append(weights.at[heaviest].set(half), half)
    means = jnp.concatenate([means.at[heaviest].add(-offset), (means[heaviest] + offset)[None]])
    if layout != "tied":
        covariances = jnp.concatenate([covariances, covariances[heaviest][None]])
        factor = jnp.concatenate([factor, factor[heaviest][None]])
    return em.MixtureParameters(weights, means, covariances, factor)


def ill_conditioned(parameters: em.MixtureParameters, layout: str) -> jax.Array:
    """() whether a covariance is not positive definite or singular to working precision
    (reciprocal condition number below the dtype's epsilon: mclust's failure test)."""
    covariances = parameters.covariances
    eps = jnp.finfo(covariances.dtype).eps
    if layout in ("full", "tied"):
        eigenvalues = jnp.linalg.eigvalsh(covariances)
        smallest, largest = eigenvalues[..., 0], eigenvalues[..., -1]
    elif layout == "diag":
        smallest, largest = jnp.min(covariances, axis=-1), jnp.max(covariances, axis=-1)
    else:
        smallest, largest = covariances, jnp.broadcast_to(jnp.max(covariances), covariances.shape)
    bad = ~(smallest > eps * largest) | ~jnp.isfinite(largest)
    return jnp.any(bad) | ~jnp.all(jnp.isfinite(parameters.precisions_cholesky))


def _replicate_batch(null, alternative, key, test, first, rtol, reg_covar, config: ReplicateConfig):
    """Fits of replicates ``first .. first + batch - 1`` of one test (compiled once); the
    test's key is ``fold_in(key, test)`` where ``config.fold``."""
    if config.fold:  # here rather than on the host, where it compiles two small programs
        key = jax.random.fold_in(key, test)
    layout = covariance_layout(config.covariance_type)
    null_config = em.StepConfig(config.n_components, config.covariance_type)
    alternative_config = em.StepConfig(config.n_components + 1, config.covariance_type)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, first + jnp.arange(config.batch))
    x = jax.vmap(draw, in_axes=(None, 0, None, None))(null, keys, config.n_samples, layout)
    centre = jnp.mean(x, axis=1)
    x_rows = jnp.swapaxes(x - centre[:, None, :], 1, 2)
    everywhere = jnp.ones(config.batch, bool)

    def fit(starts, mask, step_config):
        fits = pool_fit(
            x_rows,
            centre,
            starts,
            mask,
            rtol,
            reg_covar,
            step_config,
            config.max_iter,
            config.slots,
            config.use_kernel,
            config.whole_fit,
        )
        bad = jax.vmap(ill_conditioned, in_axes=(0, None))(fits.parameters, layout)
        failed = fits.collapsed | bad | ~jnp.isfinite(fits.log_likelihood)
        return fits, failed

    null_fits, failed0 = fit(null, everywhere, null_config)
    alternative_fits, failed1 = fit(alternative, everywhere, alternative_config)
    ll0, ll1 = null_fits.log_likelihood, alternative_fits.log_likelihood
    if not config.refit:
        false = jnp.zeros(config.batch, bool)
        return ReplicateFits(
            log_likelihood0=ll0,
            log_likelihood1=ll1,
            log_likelihood_split=jnp.full(config.batch, -jnp.inf, ll0.dtype),
            failed0=failed0,
            failed1=failed1,
            failed_split=false,
            converged0=null_fits.converged,
            converged1=alternative_fits.converged,
            converged_split=~false,
            refit=false,
            n_iter=jnp.stack(
                [null_fits.n_iter, alternative_fits.n_iter, jnp.zeros_like(null_fits.n_iter)],
                axis=1,
            ),
        )
    refit = ~failed0 & (failed1 | (ll1 < ll0))
    splits = jax.vmap(split_heaviest, in_axes=(0, None))(null_fits.parameters, layout)
    split_fits, failed_split = fit(splits, refit, alternative_config)
    return ReplicateFits(
        log_likelihood0=ll0,
        log_likelihood1=ll1,
        log_likelihood_split=jnp.where(refit, split_fits.log_likelihood, -jnp.inf),
        failed0=failed0,
        failed1=failed1,
        failed_split=failed_split & refit,
        converged0=null_fits.converged,
        converged1=alternative_fits.converged,
        converged_split=split_fits.converged | ~refit,
        refit=refit,
        n_iter=jnp.stack([null_fits.n_iter, alternative_fits.n_iter, split_fits.n_iter], axis=1),
    )


_replicate_program = compilation.jit(_replicate_batch, static_argnames=("config",))


def _check_int(name: str, value, low: int) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
        raise ValueError(f"Invalid value for '{name}': {value!r}; it must be an int >= {low}.")
    return int(value)


def replicate_fits(
    null: em.MixtureParameters,
    alternative: em.MixtureParameters,
    *,
    covariance_type: str,
    n_samples: int,
    n_boot: int,
    key: jax.Array,
    tol: float,
    reg_covar: float,
    max_iter: int,
    batch_size: int | None = None,
    slots: int | None = None,
    refit_negative: bool = False,
    test: int | None = None,
) -> ReplicateFits:
    """The fits of ``n_boot`` datasets of ``n_samples`` rows drawn from ``null``: g
    components from ``null``, g + 1 from ``alternative`` (and from the split g fit where
    needed), in batches of ``batch_size`` replicates, each one compiled call.

    Replicate b uses ``fold_in(key, b)``, or ``fold_in(fold_in(key, test), b)`` when
    ``test`` is given (folded inside the compiled program): the answer does not depend on
    ``batch_size`` or ``slots`` (lanes of :func:`pool_fit`, default :data:`SLOTS`).
    ``tol`` is mclust's relative tolerance on the log-likelihood. ``refit_negative``:
    rerun the (g + 1) fit from the split g fit where the first one failed or ended below
    the g fit.

    Returns:
        :class:`ReplicateFits` of (n_boot,) NumPy arrays.
    """
    return _start_replicate_fits(
        null,
        alternative,
        covariance_type=covariance_type,
        n_samples=n_samples,
        n_boot=n_boot,
        key=key,
        tol=tol,
        reg_covar=reg_covar,
        max_iter=max_iter,
        batch_size=batch_size,
        slots=slots,
        refit_negative=refit_negative,
        test=test,
    )()


def _start_replicate_fits(
    null, alternative, *, n_boot, key, tol, reg_covar, test, **keywords
) -> Callable[[], ReplicateFits]:
    """:func:`replicate_fits` (same arguments) started: its first batch is dispatched and
    XLA runs it on its own threads while the caller goes on; ``finish()`` runs the other
    batches and answers the :class:`ReplicateFits`."""
    means = np.asarray(null.means)
    dtype = means.dtype
    config = _replicate_config(means.shape, dtype, n_boot=n_boot, fold=test is not None, **keywords)
    null, alternative = (
        em.MixtureParameters(*(np.asarray(leaf, dtype) for leaf in parameters))
        for parameters in (null, alternative)
    )
    test_index = np.asarray(0 if test is None else _check_int("test", test, 0), np.int32)

    def batch(first):
        return _replicate_program(
            null,
            alternative,
            key,
            test_index,
            np.asarray(first, np.int32),
            np.asarray(tol, dtype),
            np.asarray(reg_covar, dtype),
            config=config,
        )

    started = batch(0)

    def finish() -> ReplicateFits:
        batches = [jax.tree.map(np.asarray, started)]
        for first in range(config.batch, n_boot, config.batch):
            batches.append(jax.tree.map(np.asarray, batch(first)))
        return jax.tree.map(lambda *leaves: np.concatenate(leaves)[:n_boot], *batches)

    return finish


def _replicate_config(
    shape,
    dtype,
    *,
    covariance_type,
    n_samples,
    n_boot,
    max_iter,
    batch_size=None,
    slots=None,
    refit_negative=False,
    fold=False,
) -> ReplicateConfig:
    """The :class:`ReplicateConfig` of a test whose null has means of ``shape`` (g, D):
    the batch size (default: as many replicates as fit in :data:`BATCH_BYTES`) and the
    kernel's part, decided on the host."""
    covariance_type = canonical_covariance_type(covariance_type)
    dtype = np.dtype(dtype)
    n_components, n_features = shape
    if batch_size is None:
        width = n_features + 2 * (n_features * (n_features + 3) // 2 + 2 * n_components + 4)
        per_replicate = max(1, n_samples * width * dtype.itemsize)
        batch_size = max(1, min(n_boot, BATCH_BYTES // per_replicate))
    batch_size = min(_check_int("batch_size", batch_size, 1), n_boot)
    return ReplicateConfig(
        n_components=int(n_components),
        covariance_type=covariance_type,
        n_samples=int(n_samples),
        batch=int(batch_size),
        max_iter=int(max_iter),
        slots=min(batch_size, SLOTS if slots is None else _check_int("slots", slots, 1)),
        refit=bool(refit_negative),
        use_kernel=kernel_serves(covariance_type, int(n_components) + 1, dtype),
        whole_fit=fit_kernel_serves(covariance_type, int(n_components) + 1, n_features, dtype),
        fold=fold,
    )


def _mixture_like(n_components: int, n_features: int, layout: str, dtype) -> em.MixtureParameters:
    """Zero :class:`MixtureParameters` of these shapes (a program's signature)."""
    covariance_shape = {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[layout]
    return em.MixtureParameters(
        np.zeros(n_components, dtype),
        np.zeros((n_components, n_features), dtype),
        np.zeros(covariance_shape, dtype),
        np.zeros(covariance_shape, dtype),
    )


def _preload(data, observed, tests, key, ready, x64: bool, **keywords) -> None:
    """Load and hold the observed fits' programs (``observed``: the arguments of
    :func:`gaussmix.inference.em.sweep.fit_sweep`, or None), then ``ready[0].set()``, and the replicate
    programs of the tests of g = ``tests`` (as :func:`replicate_fits` calls them, array
    values unread), ``ready[g].set()`` after each: in a thread while k-means, the
    observed fits and the first tests run (XLA's programs run without Python's lock).
    Every event is set at the end. Skipped where this thread's JAX settings differ from
    the caller's (``jax.enable_x64`` is per thread); a failure is the caller's to meet
    again and report."""
    n_features, dtype = data.shape[1], data.dtype
    layout = covariance_layout(keywords["covariance_type"])
    scalar = np.zeros((), dtype)
    try:
        if jax.config.jax_enable_x64 != x64:
            return
        if observed is not None:
            sweep.preload_sweep(data, **observed)
        ready[0].set()
        for g in tests:
            config = _replicate_config((g, n_features), dtype, fold=True, **keywords)
            _replicate_program.preload(
                _mixture_like(g, n_features, layout, dtype),
                _mixture_like(g + 1, n_features, layout, dtype),
                key,
                np.zeros((), np.int32),
                np.zeros((), np.int32),
                scalar,
                scalar,
                config=config,
            )
            ready[g].set()
    except Exception:  # the caller's thread meets it again
        return
    finally:
        for event in ready:
            event.set()


class ReplicateStatistics(NamedTuple):
    """The statistics of one test's replicates and their counts
    (:class:`BootstrapLRT`'s fields of one row)."""

    statistics: np.ndarray
    n_failed: int
    n_refit: int
    n_clipped: int
    n_not_converged: int


def replicate_statistics(fits: ReplicateFits) -> ReplicateStatistics:
    """The replicate statistics under the policy of the module's docstring: the better
    of the two (g + 1)-component fits, failures NaN, negative values clipped to 0."""
    alternative = np.where(fits.failed1, -np.inf, fits.log_likelihood1)
    split = np.where(fits.failed_split, -np.inf, fits.log_likelihood_split)
    best = np.maximum(alternative, split)
    failed = fits.failed0 | ~np.isfinite(best)
    converged = fits.converged0 & np.where(
        alternative >= split, fits.converged1, fits.converged_split
    )
    with np.errstate(invalid="ignore"):
        statistics = 2.0 * (best - fits.log_likelihood0)
    clipped = ~failed & (statistics < 0)
    statistics = np.where(failed, np.nan, np.maximum(statistics, 0.0))
    return ReplicateStatistics(
        statistics=statistics,
        n_failed=int(failed.sum()),
        n_refit=int((fits.refit & ~failed).sum()),
        n_clipped=int(clipped.sum()),
        n_not_converged=int((~converged & ~failed).sum()),
    )


def bootstrap_p_value(statistic: float, replicates: np.ndarray) -> float:
    """mclust's :math:`(1 + \\#\\{\\mathrm{LRTS}^* \\ge \\mathrm{LRTS}\\}) / (B + 1)` over
    the replicates that are not NaN."""
    valid = replicates[~np.isnan(replicates)]
    return float((1 + np.sum(valid >= statistic)) / (valid.size + 1))


def _parameters_of(estimator: GaussianMixture) -> em.MixtureParameters:
    return em.MixtureParameters(
        estimator.weights_,
        estimator.means_,
        estimator.covariances_,
        estimator.precisions_cholesky_,
    )


def _precisions_of(parameters: em.MixtureParameters, layout: str) -> np.ndarray:
    factor = np.asarray(parameters.precisions_cholesky)
    if layout in ("full", "tied"):
        return factor @ np.swapaxes(factor, -1, -2)
    return factor * factor


def _finished_test(g, statistic, finish, covariance_type, max_iter) -> tuple:
    """(g, statistic, p-value, :class:`ReplicateStatistics`) of a started test; an error
    where every replicate failed, a warning where some failed or stopped at max_iter."""
    replicates = replicate_statistics(finish())
    n_boot = replicates.statistics.size
    if replicates.n_failed == n_boot:
        raise ValueError(
            f"Every one of the {n_boot} bootstrap replicates of the test of {g} "
            f"against {g + 1} components failed (a covariance became singular): the "
            f"{covariance_type} model with {g + 1} components cannot be fitted to "
            f"data like X; increase reg_covar, or test fewer components."
        )
    if replicates.n_failed or replicates.n_not_converged:
        warnings.warn(
            f"test of {g} against {g + 1} components: {replicates.n_failed} of "
            f"{n_boot} replicates failed (left out of the p-value) and "
            f"{replicates.n_not_converged} stopped at max_iter = {max_iter} "
            "(kept); increase max_iter or reg_covar.",
            UserWarning,
            stacklevel=3,
        )
    return g, statistic, bootstrap_p_value(statistic, replicates.statistics), replicates


def bootstrap_likelihood_ratio(
    X: ArrayLike,
    covariance_type: str = "VVV",
    *,
    max_components: int | None = None,
    n_boot: int = 999,
    level: float = 0.05,
    tol: float = 1e-5,
    reg_covar: float = 0.0,
    max_iter: int = 1000,
    n_init: int = 5,
    init_params: str = "kmeans",
    random_state=None,
    refit_negative: bool = False,
    batch_size: int | None = None,
) -> BootstrapLRT:
    """The number of mixture components by bootstrap likelihood-ratio tests of g against
    g + 1 components (mclust's ``mclustBootstrapLRT``; see the module's docstring).

    Args:
        X: (N, D) data.
        covariance_type: one of mclust's 14 models ("EII" ... "VVV") or "full", "tied",
            "diag", "spherical"; the same model under H0 and H1.
        max_components: G: test every g = 1 .. G against g + 1 (fits up to G + 1
            components, needs N > G). None: sequential, stop at the first p-value above
            ``level`` (at most 8 against 9, mclust's default).
        n_boot: bootstrap replicates per test (mclust's ``nboot``).
        level: the level of each test (mclust's ``level``), in (0, 1).
        tol: EM's relative convergence tolerance, mclust's (``emControl(tol)``): a fit
            stops when the total log-likelihood changes by less than
            ``tol * (1 + |log L|)``, for the observed and the replicate fits.
        reg_covar: added to the diagonal of every covariance; 0, mclust's (which has
            no regularization without a prior).
        max_iter: EM iterations at most per fit.
        n_init, init_params: restarts and start of the observed fits, as
            :class:`gaussmix.GaussianMixture`'s.
        random_state: None, an int or a NumPy random state: seeds the observed fits and
            the replicates.
        refit_negative: where a replicate's (g + 1)-component fit fails or ends below
            its g-component fit, fit it again from the g fit's heaviest component split
            in two and keep the better (the module's docstring). False: mclust's
            procedure (the statistic is clipped at 0, the failure left out).
        batch_size: replicates per compiled call (default: as many as fit in
            :data:`BATCH_BYTES` of data); the answer does not depend on it.

    Returns:
        :class:`BootstrapLRT`.

    Raises:
        ValueError: bad input (NaN, too few rows for G + 1 components, ``n_boot < 1``, a
            level outside (0, 1), an unknown model), an observed fit that fails (with
            EM's message), or a test whose replicates all failed.
    """
    check_em_covariance_type(covariance_type)
    n_boot = _check_int("n_boot", n_boot, 1)
    if not isinstance(level, float | int) or not 0 < level < 1:
        raise ValueError(f"Invalid value for 'level': {level!r}; it must be in (0, 1).")
    for name, value in (("tol", tol), ("reg_covar", reg_covar)):
        if not isinstance(value, float | int) or not np.isfinite(value) or value < 0:
            raise ValueError(
                f"Invalid value for '{name}': {value!r}; it must be a finite number >= 0."
            )
    if batch_size is not None:
        _check_int("batch_size", batch_size, 1)
    data = validate_data(GaussianMixture(), X, reset=True, ensure_min_samples=2)
    n_samples = data.shape[0]
    sequential = max_components is None
    if sequential:
        largest = min(SEQUENTIAL_LIMIT - 1, n_samples - 1)
    else:
        largest = _check_int("max_components", max_components, 1)
        if largest + 1 > n_samples:
            raise ValueError(
                f"max_components = {largest} tests {largest} against {largest + 1} "
                f"components, more than the {n_samples} rows of X; use max_components "
                f"<= {n_samples - 1}."
            )
    seed = seed_from_random_state(random_state)
    key = em.key_of(seed)
    layout = covariance_layout(covariance_type)
    options = {
        "covariance_type": covariance_type,
        "tol": tol,
        "reg_covar": reg_covar,
        "max_iter": max_iter,
        "n_init": n_init,
        "init_params": init_params,
        "random_state": seed,
    }

    def fit(n_components, **inits):
        estimator = GaussianMixture(n_components, **{**options, **inits}).fit(data)
        log_likelihood = float(np.sum(estimator.score_samples(data)))
        return _parameters_of(estimator), log_likelihood

    # mclust's relative tolerance as GaussianMixture's absolute one on the mean
    single = sweep.single_gaussian_log_likelihood(data, layout, reg_covar)
    options["tol"] = tol * (1.0 / n_samples + abs(single) / n_samples)
    observed_options = {
        "covariance_type": canonical_covariance_type(covariance_type),
        "counts": tuple(range(1, largest + 2)),
        "tol": options["tol"],
        "reg_covar": reg_covar,
        "max_iter": max_iter,
        "n_init": n_init,
        "seed": seed,
    }
    # a thread loads the observed fits' and the replicates' programs while k-means, the
    # observed fits and the first tests run (every test of a given G; the first two of a
    # sequential test, which may stop there)
    ready = [threading.Event() for _ in range(largest + 1)]
    preload = threading.Thread(
        target=_preload,
        args=(
            data,
            observed_options if init_params == "kmeans" else None,
            range(1, min(largest, 2) + 1) if sequential else range(1, largest + 1),
            key,
            ready,
            jax.config.jax_enable_x64,
        ),
        kwargs={
            "covariance_type": covariance_type,
            "n_samples": n_samples,
            "n_boot": n_boot,
            "max_iter": max_iter,
            "batch_size": batch_size,
            "refit_negative": refit_negative,
        },
        daemon=True,
    )
    preload.start()
    observed = None
    if init_params == "kmeans":  # every K in one program
        observed = sweep.fit_sweep(data, ready=ready[0], **observed_options)
    fits = [observed[0] if observed else fit(1)]
    rows, started = [], []
    for g in range(1, largest + 1):
        null, log_likelihood0 = fits[-1]
        alternative, log_likelihood1 = observed[g] if observed else fit(g + 1)
        if log_likelihood1 < log_likelihood0:  # a poor local optimum: start from a split
            split = split_heaviest(jax.tree.map(jnp.asarray, null), layout)
            split_fit = fit(
                g + 1,
                n_init=1,
                weights_init=np.asarray(split.weights),
                means_init=np.asarray(split.means),
                precisions_init=_precisions_of(split, layout),
            )
            alternative, log_likelihood1 = max(
                (alternative, log_likelihood1), split_fit, key=lambda pair: pair[1]
            )
        fits.append((alternative, log_likelihood1))
        statistic = max(2.0 * (log_likelihood1 - log_likelihood0), 0.0)
        ready[g].wait()
        started.append(
            (
                g,
                statistic,
                _start_replicate_fits(
                    null,
                    alternative,
                    covariance_type=covariance_type,
                    n_samples=n_samples,
                    n_boot=n_boot,
                    key=key,
                    test=g,
                    tol=tol,
                    reg_covar=reg_covar,
                    max_iter=max_iter,
                    batch_size=batch_size,
                    refit_negative=refit_negative,
                ),
            )
        )
        # a sequential test needs each p-value before the next test; otherwise the next
        # test's replicates run while this one's finish (two tests in flight at most)
        if sequential or len(started) == 2:
            rows.append(_finished_test(*started.pop(0), covariance_type, max_iter))
            if sequential and rows[-1][2] > level:
                break
    rows.extend(_finished_test(*test, covariance_type, max_iter) for test in started)
    preload.join()
    selected = next((row[0] for row in rows if row[2] > level), rows[-1][0] + 1)
    replicate_rows = [row[3] for row in rows]
    return BootstrapLRT(
        n_components=np.array([row[0] for row in rows]),
        statistic=np.array([row[1] for row in rows]),
        p_value=np.array([row[2] for row in rows]),
        replicates=np.stack([r.statistics for r in replicate_rows]),
        n_failed=np.array([r.n_failed for r in replicate_rows]),
        n_refit=np.array([r.n_refit for r in replicate_rows]),
        n_clipped=np.array([r.n_clipped for r in replicate_rows]),
        n_not_converged=np.array([r.n_not_converged for r in replicate_rows]),
        log_likelihood=np.array([pair[1] for pair in fits]),
        selected=int(selected),
        covariance_type=covariance_type,
        n_boot=n_boot,
        level=float(level),
    )
