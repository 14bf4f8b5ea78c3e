"""Many spectra through one compiled loop of
:func:`~gaussmix.inference.map.levenberg_marquardt.map_step`, on one device or split over several.

One ``jax.jit`` around a ``lax.while_loop``. Spectra are fitted in ``n_slots`` slots
(``vmap``): a slot whose spectrum has finished takes the next one, so a spectrum needing
many iterations holds up nothing. The loop holds only the Levenberg-Marquardt steps: each
spectrum's priors are read from the program before it, and its covariance and
log-likelihood (:func:`finish`) computed after it. A second call with the same shapes and
static arguments does not recompile.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from gaussmix.inference import compilation
from gaussmix.inference.map.closed_form import registered_function
from gaussmix.inference.map.levenberg_marquardt import (
    MAPInfo,
    MAPSettings,
    MAPState,
    inverse_positive_definite,
    map_init,
    map_propose,
)
from gaussmix.inference.map.problem import (
    MAPProblem,
    batch_problems,
    stack_for_xla,
    vmap_unless_one,
)
from gaussmix.inference.map.trees import canonical, plain

__all__ = ["BatchOutputs", "Finished", "finish", "fit_batch", "packed_record"]


class Finished(NamedTuple):
    """What :func:`finish` reads of a finished spectrum (all a batch keeps of it).

    Attributes:
        params, noise, curvature, prior_hessian, log_prior, rss, n_points, decrement:
            those of the last accepted
            :class:`~gaussmix.inference.map.levenberg_marquardt.MAPPoint`.
        n_iter: trial steps used.
        converged, started, support: from the last
            :class:`~gaussmix.inference.map.levenberg_marquardt.MAPInfo`.
    """

    params: jax.Array
    noise: jax.Array
    curvature: jax.Array
    prior_hessian: jax.Array
    log_prior: jax.Array
    rss: jax.Array
    n_points: jax.Array
    decrement: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    started: jax.Array
    support: jax.Array

    @classmethod
    def from_step(cls, state: MAPState, info: MAPInfo) -> "Finished":
        """The record of a state and of the info of its last step."""
        point = state.point
        return cls(
            params=point.params,
            noise=point.noise,
            curvature=point.curvature,
            prior_hessian=point.prior_hessian,
            log_prior=point.log_prior,
            rss=point.rss,
            n_points=point.n_points,
            decrement=point.decrement,
            n_iter=state.n_iter,
            converged=info.converged,
            started=info.started,
            support=info.support,
        )


def ravel_for_xla(tree) -> jax.Array:
    """``ravel_pytree(tree)[0]``, its runs of scalar leaves stacked by
    ``problem.stack_for_xla`` (the priors of a spectrum are dozens of scalars)."""
    leaves = jax.tree.leaves(tree)
    dtype = ravel_pytree(tree)[0].dtype
    parts, run = [], []
    for leaf in leaves:
        leaf = jnp.asarray(leaf).astype(dtype)
        if leaf.ndim == 0:
            run.append(leaf)
            continue
        if run:
            parts.append(stack_for_xla(run))
            run = []
        parts.append(jnp.ravel(leaf))
    if run:
        parts.append(stack_for_xla(run))
    return jnp.concatenate(parts)


def packed_record(state: MAPState) -> Callable[[jax.Array, MAPInfo], jax.Array]:
    """``record(packed_state, info)``: ``ravel_pytree(Finished.from_step(state, info))[0]``
    from the raveled state, by one gather from it (the record's fields raveled anew cost
    XLA CPU a kernel each). ``state`` gives the shapes only.
    """
    # The record's fields from the state first, then the three from the info.
    assert Finished._fields[-3:] == ("converged", "started", "support")
    leaves, structure = jax.tree.flatten(state)
    offsets = np.cumsum([0] + [int(np.size(leaf)) for leaf in leaves])
    no_info = MAPInfo(*(None,) * 5)
    marked = Finished.from_step(jax.tree.unflatten(structure, range(len(leaves))), no_info)
    from_state = np.concatenate(
        [np.arange(offsets[leaf], offsets[leaf + 1]) for leaf in marked[:-3]]
    ).astype(np.int32)

    def record(packed_state: jax.Array, info: MAPInfo) -> jax.Array:
        flags = jnp.concatenate([info.converged[None], info.started[None], info.support])
        # Indices XLA cannot see: a gather with constant indices, unbatched, is rewritten
        # as a slice per run of them and a concatenate, a kernel each.
        indices = lax.optimization_barrier(jnp.asarray(from_state))
        return jnp.concatenate([packed_state[indices], flags.astype(packed_state.dtype)])

    return record


class BatchOutputs(NamedTuple):
    """Per spectrum results of :func:`fit_batch`, each with a leading (B,) axis.

    Attributes:
        theta: (B, P) curve parameters at the MAP.
        noise: (B,) noise scale.
        covariance: (B, P, P) Laplace covariance of theta.
        objective: negative log posterior at the MAP.
        log_likelihood: log-likelihood at the MAP.
        rss: residual sum of squares.
        n_points: unmasked points.
        decrement: Newton decrement at the MAP.
        converged: convergence flag (and finite objective, rss and covariance).
        n_iter: trial steps used.
        support: (B, n_sites) whether each site's start lay in its prior support.
        started: whether the start had a finite objective, gradient and curvature.
    """

    theta: jax.Array
    noise: jax.Array
    covariance: jax.Array
    objective: jax.Array
    log_likelihood: jax.Array
    rss: jax.Array
    n_points: jax.Array
    decrement: jax.Array
    converged: jax.Array
    n_iter: jax.Array
    support: jax.Array
    started: jax.Array

    @classmethod
    def from_rows(cls, rows, n_params: int, n_sites: int) -> "BatchOutputs":
        """The outputs from the (B, K) rows of :func:`finish` (NumPy or JAX arrays: the
        fields are slices of them, and no program runs for NumPy rows)."""
        shapes = {"theta": (n_params,), "covariance": (n_params, n_params), "support": (n_sites,)}
        fields, begin = {}, 0
        for name in _ROW_FIELDS:
            shape = shapes.get(name, ())
            end = begin + int(np.prod(shape))
            field = rows[:, begin:end].reshape(rows.shape[0], *shape)
            if name == "n_iter":
                field = field.astype(np.int32)
            elif name in ("converged", "support", "started"):
                field = field > 0
            fields[name], begin = field, end
        return cls(**fields)


#: The order of :func:`finish`'s row: the fields a failed start leaves unknown (NaN) first.
_ROW_FIELDS = (
    "theta", "noise", "covariance", "objective", "log_likelihood", "rss", "decrement",
    "n_points", "converged", "n_iter", "support", "started",
)  # fmt: skip


def finish(problem: MAPProblem, state: Finished) -> jax.Array:
    """The results of a finished spectrum as one row (:meth:`BatchOutputs.from_rows`
    names its fields): the Laplace covariance from its curvature, and the log-likelihood
    at the MAP (evaluated here once rather than at every step).

    A spectrum that failed at its start gives NaN for all it could not compute; one whose
    optimum has a non-finite objective, rss or covariance is not converged. One row, made
    NaN by one select: XLA CPU compiles each output of a program, and each select of one,
    as a kernel of its own (the single-spectrum fit had a dozen for these fields).
    """
    unit = problem.unit(state.noise)
    if problem.family.name == "normal" and problem.has_noise:
        # curve_fit's pcov: J^T J over the residual variance s^2 = RSS / (n - p), written
        # s^2 (J^T J - s^2 prior Hessian)^{-1} so that a perfect fit (s^2 = 0) gives zeros.
        gram = state.curvature + unit * state.prior_hessian
        dof = jnp.maximum(state.n_points - state.params.shape[0], 1.0)
        variance = state.rss / dof
        covariance = variance * inverse_positive_definite(gram - variance * state.prior_hessian)
    else:
        covariance = inverse_positive_definite(state.curvature / unit)
    evaluation = problem.observe(state.params, state.noise)
    log_likelihood = problem.log_likelihood(evaluation, state.noise)
    objective = (
        -log_likelihood - state.log_prior - problem.noise_log_prior(state.params, state.noise)
    )
    started = state.started
    finite = (
        jnp.isfinite(objective)
        & jnp.isfinite(state.rss)
        & jnp.all(jnp.isfinite(state.params))
        & jnp.all(jnp.isfinite(covariance))
    )
    dtype = state.params.dtype
    scalars = [objective, log_likelihood, state.rss, state.decrement]
    computed = jnp.concatenate(
        [state.params, state.noise[None], covariance.ravel(), jnp.stack(scalars).astype(dtype)]
    )
    flags = [jnp.sum(evaluation.mask), state.converged & started & finite, state.n_iter]
    return jnp.concatenate(
        [
            jnp.where(started, computed, jnp.nan),
            jnp.stack([flag.astype(dtype) for flag in flags]),
            state.support.astype(dtype),
            started.astype(dtype)[None],
        ]
    )


def _fit_batch(
    model, sites, observed, family, closed_form, n_slots,
    x, y, mask, active, theta, noise, model_kwargs, settings,
):  # fmt: skip
    """Fit the ``active`` ones of B spectra through ``n_slots`` slots iterated together;
    finished slots refill. The other spectra come back as unfitted zeros.

    ``closed_form`` (static) is what is registered for the program when the fit is called
    (:func:`~gaussmix.inference.map.closed_form.registered_function`: its location and
    Jacobian, priors and observed site), or None: the problem follows the registry as it
    is traced, and this argument keys the compiled program (in memory and on disk) by it,
    so that a fit after registering one compiles the closed-form program instead of
    reusing the traced one.

    Per spectrum and outside the loop: the priors (read from the program once, before)
    and the covariance and log-likelihood (:func:`finish`, once, after); inside it only
    Levenberg-Marquardt steps, and the gathers and scatters that move spectra in and out
    of the slots.
    """
    n_spectra = y.shape[0]
    model_kwargs = plain(model_kwargs)

    problem_for, priors = batch_problems(
        model, sites, observed, family, x, model_kwargs, theta, noise, y, mask
    )
    # The active spectra first, in their order; slots visit order[:n_active].
    order = jnp.argsort(~active, stable=True).astype(jnp.int32)
    n_active = jnp.sum(active, dtype=jnp.int32)

    # Each slot's spectrum (y, mask, priors) and state travel as one flat row each, and
    # the finished spectra as one (B, F) array: one gather, select or scatter per step
    # moves them all (a separate one per leaf made XLA compile hundreds of small kernels).
    first = jax.tree.map(lambda leaf: leaf[0], (y, mask, priors))
    _, unpack_data = ravel_pytree(first)
    data = vmap_unless_one(lambda *row: ravel_for_xla(row))(y, mask, priors)
    first_state = map_init(theta[0], noise[0], problem_for(first[0], first[1]))
    _, unpack_state = ravel_pytree(first_state)
    n_sites = len(sites.names)
    no_info = MAPInfo(*(jnp.zeros((), bool),) * 4, jnp.zeros((n_sites,), bool))
    _, unpack_finished = ravel_pytree(Finished.from_step(first_state, no_info))

    def pack(tree):
        return ravel_pytree(tree)[0]

    # A fresh packed state is a constant (map_init's zeros, inf and True, folded by XLA)
    # plus the start's (theta, noise), which ravel first: one fused kernel per refill,
    # not a broadcast per field of the state.
    fresh_template = pack(
        map_init(
            jnp.zeros_like(theta[0]), jnp.zeros_like(noise[0]), problem_for(first[0], first[1])
        )
    )
    n_start = theta.shape[1] + 1

    def start(index):
        values = jnp.concatenate([theta[index], noise[index][None]])
        return fresh_template + jnp.pad(values, (0, fresh_template.shape[0] - n_start))

    class Slots(NamedTuple):
        index: jax.Array  # (S,) spectrum index, -1 when empty
        state: jax.Array  # (S, K) packed MAPState
        data: jax.Array  # (S, D) packed (y, mask, priors)

    class Carry(NamedTuple):
        slots: Slots
        next_index: jax.Array
        finals: jax.Array  # (B, F) packed Finished records

    def refill(carry: Carry) -> Carry:
        slots = carry.slots
        empty = slots.index < 0
        rank = jnp.cumsum(empty, dtype=jnp.int32) - 1
        candidate = carry.next_index + rank
        take = empty & (candidate < n_active)
        candidate = order[jnp.clip(candidate, 0, n_spectra - 1)]
        merged = Slots(
            jnp.where(take, candidate, slots.index),
            jnp.where(take[:, None], vmap_unless_one(start)(candidate), slots.state),
            jnp.where(take[:, None], data[candidate], slots.data),
        )
        n_taken = jnp.sum(take, dtype=jnp.int32)
        return carry._replace(slots=merged, next_index=carry.next_index + n_taken)

    record_of = packed_record(first_state)
    # The point leads the raveled state (MAPState's first field): the step's trial point
    # is kept or the current one restored there, by one select over the raveled states
    # (map_step's select per field of the point compiles a kernel each).
    assert MAPState._fields[0] == "point"
    state_size, point_size = (
        sum(int(np.size(leaf)) for leaf in jax.tree.leaves(tree))
        for tree in (first_state, first_state.point)
    )
    in_point = np.arange(state_size) < point_size

    def one(packed_state, packed_data):
        y_one, mask_one, priors_one = unpack_data(packed_data)
        proposed, info = map_propose(
            unpack_state(packed_state), problem_for(y_one, mask_one, priors_one), settings
        )
        packed = jnp.where(in_point & ~info.accepted, packed_state, pack(proposed))
        return packed, record_of(packed, info), info.done

    n_slots = min(n_slots, n_spectra)
    # Every spectrum has a slot of its own (a single spectrum, a small batch): the slots
    # are filled once, before the loop, and the loop holds no refill (a conditional and
    # its gathers, a tenth of the single-spectrum program's kernels).
    refills = n_slots < n_spectra

    def body(carry: Carry) -> Carry:
        if refills:
            carry = lax.cond(jnp.any(carry.slots.index < 0), refill, lambda carry: carry, carry)
        slots = carry.slots
        state, record, done = vmap_unless_one(one)(slots.state, slots.data)
        done = (slots.index >= 0) & done
        target = jnp.where(done, slots.index, jnp.int32(n_spectra))
        finals = carry.finals.at[target].set(record, mode="drop")
        index = jnp.where(done, jnp.int32(-1), slots.index)
        return carry._replace(slots=Slots(index, state, slots.data), finals=finals)

    def running(carry: Carry) -> jax.Array:
        return (carry.next_index < n_active) | jnp.any(carry.slots.index >= 0)

    # Empty slots hold zeros until the first refill fills them (a packed start of their
    # own cost XLA a kernel per field); a slot no spectrum fills steps on them, unread.
    slots = Slots(
        jnp.full((n_slots,), -1, jnp.int32),
        jnp.zeros((n_slots, state_size), data.dtype),
        jnp.zeros((n_slots, data.shape[1]), data.dtype),
    )
    record_size = pack(Finished.from_step(first_state, no_info)).shape[0]
    finals = jnp.zeros((n_spectra, record_size), data.dtype)
    carry = Carry(slots, jnp.asarray(0, jnp.int32), finals)
    if not refills:
        carry = refill(carry)
    finals = lax.while_loop(running, body, carry).finals

    def finish_one(record, y_one, mask_one, priors_one):
        return finish(problem_for(y_one, mask_one, priors_one), unpack_finished(record))

    return vmap_unless_one(finish_one)(finals, y, mask, priors)


#: The compiled fit for a batch of this work (spectra x points x curve parameters): XLA's
#: LLVM optimizations off below 1e6 (a spectrum or a few dozen), where compiling, not
#: running, is the cost (the first single-spectrum fit compiles in 0.9 s instead of 1.3 s;
#: 2 000 P3 spectra run 4x slower at level 0, as fast at level 1).
_fit_batch_program_for = compilation.programs_by_optimization_level(
    _fit_batch,
    static_argnames=("model", "sites", "observed", "family", "closed_form", "n_slots"),
)

#: Compiled multi-device fits by (static arguments, mask given, devices).
_SHARDED_FITS: dict[tuple, Callable] = {}


def _fit_batch_sharded(
    devices, model, sites, observed, family, closed_form, n_slots, x, y, mask, *rest
):
    """:func:`_fit_batch` with the spectra split over ``devices``
    (:func:`gaussmix.inference.shard.shard_batch`): each device runs its own slots and
    loop over its share, so none waits for another's slowest spectrum."""
    from gaussmix.inference.shard import BATCH_AXIS, device_mesh, shard_batch

    mesh = device_mesh(devices, axis_name=BATCH_AXIS)
    statics = (model, sites, observed, family, closed_form, n_slots)
    key = (*statics, mask is None, tuple(mesh.devices.flat))
    if key not in _SHARDED_FITS:
        batch = functools.partial(_fit_batch, *statics)
        in_axes = (None, 0, None if mask is None else 0, 0, 0, 0, None, None)
        _SHARDED_FITS[key] = shard_batch(batch, devices=mesh, in_axes=in_axes)
    return _SHARDED_FITS[key](x, y, mask, *rest)


def fit_batch(
    devices: int | Sequence[jax.Device] | Any | None,
    model: Callable,
    sites,
    observed: str,
    family,
    n_slots: int,
    x: jax.Array,
    y: jax.Array,
    mask: jax.Array | None,
    active: Any,
    theta: jax.Array,
    noise: jax.Array,
    model_kwargs: dict,
    settings: MAPSettings,
) -> BatchOutputs:
    """MAP fits of the ``active`` spectra of a batch, compiled once per static arguments.

    Args:
        devices: None (one device, the default one) or what
            :func:`gaussmix.inference.shard.device_mesh` takes: the spectra are then
            split over the devices, each running its own loop.
        model: the NumPyro program (static: the same function object reuses the
            compilation).
        sites: its :class:`~gaussmix.inference.map.problem.Sites` (static).
        observed: the observed site's name (static).
        family: its :class:`~gaussmix.inference.map.families.ObservationFamily` (static).
        n_slots: spectra iterated together per device (static).
        x: (M,) abscissae.
        y: (B, M) spectra (0 where masked).
        mask: (B, M) booleans or None.
        active: (B,) booleans: the spectra to fit; the others come back as zeros.
        theta: (B, P) starting curve parameters.
        noise: (B,) starting noise scales.
        model_kwargs: further keyword arguments of the program (traced).
        settings: the stopping rules (arrays: new values compile nothing new).

    Returns:
        :class:`BatchOutputs`.
    """
    arguments = (
        model, sites, observed, family, registered_function(model), n_slots,
        x, y, mask, active, theta, noise, canonical(model_kwargs), settings,
    )  # fmt: skip
    if devices is None:
        # The rows to the host, their fields sliced there (NumPy: no program).
        rows = np.asarray(_fit_batch_program_for(y.size * theta.shape[-1])(*arguments))
    else:
        rows = _fit_batch_sharded(devices, *arguments)
    return BatchOutputs.from_rows(rows, theta.shape[-1], len(sites.names))
