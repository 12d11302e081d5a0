//! The cluster token and TLS settings that every gRPC and Flight connection uses.

use std::time::Duration;

use datafusion::common::{DataFusionError, Result};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};

/// HTTP/2 flow-control window: the 64 KiB default stalls bulk bucket transfers.
pub(crate) const WINDOW: u32 = 16 << 20;

/// What a process presents and requires on its connections.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// The cluster token: calls must carry `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// PEM certificate chain and private key this process serves TLS with.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// PEM certificate of the authority this process trusts when it connects with TLS.
    pub ca: Option<Vec<u8>>,
}

impl Security {
    /// Only a token, no TLS.
    pub fn with_token(token: &str) -> Self {
        Self {
            token: Some(token.to_string()),
            ..Default::default()
        }
    }

    /// Reads `--tls-cert`, `--tls-key` and `--tls-ca` files; errors name the file.
    pub fn from_files(
        token: Option<String>,
        cert: Option<&str>,
        key: Option<&str>,
        ca: Option<&str>,
    ) -> Result<Self> {
        let read = |path: &str, what: &str| {
            std::fs::read(path).map_err(|e| {
                DataFusionError::Configuration(format!("cannot read {what} '{path}': {e}"))
            })
        };
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => {
                Some((read(cert, "TLS certificate")?, read(key, "TLS key")?))
            }
            (None, None) => None,
            _ => {
                return Err(DataFusionError::Configuration(
                    "--tls-cert and --tls-key go together".to_string(),
                ));
            }
        };
        let ca = ca
            .map(|path| read(path, "TLS CA certificate"))
            .transpose()?;
        Ok(Self {
            token: token.filter(|t| !t.is_empty()),
            identity,
            ca,
        })
    }

    /// Refuses a call that does not carry the token, saying what was wrong.
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let expected = format!("Bearer {token}");
        match request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        {
            Some(given) if same_secret(given.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated("wrong cluster token")),
            None => Err(Status::unauthenticated(
                "missing cluster token (authorization: Bearer <token>)",
            )),
        }
    }

    /// Adds the token to an outgoing call.
    pub fn authorize<T>(&self, request: &mut Request<T>) -> Result<(), Status> {
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::invalid_argument("the cluster token is not valid ASCII"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(())
    }

    /// The `authorization` header value, if there is a token.
    pub fn bearer(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// An endpoint for `address` (`host:port` or a URL), over TLS when a CA is set.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint> {
        let bare = address
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        if address.starts_with("https://") && self.ca.is_none() {
            return Err(DataFusionError::Configuration(format!(
                "{address} uses TLS: pass --tls-ca (or SHOAL_TLS_CA) with the certificate of \
                 the authority that signed its certificate"
            )));
        }
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{bare}"))
            .map_err(|e| DataFusionError::Configuration(format!("bad address '{address}': {e}")))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(5))
            .initial_stream_window_size(Some(WINDOW))
            .initial_connection_window_size(Some(2 * WINDOW));
        if let Some(ca) = &self.ca {
            let host = bare.rsplit_once(':').map(|(h, _)| h).unwrap_or(bare);
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name(host.trim_start_matches('[').trim_end_matches(']'));
            endpoint = endpoint.tls_config(tls).map_err(|e| {
                DataFusionError::Configuration(format!("TLS setup for '{address}' failed: {e}"))
            })?;
        }
        Ok(endpoint)
    }

    /// A server builder, with TLS when this process has an identity.
    pub fn server(&self) -> Result<Server> {
        let mut server = Server::builder()
            .initial_stream_window_size(Some(WINDOW))
            .initial_connection_window_size(Some(2 * WINDOW))
            .http2_keepalive_interval(Some(Duration::from_secs(2)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)));
        if let Some((cert, key)) = &self.identity {
            server = server
                .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
                .map_err(|e| DataFusionError::Configuration(format!("TLS setup failed: {e}")))?;
        }
        Ok(server)
    }
}

/// Compares without stopping at the first difference, so timing does not reveal how much
/// of a guessed token was right.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Accepted connections of `listener`, with Nagle's algorithm off so small responses
/// are not held back.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    })
}
