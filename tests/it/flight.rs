//! The Arrow Flight data plane: every shuffle and result fetch crosses loopback gRPC, and
//! calls without the session's token are refused.

use arrow_flight::FlightClient;
use arrow_flight::error::FlightError;
use futures::TryStreamExt;
use shoal::Session;
use shoal_exec::flight::ticket_for;
use shoal_planner::{PartitionKey, TaskId};
use tonic::Code;
use tonic::transport::Endpoint;

use crate::common::{answer, assert_rows_eq, rows, tpch_dir};

fn flight_session() -> Session {
    let session = Session::builder()
        .workers(2)
        .partitions(3)
        .option("data_plane", "flight")
        .unwrap()
        .build()
        .unwrap();
    session.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_answers_over_flight() {
    let session = flight_session();
    let (addresses, _) = session.flight_endpoints().expect("a Flight data plane");
    assert_eq!(addresses.len(), 2);
    for (query, sql) in shoal::tpch::QUERIES {
        let results = session
            .sql_script(sql)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e:#}"));
        assert_rows_eq(query, &answer(query), &rows(results.last().unwrap()));
    }
    let served: usize = session.store_stats().iter().map(|s| s.flight_reads).sum();
    assert!(
        served > 22,
        "shuffles and results went over Flight: {:?}",
        session.store_stats()
    );
}

async fn client(address: std::net::SocketAddr) -> FlightClient {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightClient::new(channel)
}

fn code(e: FlightError) -> (Code, String) {
    match e {
        FlightError::Tonic(status) => (status.code(), status.message().to_string()),
        other => panic!("expected a gRPC status, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_token_are_refused() {
    let session = flight_session();
    let (addresses, token) = session.flight_endpoints().unwrap();
    let key = PartitionKey {
        job: 1,
        task: TaskId {
            stage: 0,
            partition: 0,
        },
        bucket: 0,
    };

    let mut anonymous = client(addresses[0]).await;
    let Err(err) = anonymous.do_get(ticket_for(key)).await else {
        panic!("a call without a token is refused")
    };
    let (status, message) = code(err);
    assert_eq!(status, Code::Unauthenticated);
    assert!(message.contains("missing cluster token"), "{message}");

    let mut wrong = client(addresses[0]).await;
    wrong
        .add_header("authorization", "Bearer not-the-token")
        .unwrap();
    let Err(err) = wrong.do_get(ticket_for(key)).await else {
        panic!("a call with a wrong token is refused")
    };
    let (status, message) = code(err);
    assert_eq!(status, Code::Unauthenticated);
    assert!(message.contains("wrong cluster token"), "{message}");

    let mut right = client(addresses[1]).await;
    right
        .add_header("authorization", &format!("Bearer {token}"))
        .unwrap();
    let missing = PartitionKey { job: 999, ..key };
    let result = match right.do_get(ticket_for(missing)).await {
        Ok(stream) => stream.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    };
    let (status, message) = code(result.expect_err("no such output"));
    assert_eq!(status, Code::NotFound);
    assert!(message.contains("job 999"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dictionary_columns_keep_their_type_over_flight() {
    let session = flight_session();
    let df = session
        .sql(
            "select d, count(*) as c from (select arrow_cast(n_name, 'Dictionary(Int32, Utf8)') as d from nation) \
             group by d order by d limit 3",
        )
        .await
        .unwrap();
    let declared = df.schema();
    let batches = df.collect().await.unwrap();
    assert_eq!(batches[0].schema().fields(), declared.fields());
    assert_eq!(
        rows(&batches),
        vec![
            vec!["ALGERIA".to_string(), "1".to_string()],
            vec!["ARGENTINA".into(), "1".into()],
            vec!["BRAZIL".into(), "1".into()]
        ]
    );
}

/// Nested and dictionary columns cross Flight with their exact types: a `LargeList`
/// (64-bit offsets) came back as a `List` read from the wrong offsets, giving empty
/// lists or an invalid batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_lists_and_dictionaries_cross_flight_unchanged() {
    let session = flight_session();
    let sql = "select x, arrow_cast(make_array(x, x + 1, 3), 'LargeList(Int64)') as l, \
               arrow_typeof(arrow_cast(make_array(x), 'LargeList(Int64)')) as t, \
               arrow_cast('k' || x, 'Dictionary(Int32, Utf8)') as d \
               from (values (1), (2), (3)) v(x) order by x";
    let batches = session.sql(sql).await.unwrap().collect().await.unwrap();
    assert_eq!(
        batches[0].schema().field(1).data_type().to_string(),
        "LargeList(Int64)"
    );
    assert!(matches!(
        batches[0].schema().field(3).data_type(),
        shoal::datafusion::arrow::datatypes::DataType::Dictionary(..)
    ));
    assert_eq!(
        rows(&batches),
        [
            ["1", "[1, 2, 3]", "LargeList(Int64)", "k1"],
            ["2", "[2, 3, 3]", "LargeList(Int64)", "k2"],
            ["3", "[3, 4, 3]", "LargeList(Int64)", "k3"],
        ]
    );
}

/// Rows Arrow IPC cannot carry (a dictionary of dictionaries) fail the query at the first
/// read, with the encoder's reason: reading again, or computing them again, cannot help.
/// (A session on worker processes runs such a query in the client instead.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_flight_cannot_encode_fail_once_not_as_a_lost_peer() {
    let session = flight_session();
    let sql = "select arrow_cast(arrow_cast(n_name, 'Dictionary(UInt32, Utf8)'), \
               'Dictionary(Int32, Dictionary(UInt32, Utf8))') from nation";
    let error = session
        .sql(sql)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot send these rows as Arrow IPC"),
        "{error}"
    );
    assert!(!error.contains("failed reads"), "{error}");
    let served: usize = session.store_stats().iter().map(|s| s.flight_reads).sum();
    assert!(served <= 3, "read once, not retried: {served} reads");
}
