//! The exchange operators and the interface they use to move batches between tasks.
//!
//! A stage's plan ends in [`ShuffleWriteExec`], which runs one partition of its input and
//! hands the bucketed batches to the task's [`ShuffleIo`]. A consuming stage starts from
//! [`ShuffleReadExec`], which fetches the buckets it needs from wherever the producing
//! tasks ran. Both find the `ShuffleIo` in the task context's [`ShuffleEnv`] extension.

mod env;
mod read;
mod write;

pub use env::{
    InputLocations, Locations, Part, PartitionKey, ShuffleEnv, ShuffleIo, WorkerId, shuffle_env,
};
pub use read::{ReadMode, ShuffleReadExec};
pub use write::{ShuffleWriteExec, bucket_bytes, held_bytes, summary_schema};
