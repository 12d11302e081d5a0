//! The system's OpenBLAS for matrix products, when one is installed, as NumPy uses it.
//!
//! `libopenblas.so.0` (or the library `SHOAL_BLAS` names; `SHOAL_BLAS=off` turns this
//! off) is loaded at the first matrix product and told to use one thread per call: tasks
//! already run one per core. Without it, products run on the `gemm` crate's kernels
//! ([`crate::gemm`]). Only the CBLAS `?gemm` entry points are used.

use std::ffi::{CString, c_char, c_int, c_void};
use std::sync::OnceLock;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

/// The CBLAS `?gemm` signature for element type `$t`: order, transposes, m, n, k, alpha,
/// a, lda, b, ldb, beta, c, ldc.
macro_rules! gemm_signature {
    ($t:ty) => {
        unsafe extern "C" fn(
            c_int, c_int, c_int, c_int, c_int, c_int,
            $t, *const $t, c_int, *const $t, c_int, $t, *mut $t, c_int,
        )
    };
}

type Dgemm = gemm_signature!(f64);
type Sgemm = gemm_signature!(f32);

/// The loaded library's entry points (the library stays loaded for the process).
#[derive(Debug, Clone, Copy)]
pub struct Blas {
    dgemm: Dgemm,
    sgemm: Sgemm,
    /// Where it was loaded from.
    pub name: &'static str,
}

static BLAS: OnceLock<Option<Blas>> = OnceLock::new();

/// The system BLAS, loaded on first use; `None` when there is none (or `SHOAL_BLAS=off`).
pub fn blas() -> Option<Blas> {
    *BLAS.get_or_init(load)
}

#[allow(unsafe_code)]
fn load() -> Option<Blas> {
    let wanted = std::env::var("SHOAL_BLAS").ok();
    let names: Vec<String> = match wanted.as_deref() {
        Some("off") | Some("0") | Some("") => return None,
        Some(path) => vec![path.to_string()],
        None => vec!["libopenblas.so.0".into(), "libopenblas.so".into()],
    };
    for name in names {
        let Ok(c_name) = CString::new(name.clone()) else {
            continue;
        };
        // SAFETY: dlopen with a valid C string; the handle is never closed, so symbols
        // taken from it stay valid for the life of the process.
        let handle = unsafe { libc::dlopen(c_name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            continue;
        }
        let symbol = |s: &[u8]| -> *mut c_void {
            // SAFETY: `s` is a NUL-terminated name and `handle` an open library.
            unsafe { libc::dlsym(handle, s.as_ptr().cast::<c_char>()) }
        };
        let (d, s) = (symbol(b"cblas_dgemm\0"), symbol(b"cblas_sgemm\0"));
        if d.is_null() || s.is_null() {
            continue;
        }
        let threads = symbol(b"openblas_set_num_threads\0");
        // SAFETY: the symbols are the CBLAS functions (and OpenBLAS's thread setter) with
        // the C signatures declared above.
        let blas = unsafe {
            if !threads.is_null() {
                let set: unsafe extern "C" fn(c_int) = std::mem::transmute(threads);
                set(1);
            }
            Blas {
                dgemm: std::mem::transmute::<*mut c_void, Dgemm>(d),
                sgemm: std::mem::transmute::<*mut c_void, Sgemm>(s),
                name: Box::leak(name.into_boxed_str()),
            }
        };
        return Some(blas);
    }
    None
}

/// How a 2-d view is laid out for BLAS: rows contiguous (leading dimension = row stride)
/// or columns contiguous (the transpose of such a matrix).
fn layout(rows: usize, cols: usize, strides: &[isize]) -> Option<(c_int, c_int)> {
    let ld = |s: isize, min: usize| -> Option<c_int> {
        let s = usize::try_from(s).ok()?;
        (s >= min.max(1)).then(|| c_int::try_from(s).ok()).flatten()
    };
    match strides {
        [r, 1] => Some((NO_TRANS, ld(*r, cols)?)),
        [1, c] if rows > 1 || cols > 1 => Some((TRANS, ld(*c, rows)?)),
        _ => None,
    }
}

macro_rules! gemm_fn {
    ($name:ident, $t:ty, $field:ident) => {
        /// `c += a @ b` (`c` row-major and contiguous); `false` when a view's layout does
        /// not suit BLAS (the caller multiplies another way).
        #[allow(unsafe_code)]
        pub fn $name(
            &self,
            a: &ndarray::ArrayView2<'_, $t>,
            b: &ndarray::ArrayView2<'_, $t>,
            c: &mut ndarray::Array2<$t>,
        ) -> bool {
            let ((m, k), (k2, n)) = (a.dim(), b.dim());
            if k != k2 || c.dim() != (m, n) || !c.is_standard_layout() || m == 0 || n == 0 {
                return false;
            }
            let (Some((ta, lda)), Some((tb, ldb))) =
                (layout(m, k, a.strides()), layout(k, n, b.strides()))
            else {
                return false;
            };
            let (Ok(mi), Ok(ni), Ok(ki)) =
                (c_int::try_from(m), c_int::try_from(n), c_int::try_from(k))
            else {
                return false;
            };
            // SAFETY: the pointers address views of the stated shapes and strides (checked
            // above), `c` is a contiguous m x n matrix we hold mutably, and the function is
            // the CBLAS routine for this element type.
            unsafe {
                (self.$field)(
                    ROW_MAJOR,
                    ta,
                    tb,
                    mi,
                    ni,
                    ki,
                    1.0,
                    a.as_ptr(),
                    lda,
                    b.as_ptr(),
                    ldb,
                    1.0,
                    c.as_mut_ptr(),
                    ni,
                );
            }
            true
        }
    };
}

impl Blas {
    gemm_fn!(dgemm_add, f64, dgemm);
    gemm_fn!(sgemm_add, f32, sgemm);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, s};

    #[test]
    fn layouts_map_to_cblas_transposes() {
        // Rows contiguous: no transpose, leading dimension the row stride.
        assert_eq!(layout(3, 4, &[4, 1]), Some((NO_TRANS, 4)));
        assert_eq!(layout(3, 4, &[10, 1]), Some((NO_TRANS, 10)));
        // Columns contiguous: the transpose of a row-major matrix.
        assert_eq!(layout(3, 4, &[1, 3]), Some((TRANS, 3)));
        // Overlapping rows, steps and negative strides have no CBLAS layout.
        assert_eq!(layout(3, 4, &[2, 1]), None);
        assert_eq!(layout(3, 4, &[8, 2]), None);
        assert_eq!(layout(3, 4, &[-4, 1]), None);
    }

    #[test]
    fn products_match_ndarray_in_every_layout() {
        let Some(blas) = blas() else {
            assert!(
                std::env::var("SHOAL_EXPECT_BLAS").is_err(),
                "SHOAL_EXPECT_BLAS is set but no BLAS library loads"
            );
            return;
        };
        let a = Array2::from_shape_fn((7, 9), |(i, j)| (i * 9 + j) as f64 * 0.5 - 3.0);
        let b = Array2::from_shape_fn((9, 5), |(i, j)| (i as f64 - j as f64) * 0.25);
        let bt = b.t().to_owned();
        let wide = Array2::from_shape_fn((9, 12), |(i, j)| if j < 5 { b[[i, j]] } else { 99.0 });
        // Straight, transposed storage, and a view into a wider matrix (ld > columns).
        for (name, bv) in [
            ("straight", b.view()),
            ("transposed", bt.t()),
            ("strided rows", wide.slice(s![.., ..5])),
        ] {
            let mut c = Array2::<f64>::ones((7, 5));
            assert!(blas.dgemm_add(&a.view(), &bv, &mut c), "{name}");
            let want = a.dot(&b) + 1.0;
            for (g, w) in c.iter().zip(&want) {
                assert!((g - w).abs() < 1e-9, "{name}: {g} vs {w}");
            }
        }
        // A transposed left operand.
        let at = a.t().to_owned();
        let mut c = Array2::<f64>::zeros((7, 5));
        assert!(blas.dgemm_add(&at.t(), &b.view(), &mut c));
        assert!((c[[6, 4]] - a.dot(&b)[[6, 4]]).abs() < 1e-9);
        let af = a.mapv(|v| v as f32);
        let bf = b.mapv(|v| v as f32);
        let mut cf = Array2::<f32>::zeros((7, 5));
        assert!(blas.sgemm_add(&af.view(), &bf.view(), &mut cf));
        assert!((cf[[3, 2]] - af.dot(&bf)[[3, 2]]).abs() < 1e-3);
        // A stepped view has no BLAS layout: the caller multiplies it another way.
        let stepped = wide.slice(s![.., ..;2]);
        let mut c = Array2::<f64>::zeros((7, 6));
        assert!(!blas.dgemm_add(&a.view(), &stepped, &mut c));
    }
}
