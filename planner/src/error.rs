//! Error kinds: whose fault an error is and what to do about it, set where the error
//! arises and read by every front end (the CLI's exit code, the Python exception class).
//!
//! Shoal's own errors travel inside DataFusion's as a [`ShoalError`] (an
//! `External` cause), so they keep their kind through DataFusion's operators, task
//! failures and the wire; [`kind_of`] finds it. Errors DataFusion makes by itself are
//! classified by their variant.

use std::sync::Arc;

use datafusion::arrow::error::ArrowError;
use datafusion::common::DataFusionError;

use crate::shuffle::WorkerId;

/// Whose fault an error is, and whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The query, data, a path or an argument is wrong: the user fixes it.
    Input,
    /// The query is valid but Shoal cannot plan it (an unsupported plan shape).
    Planning,
    /// No worker can run it: missing resources, or memory ran out.
    Resources,
    /// The workers that ran the job were lost, more often than retries allow.
    WorkerLost,
    /// Task inputs could not be fetched from a worker, more often than retries allow.
    FetchFailed,
    /// The job was cancelled.
    Cancelled,
    /// Reading or writing files, object stores or the network failed.
    Io,
    /// A bug in Shoal or DataFusion.
    Internal,
}

impl ErrorKind {
    /// Every kind, in the order the README's table lists them.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Input,
        ErrorKind::Planning,
        ErrorKind::Resources,
        ErrorKind::WorkerLost,
        ErrorKind::FetchFailed,
        ErrorKind::Cancelled,
        ErrorKind::Io,
        ErrorKind::Internal,
    ];

    /// The kind's name on the wire and in messages: `input`, `worker_lost`, ….
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Input => "input",
            ErrorKind::Planning => "planning",
            ErrorKind::Resources => "resources",
            ErrorKind::WorkerLost => "worker_lost",
            ErrorKind::FetchFailed => "fetch_failed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Io => "io",
            ErrorKind::Internal => "internal",
        }
    }

    /// The kind named `name` (see [`ErrorKind::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether running the same job again may succeed without the user changing
    /// anything: lost workers, failed fetches, I/O and memory pressure may pass.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::WorkerLost | ErrorKind::FetchFailed | ErrorKind::Io | ErrorKind::Resources
        )
    }

    /// The `shoal` command's exit code for an error of this kind: bad input shares 1 with
    /// usage errors, a cancelled job (Ctrl-C or a cancel call) gives 130 like an
    /// interrupted command.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Input => 1,
            ErrorKind::Planning => 3,
            ErrorKind::Resources => 4,
            ErrorKind::WorkerLost => 5,
            ErrorKind::FetchFailed => 6,
            ErrorKind::Cancelled => 130,
            ErrorKind::Io => 7,
            ErrorKind::Internal => 70,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name().replace('_', " "))
    }
}

/// An error Shoal made, with its kind; its message is one line, its source (if any) the
/// cause underneath.
#[derive(Debug, Clone)]
pub struct ShoalError {
    kind: ErrorKind,
    message: String,
    worker: Option<WorkerId>,
    source: Option<Arc<DataFusionError>>,
}

impl ShoalError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            worker: None,
            source: None,
        }
    }

    /// The same error, naming the worker it concerns (the peer a fetch failed from).
    pub fn on_worker(mut self, worker: WorkerId) -> Self {
        self.worker = Some(worker);
        self
    }

    /// The worker it concerns, if it names one.
    pub fn worker(&self) -> Option<WorkerId> {
        self.worker
    }

    /// The same error with `source` as its cause.
    pub fn caused_by(mut self, source: DataFusionError) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Its kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Its own message, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The cause underneath, if there is one.
    pub fn cause(&self) -> Option<&DataFusionError> {
        self.source.as_deref()
    }
}

impl std::fmt::Display for ShoalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ShoalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<ShoalError> for DataFusionError {
    fn from(e: ShoalError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// A [`ShoalError`] of `kind` as a DataFusion error, for code that returns those.
pub fn shoal_err(kind: ErrorKind, message: impl Into<String>) -> DataFusionError {
    ShoalError::new(kind, message).into()
}

/// `e` and its causes, outermost first, looking through DataFusion's and Arrow's
/// wrappers.
pub fn causes(e: &DataFusionError) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |e| {
        next_cause(*e)
    })
}

/// The outermost [`ShoalError`] in `e`'s chain, if any.
pub fn find_shoal_error(e: &DataFusionError) -> Option<&ShoalError> {
    causes(e).find_map(|e| e.downcast_ref::<ShoalError>())
}

/// The error's kind: that of the outermost [`ShoalError`] in its chain, or else what
/// DataFusion's own variant says.
pub fn kind_of(e: &DataFusionError) -> ErrorKind {
    if let Some(found) = find_shoal_error(e) {
        return found.kind();
    }
    // The innermost error that says something decides.
    let mut kind = ErrorKind::Input;
    for cause in causes(e) {
        if let Some(known) = cause
            .downcast_ref::<DataFusionError>()
            .and_then(variant_kind)
        {
            kind = known;
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            kind = ErrorKind::Io;
        }
    }
    kind
}

/// What a DataFusion error's own variant says, where it says something.
fn variant_kind(e: &DataFusionError) -> Option<ErrorKind> {
    Some(match e {
        DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::SQL(..)
        | DataFusionError::Configuration(_)
        | DataFusionError::ParquetError(_)
        | DataFusionError::Execution(_) => ErrorKind::Input,
        DataFusionError::NotImplemented(_) => ErrorKind::Planning,
        DataFusionError::ResourcesExhausted(_) => ErrorKind::Resources,
        DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => ErrorKind::Io,
        DataFusionError::Internal(_) => ErrorKind::Internal,
        _ => return None,
    })
}

/// The next error down `e`'s chain, looking through DataFusion's and Arrow's wrappers.
fn next_cause<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    if let Some(df) = e.downcast_ref::<DataFusionError>() {
        return match df {
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
                Some(inner.as_ref())
            }
            DataFusionError::External(inner) => Some(inner.as_ref()),
            DataFusionError::Shared(inner) => Some(inner.as_ref()),
            DataFusionError::ArrowError(inner, _) => Some(inner.as_ref()),
            DataFusionError::Collection(errors) => errors.first().map(|f| f as _),
            _ => None,
        };
    }
    if let Some(ArrowError::ExternalError(inner)) = e.downcast_ref::<ArrowError>() {
        return Some(inner.as_ref());
    }
    e.source()
}

/// The text a panic carried.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Awaits `work` (a step of DataFusion's planning), turning a panic in it into a
/// planning error that says what was being done: DataFusion panics on some odd
/// statements (e.g. a scalar subquery with no columns), and one statement must not take
/// the session down.
pub async fn catch_planner_panic<T>(
    what: &str,
    work: impl std::future::Future<Output = datafusion::common::Result<T>>,
) -> datafusion::common::Result<T> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(shoal_err(
            ErrorKind::Planning,
            format!("{what} hit a bug in DataFusion: {}", panic_message(payload)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shoal_error_keeps_its_kind_through_wrappers() {
        let lost = shoal_err(ErrorKind::WorkerLost, "every worker was lost");
        let wrapped = DataFusionError::Context(
            "running the query".into(),
            Box::new(DataFusionError::ArrowError(
                Box::new(ArrowError::ExternalError(Box::new(lost))),
                None,
            )),
        );
        assert_eq!(kind_of(&wrapped), ErrorKind::WorkerLost);
        assert_eq!(
            find_shoal_error(&wrapped).map(|e| e.message()),
            Some("every worker was lost")
        );
    }

    #[test]
    fn datafusion_variants_map_to_kinds() {
        let cases = [
            (
                DataFusionError::Plan("no such column".into()),
                ErrorKind::Input,
            ),
            (
                DataFusionError::NotImplemented("x".into()),
                ErrorKind::Planning,
            ),
            (
                DataFusionError::ResourcesExhausted("pool".into()),
                ErrorKind::Resources,
            ),
            (
                DataFusionError::IoError(std::io::Error::other("disk")),
                ErrorKind::Io,
            ),
            (DataFusionError::Internal("bug".into()), ErrorKind::Internal),
        ];
        for (error, kind) in cases {
            assert_eq!(kind_of(&error), kind, "{error}");
        }
    }

    #[test]
    fn names_round_trip_and_exit_codes_differ() {
        let mut codes = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(kind.name()), Some(kind));
            assert!(
                codes.insert(kind.exit_code()),
                "{kind} shares its exit code"
            );
        }
        assert!(ErrorKind::WorkerLost.retryable());
        assert!(!ErrorKind::Input.retryable());
    }
}
