//! The dashboard a `shoal scheduler` serves: bound before the scheduler prints its URL
//! (a taken port is a one-line error and no scheduler starts). It reads the job events
//! from the scheduler's in-process feed (the gRPC stream would encode every event twice
//! over for nothing) and asks everything else of a client of the scheduler itself, as
//! every other client does.

use std::net::SocketAddr;
use std::sync::Arc;

use shoal_dashboard::eventlog::{EventLog, read_log};
use shoal_dashboard::{Dashboard, DashboardOptions};
use shoal_exec::remote::EventFeed;
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

/// Serves `board` and writes `log` until the process ends; never resolves. A dashboard
/// that cannot start or stops says so on stderr and leaves the scheduler running.
pub async fn serve_or_log(
    board: Option<Board>,
    log: Option<EventLog>,
    own: OwnScheduler,
    feed: EventFeed,
    settings: &ShoalSettings,
) {
    if let Err(e) = serve(board, log, own, feed, settings).await {
        eprintln!("shoal scheduler: the dashboard stopped: {e}");
    }
    std::future::pending::<()>().await
}

/// Serves `board` and writes `log` until the process ends (never resolves without a
/// board); an error only when the dashboard cannot start or stops.
async fn serve(
    board: Option<Board>,
    log: Option<EventLog>,
    own: OwnScheduler,
    feed: EventFeed,
    settings: &ShoalSettings,
) -> shoal::Result<()> {
    if board.is_none() && log.is_none() {
        return std::future::pending().await;
    }
    let options = DashboardOptions {
        prefix: settings.dashboard.prefix.clone(),
        token: own.token.clone(),
        token_for_reads: settings.dashboard.auth == "token",
        settings: shoal::shown_settings(settings),
    };
    let security = Security::from_files(own.token, None, None, own.tls_cert.as_deref())?;
    let url = own.url;
    // Connecting waits for the scheduler's answer: off this runtime, which serves it.
    let client = tokio::task::spawn_blocking(move || RemoteCluster::connect(&url, security))
        .await
        .map_err(|e| shoal::Error::input(format!("the dashboard could not start: {e}")))??;
    let cluster: Arc<dyn Cluster> = Arc::new(client);
    let dashboard = Dashboard::follow_batches(&cluster, feed.batches(), options, log);
    let Some(board) = board else {
        // Only the event log: follow until the process ends, keeping the client.
        let _keep = (cluster, dashboard);
        return std::future::pending().await;
    };
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

/// `shoal dashboard --replay DIR`: the recorded events of `dir` as a read-only
/// dashboard on `--dashboard-bind` (default 127.0.0.1:8787), until Ctrl-C.
pub async fn replay(dir: &str, args: &crate::DashboardArgs) -> shoal::Result<()> {
    let events = read_log(std::path::Path::new(dir)).map_err(shoal::Error::input)?;
    let bind = args
        .dashboard_bind
        .clone()
        .unwrap_or_else(|| "127.0.0.1:8787".to_string());
    let prefix = args.dashboard_prefix.clone().unwrap_or_default();
    let cannot = |e: std::io::Error| {
        shoal::Error::input(format!("cannot serve the dashboard on {bind}: {e}"))
    };
    let listener = tokio::net::TcpListener::bind(&bind).await.map_err(cannot)?;
    let url = shoal_dashboard::url(listener.local_addr().map_err(cannot)?, &prefix);
    let dashboard = Dashboard::replay(
        &events,
        DashboardOptions {
            prefix,
            ..DashboardOptions::default()
        },
    );
    println!(
        "shoal dashboard at {url} (replaying {} events from {dir})",
        events.len()
    );
    let _ = std::io::Write::flush(&mut std::io::stdout());
    tokio::select! {
        result = dashboard.serve(listener) => result.map_err(|e| shoal::Error::input(format!("the dashboard stopped: {e}"))),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
