//! `shoal gateway serve`: clusters as a service (see the `shoal-gateway` crate).

use std::io::Write;
use std::sync::Arc;

use clap::{Args, Subcommand};
use shoal_gateway::ClusterSpec;
use shoal_gateway::backend::{Backend, LocalBackend};
use shoal_gateway::client::GatewayClient;
use shoal_gateway::db::Db;
use shoal_gateway::kubernetes::KubernetesBackend;
use shoal_gateway::service::Gateway;
use shoal_gateway::slurm::SlurmBackend;
use shoal_gateway::{GatewayConfig, api};

/// What `shoal gateway` does.
#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Serve the gateway's REST API; prints its URL.
    Serve(ServeArgs),
    /// Create a cluster from a spec file or a profile; prints it as JSON.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// A cluster spec (TOML).
        #[arg(long, value_name = "FILE", required_unless_present = "profile")]
        spec: Option<String>,
        /// One of the gateway's profiles.
        #[arg(long, conflicts_with = "spec")]
        profile: Option<String>,
    },
    /// List my clusters.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one of my clusters as JSON (scheduler, token, workers alive per group).
    Show {
        #[command(flatten)]
        client: ClientArgs,
        /// The cluster's name.
        name: String,
    },
    /// Set the number of workers of a group of one of my clusters.
    Scale {
        #[command(flatten)]
        client: ClientArgs,
        /// The cluster's name.
        name: String,
        /// The group.
        #[arg(long)]
        group: String,
        /// Its new number of workers (not --workers, which sizes embedded sessions).
        #[arg(long)]
        count: usize,
    },
    /// Stop one of my clusters.
    Stop {
        #[command(flatten)]
        client: ClientArgs,
        /// The cluster's name.
        name: String,
    },
}

/// Where the gateway is and who calls it.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// The gateway's URL, e.g. http://gw:8686.
    #[arg(long, env = "SHOAL_GATEWAY")]
    gateway: String,
    /// My gateway token.
    #[arg(long, env = "SHOAL_GATEWAY_TOKEN", hide_env_values = true)]
    gateway_token: String,
    /// PEM certificate of the authority to trust for an https:// gateway (besides the
    /// system's).
    #[arg(long, value_name = "FILE", env = "SHOAL_GATEWAY_CA")]
    gateway_ca: Option<String>,
}

impl ClientArgs {
    fn client(&self) -> shoal::Result<GatewayClient> {
        let client = GatewayClient::new(&self.gateway, &self.gateway_token);
        match &self.gateway_ca {
            Some(path) => client.with_ca_file(path).map_err(input),
            None => Ok(client),
        }
    }
}

/// Arguments of `shoal gateway serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The gateway's configuration (TOML): users, limits, profiles, backend.
    #[arg(long, value_name = "FILE")]
    config: String,
}

fn input(message: String) -> shoal::Error {
    shoal::Error::input(message)
}

/// Runs `shoal gateway …`.
pub async fn run(command: GatewayCommand) -> shoal::Result<()> {
    let shown = match command {
        GatewayCommand::Serve(args) => return serve(args).await,
        GatewayCommand::Create {
            client,
            spec: Some(path),
            ..
        } => {
            let spec = ClusterSpec::from_file(&path).map_err(|e| input(e.to_string()))?;
            client.client()?.create(&spec).await
        }
        GatewayCommand::Create {
            client, profile, ..
        } => {
            let profile = profile.unwrap_or_default();
            client.client()?.create_from_profile(&profile).await
        }
        GatewayCommand::List { client } => {
            let clusters = client.client()?.list().await.map_err(input)?;
            println!("{}", cluster_table(&clusters));
            return Ok(());
        }
        GatewayCommand::Show { client, name } => client.client()?.get(&name).await,
        GatewayCommand::Scale {
            client,
            name,
            group,
            count,
        } => client.client()?.scale(&name, &group, count).await,
        GatewayCommand::Stop { client, name } => client.client()?.stop(&name).await,
    };
    let shown = shown.map_err(input)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&shown).unwrap_or_default()
    );
    Ok(())
}

/// One line per cluster: name, state, workers per group, scheduler, reason.
fn cluster_table(clusters: &[serde_json::Value]) -> String {
    let mut lines = vec!["name  state  workers  scheduler  reason".to_string()];
    for c in clusters {
        let text = |key: &str| c[key].as_str().unwrap_or("").to_string();
        let groups = c["groups"].as_object().cloned().unwrap_or_default();
        let workers: Vec<String> = groups
            .iter()
            .map(|(name, g)| format!("{name}={}", g["workers"]))
            .collect();
        lines.push(format!(
            "{}  {}  {}  {}  {}",
            text("name"),
            text("state"),
            workers.join(","),
            text("scheduler"),
            text("reason")
        ));
    }
    lines.join("\n")
}

async fn serve(args: ServeArgs) -> shoal::Result<()> {
    let config = GatewayConfig::from_file(&args.config).map_err(|e| input(e.to_string()))?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| input(format!("cannot create {}: {e}", config.data_dir.display())))?;
    let exe = std::env::current_exe()?;
    let clusters = config.data_dir.join("clusters");
    let backend: Box<dyn Backend> = match config.backend.as_str() {
        "local" => Box::new(LocalBackend::new(exe, clusters, config.cluster_tls)),
        "slurm" => Box::new(SlurmBackend::new(
            exe,
            clusters,
            &config.slurm,
            config.cluster_tls,
        )),
        _ => {
            // The client runs on a runtime of its own, made outside this one.
            let (settings, tls) = (config.kubernetes.clone(), config.cluster_tls);
            let made = tokio::task::spawn_blocking(move || KubernetesBackend::new(&settings, tls))
                .await
                .map_err(|e| input(format!("the Kubernetes client failed: {e}")))?;
            Box::new(made.map_err(|e| input(format!("{}: {e}", args.config)))?)
        }
    };
    let db = Db::open(&config.data_dir.join("gateway.sqlite")).map_err(input)?;
    let listener = tokio::net::TcpListener::bind(&config.bind)
        .await
        .map_err(|e| input(format!("cannot listen on {}: {e}", config.bind)))?;
    let address = listener.local_addr()?;
    let check_interval = config.check_interval;
    let tls = match &config.tls {
        Some((cert, key)) => Some(
            shoal_gateway::tls::server_config(cert, key)
                .map_err(|e| input(format!("{}: gateway.tls_cert: {e}", args.config)))?,
        ),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Cleaning up clusters left starting calls the backend, which blocks.
    let gateway = tokio::task::spawn_blocking(move || Gateway::new(config, db, backend))
        .await
        .map_err(|e| input(format!("the gateway failed to start: {e}")))?
        .map_err(|e| input(e.message().to_string()))?;
    println!("shoal gateway listening on {scheme}://{address}");
    let _ = std::io::stdout().flush();
    tokio::select! {
        served = api::serve(Arc::new(gateway), listener, tls, check_interval) => Ok(served?),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
