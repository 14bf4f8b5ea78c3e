"""Every example runs in ``--quick`` mode, asserts its own claims, and writes its figures.

Each script is run as a user would (a subprocess with this Python) into a temporary
folder; it exits with an error when one of its claims fails. Each figure must be a PNG of
the size its figure was made with (figsize x 80 dpi) and not blank (pixel standard
deviation above 0.05 on the 0-1 scale).
"""

import importlib.util
import os
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
}


def requirement_missing(name: str) -> str | None:
    if name == "nist_peaks" and not (DATA / "nist" / "Gauss3.dat").exists():
        return f"NIST data absent from {DATA / 'nist'}"
    if name in ("digits_generation", "two_gaussian_curve_fit"):
        module = "sklearn" if name == "digits_generation" else "scipy"
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FIGURES))
def test_example_quick_run_holds_its_claims_and_draws_its_figures(name, tmp_path):
    missing = requirement_missing(name)
    if missing:
        pytest.skip(missing)
    environment = dict(os.environ, MPLBACKEND="Agg", GAUSSMIX_DATA=str(DATA))
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{name}.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
    )
    output = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, output
    assert "claims hold" in result.stdout, output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FIGURES[name]), output
    for figure, (width, height) in FIGURES[name].items():
        image = matplotlib.image.imread(tmp_path / figure)
        assert image.shape[:2] == (round(height * DPI), round(width * DPI)), figure
        assert image[..., :3].std() > 0.05, f"{figure} is blank"


def test_nist_example_stops_cleanly_without_data(tmp_path):
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
