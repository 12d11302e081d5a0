//! `DataFrame`: pandas-like verbs over a lazy logical plan, run by Shoal's executor.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::can_cast_types;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::{Column, JoinType};
use datafusion::dataframe::DataFrame as DfFrame;
use datafusion::datasource::file_format::csv::CsvFormatFactory;
use datafusion::datasource::file_format::format_as_file_type;
use datafusion::datasource::file_format::parquet::ParquetFormatFactory;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::functions_aggregate::expr_fn::{avg, count, max, min, stddev};
use datafusion::logical_expr::{
    Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, cast, col, lit,
};
use datafusion::prelude::{coalesce, ident};
use futures::TryStreamExt;
use shoal_exec::JobHandle;
use shoal_io::Location;

use crate::error::{Error, Result};
use crate::session::Session;

/// How [`DataFrame::merge`] joins, as in pandas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Rows with a match on both sides.
    Inner,
    /// Every left row.
    Left,
    /// Every right row.
    Right,
    /// Every row of both sides.
    Outer,
}

/// A lazy table: verbs build a plan; `collect`, `show`, `to_parquet`… run it on the
/// session's cluster.
#[derive(Clone)]
pub struct DataFrame {
    session: Session,
    df: DfFrame,
    /// The SQL text the frame was planned from (its job's label); a frame derived from
    /// it by a verb is labelled by its plan instead.
    label: Option<Arc<str>>,
}

impl std::fmt::Debug for DataFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataFrame")
            .field("schema", self.df.schema())
            .finish()
    }
}

/// A grouping waiting for its aggregations ([`DataFrame::groupby`]).
#[derive(Debug, Clone)]
pub struct GroupBy {
    frame: DataFrame,
    keys: Vec<Expr>,
}

impl GroupBy {
    /// One row per group with `aggs` (e.g. `sum(col("x")).alias("total")`).
    pub fn agg(self, aggs: impl IntoIterator<Item = Expr>) -> Result<DataFrame> {
        let df = self
            .frame
            .df
            .clone()
            .aggregate(self.keys, aggs.into_iter().collect())?;
        Ok(self.frame.with(df))
    }
}

fn cols<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Vec<Expr> {
    names.into_iter().map(|n| ident(n.as_ref())).collect()
}

impl DataFrame {
    pub(crate) fn new(session: Session, df: DfFrame) -> Self {
        Self {
            session,
            df,
            label: None,
        }
    }

    /// The frame, its jobs labelled `label` (the SQL text it was planned from).
    pub(crate) fn labeled(mut self, label: String) -> Self {
        self.label = Some(label.into());
        self
    }

    /// The session the frame runs in.
    pub fn session(&self) -> &Session {
        &self.session
    }

    fn with(&self, df: DfFrame) -> Self {
        Self::new(self.session.clone(), df)
    }

    fn check_columns<S: AsRef<str>>(&self, names: &[S]) -> Result<()> {
        for name in names {
            let name = name.as_ref();
            if self.df.schema().field_with_unqualified_name(name).is_err() {
                let known: Vec<&str> = self
                    .df
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                return Err(Error::input(format!(
                    "no column '{name}'; columns are: {}",
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The underlying DataFusion frame (for APIs Shoal does not wrap).
    pub fn inner(&self) -> &DfFrame {
        &self.df
    }

    /// The logical plan.
    pub fn logical_plan(&self) -> &LogicalPlan {
        self.df.logical_plan()
    }

    /// Output schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.df.schema().as_arrow().clone())
    }

    /// Column names in order.
    pub fn columns(&self) -> Vec<String> {
        self.df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// Keeps the named columns (pandas `df[["a", "b"]]`).
    pub fn select<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) -> Result<Self> {
        let names: Vec<S> = names.into_iter().collect();
        self.check_columns(&names)?;
        Ok(self.with(self.df.clone().select(cols(names))?))
    }

    /// Computes the given expressions (SQL `SELECT expr, …`).
    pub fn select_exprs(&self, exprs: impl IntoIterator<Item = Expr>) -> Result<Self> {
        Ok(self.with(
            self.df
                .clone()
                .select(exprs.into_iter().collect::<Vec<Expr>>())?,
        ))
    }

    /// Keeps rows where `predicate` is true.
    pub fn filter(&self, predicate: Expr) -> Result<Self> {
        Ok(self.with(self.df.clone().filter(predicate)?))
    }

    /// Keeps rows matching a SQL boolean expression (pandas `query`), e.g. `"x > 3 and y = 'a'"`.
    pub fn query(&self, condition: &str) -> Result<Self> {
        let expr = self.df.parse_sql_expr(condition)?;
        self.filter(expr)
    }

    /// Adds or replaces column `name` (pandas `assign`).
    pub fn assign(&self, name: &str, expr: Expr) -> Result<Self> {
        Ok(self.with(self.df.clone().with_column(name, expr)?))
    }

    /// Same as [`DataFrame::assign`].
    pub fn with_column(&self, name: &str, expr: Expr) -> Result<Self> {
        self.assign(name, expr)
    }

    /// Groups by the named columns; finish with [`GroupBy::agg`].
    pub fn groupby<S: AsRef<str>>(&self, keys: impl IntoIterator<Item = S>) -> Result<GroupBy> {
        let keys: Vec<S> = keys.into_iter().collect();
        self.check_columns(&keys)?;
        Ok(GroupBy {
            frame: self.clone(),
            keys: cols(keys),
        })
    }

    /// Sorts by the named columns, all ascending or all descending (nulls last).
    pub fn sort_values<S: AsRef<str>>(
        &self,
        by: impl IntoIterator<Item = S>,
        ascending: bool,
    ) -> Result<Self> {
        let by: Vec<S> = by.into_iter().collect();
        self.check_columns(&by)?;
        let sort = by
            .iter()
            .map(|n| ident(n.as_ref()).sort(ascending, false))
            .collect();
        Ok(self.with(self.df.clone().sort(sort)?))
    }

    /// Sorts by several columns, each with its own direction (pandas
    /// `sort_values(by=[..], ascending=[..])`), nulls last.
    pub fn sort_values_by(&self, by: &[&str], ascending: &[bool]) -> Result<Self> {
        if by.len() != ascending.len() {
            return Err(Error::input(format!(
                "sort_values_by got {} columns but {} directions",
                by.len(),
                ascending.len()
            )));
        }
        self.check_columns(by)?;
        let sort = by
            .iter()
            .zip(ascending)
            .map(|(n, asc)| ident(*n).sort(*asc, false))
            .collect();
        Ok(self.with(self.df.clone().sort(sort)?))
    }

    /// The first `n` rows.
    pub fn head(&self, n: usize) -> Result<Self> {
        Ok(self.with(self.df.clone().limit(0, Some(n))?))
    }

    /// Removes duplicate rows; with `subset`, keeps the first row per distinct subset.
    pub fn drop_duplicates(&self, subset: Option<&[&str]>) -> Result<Self> {
        match subset {
            None => Ok(self.with(self.df.clone().distinct()?)),
            Some(keys) => {
                self.check_columns(keys)?;
                let all = cols(self.columns());
                Ok(self.with(self.df.clone().distinct_on(cols(keys.iter()), all, None)?))
            }
        }
    }

    /// Renames columns: `[("old", "new"), …]`.
    pub fn rename(&self, mapping: &[(&str, &str)]) -> Result<Self> {
        let olds: Vec<&str> = mapping.iter().map(|(o, _)| *o).collect();
        self.check_columns(&olds)?;
        let mut df = self.df.clone();
        for (old, new) in mapping {
            df = df.with_column_renamed(*old, new)?;
        }
        Ok(self.with(df))
    }

    /// Drops rows with a null in any column (or in `subset`).
    pub fn dropna(&self, subset: Option<&[&str]>) -> Result<Self> {
        let names: Vec<String> = match subset {
            Some(s) => {
                self.check_columns(s)?;
                s.iter().map(|n| n.to_string()).collect()
            }
            None => self.columns(),
        };
        let predicate = names
            .iter()
            .map(|n| ident(n).is_not_null())
            .reduce(Expr::and);
        match predicate {
            Some(p) => self.filter(p),
            None => Ok(self.clone()),
        }
    }

    /// Replaces nulls with `value` in every column whose type `value` can be cast to.
    pub fn fillna(&self, value: Expr) -> Result<Self> {
        let value_type = value.to_field(self.df.schema())?.1.data_type().clone();
        let exprs: Vec<Expr> = self
            .df
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let c = ident(f.name());
                if f.is_nullable() && can_cast_types(&value_type, f.data_type()) {
                    coalesce(vec![c, cast(value.clone(), f.data_type().clone())]).alias(f.name())
                } else {
                    c
                }
            })
            .collect();
        self.select_exprs(exprs)
    }

    /// Joins with `right` on equal key columns (pandas `merge(on=…)`): the keys appear
    /// once; other columns that clash get `_x` / `_y` suffixes.
    pub fn merge(&self, right: &DataFrame, how: How, on: &[&str]) -> Result<Self> {
        self.merge_on(right, how, on, on)
    }

    /// Joins with `right` where `left_on[i] = right_on[i]` (pandas `merge(left_on, right_on)`).
    pub fn merge_on(
        &self,
        right: &DataFrame,
        how: How,
        left_on: &[&str],
        right_on: &[&str],
    ) -> Result<Self> {
        if left_on.len() != right_on.len() || left_on.is_empty() {
            return Err(Error::input(
                "merge needs as many left keys as right keys, at least one",
            ));
        }
        self.check_columns(left_on)?;
        right.check_columns(right_on)?;
        let join_type = match how {
            How::Inner => JoinType::Inner,
            How::Left => JoinType::Left,
            How::Right => JoinType::Right,
            How::Outer => JoinType::Full,
        };
        let left = self.df.clone().alias("__left")?;
        let rhs = right.df.clone().alias("__right")?;
        let lkeys: Vec<Expr> = left_on
            .iter()
            .map(|k| col(Column::new(Some("__left"), *k)))
            .collect();
        let rkeys: Vec<Expr> = right_on
            .iter()
            .map(|k| col(Column::new(Some("__right"), *k)))
            .collect();
        let joined = left.join_on(
            rhs,
            join_type,
            lkeys
                .iter()
                .zip(&rkeys)
                .map(|(l, r)| l.clone().eq(r.clone())),
        )?;
        let left_cols = self.columns();
        let right_cols = right.columns();
        let mut exprs = Vec::new();
        let shared_keys: Vec<usize> = (0..left_on.len())
            .filter(|&i| left_on[i] == right_on[i])
            .collect();
        for name in &left_cols {
            let l = col(Column::new(Some("__left"), name));
            if let Some(i) = shared_keys.iter().copied().find(|&i| left_on[i] == name) {
                let r = rkeys[i].clone();
                let key = match how {
                    How::Inner | How::Left => l,
                    How::Right => r,
                    How::Outer => coalesce(vec![l, r]),
                };
                exprs.push(key.alias(name));
            } else if right_cols.contains(name) && !shared_keys.iter().any(|&i| right_on[i] == name)
            {
                exprs.push(l.alias(format!("{name}_x")));
            } else {
                exprs.push(l.alias(name));
            }
        }
        for name in &right_cols {
            if shared_keys.iter().any(|&i| right_on[i] == name) {
                continue;
            }
            let r = col(Column::new(Some("__right"), name));
            if left_cols.contains(name) {
                exprs.push(r.alias(format!("{name}_y")));
            } else {
                exprs.push(r.alias(name));
            }
        }
        Ok(self.with(joined.select(exprs)?))
    }

    /// count, mean, std, min and max of every numeric column, one row per statistic
    /// (pandas `describe`), as Float64 with a leading `statistic` column.
    pub fn describe(&self) -> Result<Self> {
        let numeric: Vec<String> = self
            .df
            .schema()
            .fields()
            .iter()
            .filter(|f| f.data_type().is_numeric())
            .map(|f| f.name().clone())
            .collect();
        if numeric.is_empty() {
            return Err(Error::input("describe needs at least one numeric column"));
        }
        type Stat = fn(Expr) -> Expr;
        let stats: [(&str, Stat); 5] = [
            ("count", |e| cast(count(e), DataType::Float64)),
            ("mean", |e| avg(cast(e, DataType::Float64))),
            ("std", |e| stddev(cast(e, DataType::Float64))),
            ("min", |e| cast(min(e), DataType::Float64)),
            ("max", |e| cast(max(e), DataType::Float64)),
        ];
        let mut result: Option<DfFrame> = None;
        for (order, (name, stat)) in stats.iter().enumerate() {
            let aggs = numeric.iter().map(|c| stat(ident(c)).alias(c)).collect();
            let row = self.df.clone().aggregate(vec![], aggs)?;
            let mut exprs = vec![
                lit(*name).alias("statistic"),
                lit(order as i64).alias("__order"),
            ];
            exprs.extend(numeric.iter().map(ident));
            let row = row.select(exprs)?;
            result = Some(match result {
                None => row,
                Some(acc) => acc.union(row)?,
            });
        }
        let sorted = result
            .expect("five statistics")
            .sort(vec![ident("__order").sort(true, false)])?;
        let out = sorted.drop_columns(&["__order"])?;
        Ok(self.with(out))
    }

    /// Count of each distinct value of `column`, most frequent first (pandas `value_counts`).
    pub fn value_counts(&self, column: &str) -> Result<Self> {
        self.check_columns(&[column])?;
        let counted = self
            .df
            .clone()
            .aggregate(vec![ident(column)], vec![count(lit(1)).alias("count")])?;
        let sorted = counted.sort(vec![
            ident("count").sort(false, false),
            ident(column).sort(true, false),
        ])?;
        Ok(self.with(sorted))
    }

    /// Runs the plan and returns its batches.
    pub async fn collect(&self) -> Result<Vec<RecordBatch>> {
        Ok(self.execute().await?.stream.try_collect().await?)
    }

    /// Runs the plan and returns a stream of batches; dropping it cancels the job.
    pub async fn execute_stream(&self) -> Result<SendableRecordBatchStream> {
        Ok(self.execute().await?.stream)
    }

    /// Starts the plan's job: its id, its batches (dropping them cancels it) and its
    /// progress. The job is labelled with the frame's SQL text, or else its plan's root.
    pub async fn execute(&self) -> Result<JobHandle> {
        self.session
            .execute_as(self.df.logical_plan(), self.label.as_deref())
            .await
    }

    /// Number of rows.
    pub async fn count(&self) -> Result<usize> {
        let counted = self
            .df
            .clone()
            .aggregate(vec![], vec![count(lit(1)).alias("count")])?;
        let batches = self.with(counted).collect().await?;
        let n = batches
            .first()
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Int64Array>()
                    .map(|a| a.value(0))
            })
            .unwrap_or(0);
        Ok(n as usize)
    }

    /// Prints the rows as a table.
    pub async fn show(&self) -> Result<()> {
        let batches = self.collect().await?;
        println!("{}", pretty_format_batches(&batches)?);
        Ok(())
    }

    /// DataFusion's logical and physical plans plus Shoal's stage graph, as text.
    pub async fn explain(&self) -> Result<String> {
        let explain = self.df.clone().explain(false, false)?;
        let batches = self
            .session
            .explain_batches(explain.logical_plan().clone(), self.df.logical_plan())
            .await?;
        Ok(pretty_format_batches(&batches)?.to_string())
    }

    async fn write(
        &self,
        path: &str,
        parquet: bool,
        partition_by: &[&str],
        overwrite: bool,
    ) -> Result<()> {
        let location = Location::parse(path)?;
        if !overwrite && location.exists_locally() {
            return Err(Error::input(format!(
                "'{path}' already exists; pass overwrite to replace it"
            )));
        }
        self.check_columns(partition_by)?;
        let file_type = if parquet {
            format_as_file_type(Arc::new(ParquetFormatFactory::new()))
        } else {
            format_as_file_type(Arc::new(CsvFormatFactory::new()))
        };
        let plan = LogicalPlanBuilder::copy_to(
            self.df.logical_plan().clone(),
            path.to_string(),
            file_type,
            HashMap::new(),
            partition_by.iter().map(|s| s.to_string()).collect(),
        )?
        .build()?;
        self.session.collect(&plan).await?;
        Ok(())
    }

    /// Writes Parquet to `path` (a file, or a directory when partitioned by columns).
    /// Refuses an existing path unless `overwrite`.
    pub async fn to_parquet(
        &self,
        path: &str,
        partition_by: &[&str],
        overwrite: bool,
    ) -> Result<()> {
        self.write(path, true, partition_by, overwrite).await
    }

    /// Writes CSV with a header row to `path`; as [`DataFrame::to_parquet`].
    pub async fn to_csv(&self, path: &str, partition_by: &[&str], overwrite: bool) -> Result<()> {
        self.write(path, false, partition_by, overwrite).await
    }
}
