//! `agg(x) FILTER (WHERE p) OVER (…)` as `agg(CASE WHEN p THEN x END) OVER (…)` for
//! plans sent to worker processes: DataFusion's protobuf form of a window expression
//! has no place for its `FILTER` clause and drops it (every row would count). For
//! aggregates that skip NULL inputs the two forms are equal, the `CASE` travels.

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::{NullTreatment, WindowFunction, WindowFunctionDefinition};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan, lit, when};

/// Aggregates that skip NULL inputs (a row whose arguments are NULL adds nothing).
const SKIP_NULLS: &[&str] = &[
    "approx_distinct",
    "approx_median",
    "avg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "corr",
    "count",
    "covar_pop",
    "covar_samp",
    "max",
    "median",
    "min",
    "stddev",
    "stddev_pop",
    "sum",
    "var",
    "var_pop",
];

fn skips_nulls(fun: &WindowFunctionDefinition) -> bool {
    matches!(fun, WindowFunctionDefinition::AggregateUDF(udf)
        if SKIP_NULLS.contains(&udf.name()))
}

/// Whether a window function of `plan` would lose part of its meaning in DataFusion's
/// protobuf form even after [`window_filters_as_case`]: `IGNORE NULLS` (dropped), or a
/// `FILTER` on a function that keeps NULL inputs. Such plans run in the client.
pub fn windows_need_the_client(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::WindowFunction(w) = e {
                    found |= w.params.null_treatment == Some(NullTreatment::IgnoreNulls)
                        || (w.params.filter.is_some() && !skips_nulls(&w.fun));
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        node.apply_subqueries(|sub| {
            found |= windows_need_the_client(sub);
            Ok(TreeNodeRecursion::Continue)
        })
    });
    found
}

/// The window function with its filter moved into its arguments; `None` without a
/// filter or for a function that keeps NULL inputs (see [`windows_need_the_client`]).
fn without_filter(window: &WindowFunction) -> Result<Option<WindowFunction>> {
    let Some(filter) = window.params.filter.as_deref() else {
        return Ok(None);
    };
    if !skips_nulls(&window.fun) {
        return Ok(None);
    }
    let mut moved = window.clone();
    moved.params.filter = None;
    if moved.params.args.is_empty() {
        moved.params.args.push(lit(1i64));
    }
    for arg in &mut moved.params.args {
        *arg = when(filter.clone(), arg.clone()).end()?;
    }
    Ok(Some(moved))
}

/// `plan` with the filters of its window aggregates moved into their arguments (see the
/// module documentation); output names stay as they were.
pub fn window_filters_as_case(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up(|node| {
        let names = NamePreserver::new(&node);
        node.map_expressions(|expr| {
            let saved = names.save(&expr);
            let rewritten = expr.transform_up(|e| match &e {
                Expr::WindowFunction(w) => match without_filter(w)? {
                    Some(moved) => Ok(Transformed::yes(Expr::WindowFunction(Box::new(moved)))),
                    None => Ok(Transformed::no(e)),
                },
                _ => Ok(Transformed::no(e)),
            })?;
            Ok(rewritten.update_data(|e| saved.restore(e)))
        })
    })
    .map(|t| t.data)
}
