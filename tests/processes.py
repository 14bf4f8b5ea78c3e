"""Fresh Python processes for the tests that need several CPU devices or several
processes joined by ``jax.distributed``: both exist only if set up before JAX starts.

In a test (``from tests.processes import run_workers, process_group``)::

    run_workers(WORKER, [spec], devices=4)  # one interpreter with 4 CPU devices
    run_workers(WORKER, process_group([spec0, spec1]))  # two joined processes

Each spec is one interpreter running ``python tests/processes.py WORKER SPEC``; this file
is then the program: it starts JAX on the CPU in float64, joins the process group the
spec names (``port``, ``process_id``, ``num_processes``: see :func:`process_group`),
runs the worker script as ``__main__`` with the spec as its JSON argument, and leaves the
group. A spec with ``"jobs": [[worker, spec], ...]`` runs those workers instead, one after
the other in the same interpreter (and group), so several checks share one JAX start-up
and one join. Workers write what they compute to files their spec names; the test reads them.
"""

import json
import os
import runpy
import socket
import subprocess
import sys
from pathlib import Path

#: A hang (a process that never joins) must fail the test rather than block CI; far
#: above the seconds the workers need.
SUBPROCESS_TIMEOUT = 600


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for the group's coordinator)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_group(specs: list[dict]) -> list[dict]:
    """The specs of one ``jax.distributed`` group on 127.0.0.1, one process a spec: each
    with the group's coordinator port, its process id and the number of processes (the
    workers read their share from ``jax.process_index()`` and ``jax.process_count()``)."""
    port = free_port()
    return [
        {**spec, "port": port, "process_id": process_id, "num_processes": len(specs)}
        for process_id, spec in enumerate(specs)
    ]


def run_workers(worker: Path | None, specs: list[dict], *, devices: int | None = None) -> None:
    """Run one fresh interpreter a spec, all at once, on ``devices`` forced CPU devices
    each (one without); fail with their stderr if any fails or outlives
    :data:`SUBPROCESS_TIMEOUT`. ``worker`` is the script each runs, or ``None`` where every
    spec lists its own jobs."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, str(worker), json.dumps(spec)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for spec in specs
    ]
    errors = []
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
            if process.returncode != 0:
                errors.append(stderr[-4000:])
    except subprocess.TimeoutExpired:
        errors.append(f"a worker did not finish in {SUBPROCESS_TIMEOUT} s")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert not errors, "\n".join(errors)


def _run_worker(worker: str, spec: dict) -> None:
    """Run the worker script as ``__main__`` with ``spec`` as its argument."""
    sys.argv = [worker, json.dumps(spec)]
    runpy.run_path(worker, run_name="__main__")


def _main() -> None:
    worker, argument = sys.argv[1:]
    spec = json.loads(argument)
    os.environ["JAX_PLATFORMS"] = "cpu"
    # Workers import as the tests do (``from tests.processes import ...``); last on the
    # path, so gaussmix is still the installed one.
    sys.path.append(str(Path(__file__).resolve().parents[1]))

    import jax

    jax.config.update("jax_enable_x64", True)
    grouped = "process_id" in spec
    if grouped:
        jax.distributed.initialize(
            f"127.0.0.1:{spec['port']}",
            num_processes=spec["num_processes"],
            process_id=spec["process_id"],
            initialization_timeout=120,
        )
    jobs = spec["jobs"] if "jobs" in spec else [[worker, spec]]
    for job_worker, job_spec in jobs:
        _run_worker(job_worker, job_spec)
    if grouped:
        jax.distributed.shutdown()


if __name__ == "__main__":
    _main()
