//! The native module `shoal._native`: Shoal's [`Session`](shoal::Session) and lazy
//! [`DataFrame`](shoal::DataFrame) for Python. The pure-Python package `shoal` wraps
//! these classes with pandas- and Dask-shaped names and docstrings.
//!
//! Every call that runs a job waits for it with the GIL released and looks for signals
//! every 50 ms: Ctrl-C drops the job's future, which cancels the job on every worker, and
//! raises `KeyboardInterrupt`. Engine errors become `shoal.errors` exceptions chosen by
//! the error's kind, carrying its one-line message.

mod array;
mod frame;
mod labeled;
mod session;

use std::future::Future;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use pyo3::prelude::*;

/// How often a waiting call looks for Ctrl-C.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// The engine error `e` as the `shoal.errors` exception of its kind.
fn py_err(e: shoal::Error) -> PyErr {
    Python::attach(|py| {
        let raised = py
            .import("shoal.errors")
            .and_then(|m| m.getattr("raise_kind"))
            .and_then(|f| f.call1((e.kind().name(), e.to_string())));
        match raised {
            Ok(exception) => PyErr::from_value(exception),
            Err(import_failed) => import_failed,
        }
    })
}

/// The runtime the bindings run calls on, as the CLI's `main` does: the session's own
/// runtimes run its workers or its connection, and a call may block one of their threads.
/// One per process: a forked child's copy of its parent's runtime has no threads, so the
/// child starts its own.
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: parking_lot::Mutex<Option<(u32, &'static tokio::runtime::Runtime)>> =
        parking_lot::Mutex::new(None);
    let mut slot = RUNTIME.lock();
    let pid = std::process::id();
    if let Some((owner, runtime)) = *slot
        && owner == pid
    {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("shoal-python")
        .enable_all()
        .build()
        .map_err(|e| {
            pyo3::exceptions::PyOSError::new_err(format!("cannot start a runtime: {e}"))
        })?;
    // Lives for the process; a parent's runtime left in a child is never dropped there.
    let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
    *slot = Some((pid, runtime));
    Ok(runtime)
}

/// The task counts of a session's latest job, as its progress listener sees them, and
/// the Python callable (`progress(done, total)`) a waiting call reports them to.
pub(crate) struct Reporter {
    /// The process that made the session: its workers' threads live only there.
    pid: u32,
    latest: parking_lot::Mutex<Option<(u64, shoal::Progress)>>,
    reported: parking_lot::Mutex<Option<(u64, shoal::Progress)>>,
    callback: Option<Py<PyAny>>,
}

impl Reporter {
    /// A reporter to `callback` (none: reports go nowhere), fed by `session`'s jobs.
    pub(crate) fn attach(session: &shoal::Session, callback: Option<Py<PyAny>>) -> Arc<Self> {
        let reporter = Arc::new(Self {
            pid: std::process::id(),
            latest: parking_lot::Mutex::new(None),
            reported: parking_lot::Mutex::new(None),
            callback,
        });
        if reporter.callback.is_some() {
            let fed = Arc::downgrade(&reporter);
            session.on_progress(move |job, progress| {
                if let Some(reporter) = fed.upgrade() {
                    *reporter.latest.lock() = Some((job, progress));
                }
            });
        }
        reporter
    }

    /// After a call that succeeded: its job finished every task, although the last
    /// count may not have reached the listener yet.
    fn finish(&self, py: Python<'_>) -> PyResult<()> {
        if let Some((_, progress)) = self.latest.lock().as_mut() {
            progress.tasks_done = progress.tasks_total;
        }
        self.report(py)
    }

    /// Calls the callback with the latest counts if they changed since the last call.
    fn report(&self, py: Python<'_>) -> PyResult<()> {
        let Some(callback) = &self.callback else {
            return Ok(());
        };
        let latest = *self.latest.lock();
        let Some((_, progress)) = latest else {
            return Ok(());
        };
        {
            let mut reported = self.reported.lock();
            if *reported == latest {
                return Ok(());
            }
            *reported = latest;
        }
        callback.call1(py, (progress.tasks_done, progress.tasks_total))?;
        Ok(())
    }
}

/// Runs `future` on the bindings' runtime and waits for it with the GIL released,
/// reporting its progress to `reporter` meanwhile; a signal handler that raises (Ctrl-C)
/// drops the future, cancelling its job.
fn wait<F, T>(py: Python<'_>, reporter: &Reporter, future: F) -> PyResult<T>
where
    F: Future<Output = shoal::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    if reporter.pid != std::process::id() {
        return Err(py_err(shoal::Error::input(format!(
            "this session was created in process {}; a forked child cannot use it: create a \
             new shoal.Session in the child",
            reporter.pid
        ))));
    }
    let (tx, mut rx) = mpsc::channel();
    let task = runtime()?.spawn(async move {
        let _ = tx.send(future.await);
    });
    loop {
        let (got, back) = py.detach(move || (rx.recv_timeout(SIGNAL_POLL), rx));
        rx = back;
        match got {
            Ok(Ok(value)) => {
                reporter.finish(py)?;
                return Ok(value);
            }
            Ok(Err(e)) => return Err(py_err(e)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(interrupted) = py.check_signals() {
                    task.abort();
                    return Err(interrupted);
                }
                reporter.report(py)?;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(py_err(shoal::Error::new(
                    shoal::ErrorKind::Internal,
                    "the session's runtime stopped while a call waited for it",
                )));
            }
        }
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<session::Session>()?;
    m.add_class::<frame::DataFrame>()?;
    m.add_class::<array::Array>()?;
    m.add_class::<labeled::DataArray>()?;
    m.add_class::<labeled::Dataset>()?;
    m.add_class::<labeled::GroupBy>()?;
    m.add_class::<labeled::Rolling>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
