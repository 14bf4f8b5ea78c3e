"""scikit-learn's own GaussianMixture tests, run against gaussmix's estimator.

The tests are read from the INSTALLED scikit-learn
(``sklearn/mixture/tests/test_gaussian_mixture.py``; not copied into this repository),
their ``from sklearn.mixture import GaussianMixture`` swapped for
``from gaussmix.mixture import GaussianMixture``, and every test function is collected
here under its own name and parameters, with the fixtures of scikit-learn's conftest
(``global_dtype``: float64, ``global_random_seed``: 42, their defaults). JAX runs in
float64 (``tests/conftest.py``). The loader is ``tests/scikit_learn_tests.py``.

:data:`EXPECTED_FAILURES` lists each test that fails on purpose, with the reason; it is
a strict expected failure: one that starts to pass, or a failure not listed there, fails
the run. The module is skipped, saying why, without scikit-learn or without the file.
"""

from tests import scikit_learn_tests

_SCIKIT_LEARN = scikit_learn_tests.load(
    "sklearn/mixture/tests/test_gaussian_mixture.py",
    "from sklearn.mixture import GaussianMixture\n",
    "from gaussmix.mixture import GaussianMixture\n",
)

#: scikit-learn tests that fail on gaussmix's GaussianMixture on purpose: test id ->
#: reason. Each is a strict expected failure.
EXPECTED_FAILURES: dict[str, str] = {
    "test_check_weights": (
        "a message better than the original: scikit-learn's test expects its own message, "
        "which swaps the two numbers ('max value' followed by the minimum); gaussmix says "
        "'max value 1.56843, min value 1.45615'"
    ),
    "test_regularisation": (
        "a message better than the original: gaussmix names the collapsed component, the "
        "restart and the iteration ('because component 0 has an ill-defined empirical "
        "covariance (restart 0, iteration 1)'); the remedies are the same"
    ),
    "test_multiple_init": (
        "n_init keeps the restart with the largest lower bound, as scikit-learn does, but "
        "the lower bound is the log-likelihood before the last M-step and the test compares "
        "score(X) after it: with full covariances another restart's lower bound "
        "(-6.652163) beats the single fit's (-6.652170, the same start as restart 0) while "
        "its score is 1e-4 lower; scikit-learn passes with its own starts"
    ),
    "test_gaussian_mixture_precisions_init_diag": (
        "the test computes precisions_init from scikit-learn's KMeans labels, and "
        "gaussmix's k-means initialization (JAX keys, not NumPy's RandomState) numbers "
        "the two clusters the other way, so the precisions pair with the other cluster's "
        "means: one more iteration. Precisions from gaussmix's own initialization give "
        "the same fit and n_iter_ (tests/gaussmix/test_gaussian_mixture.py::"
        "test_precisions_init_of_the_initialization_changes_nothing)"
    ),
    **{
        f"test_gaussian_mixture_precisions_init[{covariance_type}]": (
            "scikit-learn's private internals: GaussianMixture._set_parameters and "
            "GaussianMixture._initialize(X, resp)"
        )
        for covariance_type in ("full", "tied", "diag", "spherical")
    },
    "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters": (
        "scikit-learn's private internals: counts the calls of the mocked "
        "sklearn.mixture._gaussian_mixture._estimate_gaussian_parameters, which gaussmix "
        "never calls"
    ),
}


# Every test function of scikit-learn's module, collected here with its marks, and the
# fixtures they need.
globals().update(scikit_learn_tests.collected(_SCIKIT_LEARN, EXPECTED_FAILURES, not_run={}))


def test_expected_failures_name_scikit_learns_tests():
    """Every id in EXPECTED_FAILURES names a test function of scikit-learn's module (a
    test renamed upstream is noticed, not silently dropped)."""
    unknown = scikit_learn_tests.unknown_names(_SCIKIT_LEARN, EXPECTED_FAILURES)
    assert not unknown, unknown
