//! Zarr stores: round trips in v2 and v3 with each codec, CF decoding, missing chunks,
//! broken stores, atomic writes, and the climatology anomaly from store to store.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int16Array, Int64Array};
use datafusion::arrow::datatypes::DataType;
use ndarray::ArrayD;
use shoal::labeled::index::parse_datetime;
use shoal::labeled::{ZarrCodec, ZarrOptions};
use shoal::{DataArray, Index, Session};
use shoal_io::zarr::{self as store_io, ZarrArraySpec};

const DAY: i64 = 86_400 * 1_000_000_000;

fn session() -> Session {
    Session::builder().workers(2).build().unwrap()
}

/// 400 days x 3 x 5 with NaN, chunked (90, 2, 5): chunks do not divide the shape.
async fn sample(s: &Session) -> (DataArray, ArrayD<f64>) {
    let x = s.random_uniform(&[400, 3, 5], &[90, 2, 5], 5).unwrap();
    let x = x.lt(0.1).unwrap().where_(f64::NAN, &x).unwrap();
    let values = x.collect_ndarray::<f64>().await.unwrap();
    let start = parse_datetime("2001-01-01").unwrap();
    let da = DataArray::new(x, &["time", "lat", "lon"])
        .unwrap()
        .with_name("t2m")
        .with_coord(
            "time",
            "time",
            Index::DateTime((0..400).map(|d| start + d * DAY).collect()),
        )
        .unwrap()
        .with_coord("lat", "lat", Index::F64(vec![-10.0, 0.0, 10.0]))
        .unwrap();
    (da, values)
}

fn same(what: &str, got: &ArrayD<f64>, want: &ArrayD<f64>) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}: cell {i}: {g} vs {w}"
        );
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_in_v2_and_v3_with_each_codec() {
    let s = session();
    let dir = tempfile::tempdir().unwrap();
    let (da, values) = sample(&s).await;
    let cases = [
        (2, ZarrCodec::None),
        (2, ZarrCodec::Zstd(3)),
        (2, ZarrCodec::Blosc),
        (2, ZarrCodec::Gzip(5)),
        (3, ZarrCodec::None),
        (3, ZarrCodec::Zstd(3)),
        (3, ZarrCodec::Blosc),
        (3, ZarrCodec::Gzip(5)),
        (3, ZarrCodec::Sharded(30)),
    ];
    for (format, codec) in cases {
        let path = dir.path().join(format!("v{format}-{codec:?}.zarr"));
        let path = path.to_str().unwrap();
        da.to_zarr_with(path, ZarrOptions { format, codec })
            .await
            .unwrap();
        let ds = s.open_zarr(path).unwrap();
        assert_eq!(ds.names(), vec!["t2m".to_string()], "v{format} {codec:?}");
        let back = ds.var("t2m").unwrap();
        assert_eq!(back.dims(), vec!["time", "lat", "lon"]);
        assert_eq!(
            back.index("time"),
            da.index("time"),
            "v{format} {codec:?}: CF time"
        );
        assert_eq!(back.index("lat"), da.index("lat"));
        assert_eq!(
            back.data().chunks()[0][0],
            90,
            "the store keeps the chunking"
        );
        same(
            &format!("v{format} {codec:?}"),
            &back.to_ndarray::<f64>().await.unwrap(),
            &values,
        );
    }
    assert!(leftovers(dir.path()).is_empty());

    // An existing store is never overwritten.
    let path = dir.path().join("v3-Zstd(3).zarr");
    let err = da
        .to_zarr(path.to_str().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cf_decoding_missing_chunks_and_broken_stores() {
    let s = session();
    let dir = tempfile::tempdir().unwrap();
    let env = s.context().runtime_env();
    let store = format!("file://{}/packed.zarr", dir.path().display());
    // Packed int16 with scale/offset and a fill value, and CF-encoded days.
    store_io::create_group(&env, &store, 3, Default::default())
        .await
        .unwrap();
    let mut attrs = serde_json::Map::new();
    attrs.insert("scale_factor".into(), 0.5.into());
    attrs.insert("add_offset".into(), 200.0.into());
    attrs.insert("_FillValue".into(), (-32768).into());
    let spec = ZarrArraySpec {
        path: "/q".into(),
        shape: vec![4, 3],
        chunks: vec![2, 3],
        data_type: DataType::Int16,
        dims: vec!["time".into(), "x".into()],
        attrs,
        codec: ZarrCodec::Zstd(1),
        format: 3,
    };
    let meta = store_io::create_array(&env, &store, &spec).await.unwrap();
    let chunk: ArrayRef = Arc::new(Int16Array::from(vec![0, 2, -32768, 4, 6, 8]));
    store_io::write_chunk(&env, &store, "/q", &meta, &[0, 0], &chunk)
        .await
        .unwrap();
    // Chunk [1, 0] is never written: it reads as the fill value, so NaN after decoding.
    let mut tattrs = serde_json::Map::new();
    tattrs.insert("units".into(), "days since 2000-01-01".into());
    let tspec = ZarrArraySpec {
        path: "/time".into(),
        shape: vec![4],
        chunks: vec![4],
        data_type: DataType::Int64,
        dims: vec!["time".into()],
        attrs: tattrs,
        codec: ZarrCodec::None,
        format: 3,
    };
    let tmeta = store_io::create_array(&env, &store, &tspec).await.unwrap();
    let days: ArrayRef = Arc::new(Int64Array::from(vec![0, 31, 60, 366]));
    store_io::write_chunk(&env, &store, "/time", &tmeta, &[0], &days)
        .await
        .unwrap();

    let path = dir.path().join("packed.zarr");
    let q = s
        .open_zarr(path.to_str().unwrap())
        .unwrap()
        .var("q")
        .unwrap();
    let Some(Index::DateTime(t)) = q.index("time") else {
        panic!("decoded times")
    };
    assert_eq!(t[1], parse_datetime("2000-02-01").unwrap());
    assert_eq!(t[3], parse_datetime("2001-01-01").unwrap());
    assert!(
        q.attrs().get("scale_factor").is_none(),
        "encoding attributes are consumed"
    );
    let got = q.to_ndarray::<f64>().await.unwrap();
    assert_eq!(&got.as_slice().unwrap()[..2], &[200.0, 201.0]);
    assert!(got[[0, 2]].is_nan(), "_FillValue becomes NaN");
    assert!(
        got.as_slice().unwrap()[6..].iter().all(|v| v.is_nan()),
        "a missing chunk reads as the fill value"
    );

    // A corrupt chunk names the array and the chunk.
    std::fs::write(path.join("q/c/0/0"), b"not zstd").unwrap();
    let q = s
        .open_zarr(path.to_str().unwrap())
        .unwrap()
        .var("q")
        .unwrap();
    let err = q.to_ndarray::<f64>().await.unwrap_err().to_string();
    assert!(err.contains("array 'q' chunk [0, 0]"), "{err}");

    // An unsupported codec and corrupt metadata are refused when the store is opened.
    let meta_path = path.join("q/zarr.json");
    let text = std::fs::read_to_string(&meta_path)
        .unwrap()
        .replace("\"zstd\"", "\"foo\"");
    std::fs::write(&meta_path, text).unwrap();
    let err = s.open_zarr(path.to_str().unwrap()).unwrap_err().to_string();
    assert!(
        err.contains("codec foo is not supported") && err.contains("'q'"),
        "{err}"
    );
    std::fs::write(&meta_path, "{ not json").unwrap();
    let err = s.open_zarr(path.to_str().unwrap()).unwrap_err().to_string();
    assert!(
        err.contains("packed.zarr") && err.contains("q/zarr.json"),
        "{err}"
    );
    let err = s
        .open_zarr(dir.path().join("nothing.zarr").to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing.zarr"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn climatology_anomaly_from_store_to_store() {
    let s = session();
    let dir = tempfile::tempdir().unwrap();
    let (da, _) = sample(&s).await;
    let input = dir.path().join("cube.zarr");
    da.to_zarr(input.to_str().unwrap()).await.unwrap();

    let t2m = s
        .open_zarr(input.to_str().unwrap())
        .unwrap()
        .var("t2m")
        .unwrap();
    let clim = t2m.groupby("time.month").unwrap().mean().unwrap();
    let anomaly = t2m.groupby("time.month").unwrap().sub(&clim).unwrap();
    // The climatology and the anomaly both need the store: one stage reads it, the others
    // fetch its decoded chunks.
    let graph = shoal_planner::array::lower(
        anomaly.std(["time"]).unwrap().data().expr(),
        shoal_planner::array::ArrayLimits::fan_in(16),
    )
    .unwrap();
    let reading: Vec<usize> = graph
        .stages
        .iter()
        .filter(|stage| {
            let exec = stage.plan.children()[0];
            let program = exec
                .downcast_ref::<shoal_planner::array::ChunkExec>()
                .unwrap()
                .program();
            program
                .nodes
                .iter()
                .any(|n| matches!(n.op, shoal_planner::array::Op::ZarrRead { .. }))
        })
        .map(|stage| stage.id)
        .collect();
    assert_eq!(reading.len(), 1, "one stage reads the store: {reading:?}");
    let output = dir.path().join("anomaly_std.zarr");
    anomaly
        .std(["time"])
        .unwrap()
        .to_zarr(output.to_str().unwrap())
        .await
        .unwrap();

    // The same computation on the in-memory array.
    let clim_mem = da.groupby("time.month").unwrap().mean().unwrap();
    let want = da
        .groupby("time.month")
        .unwrap()
        .sub(&clim_mem)
        .unwrap()
        .std(["time"])
        .unwrap()
        .to_ndarray::<f64>()
        .await
        .unwrap();
    let written = s
        .open_zarr(output.to_str().unwrap())
        .unwrap()
        .var("t2m")
        .unwrap();
    assert_eq!(written.dims(), vec!["lat", "lon"]);
    assert_eq!(written.index("lat"), da.index("lat"));
    let got = written.to_ndarray::<f64>().await.unwrap();
    assert_eq!(got.shape(), &[3, 5]);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-12, "{g} vs {w}");
    }
    assert!(got.iter().all(|v| *v > 0.1 && *v < 0.5), "{got:?}");
}
