//! `shoal bench arrays`: chunked-array workloads over a seeded random matrix, the same
//! ones `benches/arrays_peers.py` runs with dask.array.

use std::time::Instant;

use clap::Args;
use ndarray::s;
use shoal::{Array, Session};

/// Arguments of `shoal bench arrays`.
#[derive(Args, Debug)]
pub struct ArraysArgs {
    /// Rows and columns of the random matrix `x`.
    #[arg(long, default_value_t = 20_000)]
    side: usize,
    /// Chunk length along both axes.
    #[arg(long, default_value_t = 2_000)]
    chunk: usize,
    /// Timed runs per workload (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// A Zarr store with a (time, ...) variable: adds `zarr_mean_time` and
    /// `zarr_anomaly_std` (monthly climatology, anomaly, standard deviation over time).
    #[arg(long)]
    zarr: Option<String>,
    /// The variable of `--zarr` to use.
    #[arg(long, default_value = "t2m")]
    var: String,
    /// Only these workloads, e.g. sum,matmul.
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
}

/// Runs `work` once to warm up, then `iterations` times; the median in seconds.
async fn median<F, Fut>(iterations: usize, mut work: F) -> shoal::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = shoal::Result<()>>,
{
    work().await?;
    let mut times = Vec::new();
    for _ in 0..iterations.max(1) {
        let started = Instant::now();
        work().await?;
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Computes `a` and drops the values.
async fn compute(a: &Array) -> shoal::Result<()> {
    a.collect_chunks().await.map(drop)
}

/// `shoal bench arrays`: prints `NAME SECONDS` per workload.
pub async fn run(session: &Session, args: ArraysArgs) -> shoal::Result<()> {
    let (side, chunk) = (args.side.max(1), args.chunk.max(1));
    let wanted = |name: &str| args.workloads.is_empty() || args.workloads.iter().any(|w| w == name);
    println!(
        "# x: {side}x{side} float64 in {chunk}x{chunk} chunks, seed 42, persisted before timing"
    );
    match shoal_array::blas::blas() {
        Some(blas) => println!("# matrix products: {} (system BLAS)", blas.name),
        None => println!(
            "# matrix products: the gemm crate's kernels (no system BLAS, or SHOAL_BLAS=off)"
        ),
    }
    let x = session
        .random_uniform(&[side, side], &[chunk, chunk], 42)?
        .persist()
        .await?;
    let n = args.iterations;
    let report = |name: &str, seconds: f64| println!("{name} {seconds:.4}");
    if wanted("sum") {
        let w = x.sum(None)?;
        report("sum", median(n, || compute(&w)).await?);
    }
    if wanted("add_transpose_mean") {
        let w = (&x + &x.t()?)?.mean(0)?;
        report("add_transpose_mean", median(n, || compute(&w)).await?);
    }
    if wanted("strided_std") {
        let w = x.slice(s![..;2, ..;3])?.std(None)?;
        report("strided_std", median(n, || compute(&w)).await?);
    }
    if wanted("matmul") {
        let k = side.min(4000);
        let a = x
            .slice(s![..k as isize, ..k as isize])?
            .rechunk(&[1000, 1000])?
            .persist()
            .await?;
        let w = a.matmul(&a)?.sum(None)?;
        report("matmul", median(n, || compute(&w)).await?);
    }
    if wanted("rechunk_sum") {
        let w = x.rechunk(&[side, (chunk / 4).max(1)])?.sum(0)?;
        report("rechunk_sum", median(n, || compute(&w)).await?);
    }
    drop(x);
    if let Some(store) = &args.zarr {
        let t2m = session.open_zarr(store)?.var(&args.var)?;
        if wanted("zarr_mean_time") {
            let w = t2m.mean(["time"])?;
            report("zarr_mean_time", median(n, || compute(w.data())).await?);
        }
        if wanted("zarr_anomaly_std") {
            let clim = t2m.groupby("time.month")?.mean()?;
            let w = t2m.groupby("time.month")?.sub(&clim)?.std(["time"])?;
            report("zarr_anomaly_std", median(n, || compute(w.data())).await?);
        }
    }
    Ok(())
}
