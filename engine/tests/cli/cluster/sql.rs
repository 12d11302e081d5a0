//! SQL that keeps state in the client (in-memory tables) or needs care in the plan codec,
//! on a scheduler and worker processes.

use super::{Cluster, rows, tpch_dir};
use futures::TryStreamExt;

async fn query(session: &shoal::Session, sql: &str) -> Vec<Vec<String>> {
    let batches = session.sql(sql).await.unwrap().collect().await.unwrap();
    rows(&batches)
}

/// An in-memory table lives in the client: `INSERT INTO` computes its rows on the
/// workers and adds them there, and later queries (also on the workers) read them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_into_an_in_memory_table_reach_later_queries() {
    let cluster = Cluster::start(2);
    let session = cluster.session();
    query(&session, "create table t (a int, b varchar)").await;
    assert_eq!(
        query(&session, "insert into t values (1, 'x'), (2, 'y')").await,
        [["2"]]
    );
    assert_eq!(
        query(
            &session,
            "insert into t select a + 10, b || b from t where a > 1"
        )
        .await,
        [["1"]]
    );
    assert_eq!(
        query(&session, "select a, b from t order by a").await,
        [["1", "x"], ["2", "y"], ["12", "yy"]]
    );
}

/// A `Float16` literal reaches the workers as `Float16` (DataFusion's protobuf form
/// would make it `Float32`, and a worker's `MIN` over it panicked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float16_values_reach_workers_with_their_type() {
    let cluster = Cluster::start(2);
    let session = cluster.session();
    let sql = "with data as (select 1 as k, arrow_cast(1.8125, 'Float16') as f \
               union all select 1 as k, arrow_cast(6.5, 'Float16') as f \
               union all select 2 as k, arrow_cast(8.5, 'Float16') as f) \
               select k, min(f), max(f), arrow_typeof(min(f)) from data group by k order by k";
    assert_eq!(
        query(&session, sql).await,
        [
            ["1", "1.8125", "6.5", "Float16"],
            ["2", "8.5", "8.5", "Float16"]
        ]
    );
}

/// Window aggregates with `FILTER` give the answers they give embedded (DataFusion's plan
/// codec would drop the filter: the filter travels inside the argument); a filtered
/// function that keeps NULL inputs, or one that ignores NULLs, runs in the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_window_aggregates_keep_their_filter() {
    let cluster = Cluster::start(2);
    let session = cluster.session();
    let sql = "select x, count(*) filter (where x > 1) over () as big, \
               sum(x) filter (where x % 2 = 1) over (order by x) as odd, \
               count(*) filter (where null) over () as none \
               from (values (1), (2), (3)) t(x) order by x";
    assert_eq!(
        query(&session, sql).await,
        [
            ["1", "2", "1", "0"],
            ["2", "2", "1", "0"],
            ["3", "2", "4", "0"]
        ]
    );
    // A filtered function that keeps NULL inputs, and IGNORE NULLS, run in the client.
    let kept = "select array_agg(x) filter (where x > 1) over () from (values (1), (2)) t(x)";
    assert_eq!(query(&session, kept).await, [["[2]"], ["[2]"]]);
    let ignore = "select last_value(x) ignore nulls over (order by k) \
                  from (values (1, 5), (2, null), (3, null)) t(k, x) order by k";
    assert_eq!(query(&session, ignore).await, [["5"], ["5"], ["5"]]);
}

/// Plans with operators the plan codec cannot carry to worker processes (a recursive
/// query, a catalog table) run in the client instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_the_codec_cannot_carry_run_in_the_client() {
    let cluster = Cluster::start(2);
    let session = cluster.session();
    let recursive = "with recursive t(n) as (select 1 union all select n + 1 from t where n < 4) \
                     select n from t order by n";
    assert_eq!(
        query(&session, recursive).await,
        [["1"], ["2"], ["3"], ["4"]]
    );
    // Jobs the cluster runs have its job numbers; one run in the client has none.
    let job = |sql: &'static str| {
        let session = session.clone();
        async move {
            let df = session.sql(sql).await.unwrap();
            session.execute(df.logical_plan()).await.unwrap().job
        }
    };
    assert_eq!(job(recursive).await, 0);
    // Its progress is one task, done when the stream has ended, as for a cluster's job.
    let df = session.sql(recursive).await.unwrap();
    let handle = session.execute(df.logical_plan()).await.unwrap();
    let mut progress = handle.progress.clone();
    assert_eq!(
        (progress.borrow().tasks_done, progress.borrow().tasks_total),
        (0, 1)
    );
    let batches: Vec<_> = handle.stream.try_collect().await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 4);
    progress.changed().await.unwrap();
    assert_eq!(
        (progress.borrow().tasks_done, progress.borrow().tasks_total),
        (1, 1)
    );
    assert!(job("select count(*) from (values (1), (2)) t(x) group by x").await > 0);
    session.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    assert!(job("select l_returnflag, count(*) from lineitem group by l_returnflag").await > 0);
    query(&session, "set shoal.execution.partitions = 8").await;
    let crossed = "select l_returnflag, count(*) as n, sum(l_extendedprice * value) as p from \
                   (select l_returnflag, l_extendedprice, value from lineitem \
                   cross join generate_series(1, 40)) group by 1 order by 1";
    assert!(
        job(crossed).await > 0,
        "a cross join with a table function runs on the cluster"
    );
    let out = tempfile::tempdir().unwrap();
    let copy = format!(
        "copy (select x, value, value % 4 as part from (values (1), (2)) t(x) \
         cross join generate_series(1, 12)) to '{}' stored as parquet partitioned by (part)",
        out.path().join("parts").display()
    );
    let df = session.sql(&copy).await.unwrap();
    assert!(
        session.execute(df.logical_plan()).await.unwrap().job > 0,
        "a COPY runs on the cluster"
    );
    query(&session, "create table cat_t (a int not null)").await;
    let columns = "select column_name, data_type, is_nullable from information_schema.columns \
                   where table_name = 'cat_t'";
    assert_eq!(query(&session, columns).await, [["a", "Int32", "NO"]]);
    // A scan of gzip files (the codec would drop the compression).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gz");
    let options = "options ('format.compression' gzip, 'format.has_header' false)";
    let copy = format!(
        "copy (values (1, 'a'), (2, 'b')) to '{}' stored as csv {options}",
        path.display()
    );
    assert_eq!(query(&session, &copy).await, [["2"]]);
    let table = format!(
        "create external table gz (a int, b varchar) stored as csv location '{}' {options}",
        path.display()
    );
    query(&session, &table).await;
    assert_eq!(
        query(&session, "select a, b from gz order by a").await,
        [["1", "a"], ["2", "b"]]
    );
}

/// DELETE and UPDATE on an in-memory table run once, in the client: planning them
/// changes the table, so planning them twice would apply them twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_updates_of_in_memory_tables_apply_once() {
    let cluster = Cluster::start(2);
    let session = cluster.session();
    query(
        &session,
        "create table d as values (1, 10), (2, 20), (3, 30)",
    )
    .await;
    let update = "update d set column2 = column2 * 2 where column1 = 2";
    assert_eq!(query(&session, update).await, [["1"]]);
    assert_eq!(
        query(&session, "delete from d where column1 > 2").await,
        [["1"]]
    );
    assert_eq!(
        query(&session, "select column1, column2 from d order by column1").await,
        [["1", "10"], ["2", "40"]]
    );
}

/// A Parquet file of `k` and `v = 2k` for each key, in row groups of 1,000 rows.
fn write_keys(path: &std::path::Path, keys: Vec<i64>) {
    use shoal::datafusion::arrow::array::{Int64Array, RecordBatch};
    use shoal::datafusion::parquet::arrow::ArrowWriter;
    use shoal::datafusion::parquet::file::properties::WriterProperties;
    let doubled: Vec<i64> = keys.iter().map(|k| 2 * k).collect();
    let batch = RecordBatch::try_from_iter([
        ("k", std::sync::Arc::new(Int64Array::from(keys)) as _),
        ("v", std::sync::Arc::new(Int64Array::from(doubled)) as _),
    ])
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(1000))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// A directory of fact.parquet (keys 0..100,000 in 100 row groups) and dim.parquet
/// (three keys, all in fact's first three row groups), and a cluster of two workers.
fn fact_and_dim_on_a_cluster() -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::tempdir().unwrap();
    write_keys(&dir.path().join("fact.parquet"), (0..100_000).collect());
    write_keys(&dir.path().join("dim.parquet"), vec![500, 1500, 2500]);
    (dir, Cluster::start(2))
}

/// The first line of `sql`'s `EXPLAIN ANALYZE` that holds `needle`.
async fn analyzed_line(session: &shoal::Session, sql: &str, needle: &str) -> String {
    let plan = query(session, &format!("EXPLAIN ANALYZE {sql}")).await[0][1].clone();
    plan.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle} in\n{plan}"))
        .to_string()
}

/// The value of metric `name` on the `EXPLAIN ANALYZE` line of the scan of fact.parquet.
async fn fact_scan_metric(session: &shoal::Session, sql: &str, name: &str) -> String {
    let scan = analyzed_line(session, sql, "fact.parquet").await;
    let metrics = &scan[scan.find("metrics=[").expect("metrics")..];
    let at = metrics
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name} in {scan}"));
    let value = &metrics[at + name.len() + 2..];
    value.split([',', ']']).next().unwrap().trim().to_string()
}

/// A broadcast join's dynamic filter reaches the workers with the stage that reads it:
/// each worker fills it from the build side it read, and its probe-side scans skip the
/// row groups outside the build keys' bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_join_filters_prune_scans_on_the_workers() {
    let (dir, cluster) = fact_and_dim_on_a_cluster();
    let session = cluster.session();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    let sql = "SELECT count(*), sum(f.v) FROM fact f JOIN dim d ON f.k = d.k";
    assert_eq!(query(&session, sql).await, [["3", "9000"]]);
    let metric = |name| fact_scan_metric(&session, sql, name);
    // Three row groups of 1,000 rows read, of 100: the other 97 were skipped.
    assert_eq!(metric("output_rows").await, "3000");
    assert_eq!(metric("row_groups_pruned_statistics").await, "97");
    assert_eq!(metric("row_groups_pruned_statistics_matched").await, "3");
    query(&session, "SET shoal.execution.join_dynamic_filters = false").await;
    assert_eq!(metric("output_rows").await, "100000");
    assert_eq!(query(&session, sql).await, [["3", "9000"]]);
}

/// A `min` without `GROUP BY` shares its dynamic filter with its scan on the workers too:
/// once a task holds a minimum, it stops reading what cannot lower it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_stops_reading_what_cannot_lower_it_on_the_workers() {
    let (dir, cluster) = fact_and_dim_on_a_cluster();
    let session = cluster.session();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    let sql = "SELECT min(k), min(v) FROM fact WHERE v >= 0";
    assert_eq!(query(&session, sql).await, [["0", "0"]]);
    // Each of the two tasks reads half the row groups; what follows their first
    // minimum cannot lower it.
    let read: usize = fact_scan_metric(&session, sql, "output_rows")
        .await
        .parse()
        .unwrap();
    assert!(read < 50_000, "{read} rows read");
    let pruned: usize = fact_scan_metric(&session, sql, "row_groups_pruned_dynamic_filter")
        .await
        .parse()
        .unwrap();
    assert!(pruned > 50, "{pruned} row groups skipped");
    let off = "SET datafusion.optimizer.enable_aggregate_dynamic_filter_pushdown = false";
    query(&session, off).await;
    assert_eq!(
        fact_scan_metric(&session, sql, "output_rows").await,
        "100000"
    );
    assert_eq!(query(&session, sql).await, [["0", "0"]]);
}

/// With every hash join partitioned, the probe stages that filter by their build keys
/// read the build stages' key summaries from other processes and give the same answers;
/// a selective build side drops the probe rows that cannot match before the shuffle, and
/// the probe side's scans skip the row groups outside its keys' bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_joins_filter_their_probe_side_on_the_workers() {
    let (dir, cluster) = fact_and_dim_on_a_cluster();
    let session = cluster.session();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    session.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    for threshold in ["", "_rows"] {
        let setting =
            format!("datafusion.optimizer.hash_join_single_partition_threshold{threshold}");
        query(&session, &format!("SET {setting} = 0")).await;
    }
    let sql = "SELECT count(*), sum(f.v) FROM fact f JOIN dim d ON f.k = d.k";
    assert_eq!(query(&session, sql).await, [["3", "9000"]]);
    // The scans of fact skip the 97 row groups (of 1,000 keys) outside the build keys'
    // bounds; the key filter drops the other rows of the three read.
    let line = analyzed_line(&session, sql, "KeyFilterExec").await;
    assert!(line.contains("rows_dropped=2997"), "{line}");
    let skipped = fact_scan_metric(&session, sql, "row_groups_pruned_statistics").await;
    assert_eq!(skipped, "97");
    for (name, sql) in shoal::tpch::QUERIES {
        let results = session
            .sql_script(sql)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        super::assert_rows_eq(name, &super::answer(name), &rows(results.last().unwrap()));
    }
}

/// `ORDER BY … LIMIT` on worker processes: the top-k sort's dynamic filter reaches the
/// scan below it in the decoded stage as the same filter, so row groups that cannot make
/// the top rows are skipped there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_by_limit_skips_row_groups_on_the_workers() {
    let (dir, cluster) = fact_and_dim_on_a_cluster();
    let session = cluster.session();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    let sql = "SELECT k FROM fact ORDER BY k LIMIT 3";
    assert_eq!(query(&session, sql).await, [["0"], ["1"], ["2"]]);
    let read: usize = fact_scan_metric(&session, sql, "output_rows")
        .await
        .parse()
        .unwrap();
    // Once each task's top three are in, no later row group can beat them.
    assert!(read < 10_000, "{read} rows read");
}

/// Semi, anti and mark joins against a small build side on worker processes: each probe
/// task keeps the fact rows that match something (a right semi join against the
/// broadcast build side) and one task finishes the join, so the fact table is never
/// shuffled; the answers are those of the join computed in one place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semi_and_anti_joins_leave_their_probe_side_where_it_is() {
    let (dir, cluster) = fact_and_dim_on_a_cluster();
    write_keys(
        &dir.path().join("wide.parquet"),
        vec![500, 1500, 2500, 100_000, 250_000],
    );
    let session = cluster.session();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    let cases = [
        (
            "EXISTS (SELECT 1 FROM fact f WHERE f.k = w.k AND f.v >= w.v)",
            vec!["500", "1500", "2500"],
        ),
        (
            "NOT EXISTS (SELECT 1 FROM fact f WHERE f.k = w.k)",
            vec!["100000", "250000"],
        ),
        (
            "EXISTS (SELECT 1 FROM fact f WHERE f.k = w.k AND f.v > w.v - 2) OR w.k > 200000",
            vec!["500", "1500", "2500", "250000"],
        ),
        ("w.k IN (SELECT k FROM fact WHERE v < 2000)", vec!["500"]),
    ];
    for (condition, expected) in cases {
        let sql = format!("SELECT w.k FROM wide w WHERE {condition} ORDER BY w.k");
        let got: Vec<String> = query(&session, &sql).await.concat();
        assert_eq!(got, expected, "{sql}");
        let plan = query(&session, &format!("EXPLAIN ANALYZE {sql}")).await[0][1].clone();
        assert!(plan.contains("join_type=RightSemi"), "{sql}\n{plan}");
        // No stage writes hashed buckets: nothing was shuffled.
        assert!(
            !plan
                .lines()
                .any(|l| l.contains("ShuffleWriteExec: output=Hash")),
            "{sql}\n{plan}"
        );
    }
}

/// A partitioned join whose build stage turns out small is broadcast at run time on
/// worker processes too: the adaptive join and the probe stage's writer travel in the
/// stage plans, and every task chooses alike from the build stage's row count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_side_found_small_is_broadcast_on_the_workers() {
    let (dir, cluster) = fact_and_dim_on_a_cluster();
    let session = cluster.session();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    query(
        &session,
        "SET datafusion.optimizer.hash_join_single_partition_threshold = 0",
    )
    .await;
    let sql = "SELECT count(*), sum(f.v) FROM fact f JOIN dim d ON f.k = d.k";
    for (limit, chosen) in [
        ("131072", "broadcast_tasks=2"),
        ("2", "partitioned_tasks=2"),
    ] {
        let set = "SET datafusion.optimizer.hash_join_single_partition_threshold_rows";
        query(&session, &format!("{set} = {limit}")).await;
        assert_eq!(query(&session, sql).await, [["3", "9000"]]);
        let line = analyzed_line(&session, sql, "AdaptiveJoinExec").await;
        assert!(line.contains(chosen), "{limit}: {line}");
    }
}

/// A join built from a join, probing an aggregation grouped by the key, on worker
/// processes: the build side's own stage and the aggregation stage's key filter travel
/// in the stage plans, and the answer is the one without join filters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_built_from_a_join_filters_the_aggregation_on_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    // 50,000 keys, four `big` rows each; 50 of them have `dim.v % 2000 = 0`.
    write_keys(
        &dir.path().join("big.parquet"),
        (0..200_000).map(|i| i % 50_000).collect(),
    );
    write_keys(&dir.path().join("dim.parquet"), (0..50_000).collect());
    write_keys(&dir.path().join("mid.parquet"), (0..50_000).collect());
    let cluster = Cluster::start(2);
    let session = cluster.session();
    session.register_dir(dir.path().to_str().unwrap()).unwrap();
    for threshold in ["", "_rows"] {
        let set = "SET datafusion.optimizer.hash_join_single_partition_threshold";
        query(&session, &format!("{set}{threshold} = 0")).await;
    }
    let sql = "SELECT count(*) AS n, sum(a.total) AS s \
               FROM (SELECT k, sum(v) AS total FROM big GROUP BY k) a \
               JOIN (SELECT d.k FROM dim d JOIN mid m ON d.k = m.k WHERE d.v % 2000 = 0) f \
               ON a.k = f.k";
    assert_eq!(query(&session, sql).await, [["50", "9800000"]]);
    let line = analyzed_line(&session, sql, "KeyFilterExec: keys=[k@0]").await;
    assert!(line.contains("rows_dropped=199800"), "{line}");
    query(&session, "SET shoal.execution.join_dynamic_filters = false").await;
    assert_eq!(query(&session, sql).await, [["50", "9800000"]]);
}
