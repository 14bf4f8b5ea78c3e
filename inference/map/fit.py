"""The MAP back end's entry point: :func:`fit_map` and its result :class:`MAPResult`.

Reads the program once by abstract tracing (its latent sites, its observed site and that
site's family), checks the starting values, runs the compiled batch
(:func:`gaussmix.inference.map.batch.fit_batch`) and names the results. All but the
compiled batch runs in NumPy on host arrays, so that a first fit compiles that one
program and nothing else (an operation on a JAX array would compile one of its own).
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gaussmix.inference.deprecation import UNSET, renamed_keyword
from gaussmix.inference.map.batch import fit_batch
from gaussmix.inference.map.families import ObservationFamily, family_of
from gaussmix.inference.map.levenberg_marquardt import MAPSettings
from gaussmix.inference.map.problem import Sites

__all__ = ["TOLERANCES", "MAPResult", "fit_map", "probe_program"]

#: Default tolerances by dtype: relative decrease / Newton decrement, relative step.
TOLERANCES = {"float64": (1e-10, 1e-10), "float32": (1e-5, 1e-5)}


class MAPResult(NamedTuple):
    """MAP fits; a leading (B,) axis on every array when y was (B, M).

    A spectrum whose fit failed at its start (a non-finite objective, gradient or
    curvature at the starting values) has ``started`` False and NaN for everything that
    could not be computed: params, covariance, objective, log-likelihood, rss and
    decrement. ``converged`` is False for it, and for any spectrum whose optimum has a
    non-finite objective, rss or covariance (a singular curvature).

    Attributes:
        params: site name -> value at the MAP (the noise site included).
        covariance: (P, P) Laplace covariance of the curve parameters.
        parameter_names: the P raveled curve-parameter names (``name`` or ``name[i]``).
        objective: negative log posterior F at the MAP (nats).
        log_likelihood: log-likelihood at the MAP.
        rss: :math:`\\sum (y - \\mu)^2` over unmasked points.
        n_points: number of unmasked points.
        decrement: Newton decrement at the MAP (nats).
        converged: convergence flag (and finite objective, rss and covariance).
        n_iter: trial steps used.
        initial_in_support: (n_sites,) whether each site's start lay in its prior support.
        started: whether the starting point had a finite objective, gradient and
            curvature (False: the fit failed at its start).
    """

    params: dict[str, jax.Array]
    covariance: jax.Array
    parameter_names: tuple[str, ...]
    objective: jax.Array
    log_likelihood: jax.Array
    rss: jax.Array
    n_points: jax.Array
    decrement: jax.Array
    converged: jax.Array
    n_iter: jax.Array
    initial_in_support: jax.Array
    started: jax.Array


def probe_program(model, x, y, init, model_kwargs):
    """Latent sites (names, shapes), the observed site and its family, by abstract tracing.

    x, y and init are traced; ``model_kwargs`` stay concrete, so that the program's own
    checks of its options (e.g. the supports of priors and fixed values in
    :func:`gaussmix.models.peaks.peaks`) see their values and refuse bad ones here, before
    anything is compiled.
    """
    from numpyro import handlers  # the probe traces a NumPyro program

    found = {}

    def run(x, y, init, model_kwargs):
        with handlers.seed(rng_seed=0):
            trace = handlers.trace(handlers.substitute(model, data=init)).get_trace(
                x, y, **model_kwargs
            )
        found["latent"] = [
            (name, tuple(site["value"].shape))
            for name, site in trace.items()
            if site["type"] == "sample" and not site["is_observed"]
        ]
        found["observed"] = [
            (name, site["fn"])
            for name, site in trace.items()
            if site["type"] == "sample" and site["is_observed"]
        ]
        return jnp.zeros(())

    jax.eval_shape(lambda x, y, init: run(x, y, init, model_kwargs), x, y, init)
    if len(found["observed"]) != 1:
        raise ValueError(
            "The MAP back end needs exactly one observed site; the program has "
            f"{[name for name, _ in found['observed']]}."
        )
    observed, fn = found["observed"][0]
    return found["latent"], observed, family_of(fn)


def _unravel(sites: Sites, theta, noise) -> dict:
    """Site name -> (B, *shape) values from the (B, P) raveled curve parameters and the
    (B,) noise: :meth:`Sites.unravel` spectrum by spectrum, by slices of the batch."""
    values, start = {}, 0
    for index in sites.curve:
        shape = sites.shapes[index]
        size = int(np.prod(shape))
        values[sites.names[index]] = theta[:, start : start + size].reshape(-1, *shape)
        start += size
    if sites.noise >= 0:
        values[sites.names[sites.noise]] = noise
    return values


def fit_map(
    model: Callable,
    x: ArrayLike,
    y: ArrayLike,
    init: Mapping[str, ArrayLike],
    *,
    mask: ArrayLike | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    noise_site: str | None = "sigma",
    max_iter: int = 200,
    tol: float | None = None,
    step_tol: float | None = None,
    batch_size: int = 128,
    devices: int | Sequence[jax.Device] | Any | None = None,
    active: ArrayLike | None = None,
    max_iterations: int = UNSET,
    tolerance: float | None = UNSET,
    step_tolerance: float | None = UNSET,
    _structure: tuple[tuple, str, ObservationFamily] | None = None,
) -> MAPResult:
    """MAP of a regression program, one spectrum or a batch, by Levenberg-Marquardt.

    Args:
        model: NumPyro program called as ``model(x, y, **model_kwargs)`` (and with
            ``mask=...`` when a mask is given). A static argument of the compiled fit:
            pass the same function object to reuse the compilation.
        x: (M,) abscissae shared by all spectra.
        y: (M,) one spectrum or (B, M) a batch.
        init: starting value of every latent site (natural coordinates): of the site's
            shape, or with a leading (B,) axis. The noise site of a Normal likelihood
            restarts at its maximum, :math:`\\sqrt{\\mathrm{RSS}/n}` of the starting curve.
        mask: (M,) or (B, M) booleans, False drops a point (its y may be NaN).
        model_kwargs: further keyword arguments of the program, a pytree of arrays
            (distributions included), traced rather than static.
        noise_site: the scalar site that is the observed distribution's scale; None or a
            name the program lacks when there is none (a Poisson likelihood, a fixed scale).
        max_iter: trial steps per spectrum.
        tol: relative decrease (and Newton decrement, nats) counted as converged;
            default 1e-10 in float64, 1e-5 in float32.
        step_tol: relative trust radius counted as converged; same defaults.
        batch_size: spectra iterated together (vmap) in the slots of each device.
        devices: None (one device, the default one), or the devices the spectra are split
            over: an int n (the first n local devices), a sequence of devices or a
            one-axis ``jax.sharding.Mesh``. Each device fits its share of the batch with
            its own ``batch_size`` slots; the results are those of one device (the
            arithmetic per spectrum is the same) and come back split over the devices.
            On CPU, create devices before JAX starts:
            ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` uses two cores.
        active: (B,) booleans: fit only these spectra of a batch, through the same
            compiled fit as all of them; the others come back NaN (``converged`` False,
            ``n_iter`` 0). A refit of a few spectra this way compiles nothing new.
        max_iterations, tolerance, step_tolerance: deprecated spellings of ``max_iter``,
            ``tol`` and ``step_tol`` (a FutureWarning; removed in a future release).

    Returns:
        :class:`MAPResult`.

    Raises:
        ValueError: x and y of mismatched shapes, init missing or naming unknown sites
            or lying outside a prior's support, a non-scalar noise site, a program
            without exactly one Normal, StudentT or Poisson observed site, or more
            devices than exist; a keyword given in both its spellings with different
            values.

    Warns:
        FutureWarning: ``max_iterations``, ``tolerance`` or ``step_tolerance`` was given.

    Example:
        >>> import numpy as np, numpyro, numpyro.distributions as dist
        >>> def line(x, y):
        ...     slope = numpyro.sample("slope", dist.Normal(0.0, 10.0))
        ...     numpyro.sample("y", dist.Normal(slope * x, 1.0), obs=y)
        >>> x = np.arange(5.0)
        >>> result = fit_map(line, x, 2.0 * x, {"slope": 1.0})
        >>> round(float(result.params["slope"]), 3), bool(result.converged)  # 60 / 30.01
        (1.999, True)
    """
    max_iter = renamed_keyword(
        "fit_map", "max_iterations", max_iterations, "max_iter", max_iter, 200
    )
    tol = renamed_keyword("fit_map", "tolerance", tolerance, "tol", tol, None)
    step_tol = renamed_keyword(
        "fit_map", "step_tolerance", step_tolerance, "step_tol", step_tol, None
    )
    dtype = np.dtype(jnp.result_type(float))
    # Everything around the compiled fit runs in NumPy on host arrays: an operation on a
    # JAX array outside it would compile a program of its own.
    x = np.asarray(x, dtype)
    y = np.asarray(y, dtype)
    if x.ndim != 1 or y.ndim not in (1, 2) or y.shape[-1] != x.shape[0]:
        raise ValueError(
            f"x must be (M,) and y (M,) or (B, M) with the same M; got {x.shape} and {y.shape}."
        )
    batched = y.ndim == 2
    y = y if batched else y[None]
    n_spectra = y.shape[0]
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask, bool), y.shape)
        y = np.where(mask, y, dtype.type(0))  # masked points may hold NaN
    model_kwargs = dict(model_kwargs or {})
    if active is None:
        active = np.ones(n_spectra, bool)
    else:
        active = np.asarray(active)
        if active.dtype != bool or active.size != n_spectra or (batched and active.ndim != 1):
            raise ValueError(
                f"active must hold one boolean per spectrum, shape ({n_spectra},); got "
                f"{active.dtype} of shape {active.shape}."
            )
        active = active.reshape(n_spectra)
    given, init = init, {name: np.asarray(value, dtype) for name, value in init.items()}

    def first(value):
        return value[0] if batched and value.ndim > 0 and value.shape[0] == n_spectra else value

    if _structure is None:
        probe_kwargs = dict(model_kwargs)
        if mask is not None:
            probe_kwargs["mask"] = mask[0]
        first_init = {name: first(value) for name, value in init.items()}
        latent, observed, family = probe_program(model, x, y[0], first_init, probe_kwargs)
    else:
        # What :func:`probe_program` would find, from a caller that knows its program
        # (fit_peaks, from the PeakModel; tested equal): no trace, no NumPyro, so that a
        # fit whose compiled program is cached runs none of NumPyro's code.
        latent, observed, family = _structure
    names = tuple(name for name, _ in latent)
    missing = [name for name in names if name not in init]
    unknown = [name for name in init if name not in names]
    if missing or unknown:
        raise ValueError(
            f"init must give every latent site: missing {missing}, unknown {unknown}; "
            f"sites: {list(names)}."
        )
    noise = names.index(noise_site) if noise_site in names else -1
    if noise >= 0 and latent[noise][1] != ():
        raise ValueError(f"The noise site {noise_site!r} must be a scalar.")
    sites = Sites(names, tuple(shape for _, shape in latent), noise)
    values = {}
    for name, shape in latent:
        value = init[name]
        if value.shape == shape:
            value = np.broadcast_to(value, (n_spectra, *shape))
        elif value.shape != (n_spectra, *shape):
            raise ValueError(
                f"init[{name!r}] has shape {value.shape}; expected {shape} or "
                f"{(n_spectra, *shape)}."
            )
        values[name] = value.reshape(n_spectra, -1)
    theta = np.concatenate([values[names[i]] for i in sites.curve], axis=1)
    noise_start = values[noise_site][:, 0] if noise >= 0 else np.ones(n_spectra, dtype)
    key = "float64" if dtype == np.float64 else "float32"
    default_tolerance, default_step = TOLERANCES[key]
    outputs = fit_batch(
        devices,
        model,
        sites,
        observed,
        family,
        int(batch_size),
        x,
        y,
        mask,
        active,
        theta,
        noise_start,
        model_kwargs,
        MAPSettings(
            tol=np.asarray(default_tolerance if tol is None else tol, dtype),
            step_tol=np.asarray(default_step if step_tol is None else step_tol, dtype),
            max_iter=np.asarray(max_iter, np.int32),
        ),
    )
    # One device: the results to the host, named there, and back as JAX arrays without
    # a program. Several: the same operations on the split arrays, which stay split.
    xp = np if devices is None else jnp
    if devices is None:
        outputs = jax.tree.map(np.asarray, outputs)
    support = np.asarray(outputs.support) | ~active[:, None]
    if not np.all(support):
        spectrum, site = (int(i) for i in np.argwhere(~support)[0])
        name = names[site]
        start = np.asarray(given[name])
        shown = start if start.ndim == 0 or not batched else start[spectrum]
        raise ValueError(
            f"init[{name!r}] = {shown} (spectrum {spectrum}) lies outside the support of its "
            "prior; start inside it or widen the prior."
        )
    if not active.all():
        skipped = xp.asarray(~active)

        def blank(value):
            if not jnp.issubdtype(value.dtype, jnp.floating):
                return value  # converged False, n_iter 0: as the loop left them
            return xp.where(skipped.reshape((-1,) + (1,) * (value.ndim - 1)), xp.nan, value)

        outputs = jax.tree.map(blank, outputs._replace(support=outputs.support | skipped[:, None]))
    theta, noise_value, covariance, *rest = outputs
    parameter_names = []
    for index in sites.curve:
        name, shape = names[index], sites.shapes[index]
        if shape == ():
            parameter_names.append(name)
        else:
            parameter_names.extend(f"{name}[{i}]" for i in range(int(np.prod(shape))))
    params = _unravel(sites, theta, noise_value)
    arrays = (covariance, *rest)
    if not batched:
        params = {name: value[0] for name, value in params.items()}
        arrays = tuple(value[0] for value in arrays)
    if devices is None:
        params, arrays = jax.device_put((params, arrays))  # jnp.asarray would compile
    covariance, *rest = arrays
    return MAPResult(params, covariance, tuple(parameter_names), *rest)
