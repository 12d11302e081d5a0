//! Pipelined exchanges: a consumer stage starts while the stages it reads still run,
//! and the answers stay exact.

use shoal::Session;
use shoal_exec::protocol::{JobEvent, JobEventKind};
use shoal_planner::StageId;

use crate::common::{answer, assert_rows_eq, events_until_done, rows, tpch_session};

/// Runs TPC-H `query` on `session`; returns (consumer, input) pairs where a task of
/// the consumer stage was started before the input stage it reads had finished.
async fn early_starts(session: &Session, query: &str) -> Vec<(StageId, StageId)> {
    let sql = shoal::tpch::QUERIES
        .iter()
        .find(|(n, _)| *n == query)
        .unwrap()
        .1;
    let mut events = session.events().await.unwrap();
    let results = session.sql_script(sql).await.unwrap();
    assert_rows_eq(query, &answer(query), &rows(results.last().unwrap()));
    let seen: Vec<JobEvent> = events_until_done(&mut events).await;
    let inputs: Vec<Vec<StageId>> = seen
        .iter()
        .find_map(|e| match &e.kind {
            JobEventKind::Submitted { outline, .. } => {
                Some(outline.stages.iter().map(|s| s.inputs.clone()).collect())
            }
            _ => None,
        })
        .expect("the job was submitted");
    assert!(inputs.len() > 2, "{query} has exchanges: {inputs:?}");
    let finished_at = |stage: StageId| {
        seen.iter()
            .position(|e| e.kind == JobEventKind::StageFinished { stage })
            .expect("every stage finished")
    };
    let mut early = Vec::new();
    for (consumer, reads) in inputs.iter().enumerate() {
        let first_start = seen.iter().position(
            |e| matches!(e.kind, JobEventKind::TaskStarted { task, .. } if task.stage == consumer),
        );
        for &input in reads {
            if first_start.is_some_and(|start| start < finished_at(input)) {
                early.push((consumer, input));
            }
        }
    }
    early
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_stages_start_before_their_inputs_finish_and_answer_exactly() {
    let session = tpch_session(2, 2);
    session
        .sql("SET shoal.execution.pipelined_exchanges = true")
        .await
        .unwrap();
    for query in ["q18", "q21", "q03"] {
        let early = early_starts(&session, query).await;
        assert!(
            !early.is_empty(),
            "{query}: no consumer stage started before its inputs finished"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_every_stage_waits_for_its_inputs() {
    let session = tpch_session(2, 2);
    for query in ["q18", "q21", "q03"] {
        assert_eq!(early_starts(&session, query).await, [], "{query}");
    }
}
