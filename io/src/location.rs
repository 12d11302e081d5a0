//! One type for every path a user can type: a local path or an object-store URL.

use std::path::{Path, PathBuf};

use datafusion::common::{DataFusionError, Result, plan_datafusion_err, plan_err};
use datafusion::datasource::listing::ListingTableUrl;
use url::Url;

/// A parsed user path: local (relative or absolute) or a URL with a scheme Shoal knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path on the local file system (`data/t.parquet`, `/tmp/x`, `file:///tmp/x`).
    Local(PathBuf),
    /// An object-store URL (`s3://`, `gs://`, `az://`, `http(s)://`, `memory://`).
    Remote(Url),
}

/// URL schemes that name an object store.
pub const REMOTE_SCHEMES: &[&str] = &[
    "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "http", "https", "memory",
];

impl Location {
    /// Parses what the user typed. Anything without a known `scheme://` prefix is a local path.
    pub fn parse(text: &str) -> Result<Self> {
        if let Some(rest) = text.strip_prefix("file://") {
            return Ok(Self::Local(PathBuf::from(rest)));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            if !REMOTE_SCHEMES.contains(&scheme.as_str()) {
                return plan_err!(
                    "unsupported location '{text}': scheme '{scheme}' is not one of file, {}",
                    REMOTE_SCHEMES.join(", ")
                );
            }
            let url = Url::parse(text).map_err(|e| {
                DataFusionError::Plan(format!("invalid location URL '{text}': {e}"))
            })?;
            return Ok(Self::Remote(url));
        }
        Ok(Self::Local(PathBuf::from(text)))
    }

    /// The local path, if this is one.
    pub fn as_local(&self) -> Option<&Path> {
        match self {
            Self::Local(p) => Some(p),
            Self::Remote(_) => None,
        }
    }

    /// True when the location names a directory (local) or a prefix (URL ending in `/`).
    pub fn is_dir(&self) -> bool {
        match self {
            Self::Local(p) => p.is_dir(),
            Self::Remote(u) => u.path().ends_with('/'),
        }
    }

    /// The last path component without its extension, used to name tables.
    pub fn stem(&self) -> Option<String> {
        let path = match self {
            Self::Local(p) => p.to_string_lossy().into_owned(),
            Self::Remote(u) => u.path().to_string(),
        };
        let last = path.trim_end_matches('/').rsplit('/').next()?.to_string();
        let stem = last.split('.').next()?.to_string();
        (!stem.is_empty()).then_some(stem)
    }

    /// Fails with a one-line message when a local location does not exist; a location
    /// with a glob (`data/*.parquet`, `dir/year=*/*.csv`) must match at least one path.
    pub fn must_exist(&self) -> Result<()> {
        let Self::Local(p) = self else {
            return Ok(());
        };
        let text = p.to_string_lossy();
        if text.contains(['*', '?', '[']) {
            let mut matches = glob::glob(&text)
                .map_err(|e| plan_datafusion_err!("bad glob pattern {text}: {e}"))?;
            if !matches.any(|m| m.is_ok()) {
                return plan_err!("no file matches {text}");
            }
            return Ok(());
        }
        if !p.exists() {
            return plan_err!("no such file or directory: {}", p.display());
        }
        Ok(())
    }

    /// True when something already exists at a local location (remote: unknown, false).
    pub fn exists_locally(&self) -> bool {
        matches!(self, Self::Local(p) if p.exists())
    }

    /// The DataFusion listing URL for this location (directories get a trailing `/`).
    pub fn to_listing_url(&self) -> Result<ListingTableUrl> {
        match self {
            Self::Local(p) => {
                let abs = std::path::absolute(p)?;
                let mut text = abs.to_string_lossy().into_owned();
                if p.is_dir() && !text.ends_with('/') {
                    text.push('/');
                }
                ListingTableUrl::parse(text)
            }
            Self::Remote(u) => ListingTableUrl::parse(u.as_str()),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(p) => write!(f, "{}", p.display()),
            Self::Remote(u) => write!(f, "{u}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_and_remote() {
        assert_eq!(
            Location::parse("data/t.parquet").unwrap(),
            Location::Local("data/t.parquet".into())
        );
        assert_eq!(
            Location::parse("file:///tmp/x.csv").unwrap(),
            Location::Local("/tmp/x.csv".into())
        );
        let s3 = Location::parse("s3://bucket/trips/").unwrap();
        assert!(matches!(&s3, Location::Remote(u) if u.host_str() == Some("bucket")));
        assert!(s3.is_dir());
        assert_eq!(s3.stem().as_deref(), Some("trips"));
        let err = Location::parse("ftp://x/y").unwrap_err().to_string();
        assert!(err.contains("scheme 'ftp'"), "{err}");
    }

    #[test]
    fn missing_local_path_is_named() {
        let err = Location::parse("/nonexistent/q.parquet")
            .unwrap()
            .must_exist()
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/q.parquet"), "{err}");
    }
}
