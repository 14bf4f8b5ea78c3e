"""The ``gaussmix`` command: fit mixtures and peaks from a file, or run the demo.

Usage::

    gaussmix fit-mixture DATA --components K | A:B [--covariance full] [--backend em|mcmc]
                         [--criterion bic|aic|loo] [--columns COL ...] --out DIR
    gaussmix fit-peaks DATA --x COL --y COL [COL ...] [--peaks gaussian,gaussian]
                       [--baseline linear] [--backend map|mcmc] --out DIR
    gaussmix demo [--out demo]

DATA is a CSV file with a header row naming the columns (comma, semicolon, tab or
whitespace separated; empty cells, ``nan`` and ``NA`` read as missing) or a NumPy ``.npy``
array (columns are then named ``0``, ``1``, ...). A column is chosen by its name or by
its index. ``--components A:B`` fits every K from A to B inclusive and keeps the best by
``--criterion``. Several ``--y`` columns share one x and are fitted as one batch.

Each command writes into DIR: ``results.json`` (parameters, criteria, diagnostics,
package versions; strict JSON, missing numbers as ``null``), ``model.npz`` (the fitted
model, :func:`gaussmix.load` reads it), the posterior as NetCDF when MCMC ran, PNG
figures, ``report.html`` (one self-contained page), and ``gaussmix-manifest.json``: the
command and each file the run wrote with its size and SHA-256. DIR may hold anything
else; gaussmix never deletes or overwrites a file it did not write. A rerun into DIR
replaces exactly the files the previous manifest lists (and removes the listed ones it no
longer writes); it refuses, before any work, with exit code 2 when a file it would write
is there but not listed (move it, or choose another ``--out``) or a listed file was
changed since (its hash differs). A damaged or foreign manifest, or one that names a
file outside DIR, lists nothing and is itself a file in the way. The files
are written into a temporary folder inside DIR and moved into place at the end, the
manifest last, with SIGINT and SIGTERM held off for that moment: a failed or interrupted
run leaves DIR as it was (exit code 130 after SIGINT, 143 after SIGTERM).

Bad input (a missing or unreadable file, a FIFO or device as DATA, non-numeric columns,
NaN rows, more components than rows, an unknown option, a size that would exhaust
memory) and operating-system errors (permission denied, a read-only file system, a full
disk) end with exit code 2 and one line on stderr. ``--quiet`` silences progress bars
and messages; progress bars are shown only on a terminal and never when the ``CI``
environment variable is set. Set ``GAUSSMIX_DEBUG=1`` to see the
traceback of an error.

The command computes in float64 (it enables ``jax_enable_x64``) and draws with
matplotlib's Agg backend.

The package, one concern per module: ``entry`` (:func:`main`: parse, run one command,
map errors to exit codes), ``arguments`` (the parser), ``limits`` (option bounds, memory
checks), ``tables`` (reading DATA through ``pandas.read_csv``), ``output`` (the manifest,
the temporary folder, interrupts), ``run`` (what one run writes), ``sections`` (report
sections), one module per command (``fit_mixture``, ``fit_peaks``, ``demo``) and
``errors``. A new command is a module with a ``*_command(args) -> int``, a subparser in
``arguments`` and one line in ``entry.COMMANDS``.
"""

from gaussmix.cli.arguments import build_parser
from gaussmix.cli.demo import adjusted_rand_index
from gaussmix.cli.entry import main
from gaussmix.cli.errors import EXIT_USAGE, UsageError
from gaussmix.cli.output import (
    EXIT_INTERRUPTED,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    atomic_output,
    read_manifest,
)
from gaussmix.cli.run import write_posterior
from gaussmix.cli.sections import ESS_PER_CHAIN
from gaussmix.cli.tables import Table, drop_missing, read_table

__all__ = [
    "ESS_PER_CHAIN",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "Table",
    "UsageError",
    "adjusted_rand_index",
    "atomic_output",
    "build_parser",
    "drop_missing",
    "main",
    "read_manifest",
    "read_table",
    "write_posterior",
]
