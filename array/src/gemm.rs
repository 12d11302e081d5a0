//! Matrix products without a system BLAS: the `gemm` crate's packed kernels, which pick
//! the widest SIMD the CPU has (SSE, AVX2 and FMA on x86-64; NEON on ARM) at run time, as a BLAS
//! does. One thread per call: tasks already run one per core.

use ndarray::{Array2, ArrayView2};

/// The element types the kernels take.
pub trait Float: Copy + num_traits::One + 'static {}
impl Float for f32 {}
impl Float for f64 {}

/// `c += a @ b`, for views of any strides (transposed, sliced, stepped).
///
/// # Panics
///
/// If the shapes do not make `c`: the caller checks them.
#[allow(unsafe_code)]
pub fn gemm_add<T: Float>(a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>, c: &mut Array2<T>) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(
        k == k2 && c.dim() == (m, n),
        "matrix product of {:?} and {:?} into {:?}",
        a.dim(),
        b.dim(),
        c.dim()
    );
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let (a_s, b_s, c_s) = (a.strides(), b.strides(), c.strides());
    let (c_rs, c_cs) = (c_s[0], c_s[1]);
    let c_ptr = c.as_mut_ptr();
    // SAFETY: each pointer addresses element [0, 0] of a live array or view, and every
    // element reached through it with the given shape and strides lies inside that array
    // (ndarray's invariant for its views); `c` is held mutably and does not overlap `a`
    // or `b`; `T` is f32 or f64, which `gemm` supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c_ptr,
            c_cs,
            c_rs,
            true,
            a.as_ptr(),
            a_s[1],
            a_s[0],
            b.as_ptr(),
            b_s[1],
            b_s[0],
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, s};

    use super::*;

    #[test]
    fn products_match_ndarray_in_every_layout() {
        let a = Array2::from_shape_fn((37, 53), |(i, j)| (i * 53 + j) as f64 * 0.01 - 3.0);
        let b = Array2::from_shape_fn((53, 29), |(i, j)| (i as f64 - j as f64) * 0.25);
        let want = a.dot(&b) + 1.0;
        let bt = b.t().to_owned();
        let wide = Array2::from_shape_fn((53, 70), |(i, j)| if j < 29 { b[[i, j]] } else { 9.0 });
        let stepped_source =
            Array2::from_shape_fn(
                (53, 58),
                |(i, j)| {
                    if j % 2 == 0 { b[[i, j / 2]] } else { -7.0 }
                },
            );
        let flipped_source = Array2::from_shape_fn((53, 29), |(i, j)| b[[52 - i, j]]);
        for (name, bv) in [
            ("straight", b.view()),
            ("transposed", bt.t()),
            ("strided rows", wide.slice(s![.., ..29])),
            ("stepped", stepped_source.slice(s![.., ..;2])),
            ("reversed", flipped_source.slice(s![..;-1, ..])),
        ] {
            let mut c = Array2::<f64>::ones((37, 29));
            gemm_add(&a.view(), &bv, &mut c);
            for (g, w) in c.iter().zip(&want) {
                assert!((g - w).abs() < 1e-9, "{name}: {g} vs {w}");
            }
        }
        let at = a.t().to_owned();
        let mut c = Array2::<f64>::ones((37, 29));
        gemm_add(&at.t(), &b.view(), &mut c);
        for (g, w) in c.iter().zip(&want) {
            assert!((g - w).abs() < 1e-9, "transposed left: {g} vs {w}");
        }
        let (af, bf) = (a.mapv(|v| v as f32), b.mapv(|v| v as f32));
        let mut cf = Array2::<f32>::zeros((37, 29));
        gemm_add(&af.view(), &bf.view(), &mut cf);
        let wf = af.dot(&bf);
        for (g, w) in cf.iter().zip(&wf) {
            assert!((g - w).abs() <= 1e-3 * w.abs().max(1.0), "{g} vs {w}");
        }
        // Empty contractions add nothing.
        let mut c = Array2::<f64>::ones((2, 3));
        let (a0, b0) = (Array2::<f64>::zeros((2, 0)), Array2::<f64>::zeros((0, 3)));
        gemm_add(&a0.view(), &b0.view(), &mut c);
        assert_eq!(c, Array2::<f64>::ones((2, 3)));
    }
}
