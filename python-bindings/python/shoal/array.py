"""``shoal.array``: array constructors on the default session, as ``dask.array`` spells
them (``shoal.array.from_numpy(x, chunks=1000)``). ``session.array`` has the same ones
bound to a given session."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._array import Array
from ._session import default_session

__all__ = [
    "Array",
    "arange",
    "from_array",
    "from_numpy",
    "from_zarr",
    "full",
    "ones",
    "random",
    "tensordot",
    "zeros",
]


def from_numpy(values: Any, chunks: int | Sequence[int] | None = None) -> Array:
    """``values`` as a chunked array (see ``Session.array.from_numpy``)."""
    return default_session().array.from_numpy(values, chunks)


from_array = from_numpy


def from_zarr(
    store: str, component: str | None = None, chunks: int | Sequence[int] | None = None
) -> Array:
    """A Zarr array, read chunk by chunk (see ``Session.array.from_zarr``)."""
    return default_session().array.from_zarr(store, component, chunks)


def full(
    shape: int | Sequence[int],
    value: float,
    chunks: int | Sequence[int] | None = None,
    dtype: Any = "float64",
) -> Array:
    """An array of ``shape`` filled with ``value``."""
    return default_session().array.full(shape, value, chunks, dtype)


def ones(
    shape: int | Sequence[int], chunks: int | Sequence[int] | None = None, dtype: Any = "float64"
) -> Array:
    """An array of ones."""
    return default_session().array.ones(shape, chunks, dtype)


def zeros(
    shape: int | Sequence[int], chunks: int | Sequence[int] | None = None, dtype: Any = "float64"
) -> Array:
    """An array of zeros."""
    return default_session().array.zeros(shape, chunks, dtype)


def random(
    shape: int | Sequence[int], chunks: int | Sequence[int] | None = None, seed: int = 0
) -> Array:
    """Uniform values in [0, 1) from ``seed``."""
    return default_session().array.random(shape, chunks, seed)


def arange(n: int, chunks: int | None = None) -> Array:
    """``0, 1, ..., n - 1`` as int64."""
    return default_session().array.arange(n, chunks)


def tensordot(a: Array, b: Array, axes: int | tuple[Sequence[int], Sequence[int]] = 2) -> Array:
    """``np.tensordot`` of two chunked arrays."""
    return a._session.array.tensordot(a, b, axes)
