//! The dashboard a session serves when `shoal.dashboard.bind` is set: on the session's
//! cluster runtime, reading the cluster through the same interface as every client.

use std::sync::Arc;

use shoal_dashboard::{Dashboard, DashboardOptions};
use shoal_exec::Cluster;
use shoal_planner::config::ShoalSettings;

use crate::{Error, Result};

/// A dashboard being served; dropping it stops the server.
pub(crate) struct ServedDashboard {
    /// Where to open it.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ServedDashboard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the dashboard `settings` ask for, if any: bound before this returns (a taken
/// port is an error naming the address) and following the cluster's events.
pub(crate) fn serve(
    cluster: &Arc<dyn Cluster>,
    settings: &ShoalSettings,
    token: Option<String>,
) -> Result<Option<ServedDashboard>> {
    let wanted = &settings.dashboard;
    if wanted.bind.is_empty() {
        return Ok(None);
    }
    shoal_dashboard::check_auth(&wanted.auth, token.as_deref()).map_err(Error::input)?;
    let cannot = |e: std::io::Error| {
        Error::input(format!(
            "cannot serve the dashboard on {}: {e}",
            wanted.bind
        ))
    };
    let listener = std::net::TcpListener::bind(&wanted.bind).map_err(cannot)?;
    listener.set_nonblocking(true).map_err(cannot)?;
    let address = listener.local_addr().map_err(cannot)?;
    let options = DashboardOptions {
        prefix: wanted.prefix.clone(),
        token_for_reads: wanted.auth == "token",
        token,
        settings: shoal_dashboard::shown_settings(settings),
    };
    let (ready, started) = std::sync::mpsc::channel();
    let following = Arc::clone(cluster);
    let task = cluster.runtime().spawn(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let dashboard = match Dashboard::follow(&following, options).await {
            Ok(dashboard) => dashboard,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        // The session owns the cluster; the dashboard only looks at it.
        drop(following);
        let _ = ready.send(Ok(()));
        if let Err(e) = dashboard.serve(listener).await {
            eprintln!("the dashboard on {address} stopped: {e}");
        }
    });
    match started.recv() {
        Ok(Ok(())) => Ok(Some(ServedDashboard {
            url: shoal_dashboard::url(address, &wanted.prefix),
            task,
        })),
        Ok(Err(e)) => Err(Error::input(format!(
            "cannot serve the dashboard on {address}: {e}"
        ))),
        Err(_) => Err(Error::input(format!(
            "cannot serve the dashboard on {address}: it stopped while starting"
        ))),
    }
}
