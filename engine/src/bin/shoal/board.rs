//! The dashboard a `shoal scheduler` serves: bound before the scheduler prints its URL
//! (a taken port is a one-line error and no scheduler starts), then fed by a client of
//! the scheduler itself, so it reads the cluster exactly as every other client does.

use std::net::SocketAddr;
use std::sync::Arc;

use shoal_dashboard::{Dashboard, DashboardOptions};
use shoal_exec::{Cluster, RemoteCluster, Security};
use shoal_planner::config::ShoalSettings;

/// A bound dashboard address.
pub struct Board {
    listener: std::net::TcpListener,
    /// Where to open it.
    pub url: String,
}

impl Board {
    /// Binds `shoal.dashboard.bind`, if set, for a scheduler with cluster token `token`.
    pub fn bind(settings: &ShoalSettings, token: Option<&str>) -> shoal::Result<Option<Board>> {
        let wanted = &settings.dashboard;
        if wanted.bind.is_empty() {
            return Ok(None);
        }
        shoal_dashboard::check_auth(&wanted.auth, token).map_err(shoal::Error::input)?;
        let cannot = |e: std::io::Error| {
            shoal::Error::input(format!(
                "cannot serve the dashboard on {}: {e}",
                wanted.bind
            ))
        };
        let listener = std::net::TcpListener::bind(&wanted.bind).map_err(cannot)?;
        listener.set_nonblocking(true).map_err(cannot)?;
        let url = shoal_dashboard::url(listener.local_addr().map_err(cannot)?, &wanted.prefix);
        Ok(Some(Board { listener, url }))
    }
}

/// How the dashboard reaches the scheduler it runs in.
pub struct OwnScheduler {
    /// The scheduler's URL on this host.
    pub url: String,
    /// The cluster token.
    pub token: Option<String>,
    /// The scheduler's TLS certificate, trusted as the authority of its own connection.
    pub tls_cert: Option<String>,
}

/// `address` with an unspecified IP (0.0.0.0, ::) replaced by loopback, to connect to.
pub fn loopback(address: SocketAddr) -> SocketAddr {
    if address.ip().is_unspecified() {
        let ip = match address {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        SocketAddr::new(ip, address.port())
    } else {
        address
    }
}

/// Serves `board` until the process ends; never resolves. A dashboard that cannot
/// start or stops says so on stderr and leaves the scheduler running.
pub async fn serve_or_log(board: Option<Board>, own: OwnScheduler, settings: &ShoalSettings) {
    if let Err(e) = serve(board, own, settings).await {
        eprintln!("shoal scheduler: the dashboard stopped: {e}");
    }
    std::future::pending::<()>().await
}

/// Serves `board` until the process ends (never resolves without one); an error only
/// when the dashboard cannot start or stops.
async fn serve(
    board: Option<Board>,
    own: OwnScheduler,
    settings: &ShoalSettings,
) -> shoal::Result<()> {
    let Some(board) = board else {
        return std::future::pending().await;
    };
    let options = DashboardOptions {
        prefix: settings.dashboard.prefix.clone(),
        token: own.token.clone(),
        token_for_reads: settings.dashboard.auth == "token",
        settings: shoal_dashboard::shown_settings(settings),
    };
    let security = Security::from_files(own.token, None, None, own.tls_cert.as_deref())?;
    let url = own.url;
    // Connecting waits for the scheduler's answer: off this runtime, which serves it.
    let client = tokio::task::spawn_blocking(move || RemoteCluster::connect(&url, security))
        .await
        .map_err(|e| shoal::Error::input(format!("the dashboard could not start: {e}")))??;
    let cluster: Arc<dyn Cluster> = Arc::new(client);
    let dashboard = Dashboard::follow(&cluster, options).await?;
    // The client's own threads serve the pages, not the scheduler's event loop.
    let listener = board.listener;
    let served = cluster.runtime().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        dashboard.serve(listener).await
    });
    let result = served.await;
    // Keep the client until the server ends.
    drop(cluster);
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(shoal::Error::input(format!("the dashboard stopped: {e}"))),
        Err(e) => Err(shoal::Error::input(format!("the dashboard stopped: {e}"))),
    }
}
