//! SQL that keeps state in the client (in-memory tables) or needs care in the plan codec,
//! on a scheduler and worker processes.

use super::{Cluster, rows};

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
