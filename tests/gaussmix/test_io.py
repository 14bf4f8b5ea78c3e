"""Save and load: a loaded model predicts exactly what the saved one did; no pickle."""

import copy
import functools
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import numpyro.distributions as dist
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gaussmix import GaussianMixture, KMeans, datasets, load, save
from gaussmix.io import CLASSES, FITTED_ATTRIBUTES, FORMAT_VERSION

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
    assert_round_trip_predicts_exactly(tmp_path, sm1, models[covariance_type])


@pytest.mark.parametrize("covariance_type", ["EII", "VEI", "EEV"])
def test_mclust_models_round_trip_in_their_storage_layouts(tmp_path, sm1, covariance_type):
    # One model per storage layout that is not a classic type's own: spherical, diag, full.
    model = GaussianMixture(2, covariance_type=covariance_type, random_state=3).fit(sm1)
    assert_round_trip_predicts_exactly(tmp_path, sm1, model)
    # Relabelled as a model of another layout, the stored arrays no longer fit it.
    header, arrays = parts_of(save(model, tmp_path / "model.npz"))
    other = "EEV" if covariance_type != "EEV" else "EII"
    changed = with_state(header, "hyperparameters", "covariance_type", value=other)
    refused(write(tmp_path / "m.npz", changed, arrays), r"fitted\.covariances_ has shape")


def assert_round_trip_predicts_exactly(tmp_path, data, model):
    sm1 = data
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
    with pytest.raises(ValueError, match="not a gaussmix model file"):
        load(garbage)
    path = save(models["full"], tmp_path / "m.npz")
    header = header_of(path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files if key != "header"}
    header["format_version"] = FORMAT_VERSION + 1
    np.savez(tmp_path / "future.npz", header=np.array(json.dumps(header)), **arrays)
    with pytest.raises(ValueError, match="Upgrade gaussmix"):
        load(tmp_path / "future.npz")
    header["format_version"] = FORMAT_VERSION
    header["class"] = "os.system"
    np.savez(tmp_path / "evil.npz", header=np.array(json.dumps(header)), **arrays)
    with pytest.raises(ValueError, match="unknown class"):
        load(tmp_path / "evil.npz")


@pytest.fixture(scope="module")
def two_gaussian_fit():
    """The reference material's two-Gaussian example (as in the demo), fitted once for the
    round trip and the mutated headers (one set of compiled programs for both)."""
    from gaussmix import fit_peaks

    x = np.arange(10.0)
    y = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    start = {"peak0_height": 3, "peak0_center": 3, "peak0_sigma": 1}
    start.update(peak1_height=4, peak1_center=6, peak1_sigma=1)
    return fit_peaks(x, y, ("gaussian", "gaussian"), init=start)


def test_peak_fit_round_trip_predicts_exactly(tmp_path, two_gaussian_fit):
    from gaussmix import PeakFit

    fit = two_gaussian_fit
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


# -- what load refuses: every damaged, truncated or foreign file is a ValueError ---------


def parts_of(path):
    """The header (dict) and the arrays of a saved file."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files if key != "header"}
        return json.loads(str(archive["header"])), arrays


def named_arrays(value):
    """The array keys a header (or part of one) names."""
    if isinstance(value, dict):
        own = {value["__array__"]} if isinstance(value.get("__array__"), str) else set()
        return own.union(*(named_arrays(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(named_arrays(item) for item in value))
    return set()


def write(path, header, arrays, prune=False):
    """A file like save's, with this header (a dict, or JSON text as given) and arrays
    (with ``prune``, only those the header names)."""
    if prune:
        arrays = {key: value for key, value in arrays.items() if key in named_arrays(header)}
    text = header if isinstance(header, str) else json.dumps(header)
    with open(path, "wb") as file:
        np.savez(file, header=np.array(text), **arrays)
    return path


def refused(path, match):
    """load(path) raises exactly ValueError (no subclass), naming the file and ``match``."""
    with pytest.raises(ValueError, match=match) as caught:
        load(path)
    assert type(caught.value) is ValueError
    assert str(path) in str(caught.value)
    return str(caught.value)


def array_key(header, *names):
    """The member key of the array at header["state"][names[0]][names[1]]..."""
    node = header["state"]
    for name in names:
        node = node[name]
    return node["__array__"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, models):
    """A saved full-covariance model (two components, two features) and its parts."""
    path = save(models["full"], tmp_path_factory.mktemp("saved") / "model.npz")
    return path, *parts_of(path)


def test_truncated_files_are_refused_at_every_cut(tmp_path, saved):
    data = saved[0].read_bytes()
    # 20 cut points from the empty file to one byte short, through every part of the zip.
    for cut in np.linspace(0, len(data) - 1, 20).astype(int):
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(data[:cut])
        refused(path, "empty|truncated|damaged|not a gaussmix")


def test_flipped_bits_anywhere_are_refused_or_harmless(tmp_path, saved, sm1, models):
    data = saved[0].read_bytes()
    expected = models["full"].predict_proba(sm1)
    for offset in np.linspace(0, len(data) - 1, 25).astype(int):
        damaged = bytearray(data)
        damaged[offset] ^= 0x10
        path = tmp_path / f"flip{offset}.npz"
        path.write_bytes(bytes(damaged))
        try:
            loaded = load(path)
        except ValueError as error:
            assert type(error) is ValueError and str(path) in str(error)
        else:  # a flip in what zip does not check (a time stamp): the same model
            np.testing.assert_array_equal(loaded.predict_proba(sm1), expected)


def test_flipped_bits_in_the_header_text_are_refused_or_valid(tmp_path, saved, sm1):
    _path, header, arrays = saved
    text = json.dumps(header)
    for position in np.linspace(0, len(text) - 1, 30).astype(int):
        changed = text[:position] + chr(ord(text[position]) ^ 0x04) + text[position + 1 :]
        target = write(tmp_path / f"text{position}.npz", changed, arrays)
        try:
            loaded = load(target)
        except ValueError as error:
            assert type(error) is ValueError and str(target) in str(error)
        else:
            assert type(loaded) is GaussianMixture
            assert np.all(np.isfinite(loaded.score_samples(sm1)))


def test_foreign_files_are_refused(tmp_path):
    np.save(tmp_path / "array.npy", np.ones(3))
    refused(tmp_path / "array.npy", r"single NumPy array \(.npy\)")
    (tmp_path / "empty.npz").write_bytes(b"")
    refused(tmp_path / "empty.npz", "the file is empty")
    (tmp_path / "notes.npz").write_text("means: 1, 2\n")
    refused(tmp_path / "notes.npz", r"not a zip/.npz archive")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("hello.txt", "hello")
    refused(tmp_path / "other.zip", r"no header \(it holds \['hello.txt'\]\)")
    np.savez(tmp_path / "savez.npz", x=np.ones(3), y=np.zeros(2))
    refused(tmp_path / "savez.npz", r"no header \(it holds \['x', 'y'\]\)")
    refused(tmp_path / "missing.npz", "no such file")


def test_folders_and_fifos_are_refused_without_opening_them(tmp_path):
    refused(tmp_path, "it is a folder")
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    # Opening a FIFO with no writer blocks: reaching the assertion shows it was not opened.
    refused(fifo, "not a regular file")


def test_headers_that_are_not_gaussmix_headers_are_refused(tmp_path, saved):
    _, header, arrays = saved
    refused(write(tmp_path / "json.npz", '{"format": "gaussmix", ', arrays), "not valid JSON")
    refused(write(tmp_path / "list.npz", "[1, 2]", arrays), "JSON list, not an object")
    refused(
        write(tmp_path / "nan.npz", json.dumps(header).replace("1e-06", "NaN"), arrays),
        "holds NaN",
    )
    duplicated = json.dumps(header).replace(
        '"format": "gaussmix"', '"class": "KMeans", "format": "gaussmix"'
    )
    refused(write(tmp_path / "dup.npz", duplicated, arrays), r"repeats the key\(s\) \['class'\]")
    for changes, match in [
        ({"format": "other"}, "not a gaussmix model file"),
        ({"extra": 1}, r"unknown keys \['extra'\]"),
        ({"format_version": "1"}, "not a version number"),
        ({"format_version": FORMAT_VERSION + 1}, "Upgrade gaussmix"),
        ({"class": "os.system"}, "unknown class 'os.system'"),
        ({"class": "__class__"}, "unknown class"),
        ({"state": [1]}, "state is not a JSON object"),
    ]:
        refused(write(tmp_path / "h.npz", {**header, **changes}, arrays), match)


def with_state(header, *names, value=None, delete=False):
    """A copy of ``header`` with header["state"][names...] set to value (or deleted)."""
    changed = copy.deepcopy(header)
    node = changed["state"]
    for name in names[:-1]:
        node = node[name]
    if delete:
        del node[names[-1]]
    else:
        node[names[-1]] = value
    return changed


@pytest.mark.parametrize(
    ("names", "value", "match"),
    [
        (
            ("fitted", "__dict__"),
            {"means_": 1},
            r"attribute\(s\) \['__dict__'\] that a GaussianMixture",
        ),
        (("fitted", "__class__"), "KMeans", r"\['__class__'\]"),
        (("fitted", "predict"), None, r"\['predict'\]"),
        (("hyperparameters", "__init__"), None, r"no hyperparameter\(s\) \['__init__'\]"),
        (("hyperparameters", "n_components"), 3, r"fitted.weights_ has shape \(2,\)"),
        (("hyperparameters", "covariance_type"), "banana", "covariance_type"),
        (("hyperparameters", "random_state"), -1, r"random_state must be None or an int"),
        (("hyperparameters", "tol"), "small", "tol"),
        (("hyperparameters", "priors"), {"means": 1.0}, "not a distribution"),
        (("hyperparameters", "priors"), {"bogus": None}, "unknown prior site"),
        (("fitted", "n_iter_"), "seven", "fitted.n_iter_ must be an integer"),
        (("fitted", "converged_"), 1, "fitted.converged_ must be true or false"),
        (
            ("fitted", "n_features_in_"),
            3,
            r"fitted.means_ has shape \(2, 2\); it must have shape \(2, 3\)",
        ),
        (("fitted", "method_"), "magic", "fitted.method_"),
        (("fitted", "lower_bound_"), {"__float__": "nan"}, "fitted.lower_bound_ is NaN"),
        (("fitted", "means_"), [[0.0, 0.0], [1.0, 1.0]], "must be an array"),
        (
            ("fitted", "means_", "__array__"),
            "missing",
            "names the array missing.npy, which the file lacks",
        ),
        (("fitted", "means_", "__array__"), "header", "not an array member"),
        (("fitted", "means_", "extra"), True, "only jax and scalar flags"),
        (("fitted", "means_", "scalar"), True, r"marked scalar but has shape \(2, 2\)"),
        (("fitted", "_scales"), {"__tuple__": 1}, "__tuple__ must hold a list"),
        (("fitted", "_scales"), {"__float__": "1e400"}, "must be 'nan', 'inf' or '-inf'"),
        (("fitted", "_scales"), {"__import__": "os"}, r"unknown markers \['__import__'\]"),
        (("fitted", "_online_record"), {"centre": 1}, "fitted._online_record must be an object"),
    ],
)
def test_malformed_state_fields_are_refused(tmp_path, saved, names, value, match):
    _, header, arrays = saved
    changed = with_state(header, *names, value=value)
    refused(write(tmp_path / "m.npz", changed, arrays, prune=True), match)


def test_missing_fitted_attributes_and_arrays_are_refused(tmp_path, saved):
    _, header, arrays = saved
    path = write(tmp_path / "m.npz", with_state(header, "fitted", "weights_", delete=True), arrays)
    refused(path, r"lacks the fitted attribute\(s\) \['weights_'\]")
    means = array_key(header, "fitted", "means_")
    fewer = {key: value for key, value in arrays.items() if key != means}
    refused(
        write(tmp_path / "a.npz", header, fewer),
        f"names the array {means}.npy, which the file lacks",
    )
    refused(
        write(tmp_path / "b.npz", header, {**arrays, "extra": np.ones(2)}),
        r"\['extra.npy'\] that its header does not name",
    )
    # The same array named twice (save never shares one).
    twice = with_state(header, "fitted", "weights_", value={"__array__": means, "jax": False})
    refused(write(tmp_path / "c.npz", twice, fewer | {means: arrays[means]}), "name the same array")


def test_deeply_nested_headers_are_refused(tmp_path, saved):
    _, header, arrays = saved
    bomb = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit
    refused(write(tmp_path / "bomb.npz", bomb, arrays), "nests deeper than")
    nested = with_state(
        header, "fitted", "_online_bounds", value=functools.reduce(lambda v, _: [v], range(50), 1.0)
    )
    refused(write(tmp_path / "nested.npz", nested, arrays), "nests deeper than")


@pytest.mark.parametrize(
    ("covariance_type", "name", "change", "match"),
    [
        ("full", "weights_", lambda w: w * 0.9, r"fitted.weights_ sums to 0.9"),
        ("full", "weights_", lambda w: w[::-1] * [-1.0, 2.0] + [0.0, 0.0], "negative weights"),
        (
            "full",
            "covariances_",
            lambda c: np.stack([[[1.0, 2.0], [2.0, 1.0]]] * 2),
            "not positive definite",
        ),
        ("full", "covariances_", lambda c: c + np.array([[0.0, 1.0], [0.0, 0.0]]), "not symmetric"),
        ("tied", "covariances_", lambda c: -c, "not positive definite"),
        ("diag", "covariances_", lambda c: -c, "variances <= 0"),
        ("spherical", "covariances_", lambda c: c * 0.0, "variances <= 0"),
        ("full", "precisions_cholesky_", lambda u: np.swapaxes(u, -1, -2), "not upper triangular"),
        ("diag", "precisions_cholesky_", lambda u: -u, "values <= 0"),
        ("full", "precisions_", lambda p: p * 1.01, "not the product"),
        ("full", "means_", lambda m: m * np.nan, "NaN or infinite"),
        ("full", "means_", lambda m: m[:1], r"shape \(1, 2\); it must have shape \(2, 2\)"),
        ("diag", "covariances_", lambda c: c[0], r"shape \(2,\); it must have shape \(2, 2\)"),
        ("full", "weights_", lambda w: w.astype(complex), "dtype complex128 is not a boolean"),
        ("full", "lower_bounds_", lambda b: np.concatenate([b, b]), "at most n_iter_"),
    ],
)
def test_inconsistent_fitted_arrays_are_refused(
    tmp_path, models, covariance_type, name, change, match
):
    header, arrays = parts_of(save(models[covariance_type], tmp_path / "model.npz"))
    key = array_key(header, "fitted", name)
    arrays[key] = change(arrays[key])
    refused(write(tmp_path / "changed.npz", header, arrays), match)


def test_declared_shapes_and_dtypes_must_match_the_bytes(tmp_path, saved):
    path, header, _arrays = saved
    means = array_key(header, "fitted", "means_")

    def with_member(data, name):
        target = tmp_path / name
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as archive:
            for info in source.infolist():
                content = data if info.filename == f"{means}.npy" else source.read(info)
                archive.writestr(info.filename, content)
        return target

    def npy(header_fields, data):
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, header_fields)
        return buffer.getvalue() + data

    huge = npy({"descr": "<f8", "fortran_order": False, "shape": (10**12, 10**6)}, b"\0" * 32)
    refused(with_member(huge, "huge.npz"), r"declares shape \(1000000000000, 1000000\)")
    short = npy({"descr": "<f8", "fortran_order": False, "shape": (2, 2)}, b"\0" * 31)
    refused(
        with_member(short, "short.npz"),
        r"declares shape \(2, 2\) of float64 \(32 bytes\) but holds 31",
    )


class _Exploit:
    """A pickle that would record that it ran."""

    ran = False

    def __reduce__(self):
        return (_record_run, ())


def _record_run():
    _Exploit.ran = True
    return "ran"


def test_pickled_objects_in_a_file_are_never_unpickled(tmp_path, saved):
    _, header, arrays = saved
    means = array_key(header, "fitted", "means_")
    arrays = {**arrays, means: np.array([_Exploit()], dtype=object)}
    path = tmp_path / "exploit.npz"
    with open(path, "wb") as file:
        np.savez(file, header=np.array(json.dumps(header)), **arrays, allow_pickle=True)
    refused(path, "holds objects")
    assert not _Exploit.ran


@pytest.mark.parametrize(
    ("prior", "match"),
    [
        ({"__distribution__": "Distribution", "arguments": {}}, "no parameters to rebuild"),
        ({"__distribution__": "os.system", "arguments": {}}, "not a numpyro distribution"),
        ({"__distribution__": "__class__", "arguments": {}}, "not a numpyro distribution"),
        ({"__distribution__": "constraints", "arguments": {}}, "not a numpyro distribution"),
        (
            {"__distribution__": "Normal", "arguments": {"loc": 0.0, "scale": -1.0}},
            "invalid scale",
        ),
        (
            {"__distribution__": "Normal", "arguments": {"validate_args": True}},
            r"takes no argument\(s\)",
        ),
        ({"__distribution__": "Normal", "arguments": {"loc": "zero"}}, "not a number or array"),
        ({"__distribution__": "Normal", "arguments": 3}, "arguments must be an object"),
    ],
)
def test_only_valid_numpyro_distributions_are_built(tmp_path, saved, prior, match):
    _, header, arrays = saved
    changed = with_state(header, "hyperparameters", "priors", value={"means": prior})
    refused(write(tmp_path / "prior.npz", changed, arrays), match)


def test_fitted_attributes_allow_list_is_what_fit_sets(tmp_path, sm1, models):
    # Every attribute that fit and partial_fit set is one load accepts, and every required
    # one is set: a new attribute in an estimator fails here, not in a user's save.
    online = GaussianMixture(2, covariance_type="full", priors="default", random_state=0)
    online.partial_fit(sm1[:200]).partial_fit(sm1[200:])
    estimators = [*models.values(), online, KMeans(4, random_state=0).fit(sm1)]
    for estimator in estimators:
        name = type(estimator).__name__
        attributes = set(vars(estimator)) - set(estimator.get_params())
        assert attributes <= set(FITTED_ATTRIBUTES[name])
        assert {key for key, required in FITTED_ATTRIBUTES[name].items() if required} <= attributes
    model = load(save(models["diag"], tmp_path / "copy.npz"))
    model.extra_ = 1
    with pytest.raises(ValueError, match=r"attribute\(s\) \['extra_'\] are not among"):
        save(model, tmp_path / "refused.npz")


def test_online_state_round_trips_and_partial_fit_continues(tmp_path, sm1):
    model = GaussianMixture(2, covariance_type="full", priors="default", random_state=0)
    model.partial_fit(sm1[:150]).partial_fit(sm1[150:300])
    loaded = load(save(model, tmp_path / "online.npz"))
    np.testing.assert_array_equal(loaded.predict_proba(sm1), model.predict_proba(sm1))
    np.testing.assert_array_equal(
        loaded.partial_fit(sm1[300:]).means_, model.partial_fit(sm1[300:]).means_
    )
    header, arrays = parts_of(tmp_path / "online.npz")
    key = array_key(header, "fitted", "_online_record", "statistics", "counts")
    arrays[key] = -arrays[key]
    refused(write(tmp_path / "bad.npz", header, arrays), "statistics.counts holds negative counts")


def test_feature_names_and_zero_iterations_round_trip(tmp_path, sm1):
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(sm1, columns=["a", "b"])
    model = GaussianMixture(2, random_state=0).fit(frame)
    loaded = load(save(model, tmp_path / "names.npz"))
    assert loaded.feature_names_in_.dtype == object
    assert loaded.feature_names_in_.tolist() == ["a", "b"]
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
    unfitted = GaussianMixture(2, max_iter=0, random_state=0).fit(sm1)
    loaded = load(save(unfitted, tmp_path / "zero.npz"))
    assert loaded.lower_bound_ == -np.inf and loaded.n_iter_ == 0


def test_batched_peak_fit_with_model_options_round_trips(tmp_path):
    from gaussmix import fit_peaks

    x = np.linspace(0.0, 10.0, 50)
    # A Gaussian and a Lorentzian (gamma 0.5) sharing a centre, on a line.
    lorentzian = 2.0 * 0.25 / ((x - 4.0) ** 2 + 0.25)
    y = 3.0 * np.exp(-0.5 * (x - 4.0) ** 2) + lorentzian + 0.1 * x + 0.01 * np.sin(7.0 * x)
    spectra = np.stack([y, 1.1 * y, 0.9 * y])
    spectra[1, 3] = np.nan
    fit = fit_peaks(
        x, spectra, ("gaussian", "lorentzian"), baseline="linear", nan_policy="omit",
        ties={"peak1_center": "peak0_center"}, fixed={"peak1_gamma": 0.5},
        priors={"peak0_sigma": dist.Uniform(0.01, 5.0)},
    )  # fmt: skip
    loaded = load(save(fit, tmp_path / "batch.npz"))
    np.testing.assert_array_equal(loaded.predict(x), fit.predict(x))
    np.testing.assert_array_equal(loaded.mask, fit.mask)
    assert loaded.ties == fit.ties and loaded.fixed == fit.fixed
    header, arrays = parts_of(tmp_path / "batch.npz")
    fields = header["state"]["fields"]
    for change, match in [
        ({"lineshapes": {"__tuple__": ["gaussian", "octopus"]}}, "Unknown lineshape 'octopus'"),
        ({"baseline": 10**9}, "more coefficients than params"),
        ({"backend": "magic"}, "fields.backend"),
        ({"n_parameters": 99}, "fields.n_parameters must be"),
        ({"degrees_of_freedom": -1.0}, "degrees_of_freedom"),
        ({"fixed": {"peak1_gamma": -1.0}}, "outside its support"),
        ({"priors": {"peak0_sigma": {"__distribution__": "Normal", "arguments": {}}}}, "support"),
        (
            {"params": {**fields["params"], "peak7_height": 1.0}},
            r"unknown parameter\(s\) \['peak7_height'\]",
        ),
        ({"stderr": {"__dict__": 1.0}}, r"unknown markers \['__dict__'\]"),
    ]:
        changed = copy.deepcopy(header)
        changed["state"]["fields"].update(change)
        refused(write(tmp_path / "changed.npz", changed, arrays, prune=True), match)
    y_key = fields["y"]["__array__"]
    spoiled = {**arrays, y_key: np.where(fit.mask, np.nan, arrays[y_key])}
    refused(write(tmp_path / "nan.npz", header, spoiled), "NaN or infinite values where it is not")


def test_every_savable_class_round_trips():
    # The round-trip tests above cover each class of CLASSES.
    covered = {"BayesianGaussianMixture", "GaussianMixture", "KMeans", "PeakFit"}
    # BayesianGaussianMixture: tests/gaussmix/test_bayesian_mixture.py
    assert set(CLASSES) == covered


# -- property: any change to a valid header is refused or gives a valid model --------------

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6) | st.sampled_from(["__dict__", "full", "a0", "-inf", "gaussmix"])
    | st.builds(lambda k, j: {"__array__": k, "jax": j}, st.sampled_from(["a0", "a1", "a3", "a99", "header"]), st.booleans())
    | st.sampled_from([{"__float__": "nan"}, {"__float__": "-inf"}, {"__tuple__": []}]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)  # fmt: skip


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _mutate(header, data):
    changed = copy.deepcopy(header)
    paths = [path for path in _paths(changed) if path]
    path = data.draw(st.sampled_from(paths))
    parent = functools.reduce(lambda node, key: node[key], path[:-1], changed)
    operation = data.draw(st.sampled_from(["replace", "delete", "insert", "rename"]))
    if operation == "replace":
        parent[path[-1]] = data.draw(_JSON_VALUES)
    elif operation == "delete":
        del parent[path[-1]]
    elif operation == "insert" and isinstance(parent, dict):
        parent[data.draw(st.text(max_size=8) | st.sampled_from(["__dict__", "_scales", "tol"]))] = (
            data.draw(_JSON_VALUES)
        )
    elif operation == "insert":
        parent.insert(path[-1], data.draw(_JSON_VALUES))
    elif isinstance(parent, dict):
        parent[data.draw(st.text(max_size=8))] = parent.pop(path[-1])
    return changed


@pytest.fixture(scope="module")
def peak_file(tmp_path_factory, two_gaussian_fit):
    # The round trip's fit: a model of its own (one Gaussian on a constant) compiled a
    # second fit, delta method and curve for nothing the mutations need; the baseline
    # fields' checks have their own cases in test_batched_peak_fit_with_model_options.
    return save(two_gaussian_fit, tmp_path_factory.mktemp("peaks") / "peaks.npz")


@pytest.mark.parametrize("which", ["GaussianMixture", "PeakFit"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_headers_are_refused_or_valid(saved, peak_file, sm1, which, data):
    path = saved[0] if which == "GaussianMixture" else peak_file
    header, arrays = parts_of(path)
    changed = _mutate(header, data)
    with tempfile.TemporaryDirectory() as folder:
        target = write(Path(folder) / "mutated.npz", changed, arrays, prune=True)
        try:
            loaded = load(target)
        except ValueError as error:
            assert type(error) is ValueError and str(target) in str(error)
            return
    assert type(loaded).__name__ == which
    # Valid: it predicts finite values (weights, covariances and shapes were checked).
    if which == "GaussianMixture":
        assert np.all(np.isfinite(loaded.score_samples(sm1[:50])))
    else:
        assert np.all(np.isfinite(loaded.predict()))
