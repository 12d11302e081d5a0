//! Every stage of every TPC-H plan survives `datafusion-proto` with Shoal's codec: the
//! decoded stages, run on the cluster, still give the reference answers.

use std::sync::Arc;

use futures::TryStreamExt;
use shoal_planner::{Stage, TaskGraph, decode_plan, encode_plan};

use crate::common::{answer, assert_rows_eq, rows, tpch_session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoded_stages_give_the_same_answers() {
    let session = tpch_session(2, 3);
    let task_ctx = session.context().task_ctx();
    for (query, sql) in shoal::tpch::QUERIES {
        let mut statements = session.parse(sql).unwrap();
        let last = statements.pop().unwrap();
        for statement in statements {
            session
                .statement(statement)
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
        }
        let df = session.statement(last).await.unwrap();
        let graph = session.prepare(df.logical_plan()).await.unwrap();
        let mut stages = Vec::with_capacity(graph.stages.len());
        for stage in &graph.stages {
            let bytes = encode_plan(Arc::clone(&stage.plan))
                .unwrap_or_else(|e| panic!("{query} stage {}: {e}", stage.id));
            let plan = decode_plan(&bytes, &task_ctx)
                .unwrap_or_else(|e| panic!("{query} stage {}: {e}", stage.id));
            assert_eq!(plan.name(), "ShuffleWriteExec");
            assert_eq!(
                plan.children()[0].schema(),
                stage.plan.children()[0].schema(),
                "{query} stage {}",
                stage.id
            );
            stages.push(Stage {
                plan,
                ..stage.clone()
            });
        }
        let decoded = TaskGraph::from_stages(stages);
        let batches: Vec<_> = session
            .execute_graph(decoded)
            .stream
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_rows_eq(query, &answer(query), &rows(&batches));
    }
}

/// Mutated stage plans (bytes flipped, cut short, spliced) are refused with an error and
/// never panic the decoder: a worker decodes what the network hands it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_plan_bytes_are_errors_not_panics() {
    let session = tpch_session(2, 3);
    let task_ctx = session.context().task_ctx();
    let mut seeds = Vec::new();
    for (_, sql) in shoal::tpch::QUERIES.iter().take(6) {
        let df = session.sql(sql).await.unwrap();
        let graph = session.prepare(df.logical_plan()).await.unwrap();
        for stage in &graph.stages {
            seeds.push(encode_plan(Arc::clone(&stage.plan)).unwrap());
        }
    }
    // A fixed-seed xorshift generator, so a failure reproduces.
    let mut state: u64 = 0x5eed_1234_abcd_9876;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut refused = 0;
    for round in 0..3000 {
        let seed = &seeds[next() as usize % seeds.len()];
        let mut bytes = seed.clone();
        match next() % 3 {
            0 => {
                for _ in 0..1 + next() % 4 {
                    let at = next() as usize % bytes.len();
                    bytes[at] ^= 1 << (next() % 8);
                }
            }
            1 => bytes.truncate(next() as usize % bytes.len()),
            _ => {
                let other = &seeds[next() as usize % seeds.len()];
                let cut = next() as usize % bytes.len().min(other.len());
                bytes.splice(cut.., other[cut..].iter().copied());
            }
        }
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decode_plan(&bytes, &task_ctx)
        }));
        match decoded {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!(
                "round {round}: decoding {} mutated bytes panicked",
                bytes.len()
            ),
        }
    }
    assert!(refused > 100, "most mutations are refused: {refused}");
}

#[test]
fn scans_nested_past_the_bound_are_refused_not_a_stack_overflow() {
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_plan::ExecutionPlan;
    use datafusion::physical_plan::empty::EmptyExec;
    use shoal_planner::scan::FileScanContextExec;
    let nested = |depth: usize| {
        let mut plan: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(Arc::new(Schema::empty())));
        for _ in 0..depth {
            plan = Arc::new(FileScanContextExec::from_parts(plan, vec!["f".into()]));
        }
        encode_plan(plan).unwrap()
    };
    let ctx = datafusion::prelude::SessionContext::new().task_ctx();
    decode_plan(&nested(3), &ctx).unwrap();
    let err = decode_plan(&nested(40), &ctx).unwrap_err().to_string();
    assert!(err.contains("scans nested more than 16 deep"), "{err}");
    // The bound is per call: a refused plan leaves none of its depth behind.
    decode_plan(&nested(3), &ctx).unwrap();
}

/// Array stages that cut pieces, read them and reduce runs of chunks keep those through
/// the codec; a program whose runs or pieces do not fit its chunks is refused on decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_pieces_and_runs_survive_the_codec_and_bad_ones_are_refused() {
    use shoal_planner::array::{ArrayLimits, ChunkExec, ChunkProgram, Op, lower};
    use shoal_planner::{OutputSpec, ShuffleWriteExec};

    let session = shoal::Session::builder()
        .workers(2)
        .memory_limit(4 << 20)
        .build()
        .unwrap();
    let task_ctx = session.context().task_ctx();
    let limits = ArrayLimits {
        fan_in: 4,
        ..session.array_limits()
    };
    let x = session.random_uniform(&[400, 400], &[20, 400], 3).unwrap();
    let rechunked = x.rechunk(&[400, 20]).unwrap();
    let labels: Vec<usize> = (0..400).map(|i| i % 3).collect();
    // States for 3 groups per 4-row chunk outweigh the chunk: partial tasks take runs.
    let grouped = session
        .random_uniform(&[400, 400], &[4, 400], 4)
        .unwrap()
        .group_reduce(shoal::ReduceOp::Mean, 0, labels, 3, true)
        .unwrap();
    let program_of = |plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>| {
        Arc::clone(shoal_planner::array::exec::stage_program(plan).expect("an array stage"))
    };
    let roundtrip = |plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>| {
        decode_plan(&encode_plan(plan).unwrap(), &task_ctx)
    };
    let mut cut = None;
    let mut ran = None;
    for expr in [rechunked.expr(), grouped.expr()] {
        for stage in lower(expr, limits).unwrap().stages {
            let program = program_of(&stage.plan);
            let decoded = program_of(&roundtrip(Arc::clone(&stage.plan)).unwrap());
            assert_eq!(
                format!("{:?}", decoded.nodes),
                format!("{:?}", program.nodes)
            );
            assert_eq!(decoded.pieces, program.pieces);
            if program.pieces.is_some() {
                cut = Some(program);
            } else if matches!(&program.nodes[program.root()].op, Op::Partial { run, .. } if !run.is_empty())
            {
                ran = Some(program);
            }
        }
    }
    let (cut, ran) = (cut.expect("a pieces stage"), ran.expect("a run of chunks"));

    let stage = |program: ChunkProgram,
                 output: OutputSpec|
     -> Arc<dyn datafusion::physical_plan::ExecutionPlan> {
        Arc::new(ShuffleWriteExec::new(
            Arc::new(ChunkExec::new(Arc::new(program))),
            output,
        ))
    };
    // Runs along no axis of the input, or along two.
    for run in [vec![4], vec![2, 2], vec![0, 1]] {
        let mut bad = (*ran).clone();
        let root = bad.root();
        if let Op::Partial { run: r, .. } = &mut bad.nodes[root].op {
            *r = run.clone();
        }
        let err = roundtrip(stage(bad, OutputSpec::Single))
            .unwrap_err()
            .to_string();
        assert!(err.contains("runs along the wrong axes"), "{run:?}: {err}");
    }
    // Pieces that are not inside the chunks, and a stage writing more pieces than cut.
    let mut bad = (*cut).clone();
    bad.pieces = Some(shoal_planner::array::ChunkGrid::regular(
        &[400, 400],
        &[30, 400],
    ));
    let buckets = cut.buckets();
    let err = roundtrip(stage(bad, OutputSpec::Pieces(buckets)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not refine its chunks"), "{err}");
    let err = roundtrip(stage((*cut).clone(), OutputSpec::Pieces(buckets + 1)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pieces its array program does not cut"),
        "{err}"
    );
}

/// `sql`'s physical plan, through the codec and back, run in one process.
async fn run_through_the_codec(sql: &str) -> Vec<datafusion::arrow::record_batch::RecordBatch> {
    let ctx = datafusion::prelude::SessionContext::new();
    let plan = ctx
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let task_ctx = ctx.task_ctx();
    let decoded = decode_plan(&encode_plan(plan).unwrap(), &task_ctx).unwrap();
    datafusion::physical_plan::collect(decoded, task_ctx)
        .await
        .unwrap()
}

/// DataFusion's protobuf form decodes a `Float16` literal as `Float32`; Shoal's codec
/// sends it as a cast, so a decoded stage still gives `Float16` (a `MIN` over it panicked
/// on a worker when it met `Float32`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float16_literals_keep_their_type_through_the_codec() {
    use datafusion::arrow::array::{Array, Float16Array};
    use datafusion::arrow::datatypes::DataType;

    let sql = "select k, min(f) as low from (select 1 as k, arrow_cast(1.8125, 'Float16') as f \
               union all select 1 as k, arrow_cast(6.5, 'Float16') as f) group by k";
    let batches = run_through_the_codec(sql).await;
    let low = batches[0].column(1);
    assert_eq!(low.data_type(), &DataType::Float16);
    let low = low.as_any().downcast_ref::<Float16Array>().unwrap();
    assert_eq!(f32::from(low.value(0)), 1.8125);
}

/// DataFusion's protobuf form drops the one empty grouping set of `GROUPING SETS (())`
/// (its flags list is empty), and the decoded partial aggregate yielded no row; Shoal's
/// converter restores the set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_grouping_set_survives_the_codec() {
    for (sql, expected) in [
        (
            "select sum(value) from generate_series(10) group by grouping sets (())",
            "55",
        ),
        (
            "select count(*) from generate_series(10) where false group by grouping sets (())",
            "0",
        ),
        ("select sum(value) from generate_series(10)", "55"),
    ] {
        let batches = run_through_the_codec(sql).await;
        assert_eq!(rows(&batches), [[expected]], "{sql}");
    }
}

/// A key filter's scan bounds travel with it and come back over its keys; bounds over
/// other columns (which would bound those) are refused.
#[test]
fn a_key_filter_s_scan_bounds_must_be_over_its_keys() {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::PhysicalExpr;
    use datafusion::physical_expr::expressions::{Column, DynamicFilterPhysicalExpr, lit};
    use datafusion::physical_plan::empty::EmptyExec;
    use shoal_planner::key_filter::{KeyFilterExec, summary_schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
    ]));
    let input = Arc::new(EmptyExec::new(Arc::clone(&schema)));
    let summaries = Arc::new(EmptyExec::new(summary_schema(&[DataType::Int64])));
    let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new("k", 0));
    let filter = |over: &Arc<dyn PhysicalExpr>| {
        let bounds = Arc::new(DynamicFilterPhysicalExpr::new(
            vec![Arc::clone(over)],
            lit(true),
        ));
        let exec = KeyFilterExec::new(input.clone(), summaries.clone(), vec![Arc::clone(&key)]);
        encode_plan(Arc::new(exec.with_scan_bounds(bounds))).unwrap()
    };
    let ctx = datafusion::prelude::SessionContext::new().task_ctx();
    let decoded = decode_plan(&filter(&key), &ctx).unwrap();
    let decoded = decoded.downcast_ref::<KeyFilterExec>().unwrap();
    assert!(decoded.scan_bounds().is_some());
    let other: Arc<dyn PhysicalExpr> = Arc::new(Column::new("v", 1));
    let err = decode_plan(&filter(&other), &ctx).unwrap_err().to_string();
    assert!(
        err.contains("scan bounds over columns other than its keys"),
        "{err}"
    );
}
