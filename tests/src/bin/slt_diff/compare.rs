//! `slt_diff compare`: joins a Shoal run with a DataFusion run (and, when given, a second
//! DataFusion run that tells DataFusion's own nondeterminism apart) and reports.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use serde_json::Value;

use super::Failure;

/// How one record's two outcomes relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    SameAnswer,
    SameError,
    /// `EXPLAIN` ran on both; the plans are not compared (Shoal adds its stage graph).
    BothExplained,
    /// The same rows in another order, where the order is not fixed by the query
    /// (ties of its `ORDER BY`, or an `ORDER BY` only inside a window or subquery).
    OtherOrder,
    DifferentAnswer,
    ShoalRefusesCopy,
    ShoalRefusesRuntimeSetting,
    /// Settings listings that differ only where Shoal runs differently by design: its
    /// workers' runtime (`datafusion.runtime.*`: memory limit per worker, spill
    /// directory) and the settings its session policy sets ([`POLICY`]).
    ShowsShoalSettings,
    /// After a statement Shoal refused earlier in the file (a `COPY` over existing
    /// files, a runtime setting), the data or settings differ.
    DiffersAfterRefusal,
    FailsOnlyInShoal,
    FailsOnlyInDataFusion,
    Panic,
    /// Two DataFusion runs disagreed: its own answer is not deterministic.
    NondeterministicInDataFusion,
    Missing,
}

impl Verdict {
    fn diverges(self) -> bool {
        self >= Verdict::DifferentAnswer
    }

    fn refusal(self) -> bool {
        matches!(
            self,
            Verdict::ShoalRefusesCopy | Verdict::ShoalRefusesRuntimeSetting
        )
    }
}

/// DataFusion settings Shoal's planner forces off (see `apply_session_policy`), and the
/// partitions per exchange, which a cluster session takes from its workers' slots.
const POLICY: [&str; 3] = [
    "datafusion.execution.target_partitions",
    "datafusion.execution.enable_file_stream_work_stealing",
    "datafusion.optimizer.enable_join_dynamic_filter_pushdown",
];

/// Whether the rows differ only in settings Shoal runs with by design.
fn only_shoal_settings_differ(a: &[Vec<String>], b: &[Vec<String>]) -> bool {
    let by_design = |row: &Vec<String>| {
        row.first().is_some_and(|name| {
            name.starts_with("datafusion.runtime.") || POLICY.contains(&name.as_str())
        })
    };
    let differing = a
        .iter()
        .filter(|r| !b.contains(r))
        .chain(b.iter().filter(|r| !a.contains(r)));
    differing.clone().next().is_some() && differing.into_iter().all(by_design)
}

/// A run's records by (file, line, occurrence in that line).
type Records = BTreeMap<(String, u64, usize), Value>;

/// Records of a run by (file, line, occurrence), and the run's header.
fn load(path: &str) -> Result<(Records, Value), Failure> {
    let mut records = BTreeMap::new();
    let mut seen: HashMap<(String, u64), usize> = HashMap::new();
    let mut header = Value::Null;
    for line in std::io::BufReader::new(std::fs::File::open(path)?).lines() {
        let value: Value = serde_json::from_str(&line?)?;
        let Some(file) = value["file"].as_str() else {
            header = value;
            continue;
        };
        let key = (file.to_string(), value["line"].as_u64().unwrap_or(0));
        let n = seen.entry(key.clone()).or_default();
        records.insert((key.0, key.1, *n), value.clone());
        *n += 1;
    }
    Ok((records, header))
}

/// A record's rows; Shoal's own settings (`shoal.*` rows of `SHOW ALL`) left out.
fn rows(record: &Value) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> =
        serde_json::from_value(record["rows"].clone()).unwrap_or_default();
    rows.retain(|r| !r.first().is_some_and(|c| c.starts_with("shoal.")));
    rows
}

fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort();
    rows
}

fn same_outcome(a: &Value, b: &Value) -> bool {
    a["outcome"] == b["outcome"] && (a["outcome"] != "ok" || sorted(rows(a)) == sorted(rows(b)))
}

fn verdict(shoal: &Value, df: &Value) -> Verdict {
    let sql = shoal["sql"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (s, d) = (shoal["outcome"].as_str(), df["outcome"].as_str());
    if s == Some("panic") || d == Some("panic") {
        return Verdict::Panic;
    }
    match (s == Some("ok"), d == Some("ok")) {
        (true, true) if sql.trim_start().starts_with("explain") => Verdict::BothExplained,
        (true, true) => {
            let (a, b) = (rows(shoal), rows(df));
            let ordered = !shoal["rowsort"].as_bool().unwrap_or(false) && sql.contains("order by");
            if ordered && a == b || !ordered && sorted(a.clone()) == sorted(b.clone()) {
                Verdict::SameAnswer
            } else if sorted(a) == sorted(b) {
                Verdict::OtherOrder
            } else if only_shoal_settings_differ(&rows(shoal), &rows(df)) {
                Verdict::ShowsShoalSettings
            } else {
                Verdict::DifferentAnswer
            }
        }
        (false, false) => Verdict::SameError,
        (true, false) => Verdict::FailsOnlyInDataFusion,
        (false, true) => {
            let error = shoal["error"].as_str().unwrap_or_default();
            if error.contains("COPY target") && error.contains("already exists") {
                Verdict::ShoalRefusesCopy
            } else if error.contains("does not apply to Shoal's workers") {
                Verdict::ShoalRefusesRuntimeSetting
            } else {
                Verdict::FailsOnlyInShoal
            }
        }
    }
}

fn describe(record: &Value) -> String {
    match record["outcome"].as_str() {
        Some("ok") => {
            let rows = rows(record);
            let first: Vec<String> = rows.iter().take(3).map(|r| r.join("|")).collect();
            format!("{} rows: {}", rows.len(), first.join(" / "))
        }
        Some("error") => format!("error: {}", record["error"].as_str().unwrap_or_default()),
        Some(other) => other.to_string(),
        None => "not run".into(),
    }
}

pub fn compare(args: &[String]) -> Result<(), Failure> {
    let [shoal_path, df_path, rest @ ..] = args else {
        return Err("usage: slt_diff compare SHOAL DATAFUSION [DATAFUSION_AGAIN]".into());
    };
    let (shoal, header) = load(shoal_path)?;
    let (df, _) = load(df_path)?;
    let again = match rest.first() {
        Some(path) => Some(load(path)?.0),
        None => None,
    };
    let mut counts: BTreeMap<Verdict, usize> = BTreeMap::new();
    let mut divergences = Vec::new();
    let missing = Value::Null;
    let mut refused_in: Option<String> = None;
    for key in shoal
        .keys()
        .chain(df.keys().filter(|k| !shoal.contains_key(*k)))
    {
        let (s, d) = (
            shoal.get(key).unwrap_or(&missing),
            df.get(key).unwrap_or(&missing),
        );
        let mut v = if s.is_null() || d.is_null() {
            Verdict::Missing
        } else {
            verdict(s, d)
        };
        if v.refusal() {
            refused_in = Some(key.0.clone());
        } else if v == Verdict::DifferentAnswer && refused_in.as_ref() == Some(&key.0) {
            v = Verdict::DiffersAfterRefusal;
        }
        if v.diverges()
            && v != Verdict::Missing
            && let Some(again) = &again
            && again.get(key).is_some_and(|a| !same_outcome(a, d))
        {
            v = Verdict::NondeterministicInDataFusion;
        }
        *counts.entry(v).or_default() += 1;
        if v.diverges() || v == Verdict::OtherOrder {
            divergences.push((key.clone(), v, describe(s), describe(d), s["sql"].clone()));
        }
    }
    for ((file, line, _), v, s, d, sql) in &divergences {
        let sql = sql.as_str().unwrap_or_default().replace('\n', " ");
        println!(
            "{file}:{line} [{v:?}] {}",
            sql.chars().take(160).collect::<String>()
        );
        println!(
            "    shoal:      {}",
            s.chars().take(300).collect::<String>()
        );
        println!(
            "    datafusion: {}",
            d.chars().take(300).collect::<String>()
        );
    }
    println!();
    println!("records compared: {}", counts.values().sum::<usize>());
    for (v, n) in &counts {
        println!("  {v:?}: {n}");
    }
    if let Some(spark) = header["skipped_spark_files"].as_u64() {
        println!("files skipped (they need DataFusion's optional Spark functions): {spark}");
    }
    Ok(())
}
