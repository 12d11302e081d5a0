//! Zarr stores as Datasets, with xarray's conventions: dimension names from
//! `dimension_names` or `_ARRAY_DIMENSIONS`, dimension coordinates read eagerly, CF
//! decoding (`units: "days since ..."` times, `scale_factor`/`add_offset`, `_FillValue`
//! to NaN). Writes go to a temporary name and are moved into place only once complete.

use datafusion::arrow::array::{Array as _, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::execution::runtime_env::RuntimeEnv;
use serde_json::Value;
use shoal_io::cf::{CF_KEYS, CfEncoding};
pub use shoal_io::zarr::ZarrCodec;
use shoal_io::zarr::{self as store_io, ZarrArrayMeta, ZarrArraySpec};
use shoal_planner::array::{ArrayExpr, BinaryOp, DType, Scalar, expr};

use super::dataarray::{Attrs, DataArray};
use super::dataset::Dataset;
use super::index::{Index, decode_cf_time};
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

fn to_index(values: &ArrayRef, meta: &ZarrArrayMeta) -> Result<Index> {
    let as_f64 = || -> Result<Vec<f64>> {
        let v = datafusion::arrow::compute::cast(values, &DataType::Float64)?;
        Ok(v.as_primitive::<Float64Type>().values().to_vec())
    };
    if let Some(units) = meta.attrs.get("units").and_then(Value::as_str)
        && units.contains(" since ")
    {
        let times = as_f64()?
            .into_iter()
            .map(|v| decode_cf_time(v, units))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                Error::input(format!(
                    "coordinate '{}': cannot decode times in units '{units}'",
                    meta.name
                ))
            })?;
        return Ok(Index::DateTime(times));
    }
    Ok(match values.data_type() {
        DataType::Float32 | DataType::Float64 => Index::F64(as_f64()?),
        DataType::Timestamp(_, _) => {
            let v = datafusion::arrow::compute::cast(values, &DataType::Int64)?;
            Index::DateTime(v.as_primitive::<Int64Type>().values().to_vec())
        }
        _ => {
            let v = datafusion::arrow::compute::cast(values, &DataType::Int64)?;
            Index::I64(v.as_primitive::<Int64Type>().values().to_vec())
        }
    })
}

/// A Zarr group as lazy expressions, before a session wraps them: the data variables
/// (CF-decoded, with their dimensions and attributes), the dimension coordinates and the
/// group's attributes.
pub(crate) struct ZarrContents {
    /// (name, values, dimensions, attributes) of each data variable.
    pub vars: Vec<(String, ArrayExpr, Vec<String>, Attrs)>,
    /// The dimension coordinates read at open time.
    pub indexes: Vec<(String, Index)>,
    /// The group's attributes.
    pub attrs: Attrs,
}

/// Reads the metadata and dimension coordinates of the store at `path`.
pub(crate) async fn load_zarr(env: &RuntimeEnv, path: &str) -> Result<ZarrContents> {
    let location = shoal_io::Location::parse(path)?;
    location.must_exist()?;
    let store = store_io::store_url(&location)?;
    let (arrays, attrs) = store_io::open_group(env, &store).await?;
    let mut indexes = Vec::new();
    for meta in &arrays {
        if meta.shape.len() == 1 && meta.dims[0] == meta.name {
            let values = store_io::read_all(env, &store, meta).await?;
            indexes.push((meta.name.clone(), to_index(&values, meta)?));
        }
    }
    let mut vars = Vec::new();
    for meta in &arrays {
        if indexes.iter().any(|(n, _)| n == &meta.name) {
            continue;
        }
        let mut var_attrs = meta.attrs.clone();
        for key in CF_KEYS {
            var_attrs.remove(*key);
        }
        vars.push((
            meta.name.clone(),
            decode_variable(&store, meta)?,
            meta.dims.clone(),
            var_attrs,
        ));
    }
    Ok(ZarrContents {
        vars,
        indexes,
        attrs,
    })
}

/// One store array as an expression, CF-decoded: `_FillValue` cells become NaN, then
/// `scale_factor` and `add_offset` apply.
fn decode_variable(store: &str, meta: &ZarrArrayMeta) -> Result<ArrayExpr> {
    let dtype = DType::from_arrow(&meta.data_type).ok_or_else(|| {
        Error::input(format!(
            "zarr store {store}: array '{}' has type {}, which arrays cannot hold",
            meta.name, meta.data_type
        ))
    })?;
    let mut data = expr::zarr_read(
        store,
        &meta.path,
        &meta.metadata,
        &meta.shape,
        &meta.chunks,
        dtype,
    )?;
    let CfEncoding {
        fill,
        scale,
        offset,
    } = CfEncoding::of(meta);
    let number = |v: f64, float: DType| expr::full(&[], &[], Scalar::Float(v), float);
    if let Some(fill) = fill.filter(|f| !f.is_nan()) {
        let float = if dtype == DType::F32 && scale.is_none() {
            DType::F32
        } else {
            DType::F64
        };
        let values = expr::cast(&data, float)?;
        let missing = expr::binary(BinaryOp::Eq, &values, &number(fill, float)?)?;
        data = expr::select(&missing, &number(f64::NAN, float)?, &values)?;
    }
    if scale.is_some() || offset.is_some() {
        data = expr::cast(&data, DType::F64)?;
        if let Some(s) = scale {
            data = expr::binary(BinaryOp::Mul, &data, &number(s, DType::F64)?)?;
        }
        if let Some(o) = offset {
            data = expr::binary(BinaryOp::Add, &data, &number(o, DType::F64)?)?;
        }
    }
    Ok(data)
}

impl Session {
    /// Opens a Zarr group (v2 or v3; a path or object-store URL) as a lazy [`Dataset`].
    /// Dimension coordinates are read now; data variables chunk by chunk when computed.
    pub fn open_zarr(&self, path: &str) -> Result<Dataset> {
        let env = self.context().runtime_env();
        let path = path.to_string();
        let contents = self.block_on(async move { load_zarr(&env, &path).await })?;
        let mut ds = Dataset::new().with_attrs(contents.attrs);
        for (name, data, dims, attrs) in contents.vars {
            let dim_names: Vec<&str> = dims.iter().map(String::as_str).collect();
            let mut var = DataArray::new(self.array(data), &dim_names)?.with_attrs(attrs);
            for dim in &dims {
                if let Some((_, index)) = contents.indexes.iter().find(|(n, _)| n == dim) {
                    var = var.with_coord(dim, dim, index.clone())?;
                }
            }
            ds = ds.with_var(&name, var)?;
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
                    Index::Str(_) => {
                        return Err(Error::input(format!(
                            "coordinate '{dim}' holds strings, which Zarr writes do not support yet"
                        )));
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
