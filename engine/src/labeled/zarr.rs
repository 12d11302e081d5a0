//! Zarr stores as Datasets, with xarray's conventions: the group opens as the planner's
//! [`ZarrGroup`] (dimension names from `dimension_names` or `_ARRAY_DIMENSIONS`,
//! dimension coordinates read eagerly, CF decoding of `units: "days since ..."` times,
//! `scale_factor`/`add_offset` and `_FillValue` to NaN). Writes go to a temporary name
//! and are moved into place only once complete.

use datafusion::arrow::array::{Array as _, ArrayRef};
pub use shoal_io::zarr::ZarrCodec;
use shoal_io::zarr::{self as store_io, ZarrArraySpec};
use shoal_planner::array::{DType, ZarrGroup, expr};

use super::dataarray::{Attrs, DataArray};
use super::dataset::Dataset;
use super::index::Index;
use crate::array::Array;
use crate::error::{Error, Result};
use crate::session::Session;

/// How [`Dataset::to_zarr_with`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZarrOptions {
    /// Zarr format: 2 or 3.
    pub format: u8,
    /// Chunk compression.
    pub codec: ZarrCodec,
}

impl Default for ZarrOptions {
    fn default() -> Self {
        Self {
            format: 3,
            codec: ZarrCodec::Zstd(3),
        }
    }
}

impl Session {
    /// Opens a Zarr group (v2 or v3; a path or object-store URL) as a lazy [`Dataset`].
    /// Dimension coordinates are read now; data variables chunk by chunk when computed.
    pub fn open_zarr(&self, path: &str) -> Result<Dataset> {
        let env = self.context().runtime_env();
        let path = path.to_string();
        let what = format!("reading '{path}'");
        let group = self.block_on(&what, async move { ZarrGroup::open(&env, &path).await })?;
        let indexes = group
            .coords
            .iter()
            .map(|(dim, column)| Ok((dim.as_str(), Index::from_column(column, dim)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut ds = Dataset::new().with_attrs(group.attrs);
        for v in group.vars {
            let dim_names: Vec<&str> = v.dims.iter().map(String::as_str).collect();
            let mut var = DataArray::new(self.array(v.values), &dim_names)?.with_attrs(v.attrs);
            for dim in &v.dims {
                if let Some((_, index)) = indexes.iter().find(|(n, _)| n == dim) {
                    var = var.with_coord(dim, dim, index.clone())?;
                }
            }
            ds = ds.with_var(&v.name, var)?;
        }
        Ok(ds)
    }
}

/// A sibling name to write a store under until it is complete.
fn temporary(store: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{store}.tmp-{}-{nanos}", std::process::id())
}

impl Dataset {
    /// Writes the dataset as a Zarr v3 group with zstd chunks (see [`Self::to_zarr_with`]).
    pub async fn to_zarr(&self, path: &str) -> Result<()> {
        self.to_zarr_with(path, ZarrOptions::default()).await
    }

    /// Writes the dataset as a Zarr group: one array per variable chunked as the
    /// variable is (irregular chunkings are made regular first), dimension coordinates as
    /// 1-d arrays (datetimes CF-encoded). Nothing appears under `path` until every chunk
    /// is written; an existing `path` is refused.
    pub async fn to_zarr_with(&self, path: &str, options: ZarrOptions) -> Result<()> {
        let Some((_, first)) = self.vars().first() else {
            return Err(Error::input("the dataset has no variables to write"));
        };
        let session = first.data().session().clone();
        let location = shoal_io::Location::parse(path)?;
        let target = store_io::store_url(&location)?;
        let env = session.context().runtime_env();
        if store_io::exists(&env, &target).await? {
            return Err(Error::input(format!(
                "{path} already exists; remove it or write elsewhere"
            )));
        }
        let temp = temporary(&target);
        let written = self.write_store(&session, &temp, options).await;
        let result = match written {
            Ok(()) => store_io::commit(&env, &temp, &target)
                .await
                .map_err(Error::from),
            Err(e) => Err(e),
        };
        if result.is_err()
            && let Some(dir) = temp.strip_prefix("file://")
        {
            let _ = std::fs::remove_dir_all(dir);
        }
        result
    }

    async fn write_store(
        &self,
        session: &Session,
        store: &str,
        options: ZarrOptions,
    ) -> Result<()> {
        let env = session.context().runtime_env();
        store_io::create_group(&env, store, options.format, self.attrs().clone()).await?;
        // Dimension coordinates, written from memory.
        let mut done: Vec<String> = Vec::new();
        for (_, var) in self.vars() {
            for dim in var.dims() {
                if done.iter().any(|d| d == dim) {
                    continue;
                }
                let Some(index) = var.index(dim) else {
                    continue;
                };
                done.push(dim.to_string());
                let mut attrs = Attrs::new();
                let values: ArrayRef = match index {
                    Index::F64(v) => {
                        std::sync::Arc::new(datafusion::arrow::array::Float64Array::from(v.clone()))
                    }
                    Index::I64(v) => {
                        std::sync::Arc::new(datafusion::arrow::array::Int64Array::from(v.clone()))
                    }
                    Index::DateTime(v) => {
                        attrs.insert("units".into(), "nanoseconds since 1970-01-01".into());
                        attrs.insert("calendar".into(), "proleptic_gregorian".into());
                        std::sync::Arc::new(datafusion::arrow::array::Int64Array::from(v.clone()))
                    }
                    // Zarr writes have no string data type yet: labels are written as
                    // CF flags, positions with `flag_values` and `flag_meanings`, which
                    // `open_zarr` reads back as the labels.
                    Index::Str(labels) => {
                        if let Some(bad) = labels
                            .iter()
                            .find(|l| l.is_empty() || l.contains(char::is_whitespace))
                        {
                            return Err(Error::input(format!(
                                "coordinate '{dim}' has the label '{bad}'; Zarr writes keep string labels as CF flag meanings, which cannot be empty or hold spaces"
                            )));
                        }
                        let positions: Vec<i64> = (0..labels.len() as i64).collect();
                        attrs.insert("flag_values".into(), serde_json::json!(positions));
                        attrs.insert("flag_meanings".into(), labels.join(" ").into());
                        std::sync::Arc::new(datafusion::arrow::array::Int64Array::from(positions))
                    }
                };
                let spec = ZarrArraySpec {
                    path: format!("/{dim}"),
                    shape: vec![values.len()],
                    chunks: vec![values.len().max(1)],
                    data_type: values.data_type().clone(),
                    dims: vec![dim.to_string()],
                    attrs,
                    codec: options.codec,
                    format: options.format,
                };
                let meta = store_io::create_array(&env, store, &spec).await?;
                if !values.is_empty() {
                    store_io::write_chunk(&env, store, &spec.path, &meta, &[0], &values).await?;
                }
            }
        }
        // Data variables, one task per chunk.
        for (name, var) in self.vars() {
            let data = var.data();
            let mut attrs = var.attrs().clone();
            let data = if data.dtype() == DType::DateTime {
                attrs.insert("units".into(), "nanoseconds since 1970-01-01".into());
                data.astype(DType::I64)?
            } else {
                data.clone()
            };
            let chunks: Vec<usize> = data
                .chunks()
                .iter()
                .map(|c| c.first().copied().unwrap_or(1).max(1))
                .collect();
            let spec = ZarrArraySpec {
                path: format!("/{name}"),
                shape: data.shape(),
                chunks: chunks.clone(),
                data_type: data.dtype().arrow_type(),
                dims: var.dims().iter().map(|d| d.to_string()).collect(),
                attrs,
                codec: options.codec,
                format: options.format,
            };
            let meta = store_io::create_array(&env, store, &spec).await?;
            let write = expr::zarr_write(data.expr(), store, &spec.path, &meta, &chunks)?;
            Array::new(session.clone(), write).run_to_end().await?;
        }
        Ok(())
    }
}

impl DataArray {
    /// Writes this array (named by its name, or `values`) with its coordinates as a Zarr
    /// v3 group (see [`Dataset::to_zarr_with`]).
    pub async fn to_zarr(&self, path: &str) -> Result<()> {
        self.to_zarr_with(path, ZarrOptions::default()).await
    }

    /// Writes this array with `options`.
    pub async fn to_zarr_with(&self, path: &str, options: ZarrOptions) -> Result<()> {
        let name = self.name().unwrap_or("values").to_string();
        Dataset::new()
            .with_var(&name, self.clone())?
            .to_zarr_with(path, options)
            .await
    }
}
