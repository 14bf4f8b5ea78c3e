"""Every candidate number of components of one covariance model in one compiled program
(mclust's BIC table, :func:`gaussmix.selection.select_components`).

A table of 14 models and K = 1..9 fitted one (model, K) at a time compiles (or loads
from the cache) 126 EM programs and 36 scoring programs of their own shapes: loading
them costs more than running them. Here the fits of all candidates K of one model run
in ONE program whose mixtures have :math:`K_{\\max}` components, those beyond K padding:

* a padding component has weight exactly 0, so :math:`\\log \\pi_k = -\\infty` in the
  E-step and its responsibilities are exactly 0 (statistics of zero);
* the M-step (:func:`gaussmix.inference.em.maximization_step` with ``mask``) gives it
  weight 0, mean 0 and the identity covariance, and leaves it out of every sum over
  components (a shared covariance, a common shape or orientation, the warm start of an
  iterative M-step): the other components are those of the K-component fit;

so each candidate's fit is the unpadded fit to rounding (the sums over components have
more, zero, terms; tested against the estimator cell by cell). The candidates run one
after another (``lax.map``), each EM to its own convergence; the restarts of each too,
the best by its lower bound, as :func:`gaussmix.inference.em.fit_em` runs them. Their
log-likelihoods (and ICL's assignment term) at the final parameters are a second
program keyed by the covariance layout only, which the models of a table share.

Starts are labels, an array argument: the k-means labels of every candidate and restart
(:func:`kmeans_labels`, one program for all K, the same k-means as ``fit_em``'s start)
or mclust's hierarchical clustering (computed on the host); the start is the M-step of
the one-hot labels, as ``fit_em``'s, the first pass of the EM loop (one M-step in the
program). Maximum likelihood only (no priors, no user starting values).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(m, 1.0, (100, 2)) for m in (-5, 5)])
    >>> config = CandidatesConfig(covariance_type="VII", n_components=(1, 2, 3),
    ...     max_iter=100, n_init=1, block_rows=200)
    >>> labels = kmeans_labels(x, np.ones(200), 0, n_components=(1, 2, 3), n_init=1)
    >>> fits = fit_candidates(x, np.ones(200), labels, tol=1e-3, reg_covar=1e-6,
    ...     config=config)
    >>> n_parameters = np.array([3.0, 7.0, 11.0])  # VII: 4K - 1
    >>> np.argmax(fits.log_likelihood - n_parameters * np.log(200) / 2).item()
    1
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gaussmix.inference import compilation
from gaussmix.inference.em.core import EMInfo, EMState, StepConfig, init, make_context
from gaussmix.inference.em.covariance_models import StartOrWarm
from gaussmix.inference.em.features import data_blocks, design_matrix
from gaussmix.inference.em.kmeans import kmeans_plusplus, lloyd
from gaussmix.inference.em.maximization import maximization_step
from gaussmix.inference.em.options import key_of
from gaussmix.inference.em.parameters import MixtureParameters, collapsed_components
from gaussmix.inference.em.statistics import (
    block_statistics,
    log_responsibilities,
    scan_statistics,
)
from gaussmix.models.priors import covariance_layout

__all__ = [
    "CandidateFits",
    "CandidatesConfig",
    "fit_candidates",
    "kmeans_labels",
    "preload_candidates",
    "start_candidates",
]


class CandidatesConfig(NamedTuple):
    """Static description of one compiled program (hashable, plain data).

    Attributes:
        covariance_type: the covariance model.
        n_components: the candidate K (a tuple of ints >= 1).
        max_iter: EM steps at most per fit.
        n_init: restarts per candidate.
        block_rows: rows per block of the E-step (data of one block computes its
            features once).
    """

    covariance_type: str
    n_components: tuple
    max_iter: int
    n_init: int
    block_rows: int


class CandidateFits(NamedTuple):
    """The fits of every candidate (leading axis: candidates), NumPy arrays.

    Attributes:
        log_likelihood: total (weighted) log-likelihood of the data at the final
            parameters (what ``score_samples`` sums).
        assignment: :math:`\\sum_n w_n \\log z_{n, \\hat k(n)}` (<= 0), the log
            responsibility of each point's most probable component (ICL's term).
        lower_bound: the best restart's lower bound (scikit-learn's ``lower_bound_``).
        converged: whether the best restart converged.
        n_iter: EM steps of the best restart.
        collapsed: (C, n_init) the first collapsed component of each restart, -1 if
            none; n_iters: (C, n_init) steps of each restart.
        parameters: the best restart's final :class:`MixtureParameters` of each
            candidate, padded to the largest K (candidate c's first K components are
            its fit; tied covariances are (C, D, D)).
    """

    log_likelihood: np.ndarray
    assignment: np.ndarray
    lower_bound: np.ndarray
    converged: np.ndarray
    n_iter: np.ndarray
    collapsed: np.ndarray
    n_iters: np.ndarray
    parameters: MixtureParameters


def _kmeans_labels(x, weight, key, n_components, n_init):
    """(C, R, N) int32 k-means labels of each candidate and restart: restart r of a fit
    seeded with ``key`` starts from ``fold_in(fold_in(key, 0), r)``'s k-means, as
    :func:`gaussmix.inference.em.fit_em` (its initialization's first split key)."""
    x = x - weight @ x / jnp.sum(weight)  # centred, as the fit's blocks
    dataset_key = jax.random.fold_in(key, 0)
    restart_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(dataset_key, jnp.arange(n_init))

    def of(count):
        def one(restart_key):
            seed_key, _ = jax.random.split(restart_key)
            centers, _ = kmeans_plusplus(x, count, key=seed_key, sample_weight=weight)
            return lloyd(x, centers, sample_weight=weight).labels.astype(jnp.int32)

        if n_init == 1:
            return one(restart_keys[0])[None]
        return lax.map(one, restart_keys)

    return jnp.stack([of(count) for count in n_components])


#: The k-means starts by work (points x features x candidate components x restarts).
_kmeans_labels_program_for = compilation.programs_by_optimization_level(
    _kmeans_labels, static_argnames=("n_components", "n_init")
)


def kmeans_labels(x, sample_weight, seed, *, n_components: tuple, n_init: int) -> np.ndarray:
    """(C, n_init, N) the k-means start of every candidate K and restart, one compiled
    program: the labels that :func:`gaussmix.inference.em.fit_em` (``init_params=
    "kmeans"``, ``seed``) starts from on data of one block.

    Args:
        x: (N, D) data. sample_weight: (N,) weights. seed: int or JAX key.
        n_components: the candidate K. n_init: restarts.
    """
    x = np.asarray(x)
    n_components = tuple(int(k) for k in n_components)
    work = x.size * sum(n_components) * int(n_init)
    return np.asarray(
        _kmeans_labels_program_for(work)(
            x,
            np.asarray(sample_weight, x.dtype),
            key_of(seed),
            n_components=n_components,
            n_init=int(n_init),
        )
    )


def _masked_step(state, statistics, context, config, mask, start):
    """:func:`gaussmix.inference.em.core.step` (maximum likelihood) of a padded mixture:
    the M-step leaves the padding components (mask False) out.

    ``start`` (a () bool array): ``statistics`` are those of the start labels, and the
    answer is the start, :func:`gaussmix.inference.em.core.init` of their M-step (the
    iterative M-steps started as without ``previous``, bit for bit). One M-step in the
    program for the start and the steps, instead of a copy for the start: an iterative
    M-step's loops are much of its program (VEE's 782 KB with the copy, 548 without;
    the 14-model table loads 5.6 -> 4.8 MB)."""
    bound = statistics.log_likelihood / statistics.total_weight
    parameters = maximization_step(
        statistics,
        covariance_type=config.covariance_type,
        centre=context.centre,
        reg_covar=context.reg_covar,
        previous=StartOrWarm(state.parameters.covariances, start),
        mask=mask,
    )
    collapsed = collapsed_components(parameters, config.covariance_type) & mask
    change = bound - state.lower_bound
    info = EMInfo(
        lower_bound=bound,
        change=change,
        converged=jnp.abs(change) < context.tol,
        collapsed_component=jnp.where(jnp.any(collapsed), jnp.argmax(collapsed), -1).astype(
            jnp.int32
        ),
    )
    stepped = EMState(parameters, bound, state.n_iter + 1), info
    started = init(parameters), _start_info(bound.dtype)
    return jax.tree.map(lambda first, then: jnp.where(start, first, then), started, stepped)


def _start_info(dtype) -> EMInfo:
    """The information of the start (before the first EM step)."""
    return EMInfo(
        lower_bound=jnp.full((), -jnp.inf, dtype),
        change=jnp.full((), jnp.inf, dtype),
        converged=jnp.array(False),
        collapsed_component=jnp.full((), -1, jnp.int32),
    )


def _fit_candidates(x, weight, labels, tol, reg_covar, config: CandidatesConfig):
    layout = covariance_layout(config.covariance_type)
    largest = max(config.n_components)
    n_rows = x.shape[0]
    step_config = StepConfig(largest, config.covariance_type)
    blocks = data_blocks(
        x, weight, config.block_rows, layout, cache_design=config.block_rows == n_rows
    )
    context = make_context(step_config, centre=blocks.centre, reg_covar=reg_covar, tol=tol)
    block_rows = blocks.x.shape[1]
    padding = blocks.x.shape[0] * block_rows - n_rows
    design = jnp.arange(largest)

    def one_restart(mask, start_labels):
        label_blocks = jnp.pad(start_labels, (0, padding), constant_values=-1).reshape(
            -1, block_rows
        )

        def responsibility_fn(index, x_block, features):
            resp = (label_blocks[index][:, None] == design).astype(x.dtype)
            norm = jnp.zeros(x_block.shape[0], x.dtype)
            if features is None:
                features = design_matrix(x_block, layout)
            return norm, resp, jnp.ones_like(norm), features

        def label_statistics(parameters):
            del parameters
            return scan_statistics(blocks, responsibility_fn, largest, layout)

        def parameter_statistics(parameters):
            return block_statistics(parameters, blocks, layout)

        def cond(carry):
            state, info, start = carry
            return start | (
                (state.n_iter < config.max_iter) & ~info.converged & (info.collapsed_component < 0)
            )

        def body(carry):
            state, _, start = carry
            # the first pass: the start, the M-step of the labels' one-hot statistics
            statistics = lax.cond(start, label_statistics, parameter_statistics, state.parameters)
            state, info = _masked_step(state, statistics, context, step_config, mask, start)
            return state, info, jnp.array(False)

        # the first pass replaces these placeholders (zeros of the M-step's shapes)
        shapes = jax.eval_shape(
            lambda: maximization_step(
                label_statistics(None),
                covariance_type=config.covariance_type,
                centre=context.centre,
                reg_covar=context.reg_covar,
                mask=mask,
            )
        )
        placeholder = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), shapes)
        carry = (init(placeholder), _start_info(x.dtype), jnp.array(True))
        state, info, _ = lax.while_loop(cond, body, carry)
        return state, info

    def one_candidate(inputs):
        count, restart_labels = inputs
        mask = jnp.arange(largest) < count
        if config.n_init == 1:
            states, infos = jax.tree.map(
                lambda leaf: leaf[None], one_restart(mask, restart_labels[0])
            )
        else:
            states, infos = lax.map(lambda lab: one_restart(mask, lab), restart_labels)
        best = 0 if config.n_init == 1 else jnp.argmax(states.lower_bound)
        state, info = jax.tree.map(lambda leaf: leaf[best], (states, infos))
        return (
            state.lower_bound,
            info.converged,
            state.n_iter,
            infos.collapsed_component,
            states.n_iter,
            state.parameters,
        )

    counts = jnp.asarray(config.n_components, jnp.int32)
    return lax.map(one_candidate, (counts, labels))


def _score_candidates(x, weight, weights, means, factor, layout: str):
    """(C,) each candidate's total log-likelihood :math:`\\sum_n w_n \\log p(x_n)` and
    ICL's :math:`\\sum_n w_n \\log z_{n, \\hat k(n)}` at its final parameters (padded:
    the padding's weight 0 gives it no responsibility).

    A program of its own, keyed by the covariance layout (full, tied, diag, spherical),
    not the model: the 14 models of a table share 4 of them, instead of each EM
    program carrying its own copy of this E-step (a quarter of a full-covariance EM
    program's code, loaded and compiled 14 times)."""

    def one(parameters):
        component_weights, component_means, component_factor = parameters
        norm, log_resp = log_responsibilities(
            x, component_weights, component_means, component_factor, layout
        )
        largest_resp = jnp.minimum(jnp.max(log_resp, axis=1), 0.0)  # z <= 1
        return jnp.sum(weight * norm), jnp.sum(weight * largest_resp)

    return lax.map(one, (weights, means, factor))


#: As :func:`gaussmix.inference.em.fit_em`'s programs, by work (rows x features x K).
_program_for = compilation.programs_by_optimization_level(
    _fit_candidates, static_argnames=("config",)
)
_score_program_for = compilation.programs_by_optimization_level(
    _score_candidates, static_argnames=("layout",)
)


def fit_candidates(
    x, sample_weight, labels, *, tol: float, reg_covar: float, config: CandidatesConfig
) -> CandidateFits:
    """EM (maximum likelihood) of every candidate K of one model in one compiled call.

    Args:
        x: (N, D) float data (checked by the caller).
        sample_weight: (N,) non-negative weights.
        labels: (C, n_init, N) int start labels 0..K-1 of each candidate and restart
            (:func:`kmeans_labels`, or mclust's hierarchical start).
        tol: convergence threshold on the change of the lower bound (the mean
            log-likelihood). reg_covar: added to every covariance's diagonal.
        config: :class:`CandidatesConfig`.

    Returns:
        :class:`CandidateFits`.
    """
    return start_candidates(x, sample_weight, labels, tol=tol, reg_covar=reg_covar, config=config)()


def preload_candidates(
    x, sample_weight, *, tol: float, reg_covar: float, config: CandidatesConfig
) -> None:
    """Load (or compile) the two programs of :func:`fit_candidates` (same arguments but
    the labels) and hold them, without running them: mostly outside Python's lock, so
    that a thread can load a table's programs while mclust's hierarchical clustering
    computes their start."""
    x = np.asarray(x)
    dtype = x.dtype
    work = x.shape[0] * x.shape[1] ** 2 * max(config.n_components)
    weight = np.asarray(sample_weight, dtype)
    labels = np.zeros((len(config.n_components), config.n_init, x.shape[0]), np.int32)
    program = _program_for(work).preload(
        x, weight, labels, np.asarray(tol, dtype), np.asarray(reg_covar, dtype), config=config
    )
    if program is None:
        return
    final_weights, final_means, _, final_factor = program.out_info[-1]
    _score_program_for(work).preload(
        x,
        weight,
        *(np.zeros(leaf.shape, leaf.dtype) for leaf in (final_weights, final_means, final_factor)),
        layout=covariance_layout(config.covariance_type),
    )


def start_candidates(
    x, sample_weight, labels, *, tol: float, reg_covar: float, config: CandidatesConfig
) -> Callable[[], CandidateFits]:
    """:func:`fit_candidates` (same arguments) started: its two programs are loaded and
    dispatched, and XLA runs them on its own threads, without Python's lock, while the
    caller goes on; ``finish()`` waits for them and answers the :class:`CandidateFits`.
    A table starts every model's fit before it waits for the first, so that loading the
    next model's program overlaps this one's EM."""
    x = np.asarray(x)
    dtype = x.dtype
    labels = np.asarray(labels, np.int32)
    expected = (len(config.n_components), config.n_init, x.shape[0])
    if labels.shape != expected:
        raise ValueError(f"labels has shape {labels.shape}; expected {expected}.")
    work = x.shape[0] * x.shape[1] ** 2 * max(config.n_components)
    weight = np.asarray(sample_weight, dtype)
    *fits, parameters = _program_for(work)(
        x, weight, labels, np.asarray(tol, dtype), np.asarray(reg_covar, dtype), config=config
    )
    final_weights, final_means, _, final_factor = parameters
    log_likelihood, assignment = _score_program_for(work)(
        x,
        weight,
        final_weights,
        final_means,
        final_factor,
        layout=covariance_layout(config.covariance_type),
    )

    def finish() -> CandidateFits:
        return CandidateFits(
            np.asarray(log_likelihood),
            np.asarray(assignment),
            *(np.asarray(output) for output in fits),
            parameters=MixtureParameters(*(np.asarray(leaf) for leaf in parameters)),
        )

    return finish
