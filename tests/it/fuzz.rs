//! The fuzzing corpora (`fuzz/corpus/TARGET/`) and every crash fuzzing found
//! (`fuzz/regressions/TARGET/`) replayed through the entry points of
//! `shoal_tests::fuzz`: none may panic.

use std::path::PathBuf;

use shoal_planner::{decode_plan, encode_plan, split_into_stages};
use shoal_tests::fuzz;

type Target = fn(&[u8]) -> usize;

const TARGETS: [(&str, Target); 4] = [
    ("sql", fuzz::sql),
    ("plan", fuzz::plan),
    ("csv", fuzz::csv),
    ("parquet", fuzz::parquet),
];

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file under `fuzz/KIND/TARGET`, sorted.
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn corpora_and_found_crashes_replay_without_a_panic() {
    for (target, run) in TARGETS {
        let corpus = inputs("corpus", target);
        assert!(!corpus.is_empty(), "no seeds for {target}");
        for (path, bytes) in &corpus {
            let got = std::panic::catch_unwind(|| run(bytes));
            let got = got.unwrap_or_else(|_| panic!("{target}: {} panicked", path.display()));
            // Seeds are input Shoal reads: they get through, not just refused.
            assert!(got > 0, "{target}: {} got nowhere", path.display());
        }
        for (path, bytes) in inputs("regressions", target) {
            let replayed = std::panic::catch_unwind(|| run(&bytes));
            assert!(replayed.is_ok(), "{target}: {} panicked", path.display());
        }
    }
}

/// The stage plans of the SQL seeds, encoded as a worker receives them.
fn stage_plans_of_the_sql_seeds() -> Vec<Vec<u8>> {
    let ctx = datafusion::prelude::SessionContext::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut plans = Vec::new();
    runtime.block_on(async {
        ctx.sql("create table t(a bigint, b varchar) as values (1, 'x'), (null, 'y'), (3, null)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        for (path, bytes) in inputs("corpus", "sql") {
            let sql = String::from_utf8(bytes).unwrap();
            let Ok(df) = ctx.sql(&sql).await else {
                panic!("{} does not plan", path.display());
            };
            let physical = df.create_physical_plan().await.unwrap();
            for stage in split_into_stages(physical).unwrap().stages {
                plans.push(encode_plan(stage.plan).unwrap());
            }
        }
    });
    plans
}

/// The `plan` corpus is the SQL seeds' stage plans; with `SHOAL_FUZZ_SEEDS=1` this test
/// writes them again (after a change to the plan codec), and either way every one must
/// decode: a codec change that breaks them fails here.
#[test]
fn plan_seeds_are_stage_plans_that_decode() {
    if std::env::var_os("SHOAL_FUZZ_SEEDS").is_some() {
        let dir = fuzz_dir().join("corpus/plan");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, plan) in stage_plans_of_the_sql_seeds().iter().enumerate() {
            std::fs::write(dir.join(format!("stage{i:03}.bin")), plan).unwrap();
        }
    }
    let ctx = datafusion::prelude::SessionContext::new();
    let seeds = inputs("corpus", "plan");
    assert!(seeds.len() >= 12, "{} plan seeds", seeds.len());
    for (path, bytes) in seeds {
        if let Err(e) = decode_plan(&bytes, &ctx.task_ctx()) {
            panic!(
                "{} no longer decodes ({e}); rewrite the seeds with SHOAL_FUZZ_SEEDS=1",
                path.display()
            );
        }
    }
}
