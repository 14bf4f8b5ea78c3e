"""The programs a first NUTS run compiles: which, how many, and that they are stable.

Each check runs in a fresh Python process (what a process compiles depends on what it
compiled before) and reads JAX's own compilation log (``jax_log_compiles``) and the
lowered text of each program (``Lowered.as_text()``, recorded when it is compiled).
The persistent compilation cache needs these programs to be the same text in every
process (no per-call constants, no closures over fresh objects) and free of host
callbacks (JAX does not serialize programs that call back into Python).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

#: The lines that record what a fresh process compiles (``compiled``).
RECORD = (Path(__file__).resolve().parents[1] / "compile_log.py").read_text()

#: Run in a fresh process; prints one JSON line with the compiled program names per
#: phase and the sha256 of the lowered text of every program compiled.
SCRIPT = (
    RECORD
    + r"""
import hashlib, json, sys

texts, options = {}, {}
compile_lowered = jax.stages.Lowered.compile

def recording_compile(self, *args, **kwargs):
    text = self.as_text()
    name = re.search(r"module @(\S+)", text).group(1)
    texts.setdefault(name, []).append(text)
    options.setdefault(name, []).append(dict(args[0]) if args and args[0] else {})
    return compile_lowered(self, *args, **kwargs)

jax.stages.Lowered.compile = recording_compile

import numpy as np
import numpyro
import numpyro.distributions as dist
from gaussmix import GaussianMixture
from gaussmix.inference.mcmc import sample

RUN = dict(num_warmup=30, num_samples=20, num_chains=2)

def model(y):
    loc = numpyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = numpyro.sample("scale", dist.HalfNormal(2.0))
    with numpyro.plate("data", len(y)):
        numpyro.sample("y", dist.Normal(loc, scale), obs=y)

rng = np.random.default_rng(0)
phases = {}

def phase(name, function):
    start = len(compiled)
    function()
    phases[name] = compiled[start:]

y = rng.normal(3.0, 1.0, 40)
phase("sample", lambda: sample(model, y, progress_bar=False, **RUN))
phase("sample_again", lambda: sample(model, y + 1.0, seed=1, progress_bar=False, **RUN))

x = np.concatenate([rng.normal(-3.0, 1.0, (60, 2)), rng.normal(3.0, 1.0, (60, 2))])
gm = GaussianMixture(2, random_state=0).fit(x)
phase("sample_posterior", lambda: gm.sample_posterior(x, progress_bar=False, **RUN))
other = x + rng.normal(0.0, 0.1, x.shape)
phase(
    "sample_posterior_again",
    lambda: gm.sample_posterior(other, random_state=1, progress_bar=False, **RUN),
)
if "--progress" in sys.argv:
    phase("with_progress", lambda: sample(model, y, progress_bar=True, **RUN))

callback = re.compile(r"callback", re.IGNORECASE)
print(json.dumps({
    "phases": phases,
    "hashes": {
        name: [hashlib.sha256(text.encode()).hexdigest() for text in versions]
        for name, versions in texts.items()
    },
    "callbacks": {
        name: [bool(callback.search(text)) for text in versions]
        for name, versions in texts.items()
    },
    "options": options,
}))
"""
)


def run_fresh(*arguments) -> dict:
    # Persistent caches off (gaussmix's and JAX's): every program is compiled and logged.
    environment = dict(os.environ, GAUSSMIX_NATIVE="0", GAUSSMIX_COMPILATION_CACHE="0")
    environment.pop("JAX_COMPILATION_CACHE_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, *arguments],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def processes():
    """Two fresh processes running the same calls (the first also with a progress bar)."""
    return run_fresh("--progress"), run_fresh()


def test_first_sample_compiles_the_three_programs(processes):
    phases = processes[0]["phases"]
    assert phases["sample"] == ["jit(prepare)", "jit(run)", "jit(postprocess)"]


def test_first_sample_posterior_compiles_the_three_programs(processes):
    # After the fit (its own programs): the three NUTS programs for the mixture; the
    # posterior mean of the responsibilities is NumPy's; no op-by-op program on the way.
    phases = processes[0]["phases"]
    assert sorted(phases["sample_posterior"]) == sorted(
        ["jit(prepare)", "jit(run)", "jit(postprocess)"]
    )


def test_second_call_with_new_data_of_the_same_shapes_compiles_nothing(processes):
    phases = processes[0]["phases"]
    assert phases["sample_again"] == []
    assert phases["sample_posterior_again"] == []


def test_lowered_text_is_the_same_in_two_fresh_processes(processes):
    first, second = (process["hashes"] for process in processes)
    for name in ("jit_prepare", "jit_run", "jit_postprocess"):
        # the generic program's and the mixture's (the first process also has the run
        # with a progress bar, compiled last)
        assert first[name][: len(second[name])] == second[name], name
        assert len(second[name]) == 2, name


def test_program_without_progress_bar_has_no_host_callback(processes):
    callbacks = processes[0]["callbacks"]
    assert callbacks["jit_prepare"] == [False, False]
    assert callbacks["jit_postprocess"] == [False, False]
    # runs: generic, mixture, then generic with the progress bar (its callbacks found)
    assert callbacks["jit_run"] == [False, False, True]


def test_small_runs_are_compiled_with_fewer_llvm_optimizations(processes):
    """Runs this small (40 and 120 points, 2 chains of 50 iterations) spend their time in
    XLA's compiler: all three programs get optimization level 0 (which program gets it
    where is the doctest of ``program.compiler_options``)."""
    options = processes[1]["options"]
    small = {"xla_backend_optimization_level": 0}
    for name in ("jit_prepare", "jit_run", "jit_postprocess"):
        assert options[name] == [small, small], name


#: A fresh process samples a program whose potential sorts (an XLA op that fusion does not
#: duplicate, one per compiled copy of the potential and its gradient) and prints the
#: number of sorts in each optimized program.
GRADIENT_COPIES = r"""
import json, re
import jax, jax.numpy as jnp, numpy as np, numpyro, numpyro.distributions as dist

optimized = {}
compile_lowered = jax.stages.Lowered.compile

def recording_compile(self, *args, **kwargs):
    compiled = compile_lowered(self, *args, **kwargs)
    name = re.search(r"module @(\S+)", self.as_text()).group(1)
    optimized.setdefault(name, []).append(compiled.as_text())
    return compiled

jax.stages.Lowered.compile = recording_compile
from gaussmix.inference.mcmc import sample

def model(y):
    loc = numpyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = numpyro.sample("scale", dist.HalfNormal(2.0))
    weights = jnp.linspace(0.0, 1.0, y.shape[0])
    numpyro.factor("sorted", -1e-3 * jnp.sum(jnp.sort(loc * y) * weights))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(loc, scale), obs=y)

y = np.random.default_rng(0).normal(3.0, 1.0, 40)
sample(model, y, num_warmup=30, num_samples=20, num_chains=2, progress_bar=False,
       init={"loc": 3.0, "scale": 1.0})
print(json.dumps({name: [len(re.findall(r" sort\(", text)) for text in texts]
                  for name, texts in optimized.items()}))
"""


def test_the_potential_and_its_gradient_are_compiled_once_per_program():
    """From a given start (the mixture's EM answer takes the same path) the preparation
    evaluates the potential in one place (the Laplace fit's loop, which also evaluates
    the chain starts) and the chains in one (the NUTS step): one compiled copy each, not
    one per call site (NumPyro's initialization, the start of each chain)."""
    environment = dict(os.environ, GAUSSMIX_NATIVE="0", GAUSSMIX_COMPILATION_CACHE="0")
    environment.pop("JAX_COMPILATION_CACHE_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", GRADIENT_COPIES],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sorts = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorts == {"jit_prepare": [1], "jit_run": [1], "jit_postprocess": [1]}


#: Samples the mixture posterior with gaussmix's persistent cache in the folder given
#: and prints how often the preparation's Laplace fit was traced and the draws.
WARM_PROCESS = r"""
import json
import numpy as np
import gaussmix
from gaussmix.inference.mcmc import initialization

traced = []
laplace = initialization.laplace

def counting_laplace(*args, **kwargs):
    traced.append(True)
    return laplace(*args, **kwargs)

initialization.laplace = counting_laplace
rng = np.random.default_rng(0)
x = np.concatenate([rng.normal(-3.0, 1.0, (40, 2)), rng.normal(3.0, 1.0, (40, 2))])
model = gaussmix.GaussianMixture(2, random_state=0).fit(x)
tree = model.sample_posterior(x, num_warmup=30, num_samples=30, num_chains=2,
                              progress_bar=False)
print(json.dumps({"laplace_traced": len(traced),
                  "draws": np.asarray(tree.posterior["means"]).ravel().tolist()}))
"""


def run_with_cache(script: str, cache: Path, **variables: str) -> dict:
    """Run ``script`` in a fresh process with gaussmix's cache in ``cache`` (made, owner
    only, if absent) and these environment variables; the JSON of its last line."""
    cache.mkdir(mode=0o700, exist_ok=True)
    environment = dict(os.environ, GAUSSMIX_CACHE_DIR=str(cache), **variables)
    for name in ("GAUSSMIX_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR"):
        environment.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_loaded_preparation_is_not_traced_again(tmp_path):
    """A second process loads the preparation from the persistent cache and reads the
    program's structure from an abstract trace of NumPyro's initialization alone: the
    Laplace fit (the potential, its gradient, the Newton loop) is not traced again; the
    draws are the first process's, to the last bit."""
    cache = tmp_path / "cache"
    runs = [run_with_cache(WARM_PROCESS, cache, GAUSSMIX_NATIVE="0") for _ in range(2)]
    assert runs[0]["laplace_traced"] == 1
    assert runs[1]["laplace_traced"] == 0
    assert runs[1]["draws"] == runs[0]["draws"]


#: gaussmix's peak program (keyed by its signature, traced only where compiled) with a
#: prior of the user's: a NumPyro distribution, which NumPyro flattens in an order that
#: follows the string hash seed of the process.
PRIOR_PROCESS = r"""
import json
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import numpyro.distributions as dist
import gaussmix
from gaussmix.inference import compilation

x = np.arange(10.0)
y = np.array([0.0, 1, 2, 3, 4, 5, 4, 3, 2, 1])
fit = gaussmix.fit_peaks(x, y, peaks=("gaussian",), backend="mcmc",
                         priors={"peak0_sigma": dist.Uniform(0.5, 9.0)},
                         num_warmup=50, num_samples=50, num_chains=1, progress_bar=False)
draws = np.asarray(fit.posterior["posterior"]["peak0_sigma"]).ravel()
print(json.dumps({"order": dist.Uniform.gather_pytree_data_fields(),
                  "statistics": compilation.statistics(),
                  "draws": draws.tolist()}))
"""


def test_a_prior_flattened_in_another_order_by_another_process_is_read_right(tmp_path):
    """NumPyro flattens ``Uniform(low, high)`` as ``(_support, high, low)`` under string
    hash seed 0 and ``(_support, low, high)`` under seed 4, with the same tree text: the
    chains' programs stored by the first process, loaded by the second, read ``high`` as
    ``low`` there (a gradient that is NaN at every start: "not finite at the values given
    in init"). The arguments' distributions are now flattened sorted by field name, and
    the field order of any other is in the key: the second process loads the first's
    programs and draws the same chain."""
    cache = tmp_path / "cache"
    runs = [run_with_cache(PRIOR_PROCESS, cache, PYTHONHASHSEED=seed) for seed in ("0", "4")]
    # The premise: the two processes order Uniform's fields differently.
    assert runs[0]["order"] != runs[1]["order"]
    assert runs[1]["statistics"]["compiled"] == 0  # every program loaded
    draws = np.array([run["draws"] for run in runs])
    assert np.all((draws > 0.5) & (draws < 9.0))
    np.testing.assert_array_equal(draws[1], draws[0])


#: A user's model (keyed by its lowered text: it has no fingerprint) with a distribution
#: argument.
USER_PRIOR_PROCESS = r"""
import json
import numpy as np
import numpyro
import numpyro.distributions as dist
from gaussmix.inference import compilation
from gaussmix.inference.mcmc import sample

def model(y, prior):
    scale = numpyro.sample("scale", prior)
    numpyro.sample("y", dist.Normal(0.0, scale), obs=y)

y = np.random.default_rng(0).normal(0.0, 2.0, 30)
tree = sample(model, y, dist.Uniform(0.5, 9.0), num_warmup=50, num_samples=50,
              num_chains=1, init={"scale": 2.0}, progress_bar=False)
print(json.dumps({"order": dist.Uniform.gather_pytree_data_fields(),
                  "statistics": compilation.statistics(),
                  "draws": np.asarray(tree.posterior["scale"]).ravel().tolist()}))
"""


def test_a_users_model_with_a_prior_argument_is_right_in_another_process(tmp_path):
    """The same two hash seeds with a user's model, whose programs are keyed by their
    lowered text: the second process loads the programs whose text is the same and
    compiles the one whose text NumPyro's own flattening inside the chains changes;
    nothing is loaded wrong (a swapped prior fails at the start or draws off its
    support)."""
    cache = tmp_path / "cache"
    runs = [run_with_cache(USER_PRIOR_PROCESS, cache, PYTHONHASHSEED=seed) for seed in "04"]
    assert runs[0]["order"] != runs[1]["order"]
    assert runs[1]["statistics"]["disk"] >= 1  # something was loaded
    draws = np.array([run["draws"] for run in runs])
    assert np.all((draws > 0.5) & (draws < 9.0))
