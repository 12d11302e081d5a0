//! `FileScanContextExec`: names the file when reading it fails.
//!
//! Decoding errors from Arrow's CSV and Parquet readers say what and where ("line 2",
//! "column 1") but not which file. Every file scan in a stage is wrapped so an error
//! carries the files of the failing partition.

use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::TryStreamExt;

/// Wraps a file scan; errors of partition `p` get the context "reading <files of p>".
#[derive(Debug)]
pub struct FileScanContextExec {
    input: Arc<dyn ExecutionPlan>,
    files: Vec<String>,
}

impl FileScanContextExec {
    /// Rebuilds a wrapper from its scan and the files of each partition.
    pub fn from_parts(input: Arc<dyn ExecutionPlan>, files: Vec<String>) -> Self {
        Self { input, files }
    }

    /// The wrapped scan.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// The files each partition reads, as text.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Wraps `plan` if it is a file scan; returns other plans unchanged.
    pub fn wrap(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        let files = match plan
            .downcast_ref::<DataSourceExec>()
            .and_then(|scan| scan.data_source().downcast_ref::<FileScanConfig>())
        {
            Some(config) => {
                let base = config
                    .object_store_url
                    .as_str()
                    .trim_end_matches('/')
                    .to_string();
                let base = if base == "file://" {
                    String::new()
                } else {
                    base
                };
                config
                    .file_groups
                    .iter()
                    .map(|group| {
                        group
                            .iter()
                            .map(|f| format!("{base}/{}", f.object_meta.location))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .collect()
            }
            None => return plan,
        };
        Arc::new(Self { input: plan, files })
    }
}

impl DisplayAs for FileScanContextExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.input.fmt_as(t, f)
    }
}

impl ExecutionPlan for FileScanContextExec {
    fn name(&self) -> &str {
        self.input.name()
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.input.apply_expressions(f)
    }

    /// The wrapped scan's limit: a wrapped scan that stops after some rows is one.
    fn fetch(&self) -> Option<usize> {
        self.input.fetch()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("FileScanContextExec is a leaf");
        }
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let files = self.files.get(partition).cloned().unwrap_or_default();
        let label = format!("reading {files}");
        let stream = self
            .input
            .execute(partition, context)
            .map_err(|e| e.context(label.clone()))?;
        let schema = stream.schema();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.map_err(move |e| e.context(label.clone())),
        )))
    }

    fn metrics(&self) -> Option<datafusion::physical_plan::metrics::MetricsSet> {
        self.input.metrics()
    }
}
