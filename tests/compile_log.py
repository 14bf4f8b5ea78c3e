"""The first lines of a script that records what its fresh process compiles.

The programs tests prepend this file's text to the scripts they run in a subprocess:
``compiled`` then lists the name of every program JAX compiles, in order (from JAX's own
compile log, ``jax_log_compiles``).
"""

import logging
import re

import jax

compiled = []


class RecordCompiles(logging.Handler):
    def emit(self, record):
        found = re.search(r"Compiling (\S+)", record.getMessage())
        if found:
            compiled.append(found.group(1))


logging.getLogger("jax").addHandler(RecordCompiles())
logging.getLogger("jax").setLevel(logging.WARNING)
jax.config.update("jax_log_compiles", True)
