//! The per-stage key-value state plugins reach through `weft:plugin/state`,
//! bounded in every dimension a plugin controls: key size, value size,
//! entry count and total bytes, counting the writes of the call in progress
//! (which only reach the shared state when the call returns normally).
//! Committed bytes also count against the tenant's `max_state_mb`, across
//! all its stages ([`TenantAccount`]).

use super::tenant::TenantAccount;
use std::collections::BTreeMap;

/// Most entries one stage may keep.
pub const STATE_MAX_ENTRIES: usize = 10_000;
/// Longest key.
pub const STATE_MAX_KEY_BYTES: usize = 1024;
/// Longest value.
pub const STATE_MAX_VALUE_BYTES: usize = 64 * 1024;
/// Keys plus values of one stage, committed and pending together.
pub const STATE_MAX_BYTES: usize = 16 << 20;

/// A stage's committed state, with its size kept as it changes.
#[derive(Debug, Default)]
pub struct StateMap {
    entries: BTreeMap<String, Vec<u8>>,
    bytes: usize,
}

impl StateMap {
    pub fn get(&self, key: &str) -> Option<&Vec<u8>> {
        self.entries.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys plus values.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes the state would hold after `pending`, minus what it holds now.
    pub fn growth(&self, pending: &PendingWrites) -> i64 {
        let mut delta: i64 = 0;
        for (k, v) in &pending.writes {
            if let Some(old) = self.entries.get(k) {
                delta -= (k.len() + old.len()) as i64;
            }
            if let Some(v) = v {
                delta += (k.len() + v.len()) as i64;
            }
        }
        delta
    }

    /// Applies a finished call's writes, charging what they add to (or
    /// giving what they free back to) the tenant. Writes that would take
    /// the tenant over its state quota are discarded, all of them.
    pub fn commit(
        &mut self,
        pending: PendingWrites,
        account: &TenantAccount,
    ) -> Result<(), super::tenant::QuotaError> {
        let growth = self.growth(&pending);
        if growth > 0 {
            account.charge_state(growth as u64)?;
        }
        self.apply(pending);
        if growth < 0 {
            account.release_state(growth.unsigned_abs());
        }
        Ok(())
    }

    /// Applies a finished call's writes.
    pub fn apply(&mut self, pending: PendingWrites) {
        for (k, v) in pending.writes {
            if let Some(old) = self.entries.remove(&k) {
                self.bytes -= k.len() + old.len();
            }
            if let Some(v) = v {
                self.bytes += k.len() + v.len();
                self.entries.insert(k, v);
            }
        }
    }
}

/// The state writes of the call in progress (`None` = delete).
#[derive(Debug, Default)]
pub struct PendingWrites {
    writes: BTreeMap<String, Option<Vec<u8>>>,
    bytes: usize,
}

impl PendingWrites {
    pub fn get(&self, key: &str) -> Option<&Option<Vec<u8>>> {
        self.writes.get(key)
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    fn put(&mut self, key: String, value: Option<Vec<u8>>) {
        if let Some(old) = self.writes.get(&key) {
            self.bytes -= key.len() + old.as_ref().map_or(0, Vec::len);
        }
        self.bytes += key.len() + value.as_ref().map_or(0, Vec::len);
        self.writes.insert(key, value);
    }

    /// Records `set(key, value)` if it keeps the stage within its bounds
    /// and the tenant within its state quota.
    pub fn set(
        &mut self,
        committed: &StateMap,
        account: &TenantAccount,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), String> {
        if key.len() > STATE_MAX_KEY_BYTES {
            return Err(format!(
                "state key of {} bytes exceeds the {STATE_MAX_KEY_BYTES}-byte limit",
                key.len()
            ));
        }
        if value.len() > STATE_MAX_VALUE_BYTES {
            return Err(format!(
                "state value of {} bytes exceeds the {STATE_MAX_VALUE_BYTES}-byte limit",
                value.len()
            ));
        }
        let is_new = !committed.contains(&key) && !self.writes.contains_key(&key);
        if is_new && committed.len() + self.writes.len() >= STATE_MAX_ENTRIES {
            return Err(format!("state is full ({STATE_MAX_ENTRIES} entries)"));
        }
        // Conservative: an overwrite is charged as if the old value stayed.
        let after = committed.bytes() + self.bytes + key.len() + value.len();
        if after > STATE_MAX_BYTES {
            return Err(format!(
                "state would hold {after} bytes, over the {STATE_MAX_BYTES}-byte limit per stage"
            ));
        }
        // Also conservative, against what all the tenant's stages committed.
        account
            .check_state((self.bytes + key.len() + value.len()) as u64)
            .map_err(|e| e.to_string())?;
        self.put(key, Some(value));
        Ok(())
    }

    /// Records `delete(key)`. A key that exists nowhere needs no record, so
    /// deletes can never hold more than the state itself.
    pub fn delete(&mut self, committed: &StateMap, key: String) {
        if key.len() > STATE_MAX_KEY_BYTES {
            return; // no such key can have been stored
        }
        if committed.contains(&key) || self.writes.contains_key(&key) {
            self.put(key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_hold_for_keys_values_entries_and_bytes() {
        let mut st = StateMap::default();
        let mut p = PendingWrites::default();
        let t = TenantAccount::unlimited("t");
        assert!(p
            .set(&st, &t, "k".repeat(STATE_MAX_KEY_BYTES + 1), vec![])
            .is_err());
        assert!(p
            .set(&st, &t, "k".into(), vec![0; STATE_MAX_VALUE_BYTES + 1])
            .is_err());
        // Total bytes: 300 values of 64 KiB are 19 MiB > 16 MiB.
        let mut refused = 0;
        for i in 0..300 {
            if p.set(&st, &t, format!("v{i}"), vec![1; STATE_MAX_VALUE_BYTES])
                .is_err()
            {
                refused += 1;
            }
        }
        assert!(
            refused > 0 && p.bytes <= STATE_MAX_BYTES,
            "{refused} {}",
            p.bytes
        );
        // Deletes of keys that exist nowhere are not recorded.
        let before = p.writes.len();
        for i in 0..1000 {
            p.delete(&st, format!("missing{i}"));
        }
        assert_eq!(p.writes.len(), before);
        st.apply(p);
        assert!(st.bytes() <= STATE_MAX_BYTES);
        let mut p = PendingWrites::default();
        p.delete(&st, "v0".into());
        st.apply(p);
        assert!(st.get("v0").is_none());
        assert_eq!(
            st.bytes(),
            st.entries
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
        );
    }

    #[test]
    fn the_tenant_is_charged_for_commits_and_refunded_for_deletes() {
        let policy = crate::policy::Policy {
            max_state_mb: 1,
            ..Default::default()
        };
        let t = TenantAccount::from_policy("t", &policy);
        let (mut a, mut b) = (StateMap::default(), StateMap::default());
        let mut p = PendingWrites::default();
        for i in 0..10 {
            p.set(&a, &t, format!("a{i}"), vec![1; 60_000]).unwrap();
        }
        a.commit(p, &t).unwrap();
        assert_eq!(t.state_used(), a.bytes() as u64);
        // Another stage of the tenant: refused once the tenant is full.
        let mut p = PendingWrites::default();
        let mut refused = None;
        for i in 0..10 {
            if let Err(e) = p.set(&b, &t, format!("b{i}"), vec![1; 60_000]) {
                refused = Some(e);
                break;
            }
        }
        let e = refused.expect("the tenant's quota refuses a set");
        assert!(
            e.contains("tenant `t`") && e.contains("max_state_mb"),
            "{e}"
        );
        b.commit(p, &t).unwrap();
        assert!(t.state_used() <= 1 << 20);
        // Deleting gives bytes back; overwriting with less too.
        let before = t.state_used();
        let mut p = PendingWrites::default();
        p.delete(&a, "a0".into());
        p.set(&a, &t, "a1".into(), vec![1; 10]).unwrap();
        a.commit(p, &t).unwrap();
        assert_eq!(t.state_used(), before - 60_002 - 59_990);
        assert_eq!(t.state_used(), (a.bytes() + b.bytes()) as u64);
    }
}
