//! The sqllogictest files of `tests/slt/` on a scheduler and two worker processes: what
//! an embedded session answers, a cluster answers too (stage plans go through the plan
//! codec and Arrow IPC here, which an embedded session never uses).

use std::path::PathBuf;

use super::{Cluster, rows, tpch_dir};
use crate::slt_runner::{run_slt_file, slt_files};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files_on_worker_processes() {
    let cluster = Cluster::start(2);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/slt");
    for file in slt_files(&dir) {
        run_slt_file(&file, rows, || {
            let session = cluster.session();
            session.register_dir(tpch_dir().to_str().unwrap())?;
            Ok(session)
        })
        .await;
    }
}
