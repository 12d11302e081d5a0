"""Chunked N-d arrays in the style of ``dask.array``: lazy, NumPy semantics, computed by
Shoal's workers one chunk task at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _native

if TYPE_CHECKING:
    from ._session import Session

Axis = int | Sequence[int] | None


def _axes(axis: Axis, ndim: int) -> list[int] | None:
    if axis is None:
        return None
    items = [axis] if isinstance(axis, int) else list(axis)
    out = []
    for a in items:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an array with {ndim} axes")
        out.append(a % ndim)
    return out


def _chunks(chunks: int | Sequence[int] | None, shape: Sequence[int]) -> list[int]:
    """Chunk lengths per axis: one length for every axis, or a length per axis (None:
    chunks of about 1M elements, as whole rows of the last axes where they fit)."""
    if chunks is None:
        budget = 1 << 20
        out = []
        for n in reversed(shape):
            take = max(1, min(n, budget))
            out.append(take)
            budget = max(1, budget // max(n, 1))
        return list(reversed(out))
    if isinstance(chunks, int):
        return [max(1, min(chunks, n) if n else 1) for n in shape]
    if len(chunks) != len(shape):
        raise ValueError(f"chunks {list(chunks)} do not match the shape {list(shape)}")
    return [max(1, c) for c in chunks]


def _positions(item: object, n: int, axis: int) -> list[int]:
    """A negative-step slice, a list of positions or a boolean mask as positions."""
    if isinstance(item, slice):
        return list(range(*item.indices(n)))
    values = np.asarray(item)
    if values.dtype == np.bool_:
        if values.shape != (n,):
            raise IndexError(f"a boolean mask of axis {axis} needs {n} values")
        return [int(p) for p in np.flatnonzero(values)]
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise IndexError(f"unsupported index {item!r}: use integers, slices, lists or masks")
    for p in values.tolist():
        if not -n <= p < n:
            raise IndexError(f"index {p} is out of bounds for axis {axis} with size {n}")
    return [p % n for p in values.tolist()]


class Array:
    """A lazy chunked array. Operators, ufunc-like methods and reductions build a task
    graph at once; ``compute()``/``to_numpy()`` (and ``np.asarray(a)``) run it."""

    __array_priority__ = 100

    def __init__(self, native: _native.Array, session: Session) -> None:
        self._native = native
        self._session = session

    def _wrap(self, native: _native.Array) -> Array:
        return Array(native, self._session)

    # --- what it is -------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        """Lengths per axis."""
        return tuple(self._native.shape)

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self._native.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def dtype(self) -> np.dtype[Any]:
        """The element type, as NumPy names it."""
        return np.dtype(self._native.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes the values take once computed."""
        return self.size * self.dtype.itemsize

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        """Chunk lengths per axis (as ``dask.array`` reports them)."""
        return tuple(tuple(c) for c in self._native.chunks)

    def __repr__(self) -> str:
        return f"shoal.Array<shape={self.shape}, dtype={self.dtype}, chunks={self.chunks}>"

    def _repr_html_(self) -> str:
        chunk = tuple(c[0] if c else 0 for c in self.chunks)
        tasks = int(np.prod([len(c) for c in self.chunks], dtype=np.int64))
        return (
            "<table><tr><th></th><th>array</th><th>chunk</th></tr>"
            f"<tr><td>shape</td><td>{self.shape}</td><td>{chunk}</td></tr>"
            f"<tr><td>dtype</td><td colspan=2>{self.dtype}</td></tr>"
            f"<tr><td>chunks</td><td colspan=2>{tasks}</td></tr></table>"
        )

    # --- compute ----------------------------------------------------------------------

    def to_numpy(self) -> np.ndarray[Any, Any]:
        """Runs the array's job; its values as a NumPy array (moved, not copied)."""
        values: np.ndarray[Any, Any] = self._native.to_numpy()
        if self._native.dtype.startswith("datetime64"):
            return values.view(self._native.dtype)
        return values

    compute = to_numpy

    def persist(self) -> Array:
        """Runs the job and keeps the values in the workers' memory (as Dask's
        ``persist``): later operations start from them instead of recomputing."""
        return self._wrap(self._native.persist())

    def to_zarr(self, store: str, component: str = "data", *, zarr_format: int = 3) -> None:
        """Writes the array as variable ``component`` of a new Zarr group (v2 or v3, zstd
        chunks as the array is chunked, dimensions ``dim_0``, ``dim_1``...), which
        zarr-python, xarray and :meth:`ArrayModule.from_zarr` read. Nothing appears at
        ``store`` until every chunk is written; an existing store is refused."""
        from ._labeled import DataArray

        DataArray(self, name=component).to_zarr(store, zarr_format=zarr_format)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray[Any, Any]:
        values = self.to_numpy()
        return values if dtype is None else values.astype(dtype)

    # --- elementwise ------------------------------------------------------------------

    def _binary(self, op: str, other: object, reflected: bool = False) -> Array:
        if isinstance(other, Array):
            other = other._native
        elif isinstance(other, np.generic):
            other = other.item()
        elif isinstance(other, np.ndarray):
            other = self._session.array.from_numpy(other)._native
        return self._wrap(self._native.binary(op, other, reflected))

    def __add__(self, other: object) -> Array:
        return self._binary("add", other)

    def __radd__(self, other: object) -> Array:
        return self._binary("add", other, True)

    def __sub__(self, other: object) -> Array:
        return self._binary("sub", other)

    def __rsub__(self, other: object) -> Array:
        return self._binary("sub", other, True)

    def __mul__(self, other: object) -> Array:
        return self._binary("mul", other)

    def __rmul__(self, other: object) -> Array:
        return self._binary("mul", other, True)

    def __truediv__(self, other: object) -> Array:
        return self._binary("div", other)

    def __rtruediv__(self, other: object) -> Array:
        return self._binary("div", other, True)

    def __floordiv__(self, other: object) -> Array:
        return self._binary("floor_div", other)

    def __mod__(self, other: object) -> Array:
        return self._binary("mod", other)

    def __pow__(self, other: object) -> Array:
        return self._binary("pow", other)

    def __rpow__(self, other: object) -> Array:
        return self._binary("pow", other, True)

    def __eq__(self, other: object) -> Array:  # type: ignore[override]
        return self._binary("eq", other)

    def __ne__(self, other: object) -> Array:  # type: ignore[override]
        return self._binary("ne", other)

    def __lt__(self, other: object) -> Array:
        return self._binary("lt", other)

    def __le__(self, other: object) -> Array:
        return self._binary("le", other)

    def __gt__(self, other: object) -> Array:
        return self._binary("gt", other)

    def __ge__(self, other: object) -> Array:
        return self._binary("ge", other)

    def __and__(self, other: object) -> Array:
        return self._binary("and", other)

    def __or__(self, other: object) -> Array:
        return self._binary("or", other)

    def __neg__(self) -> Array:
        return self._wrap(self._native.unary("negative"))

    def __abs__(self) -> Array:
        return self._wrap(self._native.unary("abs"))

    def __invert__(self) -> Array:
        return self._wrap(self._native.unary("logical_not"))

    __hash__ = None  # type: ignore[assignment]

    def __matmul__(self, other: Array) -> Array:
        return self._wrap(self._native.matmul(other._native))

    def apply(self, function: str) -> Array:
        """An elementwise function by NumPy's name: ``sqrt``, ``exp``, ``log``, ``sin``,
        ``cos``, ``abs``, ``floor``, ``ceil``, ``round``, ``isnan``, ``isfinite``."""
        return self._wrap(self._native.unary(function))

    def astype(self, dtype: Any) -> Array:
        """The values as ``dtype``."""
        return self._wrap(self._native.astype(np.dtype(dtype).name))

    # --- shape ------------------------------------------------------------------------

    @property
    def T(self) -> Array:
        """Axes reversed."""
        return self.transpose()

    def transpose(self, *axes: int) -> Array:
        """Axes in the order given (reversed when none)."""
        perm = list(axes) if axes else list(reversed(range(self.ndim)))
        return self._wrap(self._native.transpose(perm))

    def reshape(self, *shape: int | Sequence[int]) -> Array:
        """The same values in ``shape`` (C order)."""
        dims: list[int] = []
        for s in shape:
            dims.extend([s] if isinstance(s, int) else list(s))
        return self._wrap(self._native.reshape(dims))

    def rechunk(self, chunks: int | Sequence[int]) -> Array:
        """The same values in chunks of ``chunks`` per axis."""
        return self._wrap(self._native.rechunk(_chunks(chunks, self.shape)))

    def __getitem__(self, key: object) -> Array:
        """NumPy indexing: integers, slices (any step), ``...``, and at most one list of
        positions or boolean mask (taken along its axis, as NumPy does for one)."""
        items = list(key) if isinstance(key, tuple) else [key]
        advanced_at = [
            i for i, item in enumerate(items)
            if not isinstance(item, slice) and item is not Ellipsis
        ]
        if any(not isinstance(items[i], (int, np.integer)) for i in advanced_at) and (
            advanced_at and advanced_at[-1] - advanced_at[0] + 1 != len(advanced_at)
        ):
            # NumPy would move the selected axes to the front; select in two steps instead.
            raise IndexError("a list or mask index and integers apart from it: index in two steps")
        if any(item is Ellipsis for item in items):
            at = next(i for i, item in enumerate(items) if item is Ellipsis)
            fill = [slice(None)] * (self.ndim - len(items) + 1)
            items = items[:at] + fill + items[at + 1 :]
        if len(items) > self.ndim:
            raise IndexError(f"{len(items)} indices for an array with {self.ndim} axes")
        spec: list[tuple[int, int | None, int, bool]] = []
        takes: list[tuple[int, list[int]]] = []  # negative steps, lists and masks
        advanced = False
        kept = 0  # axes of the result so far
        for axis, item in enumerate(items):
            n = self.shape[axis]
            if isinstance(item, (int, np.integer)):
                i = int(item)
                if not -n <= i < n:
                    raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
                spec.append((i % n, None, 1, True))
                continue
            if isinstance(item, slice) and (item.step is None or item.step > 0):
                start, stop, step = item.indices(n)
                spec.append((start, max(start, stop), step, False))
            else:
                if not isinstance(item, slice):
                    if advanced:
                        raise IndexError("only one axis can be indexed by a list or a mask")
                    advanced = True
                takes.append((kept, _positions(item, n, axis)))
                spec.append((0, n, 1, False))
            kept += 1
        out = self._native.slice(spec)
        for at, positions in takes:
            out = out.take(positions, at)
        return self._wrap(out)

    # --- reductions -------------------------------------------------------------------

    def _reduce(self, op: str, axis: Axis, keepdims: bool, skipna: bool = False) -> Array:
        return self._wrap(
            self._native.reduce(op, _axes(axis, self.ndim), keepdims, skipna)
        )

    def sum(self, axis: Axis = None, keepdims: bool = False) -> Array:
        """Sum over ``axis`` (all axes when None)."""
        return self._reduce("sum", axis, keepdims)

    def prod(self, axis: Axis = None, keepdims: bool = False) -> Array:
        """Product over ``axis``."""
        return self._reduce("prod", axis, keepdims)

    def mean(self, axis: Axis = None, keepdims: bool = False) -> Array:
        """Mean over ``axis``."""
        return self._reduce("mean", axis, keepdims)

    def min(self, axis: Axis = None, keepdims: bool = False) -> Array:
        """Minimum over ``axis``."""
        return self._reduce("min", axis, keepdims)

    def max(self, axis: Axis = None, keepdims: bool = False) -> Array:
        """Maximum over ``axis``."""
        return self._reduce("max", axis, keepdims)

    def std(self, axis: Axis = None, keepdims: bool = False) -> Array:
        """Standard deviation (ddof 0) over ``axis``."""
        return self._reduce("std", axis, keepdims)

    def var(self, axis: Axis = None, keepdims: bool = False) -> Array:
        """Variance (ddof 0) over ``axis``."""
        return self._reduce("var", axis, keepdims)

    def argmin(self, axis: int | None = None) -> Array:
        """Position of the minimum along ``axis``."""
        return self._reduce("argmin", axis, False)

    def argmax(self, axis: int | None = None) -> Array:
        """Position of the maximum along ``axis``."""
        return self._reduce("argmax", axis, False)

    def nansum(self, axis: Axis = None, keepdims: bool = False) -> Array:
        """Sum over ``axis`` skipping NaN."""
        return self._reduce("sum", axis, keepdims, True)

    def nanmean(self, axis: Axis = None, keepdims: bool = False) -> Array:
        """Mean over ``axis`` skipping NaN."""
        return self._reduce("mean", axis, keepdims, True)


class ArrayModule:
    """``session.array``: array constructors bound to a session (``shoal.array`` uses the
    default session)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def from_numpy(self, values: Any, chunks: int | Sequence[int] | None = None) -> Array:
        """``values`` (anything ``np.asarray`` takes) as a chunked array."""
        array = np.asarray(values)
        if np.issubdtype(array.dtype, np.datetime64):
            # Nanoseconds since the epoch, typed as datetimes again on the engine's side.
            ns = array.astype("datetime64[ns]").view(np.int64)
            native = self._session._live.read_numpy(ns, _chunks(chunks, array.shape))
            return Array(native.astype("datetime64[ns]"), self._session)
        native = self._session._live.read_numpy(array, _chunks(chunks, array.shape))
        return Array(native, self._session)

    from_array = from_numpy

    def full(
        self,
        shape: int | Sequence[int],
        value: float,
        chunks: int | Sequence[int] | None = None,
        dtype: Any = "float64",
    ) -> Array:
        """An array of ``shape`` filled with ``value``."""
        dims = [shape] if isinstance(shape, int) else list(shape)
        native = self._session._live.full(
            dims, _chunks(chunks, dims), float(value), np.dtype(dtype).name
        )
        return Array(native, self._session)

    def ones(
        self,
        shape: int | Sequence[int],
        chunks: int | Sequence[int] | None = None,
        dtype: Any = "float64",
    ) -> Array:
        """An array of ones."""
        return self.full(shape, 1.0, chunks, dtype)

    def zeros(
        self,
        shape: int | Sequence[int],
        chunks: int | Sequence[int] | None = None,
        dtype: Any = "float64",
    ) -> Array:
        """An array of zeros."""
        return self.full(shape, 0.0, chunks, dtype)

    def random(
        self, shape: int | Sequence[int], chunks: int | Sequence[int] | None = None, seed: int = 0
    ) -> Array:
        """Uniform values in [0, 1); each cell's value depends only on the seed and its
        position, so a rechunked array draws the same numbers."""
        dims = [shape] if isinstance(shape, int) else list(shape)
        native = self._session._live.random(dims, _chunks(chunks, dims), seed)
        return Array(native, self._session)

    def arange(self, n: int, chunks: int | None = None) -> Array:
        """``0, 1, ..., n - 1`` as int64."""
        return Array(self._session._live.arange(n, _chunks(chunks, [n])[0]), self._session)

    def from_zarr(
        self,
        store: str,
        component: str | None = None,
        chunks: int | Sequence[int] | None = None,
    ) -> Array:
        """Array ``component`` of a Zarr group (v2 or v3; the group's only array when
        None), read chunk by chunk when computed, in the store's chunks unless ``chunks``
        says otherwise."""
        ds = self._session.open_zarr(store)
        names = ds.keys()
        if component is None:
            if len(names) != 1:
                raise ValueError(f"{store} holds arrays {names}: name one as component=")
            component = names[0]
        if component not in names:
            raise ValueError(f"{store} has no array '{component}'; it holds {names}")
        data = ds.data_vars[component].data
        return data if chunks is None else data.rechunk(chunks)

    def tensordot(self, a: Array, b: Array, axes: int | tuple[Sequence[int], Sequence[int]] = 2) -> Array:
        """Sums products over the last ``axes`` of ``a`` and first of ``b`` (or the axis
        lists given), as ``np.tensordot``."""
        if isinstance(axes, int):
            left = list(range(a.ndim - axes, a.ndim))
            right = list(range(axes))
        else:
            left, right = list(axes[0]), list(axes[1])
        return a._wrap(a._native.tensordot(b._native, left, right))
