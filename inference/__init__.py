"""Back ends that fit gaussmix models: EM/MAP, NUTS, relabeling, diagnostics."""

import importlib

# Public name -> module that defines it, imported on first use (keeps `import gaussmix` light).
_LAZY = {
    "sample": "gaussmix.inference.mcmc",
    "sample_mixture": "gaussmix.inference.mcmc",
    "diagnose": "gaussmix.inference.diagnostics",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gaussmix.inference' has no attribute {name!r}")
