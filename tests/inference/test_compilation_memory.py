"""Compiled programs and the process's memory mappings (:mod:`gaussmix.inference.compilation`).

A compiled CPU program maps its machine code into the process, and Linux ends a process
that passes ``vm.max_map_count`` with a crash inside XLA's compiler. These tests compile
a few hundred small programs through :func:`compilation.jit` (the path every fit takes)
in a fresh interpreter, so that the suite's own workers are untouched, with lowered
bounds, and count the process's mappings in ``/proc/self/maps`` after every call:

- ``clear_memory`` releases what the programs held (programs compiled in this process,
  not only programs loaded from the folder);
- with :data:`~compilation.MAX_PROGRAMS` low, the count stays flat however many programs
  are made;
- evicted programs come back from the folder, compiled by no one, and compute the same
  bits;
- with a low mapping limit, the guard releases programs before the count passes
  :data:`~compilation.GUARD_SHARE` of it, and says so in a debug log line.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gaussmix.inference import compilation

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/maps"), reason="memory mappings are counted on Linux only"
)

WORKER = textwrap.dedent(
    """
    import json, logging
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from gaussmix.inference import compilation

    lines = []

    class Lines(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    log = logging.getLogger("gaussmix.inference.compilation")
    log.addHandler(Lines())
    log.setLevel(logging.DEBUG)
    count = compilation.mapping_count
    program = compilation.jit(jnp.sin)  # JAX's own function: keyed by its signature
    SIZES = range(1, 241)

    def call(size):
        return np.asarray(program(np.linspace(0.0, 3.0, size)))

    def phase(sizes):
        counts = []
        results = {}
        for size in sizes:
            results[size] = call(size)
            counts.append(count())
        return counts, results

    out = {}
    call(1)  # JAX's and XLA's own set-up
    compilation.MAX_PROGRAMS = 10_000
    out["start"] = count()
    counts, first = phase(SIZES[:80])
    out["unbounded"] = counts
    compilation.clear_memory()
    out["cleared"] = count()

    compilation.MAX_PROGRAMS = 8
    counts, more = phase(SIZES[80:160])
    first.update(more)
    out["bounded"] = counts
    out["held"] = program.cache_size()

    before = compilation.statistics()
    counts, again = phase(SIZES[:160])  # all but 8 evicted: loaded from the folder
    after = compilation.statistics()
    out["reloaded"] = {key: after[key] - before[key] for key in after}
    out["identical"] = all(np.array_equal(first[s], again[s]) for s in first)
    out["close"] = all(
        np.allclose(first[s], np.sin(np.linspace(0.0, 3.0, s)), rtol=1e-14) for s in first
    )

    compilation.MAX_PROGRAMS = 10_000
    compilation.clear_memory()
    base = count()
    # The guard releases at GUARD_SHARE of the limit: here 60 mappings above the count.
    compilation.MAPPING_LIMIT = int((base + 60) / compilation.GUARD_SHARE)
    out["guard_base"], out["trigger"] = base, compilation.GUARD_SHARE * compilation.MAPPING_LIMIT
    counts, _ = phase(SIZES[160:])
    out["guarded"] = counts
    out["log"] = lines
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One fresh interpreter with an empty cache folder: 240 programs compiled, 152 loaded
    (about 15 s of CPU)."""
    cache = tmp_path_factory.mktemp("memory") / "cache"
    env = {key: value for key, value in os.environ.items() if key != "GAUSSMIX_COMPILATION_CACHE"}
    env["GAUSSMIX_CACHE_DIR"] = str(cache)
    result = subprocess.run(
        [sys.executable, "-c", WORKER], capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_clear_memory_releases_the_mappings_of_compiled_programs(run):
    """Without a bound, 80 programs add their mappings; ``clear_memory`` takes them back
    (before the fix it released programs loaded from the folder only, and compiled ones
    stayed in JAX's caches)."""
    grown = run["unbounded"][-1] - run["start"]
    assert grown > 80  # each program holds a few mappings: the count sees them
    assert run["cleared"] - run["start"] < 0.2 * grown


def test_a_bounded_number_of_programs_holds_a_bounded_number_of_mappings(run):
    """80 more programs with at most 8 held: the count stays where 8 programs leave it,
    where 80 held ones grew it by ``grown``."""
    grown = run["unbounded"][-1] - run["start"]
    assert run["held"] == 8
    assert max(run["bounded"]) - run["cleared"] < 0.3 * grown
    assert run["bounded"][-1] - run["bounded"][10] < 0.15 * grown  # flat, not climbing


def test_evicted_programs_come_back_from_the_folder_with_the_same_bits(run):
    reloaded = run["reloaded"]
    assert reloaded["compiled"] == 0
    assert reloaded["disk"] + reloaded["memory"] == 160 and reloaded["disk"] >= 152
    assert run["identical"] and run["close"]


def test_the_guard_releases_programs_before_the_limit_is_neared(run):
    """A mapping limit lowered so that the guard's share of it is 60 mappings above the
    count: 80 programs (about 160 mappings) would pass it; the guard keeps the count
    below it (one program's mappings of slack) and logs each release."""
    guarded = np.asarray(run["guarded"])
    assert run["unbounded"][-1] - run["start"] > run["trigger"] - run["guard_base"] + 60
    assert guarded.max() < run["trigger"] + 15
    releases = [line for line in run["log"] if "released" in line]
    assert len(releases) >= 2
    assert "memory mappings of the" in releases[0]


def test_clear_memory_calls_the_registered_releases(monkeypatch):
    """A cache of compiled programs kept outside ``jit`` (the NUTS programs) registers
    how to drop it; ``clear_memory``, and so the guard, calls it, once however often it
    was registered."""
    monkeypatch.setattr(compilation, "_releases", [])
    held = {"program": object()}
    compilation.register_release(held.clear)
    compilation.register_release(held.clear)
    calls = []
    compilation.register_release(lambda: calls.append(1))
    compilation.clear_memory()
    assert held == {} and calls == [1]


def test_the_limit_is_read_from_the_system():
    limit = compilation.mapping_limit()
    if os.path.exists("/proc/sys/vm/max_map_count"):
        with open("/proc/sys/vm/max_map_count") as handle:
            assert limit == int(handle.read())
    count = compilation.mapping_count()
    with open("/proc/self/maps") as handle:
        assert abs(count - sum(1 for _ in handle)) < 50  # the two reads map a little
