"""Every example runs in ``--quick`` mode, asserts its own claims, and writes its figures.

Each script runs as ``python examples/NAME.py --quick --out DIR`` would run it (as
``__main__``, with that ``sys.argv``), but inside this process: JAX is imported once and
a program the examples share (the same model, shapes and settings) compiles once for all
of them, which is most of their cost. A failed claim raises its ``AssertionError``. Each
figure must be a PNG of the size its figure was made with (figsize x 80 dpi) and not
blank (pixel standard deviation above 0.05 on the 0-1 scale). One script also runs as a
separate command, the way a user starts it.
"""

import importlib.util
import os
import runpy
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Reference data, as in conftest.py: ../shared/data unless GAUSSMIX_DATA says otherwise.
DATA = Path(os.environ.get("GAUSSMIX_DATA", ROOT.parent / "shared" / "data"))
DPI = 80

#: example -> {figure file: (width, height) in inches}
FIGURES = {
    "kmeans_vs_gmm": {
        "kmeans_vs_gmm_blobs.png": (10, 4.6),
        "kmeans_vs_gmm_stretched.png": (10, 4.6),
    },
    "covariance_types": {"covariance_types.png": (14, 7.2)},
    "density_moons": {"density_moons.png": (13, 3.6)},
    "select_components_moons": {"select_components_moons.png": (11, 4.2)},
    "digits_generation": {"digits_generation.png": (13, 4.4)},
    "two_gaussian_curve_fit": {"two_gaussian_curve_fit.png": (13, 4.2)},
    "gaussian_datasets": {"gaussian_datasets.png": (10, 9.5)},
    "gan_vs_bayes": {"gan_vs_bayes.png": (11, 4), "gan_vs_bayes_trace.png": (8, 4)},
    "nist_peaks": {"nist_peaks.png": (15, 4.4)},
    "deconvolution": {"deconvolution.png": (15, 4.8)},
    "dirichlet_process": {"dirichlet_process.png": (15, 4.4)},
}


def requirement_missing(name: str) -> str | None:
    if name == "nist_peaks" and not (DATA / "nist" / "Gauss3.dat").exists():
        return f"NIST data absent from {DATA / 'nist'}"
    if name in ("digits_generation", "two_gaussian_curve_fit"):
        module = "sklearn" if name == "digits_generation" else "scipy"
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    return None


def run_example(name: str, out: Path, monkeypatch, capsys) -> str:
    """Run ``examples/NAME.py --quick --out OUT`` as ``__main__`` in this process; returns
    what it printed. A clean ``sys.exit(0)`` (a missing optional requirement) passes."""
    script = ROOT / "examples" / f"{name}.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--quick", "--out", str(out)])
    monkeypatch.setenv("GAUSSMIX_DATA", str(DATA))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as stop:
        assert stop.code in (None, 0), f"{name} exited with {stop.code}"
    return capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FIGURES))
def test_example_quick_run_holds_its_claims_and_draws_its_figures(
    name, tmp_path, monkeypatch, capsys
):
    missing = requirement_missing(name)
    if missing:
        pytest.skip(missing)
    output = run_example(name, tmp_path, monkeypatch, capsys)
    assert "claims hold" in output, output[-4000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FIGURES[name]), output[-4000:]
    for figure, (width, height) in FIGURES[name].items():
        image = matplotlib.image.imread(tmp_path / figure)
        assert image.shape[:2] == (round(height * DPI), round(width * DPI)), figure
        assert image[..., :3].std() > 0.05, f"{figure} is blank"


def test_nist_example_stops_cleanly_without_data(tmp_path):
    """As a separate command, the way a user runs it: says what is absent, exits 0."""
    environment = dict(os.environ, MPLBACKEND="Agg", GAUSSMIX_DATA=str(tmp_path / "absent"))
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "nist_peaks.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    assert "absent" in result.stdout and "Gauss3.dat" in result.stdout
    assert not list(tmp_path.glob("*.png"))
