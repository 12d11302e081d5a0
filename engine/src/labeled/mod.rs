//! Labeled arrays in the style of xarray: [`DataArray`] (an [`Array`](crate::Array) with
//! named dimensions, coordinates and attributes), [`Dataset`] (named variables sharing
//! dimensions) and grouped reductions ([`GroupBy`]).

mod dataarray;
mod dataset;
mod frames;
mod groupby;
pub mod index;
pub mod pipeline;
mod table;
mod zarr;

pub use dataarray::{Attrs, Coord, DataArray, Dims, LabelSel, Other, Sel};
pub use dataset::Dataset;
pub use groupby::{GroupBy, Rolling};
pub use index::{Index, Label};
pub use pipeline::apply_pipeline;
pub use shoal_planner::array::{CellTable, ZarrTableFactory};
pub(crate) use table::dataset_table;
pub use zarr::{ZarrCodec, ZarrOptions};
