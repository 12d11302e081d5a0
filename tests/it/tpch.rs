//! All 22 TPC-H queries at scale factor 0.01 through SQL, against the shared answers,
//! with two workers and several partitions per exchange.

use crate::common::{answer, assert_rows_eq, partition_every_join, rows, tpch_session};

async fn check(query: &str) {
    let session = tpch_session(2, 3);
    let sql = shoal::tpch::QUERIES
        .iter()
        .find(|(n, _)| *n == query)
        .unwrap()
        .1;
    let results = session
        .sql_script(sql)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e:#}"));
    let last = results.last().unwrap();
    assert_rows_eq(query, &answer(query), &rows(last));
}

macro_rules! tpch_tests {
    ($($name:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            check(stringify!($name)).await;
        }
    )*};
}

tpch_tests!(
    q01, q02, q03, q04, q05, q06, q07, q08, q09, q10, q11, q12, q13, q14, q15, q16, q17, q18, q19,
    q20, q21, q22
);

/// The 22 queries with every hash join partitioned, however small its build side: the
/// probe stages that filter by their build keys (`KeyFilterExec`) give the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_join_partitioned_with_key_filters() {
    let session = tpch_session(2, 3);
    partition_every_join(&session).await;
    let mut filtered: Vec<&str> = Vec::new();
    for (query, sql) in shoal::tpch::QUERIES {
        let results = session
            .sql_script(sql)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e:#}"));
        assert_rows_eq(query, &answer(query), &rows(results.last().unwrap()));
        let last = sql.trim().trim_end_matches(';').rsplit(';').next().unwrap();
        let plan = session
            .sql_script(&format!("EXPLAIN {last}"))
            .await
            .unwrap_or_else(|e| panic!("{query}: {e:#}"));
        if rows(plan.last().unwrap())
            .concat()
            .join("\n")
            .contains("KeyFilterExec")
        {
            filtered.push(query);
        }
    }
    // Most queries join; all but those over one table or only cross joins filter.
    assert!(filtered.len() >= 15, "{filtered:?}");
}
