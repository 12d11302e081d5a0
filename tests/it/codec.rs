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
