""":class:`Dataset`: named :class:`DataArray` variables sharing dimensions, as xarray's
``Dataset``; opened from Zarr with :meth:`Session.open_zarr`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _native
from ._labeled import (
    DataArray,
    Dims,
    _attrs_json,
    _html_block,
    _indexed_frame,
    _merge_kwargs,
    _one_dim,
)

if TYPE_CHECKING:
    import pandas
    import xarray

    from ._frame import DataFrame
    from ._session import Session


class Dataset:
    """Named lazy variables sharing dimensions. ``ds["t2m"]`` (or ``ds.t2m``) is a
    :class:`DataArray`; ``isel``, ``sel``, ``chunk`` and reductions apply to every
    variable that has the dimensions named; ``to_zarr``, ``to_xarray`` and
    ``to_dataframe`` run the whole dataset as one set of jobs."""

    def __init__(
        self,
        data_vars: Mapping[str, DataArray | tuple[Sequence[str], Any]] | None = None,
        coords: Mapping[str, Any] | None = None,
        attrs: Mapping[str, Any] | None = None,
        *,
        session: Session | None = None,
    ) -> None:
        variables: dict[str, DataArray] = {}
        for name, value in (data_vars or {}).items():
            if isinstance(value, DataArray):
                var = value
            else:
                dims, values = value
                var = DataArray(values, dims=dims, session=session)
            if coords:
                own = {k: v for k, v in coords.items() if _coord_dim(k, v) in var.dims}
                var = var.assign_coords(own)
            variables[name] = var.rename(name)
        self._vars = variables
        self._attrs = dict(attrs or {})

    @classmethod
    def _from_native(cls, native: _native.Dataset, session: Session) -> Dataset:
        attrs = json.loads(native.attrs_json())
        variables = {name: DataArray._wrap(native.var(name), session) for name in native.names()}
        return cls(variables, attrs=attrs)

    def _build(self) -> _native.Dataset:
        if not self._vars:
            raise ValueError("the dataset has no variables")
        items = [(name, var._native) for name, var in self._vars.items()]
        return _native.Dataset.build(items, _attrs_json(self._attrs))

    def _session(self) -> Session:
        return next(iter(self._vars.values()))._session

    # --- what it is -------------------------------------------------------------------

    @property
    def data_vars(self) -> dict[str, DataArray]:
        """The variables by name."""
        return dict(self._vars)

    @property
    def sizes(self) -> dict[str, int]:
        """Length of each dimension, in order of first appearance."""
        out: dict[str, int] = {}
        for var in self._vars.values():
            for d, n in var.sizes.items():
                out.setdefault(d, n)
        return out

    @property
    def dims(self) -> tuple[str, ...]:
        """Dimension names, in order of first appearance (lengths are in ``sizes``)."""
        return tuple(self.sizes)

    @property
    def coords(self) -> dict[str, Any]:
        """Every variable's coordinates by name."""
        out: dict[str, Any] = {}
        for var in self._vars.values():
            for name, coord in var.coords.items():
                out.setdefault(name, coord)
        return out

    @property
    def attrs(self) -> dict[str, Any]:
        """The dataset's attributes."""
        return self._attrs

    @property
    def nbytes(self) -> int:
        """Bytes the variables take once computed."""
        return sum(v.nbytes for v in self._vars.values())

    @property
    def chunksizes(self) -> dict[str, tuple[int, ...]]:
        """Chunk lengths per dimension (from the first variable that has it)."""
        out: dict[str, tuple[int, ...]] = {}
        for var in self._vars.values():
            for d, c in var.chunksizes.items():
                out.setdefault(d, c)
        return out

    def __getitem__(self, key: str | Sequence[str]) -> Any:
        """A variable or coordinate by name; a list of names gives a smaller Dataset."""
        if isinstance(key, str):
            if key in self._vars:
                return self._vars[key]
            coords = self.coords
            if key in coords:
                return coords[key]
            raise KeyError(f"no variable '{key}'; the dataset has {list(self._vars)}")
        return Dataset({k: self[k] for k in key}, attrs=self._attrs)

    def __getattr__(self, name: str) -> DataArray:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            item: DataArray = self[name]
        except KeyError:
            raise AttributeError(f"'Dataset' object has no attribute '{name}'") from None
        return item

    def __contains__(self, key: object) -> bool:
        return key in self._vars

    def __iter__(self) -> Iterator[str]:
        return iter(self._vars)

    def __len__(self) -> int:
        return len(self._vars)

    def keys(self) -> list[str]:
        """Variable names."""
        return list(self._vars)

    def items(self) -> list[tuple[str, DataArray]]:
        """(name, variable) pairs."""
        return list(self._vars.items())

    def __repr__(self) -> str:
        sizes = ", ".join(f"{d}: {n}" for d, n in self.sizes.items())
        lines = [f"<shoal.Dataset> Dimensions: ({sizes})", "Data variables:"]
        for name, var in self._vars.items():
            lines.append(f"    {name:<8} ({', '.join(var.dims)}) {var.dtype} chunks={var.chunks}")
        if self._attrs:
            lines.append("Attributes:")
            lines.extend(f"    {k}: {v}" for k, v in self._attrs.items())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        coords: dict[str, tuple[str, np.ndarray[Any, Any]]] = {}
        for var in self._vars.values():
            for name, value in var._coord_values().items():
                coords.setdefault(name, value)
        rows = [(n, v.dims, v.shape, v.dtype, v.chunks) for n, v in self._vars.items()]
        return _html_block("shoal.Dataset", rows, coords, self._attrs)

    # --- per variable -----------------------------------------------------------------

    def map(self, func: Callable[[DataArray], DataArray]) -> Dataset:
        """``func`` applied to every variable."""
        return Dataset({k: func(v) for k, v in self._vars.items()}, attrs=self._attrs)

    def _each(self, dims: Sequence[str], func: Callable[[DataArray], DataArray]) -> Dataset:
        """``func`` applied to the variables that have every dimension in ``dims``; the
        others are kept as they are."""
        for d in dims:
            if d not in self.sizes:
                raise ValueError(f"dimension '{d}' is not one of {self.dims}")
        out = {
            k: func(v) if all(d in v.dims for d in dims) else v for k, v in self._vars.items()
        }
        return Dataset(out, attrs=self._attrs)

    def isel(self, indexers: Mapping[str, Any] | None = None, **kwargs: Any) -> Dataset:
        """Selection by position, for each variable along the dimensions it has."""
        chosen = _merge_kwargs(indexers, kwargs, "isel")
        self._check_dims(chosen)
        return self.map(lambda v: v.isel({d: k for d, k in chosen.items() if d in v.dims}))

    def sel(
        self, indexers: Mapping[str, Any] | None = None, method: str | None = None, **kwargs: Any
    ) -> Dataset:
        """Selection by label, for each variable along the dimensions it has."""
        chosen = _merge_kwargs(indexers, kwargs, "sel")
        self._check_dims(chosen)
        return self.map(
            lambda v: v.sel({d: k for d, k in chosen.items() if d in v.dims}, method=method)
        )

    def chunk(self, chunks: int | Mapping[str, int] | None = None, **kwargs: int) -> Dataset:
        """Every variable in other chunks (see :meth:`DataArray.chunk`)."""
        if isinstance(chunks, int):
            return self.map(lambda v: v.chunk(chunks))
        by_dim = _merge_kwargs(chunks, kwargs, "chunk")
        return self.map(lambda v: v.chunk({d: n for d, n in by_dim.items() if d in v.dims}))

    def _check_dims(self, chosen: Mapping[str, Any]) -> None:
        for d in chosen:
            if d not in self.sizes:
                raise ValueError(f"dimension '{d}' is not one of {self.dims}")

    def _reduce(self, func: str, dim: Dims, skipna: bool | None) -> Dataset:
        if dim is None or dim is Ellipsis:
            return self.map(lambda v: v.reduce(func, None, skipna=skipna))
        names = [dim] if isinstance(dim, str) else list(dim)
        self._check_dims({d: None for d in names})
        return self.map(
            lambda v: v.reduce(func, [d for d in names if d in v.dims], skipna=skipna)
            if any(d in v.dims for d in names)
            else v
        )

    def sum(self, dim: Dims = None, *, skipna: bool | None = None) -> Dataset:
        """Sum of each variable over ``dim``."""
        return self._reduce("sum", dim, skipna)

    def mean(self, dim: Dims = None, *, skipna: bool | None = None) -> Dataset:
        """Mean of each variable over ``dim``."""
        return self._reduce("mean", dim, skipna)

    def min(self, dim: Dims = None, *, skipna: bool | None = None) -> Dataset:
        """Minimum of each variable over ``dim``."""
        return self._reduce("min", dim, skipna)

    def max(self, dim: Dims = None, *, skipna: bool | None = None) -> Dataset:
        """Maximum of each variable over ``dim``."""
        return self._reduce("max", dim, skipna)

    def std(self, dim: Dims = None, *, skipna: bool | None = None) -> Dataset:
        """Standard deviation (ddof 0) of each variable over ``dim``."""
        return self._reduce("std", dim, skipna)

    def var(self, dim: Dims = None, *, skipna: bool | None = None) -> Dataset:
        """Variance (ddof 0) of each variable over ``dim``."""
        return self._reduce("var", dim, skipna)

    def count(self, dim: Dims = None) -> Dataset:
        """Non-NaN cells of each variable over ``dim``."""
        return self._reduce("count", dim, None)

    # --- grouped and windowed, per variable ---------------------------------------------

    def _split(self, dim: str, make: Callable[[DataArray], Any]) -> DatasetGroups:
        """``make`` applied to every variable along ``dim``; the others pass through."""
        if dim not in self.sizes:
            raise ValueError(f"dimension '{dim}' is not one of {self.dims}")
        parts = {k: make(v) for k, v in self._vars.items() if dim in v.dims}
        kept = {k: v for k, v in self._vars.items() if dim not in v.dims}
        return DatasetGroups(parts, kept, self._attrs)

    def groupby(self, group: str) -> DatasetGroups:
        """Every variable grouped as :meth:`DataArray.groupby` groups it (variables without
        the grouped dimension pass through reductions unchanged)."""
        coord = group.split(".", 1)[0]
        owner = next((v for v in self._vars.values() if coord in v._coord_values()), None)
        if owner is None:
            raise ValueError(f"no coordinate '{coord}' to group by in the dataset")
        dim = owner._coord_values()[coord][0]
        return self._split(dim, lambda v: v.groupby(group))

    def resample(self, indexer: Mapping[str, str] | None = None, **kwargs: str) -> DatasetGroups:
        """Every variable along the datetime dimension binned as :meth:`DataArray.resample`."""
        dim, freq = _one_dim(indexer, kwargs, "resample")
        return self._split(dim, lambda v: v.resample({dim: freq}))

    def rolling(
        self, dim: Mapping[str, int] | None = None, min_periods: int | None = None, **kwargs: int
    ) -> DatasetGroups:
        """A moving window over every variable along the dimension (see
        :meth:`DataArray.rolling`)."""
        name, window = _one_dim(dim, kwargs, "rolling")
        return self._split(name, lambda v: v.rolling({name: window}, min_periods=min_periods))

    def coarsen(self, dim: Mapping[str, int] | None = None, **kwargs: int) -> DatasetGroups:
        """Fixed windows over every variable (see :meth:`DataArray.coarsen`); variables
        must have every dimension named."""
        windows = _merge_kwargs(dim, kwargs, "coarsen")
        first = next(iter(windows))
        return self._split(first, lambda v: v.coarsen(windows))

    def compute(self) -> Dataset:
        """Every variable computed and kept in the workers' memory."""
        return self.map(lambda v: v.compute())

    persist = compute
    load = compute

    # --- out --------------------------------------------------------------------------

    def to_xarray(self) -> xarray.Dataset:
        """Runs the jobs; an in-memory ``xarray.Dataset`` with the same labels."""
        import xarray

        return xarray.Dataset(
            {name: var.to_xarray() for name, var in self._vars.items()}, attrs=self._attrs
        )

    def to_lazy_frame(self) -> DataFrame:
        """A lazy Shoal frame: one row per cell of the union of the dimensions, a column per
        dimension and one per variable (broadcast over the dimensions it lacks)."""
        from ._frame import DataFrame

        return DataFrame(self._build().to_frame(), self._session())

    def to_dataframe(self) -> pandas.DataFrame:
        """The cells as pandas indexed by the dimensions, a column per variable (xarray's
        ``Dataset.to_dataframe``)."""
        return _indexed_frame(self.to_lazy_frame(), self.dims)

    def to_zarr(self, store: str, *, zarr_format: int = 3) -> None:
        """Writes the dataset as a Zarr group (v2 or v3, zstd chunks, coordinates as 1-d
        arrays, datetimes CF-encoded) that xarray and zarr-python read. Nothing appears at
        ``store`` until every chunk is written; an existing store is refused."""
        self._build().to_zarr(str(store), zarr_format)


def _coord_dim(name: str, value: Any) -> str:
    return str(value[0]) if isinstance(value, tuple) else name


class DatasetGroups:
    """A Dataset's variables grouped or windowed along one dimension: each reduction (and,
    for groupby and resample, arithmetic with a per-group Dataset) gives a Dataset, the
    variables without that dimension passing through unchanged."""

    def __init__(self, parts: dict[str, Any], kept: dict[str, DataArray], attrs: dict[str, Any]) -> None:
        self._parts = parts
        self._kept = kept
        self._attrs = attrs

    def reduce(self, func: str) -> Dataset:
        """The reduction ``func`` of every variable's groups or windows."""
        out = {k: p.reduce(func) for k, p in self._parts.items()}
        return Dataset({**out, **self._kept}, attrs=self._attrs)

    def sum(self) -> Dataset:
        """Sums."""
        return self.reduce("sum")

    def mean(self) -> Dataset:
        """Means (NaN skipped)."""
        return self.reduce("mean")

    def min(self) -> Dataset:
        """Minimums."""
        return self.reduce("min")

    def max(self) -> Dataset:
        """Maximums."""
        return self.reduce("max")

    def std(self) -> Dataset:
        """Standard deviations (ddof 0)."""
        return self.reduce("std")

    def var(self) -> Dataset:
        """Variances (ddof 0)."""
        return self.reduce("var")

    def count(self) -> Dataset:
        """Non-NaN cells."""
        return self.reduce("count")

    def _binary(self, op: str, other: object) -> Dataset:
        if not isinstance(other, Dataset):
            return NotImplemented  # type: ignore[no-any-return]
        out = {}
        for name, part in self._parts.items():
            if name not in other.data_vars:
                raise ValueError(f"the per-group dataset has no variable '{name}'")
            out[name] = part._binary(op, other.data_vars[name])
        return Dataset({**out, **self._kept}, attrs=self._attrs)

    def __add__(self, other: object) -> Dataset:
        return self._binary("add", other)

    def __sub__(self, other: object) -> Dataset:
        return self._binary("sub", other)

    def __mul__(self, other: object) -> Dataset:
        return self._binary("mul", other)

    def __truediv__(self, other: object) -> Dataset:
        return self._binary("div", other)
