//! `StagedSinkExec`: a file sink whose files appear complete, once, or not at all.
//!
//! A task that writes files (`COPY`, `INSERT`, `to_parquet`) may be killed part-way and
//! run again on another worker. Written straight to the target, that would leave partial
//! files, and a second set beside the first (DataFusion names each run's files with a new
//! random id). Wrapped in this operator, each run writes into its own directory beside
//! the target (`.NAME.shoal-ID/attempt-R/`), and only a run that finished moves its files
//! into place, renaming `<random id>_<n>.ext` to `<ID>_<n>.ext` with the job's fixed `ID`:
//! a run repeated after a commit replaces the same files with the same contents. The
//! commit then removes the staging directory, with whatever killed runs left there.
//!
//! Only local targets are staged; an object store writes each object whole, but a
//! partitioned write repeated there may add a second copy of a file.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::datasource::file_format::csv::CsvSink;
use datafusion::datasource::file_format::json::JsonSink;
use datafusion::datasource::file_format::parquet::ParquetSink;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::physical_plan::{FileOutputMode, FileSink, FileSinkConfig};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{StreamExt, TryStreamExt};

/// Runs a [`DataSinkExec`] with a local file target through a staging directory.
#[derive(Debug)]
pub struct StagedSinkExec {
    input: Arc<dyn ExecutionPlan>,
    /// The same in every run of the task: names the staging directory and the files.
    id: String,
}

/// Where one run writes, and where its files go.
struct Staging {
    target: PathBuf,
    single_file: bool,
    /// `.NAME.shoal-ID` beside the target.
    root: PathBuf,
    /// The target's twin inside this run's directory.
    staged: PathBuf,
}

impl StagedSinkExec {
    /// Wraps `plan` if it writes files to a local target; returns other plans unchanged.
    pub fn wrap(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        let stageable = plan
            .downcast_ref::<DataSinkExec>()
            .and_then(|sink| file_sink_config(sink.sink()))
            .is_some_and(|config| local_target(config).is_some());
        if !stageable {
            return plan;
        }
        let mut bytes = [0u8; 6];
        let id = match getrandom::fill(&mut bytes) {
            Ok(()) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
            Err(_) => return plan,
        };
        Arc::new(Self { input: plan, id })
    }

    /// Rebuilds the operator from its sink and id.
    pub fn from_parts(input: Arc<dyn ExecutionPlan>, id: String) -> Self {
        Self { input, id }
    }

    /// The id shared by every run.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// This run's staging, and the sink plan that writes into it.
    fn stage(&self) -> Result<(Staging, Arc<dyn ExecutionPlan>)> {
        let Some(exec) = self.input.downcast_ref::<DataSinkExec>() else {
            return internal_err!("StagedSinkExec wraps a DataSinkExec");
        };
        let sink = exec.sink();
        let Some((config, target)) =
            file_sink_config(sink).and_then(|c| Some((c, local_target(c)?)))
        else {
            return internal_err!("StagedSinkExec needs a local file target");
        };
        let single_file = config
            .file_output_mode
            .single_file_output(&config.table_paths[0]);
        let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
            return internal_err!("cannot stage a write to {}", target.display());
        };
        let name = name.to_string_lossy().to_string();
        let root = parent.join(format!(".{name}.shoal-{}", self.id));
        let mut run = [0u8; 6];
        getrandom::fill(&mut run)
            .map_err(|e| DataFusionError::Execution(format!("no random run id: {e}")))?;
        let run: String = run.iter().map(|b| format!("{b:02x}")).collect();
        let staged = root.join(format!("attempt-{run}")).join(&name);
        let mut url = staged.to_string_lossy().to_string();
        if !single_file {
            url.push('/');
        }
        let mut staged_config = config.clone();
        staged_config.original_url = url.clone();
        staged_config.table_paths = vec![ListingTableUrl::parse(&url)?];
        staged_config.file_output_mode = if single_file {
            FileOutputMode::SingleFile
        } else {
            FileOutputMode::Directory
        };
        let Some(staged_sink) = with_config(sink, staged_config) else {
            return internal_err!("StagedSinkExec cannot restage this sink");
        };
        let plan = Arc::new(DataSinkExec::new(
            Arc::clone(exec.input()),
            staged_sink,
            exec.sort_order().clone(),
        ));
        let staging = Staging {
            target,
            single_file,
            root,
            staged,
        };
        Ok((staging, plan))
    }
}

/// The file sink's settings, for the sinks Shoal can restage.
fn file_sink_config(sink: &dyn DataSink) -> Option<&FileSinkConfig> {
    let any: &dyn Any = sink;
    if let Some(s) = any.downcast_ref::<ParquetSink>() {
        Some(s.config())
    } else if let Some(s) = any.downcast_ref::<CsvSink>() {
        Some(s.config())
    } else {
        any.downcast_ref::<JsonSink>().map(|s| s.config())
    }
}

/// The same kind of sink as `sink`, writing where `config` says.
fn with_config(sink: &dyn DataSink, config: FileSinkConfig) -> Option<Arc<dyn DataSink>> {
    let any: &dyn Any = sink;
    if let Some(s) = any.downcast_ref::<ParquetSink>() {
        Some(Arc::new(ParquetSink::new(
            config,
            s.parquet_options().clone(),
        )))
    } else if let Some(s) = any.downcast_ref::<CsvSink>() {
        Some(Arc::new(CsvSink::new(config, s.writer_options().clone())))
    } else {
        any.downcast_ref::<JsonSink>()
            .map(|s| Arc::new(JsonSink::new(config, s.writer_options().clone())) as _)
    }
}

/// The local path a sink writes to, if it writes to one local path.
fn local_target(config: &FileSinkConfig) -> Option<PathBuf> {
    if config.object_store_url.as_str() != "file:///" || config.table_paths.len() != 1 {
        return None;
    }
    config.table_paths[0].get_url().to_file_path().ok()
}

impl Staging {
    /// Moves a finished run's files into place and removes the staging directory.
    fn commit(&self, id: &str) -> std::io::Result<()> {
        if self.staged.exists() {
            if self.single_file {
                if let Some(parent) = self.target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::rename(&self.staged, &self.target)?;
            } else {
                move_files(&self.staged, &self.target, id)?;
            }
        }
        self.abandon();
        Ok(())
    }

    /// Removes the staging directory (this run's and any killed run's files).
    fn abandon(&self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Moves every file under `from` to the same place under `to`, renamed to carry `id`.
fn move_files(from: &Path, to: &Path, id: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if entry.file_type()?.is_dir() {
            move_files(&entry.path(), &to.join(&name), id)?;
        } else {
            std::fs::rename(entry.path(), to.join(stable_name(&name, id)))?;
        }
    }
    Ok(())
}

/// DataFusion names files `<random write id>_<n>.<ext>`, or `<random write id>.<ext>` in a
/// partition directory; the write id differs in every run, `id` does not.
fn stable_name(name: &str, id: &str) -> String {
    match name.find(['_', '.']) {
        Some(end) => format!("{id}{}", &name[end..]),
        None => id.to_string(),
    }
}

impl DisplayAs for StagedSinkExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "StagedSinkExec: files move into place when the write completes"
        )
    }
}

impl ExecutionPlan for StagedSinkExec {
    fn name(&self) -> &str {
        "StagedSinkExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (Some(input), true) = (children.pop(), children.is_empty()) else {
            return internal_err!("StagedSinkExec takes one input");
        };
        Ok(Arc::new(Self::from_parts(input, self.id.clone())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (staging, plan) = self.stage()?;
        let schema = plan.schema();
        let id = self.id.clone();
        let written = async move {
            let outcome = async {
                let stream = plan.execute(partition, context)?;
                stream.try_collect::<Vec<_>>().await
            }
            .await;
            match outcome {
                Ok(counts) => {
                    staging.commit(&id).map_err(|e| {
                        DataFusionError::Execution(format!(
                            "moving the written files into {} failed: {e}",
                            staging.target.display()
                        ))
                    })?;
                    Ok(futures::stream::iter(counts.into_iter().map(Ok)))
                }
                Err(e) => {
                    staging.abandon();
                    Err(e)
                }
            }
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(written).try_flatten().boxed(),
        )))
    }
}
