//! A worker's result store: task output buckets in memory, spilled to Arrow IPC files
//! in the worker's scratch directory above a memory target, and above what the worker's
//! memory limit leaves beside the reservations of its running tasks.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryPool;
use parking_lot::{Mutex, MutexGuard};
use shoal_planner::shuffle::held_bytes;
use shoal_planner::{JobId, Part, PartitionKey, StageId, TaskId};
use tempfile::TempDir;

enum Entry {
    Memory {
        batches: Vec<RecordBatch>,
        bytes: usize,
    },
    /// Being written to spill file number `file`, outside the lock: readers still get
    /// the batches, and the memory counts until the file is whole.
    Spilling {
        batches: Vec<RecordBatch>,
        bytes: usize,
        file: u64,
    },
    Disk {
        path: PathBuf,
        /// In-memory size of the batches it holds.
        bytes: usize,
    },
}

/// Part `.1` of bucket `.0`: a task whose output outgrows its share of the memory limit
/// hands it over in parts as it goes.
type Slot = (PartitionKey, usize);

/// The parts of one bucket: which run of its task wrote them, how many there are, and
/// whether the last one is in (only then can the bucket be read).
#[derive(Clone, Copy)]
struct Bucket {
    attempt: u32,
    parts: usize,
    complete: bool,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Slot, Entry>,
    buckets: HashMap<PartitionKey, Bucket>,
    /// Jobs that ended: a late `put` from a task that was still finishing is dropped.
    ended: HashSet<JobId>,
    memory_bytes: usize,
    /// The part of `memory_bytes` being written to spill files.
    spilling_bytes: usize,
    /// In-memory size of the buckets on disk now.
    disk_bytes: usize,
    spilled_total: usize,
    spilled_bytes: u64,
    operator_spills: u64,
    operator_spilled_bytes: u64,
    /// Bytes and files spilled per job since [`ResultStore::take_spills`] last ran.
    unreported_spills: HashMap<JobId, (u64, u64)>,
    flight_reads: usize,
    next_file: u64,
}

/// Counters describing a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Bucket parts held (most buckets are one part).
    pub entries: usize,
    /// Bytes held in memory.
    pub memory_bytes: usize,
    /// Bucket parts currently on disk.
    pub spilled_entries: usize,
    /// Their in-memory size.
    pub disk_bytes: usize,
    /// Buckets ever spilled.
    pub spilled_total: usize,
    /// Bytes of buckets ever spilled (in-memory size of the spilled batches).
    pub spilled_bytes: u64,
    /// Buckets served to a peer or client over Arrow Flight.
    pub flight_reads: usize,
    /// Spill files the worker's operators wrote (see
    /// [`ResultStore::record_operator_spills`]).
    pub operator_spills: u64,
    /// Bytes the worker's operators spilled.
    pub operator_spilled_bytes: u64,
}

/// Task outputs of one worker, keyed by (job, task, bucket), each bucket in one or more
/// parts.
pub struct ResultStore {
    dir: TempDir,
    memory_target: usize,
    /// The worker's operator pool and memory limit: the store keeps no more in memory
    /// than the limit leaves beside the pool's reservations.
    bound: OnceLock<(Arc<dyn MemoryPool>, usize)>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ResultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultStore")
            .field("dir", &self.dir.path())
            .field("memory_target", &self.memory_target)
            .finish()
    }
}

impl ResultStore {
    /// A store that spills into a fresh directory under `scratch` (removed on drop) once
    /// more than `memory_target` bytes are held in memory.
    pub fn new(scratch: &Path, memory_target: usize) -> Result<Self> {
        std::fs::create_dir_all(scratch)?;
        let dir = tempfile::Builder::new()
            .prefix("shoal-store-")
            .tempdir_in(scratch)?;
        Ok(Self {
            dir,
            memory_target,
            bound: OnceLock::new(),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Keeps the store within what `limit` leaves beside `pool`'s reservations, too
    /// (set once, by the worker that owns both, with its pause threshold: the rest of its
    /// limit is for what no reservation counts, such as the allocator's spare pages).
    pub fn bound_by(&self, pool: Arc<dyn MemoryPool>, limit: usize) {
        let _ = self.bound.set((pool, limit));
    }

    /// Bytes the store may hold in memory now.
    fn target(&self) -> usize {
        match self.bound.get() {
            Some((pool, limit)) => self
                .memory_target
                .min(limit.saturating_sub(pool.reserved())),
            None => self.memory_target,
        }
    }

    /// Spills the largest in-memory buckets until the store is within its target (after
    /// a task reserved memory, say).
    pub fn make_room(&self) -> Result<()> {
        self.spill_to(self.inner.lock(), self.target())
    }

    /// Spills the largest in-memory buckets, one at a time, until what stays in memory is
    /// within `target`. Each file is written with the lock released: heartbeats, reads
    /// and other tasks' outputs do not wait for the disk.
    fn spill_to<'a>(&'a self, mut inner: MutexGuard<'a, Inner>, target: usize) -> Result<()> {
        while inner.memory_bytes - inner.spilling_bytes > target {
            let victim = inner
                .entries
                .iter()
                .filter_map(|(k, e)| match e {
                    Entry::Memory { bytes, .. } if *bytes > 0 => Some((*bytes, *k)),
                    _ => None,
                })
                .max();
            let Some((_, slot)) = victim else { break };
            let Some(Entry::Memory { batches, bytes }) = inner.entries.remove(&slot) else {
                break;
            };
            inner.next_file += 1;
            let file = inner.next_file;
            inner.spilling_bytes += bytes;
            let spilling = Entry::Spilling {
                batches: batches.clone(),
                bytes,
                file,
            };
            inner.entries.insert(slot, spilling);
            let (key, part) = slot;
            let path = self.dir.path().join(format!(
                "job{}-s{}-t{}-b{}-p{part}-{file}.arrow",
                key.job, key.task.stage, key.task.partition, key.bucket
            ));
            drop(inner);
            let written = write_spill(&path, &batches);
            inner = self.inner.lock();
            // The bucket may have been dropped (its job ended) or replaced meanwhile.
            let current = matches!(inner.entries.get(&slot), Some(Entry::Spilling { file: f, .. }) if *f == file);
            if !current {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            inner.spilling_bytes -= bytes;
            if let Err(e) = written {
                let _ = std::fs::remove_file(&path);
                inner.entries.insert(slot, Entry::Memory { batches, bytes });
                return Err(e.context(format!("spilling task output to {}", path.display())));
            }
            inner.memory_bytes -= bytes;
            inner.spilled_total += 1;
            inner.spilled_bytes += bytes as u64;
            let unreported = inner.unreported_spills.entry(key.job).or_default();
            unreported.0 += bytes as u64;
            unreported.1 += 1;
            inner.disk_bytes += bytes;
            inner.entries.insert(slot, Entry::Disk { path, bytes });
        }
        Ok(())
    }

    /// The directory spill files go to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes spilled per job since the last call.
    pub fn take_spills(&self) -> Vec<(JobId, u64, u64)> {
        let mut inner = self.inner.lock();
        inner
            .unreported_spills
            .drain()
            .map(|(job, (bytes, files))| (job, bytes, files))
            .collect()
    }

    /// Counts what a task's operators (sorts, aggregations, joins) spilled to disk for
    /// `job`: `bytes` in `files` spill files; the worker reports them with its own.
    pub fn record_operator_spills(&self, job: JobId, bytes: u64, files: u64) {
        let mut inner = self.inner.lock();
        inner.operator_spills += files;
        inner.operator_spilled_bytes += bytes;
        let unreported = inner.unreported_spills.entry(job).or_default();
        unreported.0 += bytes;
        unreported.1 += files;
    }

    /// Keeps a finished bucket (as its only part), spilling the largest in-memory buckets
    /// if over target.
    pub fn put(&self, key: PartitionKey, batches: Vec<RecordBatch>) -> Result<()> {
        self.put_part(key, Part::WHOLE, batches)
    }

    /// Keeps `part` of bucket `key` (see [`Part`]), spilling the largest in-memory parts
    /// if over target. String and binary view columns that point into buffers mostly of
    /// other rows (a scan's pages) are compacted first, so a small bucket does not keep
    /// them alive.
    pub fn put_part(&self, key: PartitionKey, part: Part, batches: Vec<RecordBatch>) -> Result<()> {
        let batches = batches
            .iter()
            .map(compact_wasteful_views)
            .collect::<Result<Vec<_>>>()?;
        let bytes = held_bytes(&batches);
        let mut inner = self.inner.lock();
        if inner.ended.contains(&key.job) {
            return Ok(());
        }
        let fresh = Bucket {
            attempt: part.attempt,
            parts: 0,
            complete: false,
        };
        let mut bucket = inner.buckets.get(&key).copied().unwrap_or(fresh);
        if part.attempt < bucket.attempt {
            // A late part of a run that was stopped: a later run owns the bucket.
            return Ok(());
        }
        if part.number == 0 || part.attempt > bucket.attempt {
            Self::drop_parts(&mut inner, key, bucket.parts);
            bucket = fresh;
        }
        bucket.parts = bucket.parts.max(part.number + 1);
        bucket.complete = part.last;
        inner.buckets.insert(key, bucket);
        inner.memory_bytes += bytes;
        let entry = Entry::Memory { batches, bytes };
        if let Some(old) = inner.entries.insert((key, part.number), entry) {
            Self::forget(&mut inner, old);
        }
        self.spill_to(inner, self.target())
    }

    fn drop_parts(inner: &mut Inner, key: PartitionKey, parts: usize) {
        for number in 0..parts {
            if let Some(old) = inner.entries.remove(&(key, number)) {
                Self::forget(inner, old);
            }
        }
    }

    /// Drops what run `attempt` of `task` of `job` left of buckets it did not complete:
    /// the run failed or was stopped.
    pub fn discard_run(&self, job: JobId, task: TaskId, attempt: u32) {
        let mut inner = self.inner.lock();
        let left: Vec<(PartitionKey, usize)> = inner
            .buckets
            .iter()
            .filter(|(k, b)| k.job == job && k.task == task && b.attempt == attempt && !b.complete)
            .map(|(k, b)| (*k, b.parts))
            .collect();
        for (key, parts) in left {
            Self::drop_parts(&mut inner, key, parts);
            inner.buckets.remove(&key);
        }
    }

    fn forget(inner: &mut Inner, entry: Entry) {
        match entry {
            Entry::Memory { bytes, .. } => inner.memory_bytes -= bytes,
            // The writer finds its entry gone and deletes the file.
            Entry::Spilling { bytes, .. } => {
                inner.memory_bytes -= bytes;
                inner.spilling_bytes -= bytes;
            }
            Entry::Disk { path, bytes } => {
                inner.disk_bytes -= bytes;
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Where each part of bucket `key` is, in order.
    fn sources(&self, key: &PartitionKey) -> Result<Vec<Source>> {
        let inner = self.inner.lock();
        let missing = || {
            DataFusionError::Execution(format!(
                "output of job {} {} bucket {} is not in this worker's store",
                key.job, key.task, key.bucket
            ))
        };
        let bucket = inner
            .buckets
            .get(key)
            .filter(|b| b.complete)
            .ok_or_else(missing)?;
        (0..bucket.parts)
            .map(|part| match inner.entries.get(&(*key, part)) {
                Some(Entry::Memory { batches, .. } | Entry::Spilling { batches, .. }) => {
                    Ok(Source::Batches(batches.clone()))
                }
                Some(Entry::Disk { path, .. }) => Ok(Source::File(path.clone())),
                None => Err(missing()),
            })
            .collect()
    }

    /// The batches of bucket `key` (shared with the store when in memory).
    pub fn get(&self, key: &PartitionKey) -> Result<Vec<RecordBatch>> {
        self.batches(key)?.collect()
    }

    /// The batches of bucket `key`, read from its spill files one at a time as they are
    /// taken: a reader holds one batch of a spilled bucket at a time, not all of it.
    pub fn batches(&self, key: &PartitionKey) -> Result<BucketBatches> {
        Ok(BucketBatches {
            sources: self.sources(key)?.into_iter(),
            current: Box::new(std::iter::empty()),
        })
    }

    /// Drops every output of `job`, deleting its spill files.
    pub fn remove_job(&self, job: JobId) {
        self.inner.lock().ended.insert(job);
        self.remove_where(|k| k.job == job);
    }

    /// Drops the outputs of one stage of `job`.
    pub fn remove_stage(&self, job: JobId, stage: StageId) {
        self.remove_where(|k| k.job == job && k.task.stage == stage);
    }

    fn remove_where(&self, doomed: impl Fn(&PartitionKey) -> bool) {
        let mut inner = self.inner.lock();
        let slots: Vec<Slot> = inner
            .entries
            .keys()
            .filter(|(k, _)| doomed(k))
            .copied()
            .collect();
        for slot in slots {
            if let Some(entry) = inner.entries.remove(&slot) {
                Self::forget(&mut inner, entry);
            }
        }
        inner.buckets.retain(|k, _| !doomed(k));
    }

    /// Drops every output and forgets which jobs ended, for a worker that registers with a
    /// new scheduler (whose job numbers start again).
    pub fn clear(&self) {
        self.remove_where(|_| true);
        self.inner.lock().ended.clear();
    }

    /// Drops every output and deletes the store's directory with everything in it
    /// (operators' spill files too), for a worker that is going away while tasks that
    /// share the store may outlive it.
    pub fn discard(&self) {
        self.clear();
        let _ = std::fs::remove_dir_all(self.dir());
    }

    /// Counts a bucket served over Arrow Flight.
    pub fn note_flight_read(&self) {
        self.inner.lock().flight_reads += 1;
    }

    /// Current counters.
    pub fn stats(&self) -> StoreStats {
        Self::stats_of(&self.inner.lock())
    }

    /// [`Self::stats`], or `None` while the store is busy (writing a spill file, say):
    /// for a heartbeat, which must not wait.
    pub fn try_stats(&self) -> Option<StoreStats> {
        self.inner.try_lock().map(|inner| Self::stats_of(&inner))
    }

    fn stats_of(inner: &Inner) -> StoreStats {
        StoreStats {
            entries: inner.entries.len(),
            memory_bytes: inner.memory_bytes,
            spilled_entries: inner
                .entries
                .values()
                .filter(|e| matches!(e, Entry::Disk { .. }))
                .count(),
            disk_bytes: inner.disk_bytes,
            spilled_total: inner.spilled_total,
            spilled_bytes: inner.spilled_bytes,
            flight_reads: inner.flight_reads,
            operator_spills: inner.operator_spills,
            operator_spilled_bytes: inner.operator_spilled_bytes,
        }
    }
}

/// Where one part of a bucket is.
enum Source {
    Batches(Vec<RecordBatch>),
    File(PathBuf),
}

/// The batches of a bucket, part after part; a spilled part is read as it is reached.
pub struct BucketBatches {
    sources: std::vec::IntoIter<Source>,
    current: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
}

impl Iterator for BucketBatches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(batch) = self.current.next() {
                return Some(batch);
            }
            self.current = match self.sources.next()? {
                Source::Batches(batches) => Box::new(batches.into_iter().map(Ok)),
                Source::File(path) => match File::open(&path)
                    .map_err(DataFusionError::from)
                    .and_then(|f| Ok(FileReader::try_new(BufReader::new(f), None)?))
                {
                    Ok(reader) => Box::new(reader.map(move |b| {
                        b.map_err(|e| {
                            DataFusionError::from(e)
                                .context(format!("reading spill file {}", path.display()))
                        })
                    })),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                },
            };
        }
    }
}

/// String and binary views of a batch may point into buffers far larger than the batch
/// (slices of a scan's pages); IPC would send those whole, so views are compacted first.
pub(crate) fn compact_views(batch: &RecordBatch) -> Result<RecordBatch> {
    compact_views_where(batch, |_, _| true)
}

/// A view column's buffers may hold this much more than its rows use before
/// [`ResultStore::put`] compacts it: a multiple of what the rows use, plus a slack that
/// spares small batches the copy. Buckets of a hash exchange each use a share of the
/// buffers they split (half of them for two buckets), which they hold together: copying
/// those would cost time and save nothing, so only a small share counts as waste (a
/// selective filter's rows, or one bucket of many).
const VIEW_WASTE_FACTOR: usize = 8;
const VIEW_WASTE_SLACK: usize = 64 * 1024;

/// `batch` with each string or binary view column whose buffers are mostly bytes of
/// other rows compacted; other columns, and the batch when none is, as they are.
fn compact_wasteful_views(batch: &RecordBatch) -> Result<RecordBatch> {
    compact_views_where(batch, |buffers, used| {
        // The bytes the buffers span (a decoded batch's buffers are slices of a larger
        // message, which `capacity` would count whole).
        let held: usize = buffers.iter().map(|b| b.len()).sum();
        held > VIEW_WASTE_FACTOR * used + VIEW_WASTE_SLACK
    })
}

/// `batch` with each string or binary view column for which `compact(its buffers, the
/// bytes its rows use)` holds compacted.
fn compact_views_where(
    batch: &RecordBatch,
    compact: impl Fn(&[Buffer], usize) -> bool,
) -> Result<RecordBatch> {
    let mut changed = false;
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| {
            let compacted = match c.data_type() {
                DataType::Utf8View => {
                    let views = c.as_string_view();
                    compact(views.data_buffers(), views.total_buffer_bytes_used())
                        .then(|| Arc::new(views.gc()) as ArrayRef)
                }
                DataType::BinaryView => {
                    let views = c.as_binary_view();
                    compact(views.data_buffers(), views.total_buffer_bytes_used())
                        .then(|| Arc::new(views.gc()) as ArrayRef)
                }
                _ => None,
            };
            changed |= compacted.is_some();
            compacted.unwrap_or_else(|| Arc::clone(c))
        })
        .collect();
    if !changed {
        return Ok(batch.clone());
    }
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Writes `batches` to a new Arrow IPC file at `path`, each string and binary view
/// column with only the bytes its rows use (IPC would write every buffer a view
/// points into, for every batch that shares it).
fn write_spill(path: &Path, batches: &[RecordBatch]) -> Result<()> {
    let schema = batches[0].schema();
    let mut writer = FileWriter::try_new(BufWriter::new(File::create(path)?), &schema)?;
    for batch in batches {
        writer.write(&compact_views(batch)?)?;
    }
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use shoal_planner::TaskId;

    use super::*;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..n))]).unwrap()
    }

    fn key(job: JobId, partition: usize) -> PartitionKey {
        PartitionKey {
            job,
            task: TaskId {
                stage: 0,
                partition,
            },
            bucket: 0,
        }
    }

    #[test]
    fn slices_of_one_batch_count_their_shared_buffers_once() {
        let scratch = tempfile::tempdir().unwrap();
        let whole = batch(100_000);
        let store = ResultStore::new(scratch.path(), 2 * 800_000).unwrap();
        let slices: Vec<RecordBatch> = (0..100).map(|i| whole.slice(i * 1000, 1000)).collect();
        store.put(key(1, 0), slices).unwrap();
        let stats = store.stats();
        assert_eq!(stats.spilled_total, 0, "{stats:?}");
        assert!(
            (800_000..900_000).contains(&stats.memory_bytes),
            "the 800 kB buffer once: {stats:?}"
        );
    }

    /// One string view column `s` of 10,000 strings of 100 bytes: the row number, padded.
    fn megabyte_of_strings() -> RecordBatch {
        use datafusion::arrow::array::StringViewArray;
        let strings: StringViewArray = (0..10_000).map(|i| Some(format!("{i:0>100}"))).collect();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        RecordBatch::try_new(schema, vec![Arc::new(strings)]).unwrap()
    }

    #[test]
    fn a_bucket_keeps_only_the_strings_its_rows_use() {
        use datafusion::arrow::array::AsArray;
        // 100 rows of a column of 10,000 strings of 100 bytes (1 MB of string data, as
        // a scan's page would hold): stored, they hold about 10 kB, not the megabyte.
        let whole = megabyte_of_strings();
        let scratch = tempfile::tempdir().unwrap();
        let store = ResultStore::new(scratch.path(), 100_000_000).unwrap();
        store.put(key(1, 0), vec![whole.slice(500, 100)]).unwrap();
        let held = store.stats().memory_bytes;
        assert!(held < 100_000, "a 100-row bucket holds {held} bytes");
        let back = store.get(&key(1, 0)).unwrap();
        assert_eq!(
            back[0].column(0).as_string_view().value(99),
            format!("{:0>100}", 599)
        );
        // A batch that uses most of its strings is kept as it is, uncopied.
        store.put(key(1, 1), vec![whole.clone()]).unwrap();
        let kept = store.get(&key(1, 1)).unwrap();
        let (a, b) = (
            kept[0].column(0).as_string_view(),
            whole.column(0).as_string_view(),
        );
        assert_eq!(a.data_buffers()[0].as_ptr(), b.data_buffers()[0].as_ptr());
    }

    #[test]
    fn spills_above_target_and_reads_back() {
        let scratch = tempfile::tempdir().unwrap();
        let store = ResultStore::new(scratch.path(), 10_000).unwrap();
        store.put(key(1, 0), vec![batch(1000)]).unwrap();
        store.put(key(1, 1), vec![batch(1000), batch(5)]).unwrap();
        store.put(key(2, 0), vec![batch(3)]).unwrap();
        let stats = store.stats();
        assert!(stats.spilled_entries >= 1, "{stats:?}");
        assert!(stats.memory_bytes <= 10_000, "{stats:?}");
        // Only job 1's outputs are large enough to be spilled; the log is read once.
        let spills = store.take_spills();
        assert_eq!(spills.len(), 1, "{spills:?}");
        assert_eq!(
            spills[0],
            (1, stats.spilled_bytes, stats.spilled_total as u64)
        );
        assert!(stats.spilled_bytes >= 8000, "{stats:?}");
        // Nothing spilled was read back or removed yet: all of it is on disk now.
        assert_eq!(stats.disk_bytes as u64, stats.spilled_bytes, "{stats:?}");
        assert!(store.take_spills().is_empty());
        let back = store.get(&key(1, 1)).unwrap();
        let rows: usize = back.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 1005);
        let col = back[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(col.value(999), 999);
        store.remove_job(1);
        assert_eq!(store.stats().entries, 1);
        assert_eq!(store.stats().disk_bytes, 0, "job 1's files are gone");
        let files = std::fs::read_dir(store.dir()).unwrap().count();
        assert_eq!(files, 0, "spill files of job 1 are deleted");
        assert!(store.get(&key(1, 0)).is_err());
        // A worker going away takes its spill files with it.
        store.put(key(3, 0), vec![batch(5000)]).unwrap();
        assert!(store.stats().spilled_entries >= 1);
        store.discard();
        assert!(!store.dir().exists());
    }

    #[test]
    fn a_bucket_in_parts_reads_back_in_order_once_complete_and_a_later_run_replaces_it() {
        let scratch = tempfile::tempdir().unwrap();
        // Room for the smallest part in memory: the others go to disk.
        let store = ResultStore::new(scratch.path(), 3_000).unwrap();
        // Part `number` of run `attempt` of bucket `key`: `rows` rows.
        let put = |key, attempt, number, last, rows| {
            let part = Part {
                attempt,
                number,
                last,
            };
            store.put_part(key, part, vec![batch(rows)]).unwrap();
        };
        let first = |batches: &[RecordBatch]| {
            let column = batches[0].column(0).as_primitive::<Int64Type>();
            (batches.len(), column.value(column.len() - 1))
        };
        put(key(1, 0), 1, 0, false, 1000);
        put(key(1, 0), 1, 1, false, 500);
        assert!(store.get(&key(1, 0)).is_err(), "not complete yet");
        put(key(1, 0), 1, 2, true, 10);
        assert!(store.stats().spilled_entries >= 2, "{:?}", store.stats());
        let rows: Vec<usize> = store
            .batches(&key(1, 0))
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .collect();
        assert_eq!(rows, [1000, 500, 10]);
        assert_eq!(first(&store.get(&key(1, 0)).unwrap()), (3, 999));
        // A later run: its first part drops all three, files too; a late part of the
        // earlier run changes nothing.
        put(key(1, 0), 2, 0, true, 7);
        put(key(1, 0), 1, 3, true, 8);
        assert_eq!(first(&store.get(&key(1, 0)).unwrap()), (1, 6));
        assert_eq!(store.stats().entries, 1);
        assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 0);
        // A run that fails leaves nothing behind, and takes nothing a completed run wrote.
        put(key(1, 1), 3, 0, false, 5000);
        store.discard_run(1, key(1, 1).task, 3);
        store.discard_run(1, key(1, 0).task, 2);
        assert!(store.get(&key(1, 1)).is_err());
        assert_eq!(store.stats().entries, 1);
        assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 0);
        store.remove_stage(1, 0);
        assert!(store.get(&key(1, 0)).is_err(), "no parts left to read");
    }

    #[test]
    fn a_spill_file_keeps_only_the_strings_its_rows_use() {
        use datafusion::arrow::array::{Array, AsArray};
        let scratch = tempfile::tempdir().unwrap();
        // 1,000 slices of 10 rows over one column of 10,000 strings of 100 bytes: every
        // slice points into the same 1 MB of string data.
        let whole = megabyte_of_strings();
        let slices: Vec<RecordBatch> = (0..1000).map(|i| whole.slice(i * 10, 10)).collect();
        let store = ResultStore::new(scratch.path(), 0).unwrap();
        store.put(key(1, 0), slices).unwrap();
        assert_eq!(store.stats().spilled_entries, 1);
        let file = std::fs::read_dir(store.dir())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let size = file.metadata().unwrap().len();
        // About 1 MB of strings plus framing; each slice writing the whole buffer would
        // make it a thousand times that.
        assert!(size < 3_000_000, "the spill file has {size} bytes");
        let back = store.get(&key(1, 0)).unwrap();
        assert_eq!(back.len(), 1000);
        let last = back[999].column(0).as_string_view();
        assert_eq!(last.len(), 10);
        assert_eq!(last.value(9), format!("{:0>100}", 9999));
    }
}
