//! `shoal._native.DataFrame`: a lazy frame. Verbs build the plan; `to_arrow`, `count`,
//! `to_parquet`… run it as one job. Expressions arrive as SQL text, parsed against the
//! frame's schema.

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3_arrow::{PySchema, PyTable};
use shoal::How;

use crate::{Reporter, py_err, wait};

/// A lazy frame (see the `shoal.DataFrame` wrapper for the documented API).
#[pyclass(module = "shoal._native", frozen)]
pub struct DataFrame {
    inner: shoal::DataFrame,
    reporter: Arc<Reporter>,
}

impl DataFrame {
    pub(crate) fn new(inner: shoal::DataFrame, reporter: &Arc<Reporter>) -> Self {
        Self {
            inner,
            reporter: Arc::clone(reporter),
        }
    }

    /// The frame as a table provider (a view: reading it runs the frame's plan).
    pub(crate) fn view(&self) -> Arc<dyn shoal::datafusion::catalog::TableProvider> {
        self.inner.inner().clone().into_view()
    }

    fn with(&self, next: shoal::Result<shoal::DataFrame>) -> PyResult<Self> {
        next.map(|frame| Self::new(frame, &self.reporter))
            .map_err(py_err)
    }

    fn expr(&self, sql: &str) -> PyResult<shoal::datafusion::logical_expr::Expr> {
        self.inner
            .inner()
            .parse_sql_expr(sql)
            .map_err(|e| py_err(e.into()))
    }
}

fn how(name: &str) -> PyResult<How> {
    Ok(match name {
        "inner" => How::Inner,
        "left" => How::Left,
        "right" => How::Right,
        "outer" | "full" => How::Outer,
        other => {
            return Err(PyValueError::new_err(format!(
                "how='{other}': expected 'inner', 'left', 'right' or 'outer'"
            )));
        }
    })
}

#[pymethods]
impl DataFrame {
    /// Column names.
    #[getter]
    fn columns(&self) -> Vec<String> {
        self.inner.columns()
    }

    /// The schema as a `pyarrow.Schema`.
    #[getter]
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PySchema::new(self.inner.schema()).into_pyarrow(py)
    }

    /// Runs the frame and returns its rows as a `pyarrow.Table` (buffers handed over,
    /// not copied).
    fn to_arrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let frame = self.inner.clone();
        let schema = frame.schema();
        let batches = wait(py, &self.reporter, async move { frame.collect().await })?;
        PyTable::try_new(batches, schema)?.into_pyarrow(py)
    }

    /// Number of rows (runs a job).
    fn count(&self, py: Python<'_>) -> PyResult<usize> {
        let frame = self.inner.clone();
        wait(py, &self.reporter, async move { frame.count().await })
    }

    /// The logical, physical and stage plans as text.
    fn explain(&self, py: Python<'_>) -> PyResult<String> {
        let frame = self.inner.clone();
        wait(py, &self.reporter, async move { frame.explain().await })
    }

    /// The named columns.
    fn select(&self, columns: Vec<String>) -> PyResult<Self> {
        self.with(self.inner.select(columns))
    }

    /// Rows where the SQL condition holds.
    fn query(&self, condition: &str) -> PyResult<Self> {
        self.with(self.inner.query(condition))
    }

    /// Adds or replaces column `name` with a SQL expression.
    fn assign(&self, name: &str, expression: &str) -> PyResult<Self> {
        let expr = self.expr(expression)?;
        self.with(self.inner.assign(name, expr))
    }

    /// Groups by `by` and computes `aggregates`: (output name, SQL aggregate expression).
    fn groupby_agg(&self, by: Vec<String>, aggregates: Vec<(String, String)>) -> PyResult<Self> {
        let mut exprs = Vec::with_capacity(aggregates.len());
        for (name, sql) in &aggregates {
            exprs.push(self.expr(sql)?.alias(name));
        }
        let grouped = self.inner.groupby(by).map_err(py_err)?;
        self.with(grouped.agg(exprs))
    }

    /// Sorted by `by`, each column ascending or not.
    fn sort_values(&self, by: Vec<String>, ascending: Vec<bool>) -> PyResult<Self> {
        let by: Vec<&str> = by.iter().map(String::as_str).collect();
        self.with(self.inner.sort_values_by(&by, &ascending))
    }

    /// The first `n` rows, lazily.
    fn limit(&self, n: usize) -> PyResult<Self> {
        self.with(self.inner.head(n))
    }

    /// Rows distinct over `subset` (all columns when None).
    #[pyo3(signature = (subset=None))]
    fn drop_duplicates(&self, subset: Option<Vec<String>>) -> PyResult<Self> {
        let subset: Option<Vec<&str>> = subset
            .as_ref()
            .map(|s| s.iter().map(String::as_str).collect());
        self.with(self.inner.drop_duplicates(subset.as_deref()))
    }

    /// Columns renamed by (old, new) pairs.
    fn rename(&self, mapping: Vec<(String, String)>) -> PyResult<Self> {
        let pairs: Vec<(&str, &str)> = mapping
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        self.with(self.inner.rename(&pairs))
    }

    /// Rows without nulls in `subset` (all columns when None).
    #[pyo3(signature = (subset=None))]
    fn dropna(&self, subset: Option<Vec<String>>) -> PyResult<Self> {
        let subset: Option<Vec<&str>> = subset
            .as_ref()
            .map(|s| s.iter().map(String::as_str).collect());
        self.with(self.inner.dropna(subset.as_deref()))
    }

    /// Nulls replaced by a SQL literal or expression.
    fn fillna(&self, value: &str) -> PyResult<Self> {
        let expr = self.expr(value)?;
        self.with(self.inner.fillna(expr))
    }

    /// Count, mean, std, min and max of the numeric columns.
    fn describe(&self) -> PyResult<Self> {
        self.with(self.inner.describe())
    }

    /// Each distinct value of `column` with its count, most frequent first.
    fn value_counts(&self, column: &str) -> PyResult<Self> {
        self.with(self.inner.value_counts(column))
    }

    /// Joined with `right` where `left_on[i] = right_on[i]`.
    fn merge(
        &self,
        right: &DataFrame,
        how_: &str,
        left_on: Vec<String>,
        right_on: Vec<String>,
    ) -> PyResult<Self> {
        let left_on: Vec<&str> = left_on.iter().map(String::as_str).collect();
        let right_on: Vec<&str> = right_on.iter().map(String::as_str).collect();
        self.with(
            self.inner
                .merge_on(&right.inner, how(how_)?, &left_on, &right_on),
        )
    }

    /// Writes the rows to `path` as `format` (`parquet`, or `csv` with a header);
    /// `partition_by` columns make a directory; an existing path is refused unless
    /// `overwrite`.
    fn write(
        &self,
        py: Python<'_>,
        format: &str,
        path: String,
        partition_by: Vec<String>,
        overwrite: bool,
    ) -> PyResult<()> {
        let parquet = match format {
            "parquet" => true,
            "csv" => false,
            other => {
                return Err(PyValueError::new_err(format!(
                    "format '{other}': expected 'parquet' or 'csv'"
                )));
            }
        };
        let frame = self.inner.clone();
        wait(py, &self.reporter, async move {
            let by: Vec<&str> = partition_by.iter().map(String::as_str).collect();
            if parquet {
                frame.to_parquet(&path, &by, overwrite).await
            } else {
                frame.to_csv(&path, &by, overwrite).await
            }
        })
    }
}
