//! One instance's memory budget: its linear memories *and* its tables are
//! charged to the stage's `memory_mb`, together. wasmtime's `StoreLimits`
//! bounds each memory's size but a table only by element count per table,
//! so a plugin could grow a funcref table by a billion entries (8 bytes
//! each, host memory) under a 128 MiB `memory_mb`. Growth past the budget
//! traps, so the record fails as `memory-limit` and the instance is
//! replaced.
//!
//! Every byte is also charged to the tenant's account ([`TenantAccount`]),
//! so all the instances of one tenant together stay within its
//! `max_total_memory_mb`; the budget gives its bytes back when the store
//! (and so the instance) is dropped.

use super::tenant::TenantAccount;
use std::sync::Arc;
use wasmtime::ResourceLimiter;

/// Host bytes one table element takes (a pointer, per wasmtime's docs).
pub const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// Most core instances, tables and memories one component may create. The
/// Rust, Python, JavaScript and C plugins need a handful; a component that
/// asks for thousands is an attack on the host's bookkeeping.
pub const MAX_INSTANCES: usize = 32;
pub const MAX_TABLES: usize = 64;
pub const MAX_MEMORIES: usize = 16;

/// The budget of one store (one instance of a stage).
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: usize,
    account: Arc<TenantAccount>,
}

impl Budget {
    /// A budget charged to no tenant-wide total.
    pub fn new(memory_bytes: u64) -> Budget {
        Budget::for_tenant(memory_bytes, Arc::new(TenantAccount::unlimited("")))
    }

    /// A budget of `memory_bytes` whose bytes also count against `account`.
    pub fn for_tenant(memory_bytes: u64, account: Arc<TenantAccount>) -> Budget {
        Budget {
            limit: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
            used: 0,
            account,
        }
    }

    /// Bytes of memories and tables charged so far.
    pub fn used(&self) -> usize {
        self.used
    }

    fn charge(&mut self, what: &str, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let more = desired.saturating_sub(current);
        let after = self.used.saturating_add(more);
        if after > self.limit {
            // The wording is what `Failure::from_wasm` classifies as a
            // memory limit.
            wasmtime::bail!(
                "forcing trap when growing {what}: memories and tables would take {after} bytes, over the stage's memory limit of {} bytes",
                self.limit
            );
        }
        // The wording of a refusal is also a memory limit's (see
        // `TenantAccount::charge_memory`).
        self.account
            .charge_memory(what, more as u64)
            .map_err(wasmtime::Error::msg)?;
        self.used = after;
        Ok(true)
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.account.release_memory(self.used as u64);
    }
}

impl ResourceLimiter for Budget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        self.charge("memory", current, desired)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        self.charge(
            "a table",
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_share_one_budget() {
        let mut b = Budget::new(1 << 20);
        assert!(b.memory_growing(0, 512 << 10, None).unwrap());
        // 64k elements x 8 bytes = 512 KiB: exactly the rest.
        assert!(b.table_growing(0, 64 << 10, None).unwrap());
        let e = b.table_growing(64 << 10, (64 << 10) + 1, None).unwrap_err();
        assert!(
            e.to_string().contains("forcing trap when growing a table"),
            "{e}"
        );
        assert!(b.memory_growing(512 << 10, (512 << 10) + 1, None).is_err());
        assert_eq!(b.used(), 1 << 20);
        // A grow past the declared maximum fails as the spec says (-1), no trap.
        assert!(!b.table_growing(1, 10, Some(5)).unwrap());
    }

    #[test]
    fn budgets_of_one_tenant_share_its_total_and_give_it_back() {
        let policy = crate::policy::Policy {
            max_total_memory_mb: 1,
            ..Default::default()
        };
        let account = Arc::new(TenantAccount::from_policy("t", &policy));
        let mut a = Budget::for_tenant(1 << 20, account.clone());
        let mut b = Budget::for_tenant(1 << 20, account.clone());
        assert!(a.memory_growing(0, 768 << 10, None).unwrap());
        // Within b's own limit, over the tenant's total.
        let e = b.memory_growing(0, 512 << 10, None).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("forcing trap when growing memory"), "{msg}");
        assert!(
            msg.contains("tenant `t`") && msg.contains("max_total_memory_mb"),
            "{msg}"
        );
        assert_eq!(b.used(), 0);
        drop(a);
        assert_eq!(account.memory_used(), 0);
        assert!(b.memory_growing(0, 512 << 10, None).unwrap());
        assert_eq!(account.memory_used(), 512 << 10);
    }
}
