"""Sessions: Shoal embedded in this process, or connected to a ``shoal scheduler``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _native, _progress
from ._array import ArrayModule
from ._dataset import Dataset
from ._frame import DataFrame
from ._labeled import DataArray
from .errors import InputError

if TYPE_CHECKING:
    import pandas
    import polars
    import xarray


class Session:
    """A Shoal session.

    ``Session()`` runs the engine embedded in this process (one worker per core, the
    workers sharing half of the machine's memory); ``Session("http://host:7070")``
    connects to a ``shoal scheduler``. The same SQL and DataFrame code runs on both.

    Keyword arguments set Shoal settings (see the README's Settings table):
    ``workers`` (``n_workers`` as in Dask), ``memory_limit`` per worker (``"2GiB"`` or
    bytes), ``partitions`` per exchange, and any ``shoal.*`` key in ``config``.
    ``token`` and ``tls_ca`` reach a secured cluster. ``dashboard="127.0.0.1:0"`` serves
    the dashboard API and metrics (port 0: a free port); ``dashboard_link`` says where.

    ``progress`` shows task counts while a call runs: by default a ``tqdm.auto`` bar when
    stderr is a terminal or in a notebook (and tqdm is installed), nothing otherwise;
    ``True``/``False`` force it; a callable receives ``(tasks_done, tasks_total)``.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int | None = None,
        n_workers: int | None = None,
        memory_limit: int | str | None = None,
        partitions: int | None = None,
        token: str | None = None,
        tls_ca: str | None = None,
        config: dict[str, Any] | None = None,
        progress: bool | Callable[[int, int], None] | None = None,
        dashboard: str | None = None,
    ) -> None:
        if workers is not None and n_workers is not None and workers != n_workers:
            raise InputError(f"workers={workers} and n_workers={n_workers} disagree")
        count = workers if workers is not None else n_workers
        limit = None if memory_limit is None else str(memory_limit)
        settings = {k: str(v) for k, v in (config or {}).items()}
        if dashboard is not None:
            settings["dashboard.bind"] = dashboard
        self._native = _native.Session(
            address,
            count,
            limit,
            partitions,
            token,
            tls_ca,
            settings,
            _progress.reporter(progress),
        )
        self._pid = os.getpid()

    @property
    def _live(self) -> _native.Session:
        """The native session, refused in a forked child (its threads did not fork)."""
        if os.getpid() != self._pid:
            raise InputError(
                f"this session was created in process {self._pid}; a forked child "
                "cannot use it: create a new shoal.Session in the child"
            )
        return self._native

    # --- life -------------------------------------------------------------------------

    @property
    def address(self) -> str | None:
        """The scheduler's URL, or None when embedded."""
        return self._native.address

    @property
    def dashboard_link(self) -> str | None:
        """The URL of the dashboard this session serves (``dashboard=``), or None."""
        return self._native.dashboard_link

    @property
    def embedded(self) -> bool:
        """Whether the engine runs in this process."""
        return self._native.address is None

    def close(self) -> None:
        """Stops an embedded session's workers, or lets go of the cluster."""
        self._native.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._native.closed:
            return "shoal.Session(closed)"
        workers = sum(1 for w in self.status()["workers"] if w["alive"])
        where = "embedded" if self.embedded else f"connected to {self.address}"
        return f"shoal.Session({where}, {workers} workers)"

    def _repr_html_(self) -> str:
        return f"<div><b>{self!r}</b></div>"

    def status(self) -> dict[str, Any]:
        """Workers, jobs and last activity (``shoal status --format json``'s schema)."""
        status: dict[str, Any] = json.loads(self._live.status_json())
        return status

    def cancel(self, job: int) -> bool:
        """Cancels job ``job`` (ids from ``status()``) on every worker."""
        return self._live.cancel(job)

    def settings(self) -> dict[str, str]:
        """Every ``shoal.*`` setting as the session resolved it."""
        return dict(self._live.settings())

    # --- data -------------------------------------------------------------------------

    @property
    def array(self) -> ArrayModule:
        """Array constructors on this session: ``s.array.from_numpy(x, chunks=1000)``,
        ``ones``, ``zeros``, ``full``, ``random``, ``arange``, ``tensordot``."""
        return ArrayModule(self)

    def open_zarr(
        self, store: str | os.PathLike[str], chunks: int | Mapping[str, int] | None = None
    ) -> Dataset:
        """A Zarr group (v2 or v3; a path or object-store URL) as a lazy :class:`Dataset`,
        with xarray's conventions: dimension names from ``dimension_names`` or
        ``_ARRAY_DIMENSIONS``, dimension coordinates read now, CF times and
        ``scale_factor``/``add_offset``/``_FillValue`` decoded. Variables keep the store's
        chunks unless ``chunks`` (one length, or lengths by dimension) says otherwise."""
        native = self._live.open_zarr(os.fspath(store))
        ds = Dataset._from_native(native, self)
        return ds if chunks is None else ds.chunk(chunks)

    def from_xarray(
        self,
        data: xarray.DataArray | xarray.Dataset,
        chunks: int | Mapping[str, int] | None = None,
    ) -> Any:
        """An xarray object's values (loaded into memory) with its dimension coordinates
        and attributes, as a Shoal :class:`DataArray` or :class:`Dataset`."""
        import xarray

        def one(da: xarray.DataArray) -> DataArray:
            coords = {
                str(name): (str(c.dims[0]), c.values)
                for name, c in da.coords.items()
                if c.ndim == 1 and name in da.dims
            }
            size = chunks if isinstance(chunks, int) else None
            out = DataArray(
                da.values,
                coords=coords,
                dims=[str(d) for d in da.dims],
                name=None if da.name is None else str(da.name),
                attrs=da.attrs,
                chunks=size,
                session=self,
            )
            return out if chunks is None or isinstance(chunks, int) else out.chunk(chunks)

        if isinstance(data, xarray.Dataset):
            return Dataset(
                {str(k): one(v) for k, v in data.data_vars.items()}, attrs=data.attrs
            )
        return one(data)

    def sql(self, query: str) -> DataFrame:
        """One SQL statement: a lazy frame for a query; DDL and ``SET`` run at once."""
        return DataFrame(self._live.sql(query), self)

    def table(self, name: str) -> DataFrame:
        """A registered table as a lazy frame."""
        return DataFrame(self._live.table(name), self)

    def tables(self) -> list[str]:
        """Names of the registered tables."""
        return self._live.table_names()

    def register(self, name: str, data: object) -> None:
        """Makes ``data`` queryable as table ``name``: a path or URL (Parquet, CSV,
        a directory of them, a Zarr store) or any frame (Shoal, pandas, polars,
        pyarrow)."""
        if isinstance(data, (str, os.PathLike)):
            self._live.register(name, os.fspath(data))
            return
        frame = data if isinstance(data, DataFrame) else self.from_arrow(data)
        # As a view: registering does not compute the frame.
        self._live.register_frame(name, frame._native)

    def read_parquet(self, path: str | os.PathLike[str]) -> DataFrame:
        """A lazy frame over Parquet files (a file, directory, glob prefix or URL)."""
        return DataFrame(self._live.read_parquet(os.fspath(path)), self)

    def read_csv(self, path: str | os.PathLike[str]) -> DataFrame:
        """A lazy frame over CSV files with a header row."""
        return DataFrame(self._live.read_csv(os.fspath(path)), self)

    def from_arrow(self, data: object) -> DataFrame:
        """A frame over anything that speaks the Arrow PyCapsule interface
        (``__arrow_c_stream__`` or ``__arrow_c_array__``): pyarrow tables and batches,
        polars, pandas >= 2.2, DuckDB results. Buffers are shared, not copied."""
        return DataFrame(self._live.read_arrow(data), self)

    def from_pandas(self, frame: pandas.DataFrame) -> DataFrame:
        """A frame over a pandas DataFrame (its index is dropped)."""
        import pyarrow as pa

        return self.from_arrow(pa.Table.from_pandas(frame, preserve_index=False))

    def from_polars(self, frame: polars.DataFrame) -> DataFrame:
        """A frame over a polars DataFrame (buffers shared)."""
        return self.from_arrow(frame.to_arrow())


Client = Session
"""Dask's name for a session."""


def connect(address: str, **kwargs: Any) -> Session:
    """A session on the cluster whose scheduler is at ``address``."""
    return Session(address, **kwargs)


_default: Session | None = None


def default_session() -> Session:
    """The session module-level functions (``shoal.sql`` ...) use: embedded, started on
    first use, or set with :func:`set_default_session`."""
    global _default
    if _default is None or _default._native.closed or _default._pid != os.getpid():
        _default = Session()
    return _default


def set_default_session(session: Session) -> None:
    """Makes ``session`` the one module-level functions use."""
    global _default
    _default = session
