//! Folds over one lane of a chunk: the values along its last axis, contiguous or strided
//! (a sliced view such as `x[::2, ::3]` is read in place, never copied). Eight
//! accumulators keep the loops vectorisable; a lane is short enough to stay in cache, so
//! the variance's two passes over it cost one pass over memory.

use num_traits::AsPrimitive;

use crate::dtype::Native;
use crate::kernels::Arith;

/// Where a lane's values are: `len` values from `start`, `step` apart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lane {
    pub start: usize,
    pub len: usize,
    pub step: usize,
}

/// Accumulators per fold: enough independent additions in flight to keep up with memory.
const WIDTH: usize = 8;

/// `f` folded over the lane's values into `WIDTH` accumulators, then `add`ed together.
#[inline(always)]
fn fold_lane<T: Copy, A: Copy>(
    values: &[T],
    lane: Lane,
    zero: A,
    f: impl Fn(A, T) -> A,
    add: impl Fn(A, A) -> A,
) -> A {
    let mut acc = [zero; WIDTH];
    if lane.len == 0 {
        return zero;
    }
    if lane.step == 1 {
        let mut chunks = values[lane.start..lane.start + lane.len].chunks_exact(WIDTH);
        for c in &mut chunks {
            for i in 0..WIDTH {
                acc[i] = f(acc[i], c[i]);
            }
        }
        for &v in chunks.remainder() {
            acc[0] = f(acc[0], v);
        }
    } else {
        let step = lane.step;
        let span = &values[lane.start..=lane.start + (lane.len - 1) * step];
        let whole = lane.len / WIDTH * WIDTH;
        for k in (0..whole).step_by(WIDTH) {
            for i in 0..WIDTH {
                acc[i] = f(acc[i], span[(k + i) * step]);
            }
        }
        for k in whole..lane.len {
            acc[0] = f(acc[0], span[k * step]);
        }
    }
    acc.into_iter().fold(zero, add)
}

/// The lane's sum in accumulator type `A`, NaN skipped when `skipna`.
#[inline]
pub(crate) fn lane_sum<T: Native + AsPrimitive<A>, A: Arith>(
    values: &[T],
    lane: Lane,
    skipna: bool,
) -> A {
    let zero = A::default();
    if skipna {
        let f = |a: A, v: T| if v.is_nan() { a } else { a.add(v.as_()) };
        fold_lane(values, lane, zero, f, A::add)
    } else {
        fold_lane(values, lane, zero, |a: A, v: T| a.add(v.as_()), A::add)
    }
}

/// The lane's sum and how many values it counts (the non-NaN ones when `skipna`).
#[inline]
pub(crate) fn lane_sum_count<T: Native + AsPrimitive<f64>>(
    values: &[T],
    lane: Lane,
    skipna: bool,
) -> (f64, f64) {
    let add = |a: f64, b: f64| a + b;
    let x = |v: T| -> f64 { v.as_() };
    let sum = fold_lane(values, lane, 0.0, |a, v| a + x(v), add);
    // A sum is NaN only when some value is (or infinities cancel): only then count.
    if !(skipna && sum.is_nan()) {
        return (sum, lane.len as f64);
    }
    let real = |v: T| !x(v).is_nan();
    let sum = fold_lane(
        values,
        lane,
        0.0,
        |a, v| if real(v) { a + x(v) } else { a },
        add,
    );
    let count = fold_lane(
        values,
        lane,
        0.0,
        |a, v| a + f64::from(u8::from(real(v))),
        add,
    );
    (sum, count)
}

/// Count, mean and sum of squared deviations from the mean of some values; merged with
/// Chan's formula.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Moments {
    pub count: f64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    /// Adds the values summarised by `other`.
    #[inline]
    pub fn merge(&mut self, other: Moments) {
        if other.count == 0.0 {
            return;
        }
        let total = self.count + other.count;
        let delta = other.mean - self.mean;
        self.mean += delta * other.count / total;
        self.m2 += other.m2 + delta * delta * self.count * other.count / total;
        self.count = total;
    }
}

/// The moments of one lane, by two passes over it (the sum, then the squared deviations
/// from its mean). NaN are skipped when `skipna`; otherwise they make the mean NaN.
#[inline]
pub(crate) fn lane_moments<T: Native + AsPrimitive<f64>>(
    values: &[T],
    lane: Lane,
    skipna: bool,
) -> Moments {
    let (sum, count) = lane_sum_count(values, lane, skipna);
    if count == 0.0 {
        return Moments::default();
    }
    let mean = sum / count;
    let square = |a: f64, v: T| {
        let d = AsPrimitive::<f64>::as_(v) - mean;
        if skipna && d.is_nan() { a } else { a + d * d }
    };
    let m2 = fold_lane(values, lane, 0.0, square, |a, b| a + b);
    Moments { count, mean, m2 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_lanes_read_every_step_th_value() {
        let values: Vec<f64> = (0..40).map(f64::from).collect();
        // 0, 3, 6, …, 36: thirteen values, five of them past the eight-wide loop.
        let lane = Lane {
            start: 0,
            len: 13,
            step: 3,
        };
        assert_eq!(lane_sum::<f64, f64>(&values, lane, false), 234.0);
        let m = lane_moments(&values, lane, false);
        assert_eq!((m.count, m.mean), (13.0, 18.0));
        // Squared deviations of 0, 3, …, 36 from 18: 9 * (sum of k^2 for k in -6..=6).
        assert!((m.m2 - 9.0 * 182.0).abs() < 1e-9);
        let tail = Lane {
            start: 5,
            len: 3,
            step: 1,
        };
        assert_eq!(lane_sum::<f64, f64>(&values, tail, false), 18.0);
    }

    #[test]
    fn skipped_nan_leave_the_count_and_moments_of_the_rest() {
        let mut values: Vec<f32> = (0..20).map(|v| v as f32).collect();
        values[4] = f32::NAN;
        values[10] = f32::NAN;
        let lane = Lane {
            start: 0,
            len: 10,
            step: 2,
        };
        let m = lane_moments(&values, lane, true);
        // 0, 2, 6, 8, 12, 14, 16, 18: eight values, mean 9.5.
        assert_eq!((m.count, m.mean), (8.0, 9.5));
        assert!(lane_moments(&values, lane, false).mean.is_nan());
        let all_nan = Lane {
            start: 4,
            len: 2,
            step: 6,
        };
        assert_eq!(lane_moments(&values, all_nan, true).count, 0.0);
    }

    #[test]
    fn merged_moments_equal_those_of_the_whole() {
        let values: Vec<f64> = (0..50).map(|v| f64::from(v * v % 17)).collect();
        let whole = lane_moments(
            &values,
            Lane {
                start: 0,
                len: 50,
                step: 1,
            },
            false,
        );
        let mut merged = Moments::default();
        for (start, len) in [(0, 20), (20, 25), (45, 5)] {
            merged.merge(lane_moments(
                &values,
                Lane {
                    start,
                    len,
                    step: 1,
                },
                false,
            ));
        }
        assert_eq!(merged.count, whole.count);
        assert!((merged.mean - whole.mean).abs() < 1e-12);
        assert!((merged.m2 - whole.m2).abs() < 1e-9);
    }
}
