"""Loading, layer 2: the header (JSON) and the state tree its markers describe."""

import json
import math
import numbers
import zipfile
from typing import Any

import numpy as np

from gaussmix.io.archive import read_member
from gaussmix.io.schema import CLASSES, FORMAT_VERSION, MAX_DEPTH, InvalidFile, describe

__all__ = ["Decoder", "check_header", "parse_header"]

_HEADER_KEYS = {"format", "format_version", "class", "gaussmix_version", "state"}
_ARRAY_KEYS = {"__array__", "jax", "scalar"}
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicated = sorted({key for key in keys if keys.count(key) > 1})
        raise InvalidFile(f"the header repeats the key(s) {duplicated}")
    return dict(pairs)


def _no_constant(name: str) -> None:
    raise InvalidFile(f"the header holds {name}, which gaussmix.save never writes")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidFile(f"the header holds the number {text[:40]}, which is not finite")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value (iterative: a deep value cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_header(array: np.ndarray) -> dict:
    """The header member's JSON object, refused when it is not strict, shallow JSON."""
    if array.dtype.kind != "U" or array.shape != ():
        raise InvalidFile(f"its header is a {array.dtype} array of shape {array.shape}, not text")
    try:
        header = json.loads(
            str(array[()]),
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise InvalidFile(f"its header nests deeper than {MAX_DEPTH} levels") from None
    except InvalidFile:
        raise
    except ValueError as error:
        raise InvalidFile(f"its header is not valid JSON ({error})") from None
    if _depth(header) > MAX_DEPTH:
        raise InvalidFile(f"its header nests deeper than {MAX_DEPTH} levels")
    if not isinstance(header, dict):
        raise InvalidFile(f"its header is a JSON {type(header).__name__}, not an object")
    return header


def check_header(header: dict) -> str:
    """The class name, once the header's own fields are known to be valid."""
    if header.get("format") != "gaussmix":
        raise InvalidFile(
            "it is not a gaussmix model file (its header does not say format 'gaussmix')",
            "gaussmix.load reads the .npz files that gaussmix.save writes.",
        )
    unknown = sorted(set(header) - _HEADER_KEYS)
    missing = sorted(_HEADER_KEYS - set(header) - {"gaussmix_version"})
    if unknown or missing:
        raise InvalidFile(f"its header has unknown keys {unknown} or lacks {missing}")
    version = header["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidFile(f"its format_version {version!r} is not a version number")
    if version > FORMAT_VERSION:
        raise InvalidFile(
            f"it has format version {version}; this gaussmix reads versions up to {FORMAT_VERSION}",
            "Upgrade gaussmix.",
        )
    if not isinstance(header.get("gaussmix_version", ""), str):
        raise InvalidFile("its gaussmix_version is not a string")
    name = header["class"]
    if not isinstance(name, str) or name not in CLASSES:
        raise InvalidFile(
            f"it holds an unknown class {str(name)[:80]!r}; gaussmix.load builds "
            f"{', '.join(sorted(CLASSES))}"
        )
    if not isinstance(header["state"], dict):
        raise InvalidFile("its header's state is not a JSON object")
    return name


class Decoder:
    """Decodes a state tree whose markers are checked, reading each array it names."""

    def __init__(self, archive: zipfile.ZipFile, file_size: int) -> None:
        self.archive = archive
        self.file_size = file_size

    def references(self, value: Any, where: str, found: dict[str, str]) -> dict[str, str]:
        """Member name -> where the tree refers to it; checks the markers' forms."""
        stack = [(value, where)]
        while stack:
            item, at = stack.pop()
            if isinstance(item, list):
                stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))
            elif isinstance(item, dict):
                marker = [key for key in item if key.startswith("__")]
                if not marker:
                    stack.extend((v, f"{at}.{key}") for key, v in item.items())
                elif marker == ["__array__"]:
                    self.check_array_marker(item, at)
                    member = f"{item['__array__']}.npy"
                    if member in found:
                        raise InvalidFile(f"{at} and {found[member]} name the same array")
                    found[member] = at
                elif marker == ["__tuple__"] and set(item) == {"__tuple__"}:
                    if not isinstance(item["__tuple__"], list):
                        raise InvalidFile(f"{at}: __tuple__ must hold a list")
                    stack.append((item["__tuple__"], at))
                elif marker == ["__float__"] and set(item) == {"__float__"}:
                    if item["__float__"] not in _NON_FINITE:
                        raise InvalidFile(f"{at}: __float__ must be 'nan', 'inf' or '-inf'")
                elif marker == ["__distribution__"] and set(item) == {
                    "__distribution__",
                    "arguments",
                }:
                    if not isinstance(item["arguments"], dict):
                        raise InvalidFile(f"{at}: a distribution's arguments must be an object")
                    stack.extend((v, f"{at}.{key}") for key, v in item["arguments"].items())
                else:
                    raise InvalidFile(f"{at} is an object with unknown markers {marker}")
        return found

    @staticmethod
    def check_array_marker(item: dict, at: str) -> None:
        key = item["__array__"]
        flags_ok = all(isinstance(item.get(flag, False), bool) for flag in ("jax", "scalar"))
        if set(item) - _ARRAY_KEYS or not flags_ok:
            raise InvalidFile(f"{at}: an __array__ marker holds only jax and scalar flags")
        if not isinstance(key, str) or key == "header" or not key.isidentifier():
            raise InvalidFile(f"{at} names the array {str(key)[:40]!r}, not an array member")

    def decode(self, value: Any, where: str) -> Any:
        if isinstance(value, list):
            return [self.decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, dict):
            return value
        if "__array__" in value:
            return self.array(value, where)
        if "__tuple__" in value:
            return tuple(self.decode(v, f"{where}[{i}]") for i, v in enumerate(value["__tuple__"]))
        if "__float__" in value:
            return _NON_FINITE[value["__float__"]]
        if "__distribution__" in value:
            return self.distribution(value, where)
        return {key: self.decode(v, f"{where}.{key}") for key, v in value.items()}

    def array(self, value: dict, where: str) -> Any:
        array = read_member(self.archive, f"{value['__array__']}.npy", self.file_size)
        if value.get("scalar"):
            if array.shape != ():
                raise InvalidFile(f"{where} is marked scalar but has shape {array.shape}")
            return array[()]
        if value.get("jax"):
            import jax.numpy as jnp

            if array.dtype.kind not in "biuf":
                raise InvalidFile(f"{where} is marked as a JAX array but holds {array.dtype}")
            return jnp.asarray(array)
        return array

    def distribution(self, value: dict, where: str) -> Any:
        import jax
        import numpyro.distributions as dist
        from numpyro.distributions import constraints

        name = value["__distribution__"]
        cls = getattr(dist, name, None) if name in dist.__all__ else None
        if not (isinstance(cls, type) and issubclass(cls, dist.Distribution)):
            raise InvalidFile(f"{where} names {str(name)[:40]!r}, not a numpyro distribution")
        arg_constraints = cls.arg_constraints if isinstance(cls.arg_constraints, dict) else {}
        if not arg_constraints:
            raise InvalidFile(f"{where}: {name} has no parameters to rebuild it from")
        arguments = self.decode(value["arguments"], f"{where}.arguments")
        unknown = sorted(set(arguments) - set(arg_constraints))
        if unknown:
            raise InvalidFile(f"{where}: {name} takes no argument(s) {unknown}")
        for argument, given in arguments.items():
            if isinstance(given, bool) or not isinstance(
                given, numbers.Real | np.ndarray | np.generic | jax.Array
            ):
                raise InvalidFile(f"{where}.{argument} is {describe(given)}, not a number or array")
        try:
            distribution = cls(**arguments)
            for argument, constraint in arg_constraints.items():
                if argument in arguments and not constraints.is_dependent(constraint):
                    if not np.all(np.asarray(constraint(getattr(distribution, argument)))):
                        raise ValueError(f"{argument} lies outside {constraint}")
        except (TypeError, ValueError, AttributeError, IndexError) as error:
            raise InvalidFile(
                f"{where}: {name}({', '.join(arguments)}) is not valid: {error}"
            ) from None
        return distribution
