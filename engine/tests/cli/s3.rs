//! `s3://` URLs against a real S3 protocol server (moto, from PyPI, installed into the
//! build directory on first use): COPY writes an object, `--table` lists and reads it.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{assert_one_line_error, data, stderr, stdout};

/// The Python of a virtual environment with moto, under the build directory.
fn moto_python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("moto-venv");
    let python = venv.join("bin/python");
    if python.exists() {
        return python;
    }
    // Built beside its final name and renamed, so concurrent test runs never see half a
    // venv; `bin/python` finds its venv from where it is, so the rename is safe.
    let staging = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(staging.path())
        .status();
    assert!(
        matches!(made, Ok(s) if s.success()),
        "python3 -m venv failed: the S3 test needs Python 3 with venv"
    );
    let pip = staging.path().join("bin/pip");
    let installed = Command::new(&pip)
        .args(["install", "--quiet", "moto[server]==5.*"])
        .status()
        .unwrap();
    assert!(installed.success(), "pip install moto[server] failed");
    let staged = staging.keep();
    if std::fs::rename(&staged, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&staged);
    }
    python
}

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let python = moto_python();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(python)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

fn create_bucket(endpoint: &str, bucket: &str) {
    use std::io::{Read, Write};
    let host = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).unwrap();
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"),
        "{reply}"
    );
}

fn shoal_s3(endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .env("SHOAL_WORKERS", "2")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .unwrap()
}

#[test]
fn copy_to_and_query_from_s3() {
    let moto = start_moto();
    create_bucket(&moto.endpoint, "shoal-test");
    let tables = data().to_str().unwrap();
    let out = shoal_s3(
        &moto.endpoint,
        &[
            "sql",
            "--tables",
            tables,
            "-c",
            "copy (select * from nation) to 's3://shoal-test/lake/nation.parquet' stored as parquet",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let out = shoal_s3(
        &moto.endpoint,
        &[
            "sql",
            "--table",
            "n=s3://shoal-test/lake/",
            "--format",
            "csv",
            "-c",
            "select count(*) as c, sum(n_regionkey) as s from n",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "c,s\n25,50\n");

    let out = shoal_s3(
        &moto.endpoint,
        &[
            "sql",
            "--table",
            "x=s3://shoal-test/nothing/",
            "-c",
            "select 1",
        ],
    );
    assert_one_line_error(&out, "s3://shoal-test/nothing/");
}
