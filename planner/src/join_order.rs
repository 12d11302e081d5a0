//! Join order: a small filtered table joins right after the table it is joined with.
//!
//! DataFusion joins tables in the order a query's `FROM` lists them (it only swaps the two
//! inputs of each join). TPC-H q21 lists `supplier, lineitem, orders, nation`, so the
//! filter `n_name = 'SAUDI ARABIA'` cuts the rows only after lineitem has been joined with
//! orders: 3.8 million rows go through the orders join (and, on a cluster, a shuffle)
//! where 150 thousand would. This logical rule takes each left-deep tree of inner
//! equi-joins and moves every small filtered input (expected to give at most 64 KiB: a
//! nation or region by name) to just after the first inputs an equality connects it to;
//! the other inputs keep their order. Such a table holds few rows and is usually joined
//! on its key, so joining it early mostly drops rows: those it rules out leave before the
//! larger joins.
//!
//! Sizes are estimates: a table's file bytes, times a fifth per filter conjunct on it (a
//! predicate DataFusion both gives the scan and keeps above it counts twice: a crude
//! estimate, used only to tell a few kilobytes from the rest).
//! An input whose size is unknown (not local files, or more than filters and projections
//! over one table), a tree that is not left-deep or joins an input to none before it, or
//! a join with anything but equalities and filters is left as written.
//! `shoal.execution.join_order = false` turns the rule off. (A greedy order of all inputs
//! by estimated result size was tried first: without knowing which columns are keys it
//! joined TPC-H q05's customers and suppliers on their nation, a many-to-many join, and
//! made the query six times slower.)

use std::collections::HashSet;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, NullEquality, Result};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::utils::split_conjunction_owned;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, LogicalPlanBuilder, col};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::config::ShoalConfig;

/// The rule (see the module's doc).
#[derive(Debug, Default)]
pub struct JoinOrder;

impl OptimizerRule for JoinOrder {
    fn name(&self) -> &str {
        "shoal_join_order"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let on = config
            .options()
            .extensions
            .get::<ShoalConfig>()
            .is_none_or(|c| c.settings.execution.join_order);
        if !on || !inner_equi_join(&plan) {
            return Ok(Transformed::no(plan));
        }
        match reordered(&plan)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// Whether `plan` is a join the rule may move: inner, on equalities where NULL matches
/// nothing, with an optional filter.
fn inner_equi_join(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Join(join)
        if join.join_type == JoinType::Inner
            && join.null_equality == NullEquality::NullEqualsNothing
            && !join.null_aware
            && !join.on.is_empty())
}

/// The join under `plan` when `plan` only picks columns of a join the rule may move (the
/// projections DataFusion puts between joins, which the rule looks through).
fn columns_of_a_join(plan: &LogicalPlan) -> Option<&LogicalPlan> {
    match plan {
        LogicalPlan::Projection(p)
            if inner_equi_join(&p.input) && p.expr.iter().all(|e| matches!(e, Expr::Column(_))) =>
        {
            Some(&p.input)
        }
        _ => None,
    }
}

/// A tree of inner joins taken apart: its inputs, its equalities and its other filters.
#[derive(Default)]
struct Cluster {
    inputs: Vec<LogicalPlan>,
    equalities: Vec<(Expr, Expr)>,
    filters: Vec<Expr>,
}

impl Cluster {
    /// Adds `plan`'s inputs and conditions, looking through joins the rule may move and
    /// projections of plain columns above them.
    fn take_apart(&mut self, plan: &LogicalPlan) {
        match plan {
            LogicalPlan::Join(join) if inner_equi_join(plan) => {
                self.take_apart(&join.left);
                self.take_apart(&join.right);
                self.equalities.extend(join.on.iter().cloned());
                if let Some(filter) = &join.filter {
                    self.filters.extend(split_conjunction_owned(filter.clone()));
                }
            }
            _ => match columns_of_a_join(plan) {
                Some(join) => self.take_apart(join),
                None => self.inputs.push(plan.clone()),
            },
        }
    }

    /// The inputs whose columns `expr` reads (`None` if a column is in none of them).
    fn inputs_of(&self, expr: &Expr) -> Option<HashSet<usize>> {
        let mut found = HashSet::new();
        for column in expr.column_refs() {
            let at = self
                .inputs
                .iter()
                .position(|input| input.schema().has_column(column))?;
            found.insert(at);
        }
        Some(found)
    }
}

/// `plan` (a join the rule may move) rebuilt in the module's order, under a projection
/// giving its columns as before; `None` when the order does not change or the rule must
/// leave it.
fn reordered(plan: &LogicalPlan) -> Result<Option<LogicalPlan>> {
    let mut cluster = Cluster::default();
    cluster.take_apart(plan);
    if cluster.inputs.len() < 3 {
        return Ok(None);
    }
    let Some(sizes) = cluster
        .inputs
        .iter()
        .map(estimated_size)
        .collect::<Option<Vec<Size>>>()
    else {
        return Ok(None);
    };
    // The order as written, if it is left-deep over these inputs and connected.
    let Some(sides) = sides(&cluster) else {
        return Ok(None);
    };
    let Some(written) = left_deep_order(plan).and_then(|inputs| {
        inputs
            .iter()
            .map(|p| cluster.inputs.iter().position(|i| i == p))
            .collect::<Option<Vec<usize>>>()
    }) else {
        return Ok(None);
    };
    let connected = (1..written.len()).all(|k| connects(&sides, written[k], &written[..k]));
    let order = small_inputs_first(&sides, &sizes, &written);
    if !connected || order == written {
        return Ok(None);
    }
    let joined = build(&cluster, &order)?;
    let columns: Vec<Expr> = plan
        .schema()
        .columns()
        .into_iter()
        .map(|c: Column| col(c))
        .collect();
    Ok(Some(
        LogicalPlanBuilder::from(joined).project(columns)?.build()?,
    ))
}

/// An input's size as the rule estimates it: its table's file bytes, and the share of
/// them its filters are expected to keep.
#[derive(Debug, Clone, Copy)]
struct Size {
    bytes: f64,
    kept: f64,
}

impl Size {
    /// A filtered input expected to give at most [`SMALL`] bytes (a nation by name).
    fn small_and_filtered(&self) -> bool {
        self.kept < 1.0 && self.bytes * self.kept <= SMALL
    }
}

/// The most bytes a filtered input may be expected to give to be joined early.
const SMALL: f64 = 64.0 * 1024.0;

/// Pairs of the input sets each side of each equality reads (`None` if an equality
/// reads columns no input has).
type Sides = Vec<(HashSet<usize>, HashSet<usize>)>;

fn sides(cluster: &Cluster) -> Option<Sides> {
    cluster
        .equalities
        .iter()
        .map(|(l, r)| Some((cluster.inputs_of(l)?, cluster.inputs_of(r)?)))
        .collect()
}

/// Whether an equality joins input `candidate` (alone on its side) to inputs `joined`.
fn connects(sides: &Sides, candidate: usize, joined: &[usize]) -> bool {
    let joined: HashSet<usize> = joined.iter().copied().collect();
    sides.iter().any(|(l, r)| {
        let single = |s: &HashSet<usize>| s.len() == 1 && s.contains(&candidate);
        (single(l) && !r.is_empty() && r.is_subset(&joined))
            || (single(r) && !l.is_empty() && l.is_subset(&joined))
    })
}

/// `written` (a join order, every input connected to those before it) with each small
/// filtered input moved to just after the first inputs it is connected to, past larger
/// inputs only (so small inputs keep their order among themselves, smaller first), until
/// nothing moves: the order this gives for its own result is that result.
fn small_inputs_first(sides: &Sides, sizes: &[Size], written: &[usize]) -> Vec<usize> {
    let expected = |i: usize| sizes[i].bytes * sizes[i].kept;
    let mut order = written.to_vec();
    for _ in 0..order.len() * order.len() {
        let mut moved = false;
        for at in 1..order.len() {
            let input = order[at];
            if !sizes[input].small_and_filtered() {
                continue;
            }
            let earliest = (1..at).find(|&k| {
                connects(sides, input, &order[..k])
                    && order[k..at].iter().all(|&j| expected(j) > expected(input))
            });
            if let Some(k) = earliest {
                order.remove(at);
                order.insert(k, input);
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    order
}

/// The inputs of a left-deep tree of joins the rule may move, in join order (`None` for
/// a bushy tree).
fn left_deep_order(plan: &LogicalPlan) -> Option<Vec<LogicalPlan>> {
    let mut inputs = Vec::new();
    let mut at = plan;
    loop {
        at = columns_of_a_join(at).unwrap_or(at);
        match at {
            LogicalPlan::Join(join) if inner_equi_join(at) => {
                let mut right = Cluster::default();
                right.take_apart(&join.right);
                if right.inputs.len() != 1 {
                    return None;
                }
                inputs.push(right.inputs.remove(0));
                at = &join.left;
            }
            _ => {
                inputs.push(at.clone());
                inputs.reverse();
                return Some(inputs);
            }
        }
    }
}

/// The inputs joined left-deep in `order`, each join on the equalities between the new
/// input and those joined before it, and the conditions that need more than that as
/// filters of the first join that has all their columns.
fn build(cluster: &Cluster, order: &[usize]) -> Result<LogicalPlan> {
    let mut used = vec![false; cluster.equalities.len()];
    let mut filters_used = vec![false; cluster.filters.len()];
    let mut joined: HashSet<usize> = HashSet::from([order[0]]);
    let mut builder = LogicalPlanBuilder::from(cluster.inputs[order[0]].clone());
    for &next in &order[1..] {
        let mut keys: (Vec<Expr>, Vec<Expr>) = (Vec::new(), Vec::new());
        let mut conditions = Vec::new();
        let mut within = joined.clone();
        within.insert(next);
        for (i, (l, r)) in cluster.equalities.iter().enumerate() {
            let (Some(ls), Some(rs)) = (cluster.inputs_of(l), cluster.inputs_of(r)) else {
                continue;
            };
            if used[i] || !ls.is_subset(&within) || !rs.is_subset(&within) {
                continue;
            }
            used[i] = true;
            let only_next = |s: &HashSet<usize>| s.len() == 1 && s.contains(&next);
            if only_next(&rs) && !ls.is_empty() && ls.is_subset(&joined) {
                keys.0.push(l.clone());
                keys.1.push(r.clone());
            } else if only_next(&ls) && !rs.is_empty() && rs.is_subset(&joined) {
                keys.0.push(r.clone());
                keys.1.push(l.clone());
            } else {
                conditions.push(l.clone().eq(r.clone()));
            }
        }
        for (i, filter) in cluster.filters.iter().enumerate() {
            if !filters_used[i]
                && cluster
                    .inputs_of(filter)
                    .is_some_and(|s| s.is_subset(&within))
            {
                filters_used[i] = true;
                conditions.push(filter.clone());
            }
        }
        let filter = conditions.into_iter().reduce(Expr::and);
        builder = builder.join_with_expr_keys(
            cluster.inputs[next].clone(),
            JoinType::Inner,
            keys,
            filter,
        )?;
        joined = within;
    }
    let mut plan = builder.build()?;
    // Conditions on no input's columns alone (constants) filter the whole result.
    let rest: Vec<Expr> = cluster
        .filters
        .iter()
        .zip(&filters_used)
        .filter(|(_, used)| !**used)
        .map(|(f, _)| f.clone())
        .collect();
    if let Some(rest) = rest.into_iter().reduce(Expr::and) {
        plan = LogicalPlanBuilder::from(plan).filter(rest)?.build()?;
    }
    Ok(plan)
}

/// An input's size: its table's file bytes, and a fifth kept for each filter conjunct
/// above the scan (and each filter the scan was given), at least a thousandth; `None`
/// for anything but filters, projections and aliases over one scan of local files.
fn estimated_size(plan: &LogicalPlan) -> Option<Size> {
    let mut bytes = None;
    let mut conjuncts = 0;
    let mut simple = true;
    let _ = plan.apply(|node| {
        match node {
            LogicalPlan::Filter(filter) => {
                conjuncts += split_conjunction_owned(filter.predicate.clone()).len();
            }
            LogicalPlan::Projection(_) | LogicalPlan::SubqueryAlias(_) => {}
            LogicalPlan::TableScan(scan) => {
                conjuncts += scan.filters.len();
                bytes = table_bytes(scan);
            }
            _ => simple = false,
        }
        Ok(if simple {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    let bytes = bytes.filter(|_| simple)? as f64;
    Some(Size {
        bytes: bytes.max(1.0),
        kept: 0.2f64.powi(conjuncts.min(4) as i32).max(0.001),
    })
}

/// The bytes of the local files a scan's table reads.
fn table_bytes(scan: &datafusion::logical_expr::TableScan) -> Option<u64> {
    let provider = source_as_provider(&scan.source).ok()?;
    let listing = provider.downcast_ref::<ListingTable>()?;
    let mut total = 0;
    for url in listing.table_paths() {
        if url.scheme() != "file" {
            return None;
        }
        let path = url.get_url().to_file_path().ok()?;
        total += bytes_under(&path, 0)?;
    }
    Some(total)
}

/// Directory levels [`bytes_under`] looks into (a link to a directory above it would
/// otherwise lead it round for ever).
const MAX_DEPTH: usize = 16;

/// The bytes of a file, or of the files in a directory and below it (`None` when it
/// cannot tell: unreadable, or nested deeper than [`MAX_DEPTH`]).
fn bytes_under(path: &std::path::Path, depth: usize) -> Option<u64> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return Some(meta.len());
    }
    if depth >= MAX_DEPTH {
        return None;
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path).ok()? {
        total += bytes_under(&entry.ok()?.path(), depth + 1)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

    use super::*;

    fn write(dir: &std::path::Path, name: &str, batch: RecordBatch) {
        let file = std::fs::File::create(dir.join(format!("{name}.parquet"))).unwrap();
        let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    /// A fact table `f` (40,000 rows), a larger-than-small table `b` and a dimension `d`
    /// of 25 named rows, as files in `dir`, in a session with the rule.
    async fn session(dir: &std::path::Path) -> SessionContext {
        let ints = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as _;
        let n = 40_000;
        write(
            dir,
            "f",
            RecordBatch::try_from_iter([
                ("fk", ints((0..n).map(|i| (i * 7919) % n).collect())),
                ("dk", ints((0..n).map(|i| i % 25).collect())),
                ("v", ints((0..n).collect())),
            ])
            .unwrap(),
        );
        write(
            dir,
            "b",
            RecordBatch::try_from_iter([
                ("bk", ints((0..n).collect())),
                ("w", ints((0..n).map(|i| i * 3).collect())),
            ])
            .unwrap(),
        );
        let names: Vec<String> = (0..25).map(|i| format!("name{i}")).collect();
        write(
            dir,
            "d",
            RecordBatch::try_from_iter([
                ("k", ints((0..25).collect())),
                ("name", Arc::new(StringArray::from(names)) as _),
            ])
            .unwrap(),
        );
        let config = SessionConfig::new().with_option_extension(ShoalConfig::default());
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_optimizer_rule(Arc::new(JoinOrder))
            .build();
        let ctx = SessionContext::new_with_state(state);
        for table in ["f", "b", "d"] {
            let path = dir.join(format!("{table}.parquet"));
            ctx.register_parquet(table, path.to_str().unwrap(), ParquetReadOptions::default())
                .await
                .unwrap();
        }
        ctx
    }

    /// The tables of the optimized plan's scans, in plan order.
    fn scans(plan: &LogicalPlan) -> Vec<String> {
        let mut out = Vec::new();
        let _ = plan.apply(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                out.push(scan.table_name.to_string());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        out
    }

    #[tokio::test]
    async fn a_small_filtered_table_joins_right_after_the_table_it_filters() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = session(dir.path()).await;
        let sql = "select count(*), sum(f.v + b.w) from f, b, d \
                   where f.fk = b.bk and f.dk = d.k and d.name = 'name3'";
        let mut answers = Vec::new();
        for on in ["false", "true"] {
            ctx.sql(&format!("set shoal.execution.join_order = {on}"))
                .await
                .unwrap();
            let df = ctx.sql(sql).await.unwrap();
            let optimized = ctx.state().optimize(df.logical_plan()).unwrap();
            let expected = match on {
                "true" => ["f", "d", "b"],
                _ => ["f", "b", "d"],
            };
            assert_eq!(
                scans(&optimized),
                expected,
                "join_order = {on}\n{optimized}"
            );
            // The rule leaves its own result as it is (the optimizer applies it again
            // to what it returned, and would never stop otherwise), and would change
            // the order as written.
            let mut top = None;
            let _ = optimized.apply(|node| {
                if inner_equi_join(node) {
                    top = Some(node.clone());
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            });
            assert_eq!(reordered(&top.unwrap()).unwrap().is_none(), on == "true");
            let batches = df.collect().await.unwrap();
            answers.push(pretty_format_batches(&batches).unwrap().to_string());
        }
        assert_eq!(answers[0], answers[1]);
        assert!(answers[1].contains("1600"), "{}", answers[1]);
    }

    /// A table directory holding a link to itself has no size the rule can tell: it
    /// keeps the written order rather than looking for ever.
    #[cfg(unix)]
    #[test]
    fn a_directory_that_links_to_itself_has_no_size() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("part.parquet"), [0u8; 10]).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("again")).unwrap();
        assert_eq!(bytes_under(dir.path(), 0), None);
        std::fs::remove_file(dir.path().join("again")).unwrap();
        assert_eq!(bytes_under(dir.path(), 0), Some(10));
    }
}
