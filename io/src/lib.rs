//! `shoal-io` owns where data lives and how Shoal finds it.
//!
//! ```text
//!  "s3://b/t/"  "data/t.parquet"  "memory:///x.csv"
//!        │              │                 │
//!        └──── location::Location::parse ─┘        (one spelling for every path)
//!                         │
//!        registry::ShoalObjectStoreRegistry         (object store per scheme+bucket, made on demand)
//!                         │
//!        tables::register_table / tables_in_dir     (Parquet and CSV as DataFusion ListingTables)
//! ```
//!
//! Zarr stores are read and written by [`zarr`] (metadata, chunks, atomic writes) and decoded
//! by the CF conventions in [`cf`] (fill values, scale and offset, times since a date).
//!
//! Start with [`Location`]: every path a user types goes through it, so local paths and URLs
//! behave the same everywhere. Scans, pruning and file splitting are DataFusion's
//! `ListingTable`; this crate only decides which store and which format.

pub mod cf;
pub mod local;
pub mod location;
pub mod registry;
pub mod tables;
pub mod zarr;

pub use location::Location;
pub use registry::ShoalObjectStoreRegistry;
pub use tables::{FileFormatKind, register_table, table_provider, tables_in_dir};
