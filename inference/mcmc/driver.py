"""The NUTS driver: :func:`sample`, three compiled programs per model, one DataTree.

:func:`sample` checks its arguments, asks the program's sampling hooks
(:mod:`gaussmix.inference.sampling_hooks`) for a starting point, then runs the
preparation (:mod:`~gaussmix.inference.mcmc.initialization`), the chains
(:mod:`~gaussmix.inference.mcmc.chain`) and the post-processing
(:mod:`~gaussmix.inference.mcmc.output`), each compiled once per program and argument
shapes (:mod:`~gaussmix.inference.mcmc.program`), and assembles the DataTree. The method
is described in :mod:`gaussmix.inference.mcmc`.
"""

import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax.typing import ArrayLike
from numpyro import handlers
from numpyro.distributions.transforms import biject_to

from gaussmix.inference.diagnostics import SamplingWarning
from gaussmix.inference.mcmc.chain import (
    NutsSettings,
    build_sampler,
    chain_device_count,
)
from gaussmix.inference.mcmc.initialization import build_prepare, build_structure
from gaussmix.inference.mcmc.output import build_postprocess, build_predictive, to_datatree
from gaussmix.inference.mcmc.program import (
    TRACING_ERRORS,
    ConcreteProgram,
    Program,
    bind,
    compiled,
    compiler_options,
    signature,
)
from gaussmix.inference.mcmc.progress import run_with_progress, show_progress
from gaussmix.inference.sampling_hooks import (
    SamplingHooks,
    sampling_hooks,
)

__all__ = ["DENSE_MASS_MAX_DIMENSION", "sample"]

#: Largest number of unconstrained dimensions with a dense mass matrix.
DENSE_MASS_MAX_DIMENSION = 100
#: Potential evaluations the preparation is counted to make (a few Newton steps, each
#: 2P + 1 evaluations), for the choice of its XLA options (:func:`.program.compiler_options`).
_PREPARE_EVALUATIONS = 100


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _seed_argument(seed):
    """A JAX key as given, an integer as a scalar array (the key is made when compiled)."""
    if isinstance(seed, jax.Array) and jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer or a JAX key, got {seed!r}.")
    dtype = jax.dtypes.canonicalize_dtype(np.int64)
    try:
        return jax.device_put(np.asarray(int(seed), dtype))
    except OverflowError:
        raise ValueError(f"seed must fit in {dtype}, got {seed!r}.") from None


def _device_array(value):
    """``value`` on the device; NumPy arrays are moved without compiling anything."""
    return value if isinstance(value, jax.Array) else jax.device_put(np.asarray(value))


def _nuts_settings(options, num_warmup, num_samples, progress_bar) -> dict:
    options = dict(options or {})
    unknown = sorted(set(options) - {"target_accept_prob", "max_tree_depth", "dense_mass"})
    if unknown:
        raise ValueError(
            f"Unknown nuts_options {unknown}; use target_accept_prob, max_tree_depth, dense_mass."
        )
    target_accept_prob = float(options.get("target_accept_prob", 0.8))
    if not 0.0 < target_accept_prob < 1.0:
        raise ValueError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob}.")
    return {
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "target_accept_prob": target_accept_prob,
        "max_tree_depth": _check_count("max_tree_depth", options.get("max_tree_depth", 10), 1),
        "dense_mass": options.get("dense_mass"),
        "progress": show_progress(progress_bar),
    }


def sample(
    model: Callable,
    *args,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    num_chains: int = 4,
    seed: int | jax.Array = 0,
    init: Mapping[str, ArrayLike] | None = None,
    progress_bar: bool | None = None,
    posterior_predictive: bool = False,
    nuts_options: Mapping[str, Any] | None = None,
    **kwargs,
):
    """Sample the posterior of a NumPyro program by NUTS; an ArviZ DataTree back.

    Args:
        model: a NumPyro program, called as ``model(*args, **kwargs)``.
        *args: its positional arguments (data).
        num_warmup: adaptation iterations per chain (discarded), >= 0.
        num_samples: kept draws per chain, >= 1.
        num_chains: >= 1; >= 2 for R-hat.
        seed: integer or JAX key.
        init: constrained site values to start from (the MAP); by default the starting
            point of the program's sampling hooks (the EM answer for
            :func:`gaussmix.models.gaussian_mixture`) and a BFGS search of the mode of the
            unconstrained potential otherwise. Chains start at jittered copies.
        progress_bar: tqdm progress bar; ``None`` shows it on a terminal outside CI.
        posterior_predictive: also draw the observed sites given each posterior draw.
        nuts_options: ``target_accept_prob`` (0.8), ``max_tree_depth`` (10),
            ``dense_mass`` (default: dense up to 100 unconstrained dimensions).
        **kwargs: keyword arguments of the program.

    Returns:
        ``xarray.DataTree`` with groups ``posterior`` (latent and deterministic sites,
        (chain, draw, ...); post-processed by the program's hooks: relabeled for the
        mixture program), ``sample_stats`` (``diverging``, ``energy``, ``lp``,
        ``n_steps``, ``tree_depth``, ``acceptance_rate``, ``step_size``; attrs
        ``sampling_time`` and ``compile_time`` in seconds, ``init``: "init", the hooks'
        ``initial_values_label`` ("em" for the mixture program), "map" or
        "init_to_median"), ``log_likelihood`` (pointwise, per observed site),
        ``observed_data``, on request ``posterior_predictive``, and the groups the hooks
        add: for the mixture program ``mixture`` (the reference point of the labelling,
        ``reference_<site>``).

    Raises:
        ValueError: invalid counts, options or ``init``, arguments the program's hooks
            refuse, or a program with no valid initial point.

    Warns:
        SamplingWarning: divergent transitions (with their count), or a failed MAP search.

    Example:
        >>> import jax, numpy as np, numpyro, numpyro.distributions as dist
        >>> def model(y):
        ...     loc = numpyro.sample("loc", dist.Normal(0.0, 10.0))
        ...     with numpyro.plate("data", len(y)):
        ...         numpyro.sample("y", dist.Normal(loc, 1.0), obs=y)
        >>> y = np.random.default_rng(0).normal(3.0, 1.0, 50)
        >>> tree = sample(model, y, num_warmup=200, num_samples=200, num_chains=2,
        ...               progress_bar=False)
        >>> sorted(tree.children)
        ['log_likelihood', 'observed_data', 'posterior', 'sample_stats']
        >>> bool(abs(float(tree.posterior["loc"].mean()) - y.mean()) < 0.1)
        True
    """
    if not callable(model):
        raise ValueError(
            f"model must be a NumPyro program (a callable), got {type(model).__name__}."
        )
    num_warmup = _check_count("num_warmup", num_warmup, 0)
    num_samples = _check_count("num_samples", num_samples, 1)
    num_chains = _check_count("num_chains", num_chains, 1)
    options = _nuts_settings(nuts_options, num_warmup, num_samples, progress_bar)
    seed_argument = _seed_argument(seed)
    if init is not None and not isinstance(init, Mapping):
        raise ValueError(
            f"init must be a dict of site values (constrained), got {type(init).__name__}."
        )
    program = bind(model, args, kwargs)
    # A program's hooks check its arguments (concrete values) before anything is traced.
    hooks = sampling_hooks(model, *program.arguments())
    source = "init"
    if init is None and hooks is not None and hooks.initial_values_fn is not None:
        init = hooks.initial_values_fn(int(seed) if isinstance(seed, int | np.integer) else 0)
        source = hooks.initial_values_label
    try:
        return _sample(
            program, init, source, num_chains, options, seed_argument, hooks, posterior_predictive
        )
    except TRACING_ERRORS:
        if not program.dynamic:
            raise
        # The program needs concrete argument values: close over them instead (the
        # hooks' potential reads the arguments: NumPyro's, closed over, is used).
        concrete = bind(ConcreteProgram(model, args, kwargs), (), {})
        hooks = None if hooks is None else hooks._replace(potential_fn_gen=None)
        return _sample(
            concrete, init, source, num_chains, options, seed_argument, hooks, posterior_predictive
        )


def _check_init_names(program: Program, init_values: Mapping) -> None:
    """Refuse init values for sites the program does not have (traced, nothing computed)."""
    names: dict = {}

    def record(dynamic):
        args, kwargs = program.arguments(dynamic)
        sites = handlers.trace(handlers.seed(program.model, 0)).get_trace(*args, **kwargs)
        names["latent"] = [
            n for n, s in sites.items() if s["type"] == "sample" and not s["is_observed"]
        ]
        names["known"] = set(names["latent"]) | {
            n for n, s in sites.items() if s["type"] == "deterministic"
        }
        return jnp.zeros(())

    with numpyro.validation_enabled(False):  # names only: no checks compiled op by op
        jax.eval_shape(record, program.dynamic)
    unknown = sorted(set(init_values) - names["known"])
    if unknown:
        raise ValueError(
            f"init names unknown site(s) {unknown}; the latent sites are {names['latent']}."
        )


def _describe_invalid_init(program: Program, init_values: Mapping) -> str:
    """Where an initial point fails, as a clause for the error: the sites whose value is
    off its distribution's support or whose log density is not finite there (one eager
    trace of the model at the given values, run only on this error's path)."""
    args, kwargs = program.arguments()
    try:
        with numpyro.validation_enabled(False):
            model = handlers.substitute(handlers.seed(program.model, 0), data=init_values)
            sites = handlers.trace(model).get_trace(*args, **kwargs)
    except Exception as error:  # the clause is a courtesy: the error stands without it
        return f" (tracing the model there failed too: {error!r})"
    problems = []
    for name, site in sites.items():
        if site["type"] != "sample":
            continue
        value = site["value"]
        support = getattr(site["fn"], "support", None)
        try:
            inside = bool(np.all(np.asarray(support(value)))) if support is not None else True
            finite = inside and bool(np.all(np.isfinite(np.asarray(site["fn"].log_prob(value)))))
            interior = site["is_observed"] or not finite or support is None
            if not interior:  # NUTS moves in the unconstrained space: a bound is infinity
                image = biject_to(support).inv(value)
                interior = bool(np.all(np.isfinite(np.asarray(image))))
        except Exception:  # a site this check cannot evaluate: say nothing of it
            continue
        shown = np.asarray(value)
        shown = float(shown) if shown.size == 1 else f"an array of shape {shown.shape}"
        if not inside and site["is_observed"]:
            problems.append(f"the observed {name} has values off the support {support}")
        elif not inside:
            problems.append(f"{name} = {shown} is off the support {support}")
        elif not finite:
            problems.append(f"the log density of {name} is not finite")
        elif not interior:
            problems.append(f"{name} = {shown} is on the boundary of the support {support}")
    if not problems:
        return " (every site's log density is finite there: its gradient is not)"
    return ": " + "; ".join(problems)


def _sample(
    program: Program,
    init: Mapping | None,
    source: str,
    num_chains: int,
    options: dict,
    seed: jax.Array,
    hooks: SamplingHooks | None,
    posterior_predictive: bool,
):
    """The three compiled programs of one run, the program's hooks, the DataTree."""
    init_values = (
        None if init is None else {name: _device_array(value) for name, value in init.items()}
    )
    compile_time = 0.0
    if init_values is not None and source == "init":  # the hooks' values are trusted
        _check_init_names(program, init_values)

    # The hooks' closed form of the potential, if any, in place of NumPyro's (the function
    # is part of the keys: a user's, without a fingerprint, keys the program by its text).
    potential_fn_gen = None if hooks is None else hooks.potential_fn_gen

    # 1. Initial point, mode, Laplace fit, the keys of the later programs.
    prepare, found, seconds = compiled(
        "prepare",
        program,
        (num_chains, signature(init_values), signature(seed), potential_fn_gen),
        build_prepare(program, num_chains, init_values is not None, potential_fn_gen),
        init_values,
        seed,
        needs_found=True,
        compiler_options=compiler_options(program, _PREPARE_EVALUATIONS),
        refill=build_structure(program, init_values is not None),
    )
    compile_time += seconds
    structure = found["structure"]
    if potential_fn_gen is not None:
        structure = structure._replace(potential_fn_gen=potential_fn_gen)
    prepared = prepare(program.dynamic, init_values, seed)
    checks = jax.device_get(
        {name: prepared[name] for name in ("valid", "map_accepted", "laplace_valid")}
    )
    if not checks["valid"]:
        if init_values is not None:
            raise ValueError(
                "The log density or its gradient is not finite at the values given in init "
                "(or by the program's sampling hooks, e.g. EM)"
                f"{_describe_invalid_init(program, init_values)}; pass values inside the "
                "supports of the priors."
            )
        raise ValueError(
            "The model has no valid initial point: its log density or gradient is not "
            "finite at any point tried near the prior median. Check that the data lie in "
            "the support of the likelihood and that the priors are proper and consistent, "
            "or pass `init`, a dict of site values with finite log density."
        )
    if init_values is None:
        source = "map"
        if not checks["map_accepted"]:
            source = "init_to_median"
            warnings.warn(
                "The MAP search (BFGS on the unconstrained log density) failed to find a "
                "mode; chains start near the prior median instead (numpyro's "
                "init_to_median). Pass `init` with a good starting point if warmup struggles.",
                SamplingWarning,
                stacklevel=3,
            )
    starts = prepared["starts"]
    dimension = starts.shape[-1]
    dense_mass = options["dense_mass"]
    dense_mass = bool(dimension <= DENSE_MASS_MAX_DIMENSION if dense_mass is None else dense_mass)

    # 2. The chains (one program with the progress bar's callbacks, one without).
    settings = NutsSettings(
        num_warmup=options["num_warmup"],
        num_samples=options["num_samples"],
        dense_mass=dense_mass,
        target_accept_prob=options["target_accept_prob"],
        max_tree_depth=options["max_tree_depth"],
    )
    devices = chain_device_count(num_chains)
    arguments = (
        starts,
        prepared["start_values"],
        prepared["chain_keys"],
        prepared["fallback"],
        prepared["covariance"],
    )
    sampler, _, seconds = compiled(
        "nuts",
        program,
        (settings, devices, options["progress"], signature(arguments), potential_fn_gen),
        build_sampler(program, structure, settings, devices, options["progress"]),
        *arguments,
        compiler_options=compiler_options(
            program, num_chains * (settings.num_warmup + settings.num_samples)
        ),
    )
    compile_time += seconds
    start = time.perf_counter()
    draws = run_with_progress(
        sampler,
        num_chains * (settings.num_warmup + settings.num_samples),
        options["progress"],
        program.dynamic,
        *arguments,
    )
    sampling_time = time.perf_counter() - start

    # 3. Constrained draws, log-likelihood, DataTree.
    center = prepared["fallback"][0]
    postprocess, _, seconds = compiled(
        "postprocess",
        program,
        (signature(draws.position),),
        build_postprocess(program, structure),
        draws.position,
        center,
        compiler_options=compiler_options(program, num_chains * settings.num_samples),
    )
    compile_time += seconds
    processed = jax.device_get(postprocess(program.dynamic, draws.position, center))
    samples = processed["samples"]
    predictive = None
    if posterior_predictive:
        predict, _, seconds = compiled(
            "predictive",
            program,
            (signature(samples),),
            build_predictive(program, structure),
            samples,
            prepared["predictive_key"],
        )
        compile_time += seconds
        predictive = jax.device_get(predict(program.dynamic, samples, prepared["predictive_key"]))
    attrs = {
        "sampling_time": sampling_time,
        "compile_time": compile_time,
        "init": source,
        "dense_mass": int(dense_mass),
        "laplace": int(checks["laplace_valid"]),
        "num_warmup": settings.num_warmup,
        "chain_devices": devices,
    }
    postprocessed = None
    if hooks is not None and hooks.postprocess_fn is not None:
        start_point = init_values if init_values is not None else processed["center"]
        postprocessed = hooks.postprocess_fn(samples, start_point, source)
        samples = postprocessed.samples
    if hooks is not None and hooks.dims_fn is not None:
        dims = hooks.dims_fn(samples, structure.observed)
    else:
        from arviz_base.io_numpyro import infer_dims

        model_args, model_kwargs = program.arguments()
        dims = infer_dims(program.model, model_args, model_kwargs)
    tree = to_datatree(
        samples,
        draws,
        processed["log_likelihood"],
        processed["observed"],
        predictive,
        dims,
        settings,
    )
    tree["sample_stats"].attrs.update(attrs)
    if postprocessed is not None:
        tree["posterior"].attrs.update(postprocessed.posterior_attrs)
        for name, group in postprocessed.groups.items():
            tree[name] = group
    divergences = int(np.sum(np.asarray(draws.diverging)))
    if divergences:
        warnings.warn(
            f"{divergences} of {num_chains * settings.num_samples} transitions after warmup "
            "diverged: the sampler did not explore the whole posterior and the draws may be "
            "biased. Raise nuts_options={'target_accept_prob': 0.95} or reparameterize the "
            "model.",
            SamplingWarning,
            stacklevel=3,
        )
    return tree
