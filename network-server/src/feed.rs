//! Live feeds for watchers (the REST event streams): items published under a key (a gateway,
//! a device) reach whoever watches that key right now, in publication order, and nobody else.
//!
//! Why one bounded `tokio::sync::broadcast` channel per watched key rather than one shared
//! channel filtered by each watcher: a busy network would fill a shared channel with other
//! keys' items, so a watcher of a quiet device would be told it lagged behind frames it never
//! wanted, and every watcher would wake for every item of the whole network. Per key, a
//! watcher only wakes for its own items and the bound is its own.
//!
//! The publisher's cost when nobody watches anything is one atomic load; when someone
//! watches other keys, a short mutex and a map lookup; only for a watched key is the item
//! built (the closure of [`Feed::send_with`]) and cloned into the channel. A slow watcher
//! never slows the publisher: `broadcast::Sender::send` never waits, the channel keeps its
//! last `capacity` items and the slow watcher's receiver reports how many it missed.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// Channels of the keys being watched. Cheap to clone (shared).
pub struct Feed<K, T> {
    inner: Arc<Inner<K, T>>,
}

/// Items kept per watched key by [`Feed::default`].
pub const DEFAULT_CAPACITY: usize = 1024;

impl<K: Hash + Eq + Copy, T: Clone> Default for Feed<K, T> {
    fn default() -> Self {
        Feed::new(DEFAULT_CAPACITY)
    }
}

impl<K, T> Clone for Feed<K, T> {
    fn clone(&self) -> Self {
        Feed { inner: self.inner.clone() }
    }
}

struct Inner<K, T> {
    /// Watchers of all keys together: the publisher's first (and usually only) check.
    watchers: AtomicUsize,
    channels: Mutex<HashMap<K, broadcast::Sender<T>>>,
    capacity: usize,
}

impl<K: Hash + Eq + Copy, T: Clone> Feed<K, T> {
    /// Each watched key keeps at most `capacity` items for its slowest watcher.
    pub fn new(capacity: usize) -> Self {
        Feed { inner: Arc::new(Inner { watchers: AtomicUsize::new(0), channels: Mutex::default(), capacity: capacity.max(1) }) }
    }

    /// True when someone watches some key (one atomic load).
    pub fn any_watched(&self) -> bool {
        self.inner.watchers.load(Ordering::SeqCst) > 0
    }

    /// True when someone watches `key`.
    pub fn is_watched(&self, key: K) -> bool {
        self.any_watched() && self.lock().contains_key(&key)
    }

    /// Hands the item `make` builds to the watchers of `key`; `make` only runs when there are
    /// some. Never waits for a watcher.
    pub fn send_with(&self, key: K, make: impl FnOnce() -> T) {
        if !self.any_watched() {
            return;
        }
        // Sent under the lock so that items of one key keep the order of their publishers.
        let channels = self.lock();
        if let Some(tx) = channels.get(&key) {
            let _ = tx.send(make());
        }
    }

    /// Starts watching `key`: the watch receives every item sent after this returns.
    pub fn watch(&self, key: K) -> Watch<K, T> {
        let rx = {
            let mut channels = self.lock();
            let rx = channels.entry(key).or_insert_with(|| broadcast::channel(self.inner.capacity).0).subscribe();
            self.inner.watchers.fetch_add(1, Ordering::SeqCst);
            rx
        };
        Watch { rx: Some(rx), key, feed: self.clone() }
    }

    /// Keys watched right now.
    pub fn watched_keys(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, broadcast::Sender<T>>> {
        self.inner.channels.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a watcher gets next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next<T> {
    Item(T),
    /// The watcher was too slow: this many items were skipped (the next ones follow).
    Lagged(u64),
}

/// One watcher of one key; stops watching when dropped (the key's channel goes with its
/// last watcher).
pub struct Watch<K: Hash + Eq + Copy, T: Clone> {
    rx: Option<broadcast::Receiver<T>>,
    key: K,
    feed: Feed<K, T>,
}

impl<K: Hash + Eq + Copy, T: Clone> Watch<K, T> {
    /// The next item, or how many were missed; `None` once the feed is gone.
    pub async fn next(&mut self) -> Option<Next<T>> {
        let rx = self.rx.as_mut()?;
        match rx.recv().await {
            Ok(item) => Some(Next::Item(item)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Next::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    pub fn key(&self) -> K {
        self.key
    }
}

impl<K: Hash + Eq + Copy, T: Clone> Drop for Watch<K, T> {
    fn drop(&mut self) {
        let mut channels = self.feed.lock();
        drop(self.rx.take());
        if channels.get(&self.key).is_some_and(|tx| tx.receiver_count() == 0) {
            channels.remove(&self.key);
        }
        self.feed.inner.watchers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_watchers_of_a_key_get_its_items_in_order() {
        let feed: Feed<u8, u32> = Feed::new(16);
        let mut built = 0;
        feed.send_with(1, || {
            built += 1;
            0
        });
        assert_eq!(built, 0, "nothing is built while nobody watches");
        let mut one = feed.watch(1);
        let mut two = feed.watch(2);
        for i in 1..=3 {
            feed.send_with(1, || i);
        }
        feed.send_with(2, || 20);
        feed.send_with(3, || {
            built += 1;
            30
        });
        assert_eq!(built, 0, "an unwatched key builds nothing");
        for i in 1..=3 {
            assert_eq!(one.next().await, Some(Next::Item(i)));
        }
        assert_eq!(two.next().await, Some(Next::Item(20)));
    }

    #[tokio::test]
    async fn a_slow_watcher_is_told_how_many_it_missed_and_the_sender_never_waits() {
        let feed: Feed<u8, u32> = Feed::new(4);
        let mut w = feed.watch(7);
        for i in 0..10 {
            feed.send_with(7, || i);
        }
        assert_eq!(w.next().await, Some(Next::Lagged(6)));
        for i in 6..10 {
            assert_eq!(w.next().await, Some(Next::Item(i)));
        }
    }

    #[tokio::test]
    async fn the_last_watcher_leaving_removes_the_channel() {
        let feed: Feed<u8, u32> = Feed::new(4);
        let a = feed.watch(1);
        let b = feed.watch(1);
        assert!(feed.is_watched(1) && feed.any_watched());
        drop(a);
        assert!(feed.is_watched(1));
        drop(b);
        assert!(!feed.is_watched(1) && !feed.any_watched());
        assert_eq!(feed.watched_keys(), 0);
    }
}
