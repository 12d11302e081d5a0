//! A broadcast join's build-side bounds reach its probe-side scan in a session whose
//! tasks share this process: Parquet row groups outside them are skipped.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use shoal::Session;

use crate::common::{partition_every_join, rows};

/// A Parquet file of `k` (and `v = 2k`) for each key, in row groups of `group` rows.
fn write_keys(path: &Path, keys: impl Iterator<Item = i64>, group: usize) {
    let keys: Vec<i64> = keys.collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(keys.clone())),
            Arc::new(Int64Array::from_iter_values(keys.iter().map(|k| 2 * k))),
        ],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .build();
    let mut writer =
        ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// The line of `EXPLAIN ANALYZE sql` that shows the scan of fact.parquet.
async fn scan_of_fact(session: &Session, sql: &str) -> String {
    analyzed_line(session, sql, "fact.parquet").await
}

/// The value of metric `name` in an `EXPLAIN ANALYZE` line.
fn metric(line: &str, name: &str) -> Option<String> {
    let metrics = format!(" {}", &line[line.find("metrics=[")? + "metrics=[".len()..]);
    let rest = &metrics[metrics.find(&format!(" {name}="))? + name.len() + 2..];
    Some(rest.split([',', ']']).next()?.trim().to_string())
}

/// fact.parquet with keys `0..fact_rows` in row groups of `group` rows, and dim.parquet
/// with three keys, all in fact's first 3,000.
fn write_fact_and_dim(dir: &Path, fact_rows: i64, group: usize) {
    write_keys(&dir.join("fact.parquet"), 0..fact_rows, group);
    write_keys(
        &dir.join("dim.parquet"),
        [500, 1500, 2500].into_iter(),
        1000,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_join_s_build_keys_prune_the_probe_side_s_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    // 100 row groups of 1,000 keys; the dimension's keys all fall in the first three.
    write_fact_and_dim(dir.path(), 100_000, 1000);
    let session = Session::builder().workers(2).build().unwrap();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    let sql = "SELECT count(*), sum(f.v) FROM fact f JOIN dim d ON f.k = d.k";
    let result = session.sql_script(sql).await.unwrap();
    assert_eq!(
        rows(&result[0]),
        vec![vec!["3".to_string(), "9000".to_string()]]
    );
    let scan = scan_of_fact(&session, sql).await;
    assert!(
        scan.contains("DynamicFilter [ k@0 >= 500 AND k@0 <= 2500 ]"),
        "{scan}"
    );
    // Three row groups of 1,000 rows read, of 100: the other 97 were skipped.
    assert_eq!(
        metric(&scan, "output_rows").as_deref(),
        Some("3000"),
        "{scan}"
    );
    assert_eq!(
        metric(&scan, "row_groups_pruned_statistics").as_deref(),
        Some("97"),
        "{scan}"
    );
    assert_eq!(
        metric(&scan, "row_groups_pruned_statistics_matched").as_deref(),
        Some("3"),
        "{scan}"
    );
    // The setting turns them off.
    session
        .sql_script("SET shoal.execution.join_dynamic_filters = false")
        .await
        .unwrap();
    let scan = scan_of_fact(&session, sql).await;
    assert_eq!(
        metric(&scan, "output_rows").as_deref(),
        Some("100000"),
        "{scan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_by_limit_stops_reading_row_groups_that_cannot_make_the_top() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(&dir.path().join("fact.parquet"), 0..100_000, 1000);
    let session = Session::builder().workers(2).build().unwrap();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    let sql = "SELECT k FROM fact ORDER BY k LIMIT 3";
    let result = session.sql_script(sql).await.unwrap();
    let keys: Vec<String> = rows(&result[0]).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(keys, ["0", "1", "2"]);
    let scan = scan_of_fact(&session, sql).await;
    let read: usize = metric(&scan, "output_rows").unwrap().parse().unwrap();
    // Once each partition's top three are in, no later row group can beat them.
    assert!(read < 10_000, "{read} rows read: {scan}");
}

/// A Parquet file of one BIGINT column `name`, in one row group.
fn write_column(path: &Path, name: &str, values: Vec<Option<i64>>, nullable: bool) {
    let schema = Arc::new(Schema::new(vec![Field::new(
        name,
        DataType::Int64,
        nullable,
    )]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(Int64Array::from(values))],
    )
    .unwrap();
    let mut writer = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_in_still_sees_every_null_of_its_subquery() {
    // `a NOT IN (SELECT b ...)` is a null-aware anti join: one NULL among the b's means
    // no row. The bounds of a (just 1) must not prune the row group holding that NULL.
    let dir = tempfile::tempdir().unwrap();
    write_column(&dir.path().join("t.parquet"), "a", vec![Some(1)], false);
    write_column(
        &dir.path().join("s.parquet"),
        "b",
        vec![None, Some(100)],
        true,
    );
    let session = Session::builder().workers(2).build().unwrap();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    let result = session
        .sql_script("SELECT a FROM t WHERE a NOT IN (SELECT b FROM s)")
        .await
        .unwrap();
    assert_eq!(rows(&result[0]), Vec::<Vec<String>>::new());
}

/// The line of `EXPLAIN ANALYZE sql` that contains `needle`.
async fn analyzed_line(session: &Session, sql: &str, needle: &str) -> String {
    let analyzed = session
        .sql_script(&format!("EXPLAIN ANALYZE {sql}"))
        .await
        .unwrap();
    let plan = rows(&analyzed[0]).concat().join("\n");
    plan.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle} in\n{plan}"))
        .to_string()
}

/// A session over fact.parquet (1,200,000 keys), dim.parquet (three keys) and
/// wide.parquet (140,000 keys, every other one in a range: more distinct keys than a
/// build task lists, so their bounds and a Bloom filter of them filter). Filtering makes
/// a probe stage wait for its build stage: it is planned where the probe side is
/// expected to be many times larger.
fn fact_dim_and_wide() -> (tempfile::TempDir, Session) {
    let dir = tempfile::tempdir().unwrap();
    write_fact_and_dim(dir.path(), 1_200_000, 10_000);
    write_keys(
        &dir.path().join("wide.parquet"),
        (10_000..290_000).step_by(2),
        10_000,
    );
    let session = Session::builder().workers(2).build().unwrap();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    (dir, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_join_s_probe_stage_drops_rows_its_build_keys_rule_out() {
    let (_dir, session) = fact_dim_and_wide();
    partition_every_join(&session).await;
    // Each case's answer, the rows the key filter drops, and the row groups of fact's 120
    // (of 10,000 keys each) that its scan skips, outside the build keys' bounds.
    let cases = [
        (
            "SELECT count(*), sum(f.v) FROM fact f JOIN dim d ON f.k = d.k",
            ["3", "9000"],
            9_997..=9_997,
            "119",
        ),
        (
            // A filter on the build side (which lets every row through): a whole table
            // of that many keys would not be filtered by.
            "SELECT count(*), sum(f.v) FROM fact f JOIN wide w ON f.k = w.k WHERE w.v > 0",
            ["140000", "41999720000"],
            // The 28 row groups within the bounds are read: one key above them, and
            // nearly all 140,000 odd keys (a Bloom filter lets a few through), are dropped.
            139_000..=140_001,
            "92",
        ),
        // A semi join (the build side is the subquery's) filters the same way.
        (
            "SELECT count(*), sum(v) FROM fact WHERE k IN (SELECT k FROM dim)",
            ["3", "9000"],
            9_997..=9_997,
            "119",
        ),
    ];
    for (sql, answer, dropped, skipped) in cases {
        let result = session.sql_script(sql).await.unwrap();
        assert_eq!(
            rows(&result[0]),
            vec![answer.map(String::from).to_vec()],
            "{sql}"
        );
        let line = analyzed_line(&session, sql, "KeyFilterExec").await;
        let shown: usize = metric(&line, "rows_dropped").unwrap().parse().unwrap();
        assert!(dropped.contains(&shown), "{sql}: {line}");
        let scan = scan_of_fact(&session, sql).await;
        let pruned = metric(&scan, "row_groups_pruned_statistics");
        assert_eq!(pruned.as_deref(), Some(skipped), "{sql}: {scan}");
    }
    // Joins that keep unmatched probe rows lose none.
    for sql in [
        "SELECT count(*), count(d.k) FROM dim d RIGHT JOIN fact f ON f.k = d.k",
        "SELECT count(*), count(d.k) FROM fact f LEFT JOIN dim d ON f.k = d.k",
        "SELECT count(*), count(d.k) FROM fact f FULL JOIN dim d ON f.k = d.k",
    ] {
        let result = session.sql_script(sql).await.unwrap();
        assert_eq!(
            rows(&result[0]),
            vec![vec!["1200000".to_string(), "3".to_string()]],
            "{sql}"
        );
    }
    let sql = "SELECT count(*) FROM fact WHERE k NOT IN (SELECT k FROM dim)";
    let result = session.sql_script(sql).await.unwrap();
    assert_eq!(rows(&result[0]), vec![vec!["1199997".to_string()]], "{sql}");
    // The setting turns them off.
    session
        .sql_script("SET shoal.execution.join_dynamic_filters = false")
        .await
        .unwrap();
    let sql = "SELECT count(*), sum(f.v) FROM fact f JOIN dim d ON f.k = d.k";
    let plan = session.sql_script(&format!("EXPLAIN {sql}")).await.unwrap();
    assert!(!rows(&plan[0]).concat().join("\n").contains("KeyFilterExec"));
    let result = session.sql_script(sql).await.unwrap();
    assert_eq!(
        rows(&result[0]),
        vec![vec!["3".to_string(), "9000".to_string()]]
    );
}

/// A partitioned join whose build stage turns out small becomes a broadcast join at run
/// time: planned partitioned (DataFusion was told no build side is small enough by its
/// byte estimate), it reads the build stage's row count once that stage is done and
/// joins every build row with each probe task's rows where they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_join_broadcasts_a_build_side_found_small_at_run_time() {
    let (_dir, session) = fact_dim_and_wide();
    session
        .sql_script("SET datafusion.optimizer.hash_join_single_partition_threshold = 0")
        .await
        .unwrap();
    let small = "SELECT count(*), sum(f.v) FROM fact f JOIN dim d ON f.k = d.k";
    let wide = "SELECT count(*), sum(f.v) FROM fact f JOIN wide w ON f.k = w.k WHERE w.v > 0";
    let cases = [
        // Three build rows, under the default 131,072.
        ("", small, ["3", "9000"], "broadcast_tasks=2"),
        // 140,000 build rows: partitioned as planned, unless the limit is raised.
        ("", wide, ["140000", "41999720000"], "partitioned_tasks=2"),
        (
            "200000",
            wide,
            ["140000", "41999720000"],
            "broadcast_tasks=2",
        ),
        ("2", small, ["3", "9000"], "partitioned_tasks=2"),
    ];
    for (limit, sql, answer, chosen) in cases {
        if !limit.is_empty() {
            let set = "SET datafusion.optimizer.hash_join_single_partition_threshold_rows";
            session
                .sql_script(&format!("{set} = {limit}"))
                .await
                .unwrap();
        }
        let result = session.sql_script(sql).await.unwrap();
        assert_eq!(
            rows(&result[0]),
            vec![answer.map(String::from).to_vec()],
            "{sql}"
        );
        let line = analyzed_line(&session, sql, "AdaptiveJoinExec").await;
        assert!(line.contains(chosen), "{limit} {sql}: {line}");
    }
    // Its stages cross to worker processes: the plan codec carries them.
    let df = session.sql(small).await.unwrap();
    let graph = session.prepare(df.logical_plan()).await.unwrap();
    let task_ctx = session.context().task_ctx();
    for stage in &graph.stages {
        let bytes = shoal_planner::encode_plan(std::sync::Arc::clone(&stage.plan)).unwrap();
        let decoded = shoal_planner::decode_plan(&bytes, &task_ctx)
            .unwrap_or_else(|e| panic!("stage {}: {e}", stage.id));
        assert_eq!(
            datafusion::physical_plan::displayable(decoded.as_ref())
                .indent(true)
                .to_string(),
            datafusion::physical_plan::displayable(stage.plan.as_ref())
                .indent(true)
                .to_string()
        );
    }
    // The setting turns the choice off: the join stays as planned.
    session
        .sql_script("SET shoal.execution.runtime_broadcast = false")
        .await
        .unwrap();
    let plan = session
        .sql_script(&format!("EXPLAIN {small}"))
        .await
        .unwrap();
    let plan = rows(&plan[0]).concat().join("\n");
    assert!(!plan.contains("AdaptiveJoinExec"), "{plan}");
    assert!(plan.contains("KeyFilterExec"), "{plan}");
}

/// TPC-H at SF 0.2, where `lineitem`'s 1.2 million rows make waiting for a small build
/// side worth it:
/// - q17 joins a few parts with the average quantity of every part's line items: the
///   stage that aggregates `lineitem` by part filters its rows by the parts' keys before
///   the partial aggregation, so only the kept parts' groups are formed;
/// - q18 keeps the orders of more than 300 units, an aggregation computed in the stage of
///   the join under which `orders` and `lineitem` are joined: that aggregation becomes a
///   stage of its own, and the `lineitem` stage under the join drops the line items of
///   every other order before they are shuffled.
///
/// Both give the same answers with join filters off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q17_and_q18_filter_line_items_by_keys_another_stage_found() {
    let dir = tempfile::tempdir().unwrap();
    for table in ["part", "lineitem", "orders", "customer"] {
        shoal::tpch::write_table(table, 0.2, dir.path()).unwrap();
    }
    let session = Session::builder().workers(2).build().unwrap();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    let query = |name: &str| {
        let (_, sql) = shoal::tpch::QUERIES
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap();
        *sql
    };
    let (q17, q18) = (query("q17"), query("q18"));
    let mut filtered = Vec::new();
    let mut plans = Vec::new();
    for sql in [q17, q18] {
        filtered.push(session.sql_script(sql).await.unwrap());
        let analyzed = session
            .sql_script(&format!("EXPLAIN ANALYZE {sql}"))
            .await
            .unwrap();
        plans.push(rows(&analyzed[0]).concat().join("\n"));
    }
    // q17: the filter sits right under the partial aggregation.
    let lines: Vec<&str> = plans[0].lines().collect();
    let partial = lines
        .iter()
        .position(|l| l.contains("AggregateExec: mode=Partial, gby=[l_partkey@"))
        .unwrap_or_else(|| panic!("{}", plans[0]));
    let below = lines[partial + 1];
    assert!(below.contains("KeyFilterExec"), "{}", plans[0]);
    let dropped: usize = metric(below, "rows_dropped").unwrap().parse().unwrap();
    assert!(dropped > 1_150_000, "{below}");
    // q18: a stage scanning `lineitem` filters by order key and keeps only the line
    // items of the orders kept (a few hundred rows of 1.2 million).
    let filter = plans[1]
        .lines()
        .find(|l| l.contains("KeyFilterExec: keys=[l_orderkey@"))
        .unwrap_or_else(|| panic!("{}", plans[1]));
    let dropped: usize = metric(filter, "rows_dropped").unwrap().parse().unwrap();
    let kept: usize = metric(filter, "output_rows").unwrap().parse().unwrap();
    // (The scan skips the row groups outside the kept orders' keys first.)
    assert!(dropped > 900_000 && kept < 2_000, "{filter}");
    // The join of `orders` with `customer` waits for the same keys: it writes only the
    // orders kept (a few of 300,000), and the join above builds on those.
    let filter = plans[1]
        .lines()
        .find(|l| l.contains("KeyFilterExec: keys=[o_orderkey@"))
        .unwrap_or_else(|| panic!("{}", plans[1]));
    let dropped: usize = metric(filter, "rows_dropped").unwrap().parse().unwrap();
    let kept: usize = metric(filter, "output_rows").unwrap().parse().unwrap();
    assert!(dropped > 200_000 && kept < 500, "{filter}");
    assert!(!rows(&filtered[1][0]).is_empty());
    session
        .sql_script("SET shoal.execution.join_dynamic_filters = false")
        .await
        .unwrap();
    for (sql, filtered) in [q17, q18].into_iter().zip(&filtered) {
        let unfiltered = session.sql_script(sql).await.unwrap();
        assert_eq!(rows(&filtered[0]), rows(&unfiltered[0]));
    }
    let unfiltered = session.sql_script(&format!("EXPLAIN {q18}")).await.unwrap();
    assert!(
        !rows(&unfiltered[0])
            .concat()
            .join("\n")
            .contains("KeyFilterExec")
    );
}

/// A join whose build side is a semi join (in a stage of its own, as in TPC-H q20) and
/// whose probe side is an aggregation of 600,000 rows: DataFusion expects the semi join
/// to keep 100,000 rows (it keeps 100), too many to be worth waiting for by its
/// estimate, yet the aggregation's stage waits for its keys and drops the rows of the
/// groups they rule out before aggregating them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semi_join_built_side_filters_the_aggregation_it_probes() {
    let dir = tempfile::tempdir().unwrap();
    // 150,000 keys, four `big` rows each; `mid` has v = 2k, and the semi join keeps the
    // `mid` rows whose v a `dim` row with k % 2000 = 0 has: 75 keys of `big`.
    write_keys(
        &dir.path().join("big.parquet"),
        (0..600_000).map(|i| i % 150_000),
        65_536,
    );
    write_keys(&dir.path().join("dim.parquet"), 0..500_000, 65_536);
    write_keys(&dir.path().join("mid.parquet"), 0..200_000, 65_536);
    let session = Session::builder().workers(2).build().unwrap();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    partition_every_join(&session).await;
    let sql = "SELECT count(*) AS n, sum(a.total) AS s \
               FROM (SELECT k, sum(v) AS total FROM big GROUP BY k) a \
               JOIN (SELECT m.k FROM mid m \
                     WHERE m.v IN (SELECT d.v FROM dim d WHERE d.k % 2000 = 0)) f \
               ON a.k = f.k";
    // Each kept key k = 2000 j has total 4 * 2k: 16,000 * (0 + 1 + ... + 74).
    let expected = ["75", "44400000"];
    assert_filtered_below_partial_aggregation(&session, sql, expected, (300, 599_700)).await;
}

/// A join whose build side is itself a join (computed in the join's stage) and whose
/// probe side is an aggregation grouped by the join key: the build side becomes a stage
/// of its own (found through the final aggregation), and the stage that aggregates `big`
/// partially drops the rows of the groups whose key the build side lacks before it
/// aggregates them (the shape of TPC-H q17 at SF10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_built_from_a_join_filters_the_aggregation_it_probes() {
    let dir = tempfile::tempdir().unwrap();
    // 50,000 keys, four `big` rows each; 50 of them have `dim.v % 2000 = 0`.
    write_keys(
        &dir.path().join("big.parquet"),
        (0..200_000).map(|i| i % 50_000),
        8192,
    );
    write_keys(&dir.path().join("dim.parquet"), 0..50_000, 8192);
    write_keys(&dir.path().join("mid.parquet"), 0..50_000, 8192);
    let session = Session::builder().workers(2).build().unwrap();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    partition_every_join(&session).await;
    let sql = "SELECT count(*) AS n, sum(a.total) AS s \
               FROM (SELECT k, sum(v) AS total FROM big GROUP BY k) a \
               JOIN (SELECT d.k FROM dim d JOIN mid m ON d.k = m.k WHERE d.v % 2000 = 0) f \
               ON a.k = f.k";
    // Each kept key k has total 4 * 2k: 8 * 1000 * (0 + 1 + ... + 49).
    let expected = ["50", "9800000"];
    // The 4 rows of each of the 50 keys kept, of 200,000.
    assert_filtered_below_partial_aggregation(&session, sql, expected, (200, 199_800)).await;
}

/// Checks that `sql` (a join of `GROUP BY k` with a build side of keys) answers
/// `expected`, that the stage aggregating partially keeps (and drops) `kept_dropped` rows
/// right under its partial aggregation, and that it answers the same with join filters
/// off.
async fn assert_filtered_below_partial_aggregation(
    session: &Session,
    sql: &str,
    expected: [&str; 2],
    kept_dropped: (usize, usize),
) {
    let expected = vec![expected.map(str::to_string).to_vec()];
    let answer = session.sql_script(sql).await.unwrap();
    assert_eq!(rows(&answer[0]), expected);
    let analyzed = session
        .sql_script(&format!("EXPLAIN ANALYZE {sql}"))
        .await
        .unwrap();
    let plan = rows(&analyzed[0]).concat().join("\n");
    let lines: Vec<&str> = plan.lines().collect();
    let filter = lines
        .iter()
        .position(|l| l.contains("KeyFilterExec: keys=[k@0]"))
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(
        lines[filter - 1].contains("AggregateExec: mode=Partial, gby=[k@0 as k]"),
        "{plan}"
    );
    let count = |name: &str| -> usize { metric(lines[filter], name).unwrap().parse().unwrap() };
    assert_eq!(
        (count("output_rows"), count("rows_dropped")),
        kept_dropped,
        "{}",
        lines[filter]
    );
    session
        .sql_script("SET shoal.execution.join_dynamic_filters = false")
        .await
        .unwrap();
    let unfiltered = session.sql_script(sql).await.unwrap();
    assert_eq!(rows(&unfiltered[0]), expected);
}

/// The dynamic filter of a `min`/`max` without `GROUP BY` is shared by the aggregation
/// and its scan: once a task holds a minimum, the row groups that cannot hold a smaller
/// one are skipped. A stage decoded in a worker process keeps the two joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_skips_the_row_groups_that_cannot_lower_it() {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::physical_expr::expressions::{DynamicFilterPhysicalExpr, lit};
    use datafusion::physical_plan::aggregates::AggregateExec;
    let dir = tempfile::tempdir().unwrap();
    write_keys(&dir.path().join("fact.parquet"), 0..100_000, 1000);
    let session = Session::builder().workers(2).build().unwrap();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    // The filter keeps DataFusion from answering from the file's statistics.
    let sql = "SELECT min(k), min(v) FROM fact WHERE v >= 0";
    let read = async |session: &Session| {
        let result = session.sql_script(sql).await.unwrap();
        assert_eq!(rows(&result[0]), [["0", "0"]]);
        let scan = scan_of_fact(session, sql).await;
        let read: usize = metric(&scan, "output_rows").unwrap().parse().unwrap();
        read
    };
    // Each of the two tasks reads half the row groups; what follows their first
    // minimum cannot lower it.
    let skipping = read(&session).await;
    assert!(skipping < 50_000, "{skipping} rows read");
    // The stage as a worker process decodes it: what the aggregation sets, the scan sees.
    let df = session.sql(sql).await.unwrap();
    let graph = session.prepare(df.logical_plan()).await.unwrap();
    let bytes = shoal_planner::encode_plan(Arc::clone(&graph.stages[0].plan)).unwrap();
    let decoded = shoal_planner::decode_plan(&bytes, &session.context().task_ctx()).unwrap();
    let mut set = 0;
    decoded
        .apply(|node| {
            if node.is::<AggregateExec>() {
                for produced in node.dynamic_expressions_produced() {
                    let filter = produced
                        .downcast_ref::<DynamicFilterPhysicalExpr>()
                        .unwrap();
                    filter.update(lit(false))?;
                    set += 1;
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
    let shown = datafusion::physical_plan::displayable(decoded.as_ref())
        .indent(true)
        .to_string();
    assert_eq!(set, 1, "{shown}");
    assert!(shown.contains("DynamicFilter [ false ]"), "{shown}");
    // DataFusion's setting turns it off.
    session
        .sql_script("SET datafusion.optimizer.enable_aggregate_dynamic_filter_pushdown = false")
        .await
        .unwrap();
    assert_eq!(read(&session).await, 100_000);
}

/// A top-k sort's filter reaches only the scans of its own stage: a scan of another
/// stage (here the probe side of a partitioned join under the sort) reads `true` in its
/// place, so no task reads a bound that another stage's task set from an earlier run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_k_filter_reaches_only_the_scans_of_its_own_stage() {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::physical_plan::sorts::sort::SortExec;
    let (_dir, session) = fact_dim_and_wide();
    partition_every_join(&session).await;
    let sql = "SELECT f.k FROM fact f JOIN dim d ON f.k = d.k ORDER BY f.k LIMIT 2";
    let result = session.sql_script(sql).await.unwrap();
    assert_eq!(rows(&result[0]), [["500"], ["1500"]]);
    let df = session.sql(sql).await.unwrap();
    let graph = session.prepare(df.logical_plan()).await.unwrap();
    // The ids of the filters each stage's top-k sorts tighten, and of those its nodes read.
    let ids = |plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>, sorts: bool| {
        let mut ids = Vec::new();
        plan.apply(|node| {
            if sorts && node.is::<SortExec>() {
                ids.extend(
                    node.dynamic_expressions_produced()
                        .iter()
                        .flat_map(|e| e.expression_id()),
                );
            }
            if !sorts {
                node.apply_expressions(&mut |e| {
                    e.apply(|e| {
                        ids.extend(e.expression_id());
                        Ok(TreeNodeRecursion::Continue)
                    })
                })?;
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        ids
    };
    let tightened: Vec<Vec<u64>> = graph.stages.iter().map(|s| ids(&s.plan, true)).collect();
    let sorting = tightened
        .iter()
        .position(|t| !t.is_empty())
        .expect("a top-k sort's filter");
    let read: Vec<Vec<u64>> = graph.stages.iter().map(|s| ids(&s.plan, false)).collect();
    for (stage, read) in read.iter().enumerate().filter(|(s, _)| *s != sorting) {
        assert!(
            tightened[sorting].iter().all(|id| !read.contains(id)),
            "stage {stage} reads the filter of stage {sorting}'s sort"
        );
    }
}

/// A recursive query runs its recursive part again and again on one plan, which
/// DataFusion resets but for these filters: a `max` there would skip, on the second pass,
/// every row group the first pass's maximum rules out (DataFusion 55 itself answers 2
/// here). Its scans read no such filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_or_max_in_a_recursive_query_is_computed_afresh_each_pass() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(&dir.path().join("fact.parquet"), 0..6, 2);
    let session = Session::builder().workers(2).build().unwrap();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    let sql = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT r.n + 1 FROM r \
               JOIN (SELECT max(k) AS m FROM fact WHERE v >= 0) s ON r.n < s.m) \
               SELECT count(*) FROM r";
    for partitions in ["1", "2"] {
        let set = format!("SET shoal.execution.partitions = {partitions}");
        session.sql_script(&set).await.unwrap();
        let result = session.sql_script(sql).await.unwrap();
        assert_eq!(rows(&result[0]), [["5"]], "{partitions} partitions");
    }
}

/// A scan that stops after some rows reads no join's bounds: it would skip the row
/// groups outside them and stop after other rows. (DataFusion 55 gives the broadcast
/// join's filter to such a scan of one partition and answers 1 here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_under_a_limit_reads_no_join_bounds() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(&dir.path().join("fact.parquet"), 0..100_000, 1000);
    write_keys(&dir.path().join("far.parquet"), [50_000].into_iter(), 1000);
    let session = Session::builder().workers(2).build().unwrap();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    session
        .sql_script("SET shoal.execution.partitions = 1")
        .await
        .unwrap();
    let sql = "SELECT count(*) FROM (SELECT k FROM fact LIMIT 20000) f JOIN far d ON f.k = d.k";
    for partitioned in [false, true] {
        if partitioned {
            partition_every_join(&session).await;
        }
        let result = session.sql_script(sql).await.unwrap();
        assert_eq!(rows(&result[0]), [["0"]], "partitioned: {partitioned}");
    }
}
