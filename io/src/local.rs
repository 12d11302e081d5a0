//! Local files as an object store that checks byte ranges against the file's length.
//!
//! `object_store`'s `LocalFileSystem` allocates a buffer of whatever length a range
//! asks for before it reads: a damaged Parquet footer that declares a column chunk of
//! petabytes aborts the process (fuzzing found one). Readers ask for ranges the file's
//! own metadata names, so each range is checked first, and one past the end is an error
//! naming the file.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// [`LocalFileSystem`] with byte ranges checked before they are read.
#[derive(Debug, Default)]
pub struct CheckedLocalFiles {
    inner: LocalFileSystem,
}

impl CheckedLocalFiles {
    /// The local file system.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Display for CheckedLocalFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// An error for `range` of `location`, a file of `size` bytes, or `None` if it fits.
fn out_of_file(location: &Path, range: &Range<u64>, size: u64) -> Option<object_store::Error> {
    if range.start <= range.end && range.end <= size {
        return None;
    }
    let message = format!(
        "bytes {}..{} of /{location} were asked for, but the file has {size}: it is damaged \
         or was cut short",
        range.start, range.end
    );
    Some(object_store::Error::Generic {
        store: "LocalFileSystem",
        source: message.into(),
    })
}

#[async_trait::async_trait]
impl ObjectStore for CheckedLocalFiles {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let size = self.inner.head(location).await?.size;
        if let Some(error) = ranges.iter().find_map(|r| out_of_file(location, r, size)) {
            return Err(error);
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_past_the_end_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.parquet"), b"0123456789").unwrap();
        let location = Path::from_filesystem_path(dir.path().join("f.parquet")).unwrap();
        let store = CheckedLocalFiles::new();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let got = runtime
            .block_on(store.get_ranges(&location, &[2..4, 8..10]))
            .unwrap();
        assert_eq!(got, vec![&b"23"[..], &b"89"[..]]);
        let huge = 4..(1u64 << 52);
        let err = runtime
            .block_on(store.get_ranges(&location, &[0..2, huge]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("f.parquet") && err.contains("the file has 10"),
            "{err}"
        );
    }
}
