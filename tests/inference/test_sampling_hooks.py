"""Sampling hooks: a program of one's own gets a starting point, post-processing and
dimension names from the generic NUTS driver; the mixture's hooks are found without
importing their module first."""

import subprocess
import sys
import textwrap

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr

from gaussmix.inference.mcmc import sample
from gaussmix.inference.sampling_hooks import (
    PostprocessedDraws,
    SamplingHooks,
    register_sampling_hooks,
    sampling_hooks,
)

RUN = {"num_warmup": 100, "num_samples": 100, "num_chains": 1, "progress_bar": False}


def grouped(y, groups):
    """The means of two groups."""
    locs = numpyro.sample("locs", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(locs[groups], 1.0), obs=y)


def grouped_data():
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1], 20)
    return rng.normal(np.array([3.0, -1.0])[groups], 1.0), groups


def hooks_starting_at(start, calls: list):
    """Hooks that start at ``start``, sort the draws of ``locs`` and name the dimensions;
    each call is recorded in ``calls``."""

    def hooks_fn(args, kwargs):
        y, groups = args
        if np.shape(y) != np.shape(groups):
            raise ValueError("y and groups differ in length")

        def initial_values(seed):
            calls.append(("initial_values", seed))
            return start

        def postprocess(samples, start_point, source):
            calls.append(("postprocess", dict(start_point), source))
            group = xr.Dataset({"start_locs": ("group", np.asarray(start_point["locs"]))})
            return PostprocessedDraws(
                {"locs": np.sort(samples["locs"], axis=-1)}, {"ordered": 1}, {"start": group}
            )

        def dims(samples, observed):
            return {"locs": ["group"], **{name: ["data"] for name in observed}}

        return SamplingHooks(initial_values, "custom", postprocess, dims)

    return hooks_fn


def test_a_program_of_ones_own_gets_its_hooks():
    y, groups = grouped_data()
    start = {"locs": np.array([3.0, -1.0])}
    calls = []
    register_sampling_hooks(grouped, hooks_starting_at(start, calls))
    tree = sample(grouped, y, groups, seed=7, **RUN)
    assert calls[0] == ("initial_values", 7)
    name, start_point, source = calls[1]
    # The chains started at the hook's values, passed on as they were.
    assert (name, source) == ("postprocess", "custom")
    np.testing.assert_array_equal(start_point["locs"], start["locs"])
    assert tree.sample_stats.attrs["init"] == "custom"
    # The post-processed draws, attributes, groups and dimension names are the hooks'.
    locs = tree.posterior["locs"]
    assert locs.dims == ("chain", "draw", "group")
    assert np.all(np.diff(locs.values, axis=-1) >= 0)
    assert tree.posterior.attrs["ordered"] == 1
    np.testing.assert_array_equal(tree["start"]["start_locs"].values, start["locs"])
    assert tree.log_likelihood["y"].dims == ("chain", "draw", "data")
    # Arguments the hooks refuse stop the call before anything runs.
    with pytest.raises(ValueError, match="differ in length"):
        sample(grouped, y, groups[:-1], **RUN)
    assert len(calls) == 2


def test_hooks_start_is_checked_and_none_falls_back_to_the_map_search():
    y, groups = grouped_data()
    calls = []
    register_sampling_hooks(grouped, hooks_starting_at({"locs": np.array([np.nan, 0.0])}, calls))
    with pytest.raises(ValueError, match="sampling hooks"):
        sample(grouped, y, groups, **RUN)
    register_sampling_hooks(grouped, hooks_starting_at(None, calls))
    tree = sample(grouped, y, groups, **RUN)
    assert tree.sample_stats.attrs["init"] == "map"
    # The user's init wins: the hooks' starting point is not asked for.
    tree = sample(grouped, y, groups, init={"locs": np.array([3.0, -1.0])}, **RUN)
    assert tree.sample_stats.attrs["init"] == "init"
    kinds = [call[0] for call in calls]
    assert kinds == ["initial_values", "initial_values", "postprocess", "postprocess"]
    assert [call[2] for call in calls[2:]] == ["map", "init"]


def test_a_fixed_hooks_tuple_and_a_bad_one():
    def program():
        numpyro.sample("z", dist.Normal())

    hooks = SamplingHooks(initial_values_label="fixed")
    register_sampling_hooks(program, hooks)
    assert sampling_hooks(program, (), {}) is hooks
    assert sampling_hooks(lambda: None, (), {}) is None
    with pytest.raises(ValueError, match="SamplingHooks"):
        register_sampling_hooks(program, {"initial_values_fn": None})


def test_the_mixture_hooks_are_found_without_importing_their_module():
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from gaussmix.inference.sampling_hooks import sampling_hooks
        from gaussmix.models import gaussian_mixture
        assert "gaussmix.inference.mixture_sampling" not in sys.modules
        hooks = sampling_hooks(gaussian_mixture, (np.zeros((5, 2)),), {"n_components": 2})
        print(hooks.initial_values_label, "gaussmix.inference.mixture_sampling" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["em", "True"]


def spread_prior(y):
    """A program that needs concrete data: its prior scale is computed with NumPy."""
    loc = numpyro.sample("loc", dist.Normal(0.0, 10.0 * float(np.std(y))))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(loc, 1.0), obs=y)


def test_hooks_also_serve_a_program_that_needs_concrete_arguments():
    """Such a program is sampled with its arguments closed over; its hooks still apply."""
    y, _ = grouped_data()

    def postprocess(samples, start_point, source):
        return PostprocessedDraws(samples, {"started_at": float(start_point["loc"])}, {})

    register_sampling_hooks(
        spread_prior,
        SamplingHooks(lambda seed: {"loc": np.asarray(1.0)}, "custom", postprocess),
    )
    tree = sample(spread_prior, y, **RUN)
    assert tree.sample_stats.attrs["init"] == "custom"
    assert tree.posterior.attrs["started_at"] == 1.0
