//! The `Session` methods that give DataFrames: reading files and tables, and SQL.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::sql::parser::Statement;
use shoal_sql::Planned;

use crate::dataframe::DataFrame;
use crate::error::Result;
use crate::session::Session;

impl Session {
    fn read(&self, path: &str) -> Result<DataFrame> {
        let ctx = self.context().clone();
        let location = shoal_io::Location::parse(path)?;
        let what = format!("reading '{path}'");
        let provider = self.block_on(&what, async move {
            shoal_io::table_provider(&ctx.state(), &location).await
        })?;
        let df = self.context().read_table(provider)?;
        Ok(DataFrame::new(self.clone(), df))
    }

    /// A lazy DataFrame over a Parquet file, directory or prefix.
    pub fn read_parquet(&self, path: &str) -> Result<DataFrame> {
        self.read_with_format(path, shoal_io::FileFormatKind::Parquet)
    }

    /// A lazy DataFrame over a CSV file (header row, inferred types), directory or prefix.
    pub fn read_csv(&self, path: &str) -> Result<DataFrame> {
        self.read_with_format(path, shoal_io::FileFormatKind::Csv)
    }

    fn read_with_format(&self, path: &str, kind: shoal_io::FileFormatKind) -> Result<DataFrame> {
        if let Some(found) = shoal_io::FileFormatKind::from_name(path)
            && found != kind
        {
            return Err(crate::Error::input(format!(
                "'{path}' looks like {found:?}, not {kind:?}"
            )));
        }
        self.read(path)
    }

    /// A lazy DataFrame over batches held in memory (all with `schema`), such as a
    /// pyarrow table handed over from Python.
    pub fn from_batches(&self, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<DataFrame> {
        let table = MemTable::try_new(schema, vec![batches])?;
        let df = self.context().read_table(Arc::new(table))?;
        Ok(DataFrame::new(self.clone(), df))
    }

    /// A DataFrame over a registered table.
    pub async fn table(&self, name: &str) -> Result<DataFrame> {
        let df = self.context().table(name).await?;
        Ok(DataFrame::new(self.clone(), df))
    }

    /// Plans one SQL statement. Commands (DDL, `SET`) run now and give an empty frame;
    /// queries stay lazy until collected.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let mut statements = self.parse(sql)?;
        if statements.len() != 1 {
            return Err(crate::Error::input(format!(
                "expected one SQL statement, found {}; use Session::sql_script for several",
                statements.len()
            )));
        }
        self.statement(statements.remove(0)).await
    }

    /// Runs every statement of `sql` in order and returns each one's rows.
    pub async fn sql_script(&self, sql: &str) -> Result<Vec<Vec<RecordBatch>>> {
        let mut results = Vec::new();
        for statement in self.parse(sql)? {
            results.push(self.statement(statement).await?.collect().await?);
        }
        Ok(results)
    }

    /// Plans one parsed statement (see [`Session::sql`]).
    pub async fn statement(&self, statement: Statement) -> Result<DataFrame> {
        let ctx = self.context();
        let label = without_option_values(&statement.to_string());
        let df = match shoal_sql::plan_statement(ctx, statement).await? {
            Planned::Query(plan) => ctx.execute_logical_plan(plan).await?,
            Planned::Command(plan) => ctx.execute_logical_plan(plan).await?,
            Planned::Explain { explain, inner } => {
                let batches = self.explain_batches(explain, &inner).await?;
                ctx.read_batches(batches)?
            }
        };
        Ok(DataFrame::new(self.clone(), df).labeled(label))
    }
}

/// `sql` with the contents of every `OPTIONS (...)` clause left out: a job's label goes to
/// every event reader and the dashboard, and options can hold credentials.
fn without_option_values(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.to_ascii_uppercase().find("OPTIONS (") {
        let open = at + "OPTIONS (".len();
        out.push_str(&rest[..open]);
        // The matching parenthesis, outside quoted text.
        let (mut depth, mut quote, mut end) = (1usize, None, rest.len());
        for (i, c) in rest[open..].char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '(') => depth += 1,
                (None, ')') => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push('…');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::without_option_values;

    #[test]
    fn option_values_are_left_out_of_labels() {
        assert_eq!(
            without_option_values(
                "COPY t TO 's3://b/x' STORED AS PARQUET OPTIONS ('aws.secret_access_key' 'k(y)', \
                 'format.compression' 'zstd') "
            ),
            "COPY t TO 's3://b/x' STORED AS PARQUET OPTIONS (…) "
        );
        assert_eq!(without_option_values("SELECT 1"), "SELECT 1");
        assert_eq!(
            without_option_values("x OPTIONS ('a' 'b') y options ('c' 'd')"),
            "x OPTIONS (…) y options (…)"
        );
        assert_eq!(without_option_values("OPTIONS ('open"), "OPTIONS (…");
    }
}
