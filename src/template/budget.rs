//! What the templates of one mount may spend: fuel, the work their filters
//! build (charged before it is built), and their output, cut at the size
//! limits and charged to the mount's memory as it grows.

use super::*;

/// What the templates of one mount may still spend.
#[derive(Debug)]
pub struct Budget {
    pub(super) fuel: u64,
    pub(super) work: Arc<Work>,
}

impl Budget {
    pub fn new(limits: &Limits) -> Self {
        Self::metered(limits, None)
    }

    /// A budget whose work is also charged to the mount's memory.
    pub fn metered(limits: &Limits, memory: Option<MountMemory>) -> Self {
        Self {
            fuel: limits.max_template_fuel,
            work: Arc::new(Work::new(limits.max_template_work, memory)),
        }
    }

    /// The memory charges of the work done so far, held until the files
    /// are no longer.
    pub fn charges(&self) -> Vec<Charge> {
        self.work
            .charges
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }
}

/// Bytes the filters of a mount's templates may still build, and the
/// problem that stopped one of them (reported with the template's line).
#[derive(Debug)]
pub(super) struct Work {
    pub(super) remaining: AtomicU64,
    pub(super) max: u64,
    pub(super) problem: Mutex<Option<Problem>>,
    /// The mount's memory, charged for each filter's result.
    pub(super) memory: Option<MountMemory>,
    pub(super) charges: Mutex<Vec<Charge>>,
}

impl Work {
    pub(super) fn new(max: u64, memory: Option<MountMemory>) -> Self {
        Self {
            remaining: AtomicU64::new(max),
            max,
            problem: Mutex::new(None),
            memory,
            charges: Mutex::new(Vec::new()),
        }
    }

    /// Pays for `bytes` of a filter's result before it is built.
    pub(super) fn charge(&self, filter: &'static str, bytes: u64) -> Result<(), Error> {
        let paid = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(bytes));
        if paid.is_err() {
            return self.stop(Problem::Limit(LimitError {
                subject: format!("the filters of this mount's templates (at {filter})"),
                limit: Limit::TemplateWork,
                found: self.max.saturating_add(1),
                at_least: true,
                max: self.max,
            }));
        }
        self.hold(bytes)
    }

    /// Charges `bytes` the render holds to the mount's memory (not to the
    /// templates' work): one charge per kind, grown as the render goes.
    pub(super) fn hold(&self, bytes: u64) -> Result<(), Error> {
        let Some(memory) = &self.memory else {
            return Ok(());
        };
        if bytes == 0 {
            return Ok(());
        }
        match memory.try_charge(Stage::Files, bytes) {
            Ok(c) => {
                if let Ok(mut charges) = self.charges.lock() {
                    let mut c = Some(c);
                    for held in charges.iter_mut() {
                        c = match c.take().map(|c| held.merge(c)) {
                            Some(Err(c)) => Some(c),
                            _ => None,
                        };
                    }
                    charges.extend(c);
                }
                Ok(())
            }
            Err(e) => self.stop(Problem::Memory(e)),
        }
    }

    /// Stops the render for `problem`.
    pub(super) fn stop(&self, problem: Problem) -> Result<(), Error> {
        if let Ok(mut p) = self.problem.lock() {
            *p = Some(problem);
        }
        Err(Error::new(ErrorKind::InvalidOperation, "out of template work"))
    }

    pub(super) fn take_problem(&self) -> Option<Problem> {
        self.problem.lock().ok().and_then(|mut p| p.take())
    }
}

/// The work budget a compiled template's filters charge: the one of the
/// mount rendering it, set for the render.
#[derive(Debug, Default)]
pub(super) struct WorkCell(Mutex<Option<Arc<Work>>>);

impl WorkCell {
    pub(super) fn set(&self, work: Option<Arc<Work>>) {
        if let Ok(mut w) = self.0.lock() {
            *w = work;
        }
    }

    pub(super) fn current(&self) -> Result<Arc<Work>, Error> {
        self.0.lock().ok().and_then(|w| w.clone()).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                "a template runs only within a mount's budget",
            )
        })
    }

    pub(super) fn charge(&self, filter: &'static str, bytes: u64) -> Result<(), Error> {
        self.current()?.charge(filter, bytes)
    }

    pub(super) fn remaining(&self) -> u64 {
        self.current().map_or(0, |w| w.remaining.load(Ordering::Relaxed))
    }
}

/// Clears a template's work budget when its render ends.
pub(super) struct Unset<'a>(pub(super) &'a WorkCell);

impl Drop for Unset<'_> {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

/// The output of a template, cut at `max` bytes.
/// Its buffer is charged to the mount's memory as it grows.
pub(super) struct Capped {
    pub(super) buf: Vec<u8>,
    pub(super) max: u64,
    pub(super) exceeded: bool,
    pub(super) memory: Arc<Work>,
}

impl Capped {
    pub(super) fn new(max: u64, memory: Arc<Work>) -> Self {
        Self {
            buf: Vec::new(),
            max,
            exceeded: false,
            memory,
        }
    }
}

impl io::Write for &mut Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let needed = self.buf.len() + data.len();
        if needed as u64 > self.max {
            self.exceeded = true;
            return Err(io::Error::other("template output limit"));
        }
        if needed > self.buf.capacity() {
            let capacity = needed.max(self.buf.capacity() * 2).min(self.max as usize);
            self.memory
                .hold((capacity - self.buf.capacity()) as u64)
                .map_err(|_| io::Error::other("memory budget"))?;
            self.buf.reserve_exact(capacity - self.buf.len());
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Capped {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.buf);
    }
}
