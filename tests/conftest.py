"""Test configuration: CPU, float64, a fixed key, headless matplotlib."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)

#: Reference data shared by the project (not copied into the repository).
DATA = Path(
    os.environ.get("GAUSSMIX_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)

#: Tolerances keyed on dtype.
TOLERANCE = {"float32": 5e-4, "float64": 1e-9}


@pytest.fixture
def rng_key():
    return jax.random.key(0)


@pytest.fixture
def shared_data():
    """``shared_data(*parts)``: a path under ../shared/data, or skip saying what is missing."""

    def locate(*parts: str) -> Path:
        path = DATA.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"reference data {path} is absent (expected in ../shared/data)")
        return path

    return locate
