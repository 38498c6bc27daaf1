//! One memory budget for everything the provider holds on behalf of mounts.
//!
//! One process per node serves every namespace, so bounding each input on
//! its own is not enough: a tenant who stays within every limit can still
//! start enough mounts at once to have the process killed by its container's
//! memory limit. Every stage that holds bytes for a mount takes a [`Charge`]
//! from one node-wide [`MemoryBudget`] before (or, for bytes only the SDK
//! can read, as) it holds them, and returns it when they are dropped:
//!
//! | stage | what is charged, and until when |
//! |---|---|
//! | `request` | a `Mount` request, by its encoded size before it is decoded, and the work of parsing it; until it is parsed |
//! | `class` | the validated class: objects, JMESPath programs, compiled templates; for the mount |
//! | `aws` | the responses of AWS calls as their bodies arrive; until the call returns |
//! | `values` | each fetched value; as long as any mount, response or cache holds it |
//! | `files` | files rendered into new buffers (JMESPath results, decoded values, keys, templates) and the work of rendering them; as long as they are held |
//! | `response` | a driver-writes response, encoded; until the driver has read it |
//! | `kept` | values kept by the value cache or for brownout serving; until evicted |
//!
//! **Fair shares.** Each mount may hold up to its floor
//! (`--memory-floor-per-mount`, 256 KiB, at most half the budget shared by
//! `--max-concurrent-mounts`) out of a reserve set aside for as many mounts
//! as `--max-concurrent-mounts` admits (a mount that arrives while that
//! many hold a floor gets none). Above its floor a mount draws from the
//! shared rest, which cannot take from the reserve. So a tenant whose
//! mounts fill the shared part never stops another tenant's ordinary
//! mount, and a charge within a floor is never refused and never waits. A
//! charge above the floor that does not fit waits, holding nothing, until
//! bytes are returned or the mount's deadline passes, then fails the mount
//! with `RESOURCE_EXHAUSTED` naming the budget and its flag; a mount that
//! already holds more than its floor, and work that cannot wait (on a
//! blocking thread, or holding another limited slot), fail at once.
//! Nothing is allocated for a charge that failed.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::telemetry::Metrics;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The budget when the container has no memory limit: what the default
/// derivation gives under the chart's 100 MiB limit.
pub const DEFAULT_BUDGET: u64 = 50 * MIB;
/// The smallest budget (a flag or a limit below it is raised to it).
pub const MIN_BUDGET: u64 = 8 * MIB;
/// Bytes held per byte of an encoded `Mount` request until it is parsed:
/// the transport's buffer, the decoded message, and the maps of its
/// attributes and secrets read from it (measured: `spec::tests`).
pub const REQUEST_FACTOR: u64 = 4;
/// What the process needs beyond the budget (the binary, the runtime,
/// connection pools, allocator slack) is at most this share of its memory
/// limit: the default budget is the limit times `BUDGET_SHARE`.
pub const BUDGET_SHARE: f64 = 0.5;
/// What each admitted mount may hold out of the reserve.
pub const DEFAULT_MOUNT_FLOOR: u64 = 256 * KIB;

/// Where a mount's bytes are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Request,
    Class,
    Aws,
    Values,
    Files,
    Response,
    Kept,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Request,
        Stage::Class,
        Stage::Aws,
        Stage::Values,
        Stage::Files,
        Stage::Response,
        Stage::Kept,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Request => "request",
            Stage::Class => "class",
            Stage::Aws => "aws",
            Stage::Values => "values",
            Stage::Files => "files",
            Stage::Response => "response",
            Stage::Kept => "kept",
        }
    }

    /// What the stage holds, for error messages.
    fn what(self) -> &'static str {
        match self {
            Stage::Request => "its request",
            Stage::Class => "its class",
            Stage::Aws => "AWS responses",
            Stage::Values => "fetched values",
            Stage::Files => "rendering its files",
            Stage::Response => "its response",
            Stage::Kept => "keeping values",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How large the budget is and how it is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    /// Bytes of the whole budget (`--memory-budget`).
    pub total: u64,
    /// Bytes each admitted mount may hold out of the reserve.
    pub floor: u64,
    /// Mounts admitted at once (`--max-concurrent-mounts`): the reserve is
    /// a floor for each (at most half the budget).
    pub mounts: usize,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        Self {
            total: DEFAULT_BUDGET,
            floor: DEFAULT_MOUNT_FLOOR,
            mounts: 128,
        }
    }
}

/// The node-wide budget. The part above the mounts' floors (`shared`) is
/// counted down as charges take it. The reserve is not counted: at most
/// `--max-concurrent-mounts` mounts hold a seat at once, and a mount with
/// a seat holds at most its floor from the reserve, so what seats hold
/// always fits in it and a charge within a floor never waits or fails.
pub struct MemoryBudget {
    total: u64,
    shared_total: u64,
    floor: u64,
    /// Bytes of the shared part not charged now.
    shared_free: AtomicU64,
    /// Seats taken, and how many there are.
    seats: AtomicUsize,
    max_seats: usize,
    /// Woken whenever bytes of the shared part are returned.
    freed: Notify,
    used: [AtomicU64; Stage::ALL.len()],
    gauges: Vec<Gauge>,
    refusals: Vec<Counter>,
    waits: Vec<Counter>,
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("total", &self.total)
            .field("shared", &self.shared_total)
            .field("floor", &self.floor)
            .finish_non_exhaustive()
    }
}

impl MemoryBudget {
    pub fn new(settings: BudgetSettings, metrics: &Metrics) -> Arc<Self> {
        let total = settings.total.max(MIN_BUDGET);
        let mounts = settings.mounts.max(1);
        // The reserve: a floor for each admitted mount, at most half.
        let floor = settings.floor.min(total / 2 / mounts as u64);
        let reserve = floor * mounts as u64;
        let shared_total = total - reserve;
        let (gauges, refusals, waits) = metrics.memory(Stage::ALL.map(Stage::as_str).as_slice(), total, reserve);
        Arc::new(Self {
            total,
            shared_total,
            floor,
            shared_free: AtomicU64::new(shared_total),
            seats: AtomicUsize::new(0),
            max_seats: mounts,
            freed: Notify::new(),
            used: Default::default(),
            gauges,
            refusals,
            waits,
        })
    }

    /// Bytes of the whole budget.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The most the values kept beyond a mount (the value cache, last good
    /// values) may weigh: half of the part above the mounts' floors.
    pub fn kept_max(&self) -> u64 {
        self.shared_total / 2
    }

    /// Bytes charged now, all stages together.
    pub fn used(&self) -> u64 {
        self.used.iter().map(|u| u.load(Ordering::Relaxed)).sum()
    }

    /// Bytes charged now to `stage`.
    pub fn used_by(&self, stage: Stage) -> u64 {
        self.used[stage.index()].load(Ordering::Relaxed)
    }

    fn account(&self, stage: Stage, bytes: u64, add: bool) {
        let i = stage.index();
        if add {
            self.used[i].fetch_add(bytes, Ordering::Relaxed);
            self.gauges[i].inc_by(bytes as i64);
        } else {
            self.used[i].fetch_sub(bytes, Ordering::Relaxed);
            self.gauges[i].dec_by(bytes as i64);
        }
    }

    fn refused(&self, stage: Stage) {
        self.refusals[stage.index()].inc();
    }

    /// A charge outside any mount (values kept by a cache), from the shared
    /// part only, without waiting.
    pub fn try_charge_detached(self: &Arc<Self>, stage: Stage, bytes: u64) -> Result<Charge, MemoryError> {
        match self.take_shared(bytes) {
            true => Ok(self.granted(None, stage, bytes, true)),
            false => Err(self.refuse(stage, bytes, 0, None)),
        }
    }

    /// Takes `bytes` of the shared part now, if there are.
    fn take_shared(&self, bytes: u64) -> bool {
        self.shared_free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| free.checked_sub(bytes))
            .is_ok()
    }

    /// A seat, if fewer than `--max-concurrent-mounts` are taken.
    fn take_seat(&self) -> bool {
        self.seats
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_seats).then_some(n + 1)
            })
            .is_ok()
    }

    /// A refusal of `bytes` for `stage` to a mount holding `held`, counted.
    fn refuse(&self, stage: Stage, bytes: u64, held: u64, waited: Option<Duration>) -> MemoryError {
        self.refused(stage);
        self.error(stage, bytes, held, waited)
    }

    /// Turns taken bytes into a charge.
    fn granted(self: &Arc<Self>, ledger: Option<&Arc<Ledger>>, stage: Stage, bytes: u64, shared: bool) -> Charge {
        self.account(stage, bytes, true);
        if let Some(l) = ledger {
            l.held.fetch_add(bytes, Ordering::Relaxed);
        }
        Charge {
            budget: self.clone(),
            ledger: ledger.cloned(),
            stage,
            bytes,
            shared,
        }
    }

    fn error(&self, stage: Stage, bytes: u64, held: u64, waited: Option<Duration>) -> MemoryError {
        MemoryError {
            stage,
            wanted: bytes,
            held,
            budget: self.total,
            shared: self.shared_total,
            waited,
        }
    }
}

/// Bytes held against the budget; returned when dropped.
pub struct Charge {
    budget: Arc<MemoryBudget>,
    /// The ledger of the mount that took it, if any.
    ledger: Option<Arc<Ledger>>,
    stage: Stage,
    bytes: u64,
    /// Taken from the shared part (else from its mount's floor).
    shared: bool,
}

impl fmt::Debug for Charge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Charge({} bytes of {})", self.bytes, self.stage.as_str())
    }
}

impl Charge {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Counts the charge under `stage` from now on.
    pub fn restage(&mut self, stage: Stage) {
        if stage != self.stage {
            self.budget.account(self.stage, self.bytes, false);
            self.budget.account(stage, self.bytes, true);
            self.stage = stage;
        }
    }

    /// Adds `other` to this charge if it was taken from the same place for
    /// the same stage (one charge instead of many), else gives it back.
    pub fn merge(&mut self, mut other: Charge) -> Result<(), Charge> {
        let same_ledger = match (&self.ledger, &other.ledger) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => Arc::ptr_eq(&self.budget, &other.budget),
            _ => false,
        };
        if !(same_ledger && self.stage == other.stage && self.shared == other.shared) {
            return Err(other);
        }
        self.bytes += other.bytes;
        other.bytes = 0;
        Ok(())
    }

    /// Returns what is above `bytes` (an estimate settled to what is held).
    pub fn shrink_to(&mut self, bytes: u64) {
        if bytes >= self.bytes {
            return;
        }
        let freed = self.bytes - bytes;
        self.release(freed);
        self.bytes = bytes;
    }

    fn release(&self, bytes: u64) {
        self.budget.account(self.stage, bytes, false);
        if let Some(l) = &self.ledger {
            l.held.fetch_sub(bytes, Ordering::Relaxed);
            if !self.shared {
                l.floor_held.fetch_sub(bytes, Ordering::Relaxed);
            }
        }
        if self.shared {
            self.budget.shared_free.fetch_add(bytes, Ordering::AcqRel);
            self.budget.freed.notify_waiters();
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.release(self.bytes);
        }
    }
}

/// What one mount holds: all its live charges, the part of them taken from
/// its floor, and whether it has a seat (a floor) at all. Its seat is
/// returned when the mount and every charge it took are gone.
struct Ledger {
    budget: Arc<MemoryBudget>,
    held: AtomicU64,
    floor_held: AtomicU64,
    seat: bool,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if self.seat {
            self.budget.seats.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The budget as one mount sees it: its floor, its deadline, and the
/// charges it holds now.
#[derive(Clone)]
pub struct MountMemory {
    ledger: Arc<Ledger>,
    deadline: Instant,
}

impl fmt::Debug for MountMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MountMemory(holds {} bytes)", self.held())
    }
}

impl MountMemory {
    /// The ledger of a new mount that must be done by `deadline`, with a
    /// floor if fewer than `--max-concurrent-mounts` mounts hold one (the
    /// others draw from the shared part only).
    pub fn new(budget: Arc<MemoryBudget>, deadline: Instant) -> Self {
        let seat = budget.take_seat();
        Self {
            ledger: Arc::new(Ledger {
                budget,
                held: AtomicU64::new(0),
                floor_held: AtomicU64::new(0),
                seat,
            }),
            deadline,
        }
    }

    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.ledger.budget
    }

    /// Bytes this mount's live charges hold.
    pub fn held(&self) -> u64 {
        self.ledger.held.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from this mount's floor, if they fit in what is left
    /// of it (checked and taken at once, whatever else of the mount runs).
    fn take_floor(&self, bytes: u64) -> bool {
        let floor = self.ledger.budget.floor;
        self.ledger.seat
            && self
                .ledger
                .floor_held
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                    h.checked_add(bytes).filter(|t| *t <= floor)
                })
                .is_ok()
    }

    /// Takes `bytes` now, from the floor if they fit in it, else from the
    /// shared part.
    fn try_take(&self, stage: Stage, bytes: u64) -> Option<Charge> {
        let budget = &self.ledger.budget;
        if self.take_floor(bytes) {
            return Some(budget.granted(Some(&self.ledger), stage, bytes, false));
        }
        budget
            .take_shared(bytes)
            .then(|| budget.granted(Some(&self.ledger), stage, bytes, true))
    }

    /// Takes `bytes` for `stage`, waiting until the mount's deadline for
    /// bytes of the shared part to be returned if they are in use. A charge
    /// within the mount's floor never waits; one above it waits only while
    /// the mount holds no more than its floor: a mount that holds more
    /// fails at once, so that mounts never wait for each other's memory in
    /// a circle. A waiting charge holds nothing while it waits.
    pub async fn charge(&self, stage: Stage, bytes: u64) -> Result<Charge, MemoryError> {
        let budget = &self.ledger.budget;
        let refuse = |waited| budget.refuse(stage, bytes, self.held(), waited);
        if let Some(c) = self.try_take(stage, bytes) {
            return Ok(c);
        }
        if bytes > budget.shared_total || self.held() > budget.floor {
            return Err(refuse(None));
        }
        budget.waits[stage.index()].inc();
        let started = Instant::now();
        let waited = tokio::time::timeout_at(self.deadline, async {
            loop {
                let freed = budget.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                if let Some(c) = self.try_take(stage, bytes) {
                    return c;
                }
                freed.await;
            }
        })
        .await;
        waited.map_err(|_| refuse(Some(started.elapsed())))
    }

    /// Takes `bytes` for `stage` now, or fails: for work that cannot wait
    /// (on a blocking thread, or while holding other limited slots).
    pub fn try_charge(&self, stage: Stage, bytes: u64) -> Result<Charge, MemoryError> {
        self.try_take(stage, bytes)
            .ok_or_else(|| self.ledger.budget.refuse(stage, bytes, self.held(), None))
    }
}

/// Charges taken bit by bit (a body as it arrives, a render's work), held
/// together and returned together.
#[derive(Debug, Default)]
pub struct Charges {
    charges: Mutex<Vec<Charge>>,
    /// The first refusal, if any.
    refused: Mutex<Option<MemoryError>>,
}

impl Charges {
    pub fn add(&self, c: Charge) {
        if let Ok(mut v) = self.charges.lock() {
            v.push(c);
        }
    }

    /// Returns every charge (what they were for is dropped).
    pub fn clear(&self) {
        if let Ok(mut v) = self.charges.lock() {
            v.clear();
        }
    }

    pub fn bytes(&self) -> u64 {
        self.charges
            .lock()
            .map(|v| v.iter().map(Charge::bytes).sum())
            .unwrap_or_default()
    }

    /// Records a refusal (the first one is kept).
    pub fn refuse(&self, e: MemoryError) {
        if let Ok(mut r) = self.refused.lock()
            && r.is_none()
        {
            *r = Some(e);
        }
    }

    /// The first refusal, if any.
    pub fn refusal(&self) -> Option<MemoryError> {
        self.refused.lock().ok().and_then(|r| r.clone())
    }
}

/// A mount could not get the memory it needed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the provider's memory budget of {} (--memory-budget) is taken: {} needed {} more{}{}; the mount will be retried",
    Bytes(*.budget),
    .stage.what(),
    Bytes(*.wanted),
    match .held {
        0 => String::new(),
        held => format!(" while the mount held {}", Bytes(*held)),
    },
    match .waited {
        Some(w) => format!(", and none was freed within {}", humantime::format_duration(Duration::from_millis(w.as_millis() as u64))),
        None if *.wanted > *.shared => format!(", more than the {} mounts may share above their floors", Bytes(*.shared)),
        None => String::new(),
    }
)]
pub struct MemoryError {
    pub stage: Stage,
    pub wanted: u64,
    /// What the mount held when it was refused.
    pub held: u64,
    pub budget: u64,
    /// The part of the budget above the mounts' floors.
    pub shared: u64,
    /// How long the mount waited, if it could.
    pub waited: Option<Duration>,
}

/// A size for people: `3.0 MiB`, `640 KiB`, `512 bytes`.
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= MIB {
            write!(f, "{:.1} MiB", b as f64 / MIB as f64)
        } else if b >= KIB {
            write!(f, "{} KiB", b.div_ceil(KIB))
        } else {
            write!(f, "{b} bytes")
        }
    }
}

// === the container's memory limit ===

/// The memory limit of this process's cgroup (v2 `memory.max`, else v1
/// `memory.limit_in_bytes`), the smallest along its path to the root;
/// `None` when there is none. `proc_cgroup` is `/proc/self/cgroup`, `root`
/// where the cgroup file systems are mounted (`/sys/fs/cgroup`).
pub fn cgroup_limit(proc_cgroup: &str, root: &Path) -> Option<u64> {
    // A limit this large means none (v1 reports about 2^63).
    const UNLIMITED: u64 = 1 << 60;
    let read = |file: &Path| -> Option<u64> {
        let text = std::fs::read_to_string(file).ok()?;
        let v = text.trim();
        if v == "max" {
            return None;
        }
        v.parse::<u64>().ok().filter(|l| *l < UNLIMITED)
    };
    // The smallest limit along the path, from the process's cgroup up.
    let smallest = |base: &Path, path: &str, file: &str| -> Option<u64> {
        let mut dir = base.join(path.trim_start_matches('/'));
        let mut best: Option<u64> = None;
        loop {
            if let Some(l) = read(&dir.join(file)) {
                best = Some(best.map_or(l, |b| b.min(l)));
            }
            if dir == base || !dir.pop() || !dir.starts_with(base) {
                break;
            }
        }
        best
    };
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let limit = if controllers.is_empty() {
            smallest(root, path, "memory.max").or_else(|| smallest(&root.join("unified"), path, "memory.max"))
        } else if controllers.split(',').any(|c| c == "memory") {
            smallest(&root.join("memory"), path, "memory.limit_in_bytes")
        } else {
            None
        };
        if limit.is_some() {
            return limit;
        }
    }
    None
}

/// The budget `--memory-budget=auto` takes: a share of the container's
/// memory limit, else [`DEFAULT_BUDGET`].
pub fn auto_budget(limit: Option<u64>) -> u64 {
    match limit {
        Some(l) => ((l as f64 * BUDGET_SHARE) as u64).max(MIN_BUDGET),
        None => DEFAULT_BUDGET,
    }
}

/// This process's container memory limit.
pub fn container_limit() -> Option<u64> {
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_limit(&proc_cgroup, Path::new("/sys/fs/cgroup"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(total: u64, floor: u64, mounts: usize) -> Arc<MemoryBudget> {
        MemoryBudget::new(BudgetSettings { total, floor, mounts }, &Metrics::default())
    }

    fn mount(b: &Arc<MemoryBudget>, within: Duration) -> MountMemory {
        MountMemory::new(b.clone(), Instant::now() + within)
    }

    #[tokio::test]
    async fn charges_are_returned_when_dropped_and_counted_per_stage() {
        let b = budget(16 * MIB, 64 * KIB, 4);
        let m = mount(&b, Duration::from_secs(1));
        let c = m.charge(Stage::Values, 3 * MIB).await.unwrap();
        let r = m.charge(Stage::Request, 10 * KIB).await.unwrap();
        assert_eq!(b.used_by(Stage::Values), 3 * MIB);
        assert_eq!(b.used(), 3 * MIB + 10 * KIB);
        assert_eq!(m.held(), 3 * MIB + 10 * KIB);
        drop(c);
        assert_eq!(b.used(), 10 * KIB);
        let mut r = r;
        r.shrink_to(1024);
        assert_eq!((b.used(), m.held()), (1024, 1024));
        drop(r);
        assert_eq!((b.used(), m.held()), (0, 0));
    }

    #[tokio::test]
    async fn a_mount_within_its_floor_is_served_when_the_shared_part_is_full() {
        // 16 MiB, 4 mounts with a 1 MiB floor: 4 MiB reserved, 12 shared.
        let b = budget(16 * MIB, MIB, 4);
        let hostile = mount(&b, Duration::from_secs(60));
        let hog = hostile.charge(Stage::Values, 12 * MIB).await.unwrap();
        // The hostile mount can take no more than its floor, and holding
        // more than its floor it does not wait: it fails at once naming the
        // budget and its flag.
        let started = Instant::now();
        let e = hostile.charge(Stage::Values, 2 * MIB).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(e.waited, None);
        let text = e.to_string();
        assert!(text.contains("--memory-budget") && text.contains("16.0 MiB"), "{text}");
        assert!(text.contains("fetched values"), "{text}");
        // A mount holding nothing waits for its share, then fails saying so.
        let waiting = mount(&b, Duration::from_millis(100));
        let e = waiting.charge(Stage::Response, 2 * MIB).await.unwrap_err();
        assert!(
            e.waited.is_some() && e.to_string().contains("none was freed within"),
            "{e}"
        );
        // Another tenant's ordinary mount still gets its floor, at once.
        let benign = mount(&b, Duration::from_millis(100));
        let ok = benign.charge(Stage::Values, 900 * KIB).await.unwrap();
        assert!(benign.try_charge(Stage::Files, 200 * KIB).is_err(), "above its floor");
        drop((hog, ok));
        assert_eq!(b.used(), 0);
    }

    #[tokio::test]
    async fn a_waiting_charge_is_served_when_bytes_are_freed_and_holds_nothing_meanwhile() {
        let b = budget(16 * MIB, MIB, 4);
        let first = mount(&b, Duration::from_secs(5));
        let hog = first.charge(Stage::Values, 10 * MIB).await.unwrap();
        let second = mount(&b, Duration::from_secs(5));
        let waiting = tokio::spawn(async move { second.charge(Stage::Values, 8 * MIB).await.map(|c| c.bytes()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        // The waiter takes nothing while it waits: the 2 MiB still free
        // serve others at once.
        let third = mount(&b, Duration::from_secs(5));
        let other = third
            .try_charge(Stage::Files, 2 * MIB)
            .expect("free bytes are not held by a waiter");
        drop(other);
        drop(hog);
        assert_eq!(waiting.await.unwrap().unwrap(), 8 * MIB);
        assert_eq!(b.used(), 0);
    }

    #[tokio::test]
    async fn a_charge_larger_than_the_shared_part_fails_at_once() {
        let b = budget(16 * MIB, MIB, 4);
        let m = mount(&b, Duration::from_secs(60));
        let started = Instant::now();
        let e = m.charge(Stage::Request, 13 * MIB).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(e.waited, None);
        assert!(e.to_string().contains("more than the 12.0 MiB"), "{e}");
    }

    #[tokio::test]
    async fn a_cancelled_wait_takes_nothing() {
        let b = budget(16 * MIB, MIB, 4);
        let first = mount(&b, Duration::from_secs(5));
        let hog = first.charge(Stage::Values, 11 * MIB).await.unwrap();
        let second = mount(&b, Duration::from_secs(5));
        let wait = tokio::time::timeout(Duration::from_millis(50), second.charge(Stage::Values, 2 * MIB)).await;
        assert!(wait.is_err());
        drop(hog);
        assert_eq!(b.used(), 0);
        assert_eq!(b.shared_free.load(Ordering::Relaxed), b.shared_total);
    }

    #[tokio::test]
    async fn floors_go_to_as_many_mounts_as_are_admitted_and_hold_no_more_than_the_reserve() {
        // 16 MiB, 4 mounts with a 1 MiB floor: 4 MiB reserved, 12 shared.
        let b = budget(16 * MIB, MIB, 4);
        let seated: Vec<_> = (0..4).map(|_| mount(&b, Duration::from_secs(1))).collect();
        // A fifth mount gets no floor: with the shared part taken it is
        // refused even a small charge, while the four get theirs.
        let hog = seated[0].charge(Stage::Values, 12 * MIB).await.unwrap();
        let fifth = mount(&b, Duration::from_millis(50));
        assert!(fifth.try_charge(Stage::Request, KIB).is_err());
        // Charges of one mount together stay within its floor, however
        // many of its units take them at once.
        let halves: Vec<_> = (0..3).map(|_| seated[1].try_charge(Stage::Values, MIB / 2)).collect();
        assert_eq!(halves.iter().filter(|c| c.is_ok()).count(), 2);
        let floors: Vec<_> = seated[2..]
            .iter()
            .map(|m| m.try_charge(Stage::Values, MIB).unwrap())
            .collect();
        assert_eq!(b.used(), 12 * MIB + 3 * MIB);
        // A seat is returned when its mount and its charges are gone.
        drop((halves, floors, hog, seated));
        let sixth = mount(&b, Duration::from_millis(50));
        assert!(sixth.try_charge(Stage::Request, KIB).is_ok());
        drop(fifth);
        assert_eq!(b.seats.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_reserve_is_at_most_half_the_budget() {
        let b = budget(16 * MIB, MIB, 128);
        assert_eq!(b.floor, 8 * MIB / 128);
        assert_eq!(b.shared_total, 8 * MIB);
    }

    #[test]
    fn the_container_limit_is_read_from_cgroup_v2_and_v1() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // v2: the smallest limit on the path wins; "max" is none.
        std::fs::create_dir_all(root.join("kubepods/pod1/ctr")).unwrap();
        std::fs::write(root.join("kubepods/memory.max"), "max\n").unwrap();
        std::fs::write(root.join("kubepods/pod1/memory.max"), "209715200\n").unwrap();
        std::fs::write(root.join("kubepods/pod1/ctr/memory.max"), "104857600\n").unwrap();
        assert_eq!(cgroup_limit("0::/kubepods/pod1/ctr\n", root), Some(100 * MIB));
        std::fs::write(root.join("kubepods/pod1/ctr/memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit("0::/kubepods/pod1/ctr\n", root), Some(200 * MIB));
        // A namespaced cgroup: the process sees its own as the root.
        std::fs::write(root.join("memory.max"), "67108864\n").unwrap();
        assert_eq!(cgroup_limit("0::/\n", root), Some(64 * MIB));
        // v1: the memory controller's hierarchy; 2^63 means none.
        let v1 = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(v1.path().join("memory/pod/ctr")).unwrap();
        std::fs::write(
            v1.path().join("memory/pod/ctr/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        let cg = "5:cpu,cpuacct:/pod/ctr\n4:memory:/pod/ctr\n";
        assert_eq!(cgroup_limit(cg, v1.path()), None);
        std::fs::write(v1.path().join("memory/pod/memory.limit_in_bytes"), "157286400\n").unwrap();
        assert_eq!(cgroup_limit(cg, v1.path()), Some(150 * MIB));
        assert_eq!(cgroup_limit("", v1.path()), None);
    }

    #[test]
    fn the_automatic_budget_is_a_share_of_the_limit() {
        assert_eq!(auto_budget(Some(100 * MIB)), DEFAULT_BUDGET);
        assert_eq!(auto_budget(Some(MIB)), MIN_BUDGET);
        assert_eq!(auto_budget(None), DEFAULT_BUDGET);
        assert_eq!(auto_budget(Some(1024 * MIB)), 512 * MIB);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(Bytes(3 * MIB).to_string(), "3.0 MiB");
        assert_eq!(Bytes(640 * KIB).to_string(), "640 KiB");
        assert_eq!(Bytes(512).to_string(), "512 bytes");
    }
}
