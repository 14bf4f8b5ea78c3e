"""Test configuration: CPU, float64, a fixed key, headless matplotlib."""

import gc
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path

# One compilation cache for the whole session, its worker processes and the subprocesses
# its tests start (CLI runs, examples): a program compiled once is loaded everywhere else.
# It lives in the repository's ignored .pytest_cache, not in the user's cache folder; a
# second local run starts warm, a clean clone (CI) cold. Tests about the cache itself set
# their own folder.
os.environ.setdefault(
    "GAUSSMIX_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "gaussmix")
)

import jax
import pytest
from hypothesis import settings

from gaussmix.inference import compilation

jax.config.update("jax_enable_x64", True)

# CI draws the same hypothesis examples every run (a red CI must mean a regression, not
# a new random draw); a developer's run draws new ones and keeps failures in .hypothesis/.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


#: Marks of the modules that run first: the heaviest files (minutes of subprocesses,
#: examples, NUTS runs) carry one of them.
HEAVY_MARKS = ("slow", "packaging")


def pytest_collection_modifyitems(config, items):
    """Modules with a ``slow`` or ``packaging`` test first, each module's tests together.

    The workers of ``make test`` take the tests in this order, in chunks: starting the
    heaviest files first keeps a long test (the mutation check, the SBC, the examples)
    from running alone at the end while the other worker idles. The sort is stable:
    pytest-randomly's order (it reorders before this hook runs) is kept within each group
    and each module.
    """
    heavy = {item.path for item in items if any(item.get_closest_marker(m) for m in HEAVY_MARKS)}
    items.sort(key=lambda item: item.path not in heavy)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Every compiled CPU program keeps about three memory mappings for its machine code;
    the suite compiles tens of thousands of programs, and one process that kept them all
    would pass Linux's ``vm.max_map_count`` (65 530), after which LLVM's code allocation
    fails and the process dies with a segmentation fault inside XLA's compiler. Programs
    shared within a module (module-scoped fixtures, no-retrace checks) stay compiled;
    gaussmix's own programs are loaded again from the session's compilation cache.
    """
    yield
    jax.clear_caches()
    compilation.clear_memory()
    gc.collect()


@pytest.fixture(autouse=True)
def _close_figures():
    """Close every matplotlib figure a test left open.

    pyplot keeps figures alive until they are closed: a test that draws without closing
    would leak them into the next test of the worker (pytest-randomly's order changes
    which), and a test that counts figures would see them. pyplot is not imported here
    for tests that never draw.
    """
    yield
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")


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
