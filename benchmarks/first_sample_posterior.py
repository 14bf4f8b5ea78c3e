"""Time to the first ``sample_posterior``, each run in a fresh process (issue 17).

``GaussianMixture(2).fit(X)`` on ``make_blobs(300, centers=2, random_state=0)`` (float32),
then ``sample_posterior(X, num_warmup=200, num_samples=200, num_chains=1)``: its wall
time, the number of programs it compiles and the XLA compile seconds of each (JAX's
``backend_compile_duration`` events, named through ``jax_log_compiles``).

    GAUSSMIX_NATIVE=0 python benchmarks/first_sample_posterior.py --repeat 5

prints one JSON line per process and the medians.
"""

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, logging, re, time
import jax
from jax._src import monitoring

durations, names = [], []

def on_duration(event, duration, **kwargs):
    if event.endswith("backend_compile_duration"):
        durations.append(duration)

monitoring.register_event_duration_secs_listener(on_duration)

class Names(logging.Handler):
    def emit(self, record):
        found = re.search(r"Compiling (\S+)", record.getMessage())
        if found:
            names.append(found.group(1))

logging.getLogger("jax").addHandler(Names())
logging.getLogger("jax").setLevel(logging.WARNING)
jax.config.update("jax_log_compiles", True)

from sklearn.datasets import make_blobs
import gaussmix

X, _ = make_blobs(300, centers=2, random_state=0)
gm = gaussmix.GaussianMixture(2).fit(X)
before = len(durations)
start = time.perf_counter()
gm.sample_posterior(X, num_warmup=200, num_samples=200, num_chains=1, progress_bar=False)
wall = time.perf_counter() - start
pairs = list(zip(durations[before:], names[before:]))
row = {"wall": wall, "programs": len(pairs), "compile": sum(d for d, _ in pairs)}
for duration, name in pairs:
    if name in ("jit(run)", "jit(prepare)", "jit(postprocess)"):
        row[name[4:-1]] = duration
print(json.dumps(row))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes")
    arguments = parser.parse_args()
    rows = []
    for _ in range(arguments.repeat):
        output = subprocess.run(
            [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True
        ).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(json.dumps({key: round(value, 3) for key, value in rows[-1].items()}))
    medians = {key: round(statistics.median(row[key] for row in rows), 3) for key in rows[0]}
    print("median", json.dumps(medians))


if __name__ == "__main__":
    main()
