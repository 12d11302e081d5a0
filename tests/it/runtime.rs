//! The executor: stage splitting, spilling under a small memory limit, cancellation.

use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal::{JobEventKind, Session};
use shoal_planner::{OutputSpec, ReadMode, split::shuffle_reads};

use crate::common::{
    answer, assert_rows_eq, events_until_done, files_under, rows, tpch_dir, tpch_session,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_splits_at_the_hash_exchange() {
    let session = tpch_session(2, 4);
    let df = session
        .sql("select l_returnflag, sum(l_quantity) from lineitem group by l_returnflag order by l_returnflag")
        .await
        .unwrap();
    let graph = session.task_graph(df.logical_plan()).await.unwrap();
    // scan + partial aggregate | final aggregate + sort | merge of sorted partitions
    let hash = graph
        .stages
        .iter()
        .find(|s| matches!(s.output, OutputSpec::Repartition(_)))
        .expect("a hash exchange");
    assert_eq!(hash.output.buckets(), 4);
    let consumer = graph
        .consumers(hash.id)
        .next()
        .expect("a consumer of the exchange");
    assert_eq!(consumer.tasks, 4, "one task per hash partition");
    let reads = shuffle_reads(&consumer.plan);
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].mode(), ReadMode::Gather);
    assert_eq!(
        reads[0].sources(2),
        (0..hash.tasks).map(|t| (t, 2)).collect::<Vec<_>>(),
        "partition 2 reads bucket 2 of every task"
    );
    let last = graph.result_stage();
    assert_eq!(last.tasks, 1, "the sort-preserving merge is one task");
    let merge_reads = shuffle_reads(&last.plan);
    assert_eq!(merge_reads[0].mode(), ReadMode::PerTask);
    assert_eq!(graph.result_stage().tasks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_join_build_side_is_its_own_stage() {
    let session = tpch_session(2, 3);
    session
        .sql("set datafusion.optimizer.hash_join_single_partition_threshold = 100000000")
        .await
        .unwrap();
    let df = session
        .sql("select count(*) from lineitem join (select distinct o_orderkey % 50 as k from orders) d on l_suppkey = d.k")
        .await
        .unwrap();
    let graph = session.task_graph(df.logical_plan()).await.unwrap();
    // The collect-left join's build side must be a read that gathers every task of a
    // stage writing one bucket: that stage is the broadcast build side.
    fn build_reads(
        plan: &std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        out: &mut Vec<(usize, ReadMode)>,
    ) {
        use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
        if let Some(join) = plan.downcast_ref::<HashJoinExec>()
            && *join.partition_mode() == PartitionMode::CollectLeft
        {
            // The build side's bounds are taken on the way (`BuildBoundsExec`).
            let mut left = join.left();
            if left.is::<shoal_planner::build_bounds::BuildBoundsExec>() {
                left = left.children()[0];
            }
            let read = left
                .downcast_ref::<shoal_planner::ShuffleReadExec>()
                .expect("the build side is read from its stage");
            out.push((read.stage(), read.mode()));
        }
        for child in plan.children() {
            build_reads(child, out);
        }
    }
    let mut reads = Vec::new();
    for stage in &graph.stages {
        build_reads(&stage.plan, &mut reads);
    }
    assert_eq!(reads.len(), 1, "{}", shoal_sql_render(&graph));
    let (build_stage, mode) = reads[0];
    assert_eq!(mode, ReadMode::Gather);
    assert!(
        matches!(graph.stages[build_stage].output, OutputSpec::Single),
        "{}",
        shoal_sql_render(&graph)
    );
    let got = rows(&df.collect().await.unwrap());
    let ctx = datafusion::prelude::SessionContext::new();
    for table in ["lineitem", "orders"] {
        let path = tpch_dir().join(format!("{table}.parquet"));
        ctx.register_parquet(table, path.to_str().unwrap(), Default::default())
            .await
            .unwrap();
    }
    let sql = "select count(*) from lineitem join (select distinct o_orderkey % 50 as k from orders) d on l_suppkey = d.k";
    let want = rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap());
    assert_eq!(got, want);
    assert_ne!(got[0][0], "0");
}

fn shoal_sql_render(graph: &shoal_planner::TaskGraph) -> String {
    graph
        .stages
        .iter()
        .map(|s| {
            format!(
                "stage {} tasks {} output {} inputs {:?}\n",
                s.id, s.tasks, s.output, s.inputs
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_memory_limit_spills_and_still_answers() {
    let scratch = tempfile::tempdir().unwrap();
    let session = Session::builder()
        .workers(2)
        .partitions(4)
        .memory_limit(24 << 20)
        .store_memory_target(64 << 10)
        .scratch_dir(scratch.path())
        .build()
        .unwrap();
    session.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    let mut events = session.events().await.unwrap();
    for query in ["q18", "q09", "q13"] {
        let sql = shoal::tpch::QUERIES
            .iter()
            .find(|(n, _)| *n == query)
            .unwrap()
            .1;
        let results = session.sql_script(sql).await.unwrap();
        assert_rows_eq(query, &answer(query), &rows(results.last().unwrap()));
    }
    let spilled: usize = session.store_stats().iter().map(|s| s.spilled_total).sum();
    assert!(
        spilled > 0,
        "the result store spilled: {:?}",
        session.store_stats()
    );
    // The spills were job events, and the scheduler's status counts them per worker.
    let stored: u64 = session.store_stats().iter().map(|s| s.spilled_bytes).sum();
    let mut reported = 0;
    while reported < stored {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("every spill is reported as its task ends")
            .unwrap();
        if let JobEventKind::Spill { bytes, .. } = event.kind {
            reported += bytes;
        }
    }
    assert_eq!(reported, stored);
    let status = session.status().await.unwrap();
    let counted: u64 = status.workers.iter().map(|w| w.spilled_bytes).sum();
    assert_eq!(counted, stored);
    // Releasing outputs is asynchronous: wait (bounded) for the workers to drop them.
    let started = Instant::now();
    while session
        .store_stats()
        .iter()
        .map(|s| s.entries)
        .sum::<usize>()
        > 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "outputs released: {:?}",
            session.store_stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leftover = files_under(scratch.path());
    assert!(leftover.is_empty(), "spill files removed: {leftover:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_cancels_the_job() {
    let session = tpch_session(2, 2);
    // A cross join of 60k x 60k rows: minutes of work if not cancelled.
    let df = session
        .sql("select sum(a.l_quantity * b.l_quantity) from lineitem a cross join lineitem b")
        .await
        .unwrap();
    let mut stream = df.execute_stream().await.unwrap();
    let first = tokio::time::timeout(Duration::from_millis(800), stream.next()).await;
    assert!(first.is_err(), "the query is still running");
    let running = session
        .status()
        .await
        .unwrap()
        .workers
        .iter()
        .map(|w| w.tasks_running)
        .sum::<usize>();
    assert!(running > 0, "tasks were running before the cancel");
    drop(stream);
    let started = Instant::now();
    loop {
        let status = session.status().await.unwrap();
        let running: usize = status.workers.iter().map(|w| w.tasks_running).sum();
        if running == 0 && status.jobs.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "tasks still running after cancel: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The session still works afterwards.
    let n = session
        .sql("select count(*) from nation")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(rows(&n), vec![vec!["25".to_string()]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_job_is_cancelled_by_its_id() {
    let session = tpch_session(2, 2);
    let df = session
        .sql("select sum(a.l_quantity * b.l_quantity) from lineitem a cross join lineitem b")
        .await
        .unwrap();
    let job = session.execute(df.logical_plan()).await.unwrap();
    let listed = session.status().await.unwrap().jobs;
    assert_eq!(
        listed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![job.job]
    );
    assert!(session.cancel(job.job).await.unwrap(), "it was running");
    let mut stream = job.stream;
    let error = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream ends soon after the cancel")
        .expect("with an error")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("job {} was cancelled", job.job)),
        "{error}"
    );
    assert!(!session.cancel(job.job).await.unwrap(), "no longer running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_follows_a_job_from_submit_to_done() {
    let session = tpch_session(2, 3);
    let mut events = session.events().await.unwrap();
    let df = session
        .sql("select l_returnflag, count(*) from lineitem group by 1 order by 1")
        .await
        .unwrap();
    let job = df.execute().await.unwrap();
    let id = job.job;
    let batches: Vec<_> = job.stream.collect::<Vec<_>>().await;
    assert!(batches.iter().all(Result::is_ok));
    let seen = events_until_done(&mut events).await;
    assert!(seen.iter().all(|e| e.job == id));
    let total = seen[0].progress.tasks_total;
    let JobEventKind::Submitted { stages, outline } = &seen[0].kind else {
        panic!("first event: {:?}", seen[0].kind);
    };
    assert!(*stages >= 2);
    // The job is labelled with its SQL text and outlines every stage: the result stage
    // reads the stage before it, and each stage's plan is rooted at its shuffle writer.
    assert_eq!(
        outline.label,
        "SELECT l_returnflag, count(*) FROM lineitem GROUP BY 1 ORDER BY 1"
    );
    assert_eq!(outline.stages.len(), *stages);
    assert!(outline.stages[0].inputs.is_empty());
    assert_eq!(outline.stages.last().unwrap().inputs, vec![*stages - 2]);
    assert!(
        outline
            .stages
            .iter()
            .all(|s| s.operators[0].0 == 0 && s.operators[0].1.starts_with("ShuffleWriteExec"))
    );
    assert!(
        outline.stages[0]
            .operators
            .iter()
            .any(|(depth, text)| *depth > 0 && text.contains("lineitem")),
        "{:?}",
        outline.stages[0].operators
    );
    let finished: Vec<_> = seen
        .iter()
        .filter_map(|e| match &e.kind {
            JobEventKind::TaskFinished { worker, slot, .. } => Some((*worker, *slot)),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), total, "one TaskFinished per task");
    let slots = session.config().worker.slots;
    assert!(
        finished.iter().all(|&(w, s)| w < 2 && s < slots),
        "{finished:?}"
    );
    let started = seen
        .iter()
        .filter(|e| matches!(e.kind, JobEventKind::TaskStarted { .. }))
        .count();
    assert_eq!(started, total);
    let stages_done = seen
        .iter()
        .filter(|e| matches!(e.kind, JobEventKind::StageFinished { .. }))
        .count();
    assert_eq!(
        Some(stages_done),
        match seen[0].kind {
            JobEventKind::Submitted { stages, .. } => Some(stages),
            _ => None,
        }
    );
    let last = seen.last().unwrap().progress;
    assert_eq!((last.tasks_done, last.tasks_total), (total, total));
    // The hash exchange moves rows between the two workers.
    let moved: Vec<_> = seen
        .iter()
        .filter_map(|e| match e.kind {
            JobEventKind::Fetch { from, to, bytes } => Some((from, to, bytes)),
            _ => None,
        })
        .collect();
    assert!(!moved.is_empty(), "{seen:?}");
    assert!(
        moved
            .iter()
            .all(|&(from, to, bytes)| from != to && from < 2 && to < 2 && bytes > 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_stage_graph() {
    let session = tpch_session(2, 4);
    let batches = session
        .sql("explain select l_returnflag, count(*) from lineitem group by l_returnflag")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = rows(&batches)
        .into_iter()
        .map(|r| r.join(" | "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("physical_plan"), "{text}");
    assert!(text.contains("shoal_stage_graph"), "{text}");
    assert!(text.contains("Stage 0: tasks="), "{text}");
    assert!(text.contains("ShuffleWriteExec: output=Hash("), "{text}");
    assert!(text.contains("ShuffleReadExec: stage=0"), "{text}");
}

/// EXPLAIN works for every statement: one with no stage graph says why, and a DELETE or
/// UPDATE is explained from its logical plan without changing the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_without_a_stage_graph_says_why_and_changes_nothing() {
    let session = tpch_session(2, 4);
    session
        .sql("create table ex_a as values (1, 10), (2, 20)")
        .await
        .unwrap();
    let stage_row = |sql: &'static str| {
        let session = session.clone();
        async move {
            let batches = session.sql(sql).await.unwrap().collect().await.unwrap();
            let rows = rows(&batches);
            let row = rows.iter().find(|r| r[0] == "shoal_stage_graph");
            row.map(|r| r[1].clone()).unwrap_or_default()
        }
    };
    let correlated = "explain select column1, (select n_name from nation \
                      where n_nationkey = column1 limit 1) from ex_a";
    for (sql, want) in [
        (correlated, "no stage graph: "),
        (
            "explain select * from ex_a distribute by column1",
            "no stage graph: ",
        ),
        (
            "explain delete from ex_a where column1 = 1",
            "not planned: DELETE changes",
        ),
        (
            "explain update ex_a set column2 = 0",
            "not planned: UPDATE changes",
        ),
        ("explain select count(*) from ex_a", "Stage 0: tasks="),
    ] {
        let row = stage_row(sql).await;
        assert!(row.starts_with(want), "{sql}: {row}");
    }
    let batches = session
        .sql("select column1, column2 from ex_a order by column1")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(rows(&batches), [["1", "10"], ["2", "20"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_with_many_row_groups_gives_parallel_scan_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let session = tpch_session(2, 4);
    let file = dir.path().join("orders.parquet");
    let copy = format!(
        "copy (select * from orders) to '{}' stored as parquet options ('format.max_row_group_size' '2000')",
        file.display()
    );
    session.sql(&copy).await.unwrap().collect().await.unwrap();
    session
        .sql("set datafusion.optimizer.repartition_file_min_size = 0")
        .await
        .unwrap();
    session
        .register("orders_rg", file.to_str().unwrap())
        .unwrap();
    let df = session
        .sql("select o_orderstatus, count(*) from orders_rg group by 1 order by 1")
        .await
        .unwrap();
    let graph = session.task_graph(df.logical_plan()).await.unwrap();
    assert_eq!(
        graph.stages[0].tasks, 4,
        "the single file is split into 4 scan tasks"
    );
    session
        .sql("set shoal.execution.partitions = 6")
        .await
        .unwrap();
    let replanned = session.task_graph(df.logical_plan()).await.unwrap();
    assert_eq!(
        replanned.stages[0].tasks, 6,
        "SET shoal.execution.partitions applies to the next plan"
    );
    let got = rows(&df.collect().await.unwrap());
    let want = rows(
        &session
            .sql("select o_orderstatus, count(*) from orders group by 1 order by 1")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap(),
    );
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_asking_for_a_gpu_run_only_where_one_is_offered() {
    let session = Session::builder()
        .workers(2)
        .partitions(3)
        .worker_resources(1, "gpu=1")
        .build()
        .unwrap();
    session.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    session
        .sql("set shoal.task.resources = 'gpu=1'")
        .await
        .unwrap();
    let sql = shoal::tpch::QUERIES
        .iter()
        .find(|(n, _)| *n == "q03")
        .unwrap()
        .1;
    let results = session.sql_script(sql).await.unwrap();
    assert_rows_eq("q03", &answer("q03"), &rows(results.last().unwrap()));
    let status = session.status().await.unwrap();
    assert_eq!(status.workers[0].tasks_completed, 0, "{status:?}");
    assert!(status.workers[1].tasks_completed > 0, "{status:?}");
    assert_eq!(status.workers[1].resources.get("gpu"), 1.0);

    // Without resources, both workers take tasks again.
    session.sql("set shoal.task.resources = ''").await.unwrap();
    session.sql_script(sql).await.unwrap();
    let status = session.status().await.unwrap();
    assert!(status.workers[0].tasks_completed > 0, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_no_worker_can_run_waits_says_why_then_fails() {
    let session = Session::builder()
        .workers(2)
        .partitions(2)
        .worker_resources(0, "gpu=1")
        .build()
        .unwrap();
    session.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    session
        .sql("set shoal.task.resources = 'gpu=2'")
        .await
        .unwrap();
    session
        .sql("set shoal.task.placement_timeout = 1.5")
        .await
        .unwrap();
    let df = session.sql("select count(*) from nation").await.unwrap();
    let started = Instant::now();
    let mut stream = df.execute_stream().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = session.status().await.unwrap();
    let waiting = status
        .jobs
        .iter()
        .find_map(|j| j.waiting.clone())
        .expect("the job says why it waits");
    assert!(
        waiting.contains("no worker offers gpu=2") && waiting.contains("worker 0 offers gpu=1"),
        "{waiting}"
    );
    let err = stream
        .next()
        .await
        .expect("an error")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no worker offers gpu=2") && err.contains("placement_timeout"),
        "{err}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "it waited for the timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let err = session
        .sql("set shoal.task.resources = 'gpu'")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected NAME=AMOUNT"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inlined_scalar_subqueries_keep_their_column_names() {
    let session = tpch_session(2, 2);
    let df = session.sql("select (select max(n_nationkey) from nation), 1 + (select min(r_regionkey) from region) as r").await.unwrap();
    let declared = df.schema();
    let batches = df.collect().await.unwrap();
    let names = |fields: &datafusion::arrow::datatypes::Fields| -> Vec<String> {
        fields
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect()
    };
    assert_eq!(
        names(batches[0].schema().fields()),
        names(declared.fields())
    );
    assert_eq!(declared.field(0).name(), "max(nation.n_nationkey)");
    assert_eq!(
        rows(&batches),
        vec![vec!["24".to_string(), "1".to_string()]]
    );
    let err = session
        .sql("set shoal.task.placement_timeout = 1e20")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected seconds"), "{err}");
}

/// The plans of every stage of `graph`, as `EXPLAIN` shows them.
fn stage_plans(graph: &shoal_planner::graph::TaskGraph) -> String {
    graph
        .stages
        .iter()
        .map(|s| {
            datafusion::physical_plan::displayable(s.plan.as_ref())
                .indent(true)
                .to_string()
        })
        .collect()
}

/// TPC-H q15 compares each supplier's revenue with the largest, both from the view
/// `revenue`: `lineitem` is aggregated once, by a job of its own, and the subquery and the
/// query both read its rows from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregation_a_scalar_subquery_shares_with_its_query_is_computed_once() {
    let session = tpch_session(2, 2);
    let q15 = shoal::tpch::QUERIES[14];
    assert_eq!(q15.0, "q15");
    let df = session.sql(q15.1).await.unwrap();
    let plans = stage_plans(&session.prepare(df.logical_plan()).await.unwrap());
    assert!(!plans.contains("lineitem.parquet"), "{plans}");
    assert!(
        plans.contains("partition_sizes="),
        "a scan of memory: {plans}"
    );
    assert!(plans.contains("supplier.parquet"), "{plans}");
    let batches = session.sql(q15.1).await.unwrap().collect().await.unwrap();
    assert_rows_eq("q15", &answer("q15"), &rows(&batches));

    // An aggregation of more rows than are kept in memory is computed where it is read.
    let groups = shoal_planner::shared_subplan::MAX_SHARED_ROWS + 10;
    let sql = format!(
        "with t as (select value % {groups} as k, count(*) as c from range({}) group by k) \
         select count(*), sum(k) from t where c = (select max(c) from t)",
        2 * groups
    );
    let df = session.sql(&sql).await.unwrap();
    let plans = stage_plans(&session.prepare(df.logical_plan()).await.unwrap());
    assert!(!plans.contains("partition_sizes="), "{plans}");
    let batches = session.sql(&sql).await.unwrap().collect().await.unwrap();
    let keys = groups as u64;
    assert_eq!(
        rows(&batches),
        vec![vec![keys.to_string(), (keys * (keys - 1) / 2).to_string()]]
    );
}

/// What a shared aggregation must not be mistaken for: scans of different tables that
/// DataFusion's plan equality takes for the same (two `range` calls), a recursive query's
/// work table; and two subqueries sharing one aggregation with their query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_same_aggregation_of_the_same_tables_is_shared() {
    let session = tpch_session(2, 2);
    let answer_of = |sql: &'static str| {
        let session = session.clone();
        async move { rows(&session.sql(sql).await.unwrap().collect().await.unwrap()) }
    };
    // `a` counts 1,000 rows, `b` 20: each `range` scan reads its own rows.
    let ranges = "WITH a AS (SELECT value % 10 AS k, count(*) AS c FROM range(1000) GROUP BY k), \
                       b AS (SELECT value % 10 AS k, count(*) AS c FROM range(20) GROUP BY k) \
                  SELECT sum(c) FROM a WHERE c > (SELECT min(c) FROM b) - 1";
    assert_eq!(answer_of(ranges).await, vec![vec!["1000".to_string()]]);
    let recursive = "WITH RECURSIVE r(n) AS \
                       (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5 GROUP BY n) \
                     SELECT n FROM r WHERE n = (SELECT max(n) FROM r)";
    assert_eq!(answer_of(recursive).await, vec![vec!["5".to_string()]]);
    // Suppliers with the most and the fewest line items: one aggregation of `lineitem`,
    // read from memory by both subqueries and the query.
    let both = "WITH t AS (SELECT l_suppkey AS k, count(*) AS c FROM lineitem GROUP BY l_suppkey) \
                SELECT count(*), sum(k) FROM t \
                WHERE c = (SELECT max(c) FROM t) OR c = (SELECT min(c) FROM t)";
    let df = session.sql(both).await.unwrap();
    let plans = stage_plans(&session.prepare(df.logical_plan()).await.unwrap());
    assert!(!plans.contains("lineitem.parquet"), "{plans}");
    let joined = "WITH t AS (SELECT l_suppkey AS k, count(*) AS c FROM lineitem GROUP BY l_suppkey) \
                  SELECT count(*), sum(k) FROM t, (SELECT max(c) AS most, min(c) AS fewest FROM t) m \
                  WHERE c = most OR c = fewest";
    let expected = answer_of(joined).await;
    let suppliers: u64 = expected[0][0].parse().unwrap();
    assert!(suppliers > 0, "{expected:?}");
    assert_eq!(answer_of(both).await, expected);
}

/// DataFusion's runtime memory limit and spill directory would change nothing in Shoal,
/// whose workers own their pools: `SET` refuses them naming the Shoal setting, the builder
/// sets that setting.
#[tokio::test]
async fn datafusion_runtime_settings_name_or_set_the_shoal_setting() {
    let session = Session::builder()
        .workers(1)
        .option("datafusion.runtime.memory_limit", "64MiB")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(session.config().worker.memory_limit.bytes(), 64 << 20);
    let error = session
        .sql("set datafusion.runtime.memory_limit = '100M'")
        .await
        .unwrap_err();
    assert_eq!(error.kind(), shoal::ErrorKind::Input);
    let text = error.to_string();
    assert!(
        text.contains("use shoal.worker.memory_limit")
            && text.contains("SHOAL_WORKER_MEMORY_LIMIT"),
        "{text}"
    );
    // Other runtime settings still go to DataFusion.
    session
        .sql("set datafusion.execution.batch_size = 1024")
        .await
        .unwrap();
}
