//! Zarr groups as SQL tables: one row per cell, a column per dimension and variable,
//! NaN as NULL, broadcast variables, pruning by dimension filters, every way to register
//! one, and lazy `to_dataframe`.

use datafusion::arrow::array::{Array as _, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use datafusion::physical_plan::displayable;
use ndarray::{Array2, ArrayD};
use shoal::labeled::index::parse_datetime;
use shoal::{DataArray, Dataset, Index, Session};

const DAY: i64 = 86_400 * 1_000_000_000;

fn session() -> Session {
    Session::builder().workers(2).build().unwrap()
}

/// `t2m` (time 400 from 2001-01-01, lat 3, lon 5; NaN in about 10% of cells; chunks of
/// 90 days that do not divide 400) and `elev` (lat, lon) written as one Zarr group.
async fn store(s: &Session, path: &str) -> (ArrayD<f64>, Array2<f64>) {
    let x = s.random_uniform(&[400, 3, 5], &[90, 2, 5], 17).unwrap();
    let x = x.lt(0.1).unwrap().where_(f64::NAN, &x).unwrap();
    let values = x.collect_ndarray::<f64>().await.unwrap();
    let start = parse_datetime("2001-01-01").unwrap();
    let time = Index::DateTime((0..400).map(|d| start + d * DAY).collect());
    let lat = Index::F64(vec![-10.0, 0.0, 10.0]);
    let t2m = DataArray::new(x, &["time", "lat", "lon"])
        .unwrap()
        .with_coord("time", "time", time)
        .unwrap()
        .with_coord("lat", "lat", lat.clone())
        .unwrap();
    let elev = Array2::from_shape_fn((3, 5), |(i, j)| (i * 5 + j) as f64 * 10.0);
    let elev_da = DataArray::new(
        s.from_ndarray(&elev.clone().into_dyn(), &[3, 5]).unwrap(),
        &["lat", "lon"],
    )
    .unwrap()
    .with_coord("lat", "lat", lat)
    .unwrap();
    Dataset::new()
        .with_var("t2m", t2m)
        .unwrap()
        .with_var("elev", elev_da)
        .unwrap()
        .to_zarr(path)
        .await
        .unwrap();
    (values, elev)
}

async fn rows(s: &Session, sql: &str) -> Vec<datafusion::arrow::array::RecordBatch> {
    s.sql(sql).await.unwrap().collect().await.unwrap()
}

fn f64s(batches: &[datafusion::arrow::array::RecordBatch], column: usize) -> Vec<Option<f64>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column(column).as_primitive::<Float64Type>();
            (0..c.len())
                .map(|i| c.is_valid(i).then(|| c.value(i)))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The physical plan of `sql`, as text.
async fn plan_text(s: &Session, sql: &str) -> String {
    frame_plan_text(s, &s.sql(sql).await.unwrap()).await
}

/// The physical plan of a frame, as text.
async fn frame_plan_text(s: &Session, frame: &shoal::DataFrame) -> String {
    let plan = s.physical_plan(frame.logical_plan()).await.unwrap();
    displayable(plan.as_ref()).indent(true).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_a_zarr_group() {
    let s = session();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cube.zarr");
    let path = path.to_str().unwrap();
    let (values, elev) = store(&s, path).await;
    s.register("cube", path).unwrap();

    // Schema: dimensions first (coordinates, or positions for lon), then the variables
    // in the store's order.
    let schema = s.sql("select * from cube").await.unwrap().schema();
    let fields: Vec<(String, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    assert_eq!(
        fields,
        vec![
            (
                "time".into(),
                DataType::Timestamp(TimeUnit::Nanosecond, None)
            ),
            ("lat".into(), DataType::Float64),
            ("lon".into(), DataType::Int64),
            ("elev".into(), DataType::Float64),
            ("t2m".into(), DataType::Float64),
        ]
    );

    // One row per cell, NaN as NULL, and `elev` broadcast over time.
    let b = rows(&s, "select count(*), count(t2m), sum(elev) from cube").await;
    let nan = values.iter().filter(|v| v.is_nan()).count() as i64;
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 6000);
    assert_eq!(
        b[0].column(1).as_primitive::<Int64Type>().value(0),
        6000 - nan
    );
    let want_elev = 400.0 * elev.sum();
    assert!((b[0].column(2).as_primitive::<Float64Type>().value(0) - want_elev).abs() < 1e-6);

    // Rows come in C order: row 27 of the first two days is cell (1, 2, 2).
    let b = rows(
        &s,
        "select lat, lon, t2m from cube where time < '2001-01-03'",
    )
    .await;
    let lat = f64s(&b, 0);
    let lon: Vec<i64> = b
        .iter()
        .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    let t2m = f64s(&b, 2);
    assert_eq!((lat[27], lon[27]), (Some(10.0), 2));
    let want = values[[1, 2, 2]];
    assert_eq!(t2m[27], (!want.is_nan()).then_some(want));

    // A filter on a dimension: the per-latitude mean from June on equals the array's.
    let by_lat = rows(
        &s,
        "select lat, avg(t2m), count(t2m) from cube where time >= '2001-06-01' \
         group by lat order by lat",
    )
    .await;
    let means = f64s(&by_lat, 1);
    assert_eq!(means.len(), 3, "one row per latitude");
    for (i, got) in means.iter().enumerate() {
        let cells: Vec<f64> = (151..400)
            .flat_map(|t| (0..5).map(move |j| (t, j)))
            .map(|(t, j)| values[[t, i, j]])
            .filter(|v| !v.is_nan())
            .collect();
        let want = cells.iter().sum::<f64>() / cells.len() as f64;
        assert!(
            (got.unwrap() - want).abs() < 1e-12,
            "lat {i}: {got:?} vs {want}"
        );
        let n = by_lat[0].column(2).as_primitive::<Int64Type>().value(i);
        assert_eq!(n as usize, cells.len());
    }

    // Filters on dimensions prune: December on reads days 334..400, two of the five
    // 90-day chunks; a filter that no label meets reads nothing.
    let plan = plan_text(&s, "select avg(t2m) from cube where time >= '2001-12-01'").await;
    assert!(
        plan.contains("CellScanExec: dims=(time: 66, lat: 3, lon: 5) vars=[t2m] chunks=2"),
        "{plan}"
    );
    let plan = plan_text(
        &s,
        "select avg(t2m) from cube where lat between -1 and 11 and time < '2001-01-03'",
    )
    .await;
    assert!(
        plan.contains("CellScanExec: dims=(time: 2, lat: 2, lon: 5) vars=[t2m] chunks=1"),
        "{plan}"
    );
    let b = rows(&s, "select count(*) from cube where time > '2030-01-01'").await;
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 0);
    // A filter that is not on one dimension is still applied (after the scan).
    let b = rows(&s, "select count(*) from cube where t2m > 0.5 and lat = 0").await;
    let want = (0..400)
        .flat_map(|t| (0..5).map(move |j| (t, j)))
        .filter(|&(t, j)| values[[t, 1, j]] > 0.5)
        .count();
    assert_eq!(
        b[0].column(0).as_primitive::<Int64Type>().value(0) as usize,
        want
    );

    // CREATE EXTERNAL TABLE ... STORED AS ZARR and --tables-style directories.
    s.sql(&format!(
        "create external table cube2 stored as zarr location '{path}'"
    ))
    .await
    .unwrap();
    let b = rows(&s, "select count(*) from cube2 where lon = 4").await;
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 1200);
    let other = session();
    assert_eq!(
        other.register_dir(dir.path().to_str().unwrap()).unwrap(),
        vec!["cube"]
    );
    let b = rows(&other, "select max(time) from cube").await;
    let last = b[0]
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>();
    assert_eq!(last.value(0), parse_datetime("2002-02-04").unwrap());

    // Bad input: a name taken, a missing store, a corrupt one.
    let err = s.register("cube", path).unwrap_err().to_string();
    assert!(err.contains("table 'cube' is already registered"), "{err}");
    let missing = dir.path().join("nope.zarr");
    let err = s
        .register("nope", missing.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.zarr"), "{err}");
    let broken = dir.path().join("broken.zarr");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("zarr.json"), "{not json").unwrap();
    let err = s
        .sql(&format!(
            "create external table b stored as zarr location '{}'",
            broken.display()
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("CREATE EXTERNAL TABLE b") && err.contains("broken.zarr"),
        "{err}"
    );
    let empty = dir.path().join("empty.zarr");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(
        empty.join("zarr.json"),
        r#"{"zarr_format": 3, "node_type": "group", "attributes": {}}"#,
    )
    .unwrap();
    let err = s
        .register("empty", empty.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty.zarr has no data variables"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_dataframe_is_lazy_and_computes_reductions_first() {
    let s = session();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cube.zarr");
    let path = path.to_str().unwrap();
    let (values, _) = store(&s, path).await;
    let ds = s.open_zarr(path).unwrap();
    // A store variable reads lazily: the plan is a cell scan of its chunks.
    let t2m = ds.var("t2m").unwrap();
    let frame = t2m.to_dataframe().await.unwrap();
    let text = frame_plan_text(&s, &frame).await;
    assert!(text.contains("vars=[t2m] chunks=5"), "{text}");
    // A reduction is computed first; its table has the remaining dimensions.
    let mean = t2m.mean(["time"]).unwrap();
    let frame = mean.to_dataframe().await.unwrap();
    let b = frame.collect().await.unwrap();
    let got = f64s(&b, 2);
    assert_eq!(got.len(), 15);
    for i in 0..3 {
        for j in 0..5 {
            let cells: Vec<f64> = (0..400)
                .map(|t| values[[t, i, j]])
                .filter(|v| !v.is_nan())
                .collect();
            let want = cells.iter().sum::<f64>() / cells.len() as f64;
            assert!((got[i * 5 + j].unwrap() - want).abs() < 1e-12);
        }
    }
    // Registered datasets read the same way.
    s.register_dataset(
        "means",
        &Dataset::new()
            .with_var("m", mean.persist().await.unwrap())
            .unwrap(),
    )
    .unwrap();
    let b = rows(&s, "select count(*) from means where m is not null").await;
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 15);
}
