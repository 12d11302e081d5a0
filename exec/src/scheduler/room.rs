//! The placement index: for each distinct resource request of the jobs in the scheduler,
//! the workers with room for one more such task, in buckets in the order placement
//! prefers them. A worker's entry moves whenever its room changes (a task starts or ends,
//! it joins, retires, falls under suspicion or is lost), at a cost of O(requests);
//! placing a task then reads the first bucket's last entry instead of looking at every
//! worker. Only a job with a request no other job has costs O(workers), once, to build
//! its pool.

use shoal_planner::{Resources, WorkerId};

/// Placement order among workers with room: an idle slot first (prefetching onto a busy
/// worker while another one idles would serialise a stage), then the most room left, in
/// powers of two. As a bucket number, smaller first: idle workers in 0..64, busy ones in
/// 64..128, and within each the room's bit length counted down from 63.
pub(super) fn bucket(idle: bool, room: usize) -> u8 {
    let bits = (usize::BITS - room.leading_zeros()).min(63) as u8;
    (u8::from(!idle) << 6) | (63 - bits)
}

/// Which pool of the index a job's tasks are placed from.
pub(super) type PoolId = usize;

/// The pool of tasks that ask for no resources; it always exists, and holds every
/// worker with room.
pub(super) const ANY: PoolId = 0;

/// Not in a bucket.
const NOWHERE: u32 = u32::MAX;

struct Pool {
    request: Resources,
    /// Jobs placing from this pool.
    jobs: usize,
    /// Workers with room whose free resources cover `request`, by bucket.
    buckets: Vec<Vec<WorkerId>>,
    /// Bit `b` set: bucket `b` is not empty.
    filled: u128,
    /// Each worker's position in its bucket, or [`NOWHERE`].
    position: Vec<u32>,
}

impl Pool {
    fn new(request: Resources) -> Self {
        Self {
            request,
            jobs: 1,
            buckets: vec![Vec::new(); 128],
            filled: 0,
            position: Vec::new(),
        }
    }

    fn insert(&mut self, worker: WorkerId, bucket: u8) {
        if self.position.len() <= worker {
            self.position.resize(worker + 1, NOWHERE);
        }
        let members = &mut self.buckets[usize::from(bucket)];
        self.position[worker] = members.len() as u32;
        members.push(worker);
        self.filled |= 1 << bucket;
    }

    fn remove(&mut self, worker: WorkerId, bucket: u8) {
        let Some(&at) = self.position.get(worker).filter(|&&p| p != NOWHERE) else {
            return;
        };
        let members = &mut self.buckets[usize::from(bucket)];
        members.swap_remove(at as usize);
        if let Some(&moved) = members.get(at as usize) {
            self.position[moved] = at;
        }
        if members.is_empty() {
            self.filled &= !(1 << bucket);
        }
        self.position[worker] = NOWHERE;
    }

    /// The preferred worker: the one at the end of the first bucket that has any (usually
    /// the last to arrive, whose state is the likeliest to still be in the cache).
    fn first(&self) -> Option<WorkerId> {
        let bucket = self.filled.trailing_zeros() as usize;
        self.buckets.get(bucket)?.last().copied()
    }
}

/// Workers with room, per resource request; and which resources alive workers offer.
/// Every operation but [`Room::register`] of a new request takes the same time whatever
/// the number of workers.
pub(super) struct Room {
    pools: Vec<Option<Pool>>,
    /// Each worker's current bucket and the free resources it was filed under, `None`
    /// when it has no room or may not run tasks.
    entries: Vec<Option<(u8, Resources)>>,
    /// Alive workers per distinct offer (workers of one group offer the same).
    offers: Vec<(Resources, usize)>,
    /// Workers looked at to place tasks, over the scheduler's life (see
    /// `Scheduler::dispatch`): what shows that placement does not grow with the cluster.
    pub(super) looked_at: u64,
}

impl Default for Room {
    fn default() -> Self {
        Self {
            pools: vec![Some(Pool::new(Resources::default()))],
            entries: Vec::new(),
            offers: Vec::new(),
            looked_at: 0,
        }
    }
}

impl Room {
    /// A job whose tasks ask for `request` arrived: the pool it places from, made from
    /// the workers with room now if no other job asks for the same.
    pub(super) fn register(&mut self, request: &Resources) -> PoolId {
        if let Some(id) = self
            .pools
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| &p.request == request))
        {
            if let Some(pool) = &mut self.pools[id] {
                pool.jobs += 1;
            }
            return id;
        }
        let mut pool = Pool::new(request.clone());
        for (worker, entry) in self.entries.iter().enumerate() {
            if let Some((bucket, free)) = entry
                && free.covers(request)
            {
                pool.insert(worker, *bucket);
            }
        }
        let pool = Some(pool);
        match self.pools.iter().position(Option::is_none) {
            Some(id) => {
                self.pools[id] = pool;
                id
            }
            None => {
                self.pools.push(pool);
                self.pools.len() - 1
            }
        }
    }

    /// A job placing from `pool` left the scheduler.
    pub(super) fn unregister(&mut self, pool: PoolId) {
        if pool == ANY {
            return;
        }
        if let Some(p) = &mut self.pools[pool] {
            p.jobs -= 1;
            if p.jobs == 0 {
                self.pools[pool] = None;
            }
        }
    }

    /// Files `worker` under `entry` (its bucket and free resources), or nowhere.
    pub(super) fn update(&mut self, worker: WorkerId, entry: Option<(u8, Resources)>) {
        if self.entries.len() <= worker {
            self.entries.resize(worker + 1, None);
        }
        if self.entries[worker] == entry {
            return;
        }
        if let Some((old, _)) = self.entries[worker].take() {
            for pool in self.pools.iter_mut().flatten() {
                pool.remove(worker, old);
            }
        }
        if let Some((bucket, free)) = &entry {
            for pool in self.pools.iter_mut().flatten() {
                if free.covers(&pool.request) {
                    pool.insert(worker, *bucket);
                }
            }
        }
        self.entries[worker] = entry;
    }

    /// Where `worker` is filed.
    #[cfg(test)]
    pub(super) fn entry(&self, worker: WorkerId) -> Option<&(u8, Resources)> {
        self.entries.get(worker)?.as_ref()
    }

    /// Whether every pool holds exactly the workers filed with free resources covering
    /// its request, each at its recorded position, and marks its non-empty buckets.
    #[cfg(test)]
    pub(super) fn consistent(&self) -> bool {
        self.pools.iter().flatten().all(|pool| {
            let mut members = 0;
            for (worker, entry) in self.entries.iter().enumerate() {
                let at = pool.position.get(worker).copied().unwrap_or(NOWHERE);
                match entry {
                    Some((bucket, free)) if free.covers(&pool.request) => {
                        let bucket = &pool.buckets[usize::from(*bucket)];
                        if bucket.get(at as usize) != Some(&worker) {
                            return false;
                        }
                        members += 1;
                    }
                    _ if at != NOWHERE => return false,
                    _ => {}
                }
            }
            let filled =
                (0..128).all(|b| (pool.filled >> b & 1 == 1) != pool.buckets[b].is_empty());
            filled && pool.buckets.iter().map(Vec::len).sum::<usize>() == members
        })
    }

    /// Pools in use (the one for tasks that ask for nothing included).
    #[cfg(test)]
    pub(super) fn pools(&self) -> usize {
        self.pools.iter().flatten().count()
    }

    /// Whether any worker has room for a task that asks for nothing.
    pub(super) fn any(&self) -> bool {
        self.pools[ANY].as_ref().is_some_and(|p| p.filled != 0)
    }

    /// The worker placement prefers for `pool`'s tasks, locality aside.
    pub(super) fn first(&mut self, pool: PoolId) -> Option<WorkerId> {
        self.looked_at += 1;
        self.pools.get(pool)?.as_ref()?.first()
    }

    /// An alive worker offering `offer` joined (`by` = 1) or was lost (`by` = -1).
    pub(super) fn count_offer(&mut self, offer: &Resources, by: isize) {
        match self.offers.iter_mut().find(|(o, _)| o == offer) {
            Some((_, n)) => *n = n.saturating_add_signed(by),
            None if by > 0 => self.offers.push((offer.clone(), 1)),
            None => {}
        }
        self.offers.retain(|(_, n)| *n > 0);
    }

    /// Whether some alive worker offers `request` (it may be busy).
    pub(super) fn feasible(&self, request: &Resources) -> bool {
        self.offers.iter().any(|(offer, _)| offer.covers(request))
    }
}
