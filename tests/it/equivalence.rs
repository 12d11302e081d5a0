//! Stage splitting must not change answers: queries give the same rows on Shoal (several
//! workers and partitions) as on single-node DataFusion over the same files.

use datafusion::prelude::{SessionConfig, SessionContext};
use shoal::Session;

use crate::common::{rows, sorted, tpch_dir, tpch_session};

const QUERIES: &[&str] = &[
    "select n_regionkey, n_name, row_number() over (partition by n_regionkey order by n_name) as rn from nation",
    "select o_orderpriority, count(*) c, sum(o_totalprice) from orders group by o_orderpriority having count(*) > 10",
    "select count(distinct l_partkey), count(distinct l_suppkey) from lineitem",
    "select l_orderkey, l_linenumber, l_extendedprice from lineitem order by l_extendedprice desc, l_orderkey, l_linenumber limit 50 offset 5",
    "select c_custkey from customer where not exists (select 1 from orders where o_custkey = c_custkey)",
    "select r_name, n_name from region cross join nation where r_regionkey < 2",
    "select l_returnflag, l_linestatus, sum(l_quantity) from lineitem group by rollup (l_returnflag, l_linestatus)",
    "select p_brand, avg(p_retailprice) over (partition by p_mfgr) from part where p_size < 5",
    "select s_nationkey, count(*) from supplier group by 1 union all select c_nationkey, count(*) from customer group by 1",
    "select o_custkey, max(o_totalprice) - min(o_totalprice) as spread from orders group by o_custkey order by spread desc, o_custkey limit 17",
    "select * from lineitem where l_orderkey < 200",
    "select ps_partkey, (select max(s_acctbal) from supplier where s_suppkey = ps_suppkey) from partsupp where ps_partkey < 40",
    "select distinct l_shipmode from lineitem",
    "select c_mktsegment, o_orderstatus, count(*) from customer left join orders on c_custkey = o_custkey group by 1, 2",
    "with recursive r(n) as (select 1 union all select n + 1 from r where n < 30) select n, n * n from r",
    "select n.n_name, count(*) from lineitem l join supplier s on l.l_suppkey = s.s_suppkey join nation n on s.s_nationkey = n.n_nationkey group by n.n_name",
];

async fn datafusion_rows(sql: &str) -> Vec<Vec<String>> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    for table in shoal::tpch::TABLES {
        let path = tpch_dir().join(format!("{table}.parquet"));
        ctx.register_parquet(table, path.to_str().unwrap(), Default::default())
            .await
            .unwrap();
    }
    sorted(rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap()))
}

async fn shoal_rows(session: &Session, sql: &str) -> Vec<Vec<String>> {
    let batches = session
        .sql(sql)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:#}"));
    sorted(rows(&batches))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_rows_as_single_node_datafusion() {
    let shapes = [(1, 1), (2, 4), (3, 7)];
    let sessions: Vec<Session> = shapes
        .iter()
        .map(|&(workers, partitions)| tpch_session(workers, partitions))
        .collect();
    for sql in QUERIES {
        let expected = datafusion_rows(sql).await;
        assert!(!expected.is_empty(), "{sql} gives rows");
        for (session, shape) in sessions.iter().zip(shapes) {
            let got = shoal_rows(session, sql).await;
            assert_eq!(
                got, expected,
                "{sql} with (workers, partitions) = {shape:?}"
            );
        }
    }
}
