"""scikit-learn's own tests of an estimator, run against gaussmix's: the loader of
``tests/gaussmix/test_sklearn_conformance.py`` (GaussianMixture) and
``tests/gaussmix/test_sklearn_bayesian_conformance.py`` (BayesianGaussianMixture).

:func:`load` reads a test module from the INSTALLED scikit-learn (not copied into this
repository), swaps its import of the estimator for gaussmix's and runs it as a module;
:func:`collected` gives its test functions, with their marks, and the fixtures they need
for a test module's ``globals()``: scikit-learn's conftest fixtures at their defaults
(``global_dtype``: float64, ``global_random_seed``: 42; JAX runs in float64,
``tests/conftest.py``) and strict expected failures for the listed tests.
"""

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest


def load(source_name: str, original_import: str, gaussmix_import: str) -> types.ModuleType:
    """scikit-learn's test module ``source_name`` (a path inside the installed package,
    e.g. ``sklearn/mixture/tests/test_gaussian_mixture.py``) with its one line
    ``original_import`` replaced by ``gaussmix_import``; a module skip without
    scikit-learn or without the file, a failure if the file no longer has that line."""
    specification = importlib.util.find_spec("sklearn")
    if specification is None or not specification.submodule_search_locations:
        pytest.skip("scikit-learn is not installed", allow_module_level=True)
    root = Path(next(iter(specification.submodule_search_locations))).parent
    path = root / source_name
    if not path.is_file():
        pytest.skip(f"{path} is absent from the installed scikit-learn", allow_module_level=True)
    source = path.read_text()
    if source.count(original_import) != 1:
        pytest.fail(f"{path} no longer imports the estimator as {original_import.strip()!r}")
    module = types.ModuleType(
        f"sklearn_{Path(source_name).stem.removeprefix('test_')}_tests_on_gaussmix"
    )
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    exec(compile(source.replace(original_import, gaussmix_import), str(path), "exec"), vars(module))
    return module


def collected(
    module: types.ModuleType, expected_failures: dict[str, str], not_run: dict[str, str]
) -> dict:
    """The names a test module takes into its ``globals()``: every test function of
    ``module`` not in ``not_run``, and the fixtures ``global_dtype``,
    ``global_random_seed`` and ``_expected_failure`` (each test id of
    ``expected_failures`` a strict expected failure, with its reason)."""

    @pytest.fixture
    def global_dtype():
        """scikit-learn's conftest fixture at its default (float32 runs need an opt-in)."""
        return np.float64

    @pytest.fixture
    def global_random_seed():
        """scikit-learn's conftest fixture at its default seed."""
        return 42

    @pytest.fixture(autouse=True)
    def _expected_failure(request):
        """Mark the listed tests as strict expected failures."""
        reason = expected_failures.get(request.node.name)
        if reason is not None:
            request.applymarker(pytest.mark.xfail(reason=reason, strict=True))

    tests = {
        name: value
        for name, value in vars(module).items()
        if name.startswith("test_") and callable(value) and name not in not_run
    }
    fixtures = {
        "global_dtype": global_dtype,
        "global_random_seed": global_random_seed,
        "_expected_failure": _expected_failure,
    }
    return tests | fixtures


def unknown_names(module: types.ModuleType, test_ids) -> list[str]:
    """The ids among ``test_ids`` that name no test function of ``module`` (a test
    renamed upstream is noticed, not silently dropped)."""
    functions = {name for name in vars(module) if name.startswith("test_")}
    return sorted(test_id for test_id in test_ids if test_id.split("[")[0] not in functions)
