//! The error users of the `shoal` crate see.

use datafusion::arrow::error::ArrowError;
use datafusion::common::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use shoal_exec::TaskFailure;
pub use shoal_planner::ErrorKind;
use shoal_planner::{ShoalError, kind_of, shoal_err};

/// A Shoal error: a kind and the full cause chain. `Display` is one line; `{:#}` shows
/// the whole chain, one cause per line.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    source: DataFusionError,
}

/// `Result` with Shoal's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whose fault it is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether running the same thing again may succeed (see [`ErrorKind::retryable`]).
    pub fn retryable(&self) -> bool {
        self.kind.retryable()
    }

    /// The `shoal` command's exit code for it.
    pub fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }

    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        shoal_err(kind, message).into()
    }

    /// The underlying DataFusion error.
    pub fn source_error(&self) -> &DataFusionError {
        &self.source
    }

    /// The underlying DataFusion error, for code that must return one.
    pub fn into_datafusion(self) -> DataFusionError {
        self.source
    }

    /// An input error with `message`.
    pub fn input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Input, message)
    }

    /// The chain of messages from outermost to innermost, without the task location
    /// wrapper (the verbose form keeps it).
    fn messages(&self, verbose: bool) -> Vec<String> {
        let mut out = Vec::new();
        let mut current: &(dyn std::error::Error + 'static) = &self.source;
        loop {
            if let Some(df) = current.downcast_ref::<DataFusionError>() {
                match df {
                    DataFusionError::Context(ctx, inner) => {
                        out.push(ctx.clone());
                        current = inner.as_ref();
                        continue;
                    }
                    DataFusionError::External(e) => {
                        current = e.as_ref();
                        continue;
                    }
                    DataFusionError::Shared(e) => {
                        current = e.as_ref();
                        continue;
                    }
                    DataFusionError::ArrowError(e, _) => {
                        current = e.as_ref();
                        continue;
                    }
                    DataFusionError::Diagnostic(_, inner) => {
                        current = inner.as_ref();
                        continue;
                    }
                    DataFusionError::SQL(e, _) => {
                        let text = match e.as_ref() {
                            ParserError::ParserError(m) | ParserError::TokenizerError(m) => {
                                m.clone()
                            }
                            other => other.to_string(),
                        };
                        out.push(format!("SQL syntax error: {text}"));
                        break;
                    }
                    DataFusionError::ParquetError(e) => {
                        out.push(format!("Parquet error: {e}"));
                        break;
                    }
                    DataFusionError::ObjectStore(e) => {
                        out.push(e.to_string());
                        break;
                    }
                    DataFusionError::IoError(e) => {
                        out.push(e.to_string());
                        break;
                    }
                    DataFusionError::Collection(errors) => match errors.first() {
                        Some(first) => {
                            current = first;
                            continue;
                        }
                        None => break,
                    },
                    other => {
                        out.push(other.message().to_string());
                        break;
                    }
                }
            }
            if let Some(shoal) = current.downcast_ref::<ShoalError>() {
                out.push(shoal.message().to_string());
                match shoal.cause() {
                    Some(cause) if verbose => {
                        current = cause;
                        continue;
                    }
                    _ => break,
                }
            }
            if let Some(failure) = current.downcast_ref::<TaskFailure>() {
                if verbose {
                    out.push(format!(
                        "{} of job {} on worker {}",
                        failure.task, failure.job, failure.worker
                    ));
                }
                current = &failure.cause;
                continue;
            }
            if let Some(arrow) = current.downcast_ref::<ArrowError>()
                && let ArrowError::ExternalError(inner) = arrow
            {
                current = inner.as_ref();
                continue;
            }
            out.push(current.to_string());
            match current.source() {
                Some(next) if verbose => current = next,
                _ => break,
            }
        }
        out.iter()
            .map(|m| m.replace('\n', " ").trim().to_string())
            .filter(|m| !m.is_empty())
            .collect()
    }
}

impl From<DataFusionError> for Error {
    fn from(source: DataFusionError) -> Self {
        Self {
            kind: kind_of(&source),
            source,
        }
    }
}

impl From<ArrowError> for Error {
    fn from(e: ArrowError) -> Self {
        DataFusionError::from(e).into()
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self {
            kind: ErrorKind::Io,
            source: DataFusionError::IoError(e),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if f.alternate() {
            write!(f, "{}", self.messages(true).join("\n  caused by: "))
        } else {
            write!(f, "{}", self.messages(false).join(": "))
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
