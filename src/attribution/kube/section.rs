//! One kind of object as a watch keeps it: by key, by IP address, and replaced as a whole after
//! each (re)list so that objects deleted while the watch was down expire. Pure: the watch
//! feeds it [`Change`]s; tests feed it the same.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

/// What a watch reports, in kube's order: `Restart`, `Put`…, `Synced` for a (re)list, then
/// `Apply` and `Delete` as objects change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<T> {
    /// A list begins: what follows until `Synced` is the whole set.
    Restart,
    /// One object of the list.
    Put(T),
    /// The list is complete: it replaces what was known.
    Synced,
    /// An object was added or changed.
    Apply(T),
    /// An object was deleted.
    Delete(T),
}

/// What a section needs to know of the objects it holds.
pub trait Entry {
    /// Unique within the section (a pod's UID; `namespace/name` otherwise).
    fn key(&self) -> Arc<str>;
    /// The addresses the object answers at.
    fn addresses(&self) -> &[std::net::IpAddr] {
        &[]
    }
    /// Whether it holds its addresses now (a finished pod keeps its IP in its status, but the
    /// IP may already be another pod's).
    fn holds_addresses(&self) -> bool {
        true
    }
}

/// The objects of one watch.
#[derive(Debug)]
pub struct Section<T> {
    items: HashMap<Arc<str>, Arc<T>>,
    /// Every object that claims an address, the latest claim last.
    by_address: HashMap<IpAddr, Vec<Arc<str>>>,
    /// The list in progress.
    relisting: Option<HashMap<Arc<str>, Arc<T>>>,
    /// A list completed at least once.
    synced: bool,
}

impl<T> Default for Section<T> {
    fn default() -> Self {
        Section {
            items: HashMap::new(),
            by_address: HashMap::new(),
            relisting: None,
            synced: false,
        }
    }
}

impl<T: Entry> Section<T> {
    pub fn apply(&mut self, change: Change<T>) {
        match change {
            Change::Restart => self.relisting = Some(HashMap::new()),
            Change::Put(item) => {
                let item = Arc::new(item);
                match &mut self.relisting {
                    Some(list) => {
                        list.insert(item.key(), item);
                    }
                    // A list item without a list start: treat it as a change.
                    None => self.upsert(item),
                }
            }
            Change::Synced => {
                if let Some(list) = self.relisting.take() {
                    self.items = list;
                    self.reindex();
                }
                self.synced = true;
            }
            Change::Apply(item) => self.upsert(Arc::new(item)),
            Change::Delete(item) => self.remove(&item.key()),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Arc<T>> {
        self.items.get(key)
    }

    /// The object at `ip`: the latest claim of an object that holds it, else the latest claim.
    pub fn at(&self, ip: IpAddr) -> Option<&Arc<T>> {
        let claims = self.by_address.get(&ip)?;
        let mut objects = claims.iter().rev().filter_map(|k| self.items.get(k));
        let newest = objects.clone().next();
        objects.find(|o| o.holds_addresses()).or(newest)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<T>> {
        self.items.values()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether a list has completed (before that, an unknown address says nothing).
    pub fn synced(&self) -> bool {
        self.synced
    }

    fn upsert(&mut self, item: Arc<T>) {
        let key = item.key();
        self.unindex(&key);
        for ip in item.addresses() {
            self.by_address.entry(*ip).or_default().push(key.clone());
        }
        self.items.insert(key, item);
    }

    fn remove(&mut self, key: &str) {
        self.unindex(key);
        self.items.remove(key);
    }

    fn unindex(&mut self, key: &str) {
        let Some(old) = self.items.get(key) else {
            return;
        };
        for ip in old.addresses() {
            if let Some(claims) = self.by_address.get_mut(ip) {
                claims.retain(|k| &**k != key);
                if claims.is_empty() {
                    self.by_address.remove(ip);
                }
            }
        }
    }

    fn reindex(&mut self) {
        self.by_address.clear();
        for (key, item) in &self.items {
            for ip in item.addresses() {
                self.by_address.entry(*ip).or_default().push(key.clone());
            }
        }
        // Within a list there is no order of claims: holders first is all that matters, and
        // `at` prefers holders anyway.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone)]
    struct Thing {
        key: &'static str,
        ips: Vec<IpAddr>,
        holds: bool,
    }

    impl Entry for Thing {
        fn key(&self) -> Arc<str> {
            Arc::from(self.key)
        }
        fn addresses(&self) -> &[IpAddr] {
            &self.ips
        }
        fn holds_addresses(&self) -> bool {
            self.holds
        }
    }

    fn thing(key: &'static str, ip: &str, holds: bool) -> Thing {
        Thing {
            key,
            ips: vec![ip.parse().unwrap()],
            holds,
        }
    }

    fn key_at(s: &Section<Thing>, ip: &str) -> Option<&'static str> {
        s.at(ip.parse().unwrap()).map(|t| t.key)
    }

    #[test]
    fn a_relist_replaces_everything_and_stale_objects_expire() {
        let mut s = Section::default();
        s.apply(Change::Restart);
        s.apply(Change::Put(thing("a", "10.0.0.1", true)));
        s.apply(Change::Put(thing("b", "10.0.0.2", true)));
        assert!(s.is_empty(), "nothing is visible before the list completes");
        s.apply(Change::Synced);
        assert!(s.synced());
        assert_eq!(s.len(), 2);
        // The watch broke; "b" was deleted meanwhile; the relist does not have it.
        s.apply(Change::Restart);
        s.apply(Change::Put(thing("a", "10.0.0.1", true)));
        assert_eq!(
            key_at(&s, "10.0.0.2"),
            Some("b"),
            "kept until the list completes"
        );
        s.apply(Change::Synced);
        assert_eq!(s.len(), 1);
        assert_eq!(key_at(&s, "10.0.0.2"), None);
        assert_eq!(key_at(&s, "10.0.0.1"), Some("a"));
    }

    #[test]
    fn a_reused_address_belongs_to_the_object_that_holds_it() {
        let mut s = Section::default();
        s.apply(Change::Apply(thing("old", "10.0.0.9", true)));
        // The old pod finishes; a new one gets its IP.
        s.apply(Change::Apply(thing("old", "10.0.0.9", false)));
        s.apply(Change::Apply(thing("new", "10.0.0.9", true)));
        assert_eq!(key_at(&s, "10.0.0.9"), Some("new"));
        // The old pod's update arrives late: it still does not hold the address.
        s.apply(Change::Apply(thing("old", "10.0.0.9", false)));
        assert_eq!(key_at(&s, "10.0.0.9"), Some("new"));
        // Deleting the old one leaves the new one alone.
        s.apply(Change::Delete(thing("old", "10.0.0.9", false)));
        assert_eq!(key_at(&s, "10.0.0.9"), Some("new"));
        s.apply(Change::Delete(thing("new", "10.0.0.9", true)));
        assert_eq!(key_at(&s, "10.0.0.9"), None);
        assert!(s.by_address.is_empty(), "no claim outlives its object");
    }

    #[test]
    fn without_a_holder_the_latest_claim_answers() {
        let mut s = Section::default();
        s.apply(Change::Apply(thing("a", "10.0.0.5", false)));
        s.apply(Change::Apply(thing("b", "10.0.0.5", false)));
        assert_eq!(key_at(&s, "10.0.0.5"), Some("b"));
    }

    #[test]
    fn an_update_moves_the_address() {
        let mut s = Section::default();
        s.apply(Change::Apply(thing("a", "10.0.0.5", true)));
        s.apply(Change::Apply(thing("a", "10.0.0.6", true)));
        assert_eq!(key_at(&s, "10.0.0.5"), None);
        assert_eq!(key_at(&s, "10.0.0.6"), Some("a"));
    }
}
