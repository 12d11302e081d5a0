//! Moving task outputs between workers. The in-process transport shares batches by `Arc`.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::TryStreamExt;
use parking_lot::Mutex;
use shoal_planner::error::causes;
use shoal_planner::{ErrorKind, JobId, Part, PartitionKey, ShoalError, ShuffleIo, WorkerId};

use crate::store::{BucketBatches, ResultStore};

/// How task outputs travel. The in-process implementation hands batches over by `Arc`;
/// a network implementation serves the same calls from peers over the wire.
pub trait Transport: std::fmt::Debug + Send + Sync {
    /// The result store of worker `worker`, which must run in this process.
    fn local_store(&self, worker: WorkerId) -> Result<&Arc<ResultStore>>;

    /// Stores `part` of bucket `key` on worker `local`, where its task runs (see
    /// [`Part`]).
    fn put(
        &self,
        local: WorkerId,
        key: PartitionKey,
        part: Part,
        batches: Vec<RecordBatch>,
    ) -> Result<()> {
        self.local_store(local)?.put_part(key, part, batches)
    }

    /// Streams bucket `key` from worker `from`, for a consuming task or the client.
    fn fetch(&self, key: PartitionKey, from: WorkerId) -> Result<SendableRecordBatchStream>;
}

/// All workers of an embedded cluster live in one process: a fetch reads the owning
/// worker's store directly and copies no data.
#[derive(Debug)]
pub struct InProcessTransport {
    stores: Vec<Arc<ResultStore>>,
}

impl InProcessTransport {
    /// A transport over the stores of workers `0..stores.len()`.
    pub fn new(stores: Vec<Arc<ResultStore>>) -> Self {
        Self { stores }
    }

    /// The stores, by worker id.
    pub fn stores(&self) -> &[Arc<ResultStore>] {
        &self.stores
    }
}

impl Transport for InProcessTransport {
    fn local_store(&self, worker: WorkerId) -> Result<&Arc<ResultStore>> {
        self.stores
            .get(worker)
            .ok_or_else(|| DataFusionError::Execution(format!("unknown worker {worker}")))
    }

    fn fetch(&self, key: PartitionKey, from: WorkerId) -> Result<SendableRecordBatchStream> {
        bucket_stream(self.local_store(from)?.batches(&key)?)
    }
}

/// A stream over a bucket of a store in this process, read as it is consumed.
pub fn bucket_stream(mut batches: BucketBatches) -> Result<SendableRecordBatchStream> {
    // The stream states its schema up front: the first batch's.
    let first = batches.next().transpose()?;
    let schema = first
        .as_ref()
        .map(|b| b.schema())
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    let rest = first.map(Ok).into_iter().chain(batches);
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter(rest),
    )))
}

/// Fetching a bucket from `worker` failed: the scheduler recomputes what that peer held.
pub fn fetch_error(worker: WorkerId, message: impl std::fmt::Display) -> DataFusionError {
    ShoalError::new(
        ErrorKind::FetchFailed,
        format!("fetching from worker {worker} failed: {message}"),
    )
    .on_worker(worker)
    .into()
}

/// The worker a failed fetch named, if `error` was caused by one.
pub fn fetch_failure(error: &DataFusionError) -> Option<WorkerId> {
    causes(error)
        .filter_map(|e| e.downcast_ref::<ShoalError>())
        .find(|e| e.kind() == ErrorKind::FetchFailed)
        .and_then(ShoalError::worker)
}

/// Bytes a worker's tasks fetched from each peer, per job, not yet reported.
#[derive(Debug, Default)]
pub struct FetchLog(Mutex<HashMap<(JobId, WorkerId), u64>>);

impl FetchLog {
    /// Tasks of `job` fetched `bytes` from worker `from`.
    pub fn record(&self, job: JobId, from: WorkerId, bytes: u64) {
        *self.0.lock().entry((job, from)).or_default() += bytes;
    }

    /// (job, peer, bytes) fetched since the last call.
    pub fn take(&self) -> Vec<(JobId, WorkerId, u64)> {
        self.0
            .lock()
            .drain()
            .map(|((job, from), bytes)| (job, from, bytes))
            .collect()
    }
}

/// The [`ShuffleIo`] a task running on `local` uses; it counts what it fetches from peers.
#[derive(Debug)]
pub struct WorkerIo {
    local: WorkerId,
    transport: Arc<dyn Transport>,
    fetched: Arc<FetchLog>,
}

impl WorkerIo {
    /// I/O for tasks on worker `local`, counting bytes fetched from peers into `fetched`.
    pub fn new(local: WorkerId, transport: Arc<dyn Transport>, fetched: Arc<FetchLog>) -> Self {
        Self {
            local,
            transport,
            fetched,
        }
    }
}

impl ShuffleIo for WorkerIo {
    fn put(&self, key: PartitionKey, part: Part, batches: Vec<RecordBatch>) -> Result<()> {
        self.transport.put(self.local, key, part, batches)
    }

    fn fetch(&self, key: PartitionKey, from: WorkerId) -> Result<SendableRecordBatchStream> {
        let stream = self.transport.fetch(key, from)?;
        if from == self.local {
            return Ok(stream);
        }
        let (log, job) = (Arc::clone(&self.fetched), key.job);
        let schema = stream.schema();
        let counted = stream.inspect_ok(move |batch| {
            log.record(job, from, batch.get_array_memory_size() as u64);
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, counted)))
    }
}
