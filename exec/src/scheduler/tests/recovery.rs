//! Lost workers during a job and after its result was delivered, and random losses.

use std::collections::HashSet;

use shoal_planner::{StageId, WorkerId};

use super::super::MAX_TASK_FETCH_RETRIES;
use super::{Harness, done_on, fetch_failed, finish_launched};
use crate::protocol::Event;

#[test]
fn a_lost_worker_s_outputs_are_recomputed_and_consumers_read_the_new_copies() {
    let mut h = Harness::new(2, 1);
    let mut done = h.submit(1, &[(&[], 2), (&[0], 2)]);
    let consumers = finish_launched(&mut h, 1);
    assert_eq!(consumers.len(), 2);
    let lost = done_on(&h, 1, 0, 0);
    // Launches carry where the producers' outputs are: one on each worker.
    h.event(Event::WorkerLost {
        worker: 0,
        cause: "killed".into(),
    });
    // The consumer on worker 1 was still running with the old locations; it fails to
    // fetch from the lost worker. Then the producer output held on worker 0 is computed
    // again on worker 1, before any consumer.
    let &(_, running, running_attempt) = consumers.iter().find(|(w, ..)| *w == 1).unwrap();
    assert!(h.launched(1).is_empty(), "worker 1's slot is busy");
    h.end(1, 1, running, running_attempt, fetch_failed(0));
    let relaunched = h.launched(1);
    assert_eq!(
        relaunched.iter().map(|(t, ..)| *t).collect::<Vec<_>>(),
        vec![lost]
    );
    let (task, attempt, _) = relaunched[0].clone();
    h.finish(1, 1, task, attempt);
    // Both consumers run again on worker 1, reading only from worker 1.
    let mut left = 2;
    while left > 0 {
        let launched = h.launched(1);
        assert!(!launched.is_empty(), "the consumers run on worker 1");
        for (task, attempt, locations) in launched {
            assert_eq!(task.stage, 1);
            assert_eq!(locations[&0], vec![Some(1), Some(1)], "{task}");
            h.finish(1, 1, task, attempt);
            left -= 1;
        }
    }
    let outputs = done.try_recv().unwrap().unwrap();
    assert_eq!(outputs.len(), 2);
    assert!(outputs.iter().all(|(_, w)| *w == 1), "{outputs:?}");
    assert_eq!(
        h.scheduler.jobs[&1].fetch_failures, 0,
        "the loss was already known"
    );
}

#[test]
fn unread_result_partitions_on_a_lost_worker_are_computed_again_and_relocated() {
    let mut h = Harness::new(2, 1);
    let (mut done, mut relocations) = h.submit_relocatable(1, &[(&[], 2), (&[0], 4)]);
    h.run_until_quiet(1);
    let outputs = done.try_recv().unwrap().unwrap();
    let lost = outputs[2].1;
    let on_lost: Vec<usize> = outputs
        .iter()
        .filter(|(_, w)| *w == lost)
        .map(|(t, _)| t.partition)
        .collect();
    // The client read partitions 0 and 1, then could not read partition 2.
    let report = || Event::ResultLost {
        job: 1,
        partition: 2,
        worker: lost,
        cause: "connection refused".into(),
        read: vec![0, 1],
    };
    h.event(report());
    assert_eq!(
        h.probes.try_recv().unwrap().0,
        lost,
        "the worker is suspect"
    );
    assert!(
        relocations.try_recv().is_err(),
        "nothing to tell before the recompute"
    );
    let ran = h.run_until_quiet(1);
    // Stage 0 was released once stage 1 finished, so all of it runs again; of the
    // result, only the unread partitions the lost worker held.
    let result_tasks: Vec<usize> = ran
        .iter()
        .filter(|(_, t)| t.stage == 1)
        .map(|(_, t)| t.partition)
        .collect();
    let mut expected: Vec<usize> = on_lost.into_iter().filter(|&p| p >= 2).collect();
    let mut sorted = result_tasks.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected);
    assert!(
        ran.iter().all(|(w, _)| *w != lost),
        "nothing on the suspect"
    );
    let relocated = relocations.try_recv().unwrap().unwrap();
    let partitions: Vec<usize> = relocated.iter().map(|(t, _)| t.partition).collect();
    assert_eq!(partitions, vec![2, 3], "every unread partition, in order");
    assert!(relocated.iter().all(|(_, w)| *w != lost), "{relocated:?}");
    // The same report again (a stale read) is answered with the places already known.
    h.event(report());
    assert_eq!(relocations.try_recv().unwrap().unwrap(), relocated);
    assert!(
        h.run_until_quiet(1).is_empty(),
        "no recompute for a stale report"
    );
}

#[test]
fn a_delivered_job_whose_result_cannot_be_computed_again_tells_its_client() {
    let mut h = Harness::new(1, 1);
    let (mut done, mut relocations) = h.submit_relocatable(1, &[(&[], 2)]);
    h.run_until_quiet(1);
    done.try_recv().unwrap().unwrap();
    // The only worker is lost while the client reads.
    h.event(Event::WorkerLost {
        worker: 0,
        cause: "its connection closed".into(),
    });
    let error = relocations.try_recv().unwrap().unwrap_err().to_string();
    assert!(error.contains("every worker was lost"), "{error}");
}

/// Random worker losses against a job shaped like TPC-H q03's (a broadcast build read by
/// a hash-partitioned stage, then a merge): tasks that read from a lost worker fail to
/// fetch, as they do on a real cluster, and the job must still finish, with no launch
/// reading from a worker already known to be lost.
#[test]
fn random_losses_never_send_a_task_to_read_from_a_lost_worker() {
    for seed in 0..300u64 {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut h = Harness::new(2, 1);
        let stages: &[(&[StageId], usize)] = &[
            (&[], 1),
            (&[0], 2),
            (&[1], 2),
            (&[2], 2),
            (&[3], 2),
            (&[4], 1),
        ];
        let (mut done, _relocations) = h.submit_relocatable(1, stages);
        let mut lost = HashSet::new();
        let mut pending = Vec::new();
        let mut kills = 0;
        let mut finished_as_poison = false;
        for step in 0..2000 {
            for w in 0..h.inboxes.len() {
                for (task, attempt, locations) in h.launched(w) {
                    for workers in locations.values() {
                        assert!(
                            workers.iter().flatten().all(|w| !lost.contains(w)),
                            "seed {seed} step {step}: {task} launched on worker {w} reads \
                             from a lost worker: {locations:?}"
                        );
                    }
                    pending.push((w, task, attempt, locations));
                }
            }
            if let Ok(result) = done.try_recv() {
                if let Err(e) = result {
                    // Two kills that hit the same running task stop it as a poison task.
                    let message = e.to_string();
                    assert!(
                        message.contains("workers were lost while running it"),
                        "{e}"
                    );
                    finished_as_poison = true;
                }
                break;
            }
            if kills < 4 && next() % 5 == 0 {
                let alive: Vec<WorkerId> =
                    (0..h.inboxes.len()).filter(|w| !lost.contains(w)).collect();
                let victim = alive[(next() % alive.len() as u64) as usize];
                lost.insert(victim);
                kills += 1;
                h.event(Event::WorkerLost {
                    worker: victim,
                    cause: "killed".into(),
                });
                let address = format!("127.0.0.1:{}", 9100 + h.inboxes.len());
                h.join(&address);
                continue;
            }
            if pending.is_empty() {
                continue;
            }
            let i = (next() % pending.len() as u64) as usize;
            let (w, task, attempt, locations) = pending.swap_remove(i);
            if lost.contains(&w) {
                continue;
            }
            // A worker that read its inputs before their holder died still finishes.
            let dead = locations
                .values()
                .flatten()
                .flatten()
                .find(|w| lost.contains(w))
                .copied();
            match dead {
                Some(from) if next() % 2 == 0 => h.end(1, w, task, attempt, fetch_failed(from)),
                _ => h.finish(1, w, task, attempt),
            }
        }
        assert!(
            finished_as_poison || h.scheduler.jobs.get(&1).is_some_and(|j| j.delivered()),
            "seed {seed}: the job did not finish"
        );
    }
}

#[test]
fn a_task_that_keeps_failing_to_fetch_from_a_lost_worker_fails_its_job_instead_of_spinning() {
    let mut h = Harness::new(2, 1);
    let (mut done, _relocations) = h.submit_relocatable(1, &[(&[], 1), (&[0], 1)]);
    let consumers = finish_launched(&mut h, 1);
    let &(w, task, mut attempt) = consumers.first().expect("the consumer runs");
    let lost = 1 - w;
    h.event(Event::WorkerLost {
        worker: lost,
        cause: "killed".into(),
    });
    // Every run of the consumer fails to fetch from the worker already lost (as when a
    // worker kept a failed input in shared operator state).
    let mut runs = 0;
    let error = loop {
        h.end(1, w, task, attempt, fetch_failed(lost));
        runs += 1;
        if let Ok(result) = done.try_recv() {
            break result.unwrap_err().to_string();
        }
        assert!(runs < 1000, "the task spins");
        // Its next run, after any producer that runs again.
        let mut next = None;
        while next.is_none() {
            for (t, a, _) in h.launched(w) {
                if t == task {
                    next = Some(a);
                } else {
                    h.finish(1, w, t, a);
                }
            }
        }
        attempt = next.unwrap();
    };
    assert_eq!(runs, MAX_TASK_FETCH_RETRIES as usize + 1);
    assert!(
        error.contains("failed to fetch its inputs 64 times"),
        "{error}"
    );
    assert!(error.contains(&task.to_string()), "{error}");
}
