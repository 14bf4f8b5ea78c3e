"""The compiled CPU kernel of the full-covariance E-step (inference/native.py).

Layers: the kernel against a NumPy float64 reference written from the definitions (features,
softmax, weighted sums), over shapes that exercise every tile remainder and the padding of
the last block of rows; extreme log-probability gaps (exponentials that underflow); vmap;
bit-identical repeated calls; a whole EM fit through the kernel against XLA's blocks; and the
build: cache reuse, a damaged cached library, cache folders that cannot be written or found,
and a clear warning with XLA's path when no library can be built.
"""

import stat
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from gaussmix.inference import em, native


@pytest.fixture(scope="module")
def kernel():
    """Skip where no C++ compiler exists; where one does, the kernel must build."""
    try:
        native._compiler()
    except OSError as error:
        pytest.skip(f"no C++ compiler: {error}")
    if not native.enabled():
        pytest.skip("GAUSSMIX_NATIVE turns the compiled kernel off")
    with warnings.catch_warnings():
        warnings.simplefilter("error", native.NativeBuildWarning)
        assert native.usable(np.float64), native._state.get("reason")


def features(x):
    rows, cols = np.triu_indices(x.shape[1])
    return np.concatenate([x[:, rows] * x[:, cols], x, np.ones((len(x), 1))], axis=1)


def reference(x, weight, natural):
    """(packed (K, F), log-likelihood) from the definitions, in float64."""
    x, weight, natural = (np.asarray(a, np.float64) for a in (x, weight, natural))
    phi = features(x)
    log_prob = phi @ natural
    norm = logsumexp(log_prob, axis=1)
    responsibilities = np.exp(log_prob - norm[:, None])
    return (weight[:, None] * responsibilities).T @ phi, float(weight @ norm)


def problem(n_rows, n_features, n_components, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, n_features))
    weight = rng.uniform(0.0, 2.0, n_rows)
    weight[rng.random(n_rows) < 0.1] = 0.0
    n_columns = n_features * (n_features + 1) // 2 + n_features + 1
    natural = spread * rng.normal(size=(n_columns, n_components)) / np.sqrt(n_columns)
    return x, weight, natural


def run(x, weight, natural, dtype):
    arrays = (jnp.asarray(a, dtype) for a in (x, weight, natural))
    packed, log_likelihood = jax.jit(native.full_statistics)(*arrays)
    return np.asarray(packed, np.float64), float(log_likelihood)


# (N, D, K): one row; component counts around the tile of 6 (1, 5, 6, 7, 13, 16) and a
# feature count that is odd (the M-step's last column alone); rows not a multiple of any
# block; D = 32 (blocks of 64 rows in float64, 128 in float32) with several blocks
SHAPES = [(1, 1, 1), (37, 2, 5), (1000, 5, 7), (513, 8, 13), (700, 32, 16), (200, 3, 6)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_matches_the_definitions(kernel, shape, dtype):
    x, weight, natural = problem(*shape, spread=8.0)
    expected_packed, expected_log_likelihood = reference(x, weight, natural)
    packed, log_likelihood = run(x, weight, natural, dtype)
    tolerance = 1e-12 if dtype == np.float64 else 2e-5
    scale = np.abs(expected_packed).max()
    np.testing.assert_allclose(packed, expected_packed, rtol=0, atol=tolerance * scale)
    assert log_likelihood == pytest.approx(expected_log_likelihood, rel=tolerance)


def test_underflowing_exponentials_give_zero_responsibilities(kernel):
    """Gaps of 10 to 2000 between the components' log probabilities, around the point
    (708 in float64) below which the kernel's exponential is flushed to 0."""
    x, weight, natural = problem(400, 4, 3, seed=1)
    natural[-1] = [0.0, -700.0, -2000.0]  # the constant column: fixed gaps per component
    x[:100] *= 30.0  # rows where the quadratic terms move the gaps by hundreds
    expected_packed, expected_log_likelihood = reference(x, weight, natural)
    packed, log_likelihood = run(x, weight, natural, np.float64)
    assert np.isfinite(packed).all() and np.isfinite(log_likelihood)
    np.testing.assert_allclose(packed, expected_packed, rtol=1e-12, atol=1e-300)
    assert log_likelihood == pytest.approx(expected_log_likelihood, rel=1e-12)


def test_vmap_equals_each_member(kernel):
    members = [problem(150, 3, 4, seed=seed) for seed in range(3)]
    stacked = [jnp.asarray(np.stack(parts)) for parts in zip(*members, strict=True)]
    packed, log_likelihood = jax.jit(jax.vmap(native.full_statistics))(*stacked)
    for index, member in enumerate(members):
        expected_packed, expected_log_likelihood = reference(*member)
        np.testing.assert_allclose(packed[index], expected_packed, rtol=1e-12, atol=1e-12)
        assert float(log_likelihood[index]) == pytest.approx(expected_log_likelihood, rel=1e-12)


def test_repeated_calls_are_bit_identical(kernel):
    """Rows are cut into a fixed number of chunks summed in order, whatever threads run."""
    x, weight, natural = problem(5000, 6, 5, seed=2)
    first = run(x, weight, natural, np.float64)
    for _ in range(3):
        again = run(x, weight, natural, np.float64)
        assert np.array_equal(first[0], again[0]) and first[1] == again[1]


def test_fit_em_through_the_kernel_equals_xla(kernel, monkeypatch):
    """A streamed full-covariance fit (several blocks), with the kernel and with XLA's blocks:
    the same lower bound at every iteration and the same parameters, to rounding."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(3 * k, 1.0 + k, (1500, 3)) for k in range(3)])
    options = dict(n_components=3, covariance_type="full", max_iter=30, tol=0.0, seed=0)
    with_kernel = em.fit_em(x, block_rows=576, **options)
    monkeypatch.setenv("GAUSSMIX_NATIVE", "0")
    assert not native.usable(x.dtype)
    with_xla = em.fit_em(x, block_rows=576, **options)
    np.testing.assert_allclose(with_kernel.lower_bounds, with_xla.lower_bounds, rtol=1e-10)
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(
            with_kernel.params[name], with_xla.params[name], rtol=1e-8, atol=1e-10
        )


def test_build_is_cached_and_atomic(kernel, tmp_path, monkeypatch):
    monkeypatch.setenv("GAUSSMIX_CACHE_DIR", str(tmp_path))
    library = native._build()
    assert library.parent == tmp_path and library.suffix == ".so"
    assert [path.name for path in tmp_path.iterdir()] == [library.name]  # no leftovers
    modified = library.stat().st_mtime_ns
    assert native._build() == library and library.stat().st_mtime_ns == modified
    # a damaged cache file is rebuilt when it fails to load
    library.write_bytes(b"not a shared library")
    loaded = native._open(library)
    assert hasattr(loaded, "GaussmixEmFullStatisticsF64")
    assert library.read_bytes()[:4] == b"\x7fELF"


def test_unwritable_cache_folder_falls_back_to_the_temporary_one(kernel, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.delenv("GAUSSMIX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))  # cannot be created
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    library = native._build()
    assert library.parent.parent == tmp_path / "tmp" and library.exists()


def test_without_a_home_folder_the_cache_is_the_temporary_one(tmp_path, monkeypatch):
    def no_home(cls=None):
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("GAUSSMIX_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", classmethod(no_home))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (folder,) = native._cache_dirs()
    assert folder.parent == tmp_path and folder.name.startswith("gaussmix-")


def fake_compiler(tmp_path, message):
    """A 'compiler' that answers --version and fails on anything else."""
    script = tmp_path / "broken-c++"
    script.write_text(
        f'#!/bin/sh\nif [ "$1" = --version ]; then echo broken 1.0; exit 0; fi\n'
        f'echo "{message}" >&2\nexit 1\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.mark.parametrize("failure", ["missing", "failing"])
def test_failed_build_warns_and_uses_xla(tmp_path, monkeypatch, failure):
    if failure == "missing":
        compiler = tmp_path / "no-such-c++"
    else:
        compiler = fake_compiler(tmp_path, "error: this compiler cannot build anything")
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("GAUSSMIX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_state", {})
    with pytest.warns(native.NativeBuildWarning, match="uses XLA's") as caught:
        assert not native.usable(np.float64)
    if failure == "failing":
        assert "this compiler cannot build anything" in str(caught[0].message)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").glob("*.so"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", native.NativeBuildWarning)  # warned once
        assert not native.usable(np.float64)
    # the statistics still come out, from XLA's blocks
    x, weight, _ = problem(300, 2, 2, seed=4)
    identity = jnp.stack([jnp.eye(2)] * 2)
    parameters = em.MixtureParameters(
        jnp.array([0.5, 0.5]), jnp.array([[-1.0, 0.0], [1.0, 0.0]]), identity, identity
    )
    statistics = em.sufficient_statistics(
        x, parameters, covariance_type="full", centre=np.zeros(2), sample_weight=weight
    )
    assert np.isfinite(np.asarray(statistics.second)).all()
    assert float(jnp.sum(statistics.counts)) == pytest.approx(weight.sum(), rel=1e-12)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("GAUSSMIX_NATIVE", "off")
    monkeypatch.setattr(native, "_state", {})
    assert not native.enabled() and not native.usable(np.float64)
    assert native._state == {}  # nothing was built or loaded
