//! Object stores made on demand for the URLs users type.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::memory::InMemory;
use parking_lot::RwLock;
use url::Url;

/// A DataFusion [`ObjectStoreRegistry`] that creates a store the first time a URL's
/// scheme and bucket are seen, with credentials from the usual environment variables
/// (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
///
/// One registry is shared by a session and all of its workers, so a `memory://` table
/// written by one query is visible to the next.
#[derive(Debug, Default)]
pub struct ShoalObjectStoreRegistry {
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl ShoalObjectStoreRegistry {
    /// An empty registry; stores are created on first use.
    pub fn new() -> Self {
        Self::default()
    }

    fn key(url: &Url) -> String {
        format!("{}://{}", url.scheme(), url.authority())
    }

    fn create(url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let bucket = url.host_str().unwrap_or_default();
        let wrap = |e: object_store::Error| {
            DataFusionError::Plan(format!("cannot open object store for '{url}': {e}"))
        };
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => Arc::new(crate::local::CheckedLocalFiles::new()),
            "memory" => Arc::new(InMemory::new()),
            "s3" | "s3a" => Arc::new(
                AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(wrap)?,
            ),
            "gs" => Arc::new(
                GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(wrap)?,
            ),
            "az" | "azure" | "abfs" | "abfss" => Arc::new(
                MicrosoftAzureBuilder::from_env()
                    .with_container_name(bucket)
                    .build()
                    .map_err(wrap)?,
            ),
            "http" | "https" => Arc::new(
                HttpBuilder::new()
                    .with_url(format!("{}://{}", url.scheme(), url.authority()))
                    .build()
                    .map_err(wrap)?,
            ),
            other => {
                return Err(DataFusionError::Plan(format!(
                    "no object store for URL scheme '{other}' in '{url}'"
                )));
            }
        };
        Ok(store)
    }
}

impl ObjectStoreRegistry for ShoalObjectStoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.stores.write().insert(Self::key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.stores
            .write()
            .remove(&Self::key(url))
            .ok_or_else(|| DataFusionError::Plan(format!("no object store registered for '{url}'")))
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let key = Self::key(url);
        if let Some(store) = self.stores.read().get(&key) {
            return Ok(Arc::clone(store));
        }
        let mut stores = self.stores.write();
        if let Some(store) = stores.get(&key) {
            return Ok(Arc::clone(store));
        }
        let store = Self::create(url)?;
        stores.insert(key, Arc::clone(&store));
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_is_shared_per_url() {
        let registry = ShoalObjectStoreRegistry::new();
        let url = Url::parse("memory:///a/b.csv").unwrap();
        let a = registry.get_store(&url).unwrap();
        let b = registry
            .get_store(&Url::parse("memory:///other").unwrap())
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let err = registry
            .get_store(&Url::parse("ftp://host/x").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ftp"), "{err}");
    }
}
