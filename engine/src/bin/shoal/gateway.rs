//! `shoal gateway serve`: clusters as a service (see the `shoal-gateway` crate).

use std::io::Write;
use std::sync::Arc;

use clap::{Args, Subcommand};
use shoal_gateway::backend::LocalBackend;
use shoal_gateway::db::Db;
use shoal_gateway::service::Gateway;
use shoal_gateway::{GatewayConfig, api};

/// What `shoal gateway` does.
#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Serve the gateway's REST API; prints its URL.
    Serve(ServeArgs),
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
    match command {
        GatewayCommand::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> shoal::Result<()> {
    let config = GatewayConfig::from_file(&args.config).map_err(|e| input(e.to_string()))?;
    if config.backend != "local" {
        return Err(input(format!(
            "{}: gateway.backend '{}' is not available yet; use local",
            args.config, config.backend
        )));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| input(format!("cannot create {}: {e}", config.data_dir.display())))?;
    let db = Db::open(&config.data_dir.join("gateway.sqlite")).map_err(input)?;
    let backend = LocalBackend::new(std::env::current_exe()?, config.data_dir.join("clusters"));
    let listener = tokio::net::TcpListener::bind(&config.bind)
        .await
        .map_err(|e| input(format!("cannot listen on {}: {e}", config.bind)))?;
    let address = listener.local_addr()?;
    let check_interval = config.check_interval;
    let gateway =
        Gateway::new(config, db, Box::new(backend)).map_err(|e| input(e.message().to_string()))?;
    println!("shoal gateway listening on http://{address}");
    let _ = std::io::stdout().flush();
    tokio::select! {
        served = api::serve(Arc::new(gateway), listener, check_interval) => Ok(served?),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
