//! The dashboard a session serves when `shoal.dashboard.bind` is set: on the session's
//! cluster runtime, reading the cluster through the same interface as every client.

use std::sync::Arc;

use shoal_dashboard::eventlog::EventLog;
use shoal_dashboard::{Dashboard, DashboardOptions};
use shoal_exec::Cluster;
use shoal_planner::config::ShoalSettings;

use crate::{Error, Result};

/// A dashboard being served; dropping it stops the server.
pub(crate) struct ServedDashboard {
    /// Where to open it (none when only the event log was asked for).
    pub url: Option<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ServedDashboard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the dashboard and event log `settings` ask for, if any: bound (and the log
/// opened) before this returns, so a taken port or an unwritable directory is an error
/// naming it, then following the cluster's events.
pub(crate) fn serve(
    cluster: &Arc<dyn Cluster>,
    settings: &ShoalSettings,
    token: Option<String>,
) -> Result<Option<ServedDashboard>> {
    let wanted = &settings.dashboard;
    if wanted.bind.is_empty() && wanted.event_log.is_empty() {
        return Ok(None);
    }
    shoal_dashboard::check_auth(&wanted.auth, token.as_deref()).map_err(Error::input)?;
    let log = open_event_log(&wanted.event_log)?;
    let listener = if wanted.bind.is_empty() {
        None
    } else {
        let cannot = |e: std::io::Error| {
            Error::input(format!(
                "cannot serve the dashboard on {}: {e}",
                wanted.bind
            ))
        };
        let listener = std::net::TcpListener::bind(&wanted.bind).map_err(cannot)?;
        listener.set_nonblocking(true).map_err(cannot)?;
        let address = listener.local_addr().map_err(cannot)?;
        Some((listener, address))
    };
    let url = listener
        .as_ref()
        .map(|(_, address)| shoal_dashboard::url(*address, &wanted.prefix));
    let options = DashboardOptions {
        prefix: wanted.prefix.clone(),
        token_for_reads: wanted.auth == "token",
        token,
        settings: shown_settings(settings),
    };
    let (ready, started) = std::sync::mpsc::channel();
    let following = Arc::clone(cluster);
    let task = cluster.runtime().spawn(async move {
        let dashboard = match Dashboard::follow(&following, options, log).await {
            Ok(dashboard) => dashboard,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        // The session owns the cluster; the dashboard only looks at it.
        drop(following);
        let Some((listener, address)) = listener else {
            let _ = ready.send(Ok(()));
            // Only the event log: follow until the session ends.
            return std::future::pending().await;
        };
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        if let Err(e) = dashboard.serve(listener).await {
            eprintln!("the dashboard on {address} stopped: {e}");
        }
    });
    match started.recv() {
        Ok(Ok(())) => Ok(Some(ServedDashboard { url, task })),
        Ok(Err(e)) => Err(Error::input(format!("the dashboard could not start: {e}"))),
        Err(_) => Err(Error::input(
            "the dashboard could not start: it stopped while starting",
        )),
    }
}

/// The event log in `dir` (`shoal.dashboard.event_log`), if one is asked for.
pub fn open_event_log(dir: &str) -> Result<Option<EventLog>> {
    if dir.is_empty() {
        return Ok(None);
    }
    let log = EventLog::open(
        std::path::Path::new(dir),
        shoal_dashboard::eventlog::DEFAULT_FILE_BYTES,
        shoal_dashboard::eventlog::DEFAULT_FILES,
    )
    .map_err(|e| Error::input(format!("cannot write the event log in {dir}: {e}")))?;
    Ok(Some(log))
}

/// Every setting as (`shoal.` key, value), for the dashboard's `/api/v1/info`.
pub fn shown_settings(settings: &ShoalSettings) -> Vec<(String, String)> {
    use datafusion::config::ExtensionOptions;
    let config = shoal_planner::ShoalConfig {
        settings: settings.clone(),
        started: true,
    };
    config
        .entries()
        .into_iter()
        .map(|e| (e.key, e.value.unwrap_or_default()))
        .collect()
}
