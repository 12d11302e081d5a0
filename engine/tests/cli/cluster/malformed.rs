//! Malformed messages sent to real scheduler and worker processes: bytes that are not a
//! message, jobs and worker reports that make no sense, Flight tickets that name nothing.
//! Each fails its own request with a clear error; the processes keep running and the
//! cluster goes on answering queries.

use std::sync::Arc;

use arrow_flight::{FlightClient, Ticket};
use futures::StreamExt;
use shoal_exec::remote::PROTOCOL_VERSION;
use shoal_exec::remote::control::{ControlClient, control_client};
use shoal_exec::remote::proto::{self, job_event, worker_message};
use shoal_exec::security::Security;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;

use super::{Cluster, TOKEN};

/// A message whose field 1 is bytes: where the receiver expects a number (`CancelRequest`)
/// it does not decode.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbage {
    #[prost(bytes = "vec", tag = "1")]
    bytes: Vec<u8>,
}

async fn cancel_with_garbage(url: &str, security: &Arc<Security>) -> tonic::Status {
    let channel = security.endpoint(url).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(Garbage {
        bytes: vec![0xff; 16],
    });
    security.authorize(&mut request).unwrap();
    let path = PathAndQuery::from_static("/shoal.v1.Scheduler/Cancel");
    let codec = tonic_prost::ProstCodec::<Garbage, proto::CancelReply>::default();
    grpc.unary(request, path, codec).await.unwrap_err()
}

fn noop_stage(inputs: Vec<u32>, tasks: u32) -> proto::StageDef {
    proto::StageDef {
        plan: Vec::new(),
        inputs,
        tasks,
        noop: true,
    }
}

fn job(stages: Vec<proto::StageDef>) -> proto::SubmitJob {
    proto::SubmitJob {
        stages,
        placement_timeout_secs: 10.0,
        ..Default::default()
    }
}

/// The first event of a job's stream, or the call's error.
async fn first_event(
    client: &mut ControlClient,
    job: proto::SubmitJob,
) -> Result<job_event::Kind, tonic::Status> {
    let mut events = client.submit(job).await?.into_inner();
    Ok(events.next().await.unwrap()?.kind.unwrap())
}

/// A job's failure: the events until it.
async fn failure(client: &mut ControlClient, job: proto::SubmitJob) -> String {
    let mut events = client.submit(job).await.unwrap().into_inner();
    while let Some(event) = events.next().await {
        if let Some(job_event::Kind::Failed(f)) = event.unwrap().kind {
            return f.message;
        }
    }
    panic!("the job did not fail");
}

fn register(version: u32) -> proto::WorkerMessage {
    proto::WorkerMessage {
        kind: Some(worker_message::Kind::Register(proto::Register {
            protocol_version: version,
            flight_address: "127.0.0.1:1".to_string(),
            slots: 0,
            memory_limit: u64::MAX,
            resources: [("gpu".to_string(), f64::NAN)].into(),
            group: String::new(),
        })),
    }
}

/// A worker report that names jobs, stages and tasks that do not exist, with sizes that
/// overflow when added.
fn nonsense_batch() -> proto::WorkerMessage {
    let task = |job, stage, partition| proto::TaskRef {
        job,
        stage,
        partition,
        attempt: u32::MAX,
    };
    let finished = proto::task_ended::Outcome::Finished(proto::Finished {
        bucket_bytes: vec![u64::MAX, u64::MAX],
        slot: u32::MAX,
        duration_secs: f64::NAN,
        metrics: vec![proto::OperatorMetric {
            node: u32::MAX,
            name: "x".repeat(10_000),
            value: u64::MAX,
            unit: u32::MAX,
        }],
    });
    let failed = proto::task_ended::Outcome::Failed(proto::Failed {
        message: "x".repeat(10_000),
        fetch_failed: true,
        fetch_worker: u64::MAX,
        kind: "no such kind".to_string(),
        retryable: true,
    });
    proto::WorkerMessage {
        kind: Some(worker_message::Kind::Batch(proto::WorkerBatch {
            ended: vec![
                proto::TaskEnded {
                    task: Some(task(999, 7, 3)),
                    outcome: Some(finished.clone()),
                },
                proto::TaskEnded {
                    task: Some(task(1, u32::MAX, u32::MAX)),
                    outcome: Some(finished),
                },
                proto::TaskEnded {
                    task: Some(task(u64::MAX, 0, 0)),
                    outcome: Some(failed),
                },
                proto::TaskEnded {
                    task: None,
                    outcome: None,
                },
            ],
            heartbeat: Some(proto::Heartbeat {
                memory_used: u64::MAX,
                spilled_bytes: u64::MAX,
                spills: u64::MAX,
                memory_stored: u64::MAX,
                disk_bytes: u64::MAX,
            }),
            fetched: vec![proto::Fetched {
                job: 1,
                from_worker: u64::MAX,
                bytes: u64::MAX,
            }],
            spilled: vec![proto::Spilled {
                job: u64::MAX,
                bytes: u64::MAX,
                spills: u64::MAX,
            }],
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_fail_their_own_request_and_spare_the_cluster() {
    let mut cluster = Cluster::start(1);
    let security = Arc::new(Security::with_token(TOKEN));
    let mut client = control_client(&cluster.url, &security).await.unwrap();

    // Bytes that do not decode.
    let status = cancel_with_garbage(&cluster.url, &security).await;
    assert!(status.message().contains("decode"), "{status:?}");

    // Jobs that make no sense are refused before they start.
    let backwards = job(vec![noop_stage(vec![1], 1), noop_stage(vec![], 1)]);
    let status = first_event(&mut client, backwards).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("stage 0 reads stage 1"),
        "{status:?}"
    );
    let huge = job(vec![
        noop_stage(vec![], u32::MAX),
        noop_stage(vec![0], u32::MAX),
    ]);
    let status = first_event(&mut client, huge).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("at most"), "{status:?}");
    let status = first_event(&mut client, job(Vec::new())).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // A plan that is not a plan fails its job on the worker, in one line.
    let mut garbage = job(vec![noop_stage(vec![], 2)]);
    garbage.stages[0].noop = false;
    garbage.stages[0].plan = vec![0x12, 0xff, 0xff, 0xff, 0x0f, 0x01];
    let message = failure(&mut client, garbage).await;
    assert!(message.contains("malformed plan"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");

    // A "worker" of another protocol, one that does not register first, and one that
    // registers and then reports nonsense.
    let refused = client
        .join(futures::stream::iter([register(PROTOCOL_VERSION + 7)]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let refused = client
        .join(futures::stream::iter([nonsense_batch()]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let messages = [
        register(PROTOCOL_VERSION),
        nonsense_batch(),
        register(PROTOCOL_VERSION),
    ];
    let mut joined = client
        .join(futures::stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let Some(proto::scheduler_message::Kind::Registered(_)) =
        joined.next().await.unwrap().unwrap().kind
    else {
        panic!("not registered");
    };
    drop(joined);

    // Reports about results and jobs that do not exist.
    client
        .result_lost(proto::ResultLostRequest {
            job: 12345,
            partition: u32::MAX,
            worker_id: u64::MAX,
            cause: String::new(),
            read: vec![u32::MAX; 1000],
        })
        .await
        .unwrap();
    let reply = client.cancel(proto::CancelRequest { job: u64::MAX }).await;
    assert!(!reply.unwrap().into_inner().cancelled);

    // Flight tickets that are not tickets, or name nothing.
    let status = client
        .status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let address = status.workers[0].address.clone();
    let channel = security
        .endpoint(&address)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut flight = FlightClient::new(channel);
    flight
        .add_header("authorization", &format!("Bearer {TOKEN}"))
        .unwrap();
    for (ticket, code) in [
        (vec![1, 2, 3], Code::InvalidArgument),
        (vec![0xab; 32], Code::NotFound),
    ] {
        match flight.do_get(Ticket::new(ticket)).await {
            Err(arrow_flight::error::FlightError::Tonic(status)) => {
                assert_eq!(status.code(), code, "{status:?}")
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a bad ticket was served"),
        }
    }

    // Both processes are still up, and the cluster answers.
    assert!(cluster.scheduler.try_wait().unwrap().is_none());
    assert!(cluster.workers[0].try_wait().unwrap().is_none());
    let session = cluster.session();
    let batches = session
        .sql("select sum(value) from generate_series(1, 1000)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        super::common::rows(&batches),
        vec![vec!["500500".to_string()]]
    );
    let status = session.status().await.unwrap();
    assert_eq!(
        status.workers.iter().filter(|w| w.alive).count(),
        1,
        "{status:?}"
    );
}
