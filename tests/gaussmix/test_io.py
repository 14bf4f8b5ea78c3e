"""Save and load: a loaded model predicts exactly what the saved one did; no pickle."""

import json
import zipfile

import numpy as np
import numpyro.distributions as dist
import pytest

from gaussmix import GaussianMixture, KMeans, datasets, load, save
from gaussmix.io import FORMAT_VERSION

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@pytest.fixture(scope="module")
def sm1():
    # sm1 with two restarts, as in the demo and the CLI tests: one compilation serves all.
    x, _ = datasets.sm1()
    return x


@pytest.fixture(scope="module")
def models(sm1):
    return {
        covariance_type: GaussianMixture(
            2, covariance_type=covariance_type, n_init=2, random_state=3
        ).fit(sm1)
        for covariance_type in COVARIANCE_TYPES
    }


def header_of(path):
    with np.load(path, allow_pickle=False) as archive:
        return json.loads(str(archive["header"]))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_gaussian_mixture_round_trip_predicts_exactly(tmp_path, sm1, models, covariance_type):
    model = models[covariance_type]
    path = save(model, tmp_path / "model")
    assert path.name == "model.npz"
    loaded = load(path)
    assert type(loaded) is GaussianMixture
    assert loaded.get_params() == model.get_params()
    for method in ("predict", "predict_proba", "score_samples"):
        expected = getattr(model, method)(sm1)
        actual = getattr(loaded, method)(sm1)
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)
    assert loaded.bic(sm1) == model.bic(sm1)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bounds_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
        assert getattr(loaded, name).dtype == getattr(model, name).dtype
    assert (loaded.converged_, loaded.n_iter_, loaded.lower_bound_, loaded.method_) == (
        model.converged_,
        model.n_iter_,
        model.lower_bound_,
        model.method_,
    )
    np.testing.assert_array_equal(loaded.sample(20)[0], model.sample(20)[0])


def test_priors_made_of_numpyro_distributions_round_trip(tmp_path, sm1, models):
    # The priors are hyperparameters: set on a copy of a fitted model (no refit needed).
    model = load(save(models["diag"], tmp_path / "copy.npz"))
    priors = {"means": dist.Normal(np.zeros(2), 10.0), "weights": dist.Dirichlet(np.full(2, 2.0))}
    model.set_params(priors=priors)
    loaded = load(save(model, tmp_path / "m.npz"))
    assert set(loaded.priors) == {"means", "weights"}
    assert isinstance(loaded.priors["means"], dist.Normal)
    np.testing.assert_array_equal(loaded.priors["means"].loc, priors["means"].loc)
    np.testing.assert_array_equal(loaded.priors["means"].scale, 10.0)
    np.testing.assert_array_equal(loaded.priors["weights"].concentration, [2.0, 2.0])
    np.testing.assert_array_equal(loaded.score_samples(sm1), model.score_samples(sm1))
    model.set_params(priors={"means": dist.Normal(0.0, 1.0).expand([2]).to_event(1)})
    with pytest.raises(ValueError, match="Independent is not rebuilt"):
        save(model, tmp_path / "refused.npz")


def test_kmeans_round_trip(tmp_path, sm1):
    model = KMeans(4, random_state=0).fit(sm1)  # the demo's k-means shapes
    loaded = load(save(model, tmp_path / "k.npz"))
    np.testing.assert_array_equal(loaded.predict(sm1), model.predict(sm1))
    np.testing.assert_array_equal(loaded.cluster_centers_, model.cluster_centers_)
    assert loaded.inertia_ == model.inertia_


def test_file_is_a_plain_npz_with_a_json_header(tmp_path, models):
    model = load(save(models["full"], tmp_path / "copy.npz"))
    model.set_params(random_state=np.random.RandomState(0))
    path = save(model, tmp_path / "m.npz")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    assert "header.npy" in names and all(name.endswith(".npy") for name in names)
    header = header_of(path)
    assert header["format"] == "gaussmix" and header["format_version"] == FORMAT_VERSION
    assert header["class"] == "GaussianMixture"
    # A RandomState only seeds fits: it is stored as None.
    assert header["state"]["hyperparameters"]["random_state"] is None
    means = header["state"]["fitted"]["means_"]
    with np.load(path, allow_pickle=False) as archive:
        np.testing.assert_array_equal(archive[means["__array__"]], model.means_)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.npz", "m.npz"]


def test_unfitted_and_foreign_objects_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not fitted yet"):
        save(GaussianMixture(2), tmp_path / "m.npz")
    with pytest.raises(ValueError, match="cannot save a dict"):
        save({"means": [1.0]}, tmp_path / "m.npz")
    assert not list(tmp_path.iterdir())


def test_bad_files_are_refused(tmp_path, models):
    not_ours = tmp_path / "other.npz"
    np.savez(not_ours, x=np.ones(3))
    with pytest.raises(ValueError, match="not a gaussmix model file"):
        load(not_ours)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read"):
        load(garbage)
    path = save(models["full"], tmp_path / "m.npz")
    header = header_of(path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files if key != "header"}
    header["format_version"] = FORMAT_VERSION + 1
    np.savez(tmp_path / "future.npz", header=np.array(json.dumps(header)), **arrays)
    with pytest.raises(ValueError, match="upgrade gaussmix"):
        load(tmp_path / "future.npz")
    header["format_version"] = FORMAT_VERSION
    header["class"] = "os.system"
    np.savez(tmp_path / "evil.npz", header=np.array(json.dumps(header)), **arrays)
    with pytest.raises(ValueError, match="unknown class"):
        load(tmp_path / "evil.npz")


def test_peak_fit_round_trip_predicts_exactly(tmp_path):
    from gaussmix import PeakFit, fit_peaks

    # The reference material's two-Gaussian example (as in the demo).
    x = np.arange(10.0)
    y = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    start = {"peak0_height": 3, "peak0_center": 3, "peak0_sigma": 1}
    start.update(peak1_height=4, peak1_center=6, peak1_sigma=1)
    fit = fit_peaks(x, y, ("gaussian", "gaussian"), init=start)
    loaded = load(save(fit, tmp_path / "peaks.npz"))
    assert type(loaded) is PeakFit and loaded.posterior is None
    assert loaded.lineshapes == fit.lineshapes and loaded.baseline == fit.baseline
    grid = np.linspace(-1.0, 10.0, 57)
    np.testing.assert_array_equal(loaded.predict(grid), fit.predict(grid))
    for name, curve in fit.components(grid).items():
        np.testing.assert_array_equal(loaded.components(grid)[name], curve)
    assert loaded.params == fit.params and loaded.stderr == fit.stderr
    np.testing.assert_array_equal(loaded.covariance, fit.covariance)
    assert loaded.report() == fit.report()
    assert loaded.integrate(0.0, 9.0) == fit.integrate(0.0, 9.0)
