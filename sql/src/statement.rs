//! Parsing and planning of single statements.

use std::sync::Arc;

use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{CopyToStatement, DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::Value;
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use shoal_io::Location;
use shoal_planner::ShoalConfig;

/// What a statement asks the engine to do.
#[derive(Debug)]
pub enum Planned {
    /// Run the plan on the cluster and return its rows.
    Query(LogicalPlan),
    /// Show DataFusion's plans (`explain`, run locally) plus Shoal's stage graph of `inner`.
    Explain {
        /// The DataFusion `EXPLAIN` plan.
        explain: LogicalPlan,
        /// The plan being explained.
        inner: Arc<LogicalPlan>,
    },
    /// Change the session (DDL, `SET`); run it with `SessionContext::execute_logical_plan`.
    Command(LogicalPlan),
}

/// Splits `sql` into statements using the session's dialect (e.g. `generic`).
pub fn parse_sql(sql: &str, dialect: &str) -> Result<Vec<Statement>> {
    let dialect = dialect_from_str(dialect)
        .ok_or_else(|| DataFusionError::Plan(format!("unknown SQL dialect '{dialect}'")))?;
    let statements = DFParserBuilder::new(sql)
        .with_dialect(dialect.as_ref())
        .build()?
        .parse_statements()?;
    Ok(statements.into_iter().collect())
}

/// Plans one statement against `ctx`'s catalog.
pub async fn plan_statement(ctx: &SessionContext, statement: Statement) -> Result<Planned> {
    let statement = match statement {
        Statement::CopyTo(copy) => Statement::CopyTo(check_copy_target(copy)?),
        other => other,
    };
    let state = ctx.state();
    let plan = shoal_planner::catch_planner_panic(
        "planning the statement",
        state.statement_to_plan(statement),
    )
    .await?;
    Ok(match plan {
        LogicalPlan::Explain(explain) => {
            let inner = Arc::clone(&explain.plan);
            Planned::Explain {
                explain: LogicalPlan::Explain(explain),
                inner,
            }
        }
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) => {
            // With a declared schema there is nothing to infer: the location may be made
            // by the table's first INSERT or COPY, as in DataFusion.
            let declared = !cmd.schema.fields().is_empty();
            for location in cmd.locations.iter().filter(|_| !declared) {
                Location::parse(location)?
                    .must_exist()
                    .map_err(|e| e.context(format!("CREATE EXTERNAL TABLE {}", cmd.name)))?;
            }
            Planned::Command(LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)))
        }
        LogicalPlan::Statement(datafusion::logical_expr::Statement::SetVariable(set))
            if let Some(refusal) = runtime_setting_refusal(&set.variable) =>
        {
            return plan_err!("{refusal}");
        }
        plan @ (LogicalPlan::Ddl(_) | LogicalPlan::Statement(_)) => Planned::Command(plan),
        plan => Planned::Query(plan),
    })
}

/// The Shoal setting (and its CLI flag) that does what DataFusion's runtime setting
/// `variable` would: the workers' memory pools and spill files are Shoal's, so DataFusion's
/// own runtime settings would change nothing.
pub fn shoal_setting_for(variable: &str) -> Option<(&'static str, &'static str)> {
    match variable.to_ascii_lowercase().as_str() {
        "datafusion.runtime.memory_limit" => Some(("shoal.worker.memory_limit", "--memory-limit")),
        "datafusion.runtime.temp_directory" => Some(("shoal.scratch_dir", "--scratch-dir")),
        _ => None,
    }
}

/// DataFusion runtime settings of caches that planning uses, in the client: file listings
/// and file statistics. `SET` applies them.
const PLANNING_CACHES: [&str; 3] = [
    "list_files_cache_limit",
    "list_files_cache_ttl",
    "file_statistics_cache_limit",
];

/// Why `SET variable` is refused, for DataFusion's runtime settings that tasks use: they
/// configure the client's `RuntimeEnv`, while tasks run with the workers' own (memory
/// pool, spill directory, footer cache), so the statement would change nothing (and
/// `SHOW` reports what the workers use). Names the Shoal setting to use where there is
/// one. The caches planning uses are not refused: they apply.
pub fn runtime_setting_refusal(variable: &str) -> Option<String> {
    let lower = variable.to_ascii_lowercase();
    let name = lower.strip_prefix("datafusion.runtime.")?;
    if PLANNING_CACHES.contains(&name) {
        return None;
    }
    Some(match shoal_setting_for(variable) {
        Some((setting, flag)) => format!(
            "{variable} does not apply to Shoal's workers; use {setting} (fixed when the \
             session starts: Session::builder().option, {flag} or {})",
            ShoalConfig::env_var(setting.trim_start_matches("shoal."))
        ),
        None => format!(
            "{variable} does not apply to Shoal's workers, which run tasks with a runtime of \
             their own (SHOW datafusion.runtime.{name} reports theirs); Shoal's are \
             shoal.worker.memory_limit and shoal.scratch_dir"
        ),
    })
}

/// Refuses to write over an existing local path unless the statement carries
/// `'overwrite' 'true'` (an option Shoal consumes, DataFusion never sees it).
fn check_copy_target(mut copy: CopyToStatement) -> Result<CopyToStatement> {
    let mut overwrite = false;
    copy.options.retain(|(key, value)| {
        if key.eq_ignore_ascii_case("overwrite") {
            overwrite = match value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                    s.eq_ignore_ascii_case("true")
                }
                Value::Boolean(b) => *b,
                _ => false,
            };
            false
        } else {
            true
        }
    });
    let target = Location::parse(&copy.target)?;
    if !overwrite && target.exists_locally() {
        return plan_err!(
            "COPY target '{}' already exists; remove it or add OPTIONS ('overwrite' 'true')",
            copy.target
        );
    }
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn statements_are_classified() {
        let ctx = SessionContext::new();
        let stmts = parse_sql(
            "select 1; set datafusion.execution.batch_size = 100; explain select 2",
            "generic",
        )
        .unwrap();
        assert_eq!(stmts.len(), 3);
        let mut kinds = Vec::new();
        for s in stmts {
            kinds.push(match plan_statement(&ctx, s).await.unwrap() {
                Planned::Query(_) => "query",
                Planned::Command(_) => "command",
                Planned::Explain { .. } => "explain",
            });
        }
        assert_eq!(kinds, ["query", "command", "explain"]);
    }

    #[tokio::test]
    async fn copy_refuses_existing_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        std::fs::write(&target, "keep me").unwrap();
        let ctx = SessionContext::new();
        let sql = format!(
            "copy (select 1 as x) to '{}' stored as csv",
            target.display()
        );
        let stmt = parse_sql(&sql, "generic").unwrap().remove(0);
        let err = plan_statement(&ctx, stmt).await.unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        let sql = format!(
            "copy (select 1 as x) to '{}' stored as csv options ('overwrite' 'true')",
            target.display()
        );
        let stmt = parse_sql(&sql, "generic").unwrap().remove(0);
        assert!(matches!(
            plan_statement(&ctx, stmt).await.unwrap(),
            Planned::Query(_)
        ));
    }
}
