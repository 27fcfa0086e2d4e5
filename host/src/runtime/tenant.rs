//! A tenant's run-time account: what all its stages spend together, against
//! the tenant-wide quotas of its policy. One account per tenant per process,
//! shared (`Arc`) by every stage of every pipeline of that tenant, so two
//! pipelines cannot each spend the whole quota.
//!
//! Counters are atomics: stages charge them from their own blocking threads
//! without a lock, and a charge that would go over the limit is refused
//! without being applied (compare-and-swap), so the limit holds under races.

use crate::policy::Policy;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A quota the tenant went over; the message names the tenant, the figures
/// and the policy rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuotaError(pub String);

/// One bounded counter: a limit, what is used, and the rule that set it.
#[derive(Debug)]
struct Counter {
    /// Changed by a policy reload; what is used already stays charged.
    limit: AtomicU64,
    used: AtomicU64,
    rule: std::sync::Mutex<String>,
}

impl Counter {
    fn new(limit: u64, rule: String) -> Counter {
        Counter {
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
            rule: std::sync::Mutex::new(rule),
        }
    }

    fn set_limit(&self, limit: u64, rule: String) {
        self.limit.store(limit, Ordering::Relaxed);
        *self.rule.lock().unwrap_or_else(|p| p.into_inner()) = rule;
    }

    fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    fn rule(&self) -> String {
        self.rule.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds `n` if the result stays within the limit; otherwise leaves the
    /// counter alone and returns what it would have become.
    fn try_add(&self, n: u64) -> Result<u64, u64> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let after = cur.saturating_add(n);
            if after > self.limit() {
                return Err(after);
            }
            match self
                .used
                .compare_exchange_weak(cur, after, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(after),
                Err(now) => cur = now,
            }
        }
    }

    /// Takes `n` back (never below zero).
    fn sub(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }

    fn get(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

const MIB: u64 = 1 << 20;

/// What one tenant's stages spend together in this process.
#[derive(Debug)]
pub struct TenantAccount {
    name: String,
    cpu_weight: std::sync::atomic::AtomicU32,
    memory: Counter,
    instances: Counter,
    state: Counter,
}

impl TenantAccount {
    /// The account of `name` under `policy`'s tenant-wide quotas.
    pub fn from_policy(name: &str, policy: &Policy) -> TenantAccount {
        TenantAccount {
            name: name.to_string(),
            cpu_weight: policy.cpu_weight.clamp(1, 1000).into(),
            memory: Counter::new(
                policy.max_total_memory_mb.saturating_mul(MIB),
                policy.rule("max_total_memory_mb"),
            ),
            instances: Counter::new(policy.max_instances, policy.rule("max_instances")),
            state: Counter::new(
                policy.max_state_mb.saturating_mul(MIB),
                policy.rule("max_state_mb"),
            ),
        }
    }

    /// An account with no tenant-wide limits and weight 1: what a pipeline
    /// gets when nobody gave it its tenant's account (tests, `weft run`
    /// without a policy), so per-stage limits still apply and nothing else.
    pub fn unlimited(name: &str) -> TenantAccount {
        TenantAccount {
            name: name.to_string(),
            cpu_weight: 1.into(),
            memory: Counter::new(u64::MAX, "no tenant quota".into()),
            instances: Counter::new(u64::MAX, "no tenant quota".into()),
            state: Counter::new(u64::MAX, "no tenant quota".into()),
        }
    }

    /// Takes `policy`'s quotas (after the operator changed the tenant's
    /// policy): new charges are judged against them; what is already
    /// charged stays until released.
    pub fn apply(&self, policy: &Policy) {
        self.cpu_weight
            .store(policy.cpu_weight.clamp(1, 1000), Ordering::Relaxed);
        self.memory.set_limit(
            policy.max_total_memory_mb.saturating_mul(MIB),
            policy.rule("max_total_memory_mb"),
        );
        self.instances
            .set_limit(policy.max_instances, policy.rule("max_instances"));
        self.state.set_limit(
            policy.max_state_mb.saturating_mul(MIB),
            policy.rule("max_state_mb"),
        );
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tenant's weight in the fair worker pool (1..=1000).
    pub fn cpu_weight(&self) -> u32 {
        self.cpu_weight.load(Ordering::Relaxed)
    }

    /// Bytes of linear memories and tables of all live instances.
    pub fn memory_used(&self) -> u64 {
        self.memory.get()
    }

    pub fn memory_limit(&self) -> u64 {
        self.memory.limit()
    }

    /// Live plugin instances.
    pub fn instances(&self) -> u64 {
        self.instances.get()
    }

    /// Committed state bytes (keys + values) of all the tenant's stages.
    pub fn state_used(&self) -> u64 {
        self.state.get()
    }

    pub fn state_limit(&self) -> u64 {
        self.state.limit()
    }

    /// Charges `bytes` more of instance memory, or says why not. The error
    /// starts the way `Failure::from_wasm` recognises a memory limit.
    pub fn charge_memory(&self, what: &str, bytes: u64) -> Result<(), QuotaError> {
        self.memory.try_add(bytes).map(|_| ()).map_err(|after| {
            QuotaError(format!(
                "forcing trap when growing {what}: the instances of tenant `{}` would take {after} bytes together, over the tenant's total memory of {} MiB ({})",
                self.name,
                self.memory.limit() / MIB,
                self.memory.rule()
            ))
        })
    }

    pub fn release_memory(&self, bytes: u64) {
        self.memory.sub(bytes);
    }

    /// Counts one more live instance until the returned guard drops, or
    /// refuses when the tenant already has `max_instances`.
    pub fn start_instance(self: &Arc<Self>) -> Result<InstanceSlot, QuotaError> {
        match self.instances.try_add(1) {
            Ok(_) => Ok(InstanceSlot {
                account: self.clone(),
            }),
            Err(_) => Err(QuotaError(format!(
                "tenant `{}` already has {} live plugin instances, its maximum ({}); the instance was not created",
                self.name,
                self.instances.get(),
                self.instances.rule()
            ))),
        }
    }

    /// Checks that `more` bytes of state on top of what the tenant has
    /// committed stay within its quota (nothing is charged).
    pub fn check_state(&self, more: u64) -> Result<(), QuotaError> {
        let after = self.state.get().saturating_add(more);
        if after > self.state.limit() {
            return Err(self.state_error(after));
        }
        Ok(())
    }

    /// Charges `bytes` of newly committed state, or says why not.
    pub fn charge_state(&self, bytes: u64) -> Result<(), QuotaError> {
        self.state
            .try_add(bytes)
            .map(|_| ())
            .map_err(|after| self.state_error(after))
    }

    pub fn release_state(&self, bytes: u64) {
        self.state.sub(bytes);
    }

    fn state_error(&self, after: u64) -> QuotaError {
        QuotaError(format!(
            "state of tenant `{}` would hold {after} bytes, over its quota of {} MiB ({})",
            self.name,
            self.state.limit() / MIB,
            self.state.rule()
        ))
    }
}

/// One live instance counted against its tenant; dropping it (with the
/// instance) gives the slot back.
#[derive(Debug)]
pub struct InstanceSlot {
    account: Arc<TenantAccount>,
}

impl Drop for InstanceSlot {
    fn drop(&mut self) {
        self.account.instances.sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(memory_mb: u64, instances: u64, state_mb: u64) -> Policy {
        Policy {
            max_total_memory_mb: memory_mb,
            max_instances: instances,
            max_state_mb: state_mb,
            ..Policy::default()
        }
    }

    #[test]
    fn memory_charges_stop_at_the_total_and_come_back() {
        let a = TenantAccount::from_policy("t", &policy(2, 10, 1));
        assert!(a.charge_memory("memory", MIB).is_ok());
        assert!(a.charge_memory("memory", MIB).is_ok());
        let e = a.charge_memory("memory", 1).unwrap_err();
        assert!(e.0.contains("forcing trap when growing memory"), "{e}");
        assert!(e.0.contains("built-in policy `max_total_memory_mb`"), "{e}");
        assert_eq!(a.memory_used(), 2 * MIB, "a refused charge is not applied");
        a.release_memory(MIB);
        assert!(a.charge_memory("memory", MIB).is_ok());
    }

    #[test]
    fn instance_slots_are_counted_until_dropped() {
        let a = Arc::new(TenantAccount::from_policy("t", &policy(2, 2, 1)));
        let s1 = a.start_instance().unwrap();
        let _s2 = a.start_instance().unwrap();
        let e = a.start_instance().unwrap_err();
        assert!(e.0.contains("max_instances"), "{e}");
        drop(s1);
        assert_eq!(a.instances(), 1);
        assert!(a.start_instance().is_ok());
    }

    #[test]
    fn state_is_checked_and_charged_against_the_quota() {
        let a = TenantAccount::from_policy("t", &policy(2, 2, 1));
        assert!(a.check_state(MIB).is_ok());
        assert!(a.check_state(MIB + 1).is_err());
        a.charge_state(MIB - 10).unwrap();
        let e = a.charge_state(11).unwrap_err();
        assert!(e.0.contains("max_state_mb"), "{e}");
        a.release_state(100);
        assert!(a.charge_state(11).is_ok());
        assert_eq!(a.state_used(), MIB - 10 - 100 + 11);
    }

    #[test]
    fn unlimited_never_refuses() {
        let a = Arc::new(TenantAccount::unlimited("t"));
        a.charge_memory("memory", u64::MAX / 2).unwrap();
        a.charge_state(u64::MAX / 2).unwrap();
        let _s = a.start_instance().unwrap();
        assert_eq!(a.cpu_weight(), 1);
    }
}
