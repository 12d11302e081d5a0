//! Chunked arrays against the same computation done by `ndarray` on the whole array:
//! chunks that do not divide the shape, NaN handling, broadcasting, reduction trees.

// `5..-1` is a NumPy-style slice in `s![]`.
#![allow(clippy::reversed_empty_ranges)]

use ndarray::{ArrayD, Axis, IxDyn, s};
use shoal::{Array, DType, Session};

fn session() -> Session {
    Session::builder()
        .workers(2)
        .option("shoal.array.reduce_fan_in", "2")
        .unwrap()
        .build()
        .unwrap()
}

/// A seeded 13x17 array in awkward 4x5 chunks, and its values.
async fn seeded(s: &Session, seed: u64) -> (Array, ArrayD<f64>) {
    let x = s.random_uniform(&[13, 17], &[4, 5], seed).unwrap();
    let whole = s
        .random_uniform(&[13, 17], &[13, 17], seed)
        .unwrap()
        .collect_ndarray::<f64>()
        .await
        .unwrap();
    (x, whole)
}

fn assert_close(what: &str, got: &ArrayD<f64>, want: &ArrayD<f64>) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-9 * (1.0 + w.abs());
        assert!(ok, "{what}: cell {i}: got {g}, want {w}");
    }
}

async fn values(a: &Array) -> ArrayD<f64> {
    a.collect_ndarray::<f64>().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunking_does_not_change_random_values() {
    let s = session();
    let (x, whole) = seeded(&s, 7).await;
    assert_eq!(x.chunks(), vec![vec![4, 4, 4, 1], vec![5, 5, 5, 2]]);
    assert_close("random", &values(&x).await, &whole);
    assert!(whole.iter().all(|v| (0.0..1.0).contains(v)));
    let mean = whole.mean().unwrap();
    assert!((0.3..0.7).contains(&mean), "{mean}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elementwise_chains_fuse_and_broadcast() {
    let s = session();
    let (x, xv) = seeded(&s, 1).await;
    let (y, yv) = seeded(&s, 2).await;
    let z = ((&(&x * 2.0).unwrap() + &y.sqrt().unwrap()).unwrap() - 1.0).unwrap();
    assert_eq!(
        z.graph_size().unwrap(),
        (1, 16),
        "one fused stage, one task per chunk"
    );
    let want = &xv * 2.0 + yv.mapv(f64::sqrt) - 1.0;
    assert_close("x*2+sqrt(y)-1", &values(&z).await, &want);

    // (13, 17) + (17,) + (13, 1): NumPy broadcasting.
    let row = x.slice(s![0, ..]).unwrap();
    assert_eq!(row.shape(), vec![17], "an integer index drops the axis");
    let col = x.slice(s![.., 0..1]).unwrap();
    let b = (&(&x + &row).unwrap() + &col).unwrap();
    let rowv = xv.index_axis(Axis(0), 0).to_owned();
    let colv = xv.slice(s![.., 0..1]).to_owned();
    let want = &xv + &rowv + &colv;
    assert_close("broadcast", &values(&b).await, &want);

    // Comparisons and where.
    let w = x.gt(0.5).unwrap().where_(&x, -1.0).unwrap();
    let want = xv.mapv(|v| if v > 0.5 { v } else { -1.0 });
    assert_close("where", &values(&w).await, &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reductions_match_ndarray_with_nan() {
    let s = session();
    let (x, mut xv) = seeded(&s, 3).await;
    // NaN wherever the value is below 0.1.
    let x = x.lt(0.1).unwrap().where_(f64::NAN, &x).unwrap();
    xv.mapv_inplace(|v| if v < 0.1 { f64::NAN } else { v });
    let nanfold = |axis: Option<usize>, f: &dyn Fn(&[f64]) -> f64| -> ArrayD<f64> {
        match axis {
            None => ArrayD::from_elem(IxDyn(&[]), f(&xv.iter().copied().collect::<Vec<_>>())),
            Some(a) => xv.map_axis(Axis(a), |lane| f(&lane.to_vec())),
        }
    };
    let kept = |v: &[f64]| {
        v.iter()
            .copied()
            .filter(|x| !x.is_nan())
            .collect::<Vec<_>>()
    };
    let mean = |v: &[f64]| {
        let k = kept(v);
        k.iter().sum::<f64>() / k.len() as f64
    };
    let var = |v: &[f64]| {
        let k = kept(v);
        let m = k.iter().sum::<f64>() / k.len() as f64;
        k.iter().map(|x| (x - m).powi(2)).sum::<f64>() / k.len() as f64
    };
    for axis in [None, Some(0), Some(1)] {
        let ax: shoal::Axes = axis.into();
        let what = |name: &str| format!("{name} over {axis:?}");
        assert_close(
            &what("nansum"),
            &values(&x.nansum(ax.clone()).unwrap()).await,
            &nanfold(axis, &|v| kept(v).iter().sum()),
        );
        assert_close(
            &what("nanmean"),
            &values(&x.nanmean(ax.clone()).unwrap()).await,
            &nanfold(axis, &mean),
        );
        assert_close(
            &what("nanvar"),
            &values(&x.nanvar(ax.clone()).unwrap()).await,
            &nanfold(axis, &var),
        );
        assert_close(
            &what("nanstd"),
            &values(&x.nanstd(ax.clone()).unwrap()).await,
            &nanfold(axis, &|v| var(v).sqrt()),
        );
        assert_close(
            &what("nanmin"),
            &values(&x.nanmin(ax.clone()).unwrap()).await,
            &nanfold(axis, &|v| kept(v).into_iter().fold(f64::INFINITY, f64::min)),
        );
        assert_close(
            &what("nanmax"),
            &values(&x.nanmax(ax.clone()).unwrap()).await,
            &nanfold(axis, &|v| {
                kept(v).into_iter().fold(f64::NEG_INFINITY, f64::max)
            }),
        );
        assert_close(
            &what("count"),
            &values(&x.count(ax.clone()).unwrap()).await,
            &nanfold(axis, &|v| kept(v).len() as f64),
        );
        // Without skipping, any NaN makes the sum NaN.
        assert_close(
            &what("sum"),
            &values(&x.sum(ax.clone()).unwrap()).await,
            &nanfold(axis, &|v| v.iter().sum()),
        );
        let argmax = |v: &[f64]| {
            let mut best = 0;
            for (i, x) in v.iter().enumerate() {
                if !x.is_nan() && (v[best].is_nan() || *x > v[best]) {
                    best = i;
                }
            }
            best as f64
        };
        assert_close(
            &what("nanargmax"),
            &values(&x.nanargmax(ax.clone()).unwrap()).await,
            &nanfold(axis, &argmax),
        );
    }
    // A 4x4 chunk grid reduced with fan-in 2 needs a tree of combine stages.
    let (stages, _) = x.nanmean(None).unwrap().graph_size().unwrap();
    assert!(
        stages >= 3,
        "partial stage plus a combine tree, got {stages} stages"
    );
    let any = x
        .isnan()
        .unwrap()
        .any(None)
        .unwrap()
        .collect_ndarray::<bool>()
        .await
        .unwrap();
    assert!(any[[]]);
    let all = x
        .isnan()
        .unwrap()
        .all(0)
        .unwrap()
        .collect_ndarray::<bool>()
        .await
        .unwrap();
    assert!(all.iter().all(|v| !v));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slicing_transposing_and_indexing() {
    let s = session();
    let (x, xv) = seeded(&s, 4).await;
    let a = x.slice(s![1..12;3, ..;2]).unwrap();
    assert_eq!(a.shape(), vec![4, 9]);
    assert_close(
        "strided slice",
        &values(&a).await,
        &xv.slice(s![1..12;3, ..;2]).to_owned().into_dyn(),
    );
    let tail = x.slice(s![-3.., 5..-1]).unwrap();
    assert_close(
        "negative bounds",
        &values(&tail).await,
        &xv.slice(s![-3.., 5..-1]).to_owned().into_dyn(),
    );

    let t = &x + &x.slice(s![.., 0..13]).unwrap().t().unwrap();
    assert!(t.is_err(), "(13,17) + (13,13) must not broadcast");

    let sq = x.slice(s![0..13, 0..13]).unwrap();
    let sym = (&sq + &sq.t().unwrap()).unwrap().mean(0).unwrap();
    let sqv = xv.slice(s![0..13, 0..13]).to_owned();
    let want = (&sqv + &sqv.t()).mean_axis(Axis(0)).unwrap().into_dyn();
    assert_close("(x + x.T).mean(0)", &values(&sym).await, &want);
    // The same reduction distributed over the operands keeps NaN where NumPy has it.
    let mut holedv = sqv.clone();
    holedv[[2, 5]] = f64::NAN;
    let holed = s.from_ndarray(&holedv.clone().into_dyn(), &[4, 5]).unwrap();
    let anti = (&holed - &holed.t().unwrap()).unwrap().sum(1).unwrap();
    let want = (&holedv - &holedv.t()).sum_axis(Axis(1)).into_dyn();
    assert!(want.iter().any(|v| v.is_nan()) && want.iter().any(|v| !v.is_nan()));
    assert_close("(x - x.T).sum(1) with NaN", &values(&anti).await, &want);

    let picked = x.take(&[12, 0, 5, 5], 0).unwrap();
    assert_close(
        "take",
        &values(&picked).await,
        &xv.select(Axis(0), &[12, 0, 5, 5]),
    );
    let mask: Vec<bool> = (0..17).map(|i| i % 3 == 1).collect();
    let masked = x.compress(&mask, 1).unwrap();
    let cols: Vec<usize> = (0..17).filter(|i| i % 3 == 1).collect();
    assert_close(
        "boolean index",
        &values(&masked).await,
        &xv.select(Axis(1), &cols),
    );

    let err = x.take(&[13], 0).unwrap_err().to_string();
    assert!(
        err.contains("index 13 is out of range for axis 0 of length 13"),
        "{err}"
    );
    let err = x.sum(2).unwrap_err().to_string();
    assert!(err.contains("axis 2 is out of range"), "{err}");
    let err = x.compress(&[true], 5).unwrap_err().to_string();
    assert!(err.contains("axis 5 is out of range"), "{err}");
    let err = x.transpose(&[0, 0]).unwrap_err().to_string();
    assert!(err.contains("not a permutation"), "{err}");
}

/// A rechunk that only feeds a reduction is moved after it: the sum reads the source's
/// chunks where they lie and the small result is rechunked, unless that would make a
/// task hold a bigger source chunk than the rechunk's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reductions_of_a_rechunk_reduce_the_source() {
    let s = session();
    let x = s.random_uniform(&[60, 40], &[6, 40], 9).unwrap();
    let whole = values(&s.random_uniform(&[60, 40], &[60, 40], 9).unwrap()).await;
    let rechunked = x.rechunk(&[60, 8]).unwrap();
    for (op, got, want) in [
        ("sum", rechunked.sum(0).unwrap(), whole.sum_axis(Axis(0))),
        (
            "mean",
            rechunked.mean(1).unwrap(),
            whole.mean_axis(Axis(1)).unwrap(),
        ),
    ] {
        assert_close(op, &values(&got).await, &want);
    }
    let moved = rechunked.sum(0).unwrap();
    assert_eq!(moved.chunks(), vec![vec![8; 5]]);
    let by_hand = x.sum(0).unwrap().rechunk(&[8]).unwrap();
    assert_eq!(moved.graph_size().unwrap(), by_hand.graph_size().unwrap());
    // Chunks of 60 x 40 rechunked to 6 x 8 stay rechunked first: reducing the source
    // would hold 50 times more per task.
    let big = s.random_uniform(&[60, 40], &[60, 40], 9).unwrap();
    let small = big.rechunk(&[6, 8]).unwrap().sum(0).unwrap();
    let source_first = big.sum(0).unwrap().rechunk(&[8]).unwrap();
    assert_ne!(
        small.graph_size().unwrap(),
        source_first.graph_size().unwrap()
    );
    assert_close(
        "small chunks",
        &values(&small).await,
        &whole.sum_axis(Axis(0)),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concat_rechunk_broadcast_and_matmul() {
    let s = session();
    let (x, xv) = seeded(&s, 5).await;
    let (y, yv) = seeded(&s, 6).await;
    let c = Array::concat(&[&x, &y], 0).unwrap();
    assert_eq!(c.shape(), vec![26, 17]);
    let want = ndarray::concatenate(Axis(0), &[xv.view(), yv.view()]).unwrap();
    assert_close("concat", &values(&c).await, &want);
    let r = c.rechunk(&[26, 3]).unwrap();
    assert_eq!(r.chunks()[1], vec![3, 3, 3, 3, 3, 2]);
    assert_close(
        "rechunk sum",
        &values(&r.sum(0).unwrap()).await,
        &want.sum_axis(Axis(0)),
    );

    let row = x
        .slice(s![0..1, ..])
        .unwrap()
        .broadcast_to(&[3, 13, 17])
        .unwrap();
    let rowv = xv
        .slice(s![0..1, ..])
        .broadcast((3, 13, 17))
        .unwrap()
        .to_owned()
        .into_dyn();
    assert_close("broadcast_to", &values(&row).await, &rowv);

    let m = x.matmul(&y.t().unwrap()).unwrap();
    let mv = xv.clone().into_dimensionality::<ndarray::Ix2>().unwrap();
    let yv2 = yv.clone().into_dimensionality::<ndarray::Ix2>().unwrap();
    assert_close("matmul", &values(&m).await, &mv.dot(&yv2.t()).into_dyn());
    let err = x.matmul(&y).unwrap_err().to_string();
    assert!(err.contains("do not align"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_arithmetic_and_dtypes() {
    let s = session();
    let n = s.arange(10, 3);
    let v: Vec<i64> = (0..10).collect();
    let fd = n.sub(4i64).unwrap().floor_div(3i64).unwrap();
    let got = fd.collect_ndarray::<i64>().await.unwrap();
    assert_eq!(
        got.iter().copied().collect::<Vec<_>>(),
        v.iter().map(|x| (x - 4).div_euclid(3)).collect::<Vec<_>>()
    );
    let m = n.sub(4i64).unwrap().rem(3i64).unwrap();
    assert_eq!(m.dtype(), DType::I64);
    let got = m.collect_ndarray::<i64>().await.unwrap();
    assert_eq!(
        got.iter().copied().collect::<Vec<_>>(),
        v.iter().map(|x| (x - 4).rem_euclid(3)).collect::<Vec<_>>()
    );
    let half = n.div(2i64).unwrap();
    assert_eq!(half.dtype(), DType::F64, "true division gives floats");
    assert_eq!(
        n.sum(None).unwrap().collect_ndarray::<i64>().await.unwrap()[[]],
        45
    );
    assert_eq!(n.mean(None).unwrap().item().await.unwrap(), 4.5);
    let f32s = n.astype(DType::F32).unwrap();
    assert_eq!(f32s.mean(None).unwrap().dtype(), DType::F32);
    let err = n.gt(1i64).unwrap().add(1i64).map(|_| ()).err();
    assert!(err.is_none(), "bool + int promotes to int");
    let err = n.gt(1i64).unwrap().sqrt().unwrap_err().to_string();
    assert!(err.contains("sqrt does not apply to bool arrays"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_arrays_are_read_not_recomputed() {
    let s = session();
    let (x, xv) = seeded(&s, 8).await;
    let p = (&x * 3.0).unwrap().persist().await.unwrap();
    assert_eq!(p.chunks(), x.chunks());
    let total = p.sum(None).unwrap();
    assert_close(
        "persisted sum",
        &values(&total).await,
        &ArrayD::from_elem(IxDyn(&[]), (&xv * 3.0).sum()),
    );
    // Reductions of a rechunked stored array reduce each stored piece in place.
    let tall = p.rechunk(&[13, 3]).unwrap();
    let pv = &xv * 3.0;
    assert_close(
        "rechunked mean",
        &values(&tall.mean(0).unwrap()).await,
        &pv.mean_axis(Axis(0)).unwrap(),
    );
    let argmax = pv.map_axis(Axis(0), |lane| {
        let best = lane.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        lane.iter().position(|&v| v == best).unwrap() as f64
    });
    assert_close(
        "rechunked argmax",
        &values(&tall.argmax(0).unwrap()).await,
        &argmax,
    );
    let from = s.from_ndarray(&xv, &[5, 5]).unwrap();
    assert_close("from_ndarray", &values(&from).await, &xv);
    assert_eq!(from.graph_size().unwrap(), (1, 12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_reductions_map_reduce_and_blockwise() {
    let s = session();
    let (x, xv) = seeded(&s, 9).await;
    let x = x.lt(0.1).unwrap().where_(f64::NAN, &x).unwrap();
    let xv = xv.mapv(|v| if v < 0.1 { f64::NAN } else { v });
    // Interleaved groups need partial states per chunk merged in a tree; groups in
    // chunk-aligned runs reduce blockwise.
    let interleaved: Vec<usize> = (0..13).map(|i| i % 3).collect();
    let runs: Vec<usize> = (0..13).map(|i| i / 4).collect();
    // Runs that chunk boundaries cut (like calendar months over chunks of days) are
    // rechunked to whole runs and still reduce blockwise.
    let cut_runs: Vec<usize> = (0..13).map(|i| i / 3).collect();
    for (labels, groups, blockwise) in [
        (interleaved, 3, false),
        (runs, 4, true),
        (cut_runs, 5, true),
    ] {
        let mean = x
            .group_reduce(shoal::ReduceOp::Mean, 0, labels.clone(), groups, true)
            .unwrap();
        let (stages, _) = mean.graph_size().unwrap();
        assert_eq!(
            stages == 1,
            blockwise,
            "blockwise groups need no combine stages"
        );
        let std = x
            .group_reduce(
                shoal::ReduceOp::Std { ddof: 1 },
                0,
                labels.clone(),
                groups,
                true,
            )
            .unwrap();
        let count = x
            .group_reduce(shoal::ReduceOp::Count, 0, labels.clone(), groups, true)
            .unwrap();
        let mut want_mean = ArrayD::zeros(IxDyn(&[groups, 17]));
        let mut want_std = ArrayD::zeros(IxDyn(&[groups, 17]));
        let mut want_count = ArrayD::zeros(IxDyn(&[groups, 17]));
        for g in 0..groups {
            for j in 0..17 {
                let v: Vec<f64> = (0..13)
                    .filter(|&i| labels[i] == g && !xv[[i, j]].is_nan())
                    .map(|i| xv[[i, j]])
                    .collect();
                let n = v.len() as f64;
                let m = v.iter().sum::<f64>() / n;
                want_mean[[g, j]] = m;
                want_std[[g, j]] = if n > 1.0 {
                    (v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
                } else {
                    f64::NAN
                };
                want_count[[g, j]] = n;
            }
        }
        assert_close("group mean", &values(&mean).await, &want_mean);
        assert_close("group std", &values(&std).await, &want_std);
        assert_close("group count", &values(&count).await, &want_count);
    }
    let err = x
        .group_reduce(shoal::ReduceOp::Sum, 0, vec![0; 12], 1, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("12 group labels for axis 0 of length 13"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expand_squeeze_and_stack() {
    let s = session();
    let (x, xv) = seeded(&s, 10).await;
    let e = x.expand_dims(&[0, 2]).unwrap();
    assert_eq!(e.shape(), vec![1, 13, 1, 17]);
    let back = e.squeeze(&[0, 2]).unwrap();
    assert_close("expand then squeeze", &values(&back).await, &xv);
    let col = x.slice(s![.., 3]).unwrap().expand_dims(&[1]).unwrap();
    let b = (&x - &col).unwrap();
    let want = &xv - &xv.slice(s![.., 3..4]);
    assert_close("broadcast an expanded column", &values(&b).await, &want);
    let r = x.reshape(&[17, 13]).unwrap();
    let rv = xv.clone().into_shape_with_order(IxDyn(&[17, 13])).unwrap();
    assert_close("reshape", &values(&r).await, &rv);
    let flat = x.reshape(&[221]).unwrap().reshape(&[13, 17]).unwrap();
    assert_close("reshape round trip", &values(&flat).await, &xv);
    let err = x.reshape(&[10, 10]).unwrap_err().to_string();
    assert!(
        err.contains("cannot reshape an array of shape [13, 17] (221 cells) to [10, 10]"),
        "{err}"
    );
    let st = Array::stack(&[&x, &x], 1).unwrap();
    assert_eq!(st.shape(), vec![13, 2, 17]);
    let sv = values(&st).await;
    assert_close("stack", &sv.index_axis(Axis(1), 1).to_owned(), &xv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tensordot_and_labeled_dot() {
    let s = session();
    // a: (3, 4, 5) in (2, 3, 2) chunks, b: (5, 6, 4) in (3, 4, 3) chunks.
    let a = s.random_uniform(&[3, 4, 5], &[2, 3, 2], 31).unwrap();
    let b = s.random_uniform(&[5, 6, 4], &[3, 4, 3], 32).unwrap();
    let (av, bv) = (values(&a).await, values(&b).await);
    // Contract a's axes (2, 1) with b's (0, 2): result (3, 6).
    let got = values(&a.tensordot(&b, &[2, 1], &[0, 2]).unwrap()).await;
    let want = ArrayD::from_shape_fn(IxDyn(&[3, 6]), |ix| {
        let (i, l) = (ix[0], ix[1]);
        let mut sum = 0.0;
        for j in 0..4 {
            for k in 0..5 {
                sum += av[[i, j, k]] * bv[[k, l, j]];
            }
        }
        sum
    });
    assert_close("tensordot over two axes", &got, &want);
    // One axis: a's axis 2 with b's axis 0 gives (3, 4, 6, 4).
    let got = values(&a.tensordot(&b, &[2], &[0]).unwrap()).await;
    assert_eq!(got.shape(), &[3, 4, 6, 4]);
    let want = ArrayD::from_shape_fn(IxDyn(&[3, 4, 6, 4]), |ix| {
        (0..5)
            .map(|k| av[[ix[0], ix[1], k]] * bv[[k, ix[2], ix[3]]])
            .sum()
    });
    assert_close("tensordot over one axis", &got, &want);
    // No axes: the outer product.
    let v = s.arange(3, 2).astype(DType::F64).unwrap();
    let outer = values(&v.tensordot(&v, &[], &[]).unwrap()).await;
    assert_eq!(outer[[2, 1]], 2.0);
    let err = a.tensordot(&b, &[2], &[1]).unwrap_err().to_string();
    assert!(
        err.contains(
            "axis 2 of the first array (length 5) does not match axis 1 of the second (length 6)"
        ),
        "{err}"
    );
    let err = a.tensordot(&b, &[0, 0], &[0, 1]).unwrap_err().to_string();
    assert!(err.contains("appears twice"), "{err}");

    // Labeled: contract by dimension name; coordinates of the other dimensions stay.
    let da = shoal::DataArray::new(a, &["x", "y", "z"]).unwrap();
    let db = shoal::DataArray::new(b, &["z", "w", "y"])
        .unwrap()
        .with_coord("w", "w", shoal::Index::I64((10..16).collect()))
        .unwrap();
    let d = da.dot(&db, &["y", "z"]).unwrap();
    assert_eq!(d.dims(), vec!["x", "w"]);
    assert_eq!(d.index("w"), Some(&shoal::Index::I64((10..16).collect())));
    let want = ArrayD::from_shape_fn(IxDyn(&[3, 6]), |ix| {
        let mut sum = 0.0;
        for j in 0..4 {
            for k in 0..5 {
                sum += av[[ix[0], j, k]] * bv[[k, ix[1], j]];
            }
        }
        sum
    });
    assert_close("dot", &d.to_ndarray::<f64>().await.unwrap(), &want);
    let err = da.dot(&db, &["z"]).unwrap_err().to_string();
    assert!(err.contains("dimension 'y' is in both arrays"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_are_sized_by_the_workers_memory() {
    let limited = |bytes: usize| {
        Session::builder()
            .workers(2)
            .memory_limit(bytes)
            .option("shoal.array.reduce_fan_in", "64")
            .unwrap()
            .build()
            .unwrap()
    };
    let s = limited(4 << 20);
    // Every (400 x 20) chunk of the rechunked array needs a piece of all 20 (20 x 400)
    // chunks of x, 1.25 MiB in all, more than a quarter of a worker's 4 MiB: a stage
    // cuts x's chunks into those pieces and the rechunk gathers only them.
    let x = s.random_uniform(&[400, 400], &[20, 400], 3).unwrap();
    let y = x.rechunk(&[400, 20]).unwrap();
    assert_eq!(y.graph_size().unwrap(), (2, 20 + 20));
    let whole = s
        .random_uniform(&[400, 400], &[400, 400], 3)
        .unwrap()
        .collect_ndarray::<f64>()
        .await
        .unwrap();
    assert_close("rechunked by pieces", &values(&y).await, &whole);
    let unlimited = limited(1 << 30);
    let y = unlimited
        .random_uniform(&[400, 400], &[20, 400], 3)
        .unwrap()
        .rechunk(&[400, 20])
        .unwrap();
    assert_eq!(
        y.graph_size().unwrap(),
        (1, 20),
        "gathered whole when it fits"
    );

    // Partial means of (10 x 4000) chunks are 62.5 KiB of states each: a combine task
    // merges 16 of them under the limit (fan-in 64 otherwise), so 40 chunks take two
    // combine steps instead of one.
    let mean = |s: &Session| {
        s.random_uniform(&[400, 4000], &[10, 4000], 4)
            .unwrap()
            .mean(0)
            .unwrap()
    };
    assert_eq!(mean(&s).graph_size().unwrap().0, 3);
    assert_eq!(mean(&unlimited).graph_size().unwrap().0, 2);
    assert_close(
        "mean with a bounded fan-in",
        &values(&mean(&s)).await,
        &values(&mean(&unlimited)).await,
    );

    // A matrix product multiplies panels of up to a quarter of a worker's memory: 1 MiB
    // of (100 x k) and (k x 100) float64 panels holds 6 of the 20 blocks of k, so the
    // contracted axis runs in 4 pieces whose products are summed (one run otherwise).
    let product = |s: &Session| {
        let a = s.random_uniform(&[200, 2000], &[100, 100], 6).unwrap();
        let b = s.random_uniform(&[2000, 200], &[100, 100], 7).unwrap();
        a.matmul(&b).unwrap()
    };
    let (split, whole) = (product(&s), product(&unlimited));
    assert_eq!(whole.graph_size().unwrap(), (1, 4));
    assert!(split.graph_size().unwrap().0 > 1);
    assert_close(
        "matmul in runs",
        &values(&split).await,
        &values(&whole).await,
    );

    // A chunk that cannot fit at all is refused when the job is planned.
    let tight = limited(1 << 20);
    let big = tight.random_uniform(&[400, 400], &[400, 400], 5).unwrap();
    let err = big
        .add(1.0)
        .unwrap()
        .sum(None)
        .unwrap()
        .item()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("chunk of shape [400, 400]") && text.contains("memory limit of 1.0 MiB"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_partials_reduce_runs_of_chunks_one_at_a_time() {
    let s = Session::builder()
        .workers(2)
        .option("shoal.array.reduce_fan_in", "4")
        .unwrap()
        .build()
        .unwrap();
    // 3 interleaved groups over 50 chunks of 4 rows: a state for every group per chunk
    // is larger than the chunk, so each partial task reduces a run of 4 chunks.
    let x = s.random_uniform(&[200, 17], &[4, 5], 11).unwrap();
    let xv = s
        .random_uniform(&[200, 17], &[200, 17], 11)
        .unwrap()
        .collect_ndarray::<f64>()
        .await
        .unwrap();
    let labels: Vec<usize> = (0..200).map(|i| i % 3).collect();
    for op in [shoal::ReduceOp::Mean, shoal::ReduceOp::Std { ddof: 0 }] {
        let reduced = x.group_reduce(op, 0, labels.clone(), 3, true).unwrap();
        let graph = shoal_planner::array::lower(reduced.expr(), s.array_limits()).unwrap();
        let program = shoal_planner::array::lower::stage_program(&graph.stages[0]).unwrap();
        let runs = program.partial_runs(0).unwrap().expect("a run of chunks");
        assert_eq!(runs.1.len(), 4);
        let mut want = ArrayD::zeros(IxDyn(&[3, 17]));
        for g in 0..3 {
            for j in 0..17 {
                let v: Vec<f64> = (0..200)
                    .filter(|i| i % 3 == g)
                    .map(|i| xv[[i, j]])
                    .collect();
                let n = v.len() as f64;
                let m = v.iter().sum::<f64>() / n;
                want[[g, j]] = match op {
                    shoal::ReduceOp::Mean => m,
                    _ => (v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / n).sqrt(),
                };
            }
        }
        assert_close(op.name(), &values(&reduced).await, &want);
    }
}
