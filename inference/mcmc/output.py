"""From NUTS positions to an ArviZ DataTree: constrained draws, log-likelihood, groups.

Post-processing is one compiled program (:func:`build_postprocess`): the unconstrained
positions are mapped to the sites' supports (deterministic sites included), the
pointwise log-likelihood of every observed site is evaluated at each draw, and the
observed values are read from one trace. :func:`build_predictive` draws the observed
sites given each posterior draw; :func:`to_datatree` assembles the groups.
"""

from collections.abc import Callable, Mapping

import jax
import numpy as np
from numpyro import handlers
from numpyro.infer.util import constrain_fn
from numpyro.primitives import Messenger

from gaussmix.inference.mcmc.chain import Draws, NutsSettings
from gaussmix.inference.mcmc.program import Program, Structure

__all__ = ["Unobserve", "build_postprocess", "build_predictive", "to_datatree"]


def build_postprocess(program: Program, structure: Structure) -> Callable:
    """``build(found)`` of the post-processing, for :func:`~.program.compiled`.

    The compiled ``postprocess(dynamic, positions (C, S, P), center (P,))`` returns a
    dict with ``samples`` (site -> (C, S, ...) constrained values, deterministic sites
    included), ``log_likelihood`` (observed site -> (C, S, N) pointwise
    :math:`\\log p(y_n \\mid \\theta^{(s)})`), ``observed`` (site -> values) and
    ``center`` (the constrained sites at ``center``, the mode the chains started from).
    """

    def build(found: dict):
        def postprocess(dynamic, positions, center):
            args, kwargs = program.arguments(dynamic)

            def constrain(flat):
                return constrain_fn(
                    program.model, args, kwargs, structure.unravel(flat), return_deterministic=True
                )

            def trace(values):
                model = handlers.substitute(handlers.seed(program.model, 0), values)
                return handlers.trace(model).get_trace(*args, **kwargs)

            def log_likelihood(values):
                model_trace = trace(values)
                return {
                    name: model_trace[name]["fn"].log_prob(model_trace[name]["value"])
                    for name in structure.observed
                }

            samples = jax.vmap(jax.vmap(constrain))(positions)
            point = constrain(center)
            center_trace = trace(point)
            return {
                "samples": samples,
                "log_likelihood": jax.vmap(jax.vmap(log_likelihood))(samples),
                "observed": {name: center_trace[name]["value"] for name in structure.observed},
                "center": point,
            }

        return postprocess

    return build


class Unobserve(Messenger):
    """Turn observed sites into sampled ones (posterior predictive draws)."""

    def process_message(self, msg):
        if msg["type"] == "sample" and msg.get("is_observed"):
            msg["value"] = None
            msg["is_observed"] = False


def build_predictive(program: Program, structure: Structure) -> Callable:
    """``build(found)`` of the posterior predictive, for :func:`~.program.compiled`.

    The compiled ``predictive(dynamic, samples, rng_key)`` returns, for each observed
    site, one draw (C, S, ...) given each posterior draw.
    """

    def build(found: dict):
        def predictive(dynamic, samples, rng_key):
            from numpyro.infer import Predictive

            args, kwargs = program.arguments(dynamic)
            shape = jax.tree.leaves(samples)[0].shape[:2]
            flat = jax.tree.map(lambda value: value.reshape((-1, *value.shape[2:])), samples)
            draws = Predictive(
                Unobserve(program.model),
                posterior_samples=flat,
                return_sites=list(structure.observed),
                parallel=True,
            )(rng_key, *args, **kwargs)
            return jax.tree.map(lambda value: value.reshape((*shape, *value.shape[1:])), draws)

        return predictive

    return build


def to_datatree(
    samples: Mapping,
    draws: Draws,
    log_likelihood: Mapping,
    observed: Mapping,
    predictive: Mapping | None,
    dims: Mapping,
    settings: NutsSettings,
):
    """The DataTree of one run (ArviZ's ``from_dict``, sample dims ``chain`` and ``draw``).

    Args:
        samples: site -> (C, S, ...) constrained draws.
        draws: the chains' :class:`~.chain.Draws` (for ``sample_stats``).
        log_likelihood: observed site -> (C, S, N) pointwise log-likelihood.
        observed: observed site -> values.
        predictive: observed site -> (C, S, ...) predictive draws, or None.
        dims: site -> names of its dimensions after (chain, draw).
        settings: the run's settings (``max_tree_depth``).

    Returns:
        ``xarray.DataTree`` with groups ``posterior``, ``sample_stats`` (``lp``,
        ``energy``, ``diverging``, ``n_steps``, ``tree_depth``,
        ``reached_max_tree_depth``, ``acceptance_rate``, ``step_size``),
        ``log_likelihood``, ``observed_data`` and, when given, ``posterior_predictive``.
    """
    from arviz_base import from_dict

    num_steps = np.asarray(draws.num_steps)
    tree_depth = np.floor(np.log2(np.maximum(num_steps, 1))).astype(int) + 1
    stats = {
        "lp": -np.asarray(draws.potential_energy),
        "energy": np.asarray(draws.energy),
        "diverging": np.asarray(draws.diverging),
        "n_steps": num_steps,
        "tree_depth": tree_depth,
        "reached_max_tree_depth": tree_depth > settings.max_tree_depth,
        "acceptance_rate": np.asarray(draws.accept_prob),
        "step_size": np.asarray(draws.step_size),
    }
    groups = {
        "posterior": {name: np.asarray(value) for name, value in samples.items()},
        "sample_stats": stats,
        "log_likelihood": {name: np.asarray(value) for name, value in log_likelihood.items()},
        "observed_data": {name: np.asarray(value) for name, value in observed.items()},
    }
    if predictive is not None:
        groups["posterior_predictive"] = {n: np.asarray(v) for n, v in predictive.items()}
    return from_dict(groups, dims=dims, sample_dims=["chain", "draw"])
