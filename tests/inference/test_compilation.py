"""gaussmix's persistent compilation cache (:mod:`gaussmix.inference.compilation`).

Layers: keys (fingerprints that name the same thing the same way and refuse what has only
an address), results (a cached program computes what ``jax.jit`` computes), persistence
(a second fresh process compiles nothing, counted by JAX's own compile events), and
safety (damaged, foreign and planted files, unsafe folders, full or read-only folders,
the switches).
"""

import errno
import functools
import gc
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussmix.inference import compilation, program_keys
from gaussmix.inference.compilation import CompilationCacheWarning, fingerprint
from gaussmix.inference.map.levenberg_marquardt import inverse_positive_definite


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private cache folder for this test, state of the module reset around it."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("GAUSSMIX_CACHE_DIR", str(folder))
    monkeypatch.delenv("GAUSSMIX_COMPILATION_CACHE", raising=False)
    monkeypatch.setattr(compilation, "_state", {})
    monkeypatch.setattr(compilation, "_switch", None)
    return folder


def programs(folder: Path) -> list[Path]:
    return sorted((folder / "programs").glob(f"*{compilation.SUFFIX}"))


class Point(NamedTuple):
    name: str
    size: int


# ---------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------


def test_fingerprints_of_plain_data_are_their_values():
    value = ("normal", 3, 2.5, None, True, {"b": (1, 2), "a": "x"}, np.dtype("float32"))
    copy = ("normal", 3, 2.5, None, True, {"a": "x", "b": (1, 2)}, np.dtype(np.float32))
    assert fingerprint(value) == fingerprint(copy)
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint((1,)) != fingerprint([1]) != fingerprint((1.0,))
    assert fingerprint(True) != fingerprint(1)


def test_fingerprints_of_gaussmix_functions_name_them_and_their_arguments():
    named = fingerprint(inverse_positive_definite)
    assert "gaussmix.inference.map.levenberg_marquardt.inverse_positive_definite" in named
    partial = functools.partial(inverse_positive_definite)
    assert fingerprint(partial) != named
    assert fingerprint(functools.partial(compilation.jit, static_argnames=("a",))) != (
        fingerprint(functools.partial(compilation.jit, static_argnames=("b",)))
    )


def test_what_has_only_an_address_has_no_fingerprint():
    """A function of the user's module, an object, a dict with non-string keys: the
    program is then keyed by its lowered text."""
    assert fingerprint(lambda x: x) is None  # this test module is not gaussmix's
    assert fingerprint(object()) is None
    assert fingerprint({1: "a"}) is None
    assert fingerprint((1, object())) is None
    assert fingerprint(Point("a", 1)) is None  # a class of the user's module
    assert fingerprint(functools.partial(lambda x: x, 1)) is None


# ---------------------------------------------------------------------------------------
# Results in one process
# ---------------------------------------------------------------------------------------


def powered_sum(values, extra, power):
    return jnp.sum(values**power) + extra["shift"]


def test_a_cached_program_computes_what_jit_computes(cache_dir):
    program = compilation.jit(powered_sum, static_argnames=("power",))
    values = jnp.linspace(0.0, 1.0, 7)
    extra = {"shift": jnp.asarray(2.0)}
    expected = jax.jit(powered_sum, static_argnames=("power",))(values, extra, power=3)
    before = compilation.statistics()
    assert program(values, extra, power=3) == expected
    assert program(values, extra, 3) == expected  # positional: the same program
    after = compilation.statistics()
    assert after["compiled"] - before["compiled"] == 1
    assert after["memory"] - before["memory"] == 1
    assert len(programs(cache_dir)) == 1
    # Another static value and another shape are other programs.
    assert program(values, extra, power=2) == pytest.approx(float(jnp.sum(values**2) + 2))
    program(jnp.ones(3), extra, power=2)
    assert len(programs(cache_dir)) == 3


def test_traced_arguments_compile_as_jit_does(cache_dir):
    program = compilation.jit(powered_sum, static_argnames=("power",))
    batched = jax.vmap(lambda v: program(v, {"shift": 1.0}, power=2))(jnp.ones((4, 3)))
    np.testing.assert_allclose(batched, 4.0)
    assert jax.grad(lambda v: program(v, {"shift": 0.0}, power=2))(jnp.ones(2)).tolist() == [
        2.0,
        2.0,
    ]


def test_unknown_static_names_are_refused():
    with pytest.raises(ValueError, match="not parameters"):
        compilation.jit(powered_sum, static_argnames=("exponent",))


# ---------------------------------------------------------------------------------------
# Across processes
# ---------------------------------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax._src import monitoring
    compiles = []
    monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: compiles.append(event)
        if event.endswith("backend_compile_duration") else None)
    from gaussmix.inference import compilation
    from gaussmix.inference.map.levenberg_marquardt import inverse_positive_definite

    def users_own(matrix):  # keyed by its lowered text
        return jnp.linalg.cholesky(matrix) * 2.0

    import numpy as np
    matrix = np.asarray([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])
    inverse = compilation.jit(inverse_positive_definite)(matrix)  # no LAPACK
    lapack_before = "scipy.linalg" in sys.modules
    from gaussmix.inference.em.parameters import precisions_cholesky_from_covariances
    precisions = compilation.jit(  # keyed by its signature, LAPACK's Cholesky
        precisions_cholesky_from_covariances, static_argnames=("covariance_type",)
    )(matrix[None], covariance_type="full")
    factor = compilation.jit(users_own)(matrix)
    print(json.dumps({"compiles": len(compiles), "stats": compilation.statistics(),
                      "inverse": inverse.tolist(), "factor": factor.tolist(),
                      "precisions": precisions.tolist(), "lapack_before": lapack_before,
                      "status": compilation.status()}))
    """
)


def run_script(cache: Path, script: str = SCRIPT, **environment) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "GAUSSMIX_COMPILATION_CACHE"}
    env.update(GAUSSMIX_CACHE_DIR=str(cache), **environment)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_second_process_compiles_nothing(tmp_path):
    """Both kinds of key: gaussmix functions (by signature, nothing traced) and a user's
    function (by lowered text). A program calling LAPACK (Cholesky) loaded without being
    lowered first must still find its LAPACK kernels (set up when it is loaded); one
    without LAPACK calls (the MAP back end's inverse) loads without that set-up, whose
    import of ``scipy.linalg`` is 0.1 s."""
    cache = tmp_path / "cache"
    first = run_script(cache)
    second = run_script(cache)
    assert first["stats"]["compiled"] == 3 and first["stats"]["stored"] == 3
    assert second["compiles"] == 0
    assert second["stats"]["disk"] == 3 and second["stats"]["compiled"] == 0
    for name in ("inverse", "precisions", "factor"):
        assert second[name] == first[name], name
    assert not second["lapack_before"]
    matrix = np.asarray([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])
    np.testing.assert_allclose(second["inverse"], np.linalg.inv(matrix), rtol=1e-12)
    np.testing.assert_allclose(second["factor"], 2.0 * np.linalg.cholesky(matrix), rtol=1e-12)
    precision_factor = np.linalg.inv(np.linalg.cholesky(matrix)).T
    np.testing.assert_allclose(second["precisions"][0], precision_factor, rtol=1e-12)
    assert second["status"] == f"on: {cache / 'programs'}"
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cache / "programs").st_mode) == 0o700
    for path in programs(cache):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_another_setting_is_another_program(tmp_path):
    cache = tmp_path / "cache"
    run_script(cache)
    other = run_script(cache, XLA_FLAGS="--xla_cpu_enable_fast_math=false")
    assert other["stats"]["compiled"] == 3
    assert len(programs(cache)) == 6


def test_switched_off_it_writes_nothing(tmp_path):
    cache = tmp_path / "cache"
    for value in ("0", "off", "False"):
        result = run_script(cache, GAUSSMIX_COMPILATION_CACHE=value)
        assert result["status"] == f"off: GAUSSMIX_COMPILATION_CACHE={value}"
        assert result["compiles"] >= 2
    assert not cache.exists()


def test_jax_own_cache_is_used_when_the_user_configured_it(tmp_path):
    cache = tmp_path / "cache"
    jax_cache = tmp_path / "jax-cache"
    script = SCRIPT.replace(
        'jax.config.update("jax_enable_x64", True)',
        f'jax.config.update("jax_enable_x64", True)\n'
        f'jax.config.update("jax_compilation_cache_dir", {str(jax_cache)!r})',
    )
    result = run_script(cache, script)
    assert result["status"] == f"jax: {jax_cache}"
    assert not cache.exists()


DEVICES = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from jax.sharding import Mesh, PartitionSpec
    from gaussmix.inference import compilation
    from gaussmix.inference.map.levenberg_marquardt import inverse_positive_definite

    devices = jax.devices()
    mesh = Mesh(np.asarray([devices[3], devices[1]]), ("rows",))

    def scaled(values):  # each device scales its half by its place in the mesh
        return jax.shard_map(
            lambda block: block * (1.0 + jax.lax.axis_index("rows")),
            mesh=mesh, in_specs=PartitionSpec("rows"), out_specs=PartitionSpec("rows"),
        )(values)

    matrix = np.asarray([[4.0, 1.0], [1.0, 3.0]])
    inverse = compilation.jit(inverse_positive_definite)(matrix)
    two_devices, _ = compilation.compile_keyed(
        ("a test's two-device program", (4,)), lambda: jax.jit(scaled).lower(np.arange(4.0))
    )
    out = two_devices(np.arange(4.0))
    rows = {shard.device.id: shard.index[0].start for shard in out.addressable_shards}
    print(json.dumps({"stats": compilation.statistics(), "inverse": inverse.tolist(),
                      "scaled": out.tolist(), "rows": rows}))
    """
)


def test_a_program_is_loaded_onto_the_devices_it_was_compiled_for(tmp_path):
    """In a process with four devices, a one-device program loaded from the folder runs
    on the default device (it was loaded onto all four, expecting four shards per
    argument: 'Expected args to execute_sharded_on_local_devices to have 4 shards, got:
    [1, 1, 1, 1]'), and a program over devices 3 and 1 on those two, in that order."""
    cache = tmp_path / "cache"
    four = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    first = run_script(cache, DEVICES, **four)
    second = run_script(cache, DEVICES, **four)
    assert first["stats"]["stored"] == 2
    assert second["stats"]["disk"] == 2 and second["stats"]["compiled"] == 0
    np.testing.assert_allclose(second["inverse"], np.linalg.inv([[4.0, 1.0], [1.0, 3.0]]))
    assert second["scaled"] == first["scaled"] == [0.0, 1.0, 4.0, 6.0]
    assert second["rows"] == first["rows"] == {"3": 0, "1": 2}


def test_a_program_being_compiled_elsewhere_is_waited_for_then_loaded(cache_dir):
    """While another process holds the lock of a program's file (here: another open file
    of this process, which flock treats alike), a call waits instead of compiling it too,
    then loads what the other one stored."""
    import fcntl
    import threading

    program = compilation.jit(powered_sum, static_argnames=("power",))
    values, extra = np.arange(5.0), {"shift": np.asarray(1.0)}
    expected = float(program(values, extra, power=2))  # compiled and stored
    (path,) = programs(cache_dir)
    compilation.clear_memory()
    before = compilation.statistics()
    lock = os.open(path.parent / f".lock-{path.name[:2]}", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)
    results = []
    waiting = threading.Thread(target=lambda: results.append(program(values, extra, power=2)))
    try:
        waiting.start()
        waiting.join(2.0)
        assert waiting.is_alive() and not results, "it did not wait for the lock"
    finally:
        os.close(lock)  # releases it
    waiting.join()
    assert float(results[0]) == expected == float(powered_sum(values, extra, 2))
    after = compilation.statistics()
    assert after["disk"] == before["disk"] + 1 and after["compiled"] == before["compiled"]
    assert stat.S_IMODE(os.stat(path.parent / f".lock-{path.name[:2]}").st_mode) == 0o600


def test_a_program_waited_for_does_not_hold_up_another_threads_program(cache_dir):
    """Loads and compiles of different programs go on in parallel threads (a thread
    loads the next programs while the caller computes): while one thread waits for the
    lock of program A's file, another thread loads program B of another lock file."""
    import fcntl
    import threading

    program = compilation.jit(powered_sum, static_argnames=("power",))
    values, extra = np.arange(5.0), {"shift": np.asarray(1.0)}
    stored = {}
    for power in range(2, 12):  # two programs whose files have different locks
        before = set(programs(cache_dir))
        program(values, extra, power=power)
        (stored[power],) = set(programs(cache_dir)) - before
        buckets = {path.name[:2]: power for power, path in stored.items()}
        if len(buckets) == 2:
            break
    (first, second) = buckets.values()
    compilation.clear_memory()
    lock = os.open(stored[first].parent / f".lock-{stored[first].name[:2]}", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)
    results = {}

    def call(power):
        results[power] = float(program(values, extra, power=power))

    waiting = threading.Thread(target=call, args=(first,))
    other = threading.Thread(target=call, args=(second,))
    try:
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive(), "it did not wait for the lock"
        other.start()
        other.join(120.0)
        assert not other.is_alive() and second in results, "held up by the other's wait"
        assert waiting.is_alive() and first not in results
    finally:
        os.close(lock)
    waiting.join()
    for power in (first, second):
        assert results[power] == float(powered_sum(values, extra, power))


def test_a_lock_held_too_long_or_unusable_is_done_without(tmp_path):
    import fcntl

    from gaussmix.inference import cache_folder

    path = tmp_path / "ab12.gaussmix-program"
    with cache_folder.claim(path) as held:
        assert held
        with cache_folder.claim(path, wait=0.0) as again:  # another open file: refused
            assert not again
    lock = os.open(tmp_path / ".lock-ab", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the block ended
    os.close(lock)
    (tmp_path / ".lock-cd").symlink_to(tmp_path / "elsewhere")
    with cache_folder.claim(tmp_path / "cd34.gaussmix-program") as held:
        assert not held  # a symbolic link is never followed
    assert not (tmp_path / "elsewhere").exists()


# ---------------------------------------------------------------------------------------
# Damaged, foreign and planted files; unsafe folders
# ---------------------------------------------------------------------------------------


def fill(cache_dir) -> tuple:
    program = compilation.jit(powered_sum, static_argnames=("power",))
    values, extra = jnp.arange(5.0), {"shift": jnp.asarray(1.0)}
    expected = float(program(values, extra, power=2))
    return program, values, extra, expected


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated (an interrupted copy)
        lambda data: data[:-10] + b"0123456789",  # a changed payload
        lambda data: b"not a program at all",  # a foreign file under the name
        lambda data: b"",
    ],
)
def test_a_damaged_program_is_compiled_again_and_replaced(cache_dir, damage):
    _, values, extra, expected = fill(cache_dir)
    (path,) = programs(cache_dir)
    path.write_bytes(damage(path.read_bytes()))
    fresh = compilation.jit(powered_sum, static_argnames=("power",))
    before = compilation.statistics()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(fresh(values, extra, power=2)) == expected
    after = compilation.statistics()
    assert after["compiled"] - before["compiled"] == 1
    assert after["disk"] == before["disk"]
    # ... and the next process (here: a new function object) loads the replacement.
    again = compilation.jit(powered_sum, static_argnames=("power",))
    assert float(again(values, extra, power=2)) == expected
    assert compilation.statistics()["disk"] == after["disk"] + 1


def test_a_planted_program_that_others_can_write_is_refused(cache_dir):
    _, values, extra, expected = fill(cache_dir)
    (path,) = programs(cache_dir)
    os.chmod(path, 0o666)
    fresh = compilation.jit(powered_sum, static_argnames=("power",))
    with pytest.warns(CompilationCacheWarning, match="writable by group and others"):
        assert float(fresh(values, extra, power=2)) == expected


def test_a_symbolic_link_in_place_of_a_program_is_refused(cache_dir, tmp_path):
    _, values, extra, expected = fill(cache_dir)
    (path,) = programs(cache_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(elsewhere)
    fresh = compilation.jit(powered_sum, static_argnames=("power",))
    with pytest.warns(CompilationCacheWarning, match="symbolic link"):
        assert float(fresh(values, extra, power=2)) == expected
    assert elsewhere.read_bytes()  # left alone


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722])
def test_a_folder_others_can_write_is_neither_read_nor_written(cache_dir, mode):
    folder = cache_dir / "programs"
    folder.mkdir(parents=True, mode=0o700)
    os.chmod(cache_dir, 0o700)
    os.chmod(folder, mode)
    program = compilation.jit(powered_sum, static_argnames=("power",))
    with pytest.warns(CompilationCacheWarning, match="chmod 700"):
        assert float(program(jnp.arange(3.0), {"shift": 0.0}, power=1)) == 3.0
    assert programs(cache_dir) == []
    assert compilation.status().startswith("unavailable: cache folder")


def test_a_folder_that_is_a_symbolic_link_is_refused(cache_dir, tmp_path):
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    cache_dir.mkdir(mode=0o700)
    (cache_dir / "programs").symlink_to(target)
    program = compilation.jit(powered_sum, static_argnames=("power",))
    with pytest.warns(CompilationCacheWarning, match="symbolic link"):
        program(jnp.arange(3.0), {"shift": 0.0}, power=1)
    assert list(target.iterdir()) == []


def test_a_full_disk_warns_once_leaves_nothing_half_written_and_still_computes(
    cache_dir, monkeypatch
):
    real_replace = os.replace

    def full(source, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(compilation.os, "replace", full)
    program = compilation.jit(powered_sum, static_argnames=("power",))
    with pytest.warns(CompilationCacheWarning, match="cannot write.*No space left"):
        assert float(program(jnp.arange(3.0), {"shift": 0.0}, power=1)) == 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(program(jnp.arange(4.0), {"shift": 0.0}, power=1)) == 6.0
    monkeypatch.setattr(compilation.os, "replace", real_replace)
    left = [path.name for path in (cache_dir / "programs").iterdir()]
    assert [name for name in left if not name.startswith(".lock-")] == []  # no partial file


def test_the_folder_is_trimmed_oldest_first_and_nothing_else_is_touched(cache_dir, monkeypatch):
    program = compilation.jit(powered_sum, static_argnames=("power",))
    program(jnp.arange(3.0), {"shift": 0.0}, power=1)
    (oldest,) = programs(cache_dir)
    os.utime(oldest, (1.0, 1.0))
    program(jnp.arange(4.0), {"shift": 0.0}, power=1)
    (newest,) = set(programs(cache_dir)) - {oldest}
    folder = cache_dir / "programs"
    keep = folder / "notes.txt"
    keep.write_text("someone's notes")
    os.utime(keep, (0.0, 0.0))
    monkeypatch.setattr(compilation, "MAX_BYTES", newest.stat().st_size)
    program(jnp.arange(5.0), {"shift": 0.0}, power=1)  # stored, then the folder trimmed
    remaining = programs(cache_dir)
    assert oldest not in remaining and len(remaining) <= 2
    assert keep.read_text() == "someone's notes"


def test_switches(cache_dir, monkeypatch):
    compilation.set_enabled(False)
    try:
        assert compilation.status() == "off: gaussmix.inference.compilation.set_enabled(False)"
        compilation.jit(powered_sum, static_argnames=("power",))(
            jnp.arange(3.0), {"shift": 0.0}, power=1
        )
        assert not cache_dir.exists()
    finally:
        compilation.set_enabled(None)
    with pytest.raises(ValueError, match="True, False or None"):
        compilation.set_enabled("yes")
    monkeypatch.delenv("GAUSSMIX_CACHE_DIR")
    monkeypatch.setenv("HOME", "")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(compilation, "_state", {})
    assert compilation.status().startswith("unavailable: no cache folder")


def test_compiler_options_are_part_of_the_key(cache_dir):
    values, extra = jnp.arange(3.0), {"shift": 0.0}
    plain = compilation.jit(powered_sum, static_argnames=("power",))
    quick = compilation.jit(
        powered_sum,
        static_argnames=("power",),
        compiler_options={"xla_backend_optimization_level": 0},
    )
    assert float(plain(values, extra, power=2)) == float(quick(values, extra, power=2)) == 5.0
    assert len(programs(cache_dir)) == 2


def test_programs_by_optimization_level_choose_the_level_by_work(cache_dir):
    """Level 0 below 1e6 of work, 1 below 1e8, XLA's default above; one program per
    level (the same object for the same level), each computing what the function does."""
    program_for = compilation.programs_by_optimization_level(
        powered_sum, static_argnames=("power",)
    )
    levels = {
        work: program_for(work).compiler_options.get("xla_backend_optimization_level")
        for work in (0, 999_999, 1e6, 99_999_999, 1e8, 1e12)
    }
    assert levels == {0: 0, 999_999: 0, 1e6: 1, 99_999_999: 1, 1e8: None, 1e12: None}
    assert program_for(10) is program_for(20) and program_for(1e6) is not program_for(10)
    values, extra = jnp.arange(3.0), {"shift": 0.0}
    assert {float(program_for(work)(values, extra, power=2)) for work in (1, 1e6, 1e8)} == {5.0}
    assert len(programs(cache_dir)) == 3  # one stored program per level
    assert program_for.cache_size() == 3


def test_preload_holds_the_program_that_the_call_then_finds(cache_dir):
    """preload loads or compiles without running (placeholder values will do); the call
    of the same shapes then finds the program in memory and computes with its own
    values."""
    program = compilation.jit(powered_sum, static_argnames=("power",))
    extra = {"shift": 0.0}
    before = compilation.statistics()
    compiled = program.preload(jnp.zeros(3), extra, power=2)
    after_preload = compilation.statistics()
    assert after_preload["compiled"] - before["compiled"] == 1
    assert compiled.out_info.shape == ()
    assert float(program(jnp.arange(3.0), extra, power=2)) == 5.0
    after_call = compilation.statistics()
    assert after_call["compiled"] == after_preload["compiled"]
    assert after_call["memory"] - after_preload["memory"] == 1
    assert program.cache_size() == 1


def counted_sum(values):
    jax.debug.callback(lambda total: None, jnp.sum(values))
    return jnp.sum(values)


def test_programs_that_call_back_into_python_stay_in_memory(cache_dir):
    """A progress bar or a debug print calls this process: no other process could run
    the program, so it is not stored."""
    program = compilation.jit(counted_sum)
    before = compilation.statistics()["uncacheable"]
    assert float(program(jnp.arange(4.0))) == 6.0
    assert float(program(jnp.arange(4.0))) == 6.0
    assert compilation.statistics()["uncacheable"] == before + 1
    assert programs(cache_dir) == []


def with_defaults(values, scale=2.0, *, power=1):
    return jnp.sum(values**power) * scale


def test_arguments_bind_as_in_python(cache_dir):
    program = compilation.jit(with_defaults, static_argnames=("power",))
    values = jnp.arange(3.0)
    assert float(program(values)) == float(program(values, 2.0)) == 6.0
    assert float(program(values, scale=1.0, power=2)) == 5.0
    assert float(program(values=values, power=2)) == 10.0
    with pytest.raises(TypeError, match="unexpected keyword argument 'shift'"):
        program(values, shift=1.0)
    with pytest.raises(TypeError, match="missing a required argument"):
        program()
    with pytest.raises(TypeError, match="too many positional"):
        program(values, 1.0, 2)


def test_another_gaussmix_source_is_another_program(cache_dir, monkeypatch):
    """Keyed by signature, a program is found without tracing: gaussmix's source is in
    the key, so an edited or upgraded gaussmix never loads a stale program."""
    matrix = np.array([[2.0, 0.3], [0.3, 1.0]])
    compilation.jit(inverse_positive_definite)(matrix)
    compilation.jit(inverse_positive_definite)(matrix)
    assert len(programs(cache_dir)) == 1
    monkeypatch.setattr(program_keys, "source_hash", lambda: "an edited gaussmix")
    before = compilation.statistics()["compiled"]
    compilation.jit(inverse_positive_definite)(matrix)
    assert compilation.statistics()["compiled"] == before + 1
    assert len(programs(cache_dir)) == 2


def test_another_processor_is_another_program(cache_dir, monkeypatch):
    """XLA compiles for the processor it runs on: a cache folder shared by two kinds of
    machine (a home folder on a cluster) holds a program for each, never one machine's
    code loaded on the other."""
    matrix = np.array([[2.0, 0.3], [0.3, 1.0]])
    compilation.jit(inverse_positive_definite)(matrix)
    assert len(programs(cache_dir)) == 1
    other = "x86_64 Another CPU fpu sse sse2"
    assert program_keys.host_processor() != other
    monkeypatch.setattr(program_keys, "host_processor", lambda: other)
    before = compilation.statistics()["compiled"]
    compilation.jit(inverse_positive_definite)(matrix)
    assert compilation.statistics()["compiled"] == before + 1
    assert len(programs(cache_dir)) == 2


def test_the_processor_is_read_from_the_system():
    """Linux's /proc/cpuinfo names the model and its instruction sets; elsewhere (or
    without that file) Python's platform module answers."""
    text = program_keys.host_processor()
    assert text.startswith(platform.machine())
    if Path("/proc/cpuinfo").exists():
        cpuinfo = Path("/proc/cpuinfo").read_text()
        flags = next(
            line for line in cpuinfo.splitlines() if line.startswith(("flags", "Features"))
        )
        assert flags.split(":", 1)[1].strip() in text


END_TO_END = textwrap.dedent(
    """
    import json
    import jax
    from jax._src import monitoring
    compiles = []
    monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: compiles.append(event)
        if event.endswith("backend_compile_duration") else None)
    import numpy as np
    import gaussmix
    from gaussmix.inference import compilation

    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 10.0, 80)
    y = 3.0 * np.exp(-0.5 * ((x - 4.0) / 0.6) ** 2) + 0.2 + 0.02 * rng.normal(size=x.size)
    peaks = gaussmix.fit_peaks(x, y, ("gaussian",), baseline="constant")
    X = np.concatenate([rng.normal(-3.0, 1.0, (40, 2)), rng.normal(3.0, 1.0, (40, 2))])
    mixture = gaussmix.GaussianMixture(2, random_state=0).fit(X)
    tree = mixture.sample_posterior(X, num_warmup=30, num_samples=30, num_chains=1,
                                    progress_bar=False)
    print(json.dumps({
        "compiles": len(compiles), "stats": compilation.statistics(),
        "peaks": {k: float(np.asarray(v)) for k, v in peaks.params.items()},
        "means": mixture.means_.tolist(),
        "draws": np.asarray(tree.posterior["means"]).ravel().tolist()}))
    """
)


@pytest.mark.parametrize("native", ["0", "1"])
def test_a_second_process_runs_fit_peaks_fit_and_sample_posterior_without_compiling(
    tmp_path, native
):
    """Issue 17's test: the same calls in a second fresh process compile nothing (JAX's
    compile events counted) and give the same numbers, to the last bit; with the compiled
    E-step kernel too (its handler must be registered before the loaded EM program runs).
    """
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    session = Path(os.environ.get("GAUSSMIX_CACHE_DIR", tmp_path / "none"))
    for library in session.glob("em_full_kernel-*.so"):  # built once per session
        shutil.copy2(library, cache / library.name)
    first = run_script(cache, END_TO_END, GAUSSMIX_NATIVE=native)
    second = run_script(cache, END_TO_END, GAUSSMIX_NATIVE=native)
    assert first["compiles"] > 0 and first["stats"]["stored"] >= 5
    assert second["compiles"] == 0, second["stats"]
    assert second["stats"]["compiled"] == 0
    for name in ("peaks", "means", "draws"):
        assert second[name] == first[name]


KERNEL_CHOICE = textwrap.dedent(
    """
    import json
    import numpy as np
    import gaussmix
    from gaussmix.inference import compilation
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(-3.0, 1.0, (60, 2)), rng.normal(3.0, 1.0, (60, 2))])
    model = gaussmix.GaussianMixture(2, random_state=0)
    for chunk in np.split(X, 3):
        model.partial_fit(chunk)
    print(json.dumps({"stats": compilation.statistics(), "means": model.means_.tolist()}))
    """
)


def test_a_program_that_calls_the_kernel_is_not_loaded_where_the_kernel_is_off(tmp_path):
    """Whether a program calls the compiled E-step kernel is in its key: a process with
    the kernel off compiles its own program instead of loading one whose custom call it
    never registered (which would crash), and gets the same fit to rounding."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    session = Path(os.environ.get("GAUSSMIX_CACHE_DIR", tmp_path / "none"))
    for library in session.glob("em_full_kernel-*.so"):
        shutil.copy2(library, cache / library.name)
    with_kernel = run_script(cache, KERNEL_CHOICE, GAUSSMIX_NATIVE="1")
    without = run_script(cache, KERNEL_CHOICE, GAUSSMIX_NATIVE="0")
    again = run_script(cache, KERNEL_CHOICE, GAUSSMIX_NATIVE="1")
    assert without["stats"]["compiled"] >= 1
    assert again["stats"]["compiled"] == 0
    np.testing.assert_allclose(without["means"], with_kernel["means"], rtol=1e-4)
    assert again["means"] == with_kernel["means"]


@pytest.mark.parametrize("collecting", [True, False])
def test_programs_compile_with_the_garbage_collector_paused(cache_dir, collecting):
    """Tracing makes millions of short-lived objects and their collections walk the whole
    process: they are paused while a program is traced, lowered and compiled, and left as
    the user had them after (on, or off if the user had switched them off)."""
    seen = []

    def scaled(values):
        seen.append(gc.isenabled())  # while traced
        return values * 2.0

    was = gc.isenabled()
    try:
        gc.enable() if collecting else gc.disable()
        compilation.jit(scaled)(jnp.arange(3.0))
        assert seen == [False]
        assert gc.isenabled() == collecting
        with pytest.raises(RuntimeError), compilation.collection_paused():
            raise RuntimeError("a program that fails to compile")
        assert gc.isenabled() == collecting  # an error does not leave it paused
    finally:
        gc.enable() if was else gc.disable()


def test_a_tree_whose_fields_another_process_orders_otherwise_has_another_key(monkeypatch):
    """NumPyro orders a distribution's fields by a Python set (the process's string hash
    seed): ``str(treedef)`` reads the same whether ``low`` or ``high`` comes first. The
    key's text names the order (here another process is played by a patched order)."""
    import numpyro.distributions as dist

    prior = {"scale": dist.Uniform(0.5, 9.0)}
    order = dist.Uniform.gather_pytree_data_fields()
    treedef = jax.tree.structure(prior)
    here = program_keys.tree_structure(treedef)
    leaves = jax.tree.leaves(prior)
    swapped = tuple({"low": "high", "high": "low"}.get(name, name) for name in order)
    monkeypatch.setattr(dist.Uniform, "gather_pytree_data_fields", classmethod(lambda cls: swapped))
    other = jax.tree.structure(prior)
    assert str(other) == str(treedef)  # low and high are both a leaf, *
    assert jax.tree.leaves(prior) != leaves  # the same leaves, low and high swapped
    assert program_keys.tree_structure(other) != here
    assert here.startswith(str(treedef))
