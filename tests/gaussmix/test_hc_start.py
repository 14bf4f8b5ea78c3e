"""``init_params="hc"``: EM started from mclust's hierarchical clustering (issue 18 item 3).

Skipped until the estimator accepts "hc" (the wiring into ``inference/em/options.py``,
``initialization.py`` and ``fit.py``); then every test here must pass as written.
The start is :func:`gaussmix.inference.em.hierarchical.start_labels` (mclust's defaults:
VVV criterion, SVD transformation, a random subset of 2000 rows above that) turned into
parameters by the model's own M-step from the one-hot responsibilities.
"""

import json
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussmix import GaussianMixture, select_components
from gaussmix.inference import em
from gaussmix.inference.em.hierarchical import start_labels
from gaussmix.inference.em.maximization import maximization_step
from gaussmix.inference.em.statistics import SufficientStatistics
from gaussmix.models import priors

pytestmark = pytest.mark.skipif(
    "hc" not in em.INIT_PARAMS,
    reason="init_params='hc' is not wired into the EM options yet (issue 18 item 3)",
)

REFERENCES = Path(__file__).resolve().parents[1] / "references" / "mclust"


def starting_values(x: np.ndarray, labels: np.ndarray, model: str, k: int) -> dict:
    """The model's maximum-likelihood M-step on the one-hot responsibilities of ``labels``
    (computed here from the statistics' definition), as user starting values."""
    layout = priors.covariance_layout(model)
    centre = x.mean(axis=0)
    xc = x - centre
    resp = np.eye(k)[labels]
    second = {
        "full": np.einsum("nk,ni,nj->kij", resp, xc, xc),
        "tied": xc.T @ xc,
        "diag": resp.T @ xc**2,
        "spherical": resp.T @ np.sum(xc**2, axis=1),
    }[layout]
    statistics = SufficientStatistics(
        *(jnp.asarray(a) for a in (resp.sum(0), resp.T @ xc, second, 0.0, float(len(x))))
    )
    weights, means, _, factor = maximization_step(
        statistics, covariance_type=model, centre=jnp.asarray(centre), reg_covar=1e-6
    )
    factor = np.asarray(factor)
    if layout in ("full", "tied"):
        precisions = factor @ np.swapaxes(factor, -1, -2)
    else:
        precisions = factor**2
    weights = np.asarray(weights)
    return {
        "weights_init": weights / weights.sum(),
        "means_init": np.asarray(means),
        "precisions_init": precisions,
    }


@pytest.fixture
def blobs():
    rng = np.random.default_rng(0)
    shifted = rng.normal(size=(60, 2)) + np.array([4.0, 1.0])
    return np.concatenate([rng.normal(size=(80, 2)) * 0.5, shifted])


@pytest.mark.parametrize("model", ["full", "diag", "EEV", "VII"])
def test_the_start_is_the_m_step_of_the_hc_partition(blobs, model):
    """max_iter=0 keeps the start: the model's M-step on start_labels' groups."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        fitted = GaussianMixture(3, covariance_type=model, init_params="hc", max_iter=0).fit(blobs)
        expected = starting_values(blobs, start_labels(blobs, 3), model, 3)
    np.testing.assert_allclose(fitted.means_, expected["means_init"], rtol=1e-10)
    np.testing.assert_allclose(fitted.weights_, expected["weights_init"], rtol=1e-10)
    np.testing.assert_allclose(fitted.precisions_, expected["precisions_init"], rtol=1e-8)


@pytest.mark.parametrize("hc_model", ["EII", "VII", "EEE", "VVV"])
def test_init_params_names_mclusts_hc_model(blobs, hc_model):
    """init_params="hc-<model>" starts from start_labels(model=<model>) (mclust's
    hcModelName); "hc" is "hc-VVV"."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        fitted = GaussianMixture(4, init_params=f"hc-{hc_model}", max_iter=0).fit(blobs)
    expected = starting_values(blobs, start_labels(blobs, 4, model=hc_model), "full", 4)
    np.testing.assert_allclose(fitted.means_, expected["means_init"], rtol=1e-10)
    np.testing.assert_allclose(fitted.weights_, expected["weights_init"], rtol=1e-10)


def test_the_hc_models_give_other_starts_and_select_components_uses_the_named_one():
    """The criteria differ on elongated clusters (so the test above can tell them
    apart), and a table started from "hc-EII" has the cells of the estimator's
    "hc-EII" fits."""
    rng = np.random.default_rng(1)
    x = np.concatenate(
        [rng.normal(size=(40, 2)) * [3.0, 0.3], rng.normal(size=(40, 2)) * [0.3, 3.0] + 1.0]
    )
    partitions = {model: start_labels(x, 3, model=model) for model in ("EII", "VVV")}
    assert not np.array_equal(partitions["EII"], partitions["VVV"])
    table, best = select_components(x, [3], "full", init_params="hc-EII", seed=0)
    assert best.init_params == "hc-EII"
    alone = GaussianMixture(3, init_params="hc-EII", random_state=0).fit(x)
    np.testing.assert_allclose(table.log_likelihood[0], np.sum(alone.score_samples(x)), rtol=1e-11)


def test_the_fit_equals_em_from_the_same_user_start(blobs):
    ours = GaussianMixture(3, init_params="hc", tol=1e-10, max_iter=500).fit(blobs)
    given = GaussianMixture(
        3, tol=1e-10, max_iter=500, **starting_values(blobs, start_labels(blobs, 3), "VVV", 3)
    ).fit(blobs)
    np.testing.assert_allclose(ours.lower_bound_, given.lower_bound_, rtol=1e-12)
    np.testing.assert_allclose(ours.means_, given.means_, rtol=1e-9)


def test_hc_is_deterministic_and_restarts_only_add(blobs):
    """hc has no randomness below 2000 rows: two fits are equal; with n_init = 5 restart 0
    is the hc start, the others k-means, so the best lower bound can only rise."""
    first = GaussianMixture(4, init_params="hc", random_state=0).fit(blobs)
    second = GaussianMixture(4, init_params="hc", random_state=1).fit(blobs)
    more = GaussianMixture(4, init_params="hc", n_init=5, random_state=0).fit(blobs)
    assert first.lower_bound_ == second.lower_bound_
    assert more.lower_bound_ >= first.lower_bound_


def test_more_components_than_rows_is_a_clear_error():
    with pytest.raises(ValueError, match=r"n_components|rows"):
        GaussianMixture(5, init_params="hc").fit(np.arange(8.0).reshape(4, 2))


@pytest.mark.parametrize("name", ["iris", "faithful", "diabetes", "banknote", "wreath"])
def test_vvv_bic_from_hc_reaches_mclusts(name):
    """mclust's default (VVV), K = 1..9: from the hc start gaussmix's BIC is at least
    mclust's (1e-6 relative) in every cell but at most one per data set (measured with
    scripts/hc_start_bic.py; a cell can differ where EM from the same partition climbs
    to another optimum under gaussmix's reg_covar)."""
    record = json.loads((REFERENCES / f"{name}.json").read_text())
    x = np.asarray(record["data"], dtype=np.float64)
    column = record["models"].index("VVV")
    worse = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        for row, k in enumerate(record["G"]):
            reference = record["bic"][row][column]
            if reference is None:
                continue
            fitted = GaussianMixture(k, init_params="hc", tol=1e-8, max_iter=10_000).fit(x)
            ours, expected = fitted.bic(x), -reference
            if not ours <= expected + 1e-6 * abs(expected):
                worse.append((k, ours, expected))
    assert len(worse) <= 1, worse


# --- the wiring into the EM core (fit_em): labels as an argument, batches, blocks, refusals


def test_batched_datasets_each_start_from_their_own_hc(blobs):
    """A batch (B, N, D) vmaps the labels with the data: dataset b starts from the M-step
    of start_labels of dataset b, not of dataset 0."""
    other = blobs[::-1] * np.array([1.0, -2.0]) + 3.0
    batch = np.stack([blobs, other])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        result = em.fit_em(batch, n_components=3, init_params="hc", max_iter=0)
    for index, data in enumerate(batch):
        expected = starting_values(data, start_labels(data, 3), "full", 3)
        np.testing.assert_allclose(
            result.params["means"][index], expected["means_init"], rtol=1e-10
        )
        np.testing.assert_allclose(
            result.params["weights"][index], expected["weights_init"], rtol=1e-10
        )


def test_labels_are_an_argument_of_the_program_not_a_constant(monkeypatch):
    """Other data of the same shape reuse the compiled fit (no retrace) and still start
    from their own hierarchical clustering."""
    from gaussmix.inference.em import fit as fit_module

    traces = []
    original = fit_module._fit_dataset

    def counting(*args, **kwargs):
        traces.append(1)  # runs only while tracing
        return original(*args, **kwargs)

    monkeypatch.setattr(fit_module, "_fit_dataset", counting)
    rng = np.random.default_rng(3)
    first = np.concatenate([rng.normal(size=(23, 2)), rng.normal(size=(22, 2)) + 5.0])
    second = np.concatenate([rng.normal(size=(10, 2)) - 6.0, rng.normal(size=(35, 2))])
    kwargs = dict(n_components=2, covariance_type="diag", init_params="hc", max_iter=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        results = [em.fit_em(x, **kwargs) for x in (first, second)]
    assert len(traces) == 1
    for x, result in zip((first, second), results, strict=True):
        expected = starting_values(x, start_labels(x, 2), "diag", 2)
        np.testing.assert_allclose(result.params["means"], expected["means_init"], rtol=1e-10)


def test_blocks_of_rows_with_a_padded_last_block_keep_the_start(blobs):
    """140 rows in blocks of 32: the padded rows of the last block belong to no group."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        result = em.fit_em(blobs, n_components=3, init_params="hc", max_iter=0, block_rows=32)
    expected = starting_values(blobs, start_labels(blobs, 3), "full", 3)
    np.testing.assert_allclose(result.params["means"], expected["means_init"], rtol=1e-10)
    np.testing.assert_allclose(result.params["weights"], expected["weights_init"], rtol=1e-10)


def test_above_the_subset_the_start_is_reproducible_from_the_seed():
    """2500 rows: the clustering runs on a subset drawn from the fit's seed; the same seed
    gives the same fit, and the start is start_labels' partition for the drawn seed."""
    from gaussmix.inference.em import fit as fit_module

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(1500, 2)), rng.normal(size=(1000, 2)) * 0.7 + 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        fits = [em.fit_em(x, n_components=2, init_params="hc", max_iter=0, seed=7) for _ in "ab"]
    np.testing.assert_array_equal(fits[0].params["means"], fits[1].params["means"])
    labels = fit_module._hc_labels(x, 2, 7, batched=False)
    assert labels.shape == (2500,) and set(np.unique(labels).tolist()) == {0, 1}
    expected = starting_values(x, labels, "full", 2)
    np.testing.assert_allclose(fits[0].params["means"], expected["means_init"], rtol=1e-10)


def test_restarts_after_the_first_start_from_k_means(blobs):
    """n_init = 3 with hc: restart 0 starts from hc, restarts 1 and 2 from k-means (the
    starts em.initialize gives for them); the best of the three is kept."""
    fit = dict(n_components=4, tol=1e-10, max_iter=1000, seed=2)
    single = em.fit_em(blobs, init_params="hc", **fit)
    several = em.fit_em(blobs, init_params="hc", n_init=3, **fit)
    kmeans_options = em.check_options(n_components=4, init_params="kmeans")
    bounds = [float(single.lower_bound)]
    for restart in (1, 2):
        start = em.initialize(em.restart_key(2, restart=restart), blobs, None, kmeans_options)
        factor = np.asarray(start.precisions_cholesky)
        given = em.fit_em(
            blobs,
            weights_init=np.asarray(start.weights),
            means_init=np.asarray(start.means),
            precisions_init=factor @ np.swapaxes(factor, -1, -2),
            **fit,
        )
        bounds.append(float(given.lower_bound))
    assert float(several.lower_bound) >= float(single.lower_bound)
    np.testing.assert_allclose(float(several.lower_bound), max(bounds), rtol=1e-7)


def test_hc_without_the_data_in_memory_is_refused(blobs):
    options = em.check_options(n_components=2, init_params="hc")
    with pytest.raises(ValueError, match="init_params='hc' needs the data in memory"):
        em.initialize(em.restart_key(0), blobs, None, options)
    with pytest.raises(ValueError, match=r"init_params='hc'.*devices=None"):
        GaussianMixture(2, init_params="hc", devices=jax.devices()).fit(blobs)


def test_non_finite_data_is_refused_before_the_clustering(blobs):
    bad = blobs.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"(?i)nan|finite"):
        em.fit_em(bad, n_components=2, init_params="hc")


def test_sample_weights_count_as_repeated_rows_in_the_start():
    """A row of weight w is w coincident rows in the clustering too: the start (max_iter=0)
    of integer-weighted rows is the start of the repeated rows. Two points of weight 30
    make a heavy third group here, which the unweighted clustering would merge with a
    light one (checked first, so the weights must reach the clustering). Rows of weight 0
    pad the weighted data to the repeated rows' length (one compiled program)."""
    rng = np.random.default_rng(1)
    light = rng.normal(size=(20, 2)) * 0.3
    light[10:] += [4.0, 0.0]
    x = np.concatenate([light, [[2.0, 6.0], [2.2, 6.1]]])
    w = np.ones(len(x), dtype=int)
    w[-2:] = 30
    assert not np.array_equal(start_labels(x, 2), start_labels(x, 2, sample_weight=w))
    repeated = np.repeat(x, w, axis=0)
    padded = np.concatenate([x, x[np.arange(len(repeated) - len(x)) % len(x)]])
    padded_weight = np.concatenate([w, np.zeros(len(repeated) - len(x), dtype=int)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        ours = GaussianMixture(2, init_params="hc", max_iter=0)
        ours.fit(padded, sample_weight=padded_weight)
        theirs = GaussianMixture(2, init_params="hc", max_iter=0).fit(repeated)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-10)
    np.testing.assert_allclose(ours.weights_, theirs.weights_, rtol=1e-10)
    np.testing.assert_allclose(ours.covariances_, theirs.covariances_, rtol=1e-8)
