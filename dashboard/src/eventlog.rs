//! The event log: every job event as one JSON line (the Server-Sent Events form with the
//! time it arrived), in numbered files of bounded size of which only the newest few are
//! kept, so a finished cluster's jobs can be looked at again (`shoal dashboard --replay`).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use shoal_exec::{ErrorKind, TaskId};
use shoal_exec::{JobEvent, JobEventKind, MetricUnit, OperatorMetric, Progress};

use crate::json::{epoch_seconds, event_json};

/// Bytes a log file grows to before the next one starts.
pub const DEFAULT_FILE_BYTES: u64 = 64 << 20;
/// Log files kept; the oldest goes when another starts.
pub const DEFAULT_FILES: usize = 8;

/// An open event log in a directory.
pub struct EventLog {
    dir: PathBuf,
    file_bytes: u64,
    files: usize,
    seq: u64,
    out: BufWriter<File>,
    written: u64,
}

impl EventLog {
    /// Opens a log in `dir` (created if needed), starting a new file after any already
    /// there; files grow to about `file_bytes`, and at most `files` are kept.
    pub fn open(dir: &Path, file_bytes: u64, files: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let after = log_files(dir)?.last().map_or(0, |(seq, _)| *seq);
        let (seq, file) = create_after(dir, after)?;
        let out = BufWriter::new(file);
        let log = Self {
            dir: dir.to_path_buf(),
            file_bytes: file_bytes.max(1),
            files: files.max(1),
            seq,
            out,
            written: 0,
        };
        log.prune()?;
        Ok(log)
    }

    /// Appends `event`, received at `at`; starts the next file when this one is full.
    pub fn append(&mut self, event: &JobEvent, at: SystemTime) -> std::io::Result<()> {
        let mut line = event_json(event);
        line["at"] = serde_json::json!(epoch_seconds(at));
        let mut text = line.to_string();
        text.push('\n');
        if self.written > 0 && self.written + text.len() as u64 > self.file_bytes {
            self.out.flush()?;
            let (seq, file) = create_after(&self.dir, self.seq)?;
            self.seq = seq;
            self.out = BufWriter::new(file);
            self.written = 0;
            self.prune()?;
        }
        self.out.write_all(text.as_bytes())?;
        self.written += text.len() as u64;
        Ok(())
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Deletes the oldest files beyond the count kept.
    fn prune(&self) -> std::io::Result<()> {
        let files = log_files(&self.dir)?;
        let extra = files.len().saturating_sub(self.files);
        for (_, path) in files.into_iter().take(extra) {
            std::fs::remove_file(path)?;
        }
        Ok(())
    }
}

/// A new log file numbered after `after`: never one that exists (another process may
/// log to the same directory), so nothing written is overwritten.
fn create_after(dir: &Path, after: u64) -> std::io::Result<(u64, File)> {
    let mut seq = after + 1;
    loop {
        match File::options()
            .write(true)
            .create_new(true)
            .open(file_name(dir, seq))
        {
            Ok(file) => return Ok((seq, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => seq += 1,
            Err(e) => return Err(e),
        }
    }
}

fn file_name(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("events-{seq:08}.jsonl"))
}

/// The log files in `dir`, oldest first.
fn log_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("events-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            files.push((seq, path));
        }
    }
    files.sort();
    Ok(files)
}

/// Every event of the log in `dir`, oldest first, with the time it arrived. A line that
/// is not an event (a file cut short by a crash) is an error naming the file and line.
pub fn read_log(dir: &Path) -> Result<Vec<(SystemTime, JobEvent)>, String> {
    let files = log_files(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if files.is_empty() {
        return Err(format!(
            "no event log files (events-*.jsonl) in {}",
            dir.display()
        ));
    }
    let mut events = Vec::new();
    for (_, path) in files {
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let event = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| event_from_json(&v));
            match event {
                Some(event) => events.push(event),
                None => return Err(format!("{}:{}: not a job event", path.display(), n + 1)),
            }
        }
    }
    Ok(events)
}

/// An event from its JSON line (see [`event_json`]), with its time.
fn event_from_json(v: &Value) -> Option<(SystemTime, JobEvent)> {
    let int = |key: &str| v.get(key).and_then(Value::as_u64);
    let at = UNIX_EPOCH + Duration::try_from_secs_f64(v.get("at")?.as_f64()?).ok()?;
    let task = || {
        Some(TaskId {
            stage: int("stage")? as usize,
            partition: int("partition")? as usize,
        })
    };
    let kind = match v.get("kind")?.as_str()? {
        "submitted" => JobEventKind::Submitted {
            stages: int("stages")? as usize,
            outline: Arc::new(crate::json::outline_from_json(v).unwrap_or_default()),
        },
        "stage_started" => JobEventKind::StageStarted {
            stage: int("stage")? as usize,
        },
        "stage_finished" => JobEventKind::StageFinished {
            stage: int("stage")? as usize,
        },
        "task_started" => JobEventKind::TaskStarted {
            task: task()?,
            worker: int("worker")? as usize,
            attempt: int("attempt")? as u32,
        },
        "task_finished" => JobEventKind::TaskFinished {
            task: task()?,
            worker: int("worker")? as usize,
            attempt: int("attempt")? as u32,
            slot: int("slot")? as usize,
            duration: Duration::try_from_secs_f64(v.get("duration_seconds")?.as_f64()?).ok()?,
            output_bytes: int("output_bytes")?,
            metrics: Arc::new(metrics_from_json(v.get("metrics")?)?),
        },
        "done" => JobEventKind::Done,
        "failed" => JobEventKind::Failed {
            kind: ErrorKind::from_name(v.get("error_kind")?.as_str()?)?,
            message: v.get("message")?.as_str()?.to_string(),
        },
        "cancelled" => JobEventKind::Cancelled,
        "fetch" => JobEventKind::Fetch {
            from: int("from")? as usize,
            to: int("to")? as usize,
            bytes: int("bytes")?,
        },
        "spill" => JobEventKind::Spill {
            worker: int("worker")? as usize,
            bytes: int("bytes")?,
        },
        _ => return None,
    };
    let event = JobEvent {
        job: int("job")?,
        progress: Progress {
            tasks_total: int("tasks_total")? as usize,
            tasks_done: int("tasks_done")? as usize,
        },
        kind,
    };
    Some((at, event))
}

fn metrics_from_json(v: &Value) -> Option<Vec<OperatorMetric>> {
    v.as_array()?
        .iter()
        .map(|m| {
            Some(OperatorMetric {
                node: m.get(0)?.as_u64()? as u32,
                name: m.get(1)?.as_str()?.to_string(),
                value: m.get(2)?.as_u64()?,
                unit: match m.get(3)?.as_str()? {
                    "nanoseconds" => MetricUnit::Nanos,
                    "bytes" => MetricUnit::Bytes,
                    _ => MetricUnit::Count,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<JobEvent> {
        let progress = Progress {
            tasks_total: 2,
            tasks_done: 1,
        };
        let task = TaskId {
            stage: 1,
            partition: 3,
        };
        [
            JobEventKind::Submitted {
                stages: 2,
                outline: Arc::new(shoal_exec::JobOutline {
                    label: "select \"é\" from t".into(),
                    stages: vec![
                        shoal_exec::StageOutline {
                            inputs: vec![],
                            tasks: 4,
                            operators: vec![(0, "ShuffleWriteExec".into()), (1, "X".into())],
                        },
                        shoal_exec::StageOutline {
                            inputs: vec![0],
                            tasks: 1,
                            operators: vec![(0, "ShuffleReadExec".into())],
                        },
                    ],
                }),
            },
            JobEventKind::StageStarted { stage: 0 },
            JobEventKind::TaskStarted {
                task,
                worker: 1,
                attempt: 2,
            },
            JobEventKind::TaskFinished {
                task,
                worker: 1,
                attempt: 2,
                slot: 0,
                duration: Duration::from_millis(1500),
                output_bytes: 1 << 40,
                metrics: Arc::new(vec![OperatorMetric {
                    node: 2,
                    name: "elapsed_compute".into(),
                    value: 12_345,
                    unit: MetricUnit::Nanos,
                }]),
            },
            JobEventKind::Fetch {
                from: 0,
                to: 1,
                bytes: 77,
            },
            JobEventKind::Spill {
                worker: 1,
                bytes: 5,
            },
            JobEventKind::StageFinished { stage: 1 },
            JobEventKind::Failed {
                kind: ErrorKind::WorkerLost,
                message: "lost".into(),
            },
            JobEventKind::Cancelled,
            JobEventKind::Done,
        ]
        .into_iter()
        .map(|kind| JobEvent {
            job: 9,
            progress,
            kind,
        })
        .collect()
    }

    #[test]
    fn every_event_reads_back_as_it_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut log = EventLog::open(dir.path(), DEFAULT_FILE_BYTES, DEFAULT_FILES).unwrap();
        for event in events() {
            log.append(&event, at).unwrap();
        }
        log.flush().unwrap();
        let read = read_log(dir.path()).unwrap();
        assert_eq!(
            read.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
            events()
        );
        assert!(read.iter().all(|(t, _)| *t == at));
    }

    #[test]
    fn files_stay_within_their_size_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 2_000, 3).unwrap();
        let now = SystemTime::now();
        for _ in 0..100 {
            for event in events() {
                log.append(&event, now).unwrap();
            }
        }
        log.flush().unwrap();
        let files = log_files(dir.path()).unwrap();
        assert_eq!(files.len(), 3, "{files:?}");
        for (_, path) in &files {
            assert!(std::fs::metadata(path).unwrap().len() <= 2_000, "{path:?}");
        }
        // What is kept is the newest events, whole lines only.
        let kept = read_log(dir.path()).unwrap();
        assert!(!kept.is_empty() && kept.len() < 1000);
        // A new log in the same directory starts after the files there.
        drop(log);
        let log = EventLog::open(dir.path(), 2_000, 3).unwrap();
        assert!(log.seq > files.last().unwrap().0);
        // A damaged line is an error naming its file and line.
        std::fs::write(file_name(dir.path(), log.seq), "{\"kind\": \"bogus\"}\n").unwrap();
        let error = read_log(dir.path()).unwrap_err();
        assert!(error.contains(".jsonl:1: not a job event"), "{error}");
    }
}
