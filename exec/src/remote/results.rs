//! Reading a job's result from the workers that hold it, through lost workers.
//!
//! The client reads the result partitions in order. When a read fails (the worker died,
//! hangs, or dropped the output), the client tells the scheduler, which recomputes what
//! that worker held from lineage and sends the partitions' new places on the job's
//! stream; the scheduler may also learn of the loss first (a closed connection, missed
//! heartbeats) and send them unasked. A partition not yet started is then read from its
//! new place. One lost part-way through is read again and the rows already delivered
//! are skipped, after checking that the last of them comes out the same: that holds when
//! every stage replays exactly (see [`shoal_planner::replay`]); otherwise the read fails
//! in one line saying why.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use shoal_planner::{
    ErrorKind, JobId, PartitionKey, ReplayHazard, StageId, TaskId, WorkerId, shoal_err,
};

use super::control::{ControlClient, connect_error};
use super::events::failure_from_proto;
use super::proto::{self, job_event};
use crate::flight::FlightTransport;
use crate::transport::Transport;

/// Lost reads one job may report before the client gives up on its result.
const MAX_LOST_READS: u32 = 64;

/// Where one result partition is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Location {
    pub(super) worker: WorkerId,
    pub(super) address: String,
}

/// What the reader waited for.
enum Step {
    Batch(Option<Result<RecordBatch>>),
    Event(std::result::Result<Option<proto::JobEvent>, tonic::Status>),
}

/// The partition being read.
struct Reading {
    worker: WorkerId,
    batches: SendableRecordBatchStream,
    /// Rows of the new read still to drop: the client had them before the loss.
    skip: usize,
}

/// Where a delivered job's result comes from.
pub(super) struct ResultSource {
    pub(super) job: JobId,
    /// The result stage.
    pub(super) stage: StageId,
    /// The scheduler's URL and a client of it, to report lost reads.
    pub(super) url: String,
    pub(super) client: ControlClient,
    pub(super) transport: Arc<FlightTransport>,
    /// The job's stream from the scheduler, which carries relocations after `Done`.
    pub(super) events: tonic::Streaming<proto::JobEvent>,
}

/// A delivered job's result, read partition by partition. Holding it keeps the job (and
/// its outputs) alive on the cluster: the job ends when its stream to the scheduler does.
pub(super) struct ResultReader {
    source: ResultSource,
    locations: Vec<Location>,
    /// What keeps a lost partition from being resumed part-way, if anything.
    hazard: Option<ReplayHazard>,
    /// The partition being read, and how many of its rows were handed out.
    partition: usize,
    delivered: usize,
    /// The last row handed out, to check a resumed read against.
    last_row: Option<RecordBatch>,
    reading: Option<Reading>,
    lost_reads: u32,
}

impl ResultReader {
    pub(super) fn new(
        source: ResultSource,
        locations: Vec<Location>,
        hazard: Option<ReplayHazard>,
    ) -> Self {
        Self {
            source,
            locations,
            hazard,
            partition: 0,
            delivered: 0,
            last_row: None,
            reading: None,
            lost_reads: 0,
        }
    }

    /// The result's batches, in partition order.
    pub(super) fn into_stream(self) -> futures::stream::BoxStream<'static, Result<RecordBatch>> {
        futures::stream::unfold(Some(self), |reader| async move {
            let mut reader = reader?;
            match reader.next().await {
                Some(Ok(batch)) => Some((Ok(batch), Some(reader))),
                // Nothing after an error: the job's stream closes with the reader.
                Some(Err(e)) => Some((Err(e), None)),
                None => None,
            }
        })
        .boxed()
    }

    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if self.partition >= self.locations.len() {
                return None;
            }
            if self.reading.is_none()
                && let Err(e) = self.open()
            {
                return Some(Err(e));
            }
            let step = {
                let reading = self.reading.as_mut().expect("opened above");
                let events = &mut self.source.events;
                tokio::select! {
                    batch = reading.batches.next() => Step::Batch(batch),
                    event = events.message() => Step::Event(event),
                }
            };
            let handled = match step {
                Step::Batch(Some(Ok(batch))) => match self.take(batch) {
                    Ok(Some(batch)) => return Some(Ok(batch)),
                    other => other.map(|_| ()),
                },
                Step::Batch(Some(Err(e))) => self.lost(e.to_string()).await,
                Step::Batch(None) => self.finish_partition(),
                Step::Event(event) => self.relocated(event).map(|_| ()),
            };
            if let Err(e) = handled {
                return Some(Err(e));
            }
        }
    }

    /// The current partition was read to its end.
    fn finish_partition(&mut self) -> Result<()> {
        if self.reading.as_ref().is_some_and(|r| r.skip > 0) {
            return Err(self.cannot_resume("its new copy has fewer rows than were already read"));
        }
        self.reading = None;
        self.partition += 1;
        self.delivered = 0;
        self.last_row = None;
        Ok(())
    }

    /// Starts reading the current partition from where it is now, after the rows the
    /// client already has.
    fn open(&mut self) -> Result<()> {
        if self.delivered > 0
            && let Some(hazard) = &self.hazard
        {
            return Err(self.cannot_resume(&format!("the query does not replay exactly: {hazard}")));
        }
        let Location { worker, address } = self.locations[self.partition].clone();
        self.source.transport.set_address_if_new(worker, address);
        let key = PartitionKey {
            job: self.source.job,
            task: TaskId {
                stage: self.source.stage,
                partition: self.partition,
            },
            bucket: 0,
        };
        self.reading = Some(Reading {
            worker,
            batches: self.source.transport.fetch(key, worker)?,
            skip: self.delivered,
        });
        Ok(())
    }

    /// The part of `batch` to hand out, after dropping rows already delivered.
    fn take(&mut self, batch: RecordBatch) -> Result<Option<RecordBatch>> {
        let reading = self.reading.as_mut().expect("reading");
        let rows = batch.num_rows();
        let batch = if reading.skip > 0 {
            let dropped = reading.skip.min(rows);
            reading.skip -= dropped;
            if reading.skip == 0 {
                // The row just before the resume point must be the one handed out last.
                let boundary = batch.slice(dropped - 1, 1);
                let same = self
                    .last_row
                    .as_ref()
                    .is_some_and(|last| same_row(last, &boundary));
                if !same {
                    return Err(self.cannot_resume(
                        "its new copy differs from the rows already read (an aggregate or \
                         sort that spilled in one run and not the other orders rows \
                         differently)",
                    ));
                }
            }
            batch.slice(dropped, rows - dropped)
        } else {
            batch
        };
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        self.delivered += batch.num_rows();
        self.last_row = Some(batch.slice(batch.num_rows() - 1, 1));
        Ok(Some(batch))
    }

    /// Reading the current partition failed: report it and wait for its new place.
    async fn lost(&mut self, cause: String) -> Result<()> {
        let worker = self.reading.take().map_or(0, |r| r.worker);
        if let Some(ReplayHazard::Effects(why)) = &self.hazard {
            return Err(shoal_err(
                ErrorKind::WorkerLost,
                format!(
                    "the result of job {} was lost on worker {worker} after it was computed, \
                     and it is not computed again because {why}: {cause}",
                    self.source.job
                ),
            ));
        }
        self.lost_reads += 1;
        if self.lost_reads > MAX_LOST_READS {
            return Err(shoal_err(
                ErrorKind::FetchFailed,
                format!(
                    "gave up reading the result of job {} after {MAX_LOST_READS} failed reads: \
                     {cause}",
                    self.source.job
                ),
            ));
        }
        tracing::info!(
            "reading result partition {} of job {} from worker {worker} failed: {cause}",
            self.partition,
            self.source.job
        );
        let report = proto::ResultLostRequest {
            job: self.source.job,
            partition: self.partition as u32,
            worker_id: worker as u64,
            cause,
            read: (0..self.partition as u32).collect(),
        };
        self.source
            .client
            .result_lost(report)
            .await
            .map_err(|status| connect_error(&self.source.url, &status))?;
        // The next relocation that names this partition says where to read it (a stale
        // one pointing at the same worker fails again, and is reported again).
        loop {
            let event = self.source.events.message().await;
            if self.relocated(event)? {
                return Ok(());
            }
        }
    }

    /// Handles a message on the job's stream after `Done`: new places for unread
    /// partitions (a read in progress from a place that changed starts over there), or
    /// the job's failure. Returns whether it named the partition being read.
    fn relocated(
        &mut self,
        event: std::result::Result<Option<proto::JobEvent>, tonic::Status>,
    ) -> Result<bool> {
        let event = event.map_err(|status| connect_error(&self.source.url, &status))?;
        let Some(event) = event else {
            return Err(shoal_err(
                ErrorKind::Io,
                format!(
                    "lost the connection to the scheduler at {} while reading the result",
                    self.source.url
                ),
            ));
        };
        match event.kind {
            Some(job_event::Kind::Relocated(relocated)) => {
                let mut named = false;
                for output in relocated.outputs {
                    let partition = output.partition as usize;
                    if partition < self.partition || partition >= self.locations.len() {
                        continue;
                    }
                    let place = Location {
                        worker: output.worker_id as WorkerId,
                        address: output.flight_address,
                    };
                    if partition == self.partition
                        && self
                            .reading
                            .as_ref()
                            .is_some_and(|r| r.worker != place.worker)
                    {
                        // The worker being read from was lost: read the new copy.
                        self.reading = None;
                    }
                    named |= partition == self.partition;
                    self.locations[partition] = place;
                }
                Ok(named)
            }
            Some(job_event::Kind::Failed(failed)) => {
                let (kind, message) = failure_from_proto(&failed);
                Err(shoal_err(kind, message))
            }
            _ => Ok(false),
        }
    }

    fn cannot_resume(&self, why: &str) -> DataFusionError {
        shoal_err(
            ErrorKind::WorkerLost,
            format!(
                "result partition {} of job {} was lost after {} of its rows were read and \
                 cannot be resumed: {why}; run the query again",
                self.partition, self.source.job, self.delivered
            ),
        )
    }
}

/// Whether two one-row batches hold the same values (NaNs equal, unlike `==`).
fn same_row(a: &RecordBatch, b: &RecordBatch) -> bool {
    let fields = a
        .schema()
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let rows = RowConverter::new(fields).and_then(|converter| {
        let left = converter.convert_columns(a.columns())?;
        let right = converter.convert_columns(b.columns())?;
        Ok(left.row(0) == right.row(0))
    });
    rows.unwrap_or_else(|_| a.columns() == b.columns())
}
