//! A Zarr group as lazy arrays: its data variables as expressions that read chunks when
//! computed (CF-decoded the way xarray opens them), its dimension coordinates read at
//! open time, and the same group as a SQL table ([`CellTable`]), which `CREATE EXTERNAL
//! TABLE … STORED AS ZARR` makes through [`ZarrTableFactory`].

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use datafusion::catalog::{Session as CatalogSession, TableProvider, TableProviderFactory};
use datafusion::common::{Result, plan_err};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::CreateExternalTable;
use serde_json::{Map, Value};
use shoal_io::cf::{CF_KEYS, CfEncoding, decode_coordinate};
use shoal_io::zarr::{self as store_io, ZarrArrayMeta};

use super::expr::{self, ArrayExpr};
use super::lower::ArrayLimits;
use super::provider::CellTable;
use super::{BinaryOp, DType, Scalar};
use crate::config::{ShoalConfig, ShoalSettings};

/// A data variable of a Zarr group.
#[derive(Debug, Clone)]
pub struct ZarrVariable {
    /// Its name in the group.
    pub name: String,
    /// Its decoded values, read chunk by chunk when computed.
    pub values: ArrayExpr,
    /// Its dimension names.
    pub dims: Vec<String>,
    /// Its attributes, without the CF encoding ones decoding consumed.
    pub attrs: Map<String, Value>,
}

/// A Zarr group (v2 or v3, on disk or in an object store), opened.
#[derive(Debug, Clone)]
pub struct ZarrGroup {
    /// The data variables: every array that is not a dimension coordinate.
    pub vars: Vec<ZarrVariable>,
    /// The dimension coordinates (1-d arrays named after their dimension), decoded
    /// with [`decode_coordinate`].
    pub coords: Vec<(String, ArrayRef)>,
    /// The group's attributes.
    pub attrs: Map<String, Value>,
}

impl ZarrGroup {
    /// Reads the metadata and the dimension coordinates of the group at `path`.
    pub async fn open(env: &RuntimeEnv, path: &str) -> Result<Self> {
        let location = shoal_io::Location::parse(path)?;
        location.must_exist()?;
        let store = store_io::store_url(&location)?;
        let (arrays, attrs) = store_io::open_group(env, &store).await?;
        let mut coords = Vec::new();
        for meta in &arrays {
            if meta.shape.len() == 1 && meta.dims[0] == meta.name {
                let values = store_io::read_all(env, &store, meta).await?;
                coords.push((meta.name.clone(), decode_coordinate(&values, meta)?));
            }
        }
        let mut vars = Vec::new();
        for meta in &arrays {
            if coords.iter().any(|(name, _)| name == &meta.name) {
                continue;
            }
            let mut attrs = meta.attrs.clone();
            for key in CF_KEYS {
                attrs.remove(*key);
            }
            vars.push(ZarrVariable {
                name: meta.name.clone(),
                values: decode_variable(&store, meta)?,
                dims: meta.dims.clone(),
                attrs,
            });
        }
        Ok(Self {
            vars,
            coords,
            attrs,
        })
    }

    /// The group as a table: a row per cell, a column per dimension and data variable.
    /// `path` names the group in the error a group without data variables gets.
    pub fn into_table(self, path: &str, limits: ArrayLimits) -> Result<CellTable> {
        if self.vars.is_empty() {
            return plan_err!("zarr store {path} has no data variables to read as a table");
        }
        let vars = self
            .vars
            .into_iter()
            .map(|v| (v.name, v.values, v.dims))
            .collect();
        CellTable::try_new(vars, &self.coords, limits)
    }
}

/// One store array as an expression, CF-decoded: `_FillValue` cells become NaN, then
/// `scale_factor` and `add_offset` apply.
fn decode_variable(store: &str, meta: &ZarrArrayMeta) -> Result<ArrayExpr> {
    let Some(dtype) = DType::from_arrow(&meta.data_type) else {
        return plan_err!(
            "zarr store {store}: array '{}' has type {}, which arrays cannot hold",
            meta.name,
            meta.data_type
        );
    };
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

/// `CREATE EXTERNAL TABLE … STORED AS ZARR LOCATION '…'`: the group as a [`CellTable`].
#[derive(Debug, Default)]
pub struct ZarrTableFactory;

#[async_trait]
impl TableProviderFactory for ZarrTableFactory {
    async fn create(
        &self,
        state: &dyn CatalogSession,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let limits = match state.config_options().extensions.get::<ShoalConfig>() {
            Some(c) => ArrayLimits::of(&c.settings),
            None => ArrayLimits::of(&ShoalSettings::default()),
        };
        let [location] = &cmd.locations[..] else {
            return plan_err!(
                "CREATE EXTERNAL TABLE {}: a Zarr table takes one LOCATION, got {}",
                cmd.name,
                cmd.locations.len()
            );
        };
        let opened = ZarrGroup::open(state.runtime_env(), location).await;
        let table = opened.and_then(|group| group.into_table(location, limits));
        let table = table.map_err(|e| e.context(format!("CREATE EXTERNAL TABLE {}", cmd.name)))?;
        Ok(Arc::new(table))
    }
}
