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
//! **Fair shares.** Each mount may hold up to [`MountMemory`]'s floor
//! (`--memory-floor-per-mount`, 256 KiB, at most half the budget shared by `--max-concurrent-mounts`: a typical mount's whole life) out of a reserve
//! set aside for as many mounts as `--max-concurrent-mounts` admits; above
//! its floor a mount draws from the shared rest, which it cannot take from
//! the reserve. So a tenant whose mounts fill the shared part never stops
//! another tenant's ordinary mount. A charge that does not fit waits (first
//! come, first served) until the mount's deadline, then fails the mount with
//! `RESOURCE_EXHAUSTED` naming the budget and its flag; work that cannot
//! wait (rendering on a blocking thread) fails at once. Nothing is allocated
//! for a charge that failed.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;

use crate::telemetry::Metrics;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The budget when the container has no memory limit: what the default
/// derivation gives under the chart's 100 MiB limit.
pub const DEFAULT_BUDGET: u64 = 50 * MIB;
/// The smallest budget (a flag or a limit below it is raised to it).
pub const MIN_BUDGET: u64 = 8 * MIB;
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

/// The node-wide budget. Bytes are semaphore permits: `all` holds the whole
/// budget, `shared` the part outside the reserve. A charge within its
/// mount's floor takes from `all` only; a larger one from both, so charges
/// above the floor never hold more than `shared`, and the reserve stays for
/// the mounts that hold less than their floor.
pub struct MemoryBudget {
    total: u64,
    shared_total: u64,
    floor: u64,
    all: Semaphore,
    shared: Semaphore,
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

/// Permits of one charge (a semaphore takes at most `u32::MAX` at once).
fn permits(bytes: u64) -> Option<u32> {
    u32::try_from(bytes).ok()
}

impl MemoryBudget {
    pub fn new(settings: BudgetSettings, metrics: &Metrics) -> Arc<Self> {
        let total = settings.total.clamp(MIN_BUDGET, u64::from(u32::MAX));
        let mounts = settings.mounts.max(1) as u64;
        // The reserve: a floor for each admitted mount, at most half.
        let floor = settings.floor.min(total / 2 / mounts);
        let reserve = floor * mounts;
        let shared_total = total - reserve;
        let (gauges, refusals, waits) = metrics.memory(Stage::ALL.map(Stage::as_str).as_slice(), total, reserve);
        Arc::new(Self {
            total,
            shared_total,
            floor,
            all: Semaphore::new(total as usize),
            shared: Semaphore::new(shared_total as usize),
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
        self.try_take(None, stage, bytes, false)
            .ok_or_else(|| self.refuse(stage, bytes, 0, None))
    }

    /// Takes `bytes` now, if there are.
    fn try_take(
        self: &Arc<Self>,
        held: Option<&Arc<AtomicU64>>,
        stage: Stage,
        bytes: u64,
        small: bool,
    ) -> Option<Charge> {
        let n = permits(bytes)?;
        let shared = match small {
            true => None,
            false => Some(self.shared.try_acquire_many(n).ok()?),
        };
        let all = self.all.try_acquire_many(n).ok()?;
        Some(self.granted(held, stage, bytes, shared, all))
    }

    /// A refusal of `bytes` for `stage` to a mount holding `held`, counted.
    fn refuse(&self, stage: Stage, bytes: u64, held: u64, waited: Option<Duration>) -> MemoryError {
        self.refused(stage);
        self.error(stage, bytes, held, waited)
    }

    /// Turns acquired permits into a charge.
    fn granted(
        self: &Arc<Self>,
        held: Option<&Arc<AtomicU64>>,
        stage: Stage,
        bytes: u64,
        shared: Option<tokio::sync::SemaphorePermit<'_>>,
        all: tokio::sync::SemaphorePermit<'_>,
    ) -> Charge {
        let is_shared = shared.is_some();
        if let Some(p) = shared {
            p.forget();
        }
        all.forget();
        self.account(stage, bytes, true);
        if let Some(h) = held {
            h.fetch_add(bytes, Ordering::Relaxed);
        }
        Charge {
            budget: self.clone(),
            held: held.cloned(),
            stage,
            bytes,
            shared: is_shared,
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
    /// The live charges of the mount that took it, if any.
    held: Option<Arc<AtomicU64>>,
    stage: Stage,
    bytes: u64,
    /// Taken from the shared part too (above the mount's floor).
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
        let n = bytes as usize;
        self.budget.all.add_permits(n);
        if self.shared {
            self.budget.shared.add_permits(n);
        }
        self.budget.account(self.stage, bytes, false);
        if let Some(h) = &self.held {
            h.fetch_sub(bytes, Ordering::Relaxed);
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

/// The budget as one mount sees it: its floor, its deadline, and the
/// charges it holds now.
#[derive(Clone)]
pub struct MountMemory {
    budget: Arc<MemoryBudget>,
    held: Arc<AtomicU64>,
    deadline: Instant,
}

impl fmt::Debug for MountMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MountMemory(holds {} bytes)", self.held())
    }
}

impl MountMemory {
    /// The ledger of a mount that must be done by `deadline`.
    pub fn new(budget: Arc<MemoryBudget>, deadline: Instant) -> Self {
        Self {
            budget,
            held: Arc::new(AtomicU64::new(0)),
            deadline,
        }
    }

    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// Bytes this mount's live charges hold.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether `bytes` more keep this mount within its floor.
    fn within_floor(&self, bytes: u64) -> bool {
        self.held().saturating_add(bytes) <= self.budget.floor
    }

    /// Takes `bytes` for `stage`, waiting (first come, first served) until
    /// the mount's deadline if the budget is in use. Only a mount that holds
    /// no more than its floor waits: one that holds more fails at once, so
    /// that mounts never wait for each other's memory in a circle.
    pub async fn charge(&self, stage: Stage, bytes: u64) -> Result<Charge, MemoryError> {
        let small = self.within_floor(bytes);
        let budget = &self.budget;
        let refuse = |waited| budget.refuse(stage, bytes, self.held(), waited);
        if !small && bytes > budget.shared_total {
            return Err(refuse(None));
        }
        if let Some(c) = budget.try_take(Some(&self.held), stage, bytes, small) {
            return Ok(c);
        }
        if self.held() > budget.floor {
            return Err(refuse(None));
        }
        let Some(n) = permits(bytes) else {
            return Err(refuse(None));
        };
        budget.waits[stage.index()].inc();
        let started = Instant::now();
        let acquired = tokio::time::timeout_at(self.deadline.into(), async {
            let shared = match small {
                true => None,
                false => Some(budget.shared.acquire_many(n).await.ok()?),
            };
            let all = budget.all.acquire_many(n).await.ok()?;
            Some((shared, all))
        })
        .await;
        match acquired {
            Ok(Some((shared, all))) => Ok(budget.granted(Some(&self.held), stage, bytes, shared, all)),
            _ => Err(refuse(Some(started.elapsed()))),
        }
    }

    /// Takes `bytes` for `stage` now, or fails: for work that cannot wait
    /// (on a blocking thread).
    pub fn try_charge(&self, stage: Stage, bytes: u64) -> Result<Charge, MemoryError> {
        let small = self.within_floor(bytes);
        self.budget
            .try_take(Some(&self.held), stage, bytes, small)
            .ok_or_else(|| self.budget.refuse(stage, bytes, self.held(), None))
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
        // The hostile mount can take no more, and holding more than its
        // floor it does not wait: it fails at once naming the budget and
        // its flag.
        let started = Instant::now();
        let e = hostile.charge(Stage::Values, 64 * KIB).await.unwrap_err();
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
    async fn a_waiting_charge_is_served_first_come_first_served_when_bytes_are_freed() {
        let b = budget(16 * MIB, MIB, 4);
        let first = mount(&b, Duration::from_secs(5));
        let hog = first.charge(Stage::Values, 12 * MIB).await.unwrap();
        let second = mount(&b, Duration::from_secs(5));
        let waiting = tokio::spawn(async move { second.charge(Stage::Values, 8 * MIB).await.map(|c| c.bytes()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(hog);
        assert_eq!(waiting.await.unwrap().unwrap(), 8 * MIB);
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
        // Gets the shared part, then would wait for... nothing: cancel it
        // while it waits for the shared part.
        let wait = tokio::time::timeout(Duration::from_millis(50), second.charge(Stage::Values, 2 * MIB)).await;
        assert!(wait.is_err());
        drop(hog);
        assert_eq!(b.used(), 0);
        assert_eq!(b.shared.available_permits() as u64, b.shared_total);
        assert_eq!(b.all.available_permits() as u64, b.total);
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
