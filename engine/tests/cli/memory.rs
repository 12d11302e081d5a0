//! Array jobs within the workers' memory limit, measured as a user would: each job runs
//! as a child process (the `shoal` binary, or this test binary for the matrix product)
//! that reports its peak resident memory (`VmHWM`) as it ends. On a cube about 4x
//! the two workers' total limit, every job gives the values it gives with no limit and
//! peaks within 1.25x the total limit above what the same job peaks at on a cube 1/50
//! the size (the process's own footprint: binary, runtime, allocator).

use std::path::Path;
use std::process::Command;

use shoal::labeled::{ZarrCodec, ZarrOptions};

/// Each worker's limit in the limited runs.
const LIMIT: u64 = 24 << 20;
/// Workers per job.
const WORKERS: u64 = 2;

/// A finished child: exit success, stdout, stderr and peak resident bytes.
pub(crate) struct Finished {
    pub(crate) ok: bool,
    pub(crate) status: std::process::ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) peak: u64,
}

/// Runs `command` (which prints `peak resident memory: N bytes` on stderr as it ends,
/// as `shoal --verbose` does) to the end. The kernel's `ru_maxrss` would not do: a
/// process started from this one inherits this test's own peak at `exec`.
pub(crate) fn run_measured(mut command: Command) -> Finished {
    let out = command.output().expect("run the job");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let peak = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak resident memory: "))
        .and_then(|rest| rest.strip_suffix(" bytes"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no peak memory report in: {stderr}"));
    Finished {
        ok: out.status.success(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
        peak,
    }
}

/// Each worker's limit in the runs without a (tight) limit: far above the 200 MB cube.
const ROOMY: &str = "4GiB";

/// `shoal ARGS` with two workers, limited to [`LIMIT`] each when `limited`, else to
/// [`ROOMY`].
fn shoal(args: &[&str], limited: bool) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    let limit = if limited {
        LIMIT.to_string()
    } else {
        ROOMY.to_string()
    };
    command
        .arg("--verbose")
        .args(args)
        .env("SHOAL_WORKERS", WORKERS.to_string())
        .env("SHOAL_WORKER_MEMORY_LIMIT", limit);
    command
}

/// A (time, lat, lon) float32 cube of uniform noise with daily times from 2000-01-01, in
/// chunks of 25 days, written uncompressed with its coordinates.
fn write_cube(session: &shoal::Session, path: &Path, days: usize) {
    let (lat, lon) = (100, 250);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let x = session
            .random_uniform(&[days, lat, lon], &[25, lat, lon], 5)
            .unwrap()
            .mul(30.0)
            .unwrap()
            .add(260.0)
            .unwrap()
            .astype(shoal::DType::F32)
            .unwrap();
        let start = shoal::labeled::index::parse_datetime("2000-01-01").unwrap();
        let times = (0..days as i64)
            .map(|d| start + d * 86_400_000_000_000)
            .collect();
        let da = shoal::DataArray::new(x, &["time", "lat", "lon"])
            .unwrap()
            .with_name("t2m")
            .with_coord("time", "time", shoal::Index::DateTime(times))
            .unwrap();
        let options = ZarrOptions {
            format: 3,
            codec: ZarrCodec::None,
        };
        da.to_zarr_with(path.to_str().unwrap(), options)
            .await
            .unwrap();
    });
}

/// The values of variable `var` of the Zarr group at `path`, as f64.
fn read_var(session: &shoal::Session, path: &Path, var: &str) -> Vec<f64> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let values = session
            .open_zarr(path.to_str().unwrap())
            .unwrap()
            .var(var)
            .unwrap()
            .to_ndarray::<f64>()
            .await
            .unwrap();
        values.iter().copied().collect()
    })
}

/// Asserts two results agree to float32 precision (sums may run in another order).
fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    assert!(!got.is_empty(), "{what}: no values");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-5 * w.abs().max(1.0);
        assert!(same, "{what}: cell {i} is {g} with the limit, {w} without");
    }
}

/// Builds a job's command from its input, a fresh output path and whether it is limited.
type JobCommand = Box<dyn Fn(&Path, &Path, bool) -> Command>;

/// Reads a job's values from its output path and its stdout.
type JobResult = Box<dyn Fn(&Path, &str) -> Vec<f64>>;

/// One job on three inputs: the big cube limited and unlimited, the small one limited.
struct Job {
    name: &'static str,
    /// The command reading `input` and writing to `output` (a fresh path), limited or not.
    command: JobCommand,
    /// The values it produced at `output` (its stdout is given too).
    result: JobResult,
    /// Whether its limited run must report spilled bytes (`shoal run --verbose`), and
    /// its unlimited run none.
    spills: bool,
}

/// The bytes `shoal run --verbose` reports spilled.
fn spilled(stdout: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("spilled "))
        .unwrap_or_else(|| panic!("no spill report in {stdout}"));
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Runs `job` three ways, checks its values and its peak; returns the peak, limited.
fn check(job: &Job, big: &Path, small: &Path, dir: &Path) -> u64 {
    let run = |input: &Path, limited: bool, tag: &str| {
        let output = dir.join(format!("{}-{tag}", job.name));
        let done = run_measured((job.command)(input, &output, limited));
        assert!(
            done.ok,
            "{} ({tag}): {}, {}{}",
            job.name, done.status, done.stdout, done.stderr
        );
        (output, done)
    };
    let (unlimited_out, unlimited) = run(big, false, "unlimited");
    let (limited_out, limited) = run(big, true, "limited");
    let (_, baseline) = run(small, true, "small");
    assert_close(
        job.name,
        &(job.result)(&limited_out, &limited.stdout),
        &(job.result)(&unlimited_out, &unlimited.stdout),
    );
    if job.spills {
        assert!(
            spilled(&limited.stdout) > 0,
            "{}: {}",
            job.name,
            limited.stdout
        );
        assert_eq!(
            spilled(&unlimited.stdout),
            0,
            "{}: {}",
            job.name,
            unlimited.stdout
        );
    }
    let bound = baseline.peak + LIMIT * WORKERS * 5 / 4;
    assert!(
        limited.peak <= bound,
        "{}: peak {} MB with {} x {} MiB workers, above {} MB ({} MB on the small cube + 1.25x the limit)",
        job.name,
        limited.peak >> 20,
        WORKERS,
        LIMIT >> 20,
        bound >> 20,
        baseline.peak >> 20
    );
    eprintln!(
        "{}: peak {} MB limited, {} MB unlimited, {} MB on the small cube",
        job.name,
        limited.peak >> 20,
        unlimited.peak >> 20,
        baseline.peak >> 20
    );
    limited.peak
}

/// `shoal run INPUT OUTPUT --var t2m -p PIPELINE` with uncompressed output.
fn run_job(name: &'static str, pipeline: &'static str, spills: bool) -> Job {
    let session = shoal::Session::builder().workers(1).build().unwrap();
    Job {
        name,
        command: Box::new(move |input, output, limited| {
            shoal(
                &[
                    "run",
                    input.to_str().unwrap(),
                    output.to_str().unwrap(),
                    "--var",
                    "t2m",
                    "--codec",
                    "none",
                    "-p",
                    pipeline,
                ],
                limited,
            )
        }),
        result: Box::new(move |output, _| read_var(&session, output, "t2m")),
        spills,
    }
}

#[test]
fn array_jobs_on_a_cube_four_times_the_memory_limit_stay_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let session = shoal::Session::builder().workers(2).build().unwrap();
    // 2000 x 100 x 250 float32: 200 MB, about 4x the workers' 48 MiB. The small cube
    // is 1/50 of it.
    let big = dir.path().join("big.zarr");
    let small = dir.path().join("small.zarr");
    write_cube(&session, &big, 2000);
    write_cube(&session, &small, 40);

    let sql = Job {
        name: "sql",
        command: Box::new(|input, _, limited| {
            let table = format!("cube={}", input.display());
            shoal(
                &[
                    "sql",
                    "--table",
                    &table,
                    "--format",
                    "csv",
                    "-c",
                    "select lat, avg(t2m) as mean, max(t2m) as top, count(*) as n from cube group by lat order by lat",
                ],
                limited,
            )
        }),
        result: Box::new(|_, stdout| {
            stdout
                .lines()
                .skip(1)
                .flat_map(|line| line.split(',').map(|v| v.parse::<f64>().unwrap()))
                .collect()
        }),
        spills: false,
    };
    let jobs = [
        run_job("anomaly_std", "anomaly(time.month) | std(time)", false),
        run_job("resample", "resample(time=MS, mean)", true),
        run_job("rolling", "rolling(time=5, mean)", false),
        // A full rechunk (every output chunk needs a piece of every input chunk),
        // written back as a 200 MB store.
        run_job("rechunk_write", "chunk(time=-1, lat=10, lon=25)", true),
        sql,
        matmul_job(),
    ];
    for job in &jobs {
        check(job, &big, &small, dir.path());
    }
}

/// The matrix product of a (N x 16) and a (16 x N) random matrix (a short contracted
/// axis: tiny operands, an N x N float64 product), written as Zarr by this test binary's
/// [`matmul_child`] in a child process. The input path's name says N: 6000 for the big
/// cube's run (288 MB of product), 850 for the small one's (1/50 of it). The child is
/// this test binary, so it allocates with the system allocator, not the `shoal` binary's.
fn matmul_job() -> Job {
    let session = shoal::Session::builder().workers(1).build().unwrap();
    Job {
        name: "matmul",
        command: Box::new(|input, output, limited| {
            let side = if input.ends_with("big.zarr") {
                6000
            } else {
                850
            };
            let mut command = Command::new(std::env::current_exe().unwrap());
            command
                .args([
                    "--ignored",
                    "--exact",
                    "memory::matmul_child",
                    "--nocapture",
                ])
                .env("SHOAL_TEST_MATMUL", format!("{side} {}", output.display()));
            if limited {
                command.env("SHOAL_TEST_MATMUL_LIMIT", LIMIT.to_string());
            }
            command
        }),
        result: Box::new(move |output, _| read_var(&session, output, "product")),
        spills: false,
    }
}

/// The child side of [`matmul_job`]: run only from it (`SHOAL_TEST_MATMUL="N OUTPUT"`).
#[test]
#[ignore = "a child process of array_jobs_on_a_cube_four_times_the_memory_limit_stay_within_it"]
fn matmul_child() {
    let spec = std::env::var("SHOAL_TEST_MATMUL").expect("SHOAL_TEST_MATMUL is set");
    let (side, output) = spec.split_once(' ').expect("N OUTPUT");
    let side: usize = side.parse().unwrap();
    let limit = match std::env::var("SHOAL_TEST_MATMUL_LIMIT") {
        Ok(limit) => limit.parse().unwrap(),
        Err(_) => 4 << 30,
    };
    let builder = shoal::Session::builder()
        .workers(WORKERS as usize)
        .memory_limit(limit);
    let session = builder.build().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let a = session.random_uniform(&[side, 16], &[500, 16], 1).unwrap();
        let b = session.random_uniform(&[16, side], &[16, 500], 2).unwrap();
        let product = shoal::DataArray::new(a.matmul(&b).unwrap(), &["x", "y"])
            .unwrap()
            .with_name("product");
        let options = ZarrOptions {
            format: 3,
            codec: ZarrCodec::None,
        };
        product.to_zarr_with(output, options).await.unwrap();
    });
    let peak = shoal::peak_resident_memory().expect("VmHWM");
    eprintln!("peak resident memory: {peak} bytes");
}

#[test]
fn a_chunk_too_big_for_the_limit_is_refused_before_work_starts() {
    let dir = tempfile::tempdir().unwrap();
    let session = shoal::Session::builder().workers(1).build().unwrap();
    let cube = dir.path().join("cube.zarr");
    write_cube(&session, &cube, 50);
    let output = dir.path().join("out.zarr");
    // A rolling mean holds two stored chunks of 2.5 MB, their window and its result.
    let mut command = shoal(
        &[
            "run",
            cube.to_str().unwrap(),
            output.to_str().unwrap(),
            "-p",
            "rolling(time=5, mean)",
        ],
        false,
    );
    command.env("SHOAL_WORKER_MEMORY_LIMIT", "8MiB");
    let done = run_measured(command);
    assert_eq!(
        done.status.code(),
        Some(i32::from(shoal::ErrorKind::Resources.exit_code())),
        "{}",
        done.stderr
    );
    assert!(
        done.stderr
            .contains("chunk of shape [25, 100, 250] (float32, from 2 input chunks)")
            && done
                .stderr
                .contains("more than a worker's memory limit of 8.0 MiB"),
        "{}",
        done.stderr
    );
    assert!(!output.exists(), "nothing is written");
}
