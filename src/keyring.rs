//! The HMAC keys of one secret and of a rotation's other secrets, swappable while requests use
//! them: connection ids and the peer leg each keep one, and `id_rotation` replaces both when
//! the secret files change, so a rotation needs no restart.

use std::sync::{Arc, RwLock};

use hmac::Hmac;
use sha2::Sha256;

pub type Key = Hmac<Sha256>;

/// The keys in force: `current` signs and verifies, `previous` only verify.
#[derive(Debug)]
pub struct Keys {
    pub current: Key,
    pub previous: Vec<Key>,
}

impl Keys {
    /// Whether `check` accepts any of the keys, the signing one first.
    pub fn any(&self, check: impl Fn(&Key) -> bool) -> bool {
        check(&self.current) || self.previous.iter().any(check)
    }
}

#[derive(Debug)]
pub struct KeyRing(RwLock<Arc<Keys>>);

impl KeyRing {
    pub fn new(current: Key, previous: Vec<Key>) -> Self {
        KeyRing(RwLock::new(Arc::new(Keys { current, previous })))
    }

    /// The keys in force now; a request keeps the set it started with.
    pub fn get(&self) -> Arc<Keys> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, current: Key, previous: Vec<Key>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Keys { current, previous });
    }
}
