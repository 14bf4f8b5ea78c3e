"""Small intersphinx inventories, written at build time: no network.

intersphinx normally downloads each project's ``objects.inv``; this build must not touch
the network, so the few external names gaussmix's docstrings refer to are listed here
with their pages, and :func:`write_inventories` writes one version-2 inventory per
project (the format sphinx.util.inventory reads) after checking that every name exists
in the installed package (a renamed or removed name stops the build). The pages follow
each project's documented URL layout; they are not fetched, so a moved page is a broken
link, not a build error.
"""

import importlib
import importlib.util
import zlib
from pathlib import Path

#: project -> (base URL, {name: (role, page relative to the base URL)}). A page without
#: an anchor gets the name's (``#name``). Names under a private module (``jax._src.mesh``,
#: ``jaxlib._jax``, ``numpy._typing``) are what autodoc writes for the type hints of
#: gaussmix's signatures (an object's ``__module__``); they point at the public name's page.
INVENTORIES = {
    "python": (
        "https://docs.python.org/3/",
        {
            "collections.abc.Mapping": ("class", "library/collections.abc.html"),
            "collections.abc.Sequence": ("class", "library/collections.abc.html"),
            "collections.abc.Iterable": ("class", "library/collections.abc.html"),
            "collections.abc.Callable": ("class", "library/collections.abc.html"),
            "collections.abc.Iterator": ("class", "library/collections.abc.html"),
            "os.PathLike": ("class", "library/os.html"),
            "pathlib.Path": ("class", "library/pathlib.html"),
        },
    ),
    "numpy": (
        "https://numpy.org/doc/stable/",
        {
            "numpy.ndarray": ("class", "reference/generated/numpy.ndarray.html"),
            "numpy.memmap": ("class", "reference/generated/numpy.memmap.html"),
            "numpy.dtype": ("class", "reference/generated/numpy.dtype.html"),
            "numpy.number": ("class", "reference/arrays.scalars.html"),
            "numpy.bool": ("class", "reference/arrays.scalars.html"),
            "numpy.random.RandomState": ("class", "reference/random/legacy.html"),
            "numpy.random.Generator": ("class", "reference/random/generator.html"),
            "numpy.typing.ArrayLike": ("class", "reference/typing.html"),
            "numpy._typing._array_like.ArrayLike": (
                "class",
                "reference/typing.html#numpy.typing.ArrayLike",
            ),
        },
    ),
    "jax": (
        "https://docs.jax.dev/en/latest/",
        {
            "jax.Array": ("class", "_autosummary/jax.Array.html"),
            "jax.jit": ("function", "_autosummary/jax.jit.html"),
            "jax.sharding.Mesh": ("class", "jax.sharding.html"),
            "jax._src.mesh.Mesh": ("class", "jax.sharding.html#jax.sharding.Mesh"),
            "jax.Device": ("class", "_autosummary/jax.Device.html"),
            "jaxlib._jax.Device": ("class", "_autosummary/jax.Device.html#jax.Device"),
            "jax.stages.Lowered": ("class", "jax.stages.html"),
            "jax.stages.Compiled": ("class", "jax.stages.html"),
            "jax._src.stages.Lowered": ("class", "jax.stages.html#jax.stages.Lowered"),
            "jax._src.stages.Compiled": ("class", "jax.stages.html#jax.stages.Compiled"),
            "jax.experimental.serialize_executable": ("module", "jax.experimental.html"),
        },
    ),
    "numpyro": (
        "https://num.pyro.ai/en/stable/",
        {
            "numpyro.distributions.distribution.Distribution": ("class", "distributions.html"),
            "numpyro.infer.mcmc.MCMC": ("class", "mcmc.html"),
            "numpyro.infer.hmc.NUTS": ("class", "mcmc.html"),
            "numpyro.infer.MCMC": ("class", "mcmc.html#numpyro.infer.mcmc.MCMC"),
            "numpyro.infer.NUTS": ("class", "mcmc.html#numpyro.infer.hmc.NUTS"),
            "numpyro.distributions": ("module", "distributions.html"),
            "numpyro.sample": ("function", "primitives.html"),
            "numpyro.plate": ("class", "primitives.html"),
        },
    ),
    "sklearn": (
        "https://scikit-learn.org/stable/",
        {
            name: (role, f"modules/generated/{name}.html")
            for name, role in (
                ("sklearn.mixture.GaussianMixture", "class"),
                ("sklearn.mixture.BayesianGaussianMixture", "class"),
                ("sklearn.cluster.KMeans", "class"),
                ("sklearn.cluster.AgglomerativeClustering", "class"),
                ("sklearn.base.BaseEstimator", "class"),
                ("sklearn.base.clone", "function"),
                ("sklearn.pipeline.Pipeline", "class"),
                ("sklearn.model_selection.GridSearchCV", "class"),
                ("sklearn.preprocessing.StandardScaler", "class"),
                ("sklearn.neighbors.KernelDensity", "class"),
            )
        },
    ),
    "xarray": (
        "https://docs.xarray.dev/en/stable/",
        {
            "xarray.DataTree": ("class", "generated/xarray.DataTree.html"),
            "xarray.Dataset": ("class", "generated/xarray.Dataset.html"),
            "xarray.DataArray": ("class", "generated/xarray.DataArray.html"),
        },
    ),
    "arviz": (
        "https://python.arviz.org/en/stable/",
        {
            f"arviz.{name}": ("function", f"api/generated/arviz.{name}.html")
            for name in (
                "from_numpyro",
                "from_dict",
                "convert_to_datatree",
                "summary",
                "rhat",
                "ess",
                "loo",
                "compare",
                "plot_trace",
            )
        },
    ),
    "scipy": (
        "https://docs.scipy.org/doc/scipy/",
        {
            name: (role, f"reference/generated/{name}.html")
            for name, role in (
                ("scipy.optimize.curve_fit", "function"),
                ("scipy.optimize.least_squares", "function"),
                ("scipy.optimize.minimize", "function"),
                ("scipy.stats.multivariate_normal", "data"),
                ("scipy.special.logsumexp", "function"),
            )
        },
    ),
    "lmfit": (
        "https://lmfit.github.io/lmfit-py/",
        {
            "lmfit.Model": ("class", "model.html#lmfit.model.Model"),
            "lmfit.model.Model": ("class", "model.html"),
            "lmfit.model.ModelResult": ("class", "model.html"),
            "lmfit.Parameters": ("class", "parameters.html#lmfit.parameter.Parameters"),
            "lmfit.models.GaussianModel": ("class", "builtin_models.html"),
        },
    ),
}


def _exists(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attribute in parts[cut:]:
                value = getattr(value, attribute)
        except AttributeError:
            return False
        return True
    return False


def inventory_bytes(project: str, entries: dict[str, tuple[str, str]]) -> bytes:
    """A version-2 objects.inv holding ENTRIES (name -> (role, page))."""
    lines = [
        f"{name} py:{role} 1 {page if '#' in page else page + '#$'} -"
        for name, (role, page) in sorted(entries.items())
    ]
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        "# Version: installed\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    return header.encode() + zlib.compress(("\n".join(lines) + "\n").encode())


def uninstalled_packages() -> list[str]:
    """The top-level packages of INVENTORIES that are not installed (no inventory)."""
    tops = {next(iter(entries)).split(".")[0] for _, entries in INVENTORIES.values()}
    return sorted(top for top in tops if importlib.util.find_spec(top) is None)


def write_inventories(folder: Path) -> dict[str, tuple[str, str]]:
    """Write FOLDER/<project>.inv for every project whose package is installed; returns
    the ``intersphinx_mapping`` for them. A listed name missing from an installed
    package raises ValueError."""
    folder.mkdir(parents=True, exist_ok=True)
    mapping = {}
    for project, (url, entries) in INVENTORIES.items():
        top = next(iter(entries)).split(".")[0]
        try:
            importlib.import_module(top)
        except ImportError:
            continue  # not installed: its names stay plain text
        missing = [name for name in entries if not _exists(name)]
        if missing:
            raise ValueError(f"docs/_ext/gaussmix_inventories.py: {missing} not in {project}")
        path = folder / f"{project}.inv"
        content = inventory_bytes(project, entries)
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
        mapping[project] = (url, str(path))
    return mapping
