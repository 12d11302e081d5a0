"""Labeled arrays in the style of xarray: :class:`DataArray` (a chunked array with named
dimensions, coordinates and attributes) and :class:`Dataset` (named variables sharing
dimensions). Everything is lazy: operations build the task graph, ``values``,
``to_numpy()``, ``to_xarray()`` and the writers run it."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ._array import Array
from ._native import DataArray as NativeDataArray
from ._native import GroupBy as NativeGroupBy
from ._native import Rolling as NativeRolling

if TYPE_CHECKING:
    import pandas
    import xarray

    from ._dataset import Dataset
    from ._frame import DataFrame
    from ._session import Session

#: A reduction's ``dim``: one name, several, or every dimension (None or ``...``).
Dims = Union[str, Sequence[str], "ellipsis", None]  # noqa: F821

_NS = np.dtype("datetime64[ns]")

#: NumPy ufuncs of two operands and the engine's operator names.
_BINARY_UFUNCS = {
    "add": "add",
    "subtract": "sub",
    "multiply": "mul",
    "divide": "div",
    "true_divide": "div",
    "floor_divide": "floor_div",
    "remainder": "mod",
    "power": "pow",
    "minimum": "minimum",
    "maximum": "maximum",
    "equal": "eq",
    "not_equal": "ne",
    "less": "lt",
    "less_equal": "le",
    "greater": "gt",
    "greater_equal": "ge",
    "logical_and": "and",
    "logical_or": "or",
    "logical_xor": "xor",
}


#: NumPy ufuncs of one operand the engine runs (by NumPy's name), and other spellings.
_UNARY_UFUNCS = {
    "negative", "abs", "sqrt", "square", "exp", "expm1", "log", "log1p", "log2", "log10",
    "sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "floor",
    "ceil", "round", "trunc", "sign", "isnan", "isfinite", "isinf", "logical_not",
}
_UNARY_ALIASES = {"absolute": "abs"}


def _index_values(kind: str, values: Any) -> np.ndarray[Any, Any]:
    """A coordinate's values as NumPy, datetimes as ``datetime64[ns]``."""
    if kind == "datetime":
        return np.asarray(values, dtype=np.int64).view(_NS)
    if kind == "str":
        return np.asarray(values, dtype=object)
    return np.asarray(values)


def _index_payload(values: Any) -> tuple[str, Any]:
    """``values`` (anything 1-d NumPy takes) as an index kind and plain values."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"a coordinate must be 1-d, not of shape {array.shape}")
    if np.issubdtype(array.dtype, np.datetime64):
        return "datetime", array.astype(_NS).view(np.int64).tolist()
    if np.issubdtype(array.dtype, np.bool_) or np.issubdtype(array.dtype, np.integer):
        return "i64", array.astype(np.int64).tolist()
    if np.issubdtype(array.dtype, np.floating):
        return "f64", array.astype(np.float64).tolist()
    return "str", [str(v) for v in array.tolist()]


def _one_dim(given: Mapping[str, Any] | None, kwargs: Mapping[str, Any], what: str) -> tuple[str, Any]:
    """The one ``dim=value`` a windowing or resampling takes."""
    chosen = _merge_kwargs(given, kwargs, what)
    if len(chosen) != 1:
        raise ValueError(f"{what} takes one dimension, e.g. {what}(time=...), not {list(chosen)}")
    ((dim, value),) = chosen.items()
    return str(dim), value


def _dims_arg(dim: Dims, own: Sequence[str]) -> list[str] | None:
    """A reduction's dimensions, None for all."""
    if dim is None or dim is Ellipsis:
        return None
    names = [dim] if isinstance(dim, str) else list(dim)
    for name in names:
        if name not in own:
            raise ValueError(f"dimension '{name}' is not one of {tuple(own)}")
    return names


def _merge_kwargs(
    given: Mapping[str, Any] | None, kwargs: Mapping[str, Any], what: str
) -> dict[str, Any]:
    """xarray's ``f({"time": x})`` or ``f(time=x)``."""
    if given is not None and kwargs:
        raise ValueError(f"{what}: give a mapping or keyword arguments, not both")
    return dict(given if given is not None else kwargs)


class DataArray:
    """A lazy labeled array: a chunked :class:`~shoal.Array` with named dimensions,
    1-d coordinates and attributes. Arithmetic aligns and broadcasts by dimension name,
    ``isel`` selects by position, ``sel`` by label, reductions take dimension names and
    skip NaN, and ``groupby``/``resample``/``rolling``/``coarsen`` work as in xarray.

    Build one with :meth:`Session.open_zarr`, :func:`shoal.from_xarray` or
    ``shoal.DataArray(values, dims=..., coords=...)``.
    """

    __array_priority__ = 100
    _native: NativeDataArray
    _session: Session
    #: Scalar coordinates: what an integer selection left of a dimension's coordinates
    #: (``lat=10.0`` after ``sel(lat=10)``), carried along as xarray does.
    _scalars: dict[str, Any]

    def __init__(
        self,
        data: Any,
        coords: Mapping[str, Any] | None = None,
        dims: Sequence[str] | None = None,
        name: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        *,
        chunks: int | Sequence[int] | None = None,
        session: Session | None = None,
    ) -> None:
        from ._session import default_session

        if isinstance(data, Array):
            array = data
        else:
            own = session if session is not None else default_session()
            array = own.array.from_numpy(np.asarray(data), chunks)
        names = list(dims) if dims is not None else [f"dim_{i}" for i in range(array.ndim)]
        native = NativeDataArray.from_array(array._native, names)
        for key, value in (coords or {}).items():
            dim, values = value if isinstance(value, tuple) else (key, value)
            kind, payload = _index_payload(values)
            native = native.with_coord(key, dim, kind, payload)
        if name is not None:
            native = native.with_name(name)
        if attrs:
            native = native.with_attrs(_attrs_json(attrs))
        self._native = native
        self._session = array._session
        self._scalars = {}

    @classmethod
    def _wrap(
        cls, native: NativeDataArray, session: Session, scalars: dict[str, Any] | None = None
    ) -> DataArray:
        out = cls.__new__(cls)
        out._native = native
        out._session = session
        out._scalars = dict(scalars or {})
        return out

    def _new(self, native: NativeDataArray, scalars: dict[str, Any] | None = None) -> DataArray:
        return DataArray._wrap(native, self._session, self._scalars if scalars is None else scalars)

    def _dropped(self, dim: str, position: int) -> dict[str, Any]:
        """The scalar coordinates once ``dim`` is reduced to ``position``."""
        out = dict(self._scalars)
        for name, (d, values) in self._coord_values().items():
            if d == dim:
                out[name] = values[position]
        return out

    # --- what it is -------------------------------------------------------------------

    @property
    def name(self) -> str | None:
        """The array's name (a Dataset's variables are named after their key)."""
        return self._native.name

    @property
    def dims(self) -> tuple[str, ...]:
        """Dimension names, in axis order."""
        return tuple(self._native.dims)

    @property
    def data(self) -> Array:
        """The values as a lazy chunked :class:`~shoal.Array`."""
        return Array(self._native.data, self._session)

    @property
    def shape(self) -> tuple[int, ...]:
        """Lengths per axis."""
        return self.data.shape

    @property
    def sizes(self) -> dict[str, int]:
        """Length of each dimension."""
        return dict(zip(self.dims, self.shape))

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.dims)

    @property
    def size(self) -> int:
        """Number of cells."""
        return self.data.size

    @property
    def dtype(self) -> np.dtype[Any]:
        """The element type."""
        return self.data.dtype

    @property
    def nbytes(self) -> int:
        """Bytes the values take once computed."""
        return self.data.nbytes

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        """Chunk lengths per axis."""
        return self.data.chunks

    @property
    def chunksizes(self) -> dict[str, tuple[int, ...]]:
        """Chunk lengths per dimension name."""
        return dict(zip(self.dims, self.chunks))

    @property
    def attrs(self) -> dict[str, Any]:
        """Attributes (``units``, ``long_name``, ...)."""
        attrs: dict[str, Any] = json.loads(self._native.attrs_json())
        return attrs

    def _coord_values(self) -> dict[str, tuple[str, np.ndarray[Any, Any]]]:
        return {
            name: (dim, _index_values(kind, values))
            for name, dim, kind, values in self._native.coords()
        }

    @property
    def coords(self) -> dict[str, Any]:
        """The 1-d coordinates by name, each as a DataArray along its dimension (string
        labels as a NumPy array of objects: arrays hold numbers, bools and datetimes)."""
        return {
            name: values
            if values.dtype == object
            else DataArray(
                values, coords={name: (dim, values)}, dims=[dim], name=name,
                session=self._session,
            )
            for name, (dim, values) in self._coord_values().items()
        }

    @property
    def indexes(self) -> dict[str, np.ndarray[Any, Any]]:
        """Coordinate values by name, as NumPy arrays (held in memory; nothing runs)."""
        return {name: values for name, (_, values) in self._coord_values().items()}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{d}: {n}" for d, n in self.sizes.items())
        lines = [f"<shoal.DataArray {self.name or ''!s} ({sizes})> dtype={self.dtype}"]
        lines.append(f"chunks: {self.chunksizes}")
        coords = self._coord_values()
        if coords or self._scalars:
            lines.append("Coordinates:")
            for name, (dim, values) in coords.items():
                lines.append(f"  * {name:<8} ({dim}) {_preview(values)}")
            lines.extend(f"    {name:<8} {value}" for name, value in self._scalars.items())
        attrs = self.attrs
        if attrs:
            lines.append("Attributes:")
            lines.extend(f"    {k}: {v}" for k, v in attrs.items())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return _html_block(
            f"shoal.DataArray {self.name or ''}",
            [(self.name or "values", self.dims, self.shape, self.dtype, self.chunks)],
            self._coord_values(),
            self.attrs,
        )

    # --- compute ----------------------------------------------------------------------

    def to_numpy(self) -> np.ndarray[Any, Any]:
        """Runs the job; the values as a NumPy array (moved, not copied)."""
        return self.data.to_numpy()

    @property
    def values(self) -> np.ndarray[Any, Any]:
        """The computed values as NumPy (runs the job)."""
        return self.to_numpy()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray[Any, Any]:
        values = self.to_numpy()
        return values if dtype is None else values.astype(dtype)

    def compute(self) -> DataArray:
        """Runs the job and keeps the values in the workers' memory; the same labels.
        (``to_numpy()`` or ``to_xarray()`` bring them into Python.)"""
        return self._new(self._native.persist())

    persist = compute
    load = compute

    def to_xarray(self) -> xarray.DataArray:
        """Runs the job; an in-memory ``xarray.DataArray`` with the same labels."""
        import xarray

        coords: dict[str, Any] = {
            name: (dim, values) for name, (dim, values) in self._coord_values().items()
        }
        coords.update(self._scalars)
        return xarray.DataArray(
            self.to_numpy(), coords=coords, dims=self.dims, name=self.name, attrs=self.attrs
        )

    def to_lazy_frame(self) -> DataFrame:
        """A lazy Shoal frame: one row per cell (C order), a column per dimension and one of
        values named after the array (``values`` when unnamed); NaN cells are NULL."""
        from ._frame import DataFrame

        return DataFrame(self._native.to_frame(), self._session)

    def to_dataframe(self, name: str | None = None) -> pandas.DataFrame:
        """The cells as pandas, as xarray gives them: indexed by the dimensions, one column
        of values named ``name`` (default: the array's name)."""
        da = self if name is None else self.rename(name)
        if da.name is None:
            raise ValueError("cannot convert an unnamed DataArray to a DataFrame: give a name")
        return _indexed_frame(da.to_lazy_frame(), da.dims)

    def to_dataset(self, name: str | None = None) -> Dataset:
        """A one-variable Dataset."""
        key = name or self.name
        if key is None:
            raise ValueError("cannot make a Dataset of an unnamed DataArray: give a name")
        return Dataset({key: self})

    def to_zarr(self, store: str, *, zarr_format: int = 3) -> None:
        """Writes the array and its coordinates as a Zarr group (v2 or v3; zstd chunks).
        Nothing appears at ``store`` until every chunk is written; an existing store is
        refused."""
        self._native.to_zarr(str(store), zarr_format)

    # --- labels -----------------------------------------------------------------------

    def rename(self, new_name_or_dims: str | Mapping[str, str] | None = None, **names: str) -> DataArray:
        """A new name (``rename("t")``) or renamed dimensions (``rename(x="lon")``)."""
        if isinstance(new_name_or_dims, str):
            return self._new(self._native.with_name(new_name_or_dims))
        mapping = _merge_kwargs(new_name_or_dims, names, "rename")
        out = self._native
        for old, new in mapping.items():
            out = out.rename_dim(old, new)
        return self._new(out)

    def assign_attrs(self, attrs: Mapping[str, Any] | None = None, **kwargs: Any) -> DataArray:
        """The same array with attributes added."""
        merged = {**self.attrs, **(attrs or {}), **kwargs}
        return self._new(self._native.with_attrs(_attrs_json(merged)))

    def assign_coords(self, coords: Mapping[str, Any] | None = None, **kwargs: Any) -> DataArray:
        """The same array with coordinates added: ``name=values`` labels dimension
        ``name``; ``name=(dim, values)`` another one."""
        out = self._native
        for key, value in _merge_kwargs(coords, kwargs, "assign_coords").items():
            dim, values = value if isinstance(value, tuple) else (key, value)
            kind, payload = _index_payload(values)
            out = out.with_coord(key, dim, kind, payload)
        return self._new(out)

    def transpose(self, *dims: str) -> DataArray:
        """Dimensions in the order given (reversed when none)."""
        order = list(dims) if dims else list(reversed(self.dims))
        return self._new(self._native.transpose(order))

    @property
    def T(self) -> DataArray:
        """Dimensions reversed."""
        return self.transpose()

    def chunk(self, chunks: int | Mapping[str, int] | None = None, **kwargs: int) -> DataArray:
        """The same values in other chunks: one length for every dimension, or lengths by
        dimension name (others keep theirs)."""
        if isinstance(chunks, int):
            sizes = [min(chunks, n) for n in self.shape]
        else:
            by_dim = _merge_kwargs(chunks, kwargs, "chunk")
            sizes = [
                int(by_dim.get(d, c[0] if c else 1)) if by_dim.get(d, 0) != -1 else n
                for d, c, n in zip(self.dims, self.chunks, self.shape)
            ]
        return self._new(self._native.rechunk([max(1, s) for s in sizes]))

    def isel(self, indexers: Mapping[str, Any] | None = None, **kwargs: Any) -> DataArray:
        """Selection by position along named dimensions: an integer (drops the
        dimension), a slice (any step), or a list of positions."""
        items = []
        scalars = self._scalars
        for dim, key in _merge_kwargs(indexers, kwargs, "isel").items():
            if dim not in self.dims:
                raise ValueError(f"dimension '{dim}' is not one of {self.dims}")
            kind, values = _positional(key, self.sizes[dim], dim)
            items.append((dim, kind, values))
            if kind == "at" and values[0] is not None and -self.sizes[dim] <= values[0] < self.sizes[dim]:
                scalars = {**scalars, **self._dropped(dim, values[0])}
        return self._new(self._native.isel(items), scalars)

    def sel(
        self,
        indexers: Mapping[str, Any] | None = None,
        method: str | None = None,
        **kwargs: Any,
    ) -> DataArray:
        """Selection by coordinate label: a label (drops the dimension), a slice of labels
        (both ends included; a date string covers its whole period, as in pandas) or a list
        of labels. ``method="nearest"`` picks the closest label."""
        coords = self._coord_values()
        items = []
        scalars = self._scalars
        for dim, key in _merge_kwargs(indexers, kwargs, "sel").items():
            if dim not in coords:
                raise ValueError(f"dimension '{dim}' has no coordinate to select labels from")
            values = coords[dim][1]
            dates = values.dtype == _NS
            if isinstance(key, slice) and method is not None:
                raise ValueError("method= cannot be used with a slice of labels")
            if dates and isinstance(key, str) and _is_period(key, values):
                # A date coarser than the coordinate's stamps means its whole period, as
                # pandas' partial string indexing does.
                key = slice(key, key)
            if isinstance(key, slice):
                if key.step is not None:
                    raise ValueError("label slices take no step")
                lo = _label(key.start, dates, False) if key.start is not None else None
                hi = _label(key.stop, dates, True) if key.stop is not None else None
                items.append((dim, "range", [
                    lo if lo is not None else _edge(values, 0),
                    hi if hi is not None else _edge(values, -1),
                ]))
            elif isinstance(key, (list, tuple, np.ndarray)):
                labels = [_label(k, dates, False) for k in key]
                if method == "nearest":
                    nearest = [_position(values, label, True) for label in labels]
                    labels = [_edge(values, p) for p in nearest if p is not None]
                items.append((dim, "many", labels))
            else:
                kind = "nearest" if method == "nearest" else "exact"
                if method not in (None, "nearest"):
                    raise ValueError(f"method '{method}' is not supported: use None or 'nearest'")
                label = _label(key, dates, False)
                items.append((dim, kind, [label]))
                position = _position(values, label, kind == "nearest")
                if position is not None:
                    scalars = {**scalars, **self._dropped(dim, position)}
        return self._new(self._native.sel(items), scalars)

    def __getitem__(self, key: Any) -> Any:
        """``da["time"]`` is a coordinate; ``da[0, 2:5]`` and ``da[{"time": 0}]`` select by
        position."""
        if isinstance(key, str):
            coords = self.coords
            if key not in coords:
                raise KeyError(f"no coordinate '{key}'; the array has {list(coords)}")
            return coords[key]
        if isinstance(key, Mapping):
            return self.isel(key)
        items = list(key) if isinstance(key, tuple) else [key]
        if any(item is Ellipsis for item in items):
            at = next(i for i, item in enumerate(items) if item is Ellipsis)
            fill = [slice(None)] * (self.ndim - len(items) + 1)
            items = items[:at] + fill + items[at + 1 :]
        if len(items) > self.ndim:
            raise IndexError(f"{len(items)} indices for an array with {self.ndim} dimensions")
        return self.isel(dict(zip(self.dims, items)))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        coords = self._coord_values()
        if name in coords:
            return self.coords[name]
        raise AttributeError(f"'DataArray' object has no attribute '{name}'")

    # --- arithmetic -------------------------------------------------------------------

    def _binary(self, op: str, other: object, reflected: bool = False) -> DataArray:
        scalars = self._scalars
        if isinstance(other, DataArray):
            scalars = _merged_scalars(self._scalars, other._scalars)
            other = other._native
        elif isinstance(other, np.generic):
            other = other.item()
        elif not isinstance(other, (int, float)):
            return NotImplemented  # type: ignore[no-any-return]
        return self._new(self._native.binary(op, other, reflected), scalars)

    def __add__(self, other: object) -> DataArray:
        return self._binary("add", other)

    def __radd__(self, other: object) -> DataArray:
        return self._binary("add", other, True)

    def __sub__(self, other: object) -> DataArray:
        return self._binary("sub", other)

    def __rsub__(self, other: object) -> DataArray:
        return self._binary("sub", other, True)

    def __mul__(self, other: object) -> DataArray:
        return self._binary("mul", other)

    def __rmul__(self, other: object) -> DataArray:
        return self._binary("mul", other, True)

    def __truediv__(self, other: object) -> DataArray:
        return self._binary("div", other)

    def __rtruediv__(self, other: object) -> DataArray:
        return self._binary("div", other, True)

    def __floordiv__(self, other: object) -> DataArray:
        return self._binary("floor_div", other)

    def __mod__(self, other: object) -> DataArray:
        return self._binary("mod", other)

    def __pow__(self, other: object) -> DataArray:
        return self._binary("pow", other)

    def __rpow__(self, other: object) -> DataArray:
        return self._binary("pow", other, True)

    def __eq__(self, other: object) -> DataArray:  # type: ignore[override]
        return self._binary("eq", other)

    def __ne__(self, other: object) -> DataArray:  # type: ignore[override]
        return self._binary("ne", other)

    def __lt__(self, other: object) -> DataArray:
        return self._binary("lt", other)

    def __le__(self, other: object) -> DataArray:
        return self._binary("le", other)

    def __gt__(self, other: object) -> DataArray:
        return self._binary("gt", other)

    def __ge__(self, other: object) -> DataArray:
        return self._binary("ge", other)

    def __and__(self, other: object) -> DataArray:
        return self._binary("and", other)

    def __or__(self, other: object) -> DataArray:
        return self._binary("or", other)

    def __neg__(self) -> DataArray:
        return self._new(self._native.unary("negative"))

    def __abs__(self) -> DataArray:
        return self._new(self._native.unary("abs"))

    def __invert__(self) -> DataArray:
        return self._new(self._native.unary("logical_not"))

    __hash__ = None  # type: ignore[assignment]

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """NumPy ufuncs stay lazy: ``np.sqrt(da)``, ``np.maximum(da, 0)``."""
        if method != "__call__" or kwargs:
            return NotImplemented
        if len(inputs) == 1 and inputs[0] is self:
            name = _UNARY_ALIASES.get(ufunc.__name__, ufunc.__name__)
            if name not in _UNARY_UFUNCS:
                return NotImplemented
            return self._new(self._native.unary(name))
        op = _BINARY_UFUNCS.get(ufunc.__name__)
        if len(inputs) == 2 and op is not None:
            left, right = inputs
            if left is self:
                return self._binary(op, right)
            return self._binary(op, left, True)
        return NotImplemented

    def where(self, cond: DataArray) -> DataArray:
        """Cells where ``cond`` holds, NaN elsewhere (``cond`` broadcast by name)."""
        return self._new(self._native.where_(cond._native))

    def astype(self, dtype: Any) -> DataArray:
        """The values as ``dtype``."""
        return self._new(self._native.astype(np.dtype(dtype).name))

    def dot(self, other: DataArray, dim: Dims = None) -> DataArray:
        """Sum of products over ``dim`` (default: every dimension both arrays have)."""
        if dim is None or dim is Ellipsis:
            dims = [d for d in self.dims if d in other.dims]
        else:
            dims = [dim] if isinstance(dim, str) else list(dim)
        return self._new(self._native.dot(other._native, dims))

    # --- reductions -------------------------------------------------------------------

    def reduce(self, func: str, dim: Dims = None, *, skipna: bool | None = None) -> DataArray:
        """The reduction ``func`` (``"sum"``, ``"mean"``, ``"std"``...) over ``dim``."""
        return self._new(self._native.reduce(func, _dims_arg(dim, self.dims), skipna))

    def sum(self, dim: Dims = None, *, skipna: bool | None = None) -> DataArray:
        """Sum over ``dim`` (every dimension when None), NaN skipped."""
        return self.reduce("sum", dim, skipna=skipna)

    def prod(self, dim: Dims = None, *, skipna: bool | None = None) -> DataArray:
        """Product over ``dim``, NaN skipped."""
        return self.reduce("prod", dim, skipna=skipna)

    def mean(self, dim: Dims = None, *, skipna: bool | None = None) -> DataArray:
        """Mean over ``dim``, NaN skipped."""
        return self.reduce("mean", dim, skipna=skipna)

    def min(self, dim: Dims = None, *, skipna: bool | None = None) -> DataArray:
        """Minimum over ``dim``, NaN skipped."""
        return self.reduce("min", dim, skipna=skipna)

    def max(self, dim: Dims = None, *, skipna: bool | None = None) -> DataArray:
        """Maximum over ``dim``, NaN skipped."""
        return self.reduce("max", dim, skipna=skipna)

    def std(self, dim: Dims = None, *, skipna: bool | None = None) -> DataArray:
        """Standard deviation (ddof 0) over ``dim``, NaN skipped."""
        return self.reduce("std", dim, skipna=skipna)

    def var(self, dim: Dims = None, *, skipna: bool | None = None) -> DataArray:
        """Variance (ddof 0) over ``dim``, NaN skipped."""
        return self.reduce("var", dim, skipna=skipna)

    def count(self, dim: Dims = None) -> DataArray:
        """Number of non-NaN cells over ``dim``."""
        return self.reduce("count", dim)

    def any(self, dim: Dims = None) -> DataArray:
        """Whether any cell over ``dim`` is true."""
        return self.reduce("any", dim)

    def all(self, dim: Dims = None) -> DataArray:
        """Whether every cell over ``dim`` is true."""
        return self.reduce("all", dim)

    def argmin(self, dim: str) -> DataArray:
        """Position of the minimum along ``dim``."""
        return self.reduce("argmin", dim)

    def argmax(self, dim: str) -> DataArray:
        """Position of the maximum along ``dim``."""
        return self.reduce("argmax", dim)

    # --- grouped and windowed ---------------------------------------------------------

    def groupby(self, group: str) -> DataArrayGroupBy:
        """Groups along a coordinate (``"station"``) or a calendar field of a datetime
        coordinate (``"time.month"``, ``"time.season"``, ``"time.year"``...)."""
        return DataArrayGroupBy(self, self._native.groupby(group))

    def resample(self, indexer: Mapping[str, str] | None = None, **kwargs: str) -> DataArrayGroupBy:
        """Calendar bins of a datetime dimension: ``resample(time="1MS")`` (``D``, ``h``,
        ``MS``, ``YS`` with an optional count); each bin is labelled by its start."""
        dim, freq = _one_dim(indexer, kwargs, "resample")
        return DataArrayGroupBy(self, self._native.resample(dim, freq))

    def coarsen(
        self,
        dim: Mapping[str, int] | None = None,
        boundary: str = "exact",
        **kwargs: int,
    ) -> DataArrayCoarsen:
        """Windows of fixed length: ``coarsen(lat=2, lon=2).mean()``. Each length must
        divide its dimension (xarray's ``boundary="exact"``); coordinates become window
        means."""
        if boundary != "exact":
            raise ValueError("coarsen supports boundary='exact' only")
        windows = _merge_kwargs(dim, kwargs, "coarsen")
        for name in windows:
            if name not in self.dims:
                raise ValueError(f"dimension '{name}' is not one of {self.dims}")
        return DataArrayCoarsen(self, {k: int(v) for k, v in windows.items()})

    def rolling(
        self,
        dim: Mapping[str, int] | None = None,
        min_periods: int | None = None,
        center: bool = False,
        **kwargs: int,
    ) -> DataArrayRolling:
        """A moving window ending at each position: ``rolling(time=7).mean()``; windows
        with fewer than ``min_periods`` (default: the window) values give NaN."""
        if center:
            raise ValueError("rolling supports center=False only")
        name, window = _one_dim(dim, kwargs, "rolling")
        periods = int(window) if min_periods is None else min_periods
        return DataArrayRolling(self, self._native.rolling(name, int(window), periods))


def _attrs_json(attrs: Mapping[str, Any]) -> str:
    """Attributes as JSON: NumPy scalars and arrays as their Python values, NaN as null."""

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return [plain(v) for v in value.tolist()]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        return str(value)

    return json.dumps({str(k): plain(v) for k, v in attrs.items()})


def _merged_scalars(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Scalar coordinates of both operands; a name whose values differ is dropped."""
    out = dict(a)
    for name, value in b.items():
        if name in out and not bool(np.all(out[name] == value)):
            del out[name]
        elif name not in out:
            out[name] = value
    return out


def _position(values: np.ndarray[Any, Any], label: float | str, nearest: bool) -> int | None:
    """Where ``label`` (as :func:`_label` makes it) sits among ``values``, if anywhere."""
    if values.dtype == object:
        hits = np.flatnonzero(values == label)
        return int(hits[0]) if len(hits) else None
    keys = values.view(np.int64).astype(np.float64) if values.dtype == _NS else values.astype(np.float64)
    if isinstance(label, str) or len(keys) == 0:
        return None
    if nearest:
        return int(np.argmin(np.abs(keys - label)))
    hits = np.flatnonzero(keys == label)
    return int(hits[0]) if len(hits) else None


def _preview(values: np.ndarray[Any, Any]) -> str:
    shown = values[:3].tolist() if values.dtype != _NS else [str(v) for v in values[:3]]
    more = " ..." if len(values) > 3 else ""
    return " ".join(str(v) for v in shown) + more


def _html_block(
    title: str,
    rows: Sequence[tuple[str, Sequence[str], Sequence[int], Any, Sequence[Sequence[int]]]],
    coords: Mapping[str, tuple[str, np.ndarray[Any, Any]]],
    attrs: Mapping[str, Any],
) -> str:
    """xarray's layout for a notebook, from what is known without computing: dimensions,
    variables with their chunking, coordinates (held in memory) and attributes."""
    e = html.escape
    sizes: dict[str, int] = {}
    for _, dims, shape, _, _ in rows:
        for d, n in zip(dims, shape):
            sizes.setdefault(d, n)
    head = ", ".join(f"<b>{e(d)}</b>: {n}" for d, n in sizes.items())
    body = [f"<div class='shoal-labeled'><div><b>{e(title)}</b> ({head})</div>"]
    body.append("<table><tr><th>variable</th><th>dims</th><th>dtype</th><th>chunk</th><th>tasks</th></tr>")
    for name, dims, _, dtype, chunks in rows:
        chunk = tuple(c[0] if c else 0 for c in chunks)
        tasks = math.prod(len(c) for c in chunks)
        body.append(
            f"<tr><td>{e(name)}</td><td>({e(', '.join(dims))})</td><td>{e(str(dtype))}</td>"
            f"<td>{chunk}</td><td>{tasks}</td></tr>"
        )
    body.append("</table>")
    if coords:
        body.append("<div>Coordinates:</div><ul>")
        body.extend(
            f"<li><b>{e(n)}</b> ({e(d)}) {e(_preview(v))}</li>" for n, (d, v) in coords.items()
        )
        body.append("</ul>")
    if attrs:
        body.append("<div>Attributes:</div><ul>")
        body.extend(f"<li>{e(str(k))}: {e(str(v))}</li>" for k, v in attrs.items())
        body.append("</ul>")
    body.append("</div>")
    return "".join(body)


def _positional(key: Any, n: int, dim: str) -> tuple[str, list[int | None]]:
    if isinstance(key, (int, np.integer)):
        return "at", [int(key)]
    if isinstance(key, slice):
        if key.step is not None and key.step < 0:
            return "take", list(range(*key.indices(n)))
        return "slice", [key.start, key.stop, key.step]
    mask = np.asarray(key)
    if mask.dtype == np.bool_:
        if mask.shape != (n,):
            raise IndexError(f"a boolean selection of dimension '{dim}' needs {n} values")
        return "take", [int(p) for p in np.flatnonzero(mask)]
    positions = [int(p) for p in np.asarray(key).ravel()]
    for p in positions:
        if not -n <= p < n:
            raise IndexError(f"position {p} is out of range for dimension '{dim}' of length {n}")
    return "take", [p % n for p in positions]


def _label(value: Any, dates: bool, end: bool) -> float | str:
    """A label the engine compares: numbers as floats, datetimes as their nanoseconds;
    ``end`` stretches a date string (``"2000-02"``) to the end of its period, less one
    microsecond so that float rounding cannot reach the next period's start; a datetime
    value is exact."""
    if dates:
        stamp = np.datetime64(value) if not isinstance(value, np.datetime64) else value
        if end and isinstance(value, str):
            unit = np.datetime_data(stamp.dtype)[0]
            step = np.array([1], dtype=f"m8[{unit}]")[0]
            nxt = (stamp + step).astype(_NS).astype(np.int64)
            return float(int(nxt) - 1000)
        return float(stamp.astype(_NS).astype(np.int64))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return str(value)


def _is_period(text: str, values: np.ndarray[Any, Any]) -> bool:
    """Whether date string ``text`` names a period holding several of ``values``' stamps:
    a year or month, or a day when the stamps have times of day."""
    try:
        unit = np.datetime_data(np.datetime64(text).dtype)[0]
    except ValueError:
        return False
    if unit in ("Y", "M", "W"):
        return True
    ns = values.view(np.int64)
    return unit == "D" and bool(np.any(ns % (86_400 * 10**9) != 0))


def _edge(values: np.ndarray[Any, Any], i: int) -> float | str:
    v = values[i]
    if values.dtype == _NS:
        return float(v.astype(np.int64))
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    return str(v)


def _indexed_frame(frame: DataFrame, dims: Sequence[str]) -> pandas.DataFrame:
    pdf = frame.to_pandas()
    return pdf.set_index(list(dims)) if dims else pdf


class DataArrayGroupBy:
    """Groups (or calendar bins, or fixed windows) along one dimension: reductions give
    one value per group; arithmetic with a per-group result (a climatology) broadcasts it
    back over the grouped dimension, as xarray's groupby arithmetic."""

    def __init__(self, array: DataArray, native: NativeGroupBy) -> None:
        self._array = array
        self._native = native

    @property
    def groups(self) -> np.ndarray[Any, Any]:
        """The label of each group."""
        kind, values = self._native.groups()
        return _index_values(kind, values)

    def __repr__(self) -> str:
        return f"<shoal.DataArrayGroupBy, {len(self.groups)} groups of {self._array.name or 'values'}>"

    def reduce(self, func: str, dim: Dims = None) -> DataArray:
        """The reduction ``func`` of each group, over the grouped dimension (the only
        ``dim`` a grouped reduction takes here)."""
        return self._checked(func, dim)

    def _checked(self, func: str, dim: Dims) -> DataArray:
        if dim is not None and dim is not Ellipsis:
            names = [dim] if isinstance(dim, str) else list(dim)
            grouped = self._native.dim
            if names != [grouped]:
                raise ValueError(
                    f"a grouped {func} runs over the grouped dimension '{grouped}'; "
                    f"reduce {names} after it"
                )
        return self._array._new(self._native.reduce(func))

    def sum(self, dim: Dims = None) -> DataArray:
        """Sum of each group."""
        return self._checked("sum", dim)

    def mean(self, dim: Dims = None) -> DataArray:
        """Mean of each group."""
        return self._checked("mean", dim)

    def min(self, dim: Dims = None) -> DataArray:
        """Minimum of each group."""
        return self._checked("min", dim)

    def max(self, dim: Dims = None) -> DataArray:
        """Maximum of each group."""
        return self._checked("max", dim)

    def std(self, dim: Dims = None) -> DataArray:
        """Standard deviation (ddof 0) of each group."""
        return self._checked("std", dim)

    def var(self, dim: Dims = None) -> DataArray:
        """Variance (ddof 0) of each group."""
        return self._checked("var", dim)

    def count(self, dim: Dims = None) -> DataArray:
        """Non-NaN cells of each group."""
        return self._checked("count", dim)

    def prod(self, dim: Dims = None) -> DataArray:
        """Product of each group."""
        return self._checked("prod", dim)

    def _binary(self, op: str, other: object) -> DataArray:
        if not isinstance(other, DataArray):
            return NotImplemented  # type: ignore[no-any-return]
        return self._array._new(self._native.binary(op, other._native))

    def __add__(self, other: object) -> DataArray:
        return self._binary("add", other)

    def __sub__(self, other: object) -> DataArray:
        return self._binary("sub", other)

    def __mul__(self, other: object) -> DataArray:
        return self._binary("mul", other)

    def __truediv__(self, other: object) -> DataArray:
        return self._binary("div", other)


class _WindowReductions:
    """The named reductions of a windowing (rolling or coarsen), each one call of the
    reducer it is made with."""

    def __init__(self, reducer: Callable[[str], DataArray]) -> None:
        self._reducer = reducer

    def reduce(self, func: str) -> DataArray:
        """The reduction ``func`` of each window."""
        return self._reducer(func)

    def sum(self) -> DataArray:
        """Sum of each window."""
        return self.reduce("sum")

    def mean(self) -> DataArray:
        """Mean of each window (NaN skipped)."""
        return self.reduce("mean")

    def min(self) -> DataArray:
        """Minimum of each window."""
        return self.reduce("min")

    def max(self) -> DataArray:
        """Maximum of each window."""
        return self.reduce("max")

    def std(self) -> DataArray:
        """Standard deviation (ddof 0) of each window."""
        return self.reduce("std")

    def var(self) -> DataArray:
        """Variance (ddof 0) of each window."""
        return self.reduce("var")

    def count(self) -> DataArray:
        """Non-NaN values in each window."""
        return self.reduce("count")


class DataArrayRolling(_WindowReductions):
    """A moving window along one dimension (``da.rolling(time=7)``), ending at each
    position."""

    def __init__(self, array: DataArray, native: NativeRolling) -> None:
        super().__init__(lambda func: array._new(native.reduce(func)))


class DataArrayCoarsen(_WindowReductions):
    """Fixed windows along one or more dimensions (``da.coarsen(lat=2, lon=2)``); over
    several dimensions ``std`` and ``var`` are refused (they do not chain)."""

    #: Reductions that can run one dimension after another and give the same result.
    _CHAINED = ("sum", "min", "max", "count", "prod")

    def __init__(self, array: DataArray, windows: dict[str, int]) -> None:
        super().__init__(self._reduce)
        self._array = array
        self._windows = windows

    def _chain(self, func: str) -> DataArray:
        out = self._array
        for name, window in self._windows.items():
            out = out._new(out._native.coarsen(name, window).reduce(func))
            # Counts of the first dimension's windows add up over the next ones.
            func = "sum" if func == "count" else func
        return out

    def _reduce(self, func: str) -> DataArray:
        if len(self._windows) == 1:
            return self._chain(func)
        if func in self._CHAINED:
            return self._chain(func)
        if func == "mean":
            return self._chain("sum") / self._chain("count")
        raise ValueError(f"coarsen over several dimensions supports {self._CHAINED} and mean, not {func}")
