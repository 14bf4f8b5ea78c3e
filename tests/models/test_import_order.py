"""gaussmix works when ArviZ (which loads numpyro lazily) is imported first."""

import subprocess
import sys

PROGRAM = """
import jax
from arviz_stats import rhat  # arviz_base registers numpyro through lazy_loader
import numpyro
import numpyro.distributions as dist
import gaussmix.models  # noqa: F401
from numpyro.infer.util import initialize_model

def model():
    numpyro.sample("scale", dist.HalfNormal(1.0))  # needs numpyro.factor for the Jacobian

initialize_model(jax.random.key(0), model)
print("ok")
"""


def test_arviz_imported_before_numpyro():
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
