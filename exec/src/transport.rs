//! Moving task outputs between workers. The in-process transport shares batches by `Arc`.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use shoal_planner::{JobId, PartitionKey, ShuffleIo, WorkerId};

use crate::store::ResultStore;

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

    fn store(&self, worker: WorkerId) -> Result<&Arc<ResultStore>> {
        self.stores
            .get(worker)
            .ok_or_else(|| DataFusionError::Execution(format!("unknown worker {worker}")))
    }

    /// Streams bucket `key` held by worker `from`.
    pub fn fetch(&self, key: PartitionKey, from: WorkerId) -> Result<SendableRecordBatchStream> {
        let batches = self.store(from)?.get(&key)?;
        Ok(batches_stream(batches))
    }

    /// Drops every output of `job` on every worker.
    pub fn remove_job(&self, job: JobId) {
        for store in &self.stores {
            store.remove_job(job);
        }
    }

    /// The stores, by worker id.
    pub fn stores(&self) -> &[Arc<ResultStore>] {
        &self.stores
    }
}

/// A stream over batches already in memory.
pub fn batches_stream(batches: Vec<RecordBatch>) -> SendableRecordBatchStream {
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter(batches.into_iter().map(Ok)),
    ))
}

/// The [`ShuffleIo`] a task running on `local` uses.
#[derive(Debug)]
pub struct WorkerIo {
    local: WorkerId,
    transport: Arc<InProcessTransport>,
}

impl WorkerIo {
    /// I/O for tasks on worker `local`.
    pub fn new(local: WorkerId, transport: Arc<InProcessTransport>) -> Self {
        Self { local, transport }
    }
}

impl ShuffleIo for WorkerIo {
    fn put(&self, key: PartitionKey, batches: Vec<RecordBatch>) -> Result<()> {
        self.transport.store(self.local)?.put(key, batches)
    }

    fn fetch(&self, key: PartitionKey, from: WorkerId) -> Result<SendableRecordBatchStream> {
        self.transport.fetch(key, from)
    }
}
