//! Operators that DataFusion's protobuf form does not bring back as they were sent,
//! mended right after decoding (each converter call decodes one node; see
//! `CheckedConverter`). Each repair names what the wire form loses.

use std::sync::Arc;

use datafusion::arrow::csv::WriterBuilder;
use datafusion::common::Result;
use datafusion::datasource::file_format::csv::CsvSink;
use datafusion::datasource::physical_plan::FileSink;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, PhysicalGroupBy};

/// `plan`, one freshly decoded node, with what the wire form lost put back.
pub(crate) fn repair_decoded(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = restore_empty_grouping_set(plan)?;
    restore_csv_formats(plan)
}

/// DataFusion's protobuf form flattens an aggregate's grouping sets into one list of
/// flags per group expression, so with no group expressions the one empty set of
/// `GROUPING SETS (())` decodes as no set at all, and a grouped aggregate over no sets
/// yields no rows. No plan has zero sets: the empty set comes back. (An aggregate with
/// no GROUP BY loses its set too, but never reads it.)
fn restore_empty_grouping_set(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(aggregate) = plan.downcast_ref::<AggregateExec>() else {
        return Ok(plan);
    };
    let group_by = aggregate.group_expr();
    if !group_by.has_grouping_set() || !group_by.expr().is_empty() || !group_by.groups().is_empty()
    {
        return Ok(plan);
    }
    let group_by = PhysicalGroupBy::new(vec![], group_by.null_expr().to_vec(), vec![vec![]], true);
    let restored = AggregateExec::try_new(
        *aggregate.mode(),
        group_by,
        aggregate.aggr_expr().to_vec(),
        aggregate.filter_expr().to_vec(),
        Arc::clone(aggregate.input()),
        aggregate.input_schema(),
    )?
    .with_limit_options(aggregate.limit_options());
    Ok(Arc::new(restored))
}

/// One of `WriterBuilder`'s `with_*_format` setters.
type SetFormat = fn(WriterBuilder, String) -> WriterBuilder;

/// The protobuf form of a CSV sink's writer keeps each date and time format as a string,
/// empty when unset, and decodes every one as set: an empty timestamp format then writes
/// every timestamp as an empty field (read back as NULL). Empty formats are unset again.
fn restore_csv_formats(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(exec) = plan.downcast_ref::<DataSinkExec>() else {
        return Ok(plan);
    };
    let Some(sink) = exec.sink().downcast_ref::<CsvSink>() else {
        return Ok(plan);
    };
    let options = sink.writer_options();
    let w = &options.writer_options;
    let set = |f: Option<&str>| f.filter(|f| !f.is_empty()).map(str::to_string);
    let mut builder = WriterBuilder::new()
        .with_header(w.header())
        .with_delimiter(w.delimiter())
        .with_quote(w.quote())
        .with_escape(w.escape())
        .with_double_quote(w.double_quote())
        .with_null(w.null().to_string())
        .with_ignore_leading_whitespace(w.ignore_leading_whitespace())
        .with_ignore_trailing_whitespace(w.ignore_trailing_whitespace())
        .with_quote_style(w.quote_style())
        .with_line_terminator(w.line_terminator().clone());
    let formats: [(Option<String>, SetFormat); 5] = [
        (set(w.date_format()), WriterBuilder::with_date_format),
        (
            set(w.datetime_format()),
            WriterBuilder::with_datetime_format,
        ),
        (set(w.time_format()), WriterBuilder::with_time_format),
        (
            set(w.timestamp_format()),
            WriterBuilder::with_timestamp_format,
        ),
        (
            set(w.timestamp_tz_format()),
            WriterBuilder::with_timestamp_tz_format,
        ),
    ];
    for (format, with) in formats {
        if let Some(format) = format {
            builder = with(builder, format);
        }
    }
    let mut writer_options = options.clone();
    writer_options.writer_options = builder;
    let sink = CsvSink::new(sink.config().clone(), writer_options);
    Ok(Arc::new(DataSinkExec::new(
        Arc::clone(exec.input()),
        Arc::new(sink),
        exec.sort_order().clone(),
    )))
}
