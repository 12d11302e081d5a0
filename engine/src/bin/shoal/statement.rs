//! One SQL statement run to completion, as `shoal sql` and its shell both do.

use std::io::IsTerminal;
use std::time::Duration;

use futures::TryStreamExt;
use shoal::Session;
use shoal::datafusion::arrow::array::RecordBatch;
use shoal::datafusion::sql::parser::Statement;

/// Runs one statement to completion, cancelling it on Ctrl-C. Returns its schema and rows.
pub async fn run_statement(
    session: &Session,
    statement: Statement,
) -> shoal::Result<(
    shoal::datafusion::arrow::datatypes::SchemaRef,
    Vec<RecordBatch>,
)> {
    let df = session.statement(statement).await?;
    let schema = df.schema();
    let job = df.execute().await?;
    let mut progress = job.progress.clone();
    let show_progress = std::io::stderr().is_terminal();
    let watcher = async move {
        if !show_progress {
            return std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let bar = crate::progress_bar(0, "running");
        loop {
            let p = *progress.borrow_and_update();
            bar.set_length(p.tasks_total as u64);
            bar.set_position(p.tasks_done as u64);
            if progress.changed().await.is_err() {
                bar.finish_and_clear();
                return std::future::pending::<()>().await;
            }
        }
    };
    let collect = job.stream.try_collect::<Vec<RecordBatch>>();
    tokio::select! {
        rows = collect => Ok((schema, rows?)),
        _ = tokio::signal::ctrl_c() => Err(shoal::Error::new(shoal::ErrorKind::Cancelled, "query cancelled")),
        _ = watcher => unreachable!("the progress watcher never finishes"),
    }
}
