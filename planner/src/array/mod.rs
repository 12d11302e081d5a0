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
//! tasks as a batch (shape in the schema metadata) and slices without copying. Chunks,
//! their kernels and the evaluation of a chunk program live in `shoal-array`; this
//! module builds the programs and runs them as operators.

pub mod exec;
pub mod expr;
pub mod lower;
pub mod provider;
pub mod table;
pub mod zarr;

pub use exec::ChunkExec;
pub use expr::{ArrayExpr, ArrayNode, AxisSlice};
pub use lower::{ArrayLimits, lower};
pub use provider::CellTable;
pub use shoal_array::{
    BinaryOp, ChunkGrid, ChunkProgram, DType, Native, NdChunk, Op, ReduceOp, Region, Scalar,
    UnaryOp, assemble, blas, chunk, dtype, grid, kernels, ops, program, reduce,
};
pub use table::{CellColumn, CellDim, CellScanExec, CellVar};
pub use zarr::{ZarrGroup, ZarrTableFactory, ZarrVariable};
