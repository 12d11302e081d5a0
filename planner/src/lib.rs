//! `shoal-planner` turns a DataFusion physical plan into Shoal's unit of work, the
//! [`TaskGraph`].
//!
//! ```text
//!  physical plan ──split::split_into_stages──► stages (cut at exchanges)
//!                                                 │  one task per output partition
//!                                                 ▼
//!                     TaskGraph { stages, tasks: Vec<TaskSpec>, outputs }
//! ```
//!
//! Each stage is a plan fragment rooted at a [`ShuffleWriteExec`], whose leaves that read
//! other stages are [`ShuffleReadExec`]s. How batches move between tasks is not this
//! crate's business: both operators talk to a [`ShuffleIo`] that the executor puts into
//! the task's context ([`ShuffleEnv`]). Read [`split::split_into_stages`] first.
//!
//! Arrays take the same road: [`array::lower`] turns an array expression into stages whose
//! plans are [`array::ChunkExec`] (a fused chunk program, one task per output chunk) under
//! the same `ShuffleWriteExec`, so chunk tasks and SQL tasks share one scheduler, result
//! store, transport and plan codec. (DESIGN.md sketches a separate `TaskKind::Chunk`; a
//! DataFusion operator gave the same thing without a second task kind.)

pub mod array;
pub mod codec;
pub mod config;
pub mod distribute;
pub mod graph;
pub mod resources;
pub mod scan;
pub mod shuffle;
pub mod split;

pub use codec::{ShoalCodec, decode_plan, encode_plan};
pub use config::ShoalConfig;
pub use distribute::independent_partitions;
pub use graph::{
    InputRef, JobId, OutputSpec, Stage, StageId, TaskGraph, TaskId, TaskKind, TaskSpec,
};
pub use resources::Resources;
pub use shuffle::{
    Locations, PartitionKey, ReadMode, ShuffleEnv, ShuffleIo, ShuffleReadExec, ShuffleWriteExec,
    WorkerId,
};
pub use split::split_into_stages;
