//! Fuzzing entry points: each takes arbitrary bytes where Shoal takes input it does not
//! control, and must return rather than panic. Each returns how much it got through
//! (statements planned, plans decoded, rows read), so the replay test can check that its
//! seeds are read, not just refused. The cargo-fuzz
//! targets in `fuzz/` call them; `tests/it/fuzz.rs` replays their corpora (and every crash
//! found, kept under `fuzz/regressions/`) as ordinary tests.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

/// Run once before fuzzing: a panic that Shoal catches and turns into an error (as
/// `decode_plan` does with datafusion-proto's and Arrow's) is the right answer, so it must
/// not abort the fuzzer as libFuzzer's panic hook would; a panic that escapes an entry
/// point still does.
pub fn init() {
    std::panic::set_hook(Box::new(|_| {}));
}

/// The runtime every entry point blocks on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// The rows of table `t(a bigint, b varchar)`.
fn context_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
            Arc::new(StringArray::from(vec![Some("x"), Some("y"), None])),
        ],
    )
    .expect("a batch")
}

/// A context with a small table `t(a bigint, b varchar)`, as queries expect one.
fn context() -> SessionContext {
    let ctx = SessionContext::new();
    let batch = context_batch();
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).expect("a table");
    ctx.register_table("t", Arc::new(table))
        .expect("registered");
    ctx
}

/// SQL text through Shoal's statement planning, DataFusion's physical planning and the
/// stage split; nothing is executed. Returns the statements split into stages.
pub fn sql(data: &[u8]) -> usize {
    let Ok(text) = std::str::from_utf8(data) else {
        return 0;
    };
    let ctx = context();
    runtime().block_on(async {
        let Ok(statements) = shoal_sql::parse_sql(text, "generic") else {
            return 0;
        };
        let mut split = 0;
        for statement in statements {
            // A query, or the statement an `EXPLAIN` shows the stages of.
            let plan = match shoal_sql::plan_statement(&ctx, statement).await {
                Ok(shoal_sql::Planned::Query(plan)) => plan,
                Ok(shoal_sql::Planned::Explain { inner, .. }) => (*inner).clone(),
                _ => continue,
            };
            if let Ok(physical) =
                shoal_planner::planning::physical_plan_of(&ctx.state(), &plan).await
                && shoal_planner::split_into_stages(physical).is_ok()
            {
                split += 1;
            }
        }
        split
    })
}

/// Bytes a worker would take for a stage plan. Returns 1 if they decode.
pub fn plan(data: &[u8]) -> usize {
    let ctx = context();
    usize::from(shoal_planner::decode_plan(data, &ctx.task_ctx()).is_ok())
}

/// The session the file targets read with, made once: a session per input would spend
/// most of the fuzzing time starting workers.
fn session() -> &'static shoal::Session {
    static SESSION: OnceLock<shoal::Session> = OnceLock::new();
    SESSION.get_or_init(|| {
        shoal::Session::builder()
            .workers(1)
            .build()
            .expect("a session")
    })
}

/// Registers `path` as a table of its own name (callers on other threads share the
/// session), reads it whole and drops the table. Returns the rows read.
fn read_table(path: &std::path::Path) -> usize {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = format!(
        "f{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let session = session();
    let rows = (|| {
        session.register(&name, path.to_str()?).ok()?;
        runtime().block_on(async {
            let df = session.sql(&format!("select * from {name}")).await.ok()?;
            let batches = df.collect().await.ok()?;
            Some(batches.iter().map(|b| b.num_rows()).sum())
        })
    })();
    let _ = session.context().deregister_table(name.as_str());
    rows.unwrap_or(0)
}

/// A file's bytes read as CSV (`csv`) or Parquet, through a query over it. Returns the
/// rows read.
fn read_file(data: &[u8], extension: &str) -> usize {
    let Ok(dir) = tempfile::tempdir() else {
        return 0;
    };
    let path = dir.path().join(format!("input.{extension}"));
    if std::fs::write(&path, data).is_err() {
        return 0;
    }
    read_table(&path)
}

/// A CSV file's bytes; returns the rows read.
pub fn csv(data: &[u8]) -> usize {
    read_file(data, "csv")
}

/// A Parquet file's bytes; returns the rows read.
pub fn parquet(data: &[u8]) -> usize {
    read_file(data, "parquet")
}

/// Splits a byte string into the files of a store: each entry is a name's length (one
/// byte), the name, the content's length (two bytes, little-endian) and the content.
/// Names that would leave the store (absolute, `..`, odd characters) are skipped.
pub fn unpack_files(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    while let Some((&n, rest)) = data.split_first() {
        let Some((name, rest)) = rest.split_at_checked(n as usize) else {
            break;
        };
        let Some((len, rest)) = rest.split_at_checked(2) else {
            break;
        };
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        let (content, rest) = rest.split_at(len.min(rest.len()));
        data = rest;
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let safe = !name.is_empty()
            && !name.starts_with('/')
            && !name
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
        if safe {
            files.push((name.to_string(), content.to_vec()));
        }
    }
    files
}

/// The inverse of [`unpack_files`], for writing seeds.
pub fn pack_files(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, content) in files {
        let len = u16::try_from(content.len()).expect("a seed file under 64 KiB");
        out.push(u8::try_from(name.len()).expect("a short name"));
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(content);
    }
    out
}

/// A Zarr store's files (packed as [`unpack_files`] reads them): opened as a dataset
/// (metadata, coordinates, CF decoding) and read whole through SQL (every chunk).
/// Returns the cells read.
pub fn zarr(data: &[u8]) -> usize {
    let Ok(dir) = tempfile::tempdir() else {
        return 0;
    };
    let store = dir.path().join("store.zarr");
    for (name, content) in unpack_files(data) {
        let path = store.join(&name);
        if let Some(parent) = path.parent()
            && std::fs::create_dir_all(parent).is_err()
        {
            continue;
        }
        // A name that is also a directory (`a` and `a/b`) keeps the first.
        let _ = std::fs::write(&path, content);
    }
    let Some(path) = store.to_str() else {
        return 0;
    };
    let _ = session().open_zarr(path);
    read_table(&store)
}

/// The operations of a `wire` input: messages as a worker or client sends them to the
/// scheduler, and the connection events around them.
#[derive(Debug, Clone)]
pub enum WireOp {
    /// A worker connects; its first message.
    Join(Vec<u8>),
    /// A connected worker sends a message.
    WorkerSends(u8, Vec<u8>),
    /// A connected worker ends the tasks it was sent (finished, failed, fetch failed or
    /// cancelled, by the second value modulo 4).
    WorkerRuns(u8, u8),
    /// A worker's connection closes.
    WorkerLeaves(u8),
    /// A client submits a job.
    Submit(Vec<u8>),
    /// A client cancels a job.
    Cancel(Vec<u8>),
    /// A client reports a result partition it could not read.
    ResultLost(Vec<u8>),
    /// A client closes a job's stream.
    ClientLeaves(u8),
    /// A client asks for the status.
    Status,
    /// The scheduler's timer fires.
    Tick,
}

const WIRE_OPS: u8 = 10;

impl WireOp {
    fn code(&self) -> u8 {
        match self {
            WireOp::Join(_) => 0,
            WireOp::WorkerSends(..) => 1,
            WireOp::WorkerRuns(..) => 2,
            WireOp::WorkerLeaves(_) => 3,
            WireOp::Submit(_) => 4,
            WireOp::Cancel(_) => 5,
            WireOp::ResultLost(_) => 6,
            WireOp::ClientLeaves(_) => 7,
            WireOp::Status => 8,
            WireOp::Tick => 9,
        }
    }
}

/// A `wire` input: each operation is its code, then its small arguments (a byte each),
/// then a message as its length (two bytes, little-endian) and its bytes.
pub fn pack_wire(ops: &[WireOp]) -> Vec<u8> {
    let mut out = Vec::new();
    let message = |out: &mut Vec<u8>, bytes: &[u8]| {
        let len = u16::try_from(bytes.len()).expect("a message under 64 KiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
    };
    for op in ops {
        out.push(op.code());
        match op {
            WireOp::Join(m) | WireOp::Submit(m) | WireOp::Cancel(m) | WireOp::ResultLost(m) => {
                message(&mut out, m)
            }
            WireOp::WorkerSends(w, m) => {
                out.push(*w);
                message(&mut out, m);
            }
            WireOp::WorkerRuns(w, e) => out.extend_from_slice(&[*w, *e]),
            WireOp::WorkerLeaves(i) | WireOp::ClientLeaves(i) => out.push(*i),
            WireOp::Status | WireOp::Tick => {}
        }
    }
    out
}

/// The inverse of [`pack_wire`]; a truncated operation ends the input.
pub fn unpack_wire(mut data: &[u8]) -> Vec<WireOp> {
    fn byte(data: &mut &[u8]) -> Option<u8> {
        let (&b, rest) = data.split_first()?;
        *data = rest;
        Some(b)
    }
    fn message(data: &mut &[u8]) -> Option<Vec<u8>> {
        let (len, rest) = data.split_at_checked(2)?;
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        let (m, rest) = rest.split_at(len.min(rest.len()));
        *data = rest;
        Some(m.to_vec())
    }
    let mut ops = Vec::new();
    let data = &mut data;
    while let Some(code) = byte(data) {
        let op = match code % WIRE_OPS {
            0 => message(data).map(WireOp::Join),
            1 => byte(data).and_then(|w| Some(WireOp::WorkerSends(w, message(data)?))),
            2 => byte(data).and_then(|w| Some(WireOp::WorkerRuns(w, byte(data)?))),
            3 => byte(data).map(WireOp::WorkerLeaves),
            4 => message(data).map(WireOp::Submit),
            5 => message(data).map(WireOp::Cancel),
            6 => message(data).map(WireOp::ResultLost),
            7 => byte(data).map(WireOp::ClientLeaves),
            8 => Some(WireOp::Status),
            _ => Some(WireOp::Tick),
        };
        let Some(op) = op else { break };
        ops.push(op);
    }
    ops
}

/// Control-plane messages from workers and clients, through the scheduler process's
/// message handling (`shoal_exec::remote::offline`). A malformed message must fail only
/// its own request: the scheduler may not panic on any, even one it would catch.
/// Returns the requests it accepted.
pub fn wire(data: &[u8]) -> usize {
    use shoal_exec::remote::offline::{OfflineScheduler, TaskEnding};
    let mut scheduler = OfflineScheduler::new();
    let mut accepted = 0;
    for op in unpack_wire(data) {
        let ok = match op {
            WireOp::Join(m) => scheduler.join(&m).is_ok(),
            WireOp::WorkerSends(w, m) => scheduler.worker_sends(w.into(), &m).is_ok(),
            WireOp::WorkerRuns(w, e) => {
                let ending = [
                    TaskEnding::Finished,
                    TaskEnding::Failed,
                    TaskEnding::FetchFailed,
                    TaskEnding::Cancelled,
                ][usize::from(e % 4)];
                scheduler.worker_runs(w.into(), ending);
                true
            }
            WireOp::WorkerLeaves(w) => {
                scheduler.worker_leaves(w.into());
                true
            }
            WireOp::Submit(m) => scheduler.submit(&m).is_ok(),
            WireOp::Cancel(m) => scheduler.cancel(&m).is_ok(),
            WireOp::ResultLost(m) => scheduler.result_lost(&m).is_ok(),
            WireOp::ClientLeaves(c) => scheduler.client_leaves(c.into()),
            WireOp::Status => scheduler.status().is_ok(),
            WireOp::Tick => {
                scheduler.tick();
                true
            }
        };
        accepted += usize::from(ok);
    }
    assert_eq!(
        scheduler.panics(),
        0,
        "the scheduler panicked handling these messages"
    );
    accepted
}

/// A result store holding one bucket, `(job 1, stage 0, task 0, bucket 0)`, as a worker's
/// Flight service serves it.
fn flight_service() -> &'static (shoal_exec::flight::StoreFlightService, tempfile::TempDir) {
    static SERVICE: OnceLock<(shoal_exec::flight::StoreFlightService, tempfile::TempDir)> =
        OnceLock::new();
    SERVICE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let store =
            Arc::new(shoal_exec::ResultStore::new(dir.path(), 1 << 20).expect("a result store"));
        let batch = context_batch();
        store.put(stored_key(), vec![batch]).expect("stored");
        let service = shoal_exec::flight::StoreFlightService::new(
            store,
            Arc::new(shoal_exec::Security::default()),
        );
        (service, dir)
    })
}

/// The key of the bucket [`ticket`]'s store holds.
pub fn stored_key() -> shoal_planner::PartitionKey {
    shoal_planner::PartitionKey {
        job: 1,
        task: shoal_planner::TaskId {
            stage: 0,
            partition: 0,
        },
        bucket: 0,
    }
}

/// A Flight ticket sent to a worker's data port (`DoGet`). Returns the Flight messages
/// streamed back (0 when the ticket is refused).
pub fn ticket(data: &[u8]) -> usize {
    use arrow_flight::flight_service_server::FlightService;
    use futures::StreamExt;
    let (service, _) = flight_service();
    let request = tonic::Request::new(arrow_flight::Ticket::new(data.to_vec()));
    runtime().block_on(async {
        let Ok(response) = service.do_get(request).await else {
            return 0;
        };
        let mut stream = response.into_inner();
        let mut messages = 0;
        while let Some(Ok(_)) = stream.next().await {
            messages += 1;
        }
        messages
    })
}
