//! What the scheduler's status reports of the workers' use.

use super::*;

#[test]
fn status_shows_the_resources_running_tasks_hold() {
    let mut h = Harness::new(0, 1);
    let (tx, rx) = mpsc::unbounded_channel();
    let offer = WorkerStatus {
        address: "127.0.0.1:9100".into(),
        slots: 2,
        resources: Resources::parse("gpu=2").unwrap(),
        ..Default::default()
    };
    h.scheduler.join(offer, tx);
    h.inboxes.push(rx);
    h.other.push(Vec::new());
    let gpu = Resources::parse("gpu=1").unwrap();
    let _done = h.submit_asking(1, &[(&[], 3)], gpu, Duration::from_secs(60));
    let launched = h.launched(0);
    assert_eq!(launched.len(), 2, "two tasks hold both GPUs");
    let worker = |h: &Harness| h.scheduler.status().workers[0].clone();
    assert_eq!(worker(&h).resources_in_use.get("gpu"), 2.0);
    assert_eq!(worker(&h).resources.get("gpu"), 2.0);
    let (task, attempt, _) = launched[0].clone();
    h.finish(1, 0, task, attempt);
    // The third task took the GPU the first gave back; then the last two end.
    let third = h.launched(0);
    assert_eq!(third.len(), 1);
    assert_eq!(worker(&h).resources_in_use.get("gpu"), 2.0);
    for (task, attempt, _) in [launched[1].clone(), third[0].clone()] {
        h.finish(1, 0, task, attempt);
    }
    assert_eq!(worker(&h).resources_in_use.get("gpu"), 0.0);
}
