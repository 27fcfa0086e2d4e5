//! The process's plugin workers, shared fairly between tenants.
//!
//! Every plugin call (instantiation included) runs holding a [`Permit`], so
//! at most `workers` calls run at once however many pipelines the process
//! has; without it, one tenant with many pipelines (or slow plugins) would
//! take every core from the others. When calls wait, the next permit goes
//! to the waiting tenant with the smallest *virtual time* (start-time fair
//! queuing): each finished call charges its elapsed time divided by the
//! tenant's `cpu_weight`, so with two saturating tenants of weights 1 and 3
//! the second gets three times the worker time. A tenant that comes back
//! from idle starts at the current minimum virtual time, not where it left
//! off, so idling does not bank credit it could then spend monopolising the
//! workers. And while another tenant waits, no tenant is granted more than
//! its weighted share of the workers (at least one): a long call cannot be
//! preempted, so this keeps slow calls of one tenant from filling every
//! worker.
//!
//! Calls run on blocking threads, so this is a std `Mutex` + `Condvar`.

use super::tenant::TenantAccount;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What the scheduler saw of one tenant, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TenantUsage {
    /// Permits granted.
    pub grants: u64,
    /// Time spent holding permits.
    pub busy: Duration,
    /// Time spent waiting for permits, in all and the longest single wait.
    pub waited: Duration,
    pub longest_wait: Duration,
}

#[derive(Debug, Default)]
struct Tenant {
    weight: u32,
    /// When its last call ended: a tenant that ran within [`RECENT`] still
    /// counts as active, so its share is kept for it between its batches.
    last_release: Option<Instant>,
    /// Virtual time: worker seconds used divided by the weight.
    vtime: f64,
    running: usize,
    /// Tickets of the calls waiting, in arrival order.
    waiting: VecDeque<u64>,
    usage: TenantUsage,
}

/// How long a tenant that stopped calling keeps its share reserved. A
/// pipeline calls its plugins batch after batch with Kafka work in between;
/// without the reservation another tenant takes every worker in those
/// gaps and each of this tenant's batches waits for one of its calls (calls
/// cannot be preempted), which the tenancy bench measured as a 2-9x p99.
pub const RECENT: Duration = Duration::from_secs(1);

impl Tenant {
    fn active(&self) -> bool {
        self.running > 0 || !self.waiting.is_empty()
    }

    /// Active, or active within [`RECENT`] of `now`.
    fn recent(&self, now: Instant) -> bool {
        self.active()
            || self
                .last_release
                .is_some_and(|t| now.saturating_duration_since(t) < RECENT)
    }
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    /// Most permits held at once, ever (a test's proof of the bound).
    peak_running: usize,
    /// Virtual time of the last grant: where a tenant restarts when nobody
    /// else is active.
    vclock: f64,
    next_ticket: u64,
    tenants: HashMap<String, Tenant>,
}

impl State {
    /// The smallest virtual time among active tenants (or the clock).
    fn vmin(&self) -> f64 {
        self.tenants
            .values()
            .filter(|t| t.active())
            .map(|t| t.vtime)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))))
            .unwrap_or(self.vclock)
    }

    /// The tenant whose first waiting call gets the next free worker.
    fn next(&self, workers: usize, now: Instant) -> Option<&str> {
        if self.running >= workers {
            return None;
        }
        let recent_weight: u64 = self
            .tenants
            .values()
            .filter(|t| t.recent(now))
            .map(|t| u64::from(t.weight))
            .sum();
        let share = |t: &Tenant| -> usize {
            let s = (workers as u64).saturating_mul(u64::from(t.weight)) / recent_weight.max(1);
            (s as usize).max(1)
        };
        // Someone recently active who is not waiting now: a free worker may
        // be kept for them rather than lent past a waiter's share.
        let reserved = self
            .tenants
            .values()
            .any(|t| t.recent(now) && t.waiting.is_empty() && t.running < share(t));
        let best = |eligible: &dyn Fn(&Tenant) -> bool| {
            self.tenants
                .iter()
                .filter(|(_, t)| !t.waiting.is_empty() && eligible(t))
                .min_by(|(_, a), (_, b)| {
                    a.vtime
                        .total_cmp(&b.vtime)
                        .then(a.waiting.front().cmp(&b.waiting.front()))
                })
                .map(|(n, _)| n.as_str())
        };
        let alone = |t: &Tenant| {
            !self
                .tenants
                .values()
                .any(|o| !std::ptr::eq(o, t) && o.recent(now))
        };
        // Within its share; past it only when no other tenant is (recently)
        // active; and if every waiter is at its share while nobody else
        // needs the worker (rounding down left one over), it is not idle.
        best(&|t| t.running < share(t) || alone(t)).or_else(|| {
            if reserved {
                None
            } else {
                best(&|_| true)
            }
        })
    }
}

/// At most `workers` plugin calls at once, granted fairly between tenants.
#[derive(Debug)]
pub struct FairScheduler {
    workers: usize,
    state: Mutex<State>,
    freed: Condvar,
}

impl FairScheduler {
    /// `workers` permits (at least one).
    pub fn new(workers: usize) -> FairScheduler {
        FairScheduler {
            workers: workers.max(1),
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        }
    }

    /// One worker per core the process may use.
    pub fn per_core() -> FairScheduler {
        FairScheduler::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds
        // consistent counts.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a worker for one call of `account`'s tenant.
    pub fn acquire(self: &Arc<Self>, account: &Arc<TenantAccount>) -> Permit {
        let t0 = Instant::now();
        let name = account.name();
        let mut st = self.lock();
        let vmin = st.vmin();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        {
            let t = st.tenants.entry(name.to_string()).or_default();
            t.weight = account.cpu_weight().max(1);
            if !t.active() {
                // Back from idle: no credit for the time away.
                t.vtime = t.vtime.max(vmin);
            }
            t.waiting.push_back(ticket);
        }
        loop {
            let mine = st.next(self.workers, Instant::now()) == Some(name)
                && st
                    .tenants
                    .get(name)
                    .is_some_and(|t| t.waiting.front() == Some(&ticket));
            if mine {
                break;
            }
            // Woken by every release; the timeout ends a reservation whose
            // tenant stayed away.
            st = self
                .freed
                .wait_timeout(st, RECENT / 4)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let waited = t0.elapsed();
        st.running += 1;
        st.peak_running = st.peak_running.max(st.running);
        if let Some(t) = st.tenants.get_mut(name) {
            t.waiting.pop_front();
            t.running += 1;
            t.usage.grants += 1;
            t.usage.waited += waited;
            t.usage.longest_wait = t.usage.longest_wait.max(waited);
            let v = t.vtime;
            st.vclock = st.vclock.max(v);
        }
        drop(st);
        // Another worker may still be free for the next tenant in line.
        self.freed.notify_all();
        Permit {
            scheduler: self.clone(),
            tenant: name.to_string(),
            since: Instant::now(),
        }
    }

    fn release(&self, tenant: &str, held: Duration) {
        let mut st = self.lock();
        st.running = st.running.saturating_sub(1);
        if let Some(t) = st.tenants.get_mut(tenant) {
            t.running = t.running.saturating_sub(1);
            t.last_release = Some(Instant::now());
            t.usage.busy += held;
            // At least a microsecond, so every call moves the tenant on.
            t.vtime += held.as_secs_f64().max(1e-6) / f64::from(t.weight.max(1));
        }
        drop(st);
        self.freed.notify_all();
    }

    /// What the scheduler saw of `tenant`.
    pub fn usage(&self, tenant: &str) -> TenantUsage {
        self.lock()
            .tenants
            .get(tenant)
            .map(|t| t.usage)
            .unwrap_or_default()
    }

    /// Most permits ever held at once.
    pub fn peak_running(&self) -> usize {
        self.lock().peak_running
    }
}

/// A worker held for one plugin call; dropping it (also when the call
/// panics) frees the worker and charges the time to the tenant.
#[derive(Debug)]
pub struct Permit {
    scheduler: Arc<FairScheduler>,
    tenant: String,
    since: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.scheduler.release(&self.tenant, self.since.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn account(name: &str, weight: u32) -> Arc<TenantAccount> {
        let policy = Policy {
            cpu_weight: weight,
            ..Policy::default()
        };
        Arc::new(TenantAccount::from_policy(name, &policy))
    }

    /// `threads` threads of `tenant` each making calls of `work` until `stop`.
    fn saturate(
        s: &Arc<FairScheduler>,
        a: &Arc<TenantAccount>,
        threads: usize,
        work: Duration,
        stop: &Arc<AtomicBool>,
    ) -> Vec<std::thread::JoinHandle<()>> {
        (0..threads)
            .map(|_| {
                let (s, a, stop) = (s.clone(), a.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _p = s.acquire(&a);
                        std::thread::sleep(work);
                    }
                })
            })
            .collect()
    }

    #[test]
    fn weights_share_one_worker_in_proportion() {
        let s = Arc::new(FairScheduler::new(1));
        let (a, b) = (account("a", 1), account("b", 3));
        let stop = Arc::new(AtomicBool::new(false));
        let mut hs = saturate(&s, &a, 2, Duration::from_millis(4), &stop);
        hs.extend(saturate(&s, &b, 2, Duration::from_millis(4), &stop));
        std::thread::sleep(Duration::from_millis(1200));
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().unwrap();
        }
        let (ua, ub) = (s.usage("a"), s.usage("b"));
        let ratio = ub.busy.as_secs_f64() / ua.busy.as_secs_f64();
        assert!((2.3..=3.9).contains(&ratio), "{ua:?} {ub:?} ratio {ratio}");
        let grants = ub.grants as f64 / ua.grants as f64;
        assert!((2.3..=3.9).contains(&grants), "grants ratio {grants}");
        assert_eq!(s.peak_running(), 1);
    }

    #[test]
    fn a_tenant_gets_no_more_than_its_share_while_another_waits() {
        let s = Arc::new(FairScheduler::new(2));
        let (a, b) = (account("a", 1), account("b", 1));
        // a holds both workers while alone (work-conserving).
        let p1 = s.acquire(&a);
        let p2 = s.acquire(&a);
        assert_eq!(s.peak_running(), 2);
        // b and a both wait; when one worker frees, b gets it, and a (at
        // its share of 1 of 2) does not get it back while b waits.
        let running_a = Arc::new(AtomicUsize::new(0));
        let hb = {
            let (s, b) = (s.clone(), b.clone());
            std::thread::spawn(move || {
                let _p = s.acquire(&b);
                std::thread::sleep(Duration::from_millis(100));
            })
        };
        std::thread::sleep(Duration::from_millis(30));
        let ha = {
            let (s, a, r) = (s.clone(), a.clone(), running_a.clone());
            std::thread::spawn(move || {
                let _p = s.acquire(&a);
                r.fetch_add(1, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(30));
        drop(p1);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(s.usage("b").grants, 1, "b got the freed worker");
        assert_eq!(running_a.load(Ordering::SeqCst), 0, "a is at its share");
        drop(p2);
        ha.join().unwrap();
        hb.join().unwrap();
        assert_eq!(running_a.load(Ordering::SeqCst), 1);
        assert_eq!(s.usage("a").grants, 3);
    }

    #[test]
    fn a_light_tenant_is_not_starved_by_a_heavy_one() {
        let s = Arc::new(FairScheduler::new(1));
        let (heavy, light) = (account("heavy", 1), account("light", 1));
        let stop = Arc::new(AtomicBool::new(false));
        // Heavy calls of 100 ms, so the margin between fair (at most one
        // heavy call ahead) and FIFO (four) outlasts scheduling noise on a
        // loaded machine.
        let hs = saturate(&s, &heavy, 4, Duration::from_millis(100), &stop);
        std::thread::sleep(Duration::from_millis(150));
        let mut worst = Duration::ZERO;
        for _ in 0..10 {
            let t0 = Instant::now();
            drop(s.acquire(&light));
            worst = worst.max(t0.elapsed());
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().unwrap();
        }
        // One heavy call in progress at most (100 ms): FIFO would make it
        // wait behind all four heavy threads (400 ms).
        assert!(worst < Duration::from_millis(300), "waited {worst:?}");
        assert_eq!(s.usage("light").grants, 10);
    }

    #[test]
    fn a_recently_active_tenant_finds_its_worker_free_between_batches() {
        let s = Arc::new(FairScheduler::new(2));
        let (heavy, light) = (account("heavy", 1), account("light", 1));
        let stop = Arc::new(AtomicBool::new(false));
        // Two threads of 40 ms calls: they would hold both workers.
        let hs = saturate(&s, &heavy, 2, Duration::from_millis(40), &stop);
        std::thread::sleep(Duration::from_millis(100));
        let mut waits = Vec::new();
        for _ in 0..10 {
            let t0 = Instant::now();
            let p = s.acquire(&light);
            waits.push(t0.elapsed());
            std::thread::sleep(Duration::from_millis(5));
            drop(p);
            // The gap between two batches (Kafka work, not plugin calls).
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().unwrap();
        }
        // The first call may wait for one heavy call; after that, the
        // light tenant's worker is kept for it.
        let later = waits[1..].iter().max().copied().unwrap_or_default();
        assert!(later < Duration::from_millis(15), "waits {waits:?}");
    }

    #[test]
    fn idling_does_not_bank_credit() {
        let s = Arc::new(FairScheduler::new(1));
        let (a, b) = (account("a", 1), account("b", 1));
        // a works alone for a while, b idles.
        for _ in 0..20 {
            let _p = s.acquire(&a);
            std::thread::sleep(Duration::from_millis(2));
        }
        // b arrives: it starts at a's virtual time, not at 0, so a is not
        // shut out for the 40 ms a used alone.
        let stop = Arc::new(AtomicBool::new(false));
        let mut hs = saturate(&s, &b, 1, Duration::from_millis(2), &stop);
        hs.extend(saturate(&s, &a, 1, Duration::from_millis(2), &stop));
        std::thread::sleep(Duration::from_millis(40));
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().unwrap();
        }
        assert!(s.usage("a").grants > 22, "{:?}", s.usage("a"));
    }

    #[test]
    fn a_permit_is_released_when_its_call_panics() {
        let s = Arc::new(FairScheduler::new(1));
        let a = account("a", 1);
        let r = {
            let (s, a) = (s.clone(), a.clone());
            std::thread::spawn(move || {
                let _p = s.acquire(&a);
                panic!("plugin call panicked");
            })
            .join()
        };
        assert!(r.is_err());
        // The worker is free again: this does not block.
        let (tx, rx) = std::sync::mpsc::channel();
        let h = {
            let (s, a) = (s.clone(), a.clone());
            std::thread::spawn(move || {
                let _p = s.acquire(&a);
                let _ = tx.send(());
            })
        };
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        h.join().unwrap();
        assert_eq!(s.usage("a").grants, 2);
    }
}
