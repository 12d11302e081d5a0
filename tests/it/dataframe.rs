//! TPC-H Q1, Q3, Q6, Q10 and Q18 written with the DataFrame API, plus the other verbs.

use datafusion::arrow::datatypes::DataType;
use shoal::prelude::*;

use crate::common::{answer, assert_rows_eq, rows, sorted, tpch_session};

fn date(text: &str) -> Expr {
    cast(lit(text), DataType::Date32)
}

fn revenue() -> Expr {
    col("l_extendedprice") * (lit(1) - col("l_discount"))
}

async fn check(query: &str, frame: DataFrame) {
    let batches = frame
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{query}: {e:#}"));
    assert_rows_eq(query, &answer(query), &rows(&batches));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q01() {
    let s = tpch_session(2, 3);
    let frame = s
        .table("lineitem")
        .await
        .unwrap()
        .filter(col("l_shipdate").lt_eq(date("1998-09-02")))
        .unwrap()
        .groupby(["l_returnflag", "l_linestatus"])
        .unwrap()
        .agg([
            sum(col("l_quantity")).alias("sum_qty"),
            sum(col("l_extendedprice")).alias("sum_base_price"),
            sum(revenue()).alias("sum_disc_price"),
            sum(revenue() * (lit(1) + col("l_tax"))).alias("sum_charge"),
            avg(col("l_quantity")).alias("avg_qty"),
            avg(col("l_extendedprice")).alias("avg_price"),
            avg(col("l_discount")).alias("avg_disc"),
            count(lit(1)).alias("count_order"),
        ])
        .unwrap()
        .sort_values(["l_returnflag", "l_linestatus"], true)
        .unwrap();
    check("q01", frame).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q03() {
    let s = tpch_session(2, 3);
    let customer = s
        .table("customer")
        .await
        .unwrap()
        .query("c_mktsegment = 'BUILDING'")
        .unwrap();
    let orders = s
        .table("orders")
        .await
        .unwrap()
        .filter(col("o_orderdate").lt(date("1995-03-15")))
        .unwrap();
    let lineitem = s
        .table("lineitem")
        .await
        .unwrap()
        .filter(col("l_shipdate").gt(date("1995-03-15")))
        .unwrap();
    let frame = customer
        .merge_on(&orders, How::Inner, &["c_custkey"], &["o_custkey"])
        .unwrap()
        .merge_on(&lineitem, How::Inner, &["o_orderkey"], &["l_orderkey"])
        .unwrap()
        .groupby(["l_orderkey", "o_orderdate", "o_shippriority"])
        .unwrap()
        .agg([sum(revenue()).alias("revenue")])
        .unwrap()
        .select(["l_orderkey", "revenue", "o_orderdate", "o_shippriority"])
        .unwrap()
        .sort_values_by(&["revenue", "o_orderdate"], &[false, true])
        .unwrap()
        .head(10)
        .unwrap();
    check("q03", frame).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q06() {
    let s = tpch_session(2, 3);
    let frame = s
        .table("lineitem")
        .await
        .unwrap()
        .filter(
            col("l_shipdate")
                .gt_eq(date("1994-01-01"))
                .and(col("l_shipdate").lt(date("1995-01-01")))
                .and(col("l_discount").between(lit(0.05), lit(0.07)))
                .and(col("l_quantity").lt(lit(24))),
        )
        .unwrap()
        .groupby(Vec::<&str>::new())
        .unwrap()
        .agg([sum(col("l_extendedprice") * col("l_discount")).alias("revenue")])
        .unwrap();
    check("q06", frame).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q10() {
    let s = tpch_session(2, 3);
    let orders = s
        .table("orders")
        .await
        .unwrap()
        .filter(
            col("o_orderdate")
                .gt_eq(date("1993-10-01"))
                .and(col("o_orderdate").lt(date("1994-01-01"))),
        )
        .unwrap();
    let lineitem = s
        .table("lineitem")
        .await
        .unwrap()
        .query("l_returnflag = 'R'")
        .unwrap();
    let frame = s
        .table("customer")
        .await
        .unwrap()
        .merge_on(&orders, How::Inner, &["c_custkey"], &["o_custkey"])
        .unwrap()
        .merge_on(&lineitem, How::Inner, &["o_orderkey"], &["l_orderkey"])
        .unwrap()
        .merge_on(
            &s.table("nation").await.unwrap(),
            How::Inner,
            &["c_nationkey"],
            &["n_nationkey"],
        )
        .unwrap()
        .groupby([
            "c_custkey",
            "c_name",
            "c_acctbal",
            "c_phone",
            "n_name",
            "c_address",
            "c_comment",
        ])
        .unwrap()
        .agg([sum(revenue()).alias("revenue")])
        .unwrap()
        .select([
            "c_custkey",
            "c_name",
            "revenue",
            "c_acctbal",
            "n_name",
            "c_address",
            "c_phone",
            "c_comment",
        ])
        .unwrap()
        .sort_values(["revenue"], false)
        .unwrap()
        .head(20)
        .unwrap();
    check("q10", frame).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q18() {
    let s = tpch_session(2, 3);
    let lineitem = s.table("lineitem").await.unwrap();
    let big = lineitem
        .groupby(["l_orderkey"])
        .unwrap()
        .agg([sum(col("l_quantity")).alias("total_qty")])
        .unwrap()
        .filter(col("total_qty").gt(lit(300)))
        .unwrap()
        .select(["l_orderkey"])
        .unwrap()
        .rename(&[("l_orderkey", "big_orderkey")])
        .unwrap();
    let frame = s
        .table("orders")
        .await
        .unwrap()
        .merge_on(&big, How::Inner, &["o_orderkey"], &["big_orderkey"])
        .unwrap()
        .merge_on(
            &s.table("customer").await.unwrap(),
            How::Inner,
            &["o_custkey"],
            &["c_custkey"],
        )
        .unwrap()
        .merge_on(&lineitem, How::Inner, &["o_orderkey"], &["l_orderkey"])
        .unwrap()
        .groupby([
            "c_name",
            "c_custkey",
            "o_orderkey",
            "o_orderdate",
            "o_totalprice",
        ])
        .unwrap()
        .agg([sum(col("l_quantity")).alias("sum_qty")])
        .unwrap()
        .sort_values_by(&["o_totalprice", "o_orderdate"], &[false, true])
        .unwrap()
        .head(100)
        .unwrap();
    check("q18", frame).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_match_sql() {
    let s = tpch_session(2, 4);
    let nation = s.table("nation").await.unwrap();
    let region = s.table("region").await.unwrap();

    // merge (outer, shared key name) + rename + assign
    let merged = nation
        .rename(&[("n_regionkey", "regionkey")])
        .unwrap()
        .merge(
            &region.rename(&[("r_regionkey", "regionkey")]).unwrap(),
            How::Outer,
            &["regionkey"],
        )
        .unwrap()
        .assign("key_plus_one", col("regionkey") + lit(1))
        .unwrap()
        .select(["n_name", "regionkey", "r_name", "key_plus_one"])
        .unwrap();
    let got = sorted(rows(&merged.collect().await.unwrap()));
    let sql = s
        .sql("select n_name, n_regionkey, r_name, n_regionkey + 1 from nation full join region on n_regionkey = r_regionkey")
        .await
        .unwrap();
    let want = sorted(rows(&sql.collect().await.unwrap()));
    assert_eq!(got, want);
    assert_eq!(got.len(), 25);

    // right merge keeps every right row; explain shows the stage graph
    let right = nation
        .query("n_regionkey < 2")
        .unwrap()
        .merge_on(&region, How::Right, &["n_regionkey"], &["r_regionkey"])
        .unwrap();
    assert_eq!(right.count().await.unwrap(), 5 + 5 + 3);
    let plan = right.explain().await.unwrap();
    assert!(
        plan.contains("shoal_stage_graph") && plan.contains("ShuffleWriteExec"),
        "{plan}"
    );

    // value_counts, drop_duplicates, head
    let counts = nation
        .value_counts("n_regionkey")
        .unwrap()
        .collect()
        .await
        .unwrap();
    let counts = rows(&counts);
    assert_eq!(counts.len(), 5);
    assert!(counts.iter().all(|r| r[1] == "5"), "{counts:?}");
    let distinct = nation
        .select(["n_regionkey"])
        .unwrap()
        .drop_duplicates(None)
        .unwrap()
        .count()
        .await
        .unwrap();
    assert_eq!(distinct, 5);
    let firsts = nation
        .drop_duplicates(Some(&["n_regionkey"]))
        .unwrap()
        .count()
        .await
        .unwrap();
    assert_eq!(firsts, 5);
    assert_eq!(nation.head(7).unwrap().count().await.unwrap(), 7);

    // dropna / fillna on a left merge with missing matches
    let left = region
        .merge_on(
            &nation.query("n_nationkey < 3").unwrap(),
            How::Left,
            &["r_regionkey"],
            &["n_regionkey"],
        )
        .unwrap();
    assert_eq!(left.count().await.unwrap(), 3 + 3);
    assert_eq!(left.dropna(None).unwrap().count().await.unwrap(), 3);
    let filled = left
        .select(["r_regionkey", "n_nationkey"])
        .unwrap()
        .fillna(lit(-1))
        .unwrap()
        .sort_values_by(&["r_regionkey", "n_nationkey"], &[true, true])
        .unwrap();
    let filled = rows(&filled.collect().await.unwrap());
    let missing: Vec<&Vec<String>> = filled.iter().filter(|r| r[1] == "-1").collect();
    assert_eq!(missing.len(), 3, "{filled:?}");

    // describe: count and max of n_nationkey
    let described = rows(
        &nation
            .select(["n_nationkey"])
            .unwrap()
            .describe()
            .unwrap()
            .collect()
            .await
            .unwrap(),
    );
    assert_eq!(described[0], vec!["count".to_string(), "25.0".to_string()]);
    assert_eq!(described[1], vec!["mean".to_string(), "12.0".to_string()]);
    assert_eq!(described[4], vec!["max".to_string(), "24.0".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_parquet_and_csv_and_refuses_to_clobber() {
    let s = tpch_session(2, 2);
    let dir = tempfile::tempdir().unwrap();
    let nation = s.table("nation").await.unwrap();
    let pq = dir.path().join("nation.parquet");
    nation
        .to_parquet(pq.to_str().unwrap(), &[], false)
        .await
        .unwrap();
    let back = s.read_parquet(pq.to_str().unwrap()).unwrap();
    assert_eq!(back.count().await.unwrap(), 25);

    let err = nation
        .to_parquet(pq.to_str().unwrap(), &[], false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");

    let parts = dir.path().join("by_region");
    nation
        .to_csv(parts.to_str().unwrap(), &["n_regionkey"], false)
        .await
        .unwrap();
    let mut subdirs: Vec<String> = std::fs::read_dir(&parts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    subdirs.sort();
    assert_eq!(
        subdirs,
        [
            "n_regionkey=0",
            "n_regionkey=1",
            "n_regionkey=2",
            "n_regionkey=3",
            "n_regionkey=4"
        ]
    );
    let csv = s
        .read_csv(parts.join("n_regionkey=2").to_str().unwrap())
        .unwrap();
    assert_eq!(csv.count().await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_urls_work_wherever_a_path_does() {
    let s = tpch_session(2, 2);
    s.sql("copy (select n_nationkey, n_name from nation where n_regionkey = 1) to 'memory:///lake/america.parquet' stored as parquet")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    s.register("america", "memory:///lake/america.parquet")
        .unwrap();
    let names = rows(
        &s.sql("select n_name from america order by n_name")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap(),
    );
    let names: Vec<&str> = names.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        names,
        ["ARGENTINA", "BRAZIL", "CANADA", "PERU", "UNITED STATES"]
    );
    let frame = s.read_parquet("memory:///lake/america.parquet").unwrap();
    assert_eq!(frame.count().await.unwrap(), 5);
    let err = s
        .register("missing", "memory:///lake/nothing/")
        .unwrap_err()
        .to_string();
    assert!(err.contains("memory:///lake/nothing/"), "{err}");
}
