"""scikit-learn's own BayesianGaussianMixture tests, run against gaussmix's estimator.

The tests are read from the INSTALLED scikit-learn
(``sklearn/mixture/tests/test_bayesian_mixture.py``; not copied into this repository),
their ``from sklearn.mixture import BayesianGaussianMixture`` swapped for gaussmix's, and
every test function is collected here under its own name, as
``tests/gaussmix/test_sklearn_conformance.py`` does for GaussianMixture (the same loader,
``tests/scikit_learn_tests.py``: scikit-learn's conftest fixtures at their defaults, JAX
in float64).

:data:`EXPECTED_FAILURES` lists each test that fails on purpose, with the reason (strict:
one that starts to pass, or a failure not listed, fails the run); :data:`NOT_RUN` the
tests of scikit-learn's own private functions, which do not touch the estimator and so
would pass whatever gaussmix does. The module is skipped, saying why, without
scikit-learn or without the file.
"""

import pytest

from tests import scikit_learn_tests

_SCIKIT_LEARN = scikit_learn_tests.load(
    "sklearn/mixture/tests/test_bayesian_mixture.py",
    "from sklearn.mixture import BayesianGaussianMixture\n",
    "from gaussmix.bayesian_mixture import BayesianGaussianMixture\n",
)

# each of scikit-learn's tests fits several shapes and options: one compilation each
pytestmark = pytest.mark.slow

#: scikit-learn tests not collected: test name -> why.
NOT_RUN: dict[str, str] = {
    "test_log_dirichlet_norm": (
        "tests scikit-learn's private _log_dirichlet_norm, not the estimator (it would "
        "pass whatever gaussmix does); gaussmix's Dirichlet normalizer is checked through "
        "the lower bound (tests/gaussmix/test_bayesian_mixture.py)"
    ),
    "test_log_wishart_norm": (
        "tests scikit-learn's private _log_wishart_norm, not the estimator; gaussmix's is "
        "checked through the lower bound (tests/gaussmix/test_bayesian_mixture.py)"
    ),
}

#: scikit-learn tests that fail on gaussmix's estimator on purpose: test id -> reason.
EXPECTED_FAILURES: dict[str, str] = {
    "test_compare_covar_type": (
        "scikit-learn's private internals: calls BayesianGaussianMixture._check_parameters(X) "
        "and _initialize_parameters(X, RandomState); the same comparison of the four "
        "covariance types after one update runs on gaussmix's start in "
        "tests/gaussmix/test_bayesian_mixture.py::test_covariance_types_agree_after_one_update"
    ),
}


# Every other test function of scikit-learn's module, collected here with its marks, and
# the fixtures they need.
globals().update(scikit_learn_tests.collected(_SCIKIT_LEARN, EXPECTED_FAILURES, NOT_RUN))


def test_listed_tests_name_scikit_learns_tests():
    """Every id in EXPECTED_FAILURES and NOT_RUN names a test function of scikit-learn's
    module (a test renamed upstream is noticed, not silently dropped)."""
    unknown = scikit_learn_tests.unknown_names(_SCIKIT_LEARN, [*EXPECTED_FAILURES, *NOT_RUN])
    assert not unknown, unknown
