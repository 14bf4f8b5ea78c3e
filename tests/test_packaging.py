"""A built wheel installs into a fresh environment and imports every subpackage; the
source of the compiled E-step kernel (built on first use) ships with it."""

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.packaging
def test_wheel_imports_models_and_inference(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("gaussmix-*.whl")
    environment = tmp_path / "env"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"
    # The fresh environment borrows this one's dependencies (a plain path, so this
    # environment's editable gaussmix is not seen) and installs the wheel offline.
    site_packages = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dependencies = next(p for p in sys.path if p.endswith("site-packages"))
    Path(site_packages, "borrowed.pth").write_text(dependencies + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import gaussmix, gaussmix.models.mixture, gaussmix.inference, sys;"
        "assert 'site-packages' in gaussmix.models.__file__, gaussmix.models.__file__;"
        "assert 'matplotlib' not in sys.modules;"
        "from importlib import resources;"
        "assert resources.files('gaussmix.inference').joinpath('em_full_kernel.cc').is_file();"
        "print(gaussmix.models.__file__)"
    )
    result = subprocess.run([python, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert str(environment) in result.stdout
