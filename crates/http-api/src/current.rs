//! Settings a running node replaces whole: its credentials and the key that signs causal
//! contexts, read again from their files on SIGHUP (see `crates/server/src/serve.rs`).
//!
//! Requests take the value as it is when they start and keep it to the end, so a request
//! sees the old credentials or the new ones, never a mix of both files. A reader holds the
//! lock only to clone an `Arc`: a reload never waits for a request, nor a request for a
//! reload's file reads.

use std::sync::{Arc, PoisonError, RwLock};

/// A value shared by every clone, replaced whole by [`Current::set`].
#[derive(Debug, Default)]
pub struct Current<T>(Arc<RwLock<Arc<T>>>);

// Not derived: a clone shares the value, whatever `T` is.
impl<T> Clone for Current<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Current<T> {
    /// Shares `value` until it is replaced.
    pub fn new(value: T) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The value now.
    pub fn get(&self) -> Arc<T> {
        // Only `set` writes, and it cannot panic while holding the lock: a poisoned lock
        // still holds a whole value.
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the value for every clone; requests already under way keep the old one.
    pub fn set(&self, value: T) {
        let value = Arc::new(value);
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clone_sees_a_replacement_and_a_taken_value_stays() {
        let current = Current::new(1);
        let other = current.clone();
        let taken = current.get();
        other.set(2);
        assert_eq!(*current.get(), 2);
        assert_eq!(*taken, 1);
    }
}
