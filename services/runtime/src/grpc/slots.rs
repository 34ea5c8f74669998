//! A cap on how many of something one key (an agency) holds open at once in
//! this process, such as server streams. A [`Slot`] is taken when the thing
//! opens and given back when it is dropped, however it ends, so a client
//! that disconnects frees its slot without telling anyone. The count lives in
//! memory: each replica keeps its own, so the cap a caller meets across a
//! deployment is the cap times the replicas it reaches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open slots per key, at most `cap` each.
#[derive(Debug)]
pub struct KeyedSlots {
    cap: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One held slot; dropping it gives it back.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<KeyedSlots>,
    key: String,
}

impl KeyedSlots {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// A slot for `key`, or `None` when it already holds `cap`.
    pub fn try_take(self: &Arc<Self>, key: &str) -> Option<Slot> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let held = open.entry(key.to_owned()).or_default();
        if *held >= self.cap {
            return None;
        }
        *held += 1;
        Some(Slot {
            slots: self.clone(),
            key: key.to_owned(),
        })
    }

    /// How many slots `key` holds now.
    pub fn held(&self, key: &str) -> usize {
        let open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.get(key).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(held) = open.get_mut(&self.key) {
            *held = held.saturating_sub(1);
            // Keys come and go; an idle one costs nothing.
            if *held == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_its_cap_and_a_dropped_slot_is_given_back() {
        let slots = KeyedSlots::new(2);
        let first = slots.try_take("a").unwrap();
        let _second = slots.try_take("a").unwrap();
        assert!(slots.try_take("a").is_none());
        // Another key has a cap of its own.
        let other = slots.try_take("b").unwrap();
        assert_eq!((slots.held("a"), slots.held("b")), (2, 1));
        drop(first);
        assert_eq!(slots.held("a"), 1);
        let _third = slots.try_take("a").unwrap();
        drop(other);
        assert_eq!(slots.held("b"), 0);
        assert!(slots.open.lock().unwrap().get("b").is_none());
    }
}
