//! Workers lost to silence, and what counts as hearing from one.

use std::time::Instant;

use super::*;

/// A scheduler with one worker process that must be heard from within `timeout`.
fn one_worker(timeout: Duration) -> (Scheduler, mpsc::UnboundedReceiver<WorkerMsg>) {
    let mut scheduler = Scheduler::empty(1, Some(timeout));
    let (tx, rx) = mpsc::unbounded_channel();
    let info = WorkerStatus {
        address: "127.0.0.1:9000".into(),
        slots: 1,
        ..Default::default()
    };
    scheduler.join(info, tx);
    (scheduler, rx)
}

fn alive(scheduler: &Scheduler) -> bool {
    scheduler.status().workers[0].alive
}

/// Ticks as the event loop does, every 20 ms, for `period`, sending `between` before
/// each tick.
fn tick_for(
    scheduler: &mut Scheduler,
    period: Duration,
    mut between: impl FnMut() -> Option<Event>,
) {
    let end = Instant::now() + period;
    while Instant::now() < end && alive(scheduler) {
        if let Some(event) = between() {
            scheduler.turn(event);
        }
        scheduler.tick();
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_silent_worker_is_lost_once_the_timeout_passes() {
    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    let (mut scheduler, _rx) = one_worker(timeout);
    tick_for(&mut scheduler, Duration::from_secs(30), || None);
    assert!(!alive(&scheduler));
    assert!(
        start.elapsed() >= timeout,
        "lost after {:?}",
        start.elapsed()
    );
}

#[test]
fn any_message_from_a_worker_counts_as_hearing_from_it() {
    let (mut scheduler, _rx) = one_worker(Duration::from_millis(300));
    // No heartbeat for four times the timeout, but a fetch report every 20 ms.
    let fetched = || {
        Some(Event::Fetched {
            job: 1,
            from: 0,
            to: 0,
            bytes: 10,
        })
    };
    tick_for(&mut scheduler, Duration::from_millis(1200), fetched);
    assert!(alive(&scheduler), "{:?}", scheduler.status().workers[0]);
    // Then silence loses it.
    tick_for(&mut scheduler, Duration::from_secs(30), || None);
    assert!(!alive(&scheduler));
}

#[test]
fn a_scheduler_that_could_not_run_does_not_hold_its_own_stall_against_workers() {
    let timeout = Duration::from_secs(1);
    let (mut scheduler, _rx) = one_worker(timeout);
    scheduler.tick();
    // The process is starved for three timeouts: no check and no heartbeat read.
    std::thread::sleep(3 * timeout);
    scheduler.tick();
    assert!(alive(&scheduler), "lost to the scheduler's own stall");
    // Once it runs again, a worker that stays silent is lost as usual.
    tick_for(&mut scheduler, Duration::from_secs(30), || None);
    assert!(!alive(&scheduler));
}

#[test]
fn a_scheduler_busy_handling_events_still_loses_a_silent_worker_on_time() {
    let timeout = Duration::from_secs(1);
    let (mut scheduler, _rx) = one_worker(timeout);
    scheduler.tick();
    std::thread::sleep(timeout + Duration::from_millis(500));
    // The gap was spent handling events, with heartbeats read as they came: not a stall.
    scheduler.busy = timeout + Duration::from_millis(500);
    scheduler.tick();
    assert!(
        !alive(&scheduler),
        "lost at the first check past the timeout"
    );
}
