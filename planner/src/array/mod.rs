//! Chunked N-d arrays: the expression graph users build ([`expr`]), its lowering to
//! stages ([`lower`]) and the operator that runs a stage's fused chunk program
//! ([`ChunkExec`]).
//!
//! ```text
//!  ArrayExpr graph ──lower──► stages of ChunkExec(ChunkProgram), one task per chunk
//!     (expr.rs)                │ elementwise chains, slices, transposes, rechunks fuse
//!                              │ reductions: partial stage ─► combine tree (fan-in)
//!                              ▼
//!  task i: fetch input chunks ─► evaluate regions node by node ─► chunk i as a batch
//! ```
//!
//! A chunk is an [`NdChunk`]: a strided view over an Arrow buffer, so it moves between
//! tasks as a batch (shape in the schema metadata) and slices without copying.

pub mod blas;
pub mod chunk;
pub mod dtype;
pub mod exec;
pub mod expr;
pub mod grid;
pub mod kernels;
pub mod lower;
pub mod ops;
pub mod program;
pub mod reduce;
pub mod table;

pub use chunk::NdChunk;
pub use dtype::{DType, Native, Scalar};
pub use exec::ChunkExec;
pub use expr::{ArrayExpr, ArrayNode, AxisSlice};
pub use grid::{ChunkGrid, Region};
pub use lower::lower;
pub use ops::{BinaryOp, Op, ReduceOp, UnaryOp};
pub use program::{ChunkProgram, assemble};
pub use table::{CellColumn, CellDim, CellScanExec, CellVar};
