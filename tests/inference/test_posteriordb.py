"""Against posteriordb's reference posterior of low_dim_gauss_mix (10 x 1000 Stan draws).

The Stan program::

    ordered[2] mu; vector<lower=0>[2] sigma; real<lower=0, upper=1> theta;
    mu ~ normal(0, 2); sigma ~ normal(0, 2); theta ~ beta(5, 5);
    y ~ log_mix(theta, normal(mu[1], sigma[1]), normal(mu[2], sigma[2]));

is run twice here: as gaussmix's mixture program (exchangeable components, Dirichlet(5, 5)
weights = Beta(5, 5) on theta, relabeled by ordering the means, which is exactly Stan's
``ordered`` restriction of the same posterior) and as the same model written plainly in
NumPyro (ordered transform) through the generic :func:`sample`.
"""

import functools
import json
import zipfile

import arviz_stats
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from arviz_base import from_dict

from gaussmix.inference.diagnostics import SamplingWarning, diagnose
from gaussmix.inference.mcmc import sample, sample_mixture

PRIORS = {
    "weights": dist.Dirichlet(jnp.array([5.0, 5.0])),
    "means": dist.Normal(0.0, 2.0),
    "scales": dist.HalfNormal(2.0),
}
#: reference name -> (our site, index)
MIXTURE_NAMES = {
    "mu[1]": ("means", (0, 0)),
    "mu[2]": ("means", (1, 0)),
    "sigma[1]": ("scales", (0,)),
    "sigma[2]": ("scales", (1,)),
    "theta": ("weights", (0,)),
}
PLAIN_NAMES = {
    "mu[1]": ("mu", (0,)),
    "mu[2]": ("mu", (1,)),
    "sigma[1]": ("sigma", (0,)),
    "sigma[2]": ("sigma", (1,)),
    "theta": ("theta", ()),
}


def low_dim_gauss_mix(y):
    """The Stan program, plainly in NumPyro."""
    # Stan's ordered[2] with a normal(0, 2) density on each coordinate.
    mu = numpyro.sample("mu", dist.ImproperUniform(dist.constraints.ordered_vector, (), (2,)))
    numpyro.factor("mu_prior", dist.Normal(0.0, 2.0).log_prob(mu).sum())
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
    mixing = dist.Categorical(probs=jnp.stack([theta, 1.0 - theta]))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.MixtureSameFamily(mixing, dist.Normal(mu, sigma)), obs=y)


@pytest.fixture
def reference(shared_data):
    return _reference(shared_data("posteriordb", "low_dim_gauss_mix-low_dim_gauss_mix.json.zip"))


@functools.cache
def _reference(path):
    with zipfile.ZipFile(path) as archive:
        chains = json.loads(archive.read("low_dim_gauss_mix-low_dim_gauss_mix.json"))
    draws = {name: np.array([chain[name] for chain in chains]) for name in chains[0]}
    assert draws["theta"].shape == (10, 1000)
    tree = from_dict({"posterior": draws})
    mcse = arviz_stats.mcse(tree)
    mcse_sd = arviz_stats.mcse(tree, method="sd")
    return {
        name: (value.mean(), value.std(ddof=1), float(mcse[name]), float(mcse_sd[name]))
        for name, value in draws.items()
    }


def data(shared_data, name):
    return load(shared_data("posteriordb", f"{name}.json"))


def load(path):
    with open(path) as file:
        content = json.load(file)
    y = np.asarray(content["y"], float)
    assert y.shape == (content["N"],)
    return y


def compare_to_reference(tree, reference, names):
    summary = arviz_stats.summary(tree, round_to="none")
    assert int(tree.sample_stats["diverging"].values.sum()) == 0
    for reference_name, (site, index) in names.items():
        label = site + (f"[{', '.join(map(str, index))}]" if index else "")
        row = summary.loc[label]
        mean, sd, mcse, mcse_sd = reference[reference_name]
        # Both estimates carry Monte Carlo error: 4 combined standard errors, false alarm
        # 6e-5 per check, 6e-4 for the ten. For the sd (ESS ~5000 here and in the
        # reference) that is 6.5-7.1 % of the sd (was a fixed 10 %); measured <= 1.7 %.
        tolerance = 4 * np.hypot(row["mcse_mean"], mcse)
        assert abs(row["mean"] - mean) < tolerance, (reference_name, row["mean"], mean)
        tolerance = 4 * np.hypot(row["mcse_sd"], mcse_sd)
        assert abs(row["sd"] - sd) < tolerance, (reference_name, row["sd"], sd, tolerance)
        assert row["r_hat"] < 1.01, reference_name


@pytest.fixture
def mixture_run(shared_data):
    return _mixture_run(shared_data("posteriordb", "low_dim_gauss_mix.json"))


@functools.cache
def _mixture_run(path):
    return sample_mixture(
        load(path),
        n_components=2,
        covariance_type="spherical",
        priors=PRIORS,
        progress_bar=False,
    )


def test_mixture_program_matches_the_reference(mixture_run, reference):
    assert mixture_run.posterior.attrs["relabel_method"] == "order"
    compare_to_reference(mixture_run, reference, MIXTURE_NAMES)
    report = diagnose(mixture_run)
    assert report.ok, report.problems


def test_plain_numpyro_program_matches_the_reference(shared_data, reference):
    tree = sample(low_dim_gauss_mix, data(shared_data, "low_dim_gauss_mix"), progress_bar=False)
    assert tree.sample_stats.attrs["init"] == "map"
    compare_to_reference(tree, reference, PLAIN_NAMES)


def test_poorly_separated_components_get_a_warning_not_a_confident_summary(
    shared_data, mixture_run
):
    with pytest.warns(SamplingWarning):
        tree = sample_mixture(
            data(shared_data, "low_dim_gauss_mix_collapse"),
            n_components=2,
            covariance_type="spherical",
            priors=PRIORS,
            progress_bar=False,
        )
        report = diagnose(tree)
    assert not report.ok
    # Which symptom shows depends on where the chains start: chains that meet different
    # labellings swap labels; chains started at the posterior mode (issue 17) stay with
    # one and show too few effective draws and divergences. Either way: no confidence.
    symptoms = ("swap labels", "ESS <", "diverged", "R-hat")
    assert any(s in problem for problem in report.problems for s in symptoms), report.problems
    text = str(report)
    assert "WARNING" in text and "NOT reliable" in text
    assert text.index("WARNING") < text.index("Unreliable estimates")
