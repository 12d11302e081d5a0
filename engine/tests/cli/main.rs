//! The `shoal` binary: output formats, batch files, exit codes and one-line errors.

mod cluster;
mod memory;
mod s3;
// The SQL logic test runner of the integration tests, run here on worker processes.
#[path = "../../../tests/it/slt_runner.rs"]
mod slt_runner;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn shoal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .env("SHOAL_WORKERS", "2")
        .output()
        .expect("run shoal")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// TPC-H at a tiny scale factor, generated through the CLI once per build directory.
fn data() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-tpch-sf0.002");
        if !dir.join("region.parquet").exists() || !dir.join("lineitem.parquet").exists() {
            let staging = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            let out = shoal(&[
                "gen",
                "tpch",
                "--scale-factor",
                "0.002",
                "--output",
                staging.path().to_str().unwrap(),
            ]);
            assert!(out.status.success(), "{}", stderr(&out));
            let staged = staging.keep();
            if std::fs::rename(&staged, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&staged);
            }
        }
        dir
    })
}

#[test]
fn csv_output_runs_every_statement_in_order() {
    let tables = data().to_str().unwrap();
    let out = shoal(&[
        "sql",
        "--tables",
        tables,
        "--format",
        "csv",
        "-c",
        "select r_regionkey, r_name from region where r_regionkey < 2 order by 1; select null as n, 'a,b' as s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "r_regionkey,r_name\n0,AFRICA\n1,AMERICA\nn,s\n,\"a,b\"\n"
    );
}

#[test]
fn file_of_statements_json_and_named_tables() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("q.sql");
    std::fs::write(
        &script,
        "create view big as select n_name from nation where n_nationkey > 22;\n-- comment\nselect * from big order by n_name;\n",
    )
    .unwrap();
    let nation = data().join("nation.parquet");
    let spec = format!("nation={}", nation.display());
    let out = shoal(&[
        "sql",
        "--table",
        &spec,
        "--format",
        "json",
        "-f",
        script.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        r#"[{"n_name":"UNITED KINGDOM"},{"n_name":"UNITED STATES"}]"#
    );
}

#[test]
fn table_format_prints_a_grid() {
    let tables = data().to_str().unwrap();
    let out = shoal(&[
        "sql",
        "--tables",
        tables,
        "-c",
        "select count(*) as n from region",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("| n |") && text.contains("| 5 |"), "{text}");
}

fn assert_one_line_error(out: &Output, needle: &str) {
    assert_error_of_kind(out, shoal::ErrorKind::Input, needle);
}

/// The command failed with an error of `kind`: its exit code, one line naming `needle`.
fn assert_error_of_kind(out: &Output, kind: shoal::ErrorKind, needle: &str) {
    assert_eq!(
        out.status.code(),
        Some(i32::from(kind.exit_code())),
        "exit code for {kind}; stderr: {}",
        stderr(out)
    );
    let err = stderr(out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("Error: "), "{err}");
    assert!(err.contains(needle), "{needle} in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_exits_1_with_one_line() {
    let tables = data().to_str().unwrap();
    assert_one_line_error(
        &shoal(&[
            "sql",
            "--table",
            "t=/no/such/file.parquet",
            "-c",
            "select 1",
        ]),
        "/no/such/file.parquet",
    );
    assert_one_line_error(
        &shoal(&["sql", "--tables", tables, "-c", "selec 1"]),
        "SQL syntax error",
    );
    assert_one_line_error(
        &shoal(&["sql", "--tables", tables, "-c", "select nope from region"]),
        "nope",
    );
    assert_one_line_error(
        &shoal(&["sql", "--tables", tables, "-c", "select * from nowhere"]),
        "nowhere",
    );
    assert_one_line_error(
        &shoal(&["sql", "-f", "/no/such/script.sql"]),
        "/no/such/script.sql",
    );
    assert_one_line_error(
        &shoal(&["sql", "--table", "broken", "-c", "select 1"]),
        "NAME=PATH",
    );

    let bad_env = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["sql", "-c", "select 1"])
        .env("SHOAL_DATA_PLANE", "carrier-pigeon")
        .output()
        .unwrap();
    assert_one_line_error(&bad_env, "SHOAL_DATA_PLANE");

    let dir = tempfile::tempdir().unwrap();
    let ragged = dir.path().join("ragged.csv");
    std::fs::write(&ragged, "a,b\n1,2\n3\n").unwrap();
    let spec = format!("r={}", ragged.display());
    assert_one_line_error(
        &shoal(&["sql", "--table", &spec, "-c", "select * from r"]),
        "ragged.csv",
    );
}

/// Each kind of error reachable without a cluster prints one line and exits with its own
/// code (cancel: `sigint_cancels_a_running_query`; lost workers and failed fetches: the
/// cluster tests).
#[test]
fn errors_exit_with_the_code_of_their_kind() {
    use shoal::ErrorKind;
    assert_error_of_kind(
        &shoal(&["sql", "-c", "select * from unnest([1, 2]) with ordinality"]),
        ErrorKind::Planning,
        "not supported",
    );
    assert_error_of_kind(
        &shoal(&[
            "sql",
            "-c",
            "set shoal.task.resources = 'gpu=1'; \
             set shoal.task.placement_timeout = 0; \
             select count(*) from generate_series(1, 10)",
        ]),
        ErrorKind::Resources,
        "no worker offers gpu=1",
    );
    assert_error_of_kind(
        &shoal(&["sql", "--cluster", "http://127.0.0.1:1", "-c", "select 1"]),
        ErrorKind::Io,
        "cannot reach the scheduler at http://127.0.0.1:1",
    );
    // An aggregate that cannot spill, over a worker memory limit it cannot fit in.
    assert_error_of_kind(
        &shoal(&[
            "sql",
            "--memory-limit",
            "1MiB",
            "-c",
            "select string_agg(repeat('x', 100), ',') from generate_series(1, 100000)",
        ]),
        ErrorKind::Resources,
        "memory pool",
    );
}

/// The flags of scheduler and worker processes are settings: parsed and checked as the
/// settings are (the error names the flag and the setting), and their `SHOAL_*` variables
/// are read too.
#[test]
fn process_flags_are_checked_as_the_settings_they_set() {
    assert_one_line_error(
        &shoal(&[
            "scheduler",
            "--bind",
            "127.0.0.1:0",
            "--heartbeat-timeout",
            "0",
        ]),
        "--heartbeat-timeout: invalid value '0' for shoal.scheduler.heartbeat_timeout",
    );
    let worker = shoal(&[
        "worker",
        "--scheduler",
        "http://127.0.0.1:1",
        "--memory-limit",
        "lots",
    ]);
    assert_one_line_error(&worker, "--memory-limit");
    assert_one_line_error(&worker, "'lots'");
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["scheduler", "--bind", "127.0.0.1:0"])
        .env("SHOAL_SCHEDULER_PREFETCH", "many")
        .output()
        .expect("run shoal");
    assert_one_line_error(&out, "SHOAL_SCHEDULER_PREFETCH");
}

#[test]
fn gen_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let first = shoal(&[
        "gen",
        "tpch",
        "--scale-factor",
        "0.001",
        "--output",
        out_dir,
    ]);
    assert!(first.status.success(), "{}", stderr(&first));
    let before = std::fs::metadata(dir.path().join("lineitem.parquet"))
        .unwrap()
        .len();
    assert!(before > 0);
    assert_one_line_error(
        &shoal(&[
            "gen",
            "tpch",
            "--scale-factor",
            "0.002",
            "--output",
            out_dir,
        ]),
        "already exists",
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("lineitem.parquet"))
            .unwrap()
            .len(),
        before
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bench_prints_every_query_and_a_total() {
    let tables = data().to_str().unwrap();
    let out = shoal(&[
        "bench",
        "tpch",
        "--data",
        tables,
        "--iterations",
        "1",
        "--queries",
        "q01,q06",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("q01\t") && lines[0].ends_with("4 rows"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("q06\t") && lines[1].ends_with("1 rows"),
        "{text}"
    );
    assert!(lines[2].starts_with("total\t"), "{text}");
}

#[test]
fn bench_scheduler_simulates_thousands_of_workers_in_one_process() {
    let out = shoal(&[
        "bench",
        "scheduler",
        "--simulate-workers",
        "10,5000",
        "--tasks",
        "20000",
        "--iterations",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (line, workers) in lines.iter().zip(["10", "5000"]) {
        let rest = line
            .strip_prefix(&format!("{workers} workers: "))
            .unwrap_or_else(|| panic!("{text}"));
        let rate: f64 = rest.split(' ').next().unwrap().parse().unwrap();
        assert!(rate > 0.0 && rest.contains(" tasks/s ("), "{text}");
    }
    assert!(lines[0].ends_with("(100% of 10 workers)"), "{text}");
    assert_one_line_error(
        &shoal(&["bench", "scheduler", "--simulate-workers", "10,0"]),
        "--simulate-workers: each count must be at least 1",
    );
    assert_one_line_error(
        &shoal(&[
            "bench",
            "scheduler",
            "--simulate-workers",
            "10",
            "--cluster",
            "http://127.0.0.1:1",
        ]),
        "--simulate-workers runs its own scheduler: it takes no --cluster",
    );
}

#[test]
fn readme_settings_table_is_generated_from_the_config() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme
        .find("<!-- settings:begin -->\n")
        .expect("settings marker")
        + "<!-- settings:begin -->\n".len();
    let end = readme
        .find("<!-- settings:end -->")
        .expect("settings end marker");
    assert_eq!(
        &readme[start..end],
        shoal::ShoalConfig::reference_markdown()
    );
}

#[test]
fn shell_runs_statements_from_stdin() {
    use std::io::Write;
    let tables = data().to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["sql", "--tables", tables])
        .env("SHOAL_WORKERS", "2")
        .env("HOME", tempfile::tempdir().unwrap().path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"select r_name\n  from region\n  where r_regionkey = 3;\n\\d\nselec oops;\n\\q\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("| EUROPE |"),
        "multi-line statement ran: {text}"
    );
    assert!(text.contains("1 row in "), "timing: {text}");
    assert!(
        text.contains("lineitem\n") && text.contains("supplier\n"),
        "\\d lists tables: {text}"
    );
    assert!(
        stderr(&out).contains("SQL syntax error"),
        "errors keep the shell alive: {}",
        stderr(&out)
    );
}

#[test]
fn sigint_cancels_a_running_query() {
    let tables = data().to_str().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "sql",
            "--tables",
            tables,
            "-c",
            "select sum(a.l_quantity * b.l_quantity) from lineitem a cross join lineitem b cross join region",
        ])
        .env("SHOAL_WORKERS", "2")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Long enough for the process to start and install its Ctrl-C handler; the query
    // (a 5 x 12k x 12k cross join in a debug build) runs far longer.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let started = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "exits promptly after Ctrl-C"
    );
    assert_error_of_kind(&out, shoal::ErrorKind::Cancelled, "cancelled");
}

/// A Zarr group with `t2m` (time 200 days from 2001-01-01, lat 3, lon 4; NaN in about 5%
/// of cells; 50-day chunks) written by the library.
fn zarr_input(dir: &Path) -> (PathBuf, Vec<f64>) {
    let path = dir.join("in.zarr");
    let session = shoal::Session::builder().workers(2).build().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let values = runtime.block_on(async {
        let x = session
            .random_uniform(&[200, 3, 4], &[50, 3, 4], 21)
            .unwrap();
        let x = x.lt(0.05).unwrap().where_(f64::NAN, &x).unwrap();
        let start = shoal::labeled::index::parse_datetime("2001-01-01").unwrap();
        let days = (0..200).map(|d| start + d * 86_400_000_000_000).collect();
        let da = shoal::DataArray::new(x, &["time", "lat", "lon"])
            .unwrap()
            .with_name("t2m")
            .with_coord("time", "time", shoal::Index::DateTime(days))
            .unwrap()
            .with_coord("lat", "lat", shoal::Index::F64(vec![-5.0, 0.0, 5.0]))
            .unwrap();
        da.to_zarr(path.to_str().unwrap()).await.unwrap();
        da.data().collect_ndarray::<f64>().await.unwrap()
    });
    (path, values.iter().copied().collect())
}

/// `shoal sql --table SPEC --format csv -c SQL`.
fn csv_query(spec: &str, sql: &str) -> Output {
    shoal(&["sql", "--table", spec, "--format", "csv", "-c", sql])
}

#[test]
fn run_writes_zarr_and_parquet_and_sql_reads_zarr() {
    let dir = tempfile::tempdir().unwrap();
    let (input, values) = zarr_input(dir.path());
    let input = input.to_str().unwrap();
    let at = |t: usize, i: usize, j: usize| values[(t * 3 + i) * 4 + j];
    let in_dir = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    // Zarr -> Zarr: the climatology anomaly's standard deviation over time.
    let out_zarr = in_dir("anomaly_std.zarr");
    let out = shoal(&[
        "run",
        input,
        &out_zarr,
        "--var",
        "t2m",
        "-p",
        "anomaly(time.month) | std(time)",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("wrote t2m (lat: 3, lon: 4) to {out_zarr}")),
        "{}",
        stdout(&out)
    );
    let session = shoal::Session::builder().workers(1).build().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let got = runtime.block_on(async {
        let t2m = session.open_zarr(&out_zarr).unwrap().var("t2m").unwrap();
        t2m.to_ndarray::<f64>().await.unwrap()
    });
    // By hand: anomalies from each month's NaN-skipping mean, then their population std.
    let month_of = |t: usize| {
        let ends = [31, 59, 90, 120, 151, 181, 212];
        ends.iter().position(|&e| t < e).unwrap()
    };
    for i in 0..3 {
        for j in 0..4 {
            let mut anomalies = Vec::new();
            for m in 0..7 {
                let cells: Vec<f64> = (0..200)
                    .filter(|&t| month_of(t) == m)
                    .map(|t| at(t, i, j))
                    .filter(|v| !v.is_nan())
                    .collect();
                let mean = cells.iter().sum::<f64>() / cells.len() as f64;
                anomalies.extend(cells.iter().map(|v| v - mean));
            }
            let n = anomalies.len() as f64;
            let mu = anomalies.iter().sum::<f64>() / n;
            let want = (anomalies.iter().map(|a| (a - mu).powi(2)).sum::<f64>() / n).sqrt();
            assert!(
                (got[[i, j]] - want).abs() < 1e-12,
                "({i}, {j}): {} vs {want}",
                got[[i, j]]
            );
        }
    }

    // Zarr -> Parquet: monthly means, one row per (month, lat, lon).
    let out_parquet = in_dir("monthly.parquet");
    let out = shoal(&["run", input, &out_parquet, "-p", "resample(time=MS, mean)"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = csv_query(
        &format!("m={out_parquet}"),
        "select count(*) as n, count(distinct time) as months from m; \
         select t2m from m where time = '2001-02-01' and lat = 5 and lon = 3",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..2], ["n,months", "84,7"]);
    let feb: Vec<f64> = (31..59)
        .map(|t| at(t, 2, 3))
        .filter(|v| !v.is_nan())
        .collect();
    let want = feb.iter().sum::<f64>() / feb.len() as f64;
    let got: f64 = lines[3].parse().unwrap();
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");

    // The store itself as a SQL table.
    let out = csv_query(
        &format!("cube={input}"),
        "select lat, count(t2m) as n from cube where time >= '2001-07-01' group by lat order by lat",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut want = String::from("lat,n\n");
    for (i, lat) in ["-5.0", "0.0", "5.0"].iter().enumerate() {
        let n = (181..200)
            .flat_map(|t| (0..4).map(move |j| (t, j)))
            .filter(|&(t, j)| !at(t, i, j).is_nan())
            .count();
        want.push_str(&format!("{lat},{n}\n"));
    }
    assert_eq!(stdout(&out), want);

    // Bad input: one line, exit 1, nothing overwritten or left behind.
    let before = std::fs::read_dir(dir.path()).unwrap().count();
    let out = shoal(&["run", input, &out_zarr, "-p", "mean(time)"]);
    assert_one_line_error(&out, "already exists");
    let out = shoal(&["run", input, &in_dir("x.zarr"), "-p", "mean(height)"]);
    assert_one_line_error(&out, "variable 't2m': no dimension 'height'");
    let out = shoal(&["run", input, &in_dir("x.zarr"), "-p", "frobnicate(time)"]);
    assert_one_line_error(&out, "unknown pipeline step 'frobnicate'");
    let out = shoal(&[
        "run",
        input,
        &in_dir("x.zarr"),
        "-p",
        "resample(time=0MS, mean)",
    ]);
    assert_one_line_error(&out, "the count must be 1 to 1000000");
    let out = shoal(&[
        "run",
        input,
        &in_dir("x.zarr"),
        "-p",
        "sel(time=:2001-02-01)",
    ]);
    assert_one_line_error(&out, "is not a label or a LO:HI range with both ends");
    let out = shoal(&["run", input, &in_dir("x.zarr"), "--var", "q"]);
    assert_one_line_error(&out, "no variable 'q'");
    let out = shoal(&["run", &in_dir("missing.zarr"), &in_dir("x.zarr")]);
    assert_one_line_error(&out, "missing.zarr");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before);
}
