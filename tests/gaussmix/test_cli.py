"""The ``gaussmix`` command: success paths, and every bad-input path ending as exit code 2
with exactly one line on stderr, no traceback and no output folder left behind."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gaussmix import cli
from gaussmix.cli import demo, fit_mixture, fit_peaks
from gaussmix.cli.run import Run, show_progress

EXIT_USAGE = 2


def run_main(capsys, *argv):
    """Run the command in-process; returns (exit code, stdout, stderr lines)."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def assert_usage_error(capsys, out: Path, *argv, match: str):
    code, _, err = run_main(capsys, *argv)
    assert code == EXIT_USAGE
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    assert err[0].startswith("gaussmix"), err[0]
    assert match.lower() in err[0].lower(), err[0]
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*")), "temporary folder left behind"
    return err[0]


@pytest.fixture
def two_blobs():
    """Two separated 2-D Gaussian clusters, 60 points each (exactly as written)."""
    rng = np.random.default_rng(0)
    return np.concatenate(
        [rng.normal([0.0, 0.0], 0.5, (60, 2)), rng.normal([4.0, 4.0], 0.5, (60, 2))]
    )


def write_csv(path: Path, header: str, rows) -> Path:
    lines = [header, *(",".join(str(v) for v in row) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- argument parsing ------------------------------------------------------------------


def test_components_accepts_a_count_and_an_inclusive_range():
    parser = cli.build_parser()
    args = parser.parse_args(["fit-mixture", "d.csv", "--components", "3", "--out", "o"])
    assert args.components == (3,)
    args = parser.parse_args(["fit-mixture", "d.csv", "--components", "1:10", "--out", "o"])
    assert args.components == tuple(range(1, 11))
    assert args.covariance == "full" and args.backend == "em" and args.quiet is False


def test_quiet_before_or_after_the_command():
    parser = cli.build_parser()
    base = ["d.csv", "--components", "2", "--out", "o"]
    assert parser.parse_args(["--quiet", "fit-mixture", *base]).quiet is True
    assert parser.parse_args(["fit-mixture", *base, "--quiet"]).quiet is True


def test_fit_peaks_takes_several_y_columns_and_a_peak_list():
    args = cli.build_parser().parse_args(
        [
            *("fit-peaks", "s.csv", "--x", "t", "--y", "a", "b"),
            *("--peaks", "gaussian,Lorentzian", "--baseline", "linear"),
            *("--backend", "mcmc", "--out", "o"),
        ]
    )
    assert args.y == ["a", "b"]
    assert args.peaks == ("gaussian", "lorentzian")
    assert args.baseline == "linear" and args.backend == "mcmc"


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["fit-mixture", "d.csv", "--components", "2", "--out", "o", "--bogus"], "unrecognized"),
        (["fit-mixture", "d.csv", "--out", "o"], "--components"),
        (["fit-mixture", "d.csv", "--components", "0", "--out", "o"], "must be >= 1"),
        (["fit-mixture", "d.csv", "--components", "5:2", "--out", "o"], "A <= B"),
        (["fit-mixture", "d.csv", "--components", "a:b", "--out", "o"], "1:10"),
        (["fit-mixture", "d.csv", "--components", "2", "--covariance", "x", "--out", "o"], "x"),
        (["fit-peaks", "s.csv", "--x", "t", "--out", "o"], "--y"),
        (
            ["fit-peaks", "s.csv", "--x", "t", "--y", "a", "--peaks", "gaussian,", "--out", "o"],
            "e.g.",
        ),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_argument_errors_are_one_line_exit_2(capsys, tmp_path, argv, match):
    assert_usage_error(capsys, tmp_path / "o", *argv, match=match)


def test_help_exits_zero(capsys):
    assert cli.main(["fit-mixture", "--help"]) == 0
    assert "--components" in capsys.readouterr().out


# -- data errors -----------------------------------------------------------------------


def test_missing_file(capsys, tmp_path):
    out = tmp_path / "out"
    assert_usage_error(
        capsys,
        out,
        "fit-mixture",
        tmp_path / "nope.csv",
        "--components",
        "2",
        "--out",
        out,
        match="no such file",
    )


def test_ragged_csv_names_the_line(capsys, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n3,4,5\n")
    out = tmp_path / "out"
    line = assert_usage_error(
        capsys, out, "fit-mixture", data, "--components", "1", "--out", out, match="line 3"
    )
    assert "3 fields" in line


def test_binary_file_is_unreadable(capsys, tmp_path):
    data = tmp_path / "d.csv"
    data.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    out = tmp_path / "out"
    assert_usage_error(
        capsys, out, "fit-mixture", data, "--components", "1", "--out", out, match="not UTF-8"
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("a,b\n", "no data rows"),
        ("1,2\n3,4\n", "header row"),
        ("a,a\n1,2\n", "distinct"),
    ],
)
def test_csv_without_usable_rows(capsys, tmp_path, text, match):
    data = tmp_path / "d.csv"
    data.write_text(text)
    out = tmp_path / "out"
    assert_usage_error(
        capsys, out, "fit-mixture", data, "--components", "1", "--out", out, match=match
    )


def test_non_numeric_column_is_named_with_its_line(capsys, tmp_path):
    data = write_csv(tmp_path / "d.csv", "a,species", [[1.0, "setosa"], [2.0, "virginica"]])
    out = tmp_path / "out"
    line = assert_usage_error(
        capsys, out, "fit-mixture", data, "--components", "1", "--out", out, match="'species'"
    )
    assert "line 2" in line and "--columns" in line


def test_unknown_column_lists_the_columns(capsys, tmp_path):
    data = write_csv(tmp_path / "d.csv", "a,b", [[1.0, 2.0], [2.0, 3.0]])
    out = tmp_path / "out"
    line = assert_usage_error(
        capsys,
        out,
        "fit-mixture",
        data,
        "--components",
        "1",
        "--columns",
        "c",
        "--out",
        out,
        match="no such column",
    )
    assert "a, b" in line


def test_nan_rows_are_reported_with_row_and_line_numbers(capsys, tmp_path):
    rows = [[1.0, 2.0], [np.nan, 1.0], [3.0, 4.0], [5.0, ""], [6.0, 7.0]]
    data = write_csv(tmp_path / "d.csv", "a,b", rows)
    out = tmp_path / "out"
    line = assert_usage_error(
        capsys, out, "fit-mixture", data, "--components", "1", "--out", out, match="--drop-nan"
    )
    assert "2 rows 2, 4 (file lines 3, 5)" in line


def test_nan_rows_in_npy_are_reported_by_index(capsys, tmp_path):
    array = np.ones((6, 2))
    array[[1, 4], 0] = np.nan
    np.save(tmp_path / "d.npy", array)
    out = tmp_path / "out"
    line = assert_usage_error(
        capsys,
        out,
        "fit-mixture",
        tmp_path / "d.npy",
        "--components",
        "1",
        "--out",
        out,
        match="--drop-nan",
    )
    assert "rows 1, 4 (0-based" in line


def test_infinite_values_stop_even_with_drop_nan(capsys, tmp_path):
    data = write_csv(tmp_path / "d.csv", "a,b", [[1.0, 2.0], ["inf", 1.0], [3.0, 4.0]])
    out = tmp_path / "out"
    assert_usage_error(
        capsys,
        out,
        "fit-mixture",
        data,
        "--components",
        "1",
        "--drop-nan",
        "--out",
        out,
        match="infinite values in row 2",
    )


def test_more_components_than_rows(capsys, tmp_path):
    data = write_csv(tmp_path / "d.csv", "a,b", np.arange(10.0).reshape(5, 2))
    out = tmp_path / "out"
    assert_usage_error(
        capsys,
        out,
        "fit-mixture",
        data,
        "--components",
        "2:6",
        "--out",
        out,
        match="--components 6 needs at least 6 rows",
    )


def test_more_components_than_rows_left_after_drop_nan(capsys, tmp_path):
    data = write_csv(tmp_path / "d.csv", "a,b", [[1.0, 2.0], [np.nan, 1.0], [3.0, 4.0]])
    out = tmp_path / "out"
    assert_usage_error(
        capsys,
        out,
        "fit-mixture",
        data,
        "--components",
        "3",
        "--drop-nan",
        "--out",
        out,
        match="after omitting rows with NaN",
    )


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.array(["a", "b"]), "not numbers"),
        (np.array([{"a": 1}], dtype=object), "Python objects"),
        (np.ones((2, 2, 2)), "shape (2, 2, 2)"),
        (np.ones((0, 2)), "empty"),
    ],
)
def test_unusable_npy(capsys, tmp_path, array, match):
    path = tmp_path / "d.npy"
    np.save(path, array, allow_pickle=True)
    out = tmp_path / "out"
    assert_usage_error(
        capsys, out, "fit-mixture", path, "--components", "1", "--out", out, match=match
    )


def test_corrupt_npy(capsys, tmp_path):
    path = tmp_path / "d.npy"
    path.write_bytes(b"\x93NUMPY garbage")
    out = tmp_path / "out"
    assert_usage_error(
        capsys, out, "fit-mixture", path, "--components", "1", "--out", out, match="cannot read"
    )


def test_out_refuses_a_folder_that_is_not_ours(capsys, tmp_path, two_blobs):
    """A report.html gaussmix did not write (no manifest lists it) is never overwritten."""
    data = tmp_path / "d.npy"
    np.save(data, two_blobs)
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    (out / "report.html").write_text("my own page")
    code, _, err = run_main(capsys, "fit-mixture", data, "--components", "2", "--out", out)
    assert code == EXIT_USAGE and len(err) == 1
    assert "report.html exists and gaussmix did not write it" in err[0]
    assert (out / "thesis.tex").read_text() == "keep me"
    assert (out / "report.html").read_text() == "my own page"
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "thesis.tex"]


# -- reading tables --------------------------------------------------------------------


def test_read_table_selects_numeric_columns_by_name_or_index(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("label;a;b\nx;1.5;2\ny;3;NA\n")
    table = cli.read_table(path, ["b", "1"])
    assert table.columns == ["b", "a"]
    np.testing.assert_array_equal(table.values, [[2.0, 1.5], [np.nan, 3.0]])
    assert table.lines.tolist() == [2, 3]


def test_read_table_whitespace_and_drop_missing(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("a b\n1 2\n\n3 nan\n5 6\n")
    table = cli.drop_missing(cli.read_table(path), drop=True)
    np.testing.assert_array_equal(table.values, [[1.0, 2.0], [5.0, 6.0]])
    assert table.dropped == [2]
    assert table.lines.tolist() == [2, 5]


# -- atomic output ---------------------------------------------------------------------


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    destination = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError), cli.atomic_output(destination) as folder:
        (folder / "results.json").write_text("{}")
        raise RuntimeError("fit failed")
    assert not (tmp_path / "new").exists()


def test_atomic_output_replaces_an_earlier_run_only_at_the_end(tmp_path):
    destination = tmp_path / "out"
    with cli.atomic_output(destination) as folder:
        (folder / "results.json").write_text('{"old": true}')
    with cli.atomic_output(destination) as folder:
        assert (destination / "results.json").read_text() == '{"old": true}'
        (folder / "results.json").write_text('{"new": true}')
    assert json.loads((destination / "results.json").read_text()) == {"new": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in destination.iterdir()) == [cli.MANIFEST_NAME, "results.json"]


def test_atomic_output_removes_listed_files_a_rerun_does_not_write(tmp_path):
    destination = tmp_path / "demo"
    with cli.atomic_output(destination) as folder:
        (folder / "sm1.png").write_bytes(b"old")
    (destination / "notes.txt").write_text("mine")
    with cli.atomic_output(destination) as folder:
        (folder / "report.html").write_text("new")
    assert sorted(p.name for p in destination.iterdir()) == [
        cli.MANIFEST_NAME,
        "notes.txt",
        "report.html",
    ]
    assert (destination / "notes.txt").read_text() == "mine"


def test_atomic_output_keeps_the_earlier_run_on_failure(tmp_path):
    destination = tmp_path / "out"
    with cli.atomic_output(destination) as folder:
        (folder / "results.json").write_text('{"old": true}')
    before = {p.name: p.read_bytes() for p in destination.iterdir()}
    with pytest.raises(KeyboardInterrupt), cli.atomic_output(destination) as folder:
        (folder / "results.json").write_text('{"new": true}')
        raise KeyboardInterrupt
    assert {p.name: p.read_bytes() for p in destination.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# -- progress bars ---------------------------------------------------------------------


def test_progress_bars_only_on_a_terminal_outside_ci_and_not_quiet(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert show_progress(SimpleNamespace(quiet=False)) is True
    assert show_progress(SimpleNamespace(quiet=True)) is False
    monkeypatch.setenv("CI", "true")
    assert show_progress(SimpleNamespace(quiet=False)) is False
    monkeypatch.delenv("CI")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert show_progress(SimpleNamespace(quiet=False)) is False


# -- the exit-code contract in a real process ------------------------------------------


def test_subprocess_bad_input_is_one_line_and_exit_2(tmp_path):
    out = tmp_path / "out"
    for argv in (
        ["fit-mixture", str(tmp_path / "missing.csv"), "--components", "2", "--out", str(out)],
        ["fit-mixture", "--no-such-option"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "gaussmix.cli", *argv],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert result.returncode == EXIT_USAGE, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("gaussmix") and "Traceback" not in result.stderr
        assert result.stdout == ""
    assert not out.exists()


# -- success paths ---------------------------------------------------------------------
# The data and settings match the quick demo's (sm1 and stretched, 400 points, two EM
# restarts, NUTS 2 x (40 + 40); three Gaussian peaks on a linear baseline, 200 points),
# so that JAX compiles each fit once for the whole module.

NUTS_OPTIONS = ("--num-warmup", "40", "--num-samples", "40", "--num-chains", "2")


def strict_json(path: Path):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def assert_planned(folder: Path, *argv):
    """The files the command checked before the fit (for ARGV) are those it wrote."""
    args = cli.build_parser().parse_args(["fit-mixture", "d", *argv, "--out", "o"])
    manifest = strict_json(folder / cli.MANIFEST_NAME)
    written = {entry["name"] for entry in manifest["files"]}
    assert written == set(fit_mixture.mixture_files(args, n_features=2))


def assert_page(folder: Path, images: int):
    page = (folder / "report.html").read_text()
    assert page.count("<img") == images
    assert page.count('src="data:image/png;base64,') == images
    assert "<script" not in page
    return page


def gaussian_peaks(x, *theta):
    """Gaussian peaks (height, center, sigma each), written here for scipy's curve_fit."""
    heights, centers, sigmas = np.reshape(theta, (-1, 3)).T
    return np.sum(heights * np.exp(-0.5 * ((x[:, None] - centers) / sigmas) ** 2), axis=1)


def gaussian_peaks_on_a_line(x, *theta):
    """:func:`gaussian_peaks` plus the baseline c0 + c1 x (the last two entries)."""
    return gaussian_peaks(x, *theta[:-2]) + theta[-2] + theta[-1] * x


def test_demo_quick_writes_the_tour(capsys, tmp_path):
    from scipy.optimize import curve_fit

    out = tmp_path / "demo"
    code, stdout, err = run_main(capsys, "demo", "--quick", "--out", out)
    assert code == 0, err
    assert "report.html" in stdout
    results = strict_json(out / "results.json")
    assert set(results) >= {"em", "kmeans", "selection", "nuts", "peaks", "timings", "versions"}
    # The mixture recovers the generating clusters where k-means cannot.
    assert results["kmeans"]["mixture_ari"] > 0.9 > results["kmeans"]["kmeans_ari"]
    assert results["em"]["sm1"]["adjusted_rand_index"] == pytest.approx(1.0)
    nuts = results["nuts"]
    assert {row["parameter"] for row in nuts["summary"]} >= {"weights[0]", "means[1, 1]"}
    assert nuts["diagnostics"]["num_chains"] == 2 and nuts["diagnostics"]["num_draws"] == 40
    peaks = results["peaks"]
    # scipy is installed (test extra): the demo's curve_fit columns must be there, and
    # gaussmix's optimum is scipy's curve_fit run here, not the number the demo wrote.
    assert "curve_fit" in peaks["two_gaussians"] and "curve_fit_rss" in peaks["batch"]
    two = demo.TWO_GAUSSIANS
    values, _ = curve_fit(
        gaussian_peaks, two["x"], two["y"], p0=list(two["start"].values()), xtol=1e-14, ftol=1e-14
    )
    rss = np.sum((two["y"] - gaussian_peaks(two["x"], *values)) ** 2)
    # Measured: RSS 1.7e-10 relative, parameters <= 2.9e-5 apart (values 1 to 6): where
    # Levenberg-Marquardt stops its flat valley (RSS is quadratic in the parameters there,
    # so 1e-5 in the parameters is ~1e-10 in RSS). Bounds: 10x those.
    fitted = peaks["two_gaussians"]["gaussmix"]
    np.testing.assert_allclose(fitted["rss"], rss, rtol=2e-9)
    for name, value in zip(two["start"], values, strict=True):
        np.testing.assert_allclose(fitted["params"][name], value, rtol=0, atol=3e-4)
    x, spectra = demo.synthetic_spectra(2, 200, 0)  # the quick demo's batch (--seed 0)
    start = [*np.ravel(demo.SPECTRUM_PEAKS) * 1.05, *demo.SPECTRUM_BASELINE]
    for index, spectrum in enumerate(spectra):
        values, _ = curve_fit(
            gaussian_peaks_on_a_line, x, spectrum, p0=start, xtol=1e-14, ftol=1e-14
        )
        rss = np.sum((spectrum - gaussian_peaks_on_a_line(x, *values)) ** 2)
        # Measured 2e-13 and 1e-13 relative (well-separated peaks, 200 points): 10x.
        np.testing.assert_allclose(peaks["batch"]["rss"][index], rss, rtol=2e-12)
    page = assert_page(out, images=8)
    assert "NUTS on sm1" in page and "two-Gaussian example" in page
    for name in ("model-sm1.npz", "model-peaks.npz", "datasets.png", "peaks-nuts.png"):
        assert (out / name).is_file()
    assert (out / "posterior.nc").is_file() and (out / "posterior-peaks.nc").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    # The names the demo checks before it runs are the names it writes.
    manifest = strict_json(out / cli.MANIFEST_NAME)
    assert {entry["name"] for entry in manifest["files"]} == set(demo.DEMO_FILES)
    assert sorted(p.name for p in out.iterdir()) == sorted([*demo.DEMO_FILES, cli.MANIFEST_NAME])


def test_posterior_round_trips_through_one_netcdf_file(tmp_path):
    """Every group, variable, dtype, coordinate and attribute comes back from posterior.nc."""
    arviz_base = pytest.importorskip("arviz_base")
    import xarray

    rng = np.random.default_rng(3)
    diverging = np.zeros((2, 30), dtype=bool)
    diverging[0, 4] = True
    tree = arviz_base.from_dict(
        {
            "posterior": {
                "means": rng.normal(size=(2, 30, 3, 2)),
                "sd": rng.gamma(2.0, size=(2, 30)),
            },
            "sample_stats": {"diverging": diverging, "tree_depth": rng.integers(1, 5, (2, 30))},
            "log_likelihood": {"x": rng.normal(size=(2, 30, 50))},
            "observed_data": {"x": rng.normal(size=50)},
        },
        dims={"means": ["component", "feature"], "x": ["point"]},
        coords={"component": ["a", "b", "c"]},
    )
    tree["sample_stats"].attrs.update(num_warmup=40, compile_time=1.5, init="map")
    assert cli.write_posterior(tree, tmp_path) == ["posterior.nc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posterior.nc"]
    with xarray.open_datatree(tmp_path / "posterior.nc") as opened:
        assert set(opened.children) == set(tree.children)
        for group in tree.children:
            xarray.testing.assert_identical(
                opened[group].to_dataset().load(), tree[group].to_dataset()
            )
        assert opened["sample_stats"]["diverging"].dtype == bool
    arviz = pytest.importorskip("arviz")
    assert arviz.from_netcdf(tmp_path / "posterior.nc")["posterior"]["sd"].shape == (2, 30)


def test_demo_peaks_without_scipy(tmp_path):
    """scipy is a test extra: without it the demo's peak section leaves curve_fit out."""
    run = Run(tmp_path, "peaks", quiet=True)
    two_gaussians = demo.demo_two_gaussians(run, scipy_optimize=None)
    *_, batch = demo.demo_spectra(run, None, n_spectra=2, n_points=200, seed=0)
    assert set(two_gaussians) == {"gaussmix"} and "curve_fit_rss" not in batch
    page = run.report.render()
    assert "curve_fit</th>" not in page and "curve_fit RSS" not in page
    assert page.count("<img") == 2


@pytest.fixture(scope="module")
def sm1():
    from gaussmix import datasets

    return datasets.sm1()[0]


def test_fit_mixture_em_matches_scikit_learn_and_npy_matches_csv(capsys, tmp_path, sm1):
    from sklearn.mixture import GaussianMixture as Reference

    from gaussmix import load

    # Two rows with missing values, omitted by --drop-nan: the fit sees sm1 itself.
    rows = np.insert(sm1.astype(object), [5, 300], [["", 1.0], [2.0, "nan"]], axis=0)
    write_csv(tmp_path / "sm1.csv", "u,v", rows)
    np.save(tmp_path / "sm1.npy", sm1)
    argv = ("--components", "2", "--n-init", "2")
    code, out, err = run_main(
        capsys, "fit-mixture", tmp_path / "sm1.csv", *argv, "--drop-nan", "--out", tmp_path / "csv"
    )
    assert code == 0, err
    assert "report.html" in out
    results = strict_json(tmp_path / "csv" / "results.json")
    assert results["data"]["columns"] == ["u", "v"] and results["data"]["n_rows"] == 400
    assert results["data"]["dropped_rows"] == [6, 302]
    assert set(results["versions"]) >= {"gaussmix", "jax", "numpyro", "arviz", "numpy"}
    em = results["em"]
    reference = Reference(2, covariance_type="full", tol=1e-10, max_iter=1000).fit(sm1)
    order = np.argsort(np.asarray(em["parameters"]["means"])[:, 0])
    reference_order = np.argsort(reference.means_[:, 0])
    # Both stop after 3 iterations at the same fixed point (responsibilities 0 or 1 to 5e-9):
    # what is left is rounding in sums of N = 400 values |x| <= 45 in another order,
    # sqrt(N) eps max|x| = 2e-13. Measured 1.1e-14 (absolute; 1e-13 relative on a mean
    # of 0.07, hence absolute). Bound: 1e-12.
    np.testing.assert_allclose(
        np.asarray(em["parameters"]["means"])[order],
        reference.means_[reference_order],
        rtol=0,
        atol=1e-12,
    )
    # BIC = -2 (sum of 400 log densities) + p log N: rounding sqrt(N) eps = 4.4e-15 relative
    # (the parameters' 1e-14 enters to second order only, at the optimum). Measured 0
    # to 7e-16. Bound: 5e-14.
    np.testing.assert_allclose(em["bic"], reference.bic(sm1), rtol=5e-14)
    model = load(tmp_path / "csv" / "model.npz")
    np.testing.assert_array_equal(model.means_, em["parameters"]["means"])
    assert_page(tmp_path / "csv", images=1)

    code, out, err = run_main(
        capsys, "--quiet", "fit-mixture", tmp_path / "sm1.npy", *argv, "--out", tmp_path / "npy"
    )
    assert code == 0, err
    assert out == ""
    assert strict_json(tmp_path / "npy" / "results.json")["em"] == em
    assert sorted(p.name for p in tmp_path.iterdir()) == ["csv", "npy", "sm1.csv", "sm1.npy"]


def test_fit_mixture_sweep_chooses_k_by_bic(capsys, tmp_path):
    from gaussmix import datasets

    x, _ = datasets.stretched()
    np.save(tmp_path / "d.npy", x)
    code, _, err = run_main(
        capsys, "fit-mixture", tmp_path / "d.npy", "--components", "1:3", "--n-init", "2",
        "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    results = strict_json(tmp_path / "out" / "results.json")
    selection = results["selection"]
    assert [row["n_components"] for row in selection["rows"]] == [1, 2, 3]
    bic = [row["bic"] for row in selection["rows"]]
    assert selection["best"] == 1 + int(np.argmin(bic)) == results["em"]["n_components"]
    # K = 1 has a closed form: the sample mean and the (biased) sample covariance.
    covariance = np.cov(x.T, bias=True) + 1e-6 * np.eye(2)
    centred = x - x.mean(axis=0)
    log_likelihood = -0.5 * np.sum(centred @ np.linalg.inv(covariance) * centred) - 0.5 * len(x) * (
        2 * np.log(2 * np.pi) + np.linalg.slogdet(covariance)[1]
    )
    assert selection["rows"][0]["log_likelihood"] == pytest.approx(log_likelihood, rel=1e-9)
    assert bic[0] == pytest.approx(-2 * log_likelihood + 5 * np.log(len(x)), rel=1e-9)
    assert_page(tmp_path / "out", images=2)
    assert_planned(tmp_path / "out", "--components", "1:3")


@pytest.fixture(scope="module")
def three_columns(tmp_path_factory):
    """Columns a, b, c: three clusters in (a, c) (20 rows each, unit sd, centres 6, 8 and
    10 apart), b unrelated noise. Returns the CSV's path and x = columns (c, a)."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 8.0]])
    clusters = np.concatenate([rng.normal(centre, 1.0, (20, 2)) for centre in centres])
    table = np.column_stack([clusters[:, 0], rng.normal(100.0, 30.0, 60), clusters[:, 1]])
    path = tmp_path_factory.mktemp("three") / "d.csv"
    np.savetxt(path, table, delimiter=",", header="a,b,c", comments="")  # %.18e: exact
    return path, table[:, [2, 0]]


def reference_fit(x, n_components, covariance_type):
    """scikit-learn's EM run to its fixed point (best of 10 starts)."""
    from sklearn.mixture import GaussianMixture as Reference

    return Reference(
        n_components, covariance_type=covariance_type, tol=1e-12, max_iter=10_000, n_init=10,
        random_state=0,
    ).fit(x)  # fmt: skip


#: Bounds on |CLI - scikit-learn| for weights, means and covariances (data |x| <= 12).
#: The CLI's EM stops at tol=1e-3 after 2 iterations; what is left of the fixed point is the
#: responsibilities' tails between clusters. Measured: tied 3.7e-15 (rounding: sums of 60
#: values, sqrt(60) eps 12 = 2e-14), diag 7.5e-13, spherical 2.4e-11. Bounds: ~10x.
PARAMETER_ATOL = {"tied": 5e-14, "diag": 1e-11, "spherical": 3e-10}
#: AIC, BIC: -2 (sum of 60 log densities) + penalty; parameters enter to second order at
#: the optimum, so rounding only, sqrt(60) eps = 1.7e-15. Measured <= 8.9e-16. Bound: 2e-14.
CRITERION_RTOL = 2e-14


def assert_mixture_matches(em, reference, x, covariance_type):
    """The CLI's EM answer (results["em"]) is scikit-learn's fixed point, up to labels."""
    parameters = em["parameters"]
    site = {"tied": "covariance", "diag": "variances", "spherical": "variances"}
    order = np.argsort(np.asarray(parameters["means"])[:, 0])
    reference_order = np.argsort(reference.means_[:, 0])
    atol = PARAMETER_ATOL[covariance_type]
    covariances = np.asarray(parameters[site[covariance_type]])
    reference_covariances = reference.covariances_
    if covariance_type != "tied":
        covariances = covariances[order]
        reference_covariances = reference_covariances[reference_order]
    np.testing.assert_allclose(covariances, reference_covariances, rtol=0, atol=atol)
    np.testing.assert_allclose(
        np.asarray(parameters["means"])[order], reference.means_[reference_order], rtol=0, atol=atol
    )
    np.testing.assert_allclose(
        np.asarray(parameters["weights"])[order],
        reference.weights_[reference_order],
        rtol=0,
        atol=atol,
    )
    assert em["covariance_type"] == covariance_type
    np.testing.assert_allclose(em["aic"], reference.aic(x), rtol=CRITERION_RTOL)
    np.testing.assert_allclose(em["bic"], reference.bic(x), rtol=CRITERION_RTOL)


def test_fit_mixture_tied_sweep_by_aic_on_named_columns(capsys, tmp_path, three_columns):
    """--covariance tied --criterion aic --columns c a: every row is scikit-learn's AIC and
    BIC of the same K, the K chosen is the argmin of scikit-learn's AIC, the fit is on
    columns c and a in that order (b, noise around 100, would move every mean)."""
    path, x = three_columns
    options = ("--components", "1:3", "--covariance", "tied", "--criterion", "aic")
    code, _, err = run_main(
        capsys, "fit-mixture", path, "--columns", "c", "a", *options, "--out", tmp_path / "out"
    )
    assert code == 0, err
    results = strict_json(tmp_path / "out" / "results.json")
    assert results["data"]["columns"] == ["c", "a"]
    selection = results["selection"]
    assert selection["criterion"] == "aic"
    references = {k: reference_fit(x, k, "tied") for k in (1, 2, 3)}
    assert [row["n_components"] for row in selection["rows"]] == [1, 2, 3]
    for row in selection["rows"]:
        reference = references[row["n_components"]]
        np.testing.assert_allclose(row["aic"], reference.aic(x), rtol=CRITERION_RTOL)
        np.testing.assert_allclose(row["bic"], reference.bic(x), rtol=CRITERION_RTOL)
    best = 1 + int(np.argmin([references[k].aic(x) for k in (1, 2, 3)]))
    assert selection["best"] == best == results["em"]["n_components"]
    assert_mixture_matches(results["em"], references[best], x, "tied")
    assert_planned(tmp_path / "out", *options)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_fit_mixture_diag_and_spherical_match_scikit_learn(
    capsys, tmp_path, three_columns, covariance_type
):
    path, x = three_columns
    code, _, err = run_main(
        capsys, "fit-mixture", path, "--columns", "c", "a", "--components", "3",
        "--covariance", covariance_type, "--seed", "3", "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    results = strict_json(tmp_path / "out" / "results.json")
    assert results["data"]["columns"] == ["c", "a"] and results["arguments"]["seed"] == 3
    assert_mixture_matches(results["em"], reference_fit(x, 3, covariance_type), x, covariance_type)
    assert_page(tmp_path / "out", images=1)


def test_fit_mixture_sweep_by_loo_keeps_the_best_posterior(capsys, tmp_path, sm1):
    """--criterion loo: NUTS per K (K = 2 in the demo's shapes and settings, so only K = 1
    compiles anew), PSIS-LOO ranks them, and the best K's posterior is the one written."""
    import xarray

    arviz_stats = pytest.importorskip("arviz_stats")
    np.save(tmp_path / "sm1.npy", sm1)
    code, _, err = run_main(
        capsys, "fit-mixture", tmp_path / "sm1.npy", "--components", "1:2", "--n-init", "2",
        "--criterion", "loo", "--backend", "mcmc", *NUTS_OPTIONS, "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    results = strict_json(tmp_path / "out" / "results.json")
    selection = results["selection"]
    rows = {row["model"]: row for row in selection["rows"]}
    assert selection["criterion"] == "loo" and set(rows) == {"K=1", "K=2"}
    # Two clusters far apart: one Gaussian predicts held-out points far worse.
    assert selection["best"] == 2 == results["em"]["n_components"]
    assert rows["K=2"]["elpd"] - rows["K=1"]["elpd"] > 10 * rows["K=1"]["dse"]
    for row in rows.values():
        assert row["looic"] == pytest.approx(-2 * row["elpd"], rel=1e-9)
    assert sum(row["weight"] for row in rows.values()) == pytest.approx(1.0)
    # The posterior written is K = 2's, and ArviZ's own PSIS-LOO of it agrees.
    with xarray.open_datatree(tmp_path / "out" / "posterior.nc") as tree:
        assert tree["posterior"].sizes["components"] == 2
        assert tree["posterior"].sizes["draw"] == 40
        elpd = arviz_stats.loo(tree.load()).elpd
    assert elpd == pytest.approx(rows["K=2"]["elpd"], rel=1e-9)
    assert "PSIS-LOO comparison" in assert_page(tmp_path / "out", images=2)
    assert_planned(
        tmp_path / "out", "--components", "1:2", "--criterion", "loo", "--backend", "mcmc"
    )


# NUTS settings of the posterior checks below: long enough for ESS ~ 100-300 per parameter,
# so that the Monte Carlo standard errors the checks use are themselves reliable.
POSTERIOR_OPTIONS = ("--num-warmup", "150", "--num-samples", "150", "--num-chains", "2")


@pytest.fixture(scope="module")
def sm1_posteriors(tmp_path_factory, sm1):
    """Three ``--backend mcmc`` runs on sm1 (K = 2): --seed 5, --seed 5 again, --seed 6."""
    folder = tmp_path_factory.mktemp("posteriors")
    np.save(folder / "sm1.npy", sm1)
    outs = []
    for name, seed in (("first", 5), ("again", 5), ("other", 6)):
        out = folder / name
        code = cli.main(
            [
                *("--quiet", "fit-mixture", str(folder / "sm1.npy"), "--components", "2"),
                *("--n-init", "2", "--backend", "mcmc", *POSTERIOR_OPTIONS),
                *("--seed", str(seed), "--out", str(out)),
            ]
        )
        assert code == 0
        outs.append(out)
    return outs


def conjugate_posterior_means(x, labels, n_components):
    """Posterior means of the program's default prior given the labels: Dirichlet(1) weights,
    Normal-inverse-Wishart(m0 = mean of x, kappa0 = 1, nu0 = D, Psi0 = sample covariance of x)
    per component (closed form; site name -> value, as in the CLI's summary rows)."""
    n, n_features = x.shape
    centre = x.mean(axis=0)
    scale = np.cov(x.T)
    scale += 1e-6 * np.trace(scale) / n_features * np.eye(n_features)
    expected = {}
    for k in range(n_components):
        points = x[labels == k]
        count = len(points)
        mean = points.mean(axis=0)
        scatter = (points - mean).T @ (points - mean)
        expected[f"weights[{k}]"] = (1.0 + count) / (n_components + n)
        for d in range(n_features):
            expected[f"means[{k}, {d}]"] = (centre[d] + count * mean[d]) / (1.0 + count)
        shift = mean - centre
        posterior_scale = scale + scatter + count / (1.0 + count) * np.outer(shift, shift)
        covariance = posterior_scale / (n_features + count - n_features - 1)
        for a in range(n_features):
            for b in range(a + 1):
                expected[f"covariances[{k}, {a}, {b}]"] = covariance[a, b]
    return expected


def test_fit_mixture_mcmc_posterior_is_the_conjugate_one(sm1_posteriors, sm1):
    """sm1's clusters are far apart (EM responsibilities 0 or 1 to 5e-9; under the posterior
    draws to 1.2e-4, i.e. < 0.05 of 400 points expected to change sides): the posterior is,
    to far below its Monte Carlo error, the conjugate posterior given EM's labels, whose means
    are closed forms. The prior matters: component 1 (100 points, 30 sd from the data mean)
    has posterior mean variance 7.8 where EM (no prior) says 0.94."""
    import xarray
    from scipy import stats

    folder = sm1_posteriors[0]
    results = strict_json(folder / "results.json")
    posterior = results["posterior"]
    assert posterior["files"] == ["posterior.nc"]
    with xarray.open_datatree(folder / "posterior.nc") as opened:
        assert {"posterior", "sample_stats", "log_likelihood"} <= set(opened.children)
        assert opened["posterior"].sizes["chain"] == 2 and opened["posterior"].sizes["draw"] == 150
    em = results["em"]["parameters"]
    log_joint = np.stack(
        [
            np.log(em["weights"][k])
            + stats.multivariate_normal(em["means"][k], em["covariances"][k]).logpdf(sm1)
            for k in range(2)
        ],
        axis=-1,
    )
    expected = conjugate_posterior_means(sm1, np.argmax(log_joint, axis=-1), 2)
    rows = {row["parameter"]: row for row in posterior["summary"]}
    assert set(rows) == set(expected)  # lower triangle only: the upper one repeats it
    # Posterior mean within 5 MCSE of the closed form. MCSE from ESS ~ 100-300 is itself
    # within ~15 %, so 5 estimated MCSE >= 4.3 true ones: false-alarm rate <= 2e-5 per
    # parameter, <= 3e-4 for the 12 (the old check was "within 1.0 of EM": component 1's
    # covariance, 6 posterior sd from EM's, was never looked at).
    for name, row in rows.items():
        assert abs(row["posterior mean"] - expected[name]) < 5 * row["MCSE mean"], (name, row)
    # The EM column is the EM fit, in the posterior's labelling.
    for k in range(2):
        for d in range(2):
            assert rows[f"means[{k}, {d}]"]["EM estimate"] == em["means"][k][d]
    page = assert_page(folder, images=2)
    assert "NUTS: diagnostics" in page
    assert_planned(folder, "--components", "2", "--backend", "mcmc")


def test_fit_mixture_seed_fixes_every_draw(sm1_posteriors):
    """The same --seed writes the same results (but --out) and the same draws; another seed
    other draws."""
    import xarray

    first, again, other = (strict_json(out / "results.json") for out in sm1_posteriors)
    assert first["arguments"].pop("out") != again["arguments"].pop("out")
    for results in (first, again):
        del results["versions"]  # the environment's, not the run's
    assert first == again
    assert first["arguments"]["seed"] == 5 and other["arguments"]["seed"] == 6
    draws = []
    for out in sm1_posteriors:
        with xarray.open_datatree(out / "posterior.nc") as opened:
            draws.append({name: opened["posterior"][name].values for name in ("weights", "means")})
    for name in ("weights", "means"):
        np.testing.assert_array_equal(draws[0][name], draws[1][name])
        # Continuous draws from other chains: no two agree (after the common start).
        assert not np.any(draws[0][name][:, 1:] == draws[2][name][:, 1:]), name


def write_spectra(path: Path, seed: int = 0):
    """Two spectra of three Gaussian peaks on a linear baseline (the demo's generator)."""
    x, spectra = demo.synthetic_spectra(2, 200, seed)
    np.savetxt(path, np.column_stack([x, spectra.T]), delimiter=",", header="t,a,b", comments="")
    return x, spectra


def test_fit_peaks_batch_matches_curve_fit(capsys, tmp_path):
    pytest.importorskip("scipy")
    x, spectra = write_spectra(tmp_path / "s.csv")
    code, _, err = run_main(
        capsys, "fit-peaks", tmp_path / "s.csv", "--x", "t", "--y", "a", "b",
        "--peaks", "gaussian,gaussian,gaussian", "--baseline", "linear", "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    results = strict_json(tmp_path / "out" / "results.json")
    fitted = results["map"]
    assert [row["spectrum"] for row in fitted["statistics"]] == ["a", "b"]
    truth = dict(
        zip(
            [f"peak{i}_{p}" for i in range(3) for p in ("height", "center", "sigma")]
            + ["baseline_c0", "baseline_c1"],
            [*np.ravel(demo.SPECTRUM_PEAKS), *demo.SPECTRUM_BASELINE],
            strict=True,
        )
    )
    for index in range(2):
        values, _, rss = demo.scipy_curve_fit(x, spectra[index], truth, 3, 1)
        assert fitted["statistics"][index]["converged"]
        assert fitted["statistics"][index]["rss"] == pytest.approx(rss, rel=1e-6)
        for name, value in values.items():
            assert fitted["params"][name][index] == pytest.approx(value, rel=1e-4, abs=1e-6)
    from gaussmix import load

    fit = load(tmp_path / "out" / "model.npz")
    np.testing.assert_allclose(fit.rss, [row["rss"] for row in fitted["statistics"]])
    # The names fit-peaks checks before the fit are the names it writes.
    manifest = strict_json(tmp_path / "out" / cli.MANIFEST_NAME)
    args = cli.build_parser().parse_args(
        ["fit-peaks", "s.csv", "--x", "t", "--y", "a", "b", "--out", "o"]
    )
    assert {entry["name"] for entry in manifest["files"]} == set(
        fit_peaks.peak_files(args, ["a", "b"])
    )
    assert_page(tmp_path / "out", images=2)


def test_spectra_whose_names_slug_alike_get_their_own_files(capsys, tmp_path):
    """Columns "a b" and "a-b" both slug to "a-b": each spectrum keeps its own figure
    (the second one overwrote the first)."""
    x, spectra = demo.synthetic_spectra(2, 200, 0)
    np.savetxt(
        tmp_path / "s.csv", np.column_stack([x, spectra.T]), delimiter=",",
        header="t,a b,a-b", comments="",
    )  # fmt: skip
    code, _, err = run_main(
        capsys, "fit-peaks", tmp_path / "s.csv", "--x", "t", "--y", "a b", "a-b",
        "--peaks", "gaussian,gaussian,gaussian", "--baseline", "linear", "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    figures = sorted(path.name for path in (tmp_path / "out").glob("peaks-map-*.png"))
    assert figures == ["peaks-map-a-b-2.png", "peaks-map-a-b.png"]
    first, second = ((tmp_path / "out" / name).read_bytes() for name in figures)
    assert first != second
    manifest = strict_json(tmp_path / "out" / cli.MANIFEST_NAME)
    args = cli.build_parser().parse_args(
        ["fit-peaks", "s.csv", "--x", "t", "--y", "a b", "a-b", "--out", "o"]
    )
    expected = set(fit_peaks.peak_files(args, ["a b", "a-b"]))
    assert {entry["name"] for entry in manifest["files"]} == expected


def test_fit_peaks_mcmc_one_spectrum(capsys, tmp_path):
    write_spectra(tmp_path / "s.csv")
    code, _, err = run_main(
        capsys, "fit-peaks", tmp_path / "s.csv", "--x", "0", "--y", "a",
        "--peaks", "gaussian,gaussian,gaussian", "--baseline", "linear", "--backend", "mcmc",
        *NUTS_OPTIONS, "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    results = strict_json(tmp_path / "out" / "results.json")
    rows = {row["parameter"]: row for row in results["posterior"]["a"]["summary"]}
    assert rows["peak1_center"]["MAP estimate"] == pytest.approx(
        results["map"]["params"]["peak1_center"]
    )
    assert abs(rows["peak1_center"]["posterior mean"] - demo.SPECTRUM_PEAKS[1][1]) < 1.0
    assert_page(tmp_path / "out", images=2)


def test_a_failing_fit_leaves_no_output(capsys, tmp_path):
    write_spectra(tmp_path / "s.csv")
    out = tmp_path / "out"
    line = assert_usage_error(
        capsys, out, "fit-peaks", tmp_path / "s.csv", "--x", "t", "--y", "a",
        "--peaks", "gaussian,banana", "--out", out, match="banana",
    )  # fmt: skip
    assert line.startswith("gaussmix fit-peaks: error:")


def test_fit_peaks_shared_and_pooled_report_the_batch_values(capsys, tmp_path):
    """--shared and --pooled: the batch's values in results.json, the same as the library
    gives; the files written are those announced; one spectrum is refused."""
    from gaussmix import fit_peaks as fit_peaks_function

    x, spectra = write_spectra(tmp_path / "s.csv")
    options = ["--peaks", "gaussian,gaussian,gaussian", "--baseline", "linear"]
    batch = ["--shared", "peak0_sigma", "peak1_sigma", "--pooled", "peak2_center"]
    code, _, err = run_main(
        capsys, "fit-peaks", tmp_path / "s.csv", "--x", "t", "--y", "a", "b",
        *options, *batch, "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    results = strict_json(tmp_path / "out" / "results.json")
    direct = fit_peaks_function(
        x, spectra, peaks=("gaussian",) * 3, baseline="linear",
        shared=("peak0_sigma", "peak1_sigma"), pooled=("peak2_center",),
    )  # fmt: skip
    reported = results["map"]["batch"]
    assert set(reported["shared"]) == {"peak0_sigma", "peak1_sigma"}
    for name, value in direct.shared_params.items():
        assert reported["shared"][name] == pytest.approx(value, rel=1e-8)
    for name, value in direct.population_params.items():
        assert reported["population"][name] == pytest.approx(value, rel=1e-8)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "peak2_center_tau" in page and "shared" in page
    manifest = strict_json(tmp_path / "out" / cli.MANIFEST_NAME)
    args = cli.build_parser().parse_args(
        ["fit-peaks", "s.csv", "--x", "t", "--y", "a", "b", *batch, "--out", "o"]
    )
    assert {entry["name"] for entry in manifest["files"]} == set(
        fit_peaks.peak_files(args, ["a", "b"])
    )
    code, _, err = run_main(
        capsys, "fit-peaks", tmp_path / "s.csv", "--x", "t", "--y", "a", *options,
        "--shared", "peak0_sigma", "--out", tmp_path / "one",
    )  # fmt: skip
    assert code != 0 and "several --y columns" in "\n".join(err)
    code, _, err = run_main(
        capsys, "fit-peaks", tmp_path / "s.csv", "--x", "t", "--y", "a", "b", *options,
        "--pooled", "peak0_sigma", "--out", tmp_path / "width",
    )  # fmt: skip
    assert code != 0 and "Normal population" in "\n".join(err)


@pytest.mark.slow
def test_fit_peaks_joint_nuts_writes_one_posterior(capsys, tmp_path):
    """--backend mcmc with --shared: one NUTS run on the batch, one posterior file, the
    shared width's posterior near its MAP, and the files announced are those written."""
    write_spectra(tmp_path / "s.csv")
    batch = ["--shared", "peak0_sigma", "--pooled", "peak2_center", "--backend", "mcmc"]
    code, _, err = run_main(
        capsys, "fit-peaks", tmp_path / "s.csv", "--x", "t", "--y", "a", "b",
        "--peaks", "gaussian,gaussian,gaussian", "--baseline", "linear", *batch,
        *NUTS_OPTIONS, "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    results = strict_json(tmp_path / "out" / "results.json")
    nuts, point = results["posterior"]["batch"], results["map"]["batch"]
    error = point["shared_stderr"]["peak0_sigma"]
    assert abs(nuts["shared"]["peak0_sigma"] - point["shared"]["peak0_sigma"]) < 4 * error
    assert set(nuts["population"]) == {"peak2_center_mu", "peak2_center_tau"}
    manifest = strict_json(tmp_path / "out" / cli.MANIFEST_NAME)
    args = cli.build_parser().parse_args(
        ["fit-peaks", "s.csv", "--x", "t", "--y", "a", "b", *batch, "--out", "o"]
    )
    written = {entry["name"] for entry in manifest["files"]}
    assert written == set(fit_peaks.peak_files(args, ["a", "b"]))
    assert "posterior-joint.nc" in written


def test_k_sweep_rows_equal_each_k_fitted_alone():
    """The K sweep fits every K in one call (one compiled program): its BIC and AIC rows
    are those of each K's estimator fitted alone, and the model it returns is the best K
    by the criterion (the smallest among ties)."""
    from gaussmix import select_components

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(m, 0.7, (80, 2)) for m in (-3.0, 0.0, 3.0)])
    rows, best = fit_mixture.sweep_components(x, range(1, 5), "diag", "aic", n_init=2, seed=0)
    assert [row["n_components"] for row in rows] == [1, 2, 3, 4]
    for row in rows:
        _, alone = select_components(x, [row["n_components"]], "diag", n_init=2, seed=0)
        np.testing.assert_allclose(row["bic"], alone.bic(x), rtol=1e-9)
        np.testing.assert_allclose(row["aic"], alone.aic(x), rtol=1e-9)
        assert row["converged"]
    chosen = min(rows, key=lambda row: (row["aic"], row["n_components"]))
    assert best.n_components == chosen["n_components"] == 3
