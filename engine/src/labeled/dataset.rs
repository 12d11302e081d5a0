//! [`Dataset`]: named [`DataArray`]s that share dimensions, as in xarray.

use super::dataarray::{Attrs, DataArray};
use crate::error::{Error, Result};

/// Named variables sharing dimensions (and, for shared dimensions, lengths).
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    vars: Vec<(String, DataArray)>,
    attrs: Attrs,
}

impl Dataset {
    /// An empty dataset.
    pub fn new() -> Self {
        Self::default()
    }

    /// The dataset with variable `name` added (or replaced); its dimensions must agree in
    /// length with the variables already there.
    pub fn with_var(mut self, name: &str, var: DataArray) -> Result<Self> {
        for (dim, n) in var.dims().iter().zip(var.shape()) {
            if let Some((_, m)) = self.dims().into_iter().find(|(d, _)| d == dim)
                && m != n
            {
                return Err(Error::input(format!(
                    "variable '{name}' has dimension '{dim}' of length {n}, the dataset has {m}"
                )));
            }
        }
        self.vars.retain(|(v, _)| v != name);
        self.vars.push((name.to_string(), var.with_name(name)));
        Ok(self)
    }

    /// The dataset with attributes `attrs`.
    pub fn with_attrs(mut self, attrs: Attrs) -> Self {
        self.attrs = attrs;
        self
    }

    /// The variable `name`.
    pub fn var(&self, name: &str) -> Result<DataArray> {
        self.vars
            .iter()
            .find(|(v, _)| v == name)
            .map(|(_, a)| a.clone())
            .ok_or_else(|| {
                Error::input(format!(
                    "no variable '{name}'; the dataset has {}",
                    self.names().join(", ")
                ))
            })
    }

    /// Variable names, in order.
    pub fn names(&self) -> Vec<String> {
        self.vars.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Every variable.
    pub fn vars(&self) -> &[(String, DataArray)] {
        &self.vars
    }

    /// Dimension names and lengths, in order of first appearance.
    pub fn dims(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for (_, v) in &self.vars {
            for (d, n) in v.dims().iter().zip(v.shape()) {
                if !out.iter().any(|(x, _)| x == d) {
                    out.push((d.to_string(), n));
                }
            }
        }
        out
    }

    /// Attributes of the dataset.
    pub fn attrs(&self) -> &Attrs {
        &self.attrs
    }
}
