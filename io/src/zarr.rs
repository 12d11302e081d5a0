//! Zarr v2 and v3 stores through the `zarrs` crate over the session's object stores:
//! listing a group's arrays with their metadata, reading a chunk as an Arrow array
//! (missing chunks read as the fill value), creating groups and arrays with the common
//! codecs, writing chunks, and committing a store written under a temporary name.
//!
//! A store is named by a URL string (`file:///abs/cube.zarr`, `s3://bucket/cube.zarr`);
//! an array inside it by its node path (`/t2m`). Array metadata travels as JSON, so a task
//! on any worker rebuilds the array without reading metadata again.

use std::sync::Arc;

use datafusion::arrow::array::{Array as _, AsArray};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array,
    Int64Array, TimestampNanosecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::common::{DataFusionError, Result, exec_err, plan_err};
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{Map, Value};
use url::Url;
use zarrs::array::codec::{
    BloscCodec, BloscCompressionLevel, BloscCompressor, BloscShuffleMode, GzipCodec, ZstdCodec,
};
use zarrs::array::{Array, ArrayBuilder, ArrayMetadata, ArrayMetadataOptions, data_type};
use zarrs::group::{Group, GroupBuilder, GroupMetadata};
use zarrs::plugin::ZarrVersion;
use zarrs::storage::AsyncReadableWritableListableStorage;
use zarrs_object_store::AsyncObjectStore;

use crate::location::Location;

type ZArray = Array<dyn zarrs::storage::AsyncReadableWritableListableStorageTraits>;

/// Fetches values of Arrow type `$data_type` with `$get!(T)` (a `Vec<T>`) and wraps them
/// in the matching Arrow array; returns `$unsupported` for other types.
macro_rules! to_arrow {
    ($data_type:expr, $get:ident, $unsupported:expr) => {
        match $data_type {
            DataType::Boolean => Arc::new(BooleanArray::from($get!(bool))) as ArrayRef,
            DataType::Int8 => Arc::new(Int8Array::from($get!(i8))),
            DataType::Int16 => Arc::new(Int16Array::from($get!(i16))),
            DataType::Int32 => Arc::new(Int32Array::from($get!(i32))),
            DataType::Int64 => Arc::new(Int64Array::from($get!(i64))),
            DataType::UInt8 => Arc::new(UInt8Array::from($get!(u8))),
            DataType::UInt16 => Arc::new(UInt16Array::from($get!(u16))),
            DataType::UInt32 => Arc::new(UInt32Array::from($get!(u32))),
            DataType::UInt64 => Arc::new(UInt64Array::from($get!(u64))),
            DataType::Float32 => Arc::new(Float32Array::from($get!(f32))),
            DataType::Float64 => Arc::new(Float64Array::from($get!(f64))),
            DataType::Timestamp(_, _) => Arc::new(TimestampNanosecondArray::from($get!(i64))),
            _ => return $unsupported,
        }
    };
}

/// What a Zarr array holds and how it is laid out.
#[derive(Debug, Clone, PartialEq)]
pub struct ZarrArrayMeta {
    /// Node path inside the store (`/t2m`).
    pub path: String,
    /// Name (the path's last part).
    pub name: String,
    /// Lengths per axis.
    pub shape: Vec<usize>,
    /// Chunk lengths per axis (regular grids only).
    pub chunks: Vec<usize>,
    /// Element type as Arrow names it.
    pub data_type: DataType,
    /// Dimension names (`dimension_names`, xarray's `_ARRAY_DIMENSIONS`, or `dim_0` ...).
    pub dims: Vec<String>,
    /// Attributes, without `_ARRAY_DIMENSIONS`.
    pub attrs: Map<String, Value>,
    /// The Zarr fill value as a number (what missing chunks read as).
    pub fill_value: Option<f64>,
    /// 2 or 3.
    pub format: u8,
    /// The full metadata as JSON, to rebuild the array on a worker.
    pub metadata: String,
}

/// The canonical URL string of a store location: `file:///abs/path` or the remote URL,
/// without a trailing slash.
pub fn store_url(location: &Location) -> Result<String> {
    Ok(match location {
        Location::Local(p) => {
            let abs = std::path::absolute(p)?;
            format!("file://{}", abs.to_string_lossy().trim_end_matches('/'))
        }
        Location::Remote(u) => u.as_str().trim_end_matches('/').to_string(),
    })
}

fn zerr(store: &str, what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!("zarr store {store}: {what}: {e}"))
}

/// The object store and key prefix of a store URL.
fn split_store(env: &RuntimeEnv, store: &str) -> Result<(Arc<dyn ObjectStore>, String)> {
    let url = Url::parse(store).map_err(|e| zerr(store, "bad store URL", e))?;
    let root = datafusion::execution::object_store::ObjectStoreUrl::parse(format!(
        "{}://{}",
        url.scheme(),
        url.authority()
    ))?;
    let os = env.object_store(&root)?;
    Ok((os, url.path().trim_matches('/').to_string()))
}

/// The store at `store` as `zarrs` storage.
pub fn storage(env: &RuntimeEnv, store: &str) -> Result<AsyncReadableWritableListableStorage> {
    let (os, prefix) = split_store(env, store)?;
    let os: Arc<dyn ObjectStore> = if prefix.is_empty() {
        os
    } else {
        Arc::new(PrefixStore::new(os, prefix.as_str()))
    };
    Ok(Arc::new(AsyncObjectStore::new(os)))
}

fn arrow_type(array: &ZArray) -> Option<DataType> {
    let name = array.data_type().name(ZarrVersion::V3)?;
    Some(match name.as_ref() {
        "bool" => DataType::Boolean,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float32" => DataType::Float32,
        "float64" => DataType::Float64,
        "numpy.datetime64" => DataType::Timestamp(TimeUnit::Nanosecond, None),
        _ => return None,
    })
}

fn fill_as_f64(data_type: &DataType, bytes: &[u8]) -> Option<f64> {
    Some(match data_type {
        DataType::Boolean | DataType::UInt8 => f64::from(*bytes.first()?),
        DataType::Int8 => f64::from(i8::from_ne_bytes(bytes.try_into().ok()?)),
        DataType::Int16 => f64::from(i16::from_ne_bytes(bytes.try_into().ok()?)),
        DataType::Int32 => f64::from(i32::from_ne_bytes(bytes.try_into().ok()?)),
        DataType::Int64 | DataType::Timestamp(_, _) => {
            i64::from_ne_bytes(bytes.try_into().ok()?) as f64
        }
        DataType::UInt16 => f64::from(u16::from_ne_bytes(bytes.try_into().ok()?)),
        DataType::UInt32 => f64::from(u32::from_ne_bytes(bytes.try_into().ok()?)),
        DataType::UInt64 => u64::from_ne_bytes(bytes.try_into().ok()?) as f64,
        DataType::Float32 => f64::from(f32::from_ne_bytes(bytes.try_into().ok()?)),
        DataType::Float64 => f64::from_ne_bytes(bytes.try_into().ok()?),
        _ => return None,
    })
}

fn describe(store: &str, path: &str, array: &ZArray) -> Result<ZarrArrayMeta> {
    let name = path.trim_start_matches('/').to_string();
    let what = format!("array '{name}'");
    let data_type = arrow_type(array).ok_or_else(|| {
        zerr(
            store,
            &what,
            format!("data type {} is not supported", array.data_type()),
        )
    })?;
    let shape: Vec<usize> = array.shape().iter().map(|&n| n as usize).collect();
    let chunks: Vec<usize> = match array.chunk_shape(&vec![0; shape.len()]) {
        Ok(c) => c.iter().map(|n| n.get() as usize).collect(),
        Err(e) => return Err(zerr(store, &what, e)),
    };
    let mut attrs = array.attributes().clone();
    let from_attrs: Option<Vec<String>> = attrs.remove("_ARRAY_DIMENSIONS").and_then(|v| {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(String::from))
                .collect()
        })
    });
    attrs.remove("_zarrs");
    let dims = match (array.dimension_names(), from_attrs) {
        (Some(names), _) => names
            .iter()
            .enumerate()
            .map(|(i, n)| n.clone().unwrap_or_else(|| format!("dim_{i}")))
            .collect(),
        (None, Some(names)) if names.len() == shape.len() => names,
        _ => (0..shape.len()).map(|i| format!("dim_{i}")).collect(),
    };
    let (format, metadata) = match array.metadata() {
        m @ ArrayMetadata::V2(_) => (2, serde_json::to_string(m)),
        m @ ArrayMetadata::V3(_) => (3, serde_json::to_string(m)),
    };
    Ok(ZarrArrayMeta {
        path: path.to_string(),
        name,
        shape,
        chunks,
        fill_value: fill_as_f64(&data_type, array.fill_value().as_ne_bytes()),
        data_type,
        dims,
        attrs,
        format,
        metadata: metadata.map_err(|e| zerr(store, &what, e))?,
    })
}

/// The arrays of the group at `store` (or the store itself when it is one array), with
/// the group's attributes.
pub async fn open_group(
    env: &RuntimeEnv,
    store: &str,
) -> Result<(Vec<ZarrArrayMeta>, Map<String, Value>)> {
    let st = storage(env, store)?;
    if let Ok(array) = Array::async_open(st.clone(), "/").await {
        let mut meta = describe(store, "/", &array)?;
        meta.name = store
            .rsplit('/')
            .next()
            .unwrap_or("array")
            .trim_end_matches(".zarr")
            .to_string();
        return Ok((vec![meta], Map::new()));
    }
    let group = Group::async_open(st.clone(), "/")
        .await
        .map_err(|e| zerr(store, "not a Zarr group or array", e))?;
    let attrs = group.attributes().clone();
    let paths = group
        .async_child_array_paths()
        .await
        .map_err(|e| zerr(store, "listing arrays", e))?;
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let path = p.as_str().to_string();
        let array = Array::async_open(st.clone(), &path).await.map_err(|e| {
            zerr(
                store,
                &format!("array '{}'", path.trim_start_matches('/')),
                e,
            )
        })?;
        out.push(describe(store, &path, &array)?);
    }
    Ok((out, attrs))
}

fn rebuild(
    st: AsyncReadableWritableListableStorage,
    store: &str,
    path: &str,
    metadata: &str,
) -> Result<ZArray> {
    let what = format!("array '{}'", path.trim_start_matches('/'));
    let meta: ArrayMetadata = serde_json::from_str(metadata).map_err(|e| zerr(store, &what, e))?;
    Array::new_with_metadata(st, path, meta).map_err(|e| zerr(store, &what, e))
}

/// Chunk `coords` of array `path` (described by `metadata`), as an Arrow array of the
/// array's type in C order. A missing chunk reads as the fill value.
pub async fn read_chunk(
    env: &RuntimeEnv,
    store: &str,
    path: &str,
    metadata: &str,
    coords: &[u64],
) -> Result<ArrayRef> {
    let array = rebuild(storage(env, store)?, store, path, metadata)?;
    let grid = array.chunk_grid_shape();
    if coords.len() != grid.len() || coords.iter().zip(grid).any(|(c, n)| c >= n) {
        return exec_err!(
            "zarr store {store}: array '{}': chunk {coords:?} is outside its grid {grid:?}",
            path.trim_start_matches('/')
        );
    }
    let what = || format!("array '{}' chunk {coords:?}", path.trim_start_matches('/'));
    let data_type =
        arrow_type(&array).ok_or_else(|| zerr(store, &what(), "unsupported data type"))?;
    if data_type != DataType::Boolean {
        // Fixed-width numbers: the decoded bytes become the Arrow buffer as they are
        // (native byte order after the codecs), without a typed copy.
        let bytes = array
            .async_retrieve_chunk::<zarrs::array::ArrayBytes<'static>>(coords)
            .await
            .map_err(|e| zerr(store, &what(), e))?
            .into_fixed()
            .map_err(|e| zerr(store, &what(), e))?
            .into_owned();
        return from_native_bytes(bytes, &data_type);
    }
    macro_rules! get {
        ($t:ty) => {
            array
                .async_retrieve_chunk::<Vec<$t>>(coords)
                .await
                .map_err(|e| zerr(store, &what(), e))?
        };
    }
    let unsupported = || {
        exec_err!(
            "zarr store {store}: {}: type {data_type} is not supported",
            what()
        )
    };
    Ok(to_arrow!(data_type.clone(), get, unsupported()))
}

/// Values of fixed-width type `data_type` from their native-order bytes, reusing the
/// allocation when it is aligned for the type (large allocations are) and copying
/// otherwise.
fn from_native_bytes(bytes: Vec<u8>, data_type: &DataType) -> Result<ArrayRef> {
    use datafusion::arrow::array::{ArrayData, make_array};
    use datafusion::arrow::buffer::Buffer;
    let width = data_type.primitive_width().unwrap_or(1);
    let len = bytes.len() / width;
    let buffer = Buffer::from_vec(bytes);
    let buffer = if buffer.as_ptr().align_offset(width) == 0 {
        buffer
    } else {
        Buffer::from_slice_ref(buffer.as_slice())
    };
    let data = ArrayData::builder(data_type.clone())
        .len(len)
        .add_buffer(buffer)
        .build()?;
    Ok(make_array(data))
}

/// Every value of a (small) array, in C order: coordinates are read this way.
pub async fn read_all(env: &RuntimeEnv, store: &str, meta: &ZarrArrayMeta) -> Result<ArrayRef> {
    let array = rebuild(storage(env, store)?, store, &meta.path, &meta.metadata)?;
    let subset = array.subset_all();
    let what = format!("array '{}'", meta.name);
    macro_rules! get {
        ($t:ty) => {
            array
                .async_retrieve_array_subset::<Vec<$t>>(&subset)
                .await
                .map_err(|e| zerr(store, &what, e))?
        };
    }
    let unsupported = || {
        exec_err!(
            "zarr store {store}: {what}: type {} is not supported",
            meta.data_type
        )
    };
    Ok(to_arrow!(&meta.data_type, get, unsupported()))
}

/// Compression of written chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZarrCodec {
    /// None.
    None,
    /// Zstandard at a level.
    Zstd(i32),
    /// Blosc with lz4 and byte shuffling.
    Blosc,
    /// Gzip at a level.
    Gzip(u32),
    /// Zarr v3 sharding: each chunk is a shard of inner chunks of this many cells per
    /// axis (at most), compressed with zstd.
    Sharded(u64),
}

impl ZarrCodec {
    /// Parses `none`, `zstd`, `zstd:5`, `blosc`, `gzip`, `gzip:6`, `sharded`, `sharded:64`.
    pub fn parse(text: &str) -> Result<Self> {
        let (name, level) = match text.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (text, None),
        };
        let level_of = |default: i64| -> Result<i64> {
            level.map_or(Ok(default), |l| {
                l.parse()
                    .or_else(|_| plan_err!("invalid codec level '{l}' in '{text}'"))
            })
        };
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "none" => Self::None,
            "zstd" => Self::Zstd(level_of(3)? as i32),
            "blosc" => Self::Blosc,
            "gzip" => Self::Gzip(level_of(5)? as u32),
            "sharded" | "sharding" => Self::Sharded(level_of(64)?.max(1) as u64),
            other => {
                return plan_err!(
                    "unknown zarr codec '{other}': use none, zstd, blosc, gzip or sharded"
                );
            }
        })
    }
}

/// An array to create.
#[derive(Debug, Clone)]
pub struct ZarrArraySpec {
    /// Node path (`/t2m`).
    pub path: String,
    /// Lengths per axis.
    pub shape: Vec<usize>,
    /// Chunk lengths per axis.
    pub chunks: Vec<usize>,
    /// Element type.
    pub data_type: DataType,
    /// Dimension names.
    pub dims: Vec<String>,
    /// Attributes.
    pub attrs: Map<String, Value>,
    /// Compression.
    pub codec: ZarrCodec,
    /// 2 or 3.
    pub format: u8,
}

fn v2_dtype(t: &DataType) -> Option<&'static str> {
    Some(match t {
        DataType::Boolean => "|b1",
        DataType::Int8 => "|i1",
        DataType::Int16 => "<i2",
        DataType::Int32 => "<i4",
        DataType::Int64 => "<i8",
        DataType::UInt8 => "|u1",
        DataType::UInt16 => "<u2",
        DataType::UInt32 => "<u4",
        DataType::UInt64 => "<u8",
        DataType::Float32 => "<f4",
        DataType::Float64 => "<f8",
        _ => return None,
    })
}

/// Writes the group metadata of a new store.
pub async fn create_group(
    env: &RuntimeEnv,
    store: &str,
    format: u8,
    attrs: Map<String, Value>,
) -> Result<()> {
    let st = storage(env, store)?;
    let group = if format == 2 {
        Group::new_with_metadata(
            st,
            "/",
            GroupMetadata::V2(zarrs::metadata::v2::GroupMetadataV2::new().with_attributes(attrs)),
        )
    } else {
        GroupBuilder::new().attributes(attrs).build(st, "/")
    }
    .map_err(|e| zerr(store, "creating the group", e))?;
    group
        .async_store_metadata()
        .await
        .map_err(|e| zerr(store, "writing group metadata", e))
}

/// Creates an array (metadata only); returns its metadata JSON for [`write_chunk`].
pub async fn create_array(env: &RuntimeEnv, store: &str, spec: &ZarrArraySpec) -> Result<String> {
    let st = storage(env, store)?;
    let what = format!("array '{}'", spec.path.trim_start_matches('/'));
    let shape: Vec<u64> = spec.shape.iter().map(|&n| n as u64).collect();
    let chunks: Vec<u64> = spec.chunks.iter().map(|&n| n.max(1) as u64).collect();
    let float = matches!(spec.data_type, DataType::Float32 | DataType::Float64);
    let array = if spec.format == 2 {
        let Some(dtype) = v2_dtype(&spec.data_type) else {
            return exec_err!(
                "zarr store {store}: {what}: {} cannot be written as Zarr v2",
                spec.data_type
            );
        };
        let compressor = match spec.codec {
            ZarrCodec::None => Value::Null,
            ZarrCodec::Zstd(level) => serde_json::json!({"id": "zstd", "level": level}),
            ZarrCodec::Blosc => {
                serde_json::json!({"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0})
            }
            ZarrCodec::Gzip(level) => serde_json::json!({"id": "gzip", "level": level}),
            ZarrCodec::Sharded(_) => {
                return exec_err!("zarr store {store}: {what}: sharding needs Zarr v3");
            }
        };
        let mut attrs = spec.attrs.clone();
        attrs.insert("_ARRAY_DIMENSIONS".into(), serde_json::json!(spec.dims));
        let meta = serde_json::json!({
            "zarr_format": 2, "shape": shape, "chunks": chunks, "dtype": dtype,
            // No fill value for integers: readers such as xarray mask cells equal to it,
            // and a written 0 is data (a position, a count), not a missing value.
            "compressor": compressor, "fill_value": if float { Value::from("NaN") } else { Value::Null },
            "order": "C", "filters": null, "dimension_separator": ".", "attributes": attrs,
        });
        let meta: zarrs::array::ArrayMetadataV2 =
            serde_json::from_value(meta).map_err(|e| zerr(store, &what, e))?;
        Array::new_with_metadata(st, &spec.path, ArrayMetadata::V2(meta))
            .map_err(|e| zerr(store, &what, e))?
    } else {
        macro_rules! builder {
            ($dt:expr, $fill:expr) => {
                ArrayBuilder::new(shape.clone(), chunks.clone(), $dt, $fill)
            };
        }
        // Integers fill with their CF `_FillValue` when one is given, as xarray writes them.
        let fill = spec
            .attrs
            .get("_FillValue")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let mut b = match &spec.data_type {
            DataType::Boolean => builder!(data_type::bool(), zarrs::array::FillValue::from(false)),
            DataType::Int8 => builder!(data_type::int8(), fill as i8),
            DataType::Int16 => builder!(data_type::int16(), fill as i16),
            DataType::Int32 => builder!(data_type::int32(), fill as i32),
            DataType::Int64 => builder!(data_type::int64(), fill),
            DataType::UInt8 => builder!(data_type::uint8(), fill as u8),
            DataType::UInt16 => builder!(data_type::uint16(), fill as u16),
            DataType::UInt32 => builder!(data_type::uint32(), fill as u32),
            DataType::UInt64 => builder!(data_type::uint64(), fill as u64),
            DataType::Float32 => builder!(data_type::float32(), f32::NAN),
            DataType::Float64 => builder!(data_type::float64(), f64::NAN),
            other => return exec_err!("zarr store {store}: {what}: {other} cannot be written"),
        };
        match spec.codec {
            ZarrCodec::None => {}
            ZarrCodec::Zstd(level) => {
                b.bytes_to_bytes_codecs(vec![Arc::new(ZstdCodec::new(level, false))]);
            }
            ZarrCodec::Blosc => {
                let level = BloscCompressionLevel::try_from(5u8)
                    .map_err(|e| zerr(store, &what, format!("{e:?}")))?;
                let blosc = BloscCodec::new(
                    BloscCompressor::LZ4,
                    level,
                    None,
                    BloscShuffleMode::Shuffle,
                    Some(spec.data_type.primitive_width().unwrap_or(1)),
                )
                .map_err(|e| zerr(store, &what, e))?;
                b.bytes_to_bytes_codecs(vec![Arc::new(blosc)]);
            }
            ZarrCodec::Gzip(level) => {
                let gzip = GzipCodec::new(level).map_err(|e| zerr(store, &what, e))?;
                b.bytes_to_bytes_codecs(vec![Arc::new(gzip)]);
            }
            ZarrCodec::Sharded(inner) => {
                // Inner chunks must divide the shard: the largest divisor up to `inner`.
                let sub: Vec<u64> = chunks
                    .iter()
                    .map(|&c| (1..=c.min(inner)).rev().find(|d| c % d == 0).unwrap_or(1))
                    .collect();
                b.subchunk_shape(sub);
                b.bytes_to_bytes_codecs(vec![Arc::new(ZstdCodec::new(3, false))]);
            }
        }
        b.dimension_names(Some(spec.dims.clone()));
        b.attributes(spec.attrs.clone());
        b.build(st, &spec.path).map_err(|e| zerr(store, &what, e))?
    };
    array
        .async_store_metadata_opt(
            &ArrayMetadataOptions::default().with_include_zarrs_metadata(false),
        )
        .await
        .map_err(|e| zerr(store, &what, e))?;
    serde_json::to_string(array.metadata()).map_err(|e| zerr(store, &what, e))
}

/// Writes chunk `coords` of array `path` from `values` (C order, the array's type; the
/// chunk's full shape, edge chunks included).
pub async fn write_chunk(
    env: &RuntimeEnv,
    store: &str,
    path: &str,
    metadata: &str,
    coords: &[u64],
    values: &ArrayRef,
) -> Result<()> {
    let array = rebuild(storage(env, store)?, store, path, metadata)?;
    let what = format!("array '{}' chunk {coords:?}", path.trim_start_matches('/'));
    // Edge chunks hold only the cells inside the array.
    let region: Vec<std::ops::Range<u64>> = array
        .chunk_subset_bounded(coords)
        .map_err(|e| zerr(store, &what, e))?
        .to_ranges();
    macro_rules! put {
        ($t:ty, $cast:ident) => {{
            let v: Vec<$t> = values.as_primitive::<$cast>().values().to_vec();
            array
                .async_store_array_subset(&region, v)
                .await
                .map_err(|e| zerr(store, &what, e))?
        }};
    }
    match values.data_type() {
        DataType::Boolean => {
            let v: Vec<bool> = values
                .as_boolean()
                .iter()
                .map(|b| b.unwrap_or(false))
                .collect();
            array
                .async_store_array_subset(&region, v)
                .await
                .map_err(|e| zerr(store, &what, e))?
        }
        DataType::Int8 => put!(i8, Int8Type),
        DataType::Int16 => put!(i16, Int16Type),
        DataType::Int32 => put!(i32, Int32Type),
        DataType::Int64 => put!(i64, Int64Type),
        DataType::UInt8 => put!(u8, UInt8Type),
        DataType::UInt16 => put!(u16, UInt16Type),
        DataType::UInt32 => put!(u32, UInt32Type),
        DataType::UInt64 => put!(u64, UInt64Type),
        DataType::Float32 => put!(f32, Float32Type),
        DataType::Float64 => put!(f64, Float64Type),
        other => return exec_err!("zarr store {store}: {what}: {other} cannot be written"),
    }
    Ok(())
}

/// Moves a store written at `temp` to `target` (which must not exist). Local stores
/// move with one directory rename; object stores object by object, and a failure part
/// way names what is left where.
pub async fn commit(env: &RuntimeEnv, temp: &str, target: &str) -> Result<()> {
    if let (Some(from), Some(to)) = (temp.strip_prefix("file://"), target.strip_prefix("file://")) {
        return std::fs::rename(from, to).map_err(|e| {
            DataFusionError::Execution(format!(
                "zarr store {target}: cannot move the finished store from {from}: {e}"
            ))
        });
    }
    let (os, from_prefix) = split_store(env, temp)?;
    let (_, to_prefix) = split_store(env, target)?;
    use futures::TryStreamExt;
    let objects: Vec<_> = os
        .list(Some(&object_store::path::Path::from(from_prefix.as_str())))
        .try_collect()
        .await
        .map_err(|e| zerr(temp, "listing the written store", e))?;
    for (i, o) in objects.iter().enumerate() {
        let rest = o.location.as_ref()[from_prefix.len()..].trim_start_matches('/');
        let to = object_store::path::Path::from(format!("{to_prefix}/{rest}"));
        if let Err(e) = os.rename(&o.location, &to).await {
            return exec_err!(
                "zarr store {target}: moving the written store failed after {i} of {} objects ({e}); the rest is still under {temp}",
                objects.len()
            );
        }
    }
    Ok(())
}

/// True when something exists at the store URL.
pub async fn exists(env: &RuntimeEnv, store: &str) -> Result<bool> {
    if let Some(path) = store.strip_prefix("file://") {
        return Ok(std::path::Path::new(path).exists());
    }
    let (os, prefix) = split_store(env, store)?;
    use futures::StreamExt;
    let mut listing = os.list(Some(&object_store::path::Path::from(prefix.as_str())));
    Ok(listing.next().await.is_some())
}
