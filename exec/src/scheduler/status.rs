//! The cluster's state as clients see it.

use super::Scheduler;
use crate::protocol::{ClusterStatus, JobStatus};

impl Scheduler {
    pub(super) fn status(&self) -> ClusterStatus {
        let mut jobs: Vec<JobStatus> = self
            .jobs
            .iter()
            .map(|(id, job)| JobStatus {
                id: *id,
                tasks_total: job.tasks_total,
                tasks_done: job.tasks_done,
                waiting: job.waiting_since.map(|_| self.unplaceable(&job.request)),
            })
            .collect();
        jobs.sort_by_key(|j| j.id);
        ClusterStatus {
            workers: self
                .workers
                .iter()
                .map(|w| {
                    let mut status = w.status.clone();
                    let mut in_use = w.status.resources.clone();
                    in_use.take(&w.available);
                    status.resources_in_use = in_use.rounded();
                    status
                })
                .collect(),
            jobs,
            last_activity: Some(self.last_activity),
            event_loop_lag: self.loop_lag,
        }
    }
}
