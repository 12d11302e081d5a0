//! `shoal._native.Session`: an embedded engine or a connection to a scheduler.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3_arrow::input::AnyRecordBatch;

use crate::array::Array;
use crate::frame::DataFrame;
use crate::labeled::Dataset;
use crate::{Reporter, py_err, wait};

/// A Shoal session (see the `shoal.Session` wrapper for the documented API).
#[pyclass(module = "shoal._native", frozen)]
pub struct Session {
    inner: parking_lot::Mutex<Option<shoal::Session>>,
    address: Option<String>,
    reporter: Arc<Reporter>,
}

impl Session {
    /// The engine session, or an error once closed.
    pub(crate) fn get(&self) -> PyResult<shoal::Session> {
        self.inner
            .lock()
            .clone()
            .ok_or_else(|| PyValueError::new_err("the session is closed"))
    }
}

#[pymethods]
impl Session {
    #[new]
    // One parameter per keyword argument of `shoal.Session`, and the progress reporter.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (address=None, workers=None, memory_limit=None, partitions=None, token=None, tls_ca=None, config=None, progress=None))]
    fn new(
        py: Python<'_>,
        address: Option<String>,
        workers: Option<usize>,
        memory_limit: Option<String>,
        partitions: Option<usize>,
        token: Option<String>,
        tls_ca: Option<String>,
        config: Option<HashMap<String, String>>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let mut builder = shoal::Session::builder();
        let mut options: Vec<(String, String)> = config.unwrap_or_default().into_iter().collect();
        options.sort();
        let given = [
            ("workers", workers.map(|n| n.to_string())),
            ("worker.memory_limit", memory_limit),
            ("execution.partitions", partitions.map(|n| n.to_string())),
        ];
        for (key, value) in given {
            if let Some(value) = value {
                options.push((key.to_string(), value));
            }
        }
        for (key, value) in &options {
            builder = builder.option(key, value).map_err(py_err)?;
        }
        if let Some(url) = &address {
            builder = builder.cluster(url);
        }
        if let Some(token) = &token {
            builder = builder.token(token);
        }
        if let Some(ca) = &tls_ca {
            builder = builder.tls_ca(ca);
        }
        let session = py.detach(|| builder.build()).map_err(py_err)?;
        let reporter = Reporter::attach(&session, progress);
        Ok(Self {
            inner: parking_lot::Mutex::new(Some(session)),
            address,
            reporter,
        })
    }

    /// The scheduler's URL, or None for an embedded session.
    #[getter]
    fn address(&self) -> Option<String> {
        self.address.clone()
    }

    /// The URL of the dashboard this session serves, or None.
    #[getter]
    fn dashboard_link(&self) -> Option<String> {
        let session = self.inner.lock();
        session
            .as_ref()
            .and_then(|s| s.dashboard_link().map(str::to_string))
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.lock().is_none()
    }

    /// Stops an embedded session's workers, or lets go of the connection.
    fn close(&self, py: Python<'_>) {
        let session = self.inner.lock().take();
        py.detach(move || drop(session));
    }

    /// Plans one SQL statement: a lazy frame for a query; DDL and SET run now.
    fn sql(&self, py: Python<'_>, query: String) -> PyResult<DataFrame> {
        let session = self.get()?;
        let frame = wait(py, &self.reporter, async move { session.sql(&query).await })?;
        Ok(DataFrame::new(frame, &self.reporter))
    }

    /// Registers a file, directory, prefix or Zarr store as table `name`.
    fn register(&self, py: Python<'_>, name: String, path: String) -> PyResult<()> {
        let session = self.get()?;
        py.detach(|| session.register(&name, &path)).map_err(py_err)
    }

    /// Registers `frame` as view `name` (replacing a table of that name).
    fn register_frame(&self, name: String, frame: &DataFrame) -> PyResult<()> {
        let session = self.get()?;
        let ctx = session.context();
        ctx.deregister_table(name.as_str())
            .map_err(|e| py_err(e.into()))?;
        ctx.register_table(name.as_str(), frame.view())
            .map_err(|e| py_err(e.into()))?;
        Ok(())
    }

    /// A lazy frame over anything that speaks the Arrow PyCapsule interface.
    fn read_arrow(&self, py: Python<'_>, data: AnyRecordBatch) -> PyResult<DataFrame> {
        let session = self.get()?;
        let table = data.into_table()?;
        let (batches, schema) = table.into_inner();
        let frame = py
            .detach(|| session.from_batches(schema, batches))
            .map_err(py_err)?;
        Ok(DataFrame::new(frame, &self.reporter))
    }

    /// A lazy frame over Parquet files.
    fn read_parquet(&self, py: Python<'_>, path: String) -> PyResult<DataFrame> {
        let session = self.get()?;
        let frame = py.detach(|| session.read_parquet(&path)).map_err(py_err)?;
        Ok(DataFrame::new(frame, &self.reporter))
    }

    /// A lazy frame over CSV files.
    fn read_csv(&self, py: Python<'_>, path: String) -> PyResult<DataFrame> {
        let session = self.get()?;
        let frame = py.detach(|| session.read_csv(&path)).map_err(py_err)?;
        Ok(DataFrame::new(frame, &self.reporter))
    }

    /// A lazy frame over a registered table.
    fn table(&self, py: Python<'_>, name: String) -> PyResult<DataFrame> {
        let session = self.get()?;
        let frame = wait(
            py,
            &self.reporter,
            async move { session.table(&name).await },
        )?;
        Ok(DataFrame::new(frame, &self.reporter))
    }

    /// `values` (a NumPy array) as a chunked array with chunks of `chunks` per axis.
    fn read_numpy(&self, values: &Bound<'_, PyAny>, chunks: Vec<usize>) -> PyResult<Array> {
        let session = self.get()?;
        let array = crate::array::from_numpy(&session, values, &chunks)?;
        Ok(Array::new(array, &self.reporter))
    }

    /// An array of `shape` filled with `value` as `dtype`.
    fn full(
        &self,
        shape: Vec<usize>,
        chunks: Vec<usize>,
        value: f64,
        dtype: &str,
    ) -> PyResult<Array> {
        let session = self.get()?;
        let Some(dtype) = shoal::DType::parse(dtype) else {
            return Err(PyValueError::new_err(format!("unknown dtype '{dtype}'")));
        };
        let array = session
            .full(&shape, &chunks, value, dtype)
            .map_err(py_err)?;
        Ok(Array::new(array, &self.reporter))
    }

    /// Uniform random float64 values in [0, 1) from `seed`.
    fn random(&self, shape: Vec<usize>, chunks: Vec<usize>, seed: u64) -> PyResult<Array> {
        let session = self.get()?;
        let array = session
            .random_uniform(&shape, &chunks, seed)
            .map_err(py_err)?;
        Ok(Array::new(array, &self.reporter))
    }

    /// `0, 1, ..., n - 1` as int64 in chunks of `chunk`.
    fn arange(&self, n: usize, chunk: usize) -> PyResult<Array> {
        Ok(Array::new(self.get()?.arange(n, chunk), &self.reporter))
    }

    /// Opens a Zarr group (v2 or v3; a path or object-store URL) as a lazy dataset.
    fn open_zarr(&self, py: Python<'_>, path: String) -> PyResult<Dataset> {
        let session = self.get()?;
        let ds = py.detach(|| session.open_zarr(&path)).map_err(py_err)?;
        Ok(Dataset::new(ds, &self.reporter))
    }

    /// The registered tables' names.
    fn table_names(&self) -> PyResult<Vec<String>> {
        Ok(self.get()?.table_names())
    }

    /// The cluster's status as JSON text (`shoal status --format json`'s schema).
    fn status_json(&self, py: Python<'_>) -> PyResult<String> {
        let session = self.get()?;
        let status = wait(py, &self.reporter, async move { session.status().await })?;
        Ok(shoal::status_json(&status).to_string())
    }

    /// Cancels job `job`; whether it was running.
    fn cancel(&self, py: Python<'_>, job: u64) -> PyResult<bool> {
        let session = self.get()?;
        wait(py, &self.reporter, async move { session.cancel(job).await })
    }

    /// The resolved `shoal.*` settings as (key, value) pairs.
    fn settings(&self) -> PyResult<Vec<(String, String)>> {
        use shoal::datafusion::common::config::ExtensionOptions;
        let settings = self.get()?.config();
        let config = shoal::ShoalConfig {
            settings,
            started: true,
        };
        Ok(config
            .entries()
            .into_iter()
            .map(|e| (e.key, e.value.unwrap_or_default()))
            .collect())
    }
}
