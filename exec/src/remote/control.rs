//! The control-plane client: a gRPC channel to the scheduler with the cluster token on
//! every call, and the one-line errors its failures become.

use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use shoal_planner::{ErrorKind, shoal_err};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::proto::scheduler_client::SchedulerClient;
use crate::security::Security;

/// Adds the cluster token to every control-plane call.
#[derive(Debug, Clone)]
pub struct Auth(Arc<Security>);

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        self.0.authorize(&mut request)?;
        Ok(request)
    }
}

/// A control-plane client with the token attached.
pub type ControlClient = SchedulerClient<InterceptedService<Channel, Auth>>;

/// Connects to the scheduler at `url`; the error says why it cannot be reached.
pub async fn control_client(url: &str, security: &Arc<Security>) -> Result<ControlClient> {
    let channel = security.endpoint(url)?.connect().await.map_err(|e| {
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        shoal_err(
            ErrorKind::Io,
            format!("cannot reach the scheduler at {url}: {cause}"),
        )
    })?;
    Ok(
        SchedulerClient::with_interceptor(channel, Auth(Arc::clone(security)))
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX),
    )
}

/// A one-line error for a control-plane call to the scheduler at `url` that failed.
pub fn connect_error(url: &str, status: &Status) -> DataFusionError {
    let message = status.message();
    match status.code() {
        Code::Unauthenticated => shoal_err(
            ErrorKind::Input,
            format!("the scheduler at {url} refused the call: {message}"),
        ),
        Code::Unavailable | Code::Unknown | Code::Cancelled => shoal_err(
            ErrorKind::Io,
            format!("lost the connection to the scheduler at {url}: {message}"),
        ),
        Code::InvalidArgument | Code::FailedPrecondition => shoal_err(
            ErrorKind::Input,
            format!("the scheduler at {url}: {message}"),
        ),
        _ => shoal_err(
            ErrorKind::Internal,
            format!("the scheduler at {url}: {message}"),
        ),
    }
}
