"""GaussianMixture.sample_posterior: NUTS on the program, relabeled to the EM labelling."""

import numpy as np
import pytest
from arviz_stats import rhat

from gaussmix import GaussianMixture, datasets


@pytest.mark.slow
def test_sample_posterior_matches_em_labelling():
    x, _ = datasets.sm2(seed=1)
    x = x[::6]  # 400 points, 4 well separated components
    gm = GaussianMixture(4, covariance_type="diag", random_state=0).fit(x)
    tree = gm.sample_posterior(
        x, num_warmup=300, num_samples=300, num_chains=2, random_state=1, progress_bar=False
    )
    posterior = tree.posterior
    assert set(posterior.data_vars) >= {"weights", "means", "variances"}
    assert posterior["means"].shape == (2, 300, 4, 2)
    means = posterior["means"].values.reshape(-1, 4, 2)
    # Relabeled to the fit: every posterior mean sits near the EM mean of the same label,
    # within 5 posterior standard deviations (plus the prior's shrinkage, tiny here).
    spread = means.std(axis=0)
    assert np.all(np.abs(means.mean(axis=0) - gm.means_) < 5 * spread + 0.05)
    assert float(rhat(posterior["means"]).max()) < 1.05
    responsibilities = np.asarray(tree["mixture"]["responsibilities"])
    np.testing.assert_allclose(responsibilities.sum(axis=1), 1.0, rtol=1e-10)
    # Separated clusters: posterior-averaged and EM responsibilities pick the same labels.
    agree = (responsibilities.argmax(1) == gm.predict(x)).mean()
    assert agree > 0.97
    assert tree.log_likelihood["x"].shape == (2, 300, 400)
