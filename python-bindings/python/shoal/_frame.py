"""The lazy :class:`DataFrame`: pandas' verbs, Dask's laziness, Arrow underneath."""

from __future__ import annotations

import html
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from . import _native
from ._expr import Expr, sql_text

if TYPE_CHECKING:
    import pandas
    import polars

    from ._session import Session

#: pandas' aggregation names and the SQL aggregate each one is.
_AGGREGATES = {
    "sum": "sum",
    "mean": "avg",
    "avg": "avg",
    "min": "min",
    "max": "max",
    "count": "count",
    "std": "stddev",
    "var": "var_samp",
    "median": "median",
    "nunique": "count_distinct",
    "first": "first_value",
    "last": "last_value",
}


def _quoted(name: str) -> str:
    """``name`` as a SQL identifier that keeps its case and any odd characters."""
    return '"' + name.replace('"', '""') + '"'


def _names(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)


class Options:
    """Display options: ``shoal.options.preview_rows = 5`` makes a frame's notebook repr
    compute and show its first rows (0, the default, shows the schema only and computes
    nothing)."""

    preview_rows: int = 0


options = Options()


class DataFrame:
    """A lazy table. Verbs (``select``, ``query``, ``merge``, ...) build a plan and
    return a new frame at once; ``compute()``/``to_pandas()``, ``to_arrow()``,
    ``count()``, ``head()`` and the writers run it as one job on the session's workers.

    Expressions (``query``, ``assign``, ``fillna``) are SQL text evaluated against the
    frame's columns, e.g. ``df.query("x > 3 and y = 'a'")`` or
    ``df.assign(total="price * quantity")``.
    """

    def __init__(self, native: _native.DataFrame, session: Session) -> None:
        self._native = native
        self._session = session

    def _wrap(self, native: _native.DataFrame) -> DataFrame:
        return DataFrame(native, self._session)

    # --- what it is, without computing --------------------------------------------

    @property
    def columns(self) -> list[str]:
        """Column names."""
        return self._native.columns

    @property
    def schema(self) -> pa.Schema:
        """The schema, as a :class:`pyarrow.Schema`."""
        return self._native.schema

    @property
    def dtypes(self) -> dict[str, pa.DataType]:
        """Each column's Arrow type."""
        return {field.name: field.type for field in self.schema}

    def explain(self) -> str:
        """The logical, physical and stage plans as text."""
        return self._native.explain()

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}: {f.type}" for f in self.schema)
        return f"shoal.DataFrame({fields})"

    def _repr_html_(self) -> str:
        """The schema, computing nothing; with ``shoal.options.preview_rows`` set above 0,
        also that many rows (which runs a job)."""
        rows = "".join(
            f"<tr><td>{html.escape(f.name)}</td><td>{html.escape(str(f.type))}</td></tr>"
            for f in self.schema
        )
        schema = (
            "<div><b>shoal.DataFrame</b> (lazy; <code>head()</code> computes a preview)"
            f"<table><tr><th>column</th><th>type</th></tr>{rows}</table></div>"
        )
        n = options.preview_rows
        if n <= 0:
            return schema
        preview = self.limit(n).to_arrow().to_pandas().to_html(index=False)
        return schema + f"<div>first {n} rows:</div>" + preview

    # --- verbs (lazy) ---------------------------------------------------------------

    def select(self, *columns: str | Sequence[str]) -> DataFrame:
        """The named columns, in this order."""
        names: list[str] = []
        for c in columns:
            names.extend(_names(c) or [])
        return self._wrap(self._native.select(names))

    def __getitem__(self, key: str | Sequence[str] | Expr) -> DataFrame:
        """``df["a"]`` or ``df[["a", "b"]]``: the named columns; ``df[shoal.col("a") > 3]``:
        the rows where the condition holds."""
        if isinstance(key, Expr):
            return self.query(key)
        return self.select(key)

    def query(self, condition: str | Expr) -> DataFrame:
        """Rows where the condition holds: SQL text (pandas ``query``, in SQL syntax) or an
        expression."""
        text = condition.sql if isinstance(condition, Expr) else condition
        return self._wrap(self._native.query(text))

    filter = query

    def assign(self, **columns: str | Expr | int | float) -> DataFrame:
        """Adds or replaces columns, each an expression, SQL text or a number."""
        native = self._native
        for name, value in columns.items():
            text = value if isinstance(value, str) else sql_text(value)
            native = native.assign(name, text)
        return self._wrap(native)

    def groupby(self, by: str | Sequence[str]) -> GroupBy:
        """Groups rows by the ``by`` columns; finish with ``agg`` or a reduction."""
        return GroupBy(self, _names(by) or [])

    def merge(
        self,
        right: DataFrame,
        on: str | Sequence[str] | None = None,
        how: str = "inner",
        left_on: str | Sequence[str] | None = None,
        right_on: str | Sequence[str] | None = None,
    ) -> DataFrame:
        """Joins with ``right`` on equal keys (pandas ``merge``): ``how`` is inner, left,
        right or outer; the keys appear once, other clashing columns get ``_x``/``_y``."""
        left_keys = _names(left_on) or _names(on)
        right_keys = _names(right_on) or _names(on)
        if not left_keys or not right_keys:
            raise ValueError("merge needs on=, or left_on= and right_on=")
        return self._wrap(self._native.merge(right._native, how, left_keys, right_keys))

    def sort_values(
        self, by: str | Sequence[str], ascending: bool | Sequence[bool] = True
    ) -> DataFrame:
        """Sorted by ``by`` (nulls last)."""
        names = _names(by) or []
        if isinstance(ascending, bool):
            directions = [ascending] * len(names)
        else:
            directions = list(ascending)
        return self._wrap(self._native.sort_values(names, directions))

    def drop_duplicates(self, subset: str | Sequence[str] | None = None) -> DataFrame:
        """Rows distinct over ``subset`` (all columns by default)."""
        return self._wrap(self._native.drop_duplicates(_names(subset)))

    def rename(self, columns: Mapping[str, str]) -> DataFrame:
        """Columns renamed by ``{old: new}``."""
        return self._wrap(self._native.rename(list(columns.items())))

    def dropna(self, subset: str | Sequence[str] | None = None) -> DataFrame:
        """Rows without nulls in ``subset`` (all columns by default)."""
        return self._wrap(self._native.dropna(_names(subset)))

    def fillna(self, value: object) -> DataFrame:
        """Nulls replaced by ``value``: a number, a string or an expression."""
        return self._wrap(self._native.fillna(sql_text(value)))

    def describe(self) -> DataFrame:
        """Count, mean, std, min and max of the numeric columns."""
        return self._wrap(self._native.describe())

    def value_counts(self, column: str) -> DataFrame:
        """Each value of ``column`` with its count, most frequent first."""
        return self._wrap(self._native.value_counts(column))

    def limit(self, n: int) -> DataFrame:
        """The first ``n`` rows, lazily."""
        return self._wrap(self._native.limit(n))

    # --- results (compute) ----------------------------------------------------------

    def to_arrow(self) -> pa.Table:
        """Runs the frame; its rows as a :class:`pyarrow.Table` (buffers not copied)."""
        return self._native.to_arrow()

    def to_pandas(self, **kwargs: Any) -> pandas.DataFrame:
        """Runs the frame; its rows as pandas (``kwargs`` go to ``pyarrow.Table.to_pandas``,
        e.g. ``types_mapper=pandas.ArrowDtype`` for Arrow-backed columns)."""
        return self.to_arrow().to_pandas(**kwargs)

    compute = to_pandas

    def to_polars(self) -> polars.DataFrame:
        """Runs the frame; its rows as a polars DataFrame (buffers not copied)."""
        import polars

        frame = polars.from_arrow(self.to_arrow())
        assert isinstance(frame, polars.DataFrame)
        return frame

    def head(self, n: int = 5) -> pandas.DataFrame:
        """Computes the first ``n`` rows as pandas (as Dask's ``head`` does)."""
        return self.limit(n).to_pandas()

    def count(self) -> int:
        """Number of rows (runs a job)."""
        return self._native.count()

    def __len__(self) -> int:
        return self.count()

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        """Runs the frame and yields its rows as :class:`pyarrow.RecordBatch` es."""
        return iter(self.to_arrow().to_batches())

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        """The Arrow PyCapsule stream of the frame's rows: ``pa.table(df)``,
        ``polars.DataFrame(df)`` and DuckDB read a frame directly."""
        table: Any = self.to_arrow()  # pyarrow's stubs leave this method untyped
        return table.__arrow_c_stream__(requested_schema)

    def to_parquet(
        self,
        path: str,
        partition_by: Iterable[str] = (),
        overwrite: bool = False,
    ) -> None:
        """Writes Parquet to ``path`` (a directory when partitioned); an existing path is
        refused unless ``overwrite``."""
        self._native.write("parquet", path, list(partition_by), overwrite)

    def to_csv(
        self,
        path: str,
        partition_by: Iterable[str] = (),
        overwrite: bool = False,
    ) -> None:
        """Writes CSV with a header row; as :meth:`to_parquet`."""
        self._native.write("csv", path, list(partition_by), overwrite)


class GroupBy:
    """Rows grouped by key columns (pandas ``df.groupby(by)``)."""

    def __init__(self, frame: DataFrame, by: list[str]) -> None:
        self._frame = frame
        self._by = by

    def agg(self, **named: tuple[str, str] | Expr) -> DataFrame:
        """Named aggregations, as pandas spells them:
        ``agg(total=("amount", "sum"), n=("id", "count"))``, or as expressions:
        ``agg(total=functions.sum(col("amount") * col("rate")))``."""
        aggregates = []
        for name, spec in named.items():
            if isinstance(spec, Expr):
                aggregates.append((name, spec.sql))
            else:
                column, how = spec
                aggregates.append((name, self._aggregate(column, how)))
        return self._frame._wrap(self._frame._native.groupby_agg(self._by, aggregates))

    @staticmethod
    def _aggregate(column: str, how: str) -> str:
        function = _AGGREGATES.get(how)
        if function is None:
            known = ", ".join(sorted(_AGGREGATES))
            raise ValueError(f"unknown aggregation '{how}'; known: {known}")
        if function == "count_distinct":
            return f"count(distinct {_quoted(column)})"
        return f"{function}({_quoted(column)})"

    def _all(self, how: str) -> DataFrame:
        others = [c for c in self._frame.columns if c not in self._by]
        return self.agg(**{c: (c, how) for c in others})

    def sum(self) -> DataFrame:
        """Sum of every other column per group."""
        return self._all("sum")

    def mean(self) -> DataFrame:
        """Mean of every other column per group."""
        return self._all("mean")

    def min(self) -> DataFrame:
        """Minimum of every other column per group."""
        return self._all("min")

    def max(self) -> DataFrame:
        """Maximum of every other column per group."""
        return self._all("max")

    def count(self) -> DataFrame:
        """Non-null count of every other column per group."""
        return self._all("count")

    def size(self) -> DataFrame:
        """Rows per group, as column ``size``."""
        aggregates = [("size", "count(*)")]
        return self._frame._wrap(self._frame._native.groupby_agg(self._by, aggregates))
