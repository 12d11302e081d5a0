"""Shoal: a distributed dataframe and chunked-array engine on Apache Arrow and DataFusion.

::

    import shoal
    s = shoal.Session()                      # embedded; shoal.Session("http://host:7070") for a cluster
    trips = s.read_parquet("trips.parquet")
    trips.query("fare > 10").groupby("zone").agg(n=("fare", "count")).to_pandas()
    s.sql("select zone, avg(fare) from trips group by zone")   # after s.register("trips", ...)

Module-level ``sql``, ``read_parquet``, ``read_csv``, ``from_arrow``, ``from_pandas``,
``from_polars``, ``open_zarr`` and ``from_xarray`` use :func:`default_session`;
``shoal.array`` holds the chunked-array constructors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import array, errors, functions
from ._array import Array
from ._dataset import Dataset, DatasetGroups
from ._labeled import DataArray, DataArrayCoarsen, DataArrayGroupBy, DataArrayRolling
from ._expr import Expr, col, lit
from ._frame import DataFrame, GroupBy, options
from ._native import __version__
from ._session import Client, Session, connect, default_session, set_default_session
from .gateway import Gateway, GatewayCluster
from .errors import (
    CancelledError,
    FetchFailedError,
    InputError,
    InternalError,
    PlanningError,
    ResourcesError,
    ShoalError,
    ShoalIOError,
    WorkerLostError,
)

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping

    import pandas
    import polars
    import xarray

__all__ = [
    "Array",
    "CancelledError",
    "Client",
    "DataArray",
    "DataArrayCoarsen",
    "DataArrayGroupBy",
    "DataArrayRolling",
    "DataFrame",
    "Dataset",
    "DatasetGroups",
    "FetchFailedError",
    "Gateway",
    "GatewayCluster",
    "GroupBy",
    "InputError",
    "InternalError",
    "PlanningError",
    "ResourcesError",
    "Session",
    "ShoalError",
    "ShoalIOError",
    "Expr",
    "WorkerLostError",
    "__version__",
    "array",
    "connect",
    "default_session",
    "col",
    "errors",
    "from_arrow",
    "from_xarray",
    "from_pandas",
    "from_polars",
    "functions",
    "lit",
    "open_zarr",
    "options",
    "read_csv",
    "read_parquet",
    "set_default_session",
    "sql",
]


def sql(query: str) -> DataFrame:
    """:meth:`Session.sql` on the default session."""
    return default_session().sql(query)


def read_parquet(path: str | os.PathLike[str]) -> DataFrame:
    """:meth:`Session.read_parquet` on the default session."""
    return default_session().read_parquet(path)


def read_csv(path: str | os.PathLike[str]) -> DataFrame:
    """:meth:`Session.read_csv` on the default session."""
    return default_session().read_csv(path)


def from_arrow(data: Any) -> DataFrame:
    """:meth:`Session.from_arrow` on the default session."""
    return default_session().from_arrow(data)


def from_pandas(frame: pandas.DataFrame) -> DataFrame:
    """:meth:`Session.from_pandas` on the default session."""
    return default_session().from_pandas(frame)


def from_polars(frame: polars.DataFrame) -> DataFrame:
    """:meth:`Session.from_polars` on the default session."""
    return default_session().from_polars(frame)


def open_zarr(store: str | os.PathLike[str], chunks: int | Mapping[str, int] | None = None) -> Dataset:
    """:meth:`Session.open_zarr` on the default session."""
    return default_session().open_zarr(store, chunks)


def from_xarray(data: xarray.DataArray | xarray.Dataset, chunks: int | Mapping[str, int] | None = None) -> Any:
    """:meth:`Session.from_xarray` on the default session."""
    return default_session().from_xarray(data, chunks)
