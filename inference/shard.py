"""EM over several devices and processes, and batches spread over devices, with JAX's
own runtime (``jax.sharding``, ``jax.shard_map``, ``jax.distributed``).

Multi-device EM (:func:`fit_em_sharded`). The rows are split over a one-axis device mesh
(``NamedSharding`` with ``PartitionSpec("rows")``); every device computes the
statistics of its rows with :func:`gaussmix.inference.em.sufficient_statistics` and one
collective adds them,

.. math::

    S = \\operatorname{psum}_{d}\\, \\hat S_d(\\theta),

after which every device runs the same M-step. One ``jax.jit`` holds the whole fit (the
``lax.while_loop`` over iterations, the restarts); the answer is
:func:`gaussmix.inference.em.fit_em`'s up to the order of floating-point sums.

Multi-process. After ``jax.distributed.initialize(coordinator_address, num_processes,
process_id)`` the mesh spans the devices of all processes; each process passes only the
rows it holds (``x`` is process-local) and gets the same global answer. On CPU the
collectives go through Gloo (``jax_cpu_collectives_implementation``, the default of this
JAX).

Batches (:func:`shard_batch`): a function that maps a batch to a batch (a vmapped peak fit,
a set of MCMC chains) runs with its leading axis split over devices, each device working
through its share independently (``shard_map``), so a device does not wait for the
slowest member of another device's share.

On CPU, create several devices before JAX starts, e.g. in the shell
``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.typing import ArrayLike

from gaussmix.inference.em import background, deconvolution, missing
from gaussmix.inference.em.core import StepConfig, init, iterate
from gaussmix.inference.em.options import DEFAULT_INIT_ROWS, EMOptions, check_options
from gaussmix.inference.em.results import EMResult, best_restart
from gaussmix.inference.em.statistics import sufficient_statistics
from gaussmix.inference.streaming.chunks import pad_rows, prepare_chunk
from gaussmix.inference.streaming.processes import process_gather
from gaussmix.inference.streaming.survey import (
    initial_parameters,
    survey_context,
    survey_with_rows,
)
from gaussmix.models.priors import covariance_layout

__all__ = ["BATCH_AXIS", "ROW_AXIS", "device_mesh", "fit_em_sharded", "shard_batch"]

#: Mesh axis the rows of :func:`fit_em_sharded` are split over.
ROW_AXIS = "rows"
#: Mesh axis the leading batch axis of :func:`shard_batch` is split over.
BATCH_AXIS = "batch"


def device_mesh(
    devices: int | Sequence[jax.Device] | Mesh | None = None, *, axis_name: str = ROW_AXIS
) -> Mesh:
    """A one-axis mesh of devices.

    Args:
        devices: None (all devices of all processes), an int n (the first n of
            ``jax.devices()``), a sequence of devices, or a one-axis ``Mesh`` (renamed to
            ``axis_name``).
        axis_name: name of the mesh axis.

    Raises:
        ValueError: more devices asked for than exist (the message says how to create
            CPU devices), an empty or repeated device list, or a multi-axis mesh.

    Example:
        >>> mesh = device_mesh(1)
        >>> mesh.axis_names, mesh.devices.size
        (('rows',), 1)
    """
    if isinstance(devices, Mesh):
        if len(devices.axis_names) != 1:
            raise ValueError(
                f"devices must be a one-axis mesh; got axes {devices.axis_names}. Pass "
                "Mesh(np.asarray(device_list), ('rows',)) or a list of devices."
            )
        return Mesh(devices.devices.reshape(-1), (axis_name,))
    available = jax.devices()
    if devices is None:
        chosen = list(available)
    elif isinstance(devices, int | np.integer) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"devices={devices} but {len(available)} device(s) exist "
                f"({available[0].platform}); on CPU create more before JAX starts with "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={max(1, int(devices))}."
            )
        chosen = list(available[: int(devices)])
    else:
        try:
            chosen = list(devices)
        except TypeError:
            chosen = None
        if not chosen or not all(isinstance(d, jax.Device) for d in chosen):
            raise ValueError(
                "devices must be None, an int, a non-empty sequence of jax devices "
                f"(jax.devices()) or a one-axis Mesh; got {devices!r}."
            )
        if len(set(chosen)) != len(chosen):
            raise ValueError("devices lists a device more than once; list each once.")
    return Mesh(np.asarray(chosen), (axis_name,))


# ---------------------------------------------------------------------------------------
# Multi-device and multi-process EM


def _sharded_em(
    x,
    weight,
    initial,
    context,
    start_bound,
    patterns,
    measurements=None,
    sides=None,
    *,
    mesh,
    config,
    max_iter,
    block_rows,
    measurement_block_rows=0,
):
    """The whole fit: the restarts, one after another (``lax.map``, as in memory), of the
    one EM loop (:func:`gaussmix.inference.em.core.iterate`) whose statistics are psummed.
    ``patterns``: None, or the :class:`gaussmix.inference.em.missing.PatternBlocks` of
    data with missing entries, its groups and each device's own (P, D) pattern table
    split over the row axis. ``measurements``: None, or the row-sharded
    :class:`gaussmix.inference.em.deconvolution.Measurements` of rows with measurement
    errors (and any missing entries; ``patterns`` is then None). ``sides``: None, or the
    (D,) log side lengths of a uniform background's box (rows with NaN)."""

    def per_device(x, weight, initial, context, start_bound, patterns, measurements, sides):
        def statistics_fn(parameters):
            if measurements is not None:
                local = deconvolution.block_statistics(
                    parameters,
                    x,
                    weight,
                    measurements,
                    context.centre,
                    config.covariance_type,
                    measurement_block_rows,
                    context.background_log_density,
                    sides,
                )
                return lax.psum(local, ROW_AXIS)
            if patterns is not None:
                local = missing.sufficient_statistics(
                    patterns,
                    parameters,
                    covariance_type=config.covariance_type,
                    centre=context.centre,
                    background_log_sides=sides,
                )
                return lax.psum(local, ROW_AXIS)
            local = sufficient_statistics(
                x,
                parameters,
                covariance_type=config.covariance_type,
                centre=context.centre,
                sample_weight=weight,
                block_rows=block_rows,
                background_log_density=context.background_log_density,
            )
            return lax.psum(local, ROW_AXIS)

        def run(parameters):
            return iterate(init(parameters, start_bound), statistics_fn, context, config, max_iter)

        return lax.map(run, initial)

    rows, replicated = PartitionSpec(ROW_AXIS), PartitionSpec()
    pattern_specs = None if patterns is None else missing.PatternBlocks(rows, rows, rows, rows)
    measurement_specs = None if measurements is None else deconvolution.Measurements(rows, rows)
    return jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(
            rows,
            rows,
            replicated,
            replicated,
            replicated,
            pattern_specs,
            measurement_specs,
            replicated,
        ),
        out_specs=replicated,
        # em's block scan starts from unvarying zeros; the psum makes the result
        # replicated, which the checker cannot see through the scan.
        check_vma=False,
    )(x, weight, initial, context, start_bound, patterns, measurements, sides)


_sharded_em_jit = jax.jit(
    _sharded_em,
    static_argnames=("mesh", "config", "max_iter", "block_rows", "measurement_block_rows"),
)


def _global_rows(x, weight, mesh: Mesh, centre: np.ndarray):
    """This process's rows as its part of a row-sharded global array.

    Every device gets the same number of rows: the local rows are padded with the centre
    and zero weight (they add nothing to any statistic).
    """
    process = jax.process_index()
    local_devices = [d for d in mesh.devices.flat if d.process_index == process]
    header = np.array([x.shape[0], len(local_devices)], np.int64)
    headers = process_gather(header)
    if np.any(headers[:, 1] == 0):
        missing = np.flatnonzero(headers[:, 1] == 0).tolist()
        raise ValueError(
            f"process(es) {missing} have no device in the mesh, so their rows cannot take "
            "part; use devices=None (all devices) or include devices of every process."
        )
    shard = max(1, int(np.max(-(-headers[:, 0] // headers[:, 1]))))
    x_padded, w_padded = pad_rows(x, weight, shard * len(local_devices), centre)
    sharding = NamedSharding(mesh, PartitionSpec(ROW_AXIS))
    if jax.process_count() == 1:
        return jax.device_put(x_padded, sharding), jax.device_put(w_padded, sharding)
    total = shard * mesh.devices.size
    return (
        jax.make_array_from_process_local_data(sharding, x_padded, (total, x.shape[1])),
        jax.make_array_from_process_local_data(sharding, w_padded, (total,)),
    )


def _global_padded(array: np.ndarray, mesh: Mesh, fill: float):
    """This process's (n, ...) ``array`` as its part of a row-sharded global array,
    padded with ``fill`` to the rows per device of :func:`_global_rows` (the same shard
    computation, so row i of both is the same row)."""
    process = jax.process_index()
    local_devices = [d for d in mesh.devices.flat if d.process_index == process]
    headers = process_gather(np.array([array.shape[0], len(local_devices)], np.int64))
    shard = max(1, int(np.max(-(-headers[:, 0] // np.maximum(headers[:, 1], 1)))))
    rows = shard * len(local_devices)
    padding = np.full((rows - array.shape[0], *array.shape[1:]), fill, array.dtype)
    padded = np.concatenate([array, padding])
    sharding = NamedSharding(mesh, PartitionSpec(ROW_AXIS))
    if jax.process_count() == 1:
        return jax.device_put(padded, sharding)
    total = (shard * mesh.devices.size, *array.shape[1:])
    return jax.make_array_from_process_local_data(sharding, padded, total)


def _global_patterns(x: np.ndarray, weight, mesh: Mesh, centre: np.ndarray, options: EMOptions):
    """This process's rows ``x`` (NaN entries) as the row-sharded global
    :class:`gaussmix.inference.em.missing.PatternBlocks` of all processes: each device
    gets as many groups of single-pattern blocks (one shape for all, large enough for
    any process's rows) and its process's pattern table (padded to the largest bucket);
    None when no process has NaN."""
    has_nan = bool(np.isnan(x).any())
    pattern, observed = missing.find_patterns(x)
    local_devices = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    header = np.array([float(has_nan), observed.shape[0], x.shape[0], len(local_devices)])
    headers = process_gather(header.astype(np.float64))
    if not np.any(headers[:, 0]):
        return None
    bucket = int(np.max(headers[:, 1]))
    table = np.ones((bucket, x.shape[1]), x.dtype)
    table[: observed.shape[0]] = observed
    rows, group, n_groups = missing.block_shape(
        int(np.max(headers[:, 2])),
        bucket,
        x.shape[1],
        options.n_components,
        covariance_layout(options.covariance_type),
        x.dtype.itemsize,
    )
    per_device = int(np.max(-(-n_groups // headers[:, 3])))
    weight = np.ones(x.shape[0], x.dtype) if weight is None else weight
    filled = np.where(np.isnan(x), centre, x).astype(x.dtype)
    blocks = missing.pattern_blocks(
        filled, weight, pattern, table, (rows, group, per_device * len(local_devices))
    )._replace(observed=np.tile(table, (len(local_devices), 1)))
    sharding = NamedSharding(mesh, PartitionSpec(ROW_AXIS))
    if jax.process_count() == 1:
        return jax.device_put(blocks, sharding)
    n_devices = mesh.devices.size
    return missing.PatternBlocks(
        *(
            jax.make_array_from_process_local_data(
                sharding, leaf, (leaf.shape[0] // len(local_devices) * n_devices, *leaf.shape[1:])
            )
            for leaf in blocks
        )
    )


def _replicated(tree, mesh: Mesh):
    """A pytree of host values as arrays replicated on every device of the mesh."""
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(
        lambda leaf: jax.make_array_from_process_local_data(
            sharding, np.asarray(leaf), np.shape(leaf)
        ),
        tree,
    )


def _local(tree):
    """Host copies of (replicated) global arrays."""
    return jax.tree.map(lambda leaf: np.asarray(leaf.addressable_data(0)), tree)


def fit_em_sharded(
    x: ArrayLike,
    *,
    n_components: int | None = None,
    covariance_type: str = "full",
    priors: str | Mapping[str, dist.Distribution] | None = None,
    sample_weight: ArrayLike | None = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    n_init: int = 1,
    init_params: str = "kmeans",
    weights_init: ArrayLike | None = None,
    means_init: ArrayLike | None = None,
    precisions_init: ArrayLike | None = None,
    seed: int | jax.Array = 0,
    start_lower_bound: float = -np.inf,
    devices: int | Sequence[jax.Device] | Mesh | None = None,
    init_rows: int = DEFAULT_INIT_ROWS,
    block_rows: int | None = None,
    options: EMOptions | None = None,
    nan_policy: str = "raise",
    measurement_covariances: ArrayLike | None = None,
    background_log_density: float | None = None,
    background_weight_init: float | None = None,
    background_log_sides: ArrayLike | None = None,
) -> EMResult:
    """EM with the rows split over devices (and processes); statistics summed by psum.

    One ``jax.jit`` runs every iteration and restart: the in-memory driver's loop
    (:func:`gaussmix.inference.em.core.iterate`) with a statistics function that sums
    over devices by ``psum``. The initialization runs on a uniform sample of at most
    ``init_rows`` rows (:func:`gaussmix.inference.em.initialize`); with
    at most that many rows in all and ``n_init=1`` the sample is the whole data in order,
    so the result is :func:`gaussmix.inference.em.fit_em`'s up to the order of
    floating-point sums (1e-10 in float64).

    Args:
        x: (n, D) the rows this process holds: all rows with one process; under
            ``jax.distributed`` each process passes its own part.
        devices: None (every device of every process), an int (the first n devices), a
            sequence of devices or a one-axis ``Mesh``; under ``jax.distributed`` every
            process needs at least one device in it.
        sample_weight: (n,) weights of this process's rows.
        init_rows: rows of the initialization sample (see above).
        n_components, covariance_type, priors, max_iter, tol, reg_covar, n_init: as in
            :func:`gaussmix.inference.em.fit_em`.
        init_params, weights_init, means_init, precisions_init, seed: as in ``fit_em``.
        start_lower_bound, block_rows: as in ``fit_em`` (``block_rows`` per device).
        options: a prebuilt :class:`gaussmix.inference.em.options.EMOptions`; it replaces
            every option keyword (all but ``x``, ``sample_weight``, ``devices`` and
            ``nan_policy``).
        nan_policy: "raise", "marginalize" or "omit", as in
            :func:`gaussmix.inference.em.fit_em` (maximum likelihood only with NaN, as
            :func:`gaussmix.inference.streaming.fit_em_chunked`): each device gathers
            its rows' factors from its process's pattern table.
        measurement_covariances: None, or the (n, D, D) or (n, D) measurement error
            covariances of this process's rows, as in :func:`gaussmix.inference.em.fit_em`
            (extreme deconvolution; each row's covariance travels with the row).
        background_log_density, background_weight_init, background_log_sides: a uniform
            background component of density :math:`1/V`, as in
            :func:`gaussmix.inference.em.fit_em` (:math:`-\\log V` given: under
            ``jax.distributed`` the caller finds the volume of all processes' rows;
            with NaN the box's log side lengths are needed).

    Returns:
        :class:`gaussmix.inference.em.EMResult`, the same on every process.

    Raises:
        ValueError: bad input, a mesh that leaves out a process, or a collapsed
            component.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = np.concatenate([rng.normal(m, 1.0, (500, 2)) for m in (-5.0, 5.0)])
        >>> result = fit_em_sharded(x, n_components=2, covariance_type="diag")
        >>> sorted(np.round(np.asarray(result.params["means"][:, 0])).tolist())
        [-5.0, 5.0]
    """
    if options is None:
        options = check_options(
            n_components=n_components,
            covariance_type=covariance_type,
            priors=priors,
            max_iter=max_iter,
            tol=tol,
            reg_covar=reg_covar,
            n_init=n_init,
            init_params=init_params,
            weights_init=weights_init,
            means_init=means_init,
            precisions_init=precisions_init,
            seed=seed,
            start_lower_bound=start_lower_bound,
            block_rows=block_rows,
            init_rows=init_rows,
        )
    mesh = device_mesh(devices)
    if sample_weight is not None and (
        np.ndim(sample_weight) != 1 or np.shape(sample_weight)[0] != np.shape(x)[0]
    ):
        raise ValueError(
            f"sample_weight has shape {np.shape(sample_weight)}; expected ({np.shape(x)[0]},), "
            "one weight per row of x."
        )
    if nan_policy not in missing.NAN_POLICIES:
        raise ValueError(
            f"Invalid value for 'nan_policy': {nan_policy!r}; it should be in "
            f"{list(missing.NAN_POLICIES)}."
        )
    if nan_policy == "omit" and np.asarray(x).dtype.kind == "f" and np.ndim(x) == 2:
        keep = ~np.isnan(np.asarray(x)).any(axis=1)
        x = np.asarray(x)[keep]
        sample_weight = None if sample_weight is None else np.asarray(sample_weight)[keep]
        if measurement_covariances is not None and np.shape(measurement_covariances)[:1] == (
            keep.shape[0],
        ):
            measurement_covariances = np.asarray(measurement_covariances)[keep]
    survey, _ = survey_with_rows(
        [(x, sample_weight)], options, allow_nan=nan_policy == "marginalize"
    )
    local_x, local_w = prepare_chunk(
        x, sample_weight, survey.dtype, survey.n_features, "x", validate=False
    )
    dtype = survey.dtype
    initial = initial_parameters(survey, options)
    context = survey_context(survey, options)
    centre = np.asarray(context.centre)
    patterns = measurements = None
    measurement_block_rows = 0
    if measurement_covariances is not None:
        noise = deconvolution.as_measurement_covariances(measurement_covariances, local_x)
        x_filled = np.where(np.isnan(local_x), centre, local_x).astype(dtype)
        x_global, w_global = _global_rows(x_filled, local_w, mesh, centre)
        measurements = deconvolution.Measurements(
            _global_padded((~np.isnan(local_x)).astype(dtype), mesh, 1.0),
            _global_padded(noise, mesh, 0.0),
        )
        measurement_block_rows = deconvolution.block_rows_for(
            x_global.shape[0] // mesh.devices.size,
            survey.n_features,
            options.n_components,
            np.dtype(dtype).itemsize,
        )
    elif nan_policy == "marginalize":
        x_filled = np.where(np.isnan(local_x), centre, local_x).astype(dtype)
        x_global, w_global = _global_rows(x_filled, local_w, mesh, centre)
        patterns = _global_patterns(local_x, local_w, mesh, centre, options)
    else:
        x_global, w_global = _global_rows(local_x, local_w, mesh, centre)
    config = StepConfig.from_options(options)
    extra = background.streamed_arguments(
        background_log_density,
        background_weight_init,
        options.method,
        dtype,
        background_log_sides,
        survey.n_features,
    )
    sides = None
    if extra is not None:
        # any process's NaN gives patterns (the same on every process)
        has_nan = patterns is not None or bool(np.isnan(local_x).any())
        if has_nan and extra.log_sides is None:
            raise NotImplementedError(
                "a uniform background with missing entries needs background_log_sides "
                "(its box; a volume alone has no density over a row's observed "
                "coordinates); pass them, or nan_policy='omit'."
            )
        sides = None if extra.log_sides is None else _replicated(extra.log_sides, mesh)
        config = config._replace(background=True)
        context = context._replace(background_log_density=extra.log_density)
        initial = background.start_parameters(initial, extra.start_weight)
    arguments = _replicated((initial, context, np.asarray(options.start_lower_bound, dtype)), mesh)
    states, infos, lower_bounds = _local(
        _sharded_em_jit(
            x_global,
            w_global,
            *arguments,
            patterns,
            measurements,
            sides,
            mesh=mesh,
            config=config,
            max_iter=options.max_iter,
            block_rows=options.block_rows,
            measurement_block_rows=measurement_block_rows,
        )
    )
    result = best_restart(states, infos, lower_bounds, config, options.max_iter, dtype)
    if extra is None:
        return result
    weight = background.background_weight(result.params["weights"])
    return result._replace(background_weight=jnp.asarray(weight))


# ---------------------------------------------------------------------------------------
# Batches over devices


def _pad_batch(leaf, padding: int):
    leaf = jnp.asarray(leaf)
    if padding == 0:
        return leaf
    return jnp.concatenate([leaf, jnp.repeat(leaf[-1:], padding, axis=0)])


def shard_batch(
    fn: Callable,
    *,
    devices: int | Sequence[jax.Device] | Mesh | None = None,
    in_axes: int | Sequence[int | None] | None = 0,
) -> Callable:
    """Run ``fn`` with the leading batch axis of its arguments split over devices.

    ``fn`` maps a batch to a batch (typically ``jax.vmap`` of a per-item fit, or a set of
    MCMC chains): every output leaf has the leading batch axis. Each device applies
    ``fn`` to its share (``jax.shard_map`` inside one ``jax.jit``, compiled once per
    argument shapes); a batch that does not divide evenly is padded by repeating its last
    item, and the padding is cut from the outputs.

    Args:
        fn: batch -> batch function of positional arguments.
        devices: None (this process's devices), an int (the first n of them), a sequence
            of devices or a one-axis ``Mesh``.
        in_axes: 0 (split) or None (copy to every device) for each positional argument,
            or one value for all.

    Returns:
        A function with ``fn``'s signature whose outputs are split over the devices.

    Raises:
        ValueError: arguments with different batch sizes, none split, or devices of
            another process.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> square_roots = shard_batch(jax.vmap(jnp.sqrt), devices=1)
        >>> square_roots(jnp.array([1.0, 4.0, 9.0])).tolist()
        [1.0, 2.0, 3.0]
    """
    if devices is None:
        devices = jax.local_devices()
    elif isinstance(devices, int | np.integer) and not isinstance(devices, bool):
        local = jax.local_devices()
        if not 1 <= devices <= len(local):
            raise ValueError(
                f"devices={devices} but this process has {len(local)} device(s); on CPU "
                "create more before JAX starts with "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={max(1, int(devices))}."
            )
        devices = local[: int(devices)]
    mesh = device_mesh(devices, axis_name=BATCH_AXIS)
    if any(d.process_index != jax.process_index() for d in mesh.devices.flat):
        raise ValueError("shard_batch splits a batch over this process's devices only.")
    n_devices = mesh.devices.size
    compiled: dict[tuple, Callable] = {}

    def sharded(*args):
        axes = tuple(in_axes) if isinstance(in_axes, Sequence) else (in_axes,) * len(args)
        if len(axes) != len(args) or any(axis not in (0, None) for axis in axes):
            raise ValueError(
                f"in_axes must be 0 or None for each of the {len(args)} arguments; got {in_axes!r}."
            )
        sizes = {
            int(np.shape(leaf)[0])
            for arg, axis in zip(args, axes, strict=True)
            if axis == 0
            for leaf in jax.tree.leaves(arg)
        }
        if len(sizes) != 1:
            raise ValueError(
                "The split arguments (in_axes=0) must share one leading batch size; got "
                f"{sorted(sizes) or 'none split'}."
            )
        (size,) = sizes
        padding = (-size) % n_devices
        padded = tuple(
            jax.tree.map(lambda leaf: _pad_batch(leaf, padding), arg) if axis == 0 else arg
            for arg, axis in zip(args, axes, strict=True)
        )
        if axes not in compiled:
            specs = tuple(
                PartitionSpec(BATCH_AXIS) if axis == 0 else PartitionSpec() for axis in axes
            )
            compiled[axes] = jax.jit(
                jax.shard_map(
                    fn,
                    mesh=mesh,
                    in_specs=specs,
                    out_specs=PartitionSpec(BATCH_AXIS),
                    check_vma=False,
                )
            )
        outputs = compiled[axes](*padded)
        if padding == 0:
            return outputs
        return jax.tree.map(lambda leaf: leaf[:size], outputs)

    return sharded
