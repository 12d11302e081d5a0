//! Cross-crate integration tests, one binary so DataFusion links once.

mod arrays;
mod codec;
mod common;
mod dashboard;
mod dataframe;
mod equivalence;
mod errors;
mod flight;
mod fuzz;
mod http;
mod labeled;
mod pipelined;
mod pruning;
mod runtime;
mod slt;
mod slt_runner;
mod tpch;
mod zarr;
mod zarr_sql;
