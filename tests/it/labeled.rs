//! DataArray and Dataset against hand computations on the same values: alignment by
//! dimension name, label selection, NaN-skipping reductions, groupby by month, resample,
//! coarsen and the climatology anomaly.

use ndarray::{ArrayD, Axis, IxDyn};
use shoal::labeled::index::{datetime_field, format_datetime, parse_datetime};
use shoal::{DataArray, Dataset, Index, Label, LabelSel, Sel, Session};

const DAY: i64 = 86_400 * 1_000_000_000;

fn session() -> Session {
    Session::builder()
        .workers(2)
        .option("shoal.array.reduce_fan_in", "3")
        .unwrap()
        .build()
        .unwrap()
}

/// Two years of daily values on a 4x5 grid in 100-day chunks, with some NaN.
async fn cube(s: &Session) -> (DataArray, ArrayD<f64>, Vec<i64>) {
    let x = s.random_uniform(&[731, 4, 5], &[100, 4, 5], 21).unwrap();
    let x = x.lt(0.05).unwrap().where_(f64::NAN, &x).unwrap();
    let values = x.collect_ndarray::<f64>().await.unwrap();
    let start = parse_datetime("2000-01-01").unwrap();
    let times: Vec<i64> = (0..731).map(|d| start + d * DAY).collect();
    let da = DataArray::new(x, &["time", "lat", "lon"])
        .unwrap()
        .with_coord("time", "time", Index::DateTime(times.clone()))
        .unwrap()
        .with_coord("lat", "lat", Index::F64(vec![10.0, 20.0, 30.0, 40.0]))
        .unwrap()
        .with_coord("lon", "lon", Index::F64(vec![0.0, 1.0, 2.0, 3.0, 4.0]))
        .unwrap();
    (da, values, times)
}

fn assert_close(what: &str, got: &ArrayD<f64>, want: &ArrayD<f64>) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-9 * (1.0 + w.abs());
        assert!(ok, "{what}: cell {i}: got {g}, want {w}");
    }
}

fn nanmean(v: impl Iterator<Item = f64>) -> f64 {
    let k: Vec<f64> = v.filter(|x| !x.is_nan()).collect();
    k.iter().sum::<f64>() / k.len() as f64
}

fn nanstd(v: impl Iterator<Item = f64>) -> f64 {
    let k: Vec<f64> = v.filter(|x| !x.is_nan()).collect();
    let m = k.iter().sum::<f64>() / k.len() as f64;
    (k.iter().map(|x| (x - m).powi(2)).sum::<f64>() / k.len() as f64).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_climatology_and_anomaly() {
    let s = session();
    let (t2m, v, times) = cube(&s).await;
    let months: Vec<usize> = times
        .iter()
        .map(|&t| datetime_field(t, "month").unwrap() as usize - 1)
        .collect();
    let clim = t2m.groupby("time.month").unwrap().mean().unwrap();
    assert_eq!(clim.dims(), vec!["month", "lat", "lon"]);
    assert_eq!(clim.index("month"), Some(&Index::I64((1..=12).collect())));
    let mut want = ArrayD::zeros(IxDyn(&[12, 4, 5]));
    for m in 0..12 {
        for i in 0..4 {
            for j in 0..5 {
                want[[m, i, j]] =
                    nanmean((0..731).filter(|&t| months[t] == m).map(|t| v[[t, i, j]]));
            }
        }
    }
    assert_close(
        "climatology",
        &clim.to_ndarray::<f64>().await.unwrap(),
        &want,
    );

    let anomaly = t2m.groupby("time.month").unwrap().sub(&clim).unwrap();
    assert_eq!(anomaly.dims(), vec!["time", "lat", "lon"]);
    let spread = anomaly.std(["time"]).unwrap();
    let mut want_std = ArrayD::zeros(IxDyn(&[4, 5]));
    for i in 0..4 {
        for j in 0..5 {
            want_std[[i, j]] = nanstd((0..731).map(|t| v[[t, i, j]] - want[[months[t], i, j]]));
        }
    }
    assert_close(
        "anomaly std",
        &spread.to_ndarray::<f64>().await.unwrap(),
        &want_std,
    );
    assert_eq!(spread.index("lat"), t2m.index("lat"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resample_coarsen_and_nan_skipping() {
    let s = session();
    let (t2m, v, times) = cube(&s).await;
    let monthly = t2m.resample("time", "MS").unwrap().mean().unwrap();
    let Some(Index::DateTime(starts)) = monthly.index("time") else {
        panic!("resample labels its bins with datetimes");
    };
    assert_eq!(starts.len(), 24, "2000-01 .. 2001-12");
    assert_eq!(format_datetime(starts[1]), "2000-02-01");
    let got = monthly.to_ndarray::<f64>().await.unwrap();
    let feb: Vec<usize> = (0..731)
        .filter(|&t| format_datetime(times[t]).starts_with("2000-02"))
        .collect();
    let want = nanmean(feb.iter().map(|&t| v[[t, 2, 3]]));
    assert!((got[[1, 2, 3]] - want).abs() < 1e-12);

    let coarse = t2m.coarsen("lat", 2).unwrap().max().unwrap();
    assert_eq!(coarse.index("lat"), Some(&Index::F64(vec![15.0, 35.0])));
    let got = coarse.to_ndarray::<f64>().await.unwrap();
    let want = [v[[5, 2, 1]], v[[5, 3, 1]]]
        .into_iter()
        .filter(|x| !x.is_nan())
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(got[[5, 1, 1]], want);
    let err = t2m.coarsen("lon", 2).unwrap_err().to_string();
    assert!(
        err.contains("length 5 is not a multiple of the window 2"),
        "{err}"
    );

    // Moving windows reach back across chunk boundaries (chunks are 100 days).
    let rolled = t2m
        .rolling("time", 5)
        .unwrap()
        .min_periods(3)
        .mean()
        .unwrap();
    let got = rolled.to_ndarray::<f64>().await.unwrap();
    for t in [0usize, 1, 2, 99, 100, 101, 104, 500] {
        let window: Vec<f64> = (t.saturating_sub(4)..=t)
            .map(|u| v[[u, 1, 2]])
            .filter(|x| !x.is_nan())
            .collect();
        let want = if window.len() < 3 {
            f64::NAN
        } else {
            window.iter().sum::<f64>() / window.len() as f64
        };
        let g = got[[t, 1, 2]];
        assert!(
            (g.is_nan() && want.is_nan()) || (g - want).abs() < 1e-12,
            "rolling at {t}: {g} vs {want}"
        );
    }

    // Reductions over named dimensions skip NaN by default.
    let mean = t2m.mean(["time", "lon"]).unwrap();
    assert_eq!(mean.dims(), vec!["lat"]);
    let got = mean.to_ndarray::<f64>().await.unwrap();
    let want = nanmean(v.index_axis(Axis(1), 2).iter().copied());
    assert!((got[[2]] - want).abs() < 1e-12);
    let everything = t2m.count(..).unwrap().to_ndarray::<f64>().await.unwrap();
    assert_eq!(
        everything[[]],
        v.iter().filter(|x| !x.is_nan()).count() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alignment_by_name_and_selection() {
    let s = session();
    let (t2m, v, _) = cube(&s).await;
    // A (lon, lat) field broadcasts over (time, lat, lon) by name, not by position.
    let field_values = ArrayD::from_shape_fn(IxDyn(&[5, 4]), |d| (d[0] * 10 + d[1]) as f64);
    let field = DataArray::new(
        s.from_ndarray(&field_values, &[5, 4]).unwrap(),
        &["lon", "lat"],
    )
    .unwrap();
    let sum = t2m.add(&field).unwrap();
    assert_eq!(sum.dims(), vec!["time", "lat", "lon"]);
    let got = sum.to_ndarray::<f64>().await.unwrap();
    let (t, i, j) = (400, 3, 1);
    let want = v[[t, i, j]] + field_values[[j, i]];
    assert!((got[[t, i, j]] - want).abs() < 1e-12 || want.is_nan());

    // A new dimension is appended.
    let member = DataArray::new(
        s.from_ndarray(&ArrayD::from_elem(IxDyn(&[3]), 2.0), &[3])
            .unwrap(),
        &["member"],
    )
    .unwrap();
    let ensemble = t2m.mul(&member).unwrap();
    assert_eq!(ensemble.dims(), vec!["time", "lat", "lon", "member"]);
    assert_eq!(ensemble.shape(), vec![731, 4, 5, 3]);

    let short = DataArray::new(
        s.from_ndarray(&ArrayD::<f64>::zeros(IxDyn(&[3])), &[3])
            .unwrap(),
        &["lat"],
    )
    .unwrap();
    let err = t2m.add(&short).unwrap_err().to_string();
    assert!(
        err.contains("dimension 'lat' has length 4 on the left and 3 on the right"),
        "{err}"
    );
    let err = t2m.mean(["height"]).unwrap_err().to_string();
    assert!(err.contains("no dimension 'height'"), "{err}");

    // Selection by label: exact, nearest, inclusive ranges; and by position.
    let day = t2m
        .sel(&[
            ("time", LabelSel::Exact(Label::from("2001-03-01"))),
            ("lat", LabelSel::Nearest(Label::from(27.0))),
        ])
        .unwrap();
    assert_eq!(day.dims(), vec!["lon"]);
    let got = day.to_ndarray::<f64>().await.unwrap();
    let t = 366 + 31 + 28;
    assert_close(
        "sel",
        &got,
        &v.index_axis(Axis(0), t).index_axis(Axis(0), 2).to_owned(),
    );
    let window = t2m
        .sel(&[(
            "time",
            LabelSel::Range(Label::from("2000-01-10"), Label::from("2000-01-19")),
        )])
        .unwrap();
    assert_eq!(window.shape(), vec![10, 4, 5]);
    let strided = t2m
        .isel(&[("time", Sel::Slice(Some(1), None, 7)), ("lon", Sel::At(-1))])
        .unwrap();
    assert_eq!(strided.shape(), vec![105, 4]);
    let got = strided.to_ndarray::<f64>().await.unwrap();
    assert_eq!(got[[2, 1]].to_bits(), v[[15, 1, 4]].to_bits());
    let err = t2m
        .sel(&[("time", LabelSel::Exact(Label::from("1999-01-01")))])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("label '1999-01-01' is not in dimension 'time'"),
        "{err}"
    );

    let ds = Dataset::new().with_var("t2m", t2m.clone()).unwrap();
    assert_eq!(
        ds.dims(),
        vec![("time".into(), 731), ("lat".into(), 4), ("lon".into(), 5)]
    );
    let err = ds.var("sst").unwrap_err().to_string();
    assert!(
        err.contains("no variable 'sst'; the dataset has t2m"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_dataframe_and_back() {
    use datafusion::arrow::array::Array as _;
    use shoal::prelude::*;
    let s = session();
    let (t2m, v, _) = cube(&s).await;
    let small = t2m
        .isel(&[("time", Sel::Slice(Some(0), Some(3), 1))])
        .unwrap()
        .with_name("t2m");
    let frame = small.to_dataframe().await.unwrap();
    let batches = frame.collect().await.unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 3 * 4 * 5, "one row per cell");
    let b = &batches[0];
    assert_eq!(
        b.schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
        vec!["time", "lat", "lon", "t2m"]
    );
    // Row 27 is cell (1, 1, 2) in C order.
    let lat = b
        .column(1)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Float64Array>()
        .unwrap();
    let vals = b
        .column(3)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Float64Array>()
        .unwrap();
    assert_eq!(lat.value(27), 20.0);
    if v[[1, 1, 2]].is_nan() {
        assert!(vals.is_null(27), "NaN cells are NULL in tables");
    } else {
        assert_eq!(vals.value(27), v[[1, 1, 2]]);
    }
    assert_eq!(
        vals.null_count(),
        (0..3)
            .flat_map(|t| (0..4).flat_map(move |i| (0..5).map(move |j| (t, i, j))))
            .filter(|&(t, i, j)| v[[t, i, j]].is_nan())
            .count()
    );
    // Tables and arrays agree: the per-latitude mean from SQL equals the array reduction.
    let by_lat = frame
        .groupby(["lat"])
        .unwrap()
        .agg([avg(col("t2m")).alias("m")])
        .unwrap()
        .sort_values(["lat"], true)
        .unwrap()
        .collect()
        .await
        .unwrap();
    let want = small
        .mean(["time", "lon"])
        .unwrap()
        .to_ndarray::<f64>()
        .await
        .unwrap();
    let m = by_lat[0]
        .column(1)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Float64Array>()
        .unwrap();
    for i in 0..4 {
        assert!((m.value(i) - want[[i]]).abs() < 1e-12, "lat {i}");
    }

    let table = s
        .sql("select * from (values (1, 'a', 2.0), (2, 'a', 3.0), (1, 'b', 5.0)) as t(x, name, v)")
        .await
        .unwrap();
    let ds = Dataset::from_dataframe(&table, &["x", "name"])
        .await
        .unwrap();
    let var = ds.var("v").unwrap();
    assert_eq!(var.dims(), vec!["x", "name"]);
    assert_eq!(
        var.index("name"),
        Some(&Index::Str(vec!["a".into(), "b".into()]))
    );
    let got = var.to_ndarray::<f64>().await.unwrap();
    assert_eq!(got[[0, 0]], 2.0);
    assert_eq!(got[[1, 0]], 3.0);
    assert_eq!(got[[0, 1]], 5.0);
    assert!(got[[1, 1]].is_nan(), "a cell no row names is NaN");
    let dup = s
        .sql("select * from (values (1, 2.0), (1, 3.0)) as t(x, v)")
        .await
        .unwrap();
    let err = Dataset::from_dataframe(&dup, &["x"])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("two rows name the same cell (x) = (1)"),
        "{err}"
    );
}
