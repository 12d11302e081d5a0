//! The fuzzing corpora (`fuzz/corpus/TARGET/`) and every crash fuzzing found
//! (`fuzz/regressions/TARGET/`) replayed through the entry points of
//! `shoal_tests::fuzz`: none may panic.

use std::path::PathBuf;

use shoal_planner::{decode_plan, encode_plan, split_into_stages};
use shoal_tests::fuzz;

type Target = fn(&[u8]) -> usize;

const TARGETS: [(&str, Target); 7] = [
    ("sql", fuzz::sql),
    ("plan", fuzz::plan),
    ("csv", fuzz::csv),
    ("parquet", fuzz::parquet),
    ("zarr", fuzz::zarr),
    ("wire", fuzz::wire),
    ("ticket", fuzz::ticket),
];

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file under `fuzz/KIND/TARGET`, sorted.
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn corpora_and_found_crashes_replay_without_a_panic() {
    for (target, run) in TARGETS {
        let corpus = inputs("corpus", target);
        assert!(!corpus.is_empty(), "no seeds for {target}");
        for (path, bytes) in &corpus {
            let got = std::panic::catch_unwind(|| run(bytes));
            let got = got.unwrap_or_else(|_| panic!("{target}: {} panicked", path.display()));
            // Seeds are input Shoal reads: they get through, not just refused.
            assert!(got > 0, "{target}: {} got nowhere", path.display());
        }
        for (path, bytes) in inputs("regressions", target) {
            let replayed = std::panic::catch_unwind(|| run(&bytes));
            assert!(replayed.is_ok(), "{target}: {} panicked", path.display());
        }
    }
}

/// The stage plans of the SQL seeds, encoded as a worker receives them.
fn stage_plans_of_the_sql_seeds() -> Vec<Vec<u8>> {
    let ctx = datafusion::prelude::SessionContext::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut plans = Vec::new();
    runtime.block_on(async {
        ctx.sql("create table t(a bigint, b varchar) as values (1, 'x'), (null, 'y'), (3, null)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        for (path, bytes) in inputs("corpus", "sql") {
            let sql = String::from_utf8(bytes).unwrap();
            let Ok(df) = ctx.sql(&sql).await else {
                panic!("{} does not plan", path.display());
            };
            let physical = df.create_physical_plan().await.unwrap();
            for stage in split_into_stages(physical).unwrap().stages {
                plans.push(encode_plan(stage.plan).unwrap());
            }
        }
    });
    plans
}

/// The `plan` corpus is the SQL seeds' stage plans; with `SHOAL_FUZZ_SEEDS=1` this test
/// writes them again (after a change to the plan codec), and either way every one must
/// decode: a codec change that breaks them fails here.
#[test]
fn plan_seeds_are_stage_plans_that_decode() {
    if std::env::var_os("SHOAL_FUZZ_SEEDS").is_some() {
        let dir = fuzz_dir().join("corpus/plan");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, plan) in stage_plans_of_the_sql_seeds().iter().enumerate() {
            std::fs::write(dir.join(format!("stage{i:03}.bin")), plan).unwrap();
        }
    }
    let ctx = datafusion::prelude::SessionContext::new();
    let seeds = inputs("corpus", "plan");
    assert!(seeds.len() >= 12, "{} plan seeds", seeds.len());
    for (path, bytes) in seeds {
        if let Err(e) = decode_plan(&bytes, &ctx.task_ctx()) {
            panic!(
                "{} no longer decodes ({e}); rewrite the seeds with SHOAL_FUZZ_SEEDS=1",
                path.display()
            );
        }
    }
}

/// Writes `seeds` as `fuzz/corpus/TARGET/NAME` when `SHOAL_FUZZ_SEEDS` is set; either way
/// checks that the corpus holds every one of them, as written.
fn seeds(target: &str, seeds: Vec<(String, Vec<u8>)>) {
    let dir = fuzz_dir().join("corpus").join(target);
    if std::env::var_os("SHOAL_FUZZ_SEEDS").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (name, bytes) in seeds {
        let kept = std::fs::read(dir.join(&name)).unwrap_or_default();
        assert!(
            kept == bytes,
            "fuzz/corpus/{target}/{name} is stale; rewrite the seeds with SHOAL_FUZZ_SEEDS=1"
        );
    }
}

/// Every file of the store at `dir`, relative to it.
fn store_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let name = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// The `zarr` seeds: small stores written by Shoal (Zarr v2 and v3, raw and compressed
/// chunks, a datetime coordinate), packed as the target reads them.
#[test]
fn zarr_seeds_are_stores_shoal_writes() {
    use shoal::labeled::{ZarrCodec, ZarrOptions};
    use shoal::{DataArray, Dataset, Index, Session};
    let s = Session::builder().workers(1).build().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("v3-raw", 3, ZarrCodec::None),
        ("v3-zstd", 3, ZarrCodec::Zstd(1)),
        ("v2-raw", 2, ZarrCodec::None),
        ("v2-gzip", 2, ZarrCodec::Gzip(1)),
    ];
    let mut packed = Vec::new();
    for (name, format, codec) in cases {
        let values = ndarray::Array2::from_shape_fn((4, 3), |(i, j)| (i * 3 + j) as f64 - 2.5);
        let x = s.from_ndarray(&values.into_dyn(), &[2, 3]).unwrap();
        let day = 86_400 * 1_000_000_000;
        let time = Index::DateTime((0..4).map(|d| d * day).collect());
        let var = DataArray::new(x, &["time", "lat"])
            .unwrap()
            .with_coord("time", "time", time)
            .unwrap()
            .with_coord("lat", "lat", Index::F64(vec![-1.0, 0.0, 1.0]))
            .unwrap();
        let path = dir.path().join(format!("{name}.zarr"));
        let ds = Dataset::new().with_var("x", var).unwrap();
        runtime
            .block_on(ds.to_zarr_with(path.to_str().unwrap(), ZarrOptions { format, codec }))
            .unwrap();
        let bytes = fuzz::pack_files(&store_files(&path));
        // The seed reads back whole: 12 cells.
        assert_eq!(fuzz::zarr(&bytes), 12, "{name}");
        packed.push((format!("{name}.bin"), bytes));
    }
    seeds("zarr", packed);
}

/// The `wire` seeds: conversations a real cluster has (workers joining, a job run to its
/// end, a lost result, a cancel, a lost worker), as the scheduler receives them.
#[test]
fn wire_seeds_are_conversations_the_scheduler_answers() {
    use fuzz::WireOp::*;
    use prost::Message;
    use shoal_exec::remote::PROTOCOL_VERSION;
    use shoal_exec::remote::proto;

    let join = |port: u16| {
        let register = proto::Register {
            protocol_version: PROTOCOL_VERSION,
            flight_address: format!("127.0.0.1:{port}"),
            slots: 2,
            memory_limit: 1 << 30,
            resources: [("gpu".to_string(), 1.0)].into(),
            group: String::new(),
        };
        Join(
            proto::WorkerMessage {
                kind: Some(proto::worker_message::Kind::Register(register)),
            }
            .encode_to_vec(),
        )
    };
    let stage = |inputs: Vec<u32>, tasks: u32| proto::StageDef {
        plan: Vec::new(),
        inputs,
        tasks,
        noop: true,
    };
    let submit = |stages: Vec<proto::StageDef>| {
        Submit(
            proto::SubmitJob {
                stages,
                config: [("datafusion.execution.target_partitions".into(), "2".into())].into(),
                resources: Default::default(),
                placement_timeout_secs: 5.0,
                pipelined: true,
                recompute_results: true,
                outline: None,
            }
            .encode_to_vec(),
        )
    };
    let heartbeat = WorkerSends(
        0,
        proto::WorkerMessage {
            kind: Some(proto::worker_message::Kind::Batch(proto::WorkerBatch {
                heartbeat: Some(proto::Heartbeat {
                    memory_used: 4096,
                    spilled_bytes: 0,
                    spills: 0,
                    memory_stored: 0,
                    disk_bytes: 0,
                }),
                fetched: vec![proto::Fetched {
                    job: 1,
                    from_worker: 1,
                    bytes: 100,
                }],
                spilled: vec![proto::Spilled {
                    job: 1,
                    bytes: 10,
                    spills: 1,
                }],
                ..Default::default()
            })),
        }
        .encode_to_vec(),
    );
    let lost = ResultLost(
        proto::ResultLostRequest {
            job: 1,
            partition: 0,
            worker_id: 1,
            cause: "transport error".into(),
            read: vec![1],
        }
        .encode_to_vec(),
    );
    let cancel = Cancel(proto::CancelRequest { job: 2 }.encode_to_vec());
    let conversations = [
        (
            "job-to-the-end",
            vec![
                join(9001),
                join(9002),
                submit(vec![stage(vec![], 3), stage(vec![0], 2)]),
                WorkerRuns(0, 0),
                WorkerRuns(1, 0),
                heartbeat.clone(),
                WorkerRuns(0, 0),
                WorkerRuns(1, 0),
                Status,
                ClientLeaves(0),
            ],
        ),
        (
            "lost-result",
            vec![
                join(9001),
                join(9002),
                submit(vec![stage(vec![], 2), stage(vec![0], 2)]),
                WorkerRuns(0, 0),
                WorkerRuns(1, 0),
                WorkerRuns(0, 0),
                WorkerRuns(1, 0),
                lost,
                WorkerLeaves(1),
                WorkerRuns(0, 0),
                WorkerRuns(0, 0),
                Tick,
                ClientLeaves(0),
            ],
        ),
        (
            "failures-and-cancel",
            vec![
                join(9001),
                submit(vec![stage(vec![], 4)]),
                submit(vec![stage(vec![], 1), stage(vec![0], 1)]),
                WorkerRuns(0, 1),
                WorkerRuns(0, 2),
                cancel,
                join(9002),
                WorkerRuns(1, 3),
                WorkerRuns(0, 0),
                Tick,
                Status,
            ],
        ),
    ];
    let mut packed = Vec::new();
    for (name, ops) in conversations {
        let n = ops.len();
        let bytes = fuzz::pack_wire(&ops);
        // Every request of a seed is accepted.
        assert_eq!(fuzz::wire(&bytes), n, "{name}");
        packed.push((format!("{name}.bin"), bytes));
    }
    seeds("wire", packed);
}

/// The `ticket` seed: the ticket of the bucket the target's store holds (one it does not
/// hold is refused).
#[test]
fn ticket_seeds_name_buckets() {
    use shoal_exec::flight::ticket_for;
    let held = ticket_for(fuzz::stored_key()).ticket.to_vec();
    // The schema and the batch.
    assert_eq!(fuzz::ticket(&held), 2);
    let mut other = fuzz::stored_key();
    other.bucket = 1;
    let missing = ticket_for(other).ticket.to_vec();
    assert_eq!(fuzz::ticket(&missing), 0);
    seeds("ticket", vec![("held.bin".into(), held)]);
}
