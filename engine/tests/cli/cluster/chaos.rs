//! Random kills: TPC-H queries on a two-worker cluster, each with one worker SIGKILLed at
//! a random moment within the query's usual duration and a replacement started at once.
//! Every answer must equal a single-process run's; no query may fail.
//!
//! `SHOAL_CHAOS_KILLS` (44, each query twice), `SHOAL_CHAOS_SF` (0.1) and `SHOAL_CHAOS_SEED` (from the
//! clock, printed) shape a run; `SHOAL_CHAOS_DATA` reuses TPC-H tables already generated
//! at that scale factor. The long run of the closing notes:
//! `SHOAL_CHAOS_KILLS=200 SHOAL_CHAOS_SF=1 SHOAL_CHAOS_DATA=data/sf1 cargo test --release
//! --test cli -- random_kills --nocapture`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shoal::Session;
use shoal::datafusion::arrow::array::RecordBatch;

use super::common::{cells_equal, rows, shared_dir, tpch_at};
use super::{Cluster, TOKEN, kill9};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// SplitMix64: a seeded sequence, so a run can be repeated from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// TPC-H tables at `sf`: `SHOAL_CHAOS_DATA` (relative to the repository), or generated
/// once per build directory.
fn data(sf: f64) -> PathBuf {
    let repository = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::var_os("SHOAL_CHAOS_DATA").map_or_else(|| tpch_at(sf), |d| repository.join(d))
}

/// Whether `actual` holds `expected`'s rows, in order or (for ties an `ORDER BY` leaves
/// open) in some order; numbers compare with a small tolerance.
pub(super) fn same_answer(expected: &[Vec<String>], actual: &[Vec<String>]) -> bool {
    let equal = |e: &[Vec<String>], a: &[Vec<String>]| {
        e.len() == a.len()
            && e.iter()
                .zip(a)
                .all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| cells_equal(p, q)))
    };
    let mut e = expected.to_vec();
    let mut a = actual.to_vec();
    e.sort();
    a.sort();
    equal(expected, actual) || equal(&e, &a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_during_tpch_queries_give_right_answers_and_no_failures() {
    let kills: usize = env_or("SHOAL_CHAOS_KILLS", 44);
    let sf: f64 = env_or("SHOAL_CHAOS_SF", 0.1);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed: u64 = env_or("SHOAL_CHAOS_SEED", clock);
    println!("chaos: {kills} kills at SF {sf}, seed {seed} (repeat with SHOAL_CHAOS_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = data(sf);
    let queries: Vec<(String, String)> = (1..=22)
        .map(|i| {
            let name = format!("q{i:02}");
            let path = shared_dir().join(format!("tpch/queries/{name}.sql"));
            (name, std::fs::read_to_string(path).unwrap())
        })
        .collect();
    let embedded = Session::builder().build().unwrap();
    embedded.register_dir(dir.to_str().unwrap()).unwrap();
    let mut expected = HashMap::new();
    for (name, sql) in &queries {
        let batches = embedded.sql(sql).await.unwrap().collect().await.unwrap();
        expected.insert(name.clone(), rows(&batches));
    }

    // Workers as in the runs: one slot and 2 GiB each.
    let worker = ["--cpus", "1", "--memory", "2GiB"];
    let mut cluster = Cluster::scheduler(Some(TOKEN), &[]);
    cluster.add_worker(&worker);
    cluster.add_worker(&worker);
    cluster.wait_for_workers(2);
    let session = cluster.session();
    session.register_dir(dir.to_str().unwrap()).unwrap();
    // Stages start before their inputs finish: early tasks must start over when an input
    // task is lost (the default, where stages wait, is what the other kill tests run).
    session
        .sql("SET shoal.execution.pipelined_exchanges = true")
        .await
        .unwrap();
    let mut alive = vec![0, 1];
    let mut usual: HashMap<String, Duration> = HashMap::new();
    let (mut failed, mut wrong) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for kill in 0..kills {
        let (name, sql) = &queries[kill % queries.len()];
        if !usual.contains_key(name) {
            // The query's usual duration on this cluster, without a kill.
            let t = Instant::now();
            let batches = session.sql(sql).await.unwrap().collect().await.unwrap();
            usual.insert(name.clone(), t.elapsed());
            assert!(
                same_answer(&expected[name], &rows(&batches)),
                "{name} without a kill"
            );
        }
        let delay = usual[name].mul_f64(rng.unit() * 0.9);
        let victim = alive[(rng.next() % alive.len() as u64) as usize];
        let mut running = tokio::task::JoinSet::new();
        let (client, text) = (session.clone(), sql.clone());
        running.spawn(async move {
            let df = client.sql(&text).await?;
            df.collect().await
        });
        tokio::time::sleep(delay).await;
        kill9(&mut cluster.workers[victim]);
        alive.retain(|&w| w != victim);
        cluster.add_worker(&worker);
        alive.push(cluster.workers.len() - 1);
        let result: shoal::Result<Vec<RecordBatch>> = running.join_next().await.unwrap().unwrap();
        let what = format!(
            "kill {kill}: {name}, worker {victim} at {} of {} ms",
            delay.as_millis(),
            usual[name].as_millis()
        );
        match result {
            Err(e) => {
                println!("{what}: FAILED: {e}");
                failed.push(format!("{what}: {e}"));
            }
            Ok(batches) if !same_answer(&expected[name], &rows(&batches)) => {
                println!("{what}: WRONG ANSWER");
                wrong.push(what);
            }
            Ok(_) => println!("{what}: right"),
        }
    }
    println!(
        "chaos: {kills} kills in {:.0} s: {} failed, {} wrong (seed {seed})",
        started.elapsed().as_secs_f64(),
        failed.len(),
        wrong.len()
    );
    assert!(
        failed.is_empty() && wrong.is_empty(),
        "seed {seed}: failed {failed:#?}, wrong {wrong:#?}"
    );
}
