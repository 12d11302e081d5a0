//! Placement's cost does not grow with the cluster: the index of workers with room names
//! the worker to use, and only the few holding most of a stage's inputs are looked at
//! besides; yet the choice is the one a look at every worker would make.

use super::*;

/// A harness of `n` one-slot workers with no data port (no peer addresses to tell).
fn quiet(n: usize, resources: impl Fn(usize) -> Resources) -> Harness {
    prefetching(n, 1, resources)
}

/// [`quiet`] with `prefetch` tasks in flight per slot.
fn prefetching(n: usize, prefetch: usize, resources: impl Fn(usize) -> Resources) -> Harness {
    let mut h = Harness::new(0, prefetch);
    for i in 0..n {
        let (tx, rx) = mpsc::unbounded_channel();
        let info = WorkerStatus {
            slots: 1,
            resources: resources(i),
            ..Default::default()
        };
        h.scheduler.join(info, tx);
        h.inboxes.push(rx);
        h.other.push(Vec::new());
    }
    h
}

/// Workers looked at per task placed, running a two-stage job of `4 n` tasks per stage
/// on `n` workers to its end; also checks the first wave gives each worker one task.
fn looked_at_per_task(n: usize) -> f64 {
    let mut h = quiet(n, |_| Resources::default());
    let tasks = 4 * n;
    let mut done = h.submit(1, &[(&[], tasks), (&[0], tasks)]);
    let first_wave: Vec<_> = (0..n).map(|w| h.launched(w)).collect();
    assert!(
        first_wave.iter().all(|l| l.len() == 1),
        "one task on each idle worker"
    );
    for (w, launched) in first_wave.into_iter().enumerate() {
        h.finish(1, w, launched[0].0, launched[0].1);
    }
    let ran = h.run_until_quiet(1);
    assert_eq!(ran.len(), 2 * tasks - n);
    assert!(done.try_recv().unwrap().is_ok());
    h.scheduler.room.looked_at as f64 / (2 * tasks) as f64
}

#[test]
fn placing_a_task_looks_at_as_many_workers_on_a_thousand_as_on_ten() {
    let small = looked_at_per_task(10);
    let large = looked_at_per_task(1000);
    // The index's choice and at most eight holders of the stage's inputs: looking at
    // every worker would be a thousand per task here.
    assert!(large <= 9.0, "{large} workers looked at per task");
    assert!(
        large <= small * 1.5,
        "10 workers: {small} per task, 1000: {large}"
    );
}

#[test]
fn a_consumer_goes_to_the_worker_holding_most_of_its_inputs() {
    let mut h = quiet(6, |_| Resources::default());
    let _done = h.submit(1, &[(&[], 3), (&[0], 1)]);
    // Stage 0 runs on three workers; the first to finish ends up with most of its
    // output.
    let producers: Vec<(WorkerId, TaskId)> = (0..6)
        .flat_map(|w| h.launched(w).into_iter().map(move |l| (w, l.0)))
        .collect();
    assert_eq!(producers.len(), 3);
    for (&(w, task), bytes) in producers.iter().zip([1000, 10, 5]) {
        let report = TaskReport {
            bucket_bytes: vec![bytes],
            ..TaskReport::default()
        };
        h.end(1, w, task, 1, TaskOutcome::Finished(report));
    }
    // Every worker is idle; the index alone would pick the last one to become idle.
    let holder = producers[0].0;
    let consumer = TaskId {
        stage: 1,
        partition: 0,
    };
    assert_eq!(h.launched(holder).first().map(|l| l.0), Some(consumer));
    assert!((0..6).all(|w| w == holder || h.launched(w).is_empty()));
}

#[test]
fn tasks_asking_for_a_resource_find_its_few_workers_among_many() {
    // 2000 workers, every 500th with a gpu.
    let gpu = Resources::parse("gpu=1").unwrap();
    let mut h = quiet(2000, |i| {
        if i % 500 == 499 {
            gpu.clone()
        } else {
            Resources::default()
        }
    });
    let mut done = h.submit_asking(1, &[(&[], 40)], gpu.clone(), Duration::from_secs(60));
    let gpu_workers = [499, 999, 1499, 1999];
    let ran = h.run_until_quiet(1);
    assert_eq!(ran.len(), 40);
    assert!(ran.iter().all(|(w, _)| gpu_workers.contains(w)), "{ran:?}");
    assert!(done.try_recv().unwrap().is_ok());
    assert!(
        h.scheduler.room.looked_at <= 2 * 40 + 10,
        "{} looked at for 40 tasks",
        h.scheduler.room.looked_at
    );
    // With the gpu job gone its pool goes too; a job asking for nothing uses them all.
    assert_eq!(h.scheduler.room.pools(), 2);
    h.event(Event::EndJob(1));
    assert_eq!(h.scheduler.room.pools(), 1);
    let _done = h.submit(2, &[(&[], 2000)]);
    assert!((0..2000).all(|w| h.launched(w).len() == 1));
}

/// Tasks in flight on `h`'s workers once a job of many tasks is placed, every worker
/// having run short tasks so far.
fn in_flight_on_short_workers(h: &mut Harness) -> usize {
    for w in 0..h.inboxes.len() {
        h.scheduler.workers[w].mean_task_secs = 0.0;
        h.scheduler.reindex(w);
    }
    let _done = h.submit(1, &[(&[], 100_000)]);
    (0..h.inboxes.len()).map(|w| h.launched(w).len()).sum()
}

#[test]
fn short_tasks_queue_deep_on_a_few_workers_and_shallow_on_many() {
    // Eight one-slot workers each hold 64 short tasks: their round trips overlap.
    let mut few = quiet(8, |_| Resources::default());
    assert_eq!(in_flight_on_short_workers(&mut few), 8 * 64);
    // On 2,048 workers the cluster's budget of 1,024 gives less than one more per
    // slot: each holds the ordinary prefetch of two, not 64 (131,072 in all).
    let mut many = prefetching(2048, 2, |_| Resources::default());
    assert_eq!(in_flight_on_short_workers(&mut many), 2048 * 2);
    // Workers lost give their share back to the others: 1,024 / 64 slots = 16 each.
    for w in 64..2048 {
        many.scheduler.lose_worker(w, "test");
    }
    assert_eq!(many.scheduler.short_task_prefetch, 16);
    assert!(many.scheduler.room_is_current());
}
