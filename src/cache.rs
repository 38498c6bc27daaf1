//! A keyed cache with single-flight: concurrent lookups of a missing key
//! share one fetch, successful results are kept until their expiry, and
//! failures are never kept. Fetches run in their own task (carrying the
//! caller's span, so their logs name the pod), so a cancelled caller
//! neither aborts the fetch for the others nor leaves a stuck entry. A fetch
//! has a deadline of its own: a later lookup that joins it never waits past
//! it. A fetch that panics, or outlives its deadline, fails every lookup
//! waiting for it and leaves no entry behind. A fetch that every lookup
//! waiting for it has given up on (their mounts failed or ran out of time)
//! is abandoned and its entry removed at once, so the next lookup starts a
//! fetch of its own instead of joining one nobody waits for (and inheriting
//! its hang or its failure). Expired values are dropped by [`Cache::sweep`]
//! (the provider runs it on a timer), and a cache never keeps more than its
//! capacity: a number of values, and, for a cache that weighs its values, a
//! number of bytes, beyond which the values kept longest are evicted.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::task::AbortHandle;
use tracing::Instrument;

/// How a lookup was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A kept value.
    Hit,
    /// This lookup started the fetch.
    Miss,
    /// This lookup joined a fetch already in flight.
    Joined,
}

impl Lookup {
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Joined => "joined",
        }
    }
}

/// Why a fetch ended without a result of its own. Error types of cached
/// fetches convert from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandoned {
    /// The fetch panicked (or was cancelled at shutdown).
    Panicked,
    /// The fetch did not finish within the cache's deadline.
    TimedOut(Duration),
}

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Abandoned::Panicked => f.write_str("the fetch failed unexpectedly (internal error)"),
            Abandoned::TimedOut(d) => write!(f, "no answer within {}", humantime::format_duration(*d)),
        }
    }
}

/// How a shared fetch ended without a value.
enum Ended<E> {
    Failed(Arc<E>),
    Abandoned(Abandoned),
}

impl<E> Clone for Ended<E> {
    fn clone(&self) -> Self {
        match self {
            Ended::Failed(e) => Ended::Failed(e.clone()),
            Ended::Abandoned(a) => Ended::Abandoned(*a),
        }
    }
}

type Pending<V, E> = Shared<BoxFuture<'static, Result<V, Ended<E>>>>;

enum Entry<V, E> {
    Ready {
        value: V,
        until: Instant,
        /// What it weighs (bytes), and its place in the eviction order.
        weight: u64,
        seq: u64,
    },
    Pending {
        generation: u64,
        fetch: Pending<V, E>,
        /// Lookups awaiting the fetch right now.
        waiters: usize,
        task: AbortHandle,
    },
}

struct Inner<K, V, E> {
    entries: HashMap<K, Entry<V, E>>,
    generation: u64,
    /// Kept values in the order they were kept (entries replaced since are
    /// skipped by their sequence number).
    order: VecDeque<(K, u64)>,
    /// Bytes the kept values weigh.
    bytes: u64,
}

/// How a cache weighs its values, and the most they may weigh together.
struct Weight<V> {
    weigh: fn(&V) -> u64,
    max: u64,
}

impl<V> Clone for Weight<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for Weight<V> {}

/// Default capacity: kept values (entries being fetched do not count).
pub const DEFAULT_CAPACITY: usize = 100_000;

pub struct Cache<K, V, E> {
    inner: Arc<Mutex<Inner<K, V, E>>>,
    deadline: Option<Duration>,
    capacity: usize,
    weight: Option<Weight<V>>,
}

impl<K, V, E> Clone for Cache<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            deadline: self.deadline,
            capacity: self.capacity,
            weight: self.weight,
        }
    }
}

impl<K, V, E> Default for Cache<K, V, E> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                entries: HashMap::new(),
                generation: 0,
                order: VecDeque::new(),
                bytes: 0,
            })),
            deadline: None,
            capacity: DEFAULT_CAPACITY,
            weight: None,
        }
    }
}

impl<K, V, E> Inner<K, V, E>
where
    K: Hash + Eq + Clone,
{
    /// Removes `key`'s entry, keeping the byte count.
    fn remove(&mut self, key: &K) -> Option<Entry<V, E>> {
        let e = self.entries.remove(key);
        if let Some(Entry::Ready { weight, .. }) = &e {
            self.bytes = self.bytes.saturating_sub(*weight);
        }
        e
    }

    /// Removes every expired value; returns them (to be dropped outside
    /// the lock).
    fn expired(&mut self, now: Instant) -> Vec<Entry<V, E>> {
        let keys: Vec<K> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Ready { until, .. } if *until <= now))
            .map(|(k, _)| k.clone())
            .collect();
        let removed: Vec<Entry<V, E>> = keys.iter().filter_map(|k| self.remove(k)).collect();
        self.compact();
        removed
    }

    /// Drops places in the eviction order of values no longer kept.
    fn compact(&mut self) {
        let entries = &self.entries;
        self.order
            .retain(|(k, s)| matches!(entries.get(k), Some(Entry::Ready { seq, .. }) if seq == s));
    }

    /// Evicts the value kept longest; `false` if none is left.
    fn evict_oldest(&mut self, dropped: &mut Vec<Entry<V, E>>) -> bool {
        while let Some((k, seq)) = self.order.pop_front() {
            if matches!(self.entries.get(&k), Some(Entry::Ready { seq: s, .. }) if *s == seq)
                && let Some(e) = self.remove(&k)
            {
                dropped.push(e);
                return true;
            }
        }
        false
    }

    /// Keeps a value unless the cache is full of unexpired ones (by count),
    /// evicting the values kept longest to stay within its bytes. Returns
    /// what was dropped (to be dropped outside the lock).
    fn keep(
        &mut self,
        key: K,
        value: V,
        until: Instant,
        capacity: usize,
        weight: Option<Weight<V>>,
    ) -> Vec<Entry<V, E>> {
        let mut dropped: Vec<Entry<V, E>> = self.remove(&key).into_iter().collect();
        if self.order.len() > 2 * self.entries.len() + 64 {
            self.compact();
        }
        if self.entries.len() >= capacity {
            dropped.extend(self.expired(Instant::now()));
        }
        let w = weight.map_or(0, |w| (w.weigh)(&value));
        if let Some(weight) = weight {
            if w > weight.max {
                return dropped;
            }
            while self.bytes + w > weight.max && self.evict_oldest(&mut dropped) {}
        }
        if self.entries.len() < capacity {
            self.generation += 1;
            let seq = self.generation;
            self.order.push_back((key.clone(), seq));
            self.bytes += w;
            self.entries.insert(
                key,
                Entry::Ready {
                    value,
                    until,
                    weight: w,
                    seq,
                },
            );
        }
        dropped
    }

    /// Ends the fetch of `generation` for `key`, if it is still the entry's.
    fn finish(&mut self, key: &K, generation: u64) -> bool {
        let ours = matches!(self.entries.get(key), Some(Entry::Pending { generation: g, .. }) if *g == generation);
        if ours {
            self.entries.remove(key);
        }
        ours
    }

    /// One lookup stopped waiting for the fetch of `generation` for `key`;
    /// if it was the last, the fetch is abandoned and its entry removed.
    fn leave(&mut self, key: &K, generation: u64) {
        let Some(Entry::Pending {
            generation: g,
            waiters,
            task,
            ..
        }) = self.entries.get_mut(key)
        else {
            return;
        };
        if *g != generation {
            return;
        }
        *waiters = waiters.saturating_sub(1);
        if *waiters == 0 {
            task.abort();
            self.entries.remove(key);
            tracing::debug!("every lookup waiting for a shared fetch gave up; the fetch is abandoned");
        }
    }
}

/// A lookup waiting for a fetch: when it stops waiting (answered, or
/// dropped because its caller gave up), it leaves the entry.
struct Waiting<K, V, E>
where
    K: Hash + Eq + Clone,
{
    inner: Arc<Mutex<Inner<K, V, E>>>,
    key: K,
    generation: u64,
}

impl<K, V, E> Drop for Waiting<K, V, E>
where
    K: Hash + Eq + Clone,
{
    fn drop(&mut self) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .leave(&self.key, self.generation);
    }
}

impl<K, V, E> Cache<K, V, E>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
    E: From<Abandoned> + Send + Sync + 'static,
{
    pub fn new() -> Self {
        Self::default()
    }

    /// A fetch that has not finished after `deadline` fails its lookups.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Keep at most `capacity` values.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Keep values weighing at most `max` bytes together (as `weigh` weighs
    /// them), evicting the values kept longest to make room.
    pub fn with_max_bytes(mut self, max: u64, weigh: fn(&V) -> u64) -> Self {
        self.weight = Some(Weight { weigh, max });
        self
    }

    /// Bytes the kept values weigh.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V, E>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value for `key`: a kept one, a fetch in flight, or a new fetch.
    /// `fetch` returns the value and how long it may be kept (`None`: not
    /// kept, only shared with concurrent lookups). A lookup that joined a
    /// fetch which was then abandoned (its deadline passed, or it panicked)
    /// looks up once more: it was not its own fetch, and the dependency may
    /// have recovered since that fetch began.
    pub async fn get_or_fetch<F, Fut>(&self, key: K, fetch: F) -> (Result<V, Arc<E>>, Lookup)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, Option<Instant>), E>> + Send + 'static,
    {
        let mut fetch = Some(fetch);
        let mut retried = false;
        loop {
            let (pending, lookup, generation) = match self.lookup(&key, &mut fetch) {
                Ok(hit) => return (Ok(hit), Lookup::Hit),
                Err(pending) => pending,
            };
            let waiting = Waiting {
                inner: self.inner.clone(),
                key: key.clone(),
                generation,
            };
            let result = pending.await;
            drop(waiting);
            match result {
                Ok(v) => return (Ok(v), lookup),
                Err(Ended::Failed(e)) => return (Err(e), lookup),
                Err(Ended::Abandoned(_)) if lookup == Lookup::Joined && !retried && fetch.is_some() => {
                    retried = true;
                }
                Err(Ended::Abandoned(a)) => return (Err(Arc::new(E::from(a))), lookup),
            }
        }
    }

    /// A kept value, or the fetch to await (joined, or started with the
    /// `fetch` not used yet) as one more waiter of its generation.
    #[allow(clippy::type_complexity)]
    fn lookup<F, Fut>(&self, key: &K, fetch: &mut Option<F>) -> Result<V, (Pending<V, E>, Lookup, u64)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, Option<Instant>), E>> + Send + 'static,
    {
        let mut inner = self.lock();
        match inner.entries.get_mut(key) {
            Some(Entry::Ready { value, until, .. }) if *until > Instant::now() => return Ok(value.clone()),
            Some(Entry::Pending {
                fetch,
                waiters,
                generation,
                ..
            }) => {
                *waiters += 1;
                return Err((fetch.clone(), Lookup::Joined, *generation));
            }
            _ => {}
        }
        let Some(f) = fetch.take() else {
            // Unreachable: a lookup without its fetch only retries after
            // joining, and then still has it.
            let abandoned: Pending<V, E> = futures::future::ready(Err(Ended::Abandoned(Abandoned::Panicked)))
                .boxed()
                .shared();
            // Generation 0 is no entry's: leaving it is a no-op.
            return Err((abandoned, Lookup::Miss, 0));
        };
        inner.generation += 1;
        let generation = inner.generation;
        let (shared, task) = self.spawn(key.clone(), generation, f());
        inner.entries.insert(
            key.clone(),
            Entry::Pending {
                generation,
                fetch: shared.clone(),
                waiters: 1,
                task,
            },
        );
        Err((shared, Lookup::Miss, generation))
    }

    /// Runs one fetch on its own task and returns the future every lookup
    /// of it awaits, and the task's handle.
    fn spawn<Fut>(&self, key: K, generation: u64, fut: Fut) -> (Pending<V, E>, AbortHandle)
    where
        Fut: Future<Output = Result<(V, Option<Instant>), E>> + Send + 'static,
    {
        let (deadline, capacity, weight) = (self.deadline, self.capacity, self.weight);
        let inner = self.inner.clone();
        let k = key.clone();
        let task = tokio::spawn(
            async move {
                let result = match deadline {
                    Some(d) => match tokio::time::timeout(d, fut).await {
                        Ok(r) => r.map_err(|e| Ended::Failed(Arc::new(e))),
                        Err(_) => Err(Ended::Abandoned(Abandoned::TimedOut(d))),
                    },
                    None => fut.await.map_err(|e| Ended::Failed(Arc::new(e))),
                };
                let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
                let ours = inner.finish(&k, generation);
                match result {
                    Ok((value, Some(until))) => {
                        let dropped = if ours {
                            inner.keep(k, value.clone(), until, capacity, weight)
                        } else {
                            Vec::new()
                        };
                        drop(inner);
                        drop(dropped);
                        Ok(value)
                    }
                    Ok((value, None)) => Ok(value),
                    Err(e) => Err(e),
                }
            }
            .instrument(tracing::Span::current()),
        );
        let abort = task.abort_handle();
        let inner = self.inner.clone();
        let shared = async move {
            match task.await {
                Ok(r) => r,
                // The task panicked or was aborted: its own code did not
                // remove the entry, so the next lookup would join a fetch
                // that never ends. Remove it here (once: the future is
                // shared) and fail every waiter.
                Err(_) => {
                    inner.lock().unwrap_or_else(|e| e.into_inner()).finish(&key, generation);
                    tracing::error!("a shared fetch failed unexpectedly; its waiters get an error");
                    Err(Ended::Abandoned(Abandoned::Panicked))
                }
            }
        }
        .boxed()
        .shared();
        (shared, abort)
    }

    /// A kept, unexpired value, without fetching.
    pub fn get(&self, key: &K) -> Option<V> {
        match self.lock().entries.get(key) {
            Some(Entry::Ready { value, until, .. }) if *until > Instant::now() => Some(value.clone()),
            _ => None,
        }
    }

    /// Keeps `value` for `key` until `until` (unless the cache is full).
    pub fn insert(&self, key: K, value: V, until: Instant) {
        let (capacity, weight) = (self.capacity, self.weight);
        let dropped = self.lock().keep(key, value, until, capacity, weight);
        drop(dropped);
    }

    /// Drops the kept value of `key` if `stale` says so (a fetch in flight
    /// is left alone).
    pub fn forget_if(&self, key: &K, stale: impl FnOnce(&V) -> bool) -> bool {
        let mut inner = self.lock();
        let drop_it = matches!(inner.entries.get(key), Some(Entry::Ready { value, .. }) if stale(value));
        if drop_it {
            inner.remove(key);
        }
        drop_it
    }

    /// Drops every expired value (they are zeroized as they drop); returns
    /// how many.
    pub fn sweep(&self) -> usize {
        let removed = self.lock().expired(Instant::now());
        // Dropped outside the lock.
        removed.len()
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, PartialEq)]
    enum TestError {
        Failed(&'static str),
        Abandoned(Abandoned),
    }

    impl From<Abandoned> for TestError {
        fn from(a: Abandoned) -> Self {
            TestError::Abandoned(a)
        }
    }

    type TestCache = Cache<&'static str, u32, TestError>;

    fn keep_for(secs: u64) -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(secs))
    }

    #[tokio::test]
    async fn concurrent_lookups_share_one_fetch_and_the_value_is_kept() {
        let cache = TestCache::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch("k", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok((7, keep_for(60)))
                    })
                    .await
            }));
        }
        let mut lookups = Vec::new();
        for t in tasks {
            let (v, l) = t.await.unwrap();
            assert_eq!(v.unwrap(), 7);
            lookups.push(l);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(lookups.iter().filter(|l| **l == Lookup::Miss).count(), 1);
        let (v, l) = cache.get_or_fetch("k", || async { Ok((0, None)) }).await;
        assert_eq!((v.unwrap(), l), (7, Lookup::Hit));
    }

    #[tokio::test]
    async fn failures_are_not_kept() {
        let cache = TestCache::new();
        let (v, _) = cache
            .get_or_fetch("k", || async { Err(TestError::Failed("boom")) })
            .await;
        assert_eq!(*v.unwrap_err(), TestError::Failed("boom"));
        assert!(cache.is_empty());
        let (v, l) = cache.get_or_fetch("k", || async { Ok((1, keep_for(60))) }).await;
        assert_eq!((v.unwrap(), l), (1, Lookup::Miss));
    }

    #[tokio::test]
    async fn expired_values_are_fetched_again() {
        let cache = TestCache::new();
        let _ = cache
            .get_or_fetch("k", || async { Ok((1, Some(Instant::now()))) })
            .await;
        let (v, l) = cache.get_or_fetch("k", || async { Ok((2, None)) }).await;
        assert_eq!((v.unwrap(), l), (2, Lookup::Miss));
        assert!(cache.is_empty(), "an unkept value leaves no entry");
    }

    #[allow(clippy::panic)]
    fn buggy_fetch() -> Result<(u32, Option<Instant>), TestError> {
        panic!("fetch bug")
    }

    #[tokio::test]
    async fn a_panicking_fetch_fails_its_own_lookup_and_joiners_fetch_anew() {
        let cache = TestCache::new();
        let first = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_fetch("k", || async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        buggy_fetch()
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (joined, l) = cache.get_or_fetch("k", || async { Ok((9, None)) }).await;
        assert_eq!(
            (joined.unwrap(), l),
            (9, Lookup::Miss),
            "the joiner fetched anew once the fetch it joined was gone"
        );
        let (v, _) = first.await.unwrap();
        assert_eq!(*v.unwrap_err(), TestError::Abandoned(Abandoned::Panicked));
        assert!(cache.is_empty(), "the entry of the panicked fetch is gone");
        let (v, l) = cache.get_or_fetch("k", || async { Ok((3, None)) }).await;
        assert_eq!(
            (v.unwrap(), l),
            (3, Lookup::Miss),
            "the next lookup fetches again at once"
        );
    }

    #[tokio::test]
    async fn a_hung_fetch_fails_at_its_deadline_and_a_joiner_waits_no_longer() {
        let cache = TestCache::new().with_deadline(Duration::from_millis(200));
        let started = Instant::now();
        let hung = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get_or_fetch("k", std::future::pending).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The dependency has recovered: the joiner waits for the hung fetch
        // only until its deadline, then gets an answer of its own.
        let (joined, _) = cache.get_or_fetch("k", || async { Ok((1, None)) }).await;
        assert_eq!(joined.unwrap(), 1);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_millis(1000),
            "{waited:?}"
        );
        let (v, _) = hung.await.unwrap();
        assert_eq!(
            *v.unwrap_err(),
            TestError::Abandoned(Abandoned::TimedOut(Duration::from_millis(200)))
        );
        let (v, l) = cache.get_or_fetch("k", || async { Ok((5, None)) }).await;
        assert_eq!((v.unwrap(), l), (5, Lookup::Miss));
    }

    #[tokio::test]
    async fn a_joiner_fetches_anew_only_once() {
        let cache = TestCache::new().with_deadline(Duration::from_millis(100));
        let spawn_hung =
            |cache: TestCache| tokio::spawn(async move { cache.get_or_fetch("k", std::future::pending).await });
        let first = spawn_hung(cache.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The joiner's own fetch hangs as well: it fails at its deadline.
        let (v, _) = cache.get_or_fetch("k", std::future::pending).await;
        assert!(matches!(*v.unwrap_err(), TestError::Abandoned(Abandoned::TimedOut(_))));
        assert!(first.await.unwrap().0.is_err());
    }

    #[tokio::test]
    async fn a_fetch_every_lookup_gave_up_on_is_abandoned_and_the_next_lookup_fetches_anew() {
        let cache = TestCache::new().with_deadline(Duration::from_secs(60));
        let dropped = Arc::new(AtomicUsize::new(0));
        struct CountDrop(Arc<AtomicUsize>);
        impl Drop for CountDrop {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let hung = |dropped: Arc<AtomicUsize>| {
            move || async move {
                let _guard = CountDrop(dropped);
                std::future::pending::<Result<(u32, Option<Instant>), TestError>>().await
            }
        };
        // Two lookups share the hung fetch; one gives up: it goes on.
        let lookup = |cache: &TestCache| {
            let (cache, fetch) = (cache.clone(), hung(dropped.clone()));
            tokio::spawn(async move { cache.get_or_fetch("k", fetch).await })
        };
        let first = lookup(&cache);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = lookup(&cache);
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.abort();
        assert!(first.await.is_err());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(cache.len(), 1, "one lookup still waits: the fetch goes on");
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        // The last one gives up: the fetch is abandoned, its entry gone.
        second.abort();
        assert!(second.await.is_err());
        assert!(cache.is_empty(), "no entry left for a fetch nobody waits for");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "the abandoned fetch was dropped");
        let (v, l) = cache.get_or_fetch("k", || async { Ok((8, None)) }).await;
        assert_eq!((v.unwrap(), l), (8, Lookup::Miss), "the next lookup fetches anew");
    }

    #[tokio::test]
    async fn sweeping_drops_expired_values_only() {
        let cache = TestCache::new();
        cache.insert("old", 1, Instant::now());
        cache.insert("new", 2, Instant::now() + Duration::from_secs(60));
        assert_eq!(cache.sweep(), 1);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&"new"), Some(2));
    }

    #[tokio::test]
    async fn a_full_cache_keeps_no_more_values() {
        let cache = TestCache::new().with_capacity(2);
        cache.insert("a", 1, Instant::now() + Duration::from_secs(60));
        cache.insert("b", 2, Instant::now() + Duration::from_secs(60));
        cache.insert("c", 3, Instant::now() + Duration::from_secs(60));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&"c"), None);
        let (v, _) = cache.get_or_fetch("d", || async { Ok((4, keep_for(60))) }).await;
        assert_eq!(v.unwrap(), 4, "a value that cannot be kept is still returned");
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test]
    async fn a_weighed_cache_evicts_the_values_kept_longest_to_stay_within_its_bytes() {
        let cache = TestCache::new().with_max_bytes(100, |v| u64::from(*v));
        let later = Instant::now() + Duration::from_secs(60);
        cache.insert("a", 40, later);
        cache.insert("b", 40, later);
        assert_eq!(cache.bytes(), 80);
        cache.insert("c", 40, later);
        assert_eq!(
            (cache.get(&"a"), cache.get(&"b"), cache.get(&"c")),
            (None, Some(40), Some(40))
        );
        assert_eq!(cache.bytes(), 80);
        // Replacing a value re-weighs it and moves it to the back.
        cache.insert("b", 10, later);
        cache.insert("d", 60, later);
        assert_eq!(
            (cache.get(&"b"), cache.get(&"c"), cache.get(&"d")),
            (Some(10), None, Some(60))
        );
        assert_eq!(cache.bytes(), 70);
        // A value heavier than the whole cache is not kept.
        cache.insert("e", 101, later);
        assert_eq!(cache.get(&"e"), None);
        assert!(cache.forget_if(&"b", |_| true));
        assert_eq!(cache.bytes(), 60);
        cache.insert("old", 30, Instant::now());
        assert_eq!(cache.sweep(), 1);
        assert_eq!((cache.bytes(), cache.len()), (60, 1));
    }

    #[tokio::test]
    async fn forgetting_drops_only_a_matching_value() {
        let cache = TestCache::new();
        cache.insert("k", 1, Instant::now() + Duration::from_secs(60));
        assert!(!cache.forget_if(&"k", |v| *v == 2));
        assert!(cache.forget_if(&"k", |v| *v == 1));
        assert!(cache.is_empty());
    }
}
