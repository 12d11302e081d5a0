//! `shoal-array` computes on N-d chunks: element types and NumPy's promotion rules
//! ([`dtype`]), the chunk itself ([`NdChunk`], a strided view over an Arrow buffer so it
//! moves between tasks as a record batch), chunk grids ([`grid`]), elementwise, reduction
//! and contraction kernels ([`kernels`], [`reduce`], with the system BLAS when there is
//! one: [`blas`]) and the evaluation of a fused chunk program ([`program`]) whose nodes
//! are [`ops`].
//!
//! ```text
//!  ChunkProgram { nodes: [Op …] } + input chunks ─► evaluate regions node by node
//!     (kernels, partial reductions, contractions) ─► output chunk (NdChunk ─► batch)
//! ```
//!
//! It knows nothing of plans, stages or tasks: the planner (`shoal-planner`) builds
//! programs from array expressions and runs them inside its `ChunkExec` operator.

pub mod blas;
pub mod chunk;
pub mod dtype;
pub mod footprint;
pub mod gemm;
pub mod grid;
pub mod kernels;
mod lane;
pub mod ops;
pub mod program;
pub mod reduce;
pub mod runs;

pub use chunk::NdChunk;
pub use dtype::{DType, Native, Scalar};
pub use grid::{ChunkGrid, Region};
pub use ops::{BinaryOp, Op, ReduceOp, UnaryOp};
pub use program::{ChunkProgram, assemble};
