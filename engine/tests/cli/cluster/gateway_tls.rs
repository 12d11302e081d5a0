//! TLS through the gateway: its API served over TLS, and a cluster whose scheduler,
//! workers and clients speak TLS with the certificate authority made for that cluster
//! alone, which the gateway hands its owner.

use std::path::Path;
use std::process::{Child, Command};

use serde_json::Value;
use shoal::Session;

use super::shoal_first_line;

const ALICE: &str = "alice-token-0123456789";

/// An authority and a certificate it signs for 127.0.0.1: (cert, key, ca) paths.
fn api_certificates(dir: &Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    (
        write("api.pem", cert.pem()),
        write("api.key", key.serialize_pem()),
        write("api-ca.pem", ca_cert.pem()),
    )
}

/// Kills the gateway, then every process of its clusters, when dropped.
struct Running(Child, std::path::PathBuf);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if std::fs::read_link(entry.path().join("fd/2")).is_ok_and(|p| p.starts_with(&self.1)) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

fn gateway_cli(url: &str, ca: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command
        .arg("gateway")
        .args(args)
        .env("SHOAL_GATEWAY", url)
        .env("SHOAL_GATEWAY_TOKEN", ALICE)
        .env_remove("SHOAL_GATEWAY_CA");
    if let Some(ca) = ca {
        command.args(["--gateway-ca", ca]);
    }
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_each_clusters_traffic_speak_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, api_ca) = api_certificates(dir.path());
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nbind = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ntls_cert = \"{cert}\"\n\
             tls_key = \"{key}\"\ncluster_tls = true\n\n[users.alice]\ntoken = \"{ALICE}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let (child, line) =
        shoal_first_line(&["gateway", "serve", "--config", config.to_str().unwrap()]);
    let _running = Running(child, dir.path().to_path_buf());
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{line}");

    // Plain HTTP gets no answer; a client that does not trust the gateway's authority
    // is refused in one line; one that does creates a cluster.
    let host = url.trim_start_matches("https://");
    let plain = std::panic::catch_unwind(|| super::http::send(host, "GET", "/healthz", &[], ""));
    assert!(plain.is_err() || plain.unwrap().status != 200);
    let untrusted = gateway_cli(&url, None, &["list"]);
    assert!(!untrusted.status.success());
    let error = String::from_utf8_lossy(&untrusted.stderr).to_string();
    assert!(error.contains("certificate"), "{error}");
    assert_eq!(error.trim().lines().count(), 1, "{error}");

    // A client that connects and never says hello holds up no one.
    let _silent = std::net::TcpStream::connect(host).unwrap();
    assert!(gateway_cli(&url, Some(&api_ca), &["list"]).status.success());

    let spec = dir.path().join("cluster.toml");
    std::fs::write(&spec, "[groups.cpu]\nworkers = 2\nmemory = \"512MiB\"\n").unwrap();
    let out = gateway_cli(
        &url,
        Some(&api_ca),
        &["create", "--spec", spec.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cluster: Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = cluster["name"].as_str().unwrap().to_string();
    let scheduler = cluster["scheduler"].as_str().unwrap().to_string();
    assert!(scheduler.starts_with("https://127.0.0.1:"), "{cluster}");
    let cluster_ca = cluster["tls_ca"].as_str().unwrap().to_string();
    assert!(
        cluster_ca.starts_with("-----BEGIN CERTIFICATE-----"),
        "{cluster}"
    );
    assert_ne!(cluster_ca, std::fs::read_to_string(&api_ca).unwrap());
    // The scheduler's own dashboard reaches it over TLS: it answers ready.
    let board = cluster["dashboard"].as_str().unwrap();
    let board_host = board.trim_start_matches("http://").trim_end_matches('/');
    let ready = super::http::send(board_host, "GET", "/readyz", &[], "");
    assert_eq!((ready.status, ready.body.trim()), (200, "ready"));
    // The key stays the gateway's own.
    let key_file = dir.path().join("clusters").join(&name).join("tls/key.pem");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // A session found through the gateway runs a TPC-H query: the client, the scheduler
    // and the two workers (which exchange the join's partitions) all over TLS.
    let session = Session::builder()
        .gateway_cluster(&url, ALICE, &name)
        .gateway_ca(&api_ca)
        .build()
        .unwrap();
    session
        .register_dir(super::tpch_dir().to_str().unwrap())
        .unwrap();
    let results = session.sql_script(shoal::tpch::QUERIES[2].1).await.unwrap();
    super::assert_rows_eq(
        "q03",
        &super::answer("q03"),
        &super::rows(results.last().unwrap()),
    );
    let status = session.status().await.unwrap();
    assert_eq!(status.workers.len(), 2);
    assert!(
        status.workers.iter().all(|w| w.tasks_completed > 0),
        "{status:?}"
    );

    // Without the cluster's authority the scheduler is not reached; with another
    // authority (the gateway's), the handshake fails.
    let token = cluster["token"].as_str().unwrap();
    let error = Session::builder()
        .cluster(&scheduler)
        .token(token)
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("--tls-ca"), "{error}");
    let wrong = Session::builder()
        .cluster(&scheduler)
        .token(token)
        .tls_ca(&api_ca)
        .build();
    match wrong {
        Err(_) => {}
        Ok(session) => assert!(session.status().await.is_err()),
    }
    let stopped = gateway_cli(&url, Some(&api_ca), &["stop", &name]);
    assert!(stopped.status.success());
}
