//! SQL behaviour in sqllogictest files under `tests/slt/`, run against an embedded
//! session with the TPC-H tables registered (the engine's CLI tests run the same files
//! on worker processes).

use std::path::PathBuf;

use shoal::Session;

use crate::common::{rows, tpch_dir};
use crate::slt_runner::{run_slt_file, slt_files};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("slt");
    for file in slt_files(&dir) {
        run_slt_file(&file, rows, || {
            let session = Session::builder().workers(2).partitions(3).build()?;
            session.register_dir(tpch_dir().to_str().unwrap())?;
            Ok(session)
        })
        .await;
    }
}
