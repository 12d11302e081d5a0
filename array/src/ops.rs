//! The operations of the array expression graph, with the dtype each one produces.
//!
//! [`Op`] is generic over how it names its inputs: user-facing expressions hold
//! `Arc<ArrayNode>`s, a stage's [`ChunkProgram`](crate::ChunkProgram) holds indices.

use serde::{Deserialize, Serialize};

use crate::dtype::{DType, Scalar};
use crate::grid::ChunkGrid;

/// Functions of one array, applied cell by cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum UnaryOp {
    Neg,
    Abs,
    Sqrt,
    Square,
    Exp,
    Expm1,
    Log,
    Log1p,
    Log2,
    Log10,
    Sin,
    Cos,
    Tan,
    Arcsin,
    Arccos,
    Arctan,
    Sinh,
    Cosh,
    Tanh,
    Floor,
    Ceil,
    Round,
    Trunc,
    Sign,
    IsNan,
    IsFinite,
    IsInf,
    Not,
}

impl UnaryOp {
    /// Every function, in declaration order.
    pub const ALL: [UnaryOp; 28] = {
        use UnaryOp::*;
        [
            Neg, Abs, Sqrt, Square, Exp, Expm1, Log, Log1p, Log2, Log10, Sin, Cos, Tan, Arcsin,
            Arccos, Arctan, Sinh, Cosh, Tanh, Floor, Ceil, Round, Trunc, Sign, IsNan, IsFinite,
            IsInf, Not,
        ]
    };

    /// The function NumPy calls `name`; `None` for an unknown name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.name() == name)
    }

    /// NumPy's name of the function.
    pub fn name(self) -> &'static str {
        use UnaryOp::*;
        match self {
            Neg => "negative",
            Abs => "abs",
            Sqrt => "sqrt",
            Square => "square",
            Exp => "exp",
            Expm1 => "expm1",
            Log => "log",
            Log1p => "log1p",
            Log2 => "log2",
            Log10 => "log10",
            Sin => "sin",
            Cos => "cos",
            Tan => "tan",
            Arcsin => "arcsin",
            Arccos => "arccos",
            Arctan => "arctan",
            Sinh => "sinh",
            Cosh => "cosh",
            Tanh => "tanh",
            Floor => "floor",
            Ceil => "ceil",
            Round => "round",
            Trunc => "trunc",
            Sign => "sign",
            IsNan => "isnan",
            IsFinite => "isfinite",
            IsInf => "isinf",
            Not => "logical_not",
        }
    }

    /// The result dtype for an input of `dtype`, or `None` when the function does not
    /// apply to it.
    pub fn result(self, dtype: DType) -> Option<DType> {
        use UnaryOp::*;
        match self {
            Not => (dtype == DType::Bool).then_some(DType::Bool),
            IsNan | IsFinite | IsInf => dtype.is_numeric().then_some(DType::Bool),
            Neg | Abs | Square | Sign => dtype.is_numeric().then_some(dtype),
            Floor | Ceil | Round | Trunc => dtype.is_numeric().then_some(dtype),
            _ => dtype.is_numeric().then(|| dtype.float_result()),
        }
    }
}

/// Functions of two arrays, broadcast against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
    Pow,
    Minimum,
    Maximum,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Xor,
}

impl BinaryOp {
    /// The operator's symbol or NumPy name.
    pub fn name(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            FloorDiv => "//",
            Mod => "%",
            Pow => "**",
            Minimum => "minimum",
            Maximum => "maximum",
            Eq => "==",
            Ne => "!=",
            Lt => "<",
            Le => "<=",
            Gt => ">",
            Ge => ">=",
            And => "&",
            Or => "|",
            Xor => "^",
        }
    }

    /// Whether the result is a bool comparison.
    pub fn is_comparison(self) -> bool {
        use BinaryOp::*;
        matches!(self, Eq | Ne | Lt | Le | Gt | Ge)
    }

    /// The dtype both operands are converted to before the operation.
    pub fn compute_type(self, a: DType, b: DType) -> Option<DType> {
        use BinaryOp::*;
        use DType::*;
        match self {
            And | Or | Xor => match a.promote(b)? {
                t if t == Bool || t.is_integer() => Some(t),
                _ => None,
            },
            _ if self.is_comparison() => a.promote(b).or((a == b).then_some(a)),
            Sub if a == DateTime && b == DateTime => Some(I64),
            Add | Sub if a == DateTime && b.is_integer() => Some(I64),
            Add if b == DateTime && a.is_integer() => Some(I64),
            _ => {
                let t = a.promote(b)?;
                match (self, t) {
                    (_, Bool) => None,
                    (Div, t) => Some(t.float_result()),
                    (_, t) => t.is_numeric().then_some(t),
                }
            }
        }
    }

    /// The dtype of the result.
    pub fn result(self, a: DType, b: DType) -> Option<DType> {
        let compute = self.compute_type(a, b)?;
        Some(if self.is_comparison() {
            DType::Bool
        } else if matches!(self, BinaryOp::Add | BinaryOp::Sub)
            && (a == DType::DateTime) != (b == DType::DateTime)
        {
            DType::DateTime
        } else {
            compute
        })
    }
}

/// Reductions over some axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum ReduceOp {
    Sum,
    Prod,
    Mean,
    Min,
    Max,
    /// Variance with `ddof` delta degrees of freedom.
    Var {
        ddof: u32,
    },
    /// Standard deviation with `ddof` delta degrees of freedom.
    Std {
        ddof: u32,
    },
    Count,
    ArgMin,
    ArgMax,
    Any,
    All,
}

impl ReduceOp {
    /// The reduction NumPy calls `name` (`std` and `var` with ddof 0, as NumPy's
    /// defaults); `None` for an unknown name.
    pub fn parse(name: &str) -> Option<Self> {
        use ReduceOp::*;
        Some(match name {
            "sum" => Sum,
            "prod" => Prod,
            "mean" => Mean,
            "min" => Min,
            "max" => Max,
            "var" => Var { ddof: 0 },
            "std" => Std { ddof: 0 },
            "count" => Count,
            "argmin" => ArgMin,
            "argmax" => ArgMax,
            "any" => Any,
            "all" => All,
            _ => return None,
        })
    }

    /// NumPy's name.
    pub fn name(self) -> &'static str {
        use ReduceOp::*;
        match self {
            Sum => "sum",
            Prod => "prod",
            Mean => "mean",
            Min => "min",
            Max => "max",
            Var { .. } => "var",
            Std { .. } => "std",
            Count => "count",
            ArgMin => "argmin",
            ArgMax => "argmax",
            Any => "any",
            All => "all",
        }
    }

    /// The dtype of the result for an input of `dtype`.
    pub fn result(self, dtype: DType) -> Option<DType> {
        use ReduceOp::*;
        match self {
            Sum | Prod => Some(match dtype {
                DType::Bool => DType::I64,
                t if t.is_signed() => DType::I64,
                t if t.is_unsigned() => DType::U64,
                DType::DateTime => return None,
                t => t,
            }),
            Mean | Var { .. } | Std { .. } => dtype.is_numeric().then(|| dtype.float_result()),
            Min | Max => Some(dtype),
            Count | ArgMin | ArgMax => Some(DType::I64),
            Any | All => Some(DType::Bool),
        }
    }
}

/// One operation of the array graph; `I` names an input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op<I> {
    /// Uniform random floats in `[low, high)`, from a counter-based generator: each cell's
    /// value depends only on `seed` and its position, never on the chunking.
    Random {
        /// The seed.
        seed: u64,
        /// Lower bound (inclusive).
        low: f64,
        /// Upper bound (exclusive).
        high: f64,
    },
    /// Every cell is `value`.
    Full {
        /// The value (converted to the node's dtype).
        value: Scalar,
    },
    /// A 1-d array `start + step * i`.
    Arange {
        /// First value.
        start: f64,
        /// Increment.
        step: f64,
    },
    /// Values the program carries (an array built from memory).
    Literal {
        /// Index into the program's literal table.
        id: usize,
        /// How the literal is chunked.
        grid: ChunkGrid,
    },
    /// An array of a Zarr store, read chunk by chunk (`grid` is the store's chunking).
    ZarrRead {
        /// Store URL (`file:///abs/cube.zarr`, `s3://bucket/cube.zarr`).
        store: String,
        /// Node path of the array (`/t2m`).
        path: String,
        /// The array's Zarr metadata as JSON.
        metadata: String,
        /// The store's chunking.
        grid: ChunkGrid,
    },
    /// Writes `x` to a Zarr array, one store chunk per task (a stage root only; `x` is
    /// chunked like the store array).
    ZarrWrite {
        /// The values.
        x: I,
        /// Store URL.
        store: String,
        /// Node path of the array.
        path: String,
        /// The array's Zarr metadata as JSON.
        metadata: String,
    },
    /// The output of an earlier stage of the job (chunk `i` is task `i`'s bucket 0).
    Input {
        /// The stage.
        stage: usize,
        /// How that stage's output is chunked.
        grid: ChunkGrid,
        /// The dtypes of the batch columns (several for partial reductions).
        fields: Vec<DType>,
        /// When that stage cut each of its chunks into the pieces of `grid` (a refinement
        /// of this, its own chunking), one output bucket per piece: its chunking.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        split: Option<ChunkGrid>,
    },
    /// `op(x)`.
    Unary {
        /// The function.
        op: UnaryOp,
        /// Its argument.
        x: I,
    },
    /// `a op b`, broadcast NumPy style (shapes aligned on the right).
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        a: I,
        /// Right operand.
        b: I,
    },
    /// `cond ? a : b`, broadcast.
    Where {
        /// Bool selector.
        cond: I,
        /// Taken where `cond` is true.
        a: I,
        /// Taken elsewhere.
        b: I,
    },
    /// `x` converted to the node's dtype.
    Cast {
        /// The array.
        x: I,
    },
    /// `x[start::step]` along each axis (the node's shape gives the lengths).
    Slice {
        /// The array.
        x: I,
        /// First index per axis.
        starts: Vec<usize>,
        /// Step per axis (at least 1).
        steps: Vec<usize>,
    },
    /// `x.take(indices, axis)`.
    Take {
        /// The array.
        x: I,
        /// The axis indexed.
        axis: usize,
        /// Positions along `axis`, in output order.
        indices: Vec<usize>,
    },
    /// Axis `i` of the result is axis `perm[i]` of `x`.
    Transpose {
        /// The array.
        x: I,
        /// The permutation.
        perm: Vec<usize>,
    },
    /// `x` broadcast to the node's shape (NumPy rules).
    BroadcastTo {
        /// The array.
        x: I,
    },
    /// `x` with length-1 axes inserted at `axes` (positions in the result).
    ExpandDims {
        /// The array.
        x: I,
        /// Where the new axes go, ascending.
        axes: Vec<usize>,
    },
    /// `x` without its length-1 axes `axes`.
    Squeeze {
        /// The array.
        x: I,
        /// The axes dropped, ascending.
        axes: Vec<usize>,
    },
    /// `x` with the node's shape, cells in C order (NumPy's `reshape`).
    Reshape {
        /// The array.
        x: I,
    },
    /// A moving-window reduction along `axis`: cell `i` reduces the `window` cells ending
    /// at `i`, skipping NaN, and is NaN when fewer than `min_periods` values remain.
    Rolling {
        /// The array.
        x: I,
        /// The axis the window moves along.
        axis: usize,
        /// Cells per window.
        window: usize,
        /// The reduction (sum, mean, min, max, std, var or count).
        op: ReduceOp,
        /// Fewest non-NaN values that give a result.
        min_periods: usize,
    },
    /// The inputs joined along `axis`.
    Concat {
        /// The arrays, same dtype, same shape off `axis`.
        xs: Vec<I>,
        /// The axis joined along.
        axis: usize,
    },
    /// `x` with the node's chunking.
    Rechunk {
        /// The array.
        x: I,
    },
    /// Blocks of a matrix product: cell `(i, j, k)` is `a[i, block k] @ b[block k, j]`,
    /// where the blocks are `a`'s chunks along its last axis. Summed over the last axis it
    /// is `a @ b`.
    Contract {
        /// Left matrix `(m, k)`.
        a: I,
        /// Right matrix `(k, n)`.
        b: I,
        /// The blocks along the contracted axis.
        blocks: Vec<usize>,
    },
    /// A reduction of `x` over `axes` (a stage boundary: planned as a tree of stages).
    Reduce {
        /// The array.
        x: I,
        /// The reduction.
        op: ReduceOp,
        /// The axes reduced.
        axes: Vec<usize>,
        /// Keep reduced axes with length 1.
        keepdims: bool,
        /// Skip NaN cells.
        skipna: bool,
        /// Reduce per group along one axis instead (its length becomes the group count).
        group: Option<GroupSpec>,
    },
    /// First step of a reduction inside a stage: per chunk of `x`, partial states with
    /// the reduced axes cut to length 1 (or the final values when `finalize`).
    Partial {
        /// The reduced array.
        x: I,
        /// What is being computed.
        reduce: ReduceSpec,
        /// Chunks of `x` per task along each axis (empty: one): a task reduces a run of
        /// chunks one at a time into one set of states.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        run: Vec<usize>,
    },
    /// Later steps: merges the partial states of groups of chunks along the reduced axes.
    Combine {
        /// An `Input` of partial states.
        x: I,
        /// What is being computed.
        reduce: ReduceSpec,
        /// How many chunks of `x` merge into one, per axis (1 off the reduced axes).
        group: Vec<usize>,
    },
}

/// The parameters of a reduction carried by its partial and combine steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReduceSpec {
    /// The reduction.
    pub op: ReduceOp,
    /// Reduced axes of the input.
    pub axes: Vec<usize>,
    /// A groupby axis: its positions are reduced per group instead of to one cell.
    pub group: Option<GroupSpec>,
    /// Skip NaN cells.
    pub skipna: bool,
    /// Turn states into values (the last step).
    pub finalize: bool,
    /// With `finalize`: keep reduced axes as length 1.
    pub keepdims: bool,
    /// Dtype of the reduced input.
    pub input: DType,
    /// Shape of the reduced input (for arg reductions' positions).
    pub input_shape: Vec<usize>,
}

/// A groupby along one axis: position `i` belongs to group `labels[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// The grouped axis.
    pub axis: usize,
    /// Group of each position along the axis (`0..groups`).
    pub labels: Vec<usize>,
    /// Number of groups.
    pub groups: usize,
    /// Every group lies inside one chunk and groups are in order, so each chunk reduces
    /// its own groups to final values without a combine tree.
    pub blockwise: bool,
}

impl<I> Op<I> {
    /// The inputs, in order.
    pub fn inputs(&self) -> Vec<&I> {
        match self {
            Op::Random { .. }
            | Op::Full { .. }
            | Op::Arange { .. }
            | Op::Literal { .. }
            | Op::ZarrRead { .. }
            | Op::Input { .. } => vec![],
            Op::Unary { x, .. }
            | Op::Cast { x }
            | Op::Slice { x, .. }
            | Op::Take { x, .. }
            | Op::Transpose { x, .. }
            | Op::BroadcastTo { x }
            | Op::ExpandDims { x, .. }
            | Op::Squeeze { x, .. }
            | Op::Rolling { x, .. }
            | Op::Reshape { x }
            | Op::ZarrWrite { x, .. }
            | Op::Rechunk { x }
            | Op::Reduce { x, .. }
            | Op::Partial { x, .. }
            | Op::Combine { x, .. } => vec![x],
            Op::Binary { a, b, .. } | Op::Contract { a, b, .. } => vec![a, b],
            Op::Where { cond, a, b } => vec![cond, a, b],
            Op::Concat { xs, .. } => xs.iter().collect(),
        }
    }

    /// An operation with no inputs, as an operation over any input type; `None` for one
    /// that has inputs.
    fn without_inputs<J>(&self) -> Option<Op<J>> {
        Some(match self {
            Op::Random { seed, low, high } => Op::Random {
                seed: *seed,
                low: *low,
                high: *high,
            },
            Op::Full { value } => Op::Full { value: *value },
            Op::Arange { start, step } => Op::Arange {
                start: *start,
                step: *step,
            },
            Op::Literal { id, grid } => Op::Literal {
                id: *id,
                grid: grid.clone(),
            },
            Op::ZarrRead {
                store,
                path,
                metadata,
                grid,
            } => Op::ZarrRead {
                store: store.clone(),
                path: path.clone(),
                metadata: metadata.clone(),
                grid: grid.clone(),
            },
            Op::Input {
                stage,
                grid,
                fields,
                split,
            } => Op::Input {
                stage: *stage,
                grid: grid.clone(),
                fields: fields.clone(),
                split: split.clone(),
            },
            _ => return None,
        })
    }

    /// The same operation with inputs renamed by `f`.
    pub fn map_inputs<J>(&self, mut f: impl FnMut(&I) -> J) -> Op<J> {
        if let Some(leaf) = self.without_inputs() {
            return leaf;
        }
        match self {
            Op::ZarrWrite {
                x,
                store,
                path,
                metadata,
            } => Op::ZarrWrite {
                x: f(x),
                store: store.clone(),
                path: path.clone(),
                metadata: metadata.clone(),
            },
            Op::Unary { op, x } => Op::Unary { op: *op, x: f(x) },
            Op::Binary { op, a, b } => Op::Binary {
                op: *op,
                a: f(a),
                b: f(b),
            },
            Op::Where { cond, a, b } => Op::Where {
                cond: f(cond),
                a: f(a),
                b: f(b),
            },
            Op::Cast { x } => Op::Cast { x: f(x) },
            Op::Slice { x, starts, steps } => Op::Slice {
                x: f(x),
                starts: starts.clone(),
                steps: steps.clone(),
            },
            Op::Take { x, axis, indices } => Op::Take {
                x: f(x),
                axis: *axis,
                indices: indices.clone(),
            },
            Op::Transpose { x, perm } => Op::Transpose {
                x: f(x),
                perm: perm.clone(),
            },
            Op::BroadcastTo { x } => Op::BroadcastTo { x: f(x) },
            Op::ExpandDims { x, axes } => Op::ExpandDims {
                x: f(x),
                axes: axes.clone(),
            },
            Op::Squeeze { x, axes } => Op::Squeeze {
                x: f(x),
                axes: axes.clone(),
            },
            Op::Reshape { x } => Op::Reshape { x: f(x) },
            Op::Rolling {
                x,
                axis,
                window,
                op,
                min_periods,
            } => Op::Rolling {
                x: f(x),
                axis: *axis,
                window: *window,
                op: *op,
                min_periods: *min_periods,
            },
            Op::Concat { xs, axis } => Op::Concat {
                xs: xs.iter().map(f).collect(),
                axis: *axis,
            },
            Op::Rechunk { x } => Op::Rechunk { x: f(x) },
            Op::Contract { a, b, blocks } => Op::Contract {
                a: f(a),
                b: f(b),
                blocks: blocks.clone(),
            },
            Op::Reduce {
                x,
                op,
                axes,
                keepdims,
                skipna,
                group,
            } => Op::Reduce {
                x: f(x),
                op: *op,
                axes: axes.clone(),
                keepdims: *keepdims,
                skipna: *skipna,
                group: group.clone(),
            },
            Op::Partial { x, reduce, run } => Op::Partial {
                x: f(x),
                reduce: reduce.clone(),
                run: run.clone(),
            },
            Op::Combine { x, reduce, group } => Op::Combine {
                x: f(x),
                reduce: reduce.clone(),
                group: group.clone(),
            },
            Op::Random { .. }
            | Op::Full { .. }
            | Op::Arange { .. }
            | Op::Literal { .. }
            | Op::ZarrRead { .. }
            | Op::Input { .. } => unreachable!("operations without inputs returned above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unary_function_parses_from_its_numpy_name() {
        for op in UnaryOp::ALL {
            assert_eq!(UnaryOp::parse(op.name()), Some(op));
        }
        assert_eq!(UnaryOp::parse("sqrt"), Some(UnaryOp::Sqrt));
        assert_eq!(UnaryOp::parse("negative"), Some(UnaryOp::Neg));
        assert_eq!(UnaryOp::parse("cbrt"), None);
    }
}
