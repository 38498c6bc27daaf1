//! A keyed cache with single-flight: concurrent lookups of a missing key
//! share one fetch, successful results are kept until their expiry, and
//! failures are never kept. Fetches run in their own task, so a cancelled
//! caller neither aborts the fetch for the others nor leaves a stuck entry.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

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

type Pending<V, E> = Shared<BoxFuture<'static, Result<V, Arc<E>>>>;

enum Entry<V, E> {
    Ready { value: V, until: Instant },
    Pending(Pending<V, E>),
}

/// Entries above which expired ones are swept on insert.
const SWEEP_ABOVE: usize = 4096;

pub struct Cache<K, V, E> {
    entries: Arc<Mutex<HashMap<K, Entry<V, E>>>>,
}

impl<K, V, E> Clone for Cache<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
        }
    }
}

impl<K, V, E> Default for Cache<K, V, E> {
    fn default() -> Self {
        Self {
            entries: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K, V, E> Cache<K, V, E>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    pub fn new() -> Self {
        Self::default()
    }

    /// The value for `key`: a kept one, a fetch in flight, or a new fetch.
    /// `fetch` returns the value and how long it may be kept (`None`: not
    /// kept, only shared with concurrent lookups).
    pub async fn get_or_fetch<F, Fut>(&self, key: K, fetch: F) -> (Result<V, Arc<E>>, Lookup)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, Option<Instant>), E>> + Send + 'static,
    {
        let (pending, lookup) = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            match entries.get(&key) {
                Some(Entry::Ready { value, until }) if *until > Instant::now() => {
                    return (Ok(value.clone()), Lookup::Hit);
                }
                Some(Entry::Pending(p)) => (p.clone(), Lookup::Joined),
                _ => {
                    let fut = fetch();
                    let map = self.entries.clone();
                    let k = key.clone();
                    let task = tokio::spawn(async move {
                        let result = fut.await;
                        let mut entries = map.lock().unwrap_or_else(|e| e.into_inner());
                        match result {
                            Ok((value, Some(until))) => {
                                if entries.len() > SWEEP_ABOVE {
                                    let now = Instant::now();
                                    entries.retain(|_, e| !matches!(e, Entry::Ready { until, .. } if *until <= now));
                                }
                                entries.insert(
                                    k,
                                    Entry::Ready {
                                        value: value.clone(),
                                        until,
                                    },
                                );
                                Ok(value)
                            }
                            Ok((value, None)) => {
                                entries.remove(&k);
                                Ok(value)
                            }
                            Err(e) => {
                                entries.remove(&k);
                                Err(Arc::new(e))
                            }
                        }
                    });
                    let shared = async move {
                        match task.await {
                            Ok(r) => r,
                            // The task panicked or was aborted at shutdown; there
                            // is no value to share. The entry was not updated.
                            Err(_) => std::future::pending().await,
                        }
                    }
                    .boxed()
                    .shared();
                    entries.insert(key, Entry::Pending(shared.clone()));
                    (shared, Lookup::Miss)
                }
            }
        };
        (pending.await, lookup)
    }

    /// A kept, unexpired value, without fetching.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some(Entry::Ready { value, until }) if *until > Instant::now() => Some(value.clone()),
            _ => None,
        }
    }

    /// Keeps `value` for `key` until `until`.
    pub fn insert(&self, key: K, value: V, until: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() > SWEEP_ABOVE {
            let now = Instant::now();
            entries.retain(|_, e| !matches!(e, Entry::Ready { until, .. } if *until <= now));
        }
        entries.insert(key, Entry::Ready { value, until });
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_lookups_share_one_fetch_and_the_value_is_kept() {
        let cache: Cache<&str, u32, String> = Cache::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch("k", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok((7, Some(Instant::now() + Duration::from_secs(60))))
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
        let cache: Cache<&str, u32, String> = Cache::new();
        let (v, _) = cache.get_or_fetch("k", || async { Err("boom".to_string()) }).await;
        assert_eq!(v.unwrap_err().as_str(), "boom");
        assert!(cache.is_empty());
        let (v, l) = cache
            .get_or_fetch("k", || async {
                Ok((1, Some(Instant::now() + Duration::from_secs(60))))
            })
            .await;
        assert_eq!((v.unwrap(), l), (1, Lookup::Miss));
    }

    #[tokio::test]
    async fn expired_values_are_fetched_again() {
        let cache: Cache<&str, u32, String> = Cache::new();
        let _ = cache
            .get_or_fetch("k", || async { Ok((1, Some(Instant::now()))) })
            .await;
        let (v, l) = cache.get_or_fetch("k", || async { Ok((2, None)) }).await;
        assert_eq!((v.unwrap(), l), (2, Lookup::Miss));
        assert!(cache.is_empty(), "an unkept value leaves no entry");
    }
}
