//! What the daemon keeps from the state between requests, so that an API request does not open the
//! state (starting a DuckDB instance costs tens of milliseconds) only to read the same rows again.
//! Everything kept is tied to the [`StateStamp`] it was read under and dropped when the state
//! changes on disk (from this process or another).
//!
//! [`Verdicts`]: valid tokens. A verdict is trusted while the stamp is unchanged (a revoked token,
//! a disabled user, a changed group membership all are writes), for at most [`TRUST`] (file times
//! are coarse; this bounds how long a write that left the stamp unchanged could go unseen), and
//! never past the token's expiry. Only valid verdicts are kept: refusals are rare and each is
//! checked against the state.
//!
//! [`Stamped`]: one value derived from the state (the manifest's freshness and profiles), read
//! again when the stamp changes.

use crate::state::auth::Caller;
use crate::state::{Reader, StateStamp, StateStore};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an unchanged stamp is trusted.
pub const TRUST: Duration = Duration::from_secs(10);

/// Past this many remembered tokens, the oldest half is forgotten.
const MAX_ENTRIES: usize = 4096;

struct Entry {
    stamp: StateStamp,
    until: Instant,
    caller: Caller,
}

#[derive(Default)]
pub struct Verdicts {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl Verdicts {
    /// The caller a token (by [`crate::state::auth::token_key`]) was found to be, when the state is
    /// still as it was then.
    pub fn get(&self, key: &[u8; 32], stamp: &StateStamp) -> Option<Caller> {
        let entries = self.entries.lock().ok()?;
        let e = entries.get(key)?;
        (e.stamp == *stamp && Instant::now() < e.until).then(|| e.caller.clone())
    }

    /// Remembers a valid verdict, made from the state as `stamp` saw it (taken before reading).
    /// `expires_in`: how long the token stays valid, when it expires.
    pub fn put(
        &self,
        key: [u8; 32],
        stamp: StateStamp,
        caller: Caller,
        expires_in: Option<Duration>,
    ) {
        let now = Instant::now();
        let until = now + expires_in.map_or(TRUST, |left| left.min(TRUST));
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES {
            let mut ages: Vec<Instant> = entries.values().map(|e| e.until).collect();
            ages.sort();
            let cut = ages[ages.len() / 2];
            entries.retain(|_, e| e.until > cut);
        }
        entries.insert(
            key,
            Entry {
                stamp,
                until,
                caller,
            },
        );
    }
}

/// One value derived from the state, kept until the state changes.
pub struct Stamped<T> {
    slot: Mutex<Option<(StateStamp, Arc<T>)>>,
}

impl<T> Default for Stamped<T> {
    fn default() -> Self {
        Stamped {
            slot: Mutex::new(None),
        }
    }
}

impl<T> Stamped<T> {
    /// The value as `load` reads it from `store`, or as it was read before when the state has not
    /// changed since. Blocking (it may open the state): call it off the async workers.
    pub fn get<E>(
        &self,
        store: &StateStore,
        load: impl FnOnce(&Reader) -> Result<T, E>,
        open_failed: impl FnOnce(crate::state::StateError) -> E,
    ) -> Result<Arc<T>, E> {
        // Taken before reading: a write meanwhile makes the next call read again.
        let stamp = store.stamp();
        if let Ok(slot) = self.slot.lock() {
            if let Some((s, v)) = slot.as_ref() {
                if *s == stamp {
                    return Ok(v.clone());
                }
            }
        }
        let value = {
            let r = store.read().map_err(open_failed)?;
            Arc::new(load(&r)?)
        };
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some((stamp, value.clone()));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;

    fn caller() -> Caller {
        Caller {
            user: "ann".into(),
            groups: vec!["analysts".into()],
            token_id: "t1".into(),
        }
    }

    #[test]
    fn a_verdict_holds_while_the_state_is_unchanged_and_not_past_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("system.duckdb"));
        let _ = store.write().unwrap();
        let v = Verdicts::default();
        let key = [1u8; 32];
        let stamp = store.stamp();
        v.put(key, stamp.clone(), caller(), None);
        assert_eq!(v.get(&key, &store.stamp()), Some(caller()));
        assert_eq!(v.get(&[2u8; 32], &stamp), None, "another token");
        // Any committed write, here a new token, changes the stamp: the verdict is checked again.
        crate::state::auth::create_token(&mut store.write().unwrap(), "bo", &[], "admin").unwrap();
        assert_ne!(store.stamp(), stamp, "a committed write changes the stamp");
        assert_eq!(v.get(&key, &store.stamp()), None);
        // A token about to expire is not trusted past its expiry.
        v.put(key, store.stamp(), caller(), Some(Duration::ZERO));
        assert_eq!(v.get(&key, &store.stamp()), None);
    }

    #[test]
    fn a_stamped_value_is_read_again_only_after_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("system.duckdb"));
        let _ = store.write().unwrap();
        let cache: Stamped<usize> = Stamped::default();
        let reads = std::cell::Cell::new(0);
        let load = |_: &Reader| -> Result<usize, String> {
            reads.set(reads.get() + 1);
            Ok(reads.get())
        };
        let get = || *cache.get(&store, load, |e| e.to_string()).unwrap();
        assert_eq!(get(), 1);
        assert_eq!(get(), 1, "unchanged state: not read again");
        crate::state::auth::create_token(&mut store.write().unwrap(), "bo", &[], "admin").unwrap();
        assert_eq!(get(), 2);
    }
}
