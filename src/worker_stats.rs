//! One set of numbers for the whole server under `--workers`: each worker
//! publishes its numbers into its own slot of a shared memory region; a
//! scrape sums every slot, and so does the supervisor's final `stats` line.
//!
//! The supervisor creates the region (a `memfd`, one [`WorkerSlot`] per
//! worker) before starting any worker and hands its descriptor to each one
//! beside the listening sockets (`supervisor.rs`); each worker maps it
//! `MAP_SHARED` for the rest of its life. A worker writes its slot through
//! a [`SlotWriter`] at the end of a loop turn, at most every 10 ms (the
//! same relaxed stores that publish `stats.rs`'s `SharedStats` to other
//! threads — never per message; a turn that skips it makes the loop wake
//! by the due time even if idle), once more as it exits, and reads the
//! others' only when answering `/metrics`. Relaxed is enough: each number
//! is independent, and a scrape is a moment's picture, at most about 10 ms
//! old per worker.
//!
//! A slot outlives its workers. When a worker dies the supervisor reaps it
//! and [retires](WorkerSlots::retire) its slot: the gauges it held
//! (connections open, bytes held) leave the sum at once, its counters stay.
//! The successor starts counting from zero but publishes its predecessors'
//! counters plus its own ([`StatsSnapshot::continued_by`]), so no summed
//! counter ever goes down — Prometheus would read a drop as a counter reset
//! and `increase()` would jump by every other worker's total. What a killed
//! worker counted after its last publish (at most 10 ms of it) is lost.
//! Each slot has one writer at a time (the worker, or the supervisor once
//! it is reaped), and every counter it writes is at least the one before,
//! so a reader never sees a counter go down, even mid-update.
//!
//! Every process mapping the region is the same binary (the supervisor
//! re-executes itself; a new generation after an upgrade creates a region
//! of its own, `upgrade.rs`), so the slot layout agrees; a fresh `memfd` is
//! zero-filled, and all zeros is a valid `AtomicU64`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::fdlimit::WALK_LIMIT_FDS;
use crate::metrics::{HttpCounters, ProcessFigures};
use crate::stats::{SharedStats, StatsSnapshot};
use crate::timers::due_after;

/// A worker copies its numbers into its shared slot at most this often (a
/// scrape sees them at most this much older than its own): a cheap timer,
/// not every loop turn, so a busy worker's turns pay one comparison
/// instead of the copy.
pub const SLOT_PUBLISH_INTERVAL_MS: u64 = 10;

/// What one worker publishes.
#[repr(C)]
#[derive(Debug, Default)]
pub struct WorkerSlot {
    /// The live worker's pid (0: none now), for its descriptors and memory.
    pid: AtomicU64,
    /// 1 once the live worker's loop runs with its listeners registered:
    /// what a new generation waits for before it takes over (`upgrade.rs`).
    accepting: AtomicU64,
    stats: SharedStats,
    http_answered: AtomicU64,
    http_refused: [AtomicU64; 4],
    /// The descriptors the worker knows it holds (connections, listening
    /// sockets, its own base set): what a scrape reports for it where the
    /// kernel does not count them, instead of walking `/proc/PID/fd`.
    held_fds: AtomicU64,
}

impl WorkerSlot {
    fn http(&self) -> HttpCounters {
        HttpCounters {
            answered: self.http_answered.load(Relaxed),
            refused: std::array::from_fn(|i| self.http_refused[i].load(Relaxed)),
        }
    }

    fn store_http(&self, http: &HttpCounters) {
        self.http_answered.store(http.answered, Relaxed);
        for (slot, &n) in self.http_refused.iter().zip(&http.refused) {
            slot.store(n, Relaxed);
        }
    }
}

/// A worker's loop numbers as of one turn, its own (counted from its start).
#[derive(Debug, Default, Clone)]
pub struct WorkerNumbers {
    /// The loop's counters and gauges.
    pub stats: StatsSnapshot,
    /// Descriptors the loop knows it holds.
    pub held_fds: u64,
}

/// One worker's pen for its slot: what its predecessors in the slot left,
/// and when the slot is next due.
#[derive(Debug)]
pub struct SlotWriter {
    slots: Arc<WorkerSlots>,
    index: usize,
    /// The slot's counters when this worker claimed it.
    base: StatsSnapshot,
    http_base: HttpCounters,
    /// This worker's own metrics tallies as last written.
    http_written: HttpCounters,
    /// The next time the slot may be written.
    due_ms: u64,
    /// A turn passed without writing the slot: the numbers there may be
    /// stale, so the loop must wake by `due_ms` even if idle.
    stale: bool,
}

impl SlotWriter {
    /// Take slot `index` for this process, carrying on from what is in it.
    pub fn claim(slots: Arc<WorkerSlots>, index: usize) -> io::Result<Self> {
        let slot = slots.slot(index).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("shared worker stats: no slot {index} of {}", slots.count),
            )
        })?;
        let base = slot.stats.snapshot().without_gauges();
        let http_base = slot.http();
        slot.pid.store(u64::from(std::process::id()), Relaxed);
        Ok(SlotWriter {
            slots,
            index,
            base,
            http_base,
            http_written: HttpCounters::default(),
            due_ms: 0,
            stale: false,
        })
    }

    /// Say the worker accepts: its loop is about to run, every listener
    /// registered (connections that come before its first turn wait in
    /// the listeners' queues, served in that turn).
    pub fn mark_accepting(&self) {
        if let Some(slot) = self.slots.slot(self.index) {
            slot.accepting.store(1, Relaxed);
        }
    }

    /// Every worker's slots, for summing.
    pub fn slots(&self) -> &Arc<WorkerSlots> {
        &self.slots
    }

    /// Publish `numbers()` if [`SLOT_PUBLISH_INTERVAL_MS`] have passed since
    /// the last time (called once per loop turn).
    #[inline]
    pub fn publish(&mut self, now_ms: u64, numbers: impl FnOnce() -> WorkerNumbers) {
        if now_ms < self.due_ms {
            self.stale = true;
            return;
        }
        self.publish_now(&numbers());
        self.due_ms = due_after(now_ms, SLOT_PUBLISH_INTERVAL_MS);
        self.stale = false;
    }

    /// Publish `numbers` now (the last time, as the worker exits).
    pub fn publish_now(&self, numbers: &WorkerNumbers) {
        let Some(slot) = self.slots.slot(self.index) else {
            return; // checked at claim
        };
        slot.stats.store(&self.base.continued_by(&numbers.stats));
        slot.held_fds.store(numbers.held_fds, Relaxed);
    }

    /// Publish the metrics endpoint's tallies if they changed (they change
    /// only when a scrape comes, so the next scrape counts this one).
    #[inline]
    pub fn publish_http(&mut self, http: &HttpCounters) {
        if *http == self.http_written {
            return;
        }
        if let Some(slot) = self.slots.slot(self.index) {
            let mut total = self.http_base;
            total.add(http);
            slot.store_http(&total);
        }
        self.http_written = *http;
    }

    /// When the loop must wake to publish numbers a turn skipped.
    pub fn next_deadline(&self) -> Option<u64> {
        self.stale.then_some(self.due_ms)
    }
}

/// The shared region: one [`WorkerSlot`] per worker.
#[derive(Debug)]
pub struct WorkerSlots {
    base: *const WorkerSlot,
    count: usize,
    fd: OwnedFd,
}

// SAFETY: the region is only ever accessed through atomics, and stays
// mapped for the life of the process (never unmapped).
unsafe impl Send for WorkerSlots {}
// SAFETY: as above.
unsafe impl Sync for WorkerSlots {}

/// The sum over every worker's slot.
#[derive(Debug, Default, Clone)]
pub struct WorkersTotal {
    /// Every worker's loop counters, summed.
    pub stats: StatsSnapshot,
    /// Every worker's metrics endpoint tallies, summed.
    pub http: HttpCounters,
    /// Every live worker's descriptors and memory, summed.
    pub process: ProcessFigures,
    /// Workers alive now (their slot claimed and not yet retired).
    pub workers: u64,
}

impl WorkerSlots {
    /// Create a zeroed region of `count` slots (the supervisor, once).
    pub fn create(count: usize) -> io::Result<Self> {
        let named = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} (shared worker stats): {e}"))
        };
        let fd = memfd().map_err(|e| named("memfd_create", e))?;
        let bytes = region_bytes(count);
        // SAFETY: ftruncate on a descriptor we own; the new bytes read as zero.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), bytes as libc::off_t) } == -1 {
            return Err(named("ftruncate", io::Error::last_os_error()));
        }
        Self::map(fd, count)
    }

    /// Map a region created by [`WorkerSlots::create`] (a worker, from the
    /// descriptor it was handed).
    pub fn map(fd: OwnedFd, count: usize) -> io::Result<Self> {
        let bytes = region_bytes(count);
        let size = std::fs::File::from(fd.try_clone()?).metadata()?.len();
        if size < bytes as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("shared worker stats: region of {size} bytes, {bytes} needed"),
            ));
        }
        // SAFETY: a fresh shared mapping of a descriptor we own, of the
        // size checked above; never unmapped.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("mmap shared worker stats: {e}"),
            ));
        }
        Ok(WorkerSlots {
            base: base as *const WorkerSlot,
            count,
            fd,
        })
    }

    /// The region's descriptor (to hand to workers).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Worker `index`'s slot, if there is one.
    pub fn slot(&self, index: usize) -> Option<&WorkerSlot> {
        // SAFETY: in bounds of a live mapping of `count` zero-initialised
        // (valid) slots; page alignment satisfies AtomicU64's.
        (index < self.count).then(|| unsafe { &*self.base.add(index) })
    }

    /// Every slot summed: counters of every worker that ever ran, gauges,
    /// descriptors and memory of the live ones.
    pub fn total(&self) -> WorkersTotal {
        let mut total = WorkersTotal::default();
        // Where `stat` gives no count (Linux < 6.2) each worker's count
        // is a walk of its /proc/PID/fd: one budget of entries for the
        // whole scrape, so its work stays bounded at 256 workers too.
        let mut walk_left = WALK_LIMIT_FDS as u64;
        for slot in (0..self.count).filter_map(|i| self.slot(i)) {
            total.stats.add(&slot.stats.snapshot());
            total.http.add(&slot.http());
            let pid = slot.pid.load(Relaxed);
            if pid == 0 {
                continue;
            }
            total.workers += 1;
            let held_fds = slot.held_fds.load(Relaxed);
            let may_walk = spend_walk(&mut walk_left, held_fds);
            let pid = u32::try_from(pid).ok();
            total
                .process
                .add(&ProcessFigures::read_walking(pid, held_fds, may_walk));
        }
        total
    }

    /// Whether every slot's worker has said it accepts
    /// ([`SlotWriter::mark_accepting`]) and not been retired since.
    pub fn all_accepting(&self) -> bool {
        (0..self.count)
            .filter_map(|i| self.slot(i))
            .all(|slot| slot.accepting.load(Relaxed) == 1)
    }

    /// Slot `index`'s worker is gone (the supervisor reaped it): its
    /// gauges leave the sum, its counters stay for its successor to carry
    /// on from.
    pub fn retire(&self, index: usize) {
        if let Some(slot) = self.slot(index) {
            slot.stats.store(&slot.stats.snapshot().without_gauges());
            slot.held_fds.store(0, Relaxed);
            slot.accepting.store(0, Relaxed);
            slot.pid.store(0, Relaxed);
        }
    }
}

/// Whether a worker holding `held` descriptors may have its /proc/PID/fd
/// walked from what is `left` of a scrape's walking budget (spent if so).
fn spend_walk(left: &mut u64, held: u64) -> bool {
    let may = held <= *left;
    if may {
        *left -= held;
    }
    may
}

/// Names the descriptor of the slots region a worker was handed.
pub const SLOTS_FD_ENV: &str = "ECHO_REACTOR_SLOTS_FD";
/// Names the descriptor of the `--metrics` listener a worker was handed.
pub const METRICS_FD_ENV: &str = "ECHO_REACTOR_METRICS_FD";

/// What a worker is handed besides its listening sockets: its slot among
/// every worker's, and with `--metrics` the listener they all share (a
/// scrape is answered by whichever worker takes it).
#[derive(Debug)]
pub struct WorkerHandover {
    /// This worker's slot, claimed.
    pub slot: SlotWriter,
    /// The `--metrics` listener, non-blocking.
    pub metrics: Option<std::net::TcpListener>,
}

/// A worker's half: the slots and the listener its supervisor handed over
/// (named by [`SLOTS_FD_ENV`] and [`METRICS_FD_ENV`]), for worker `index`
/// of `count`, its slot claimed. `None` when no slots were handed over
/// (not a worker).
pub fn inherited_handover(index: usize, count: usize) -> io::Result<Option<WorkerHandover>> {
    let Some(slots_fd) = inherited_fd(SLOTS_FD_ENV)? else {
        return Ok(None);
    };
    let slots = Arc::new(WorkerSlots::map(slots_fd, count)?);
    let metrics = match inherited_fd(METRICS_FD_ENV)? {
        Some(fd) => {
            let listener = std::net::TcpListener::from(fd);
            listener.set_nonblocking(true)?;
            Some(listener)
        }
        None => None,
    };
    Ok(Some(WorkerHandover {
        slot: SlotWriter::claim(slots, index)?,
        metrics,
    }))
}

/// The descriptor the variable `name` names, made close-on-exec and owned.
fn inherited_fd(name: &str) -> io::Result<Option<OwnedFd>> {
    let Ok(value) = std::env::var(name) else {
        return Ok(None);
    };
    let fd: RawFd = value.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name}={value}: expected a descriptor number"),
        )
    })?;
    // SAFETY: fcntl on a descriptor number; a closed one gives EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{name}: fd {fd}: {e}")));
    }
    // SAFETY: the supervisor placed this descriptor for us alone; we take
    // ownership once (each variable is read once, at start).
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn region_bytes(count: usize) -> usize {
    count.max(1) * std::mem::size_of::<WorkerSlot>()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn memfd() -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name; MFD_CLOEXEC so only the descriptors
    // placed for a worker on purpose reach it.
    let fd = unsafe { libc::memfd_create(c"echo-reactor-stats".as_ptr(), libc::MFD_CLOEXEC) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn memfd() -> io::Result<OwnedFd> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "shared worker stats need memfd_create (Linux)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_walks_descriptor_tables_from_one_budget_for_all_workers() {
        // 256 workers of 1 000 descriptors: one walk, then counts as held.
        let mut left = WALK_LIMIT_FDS as u64;
        let walked = (0..256).filter(|_| spend_walk(&mut left, 1_000)).count();
        assert_eq!(walked, 1);
        // Small workers share it until it runs out.
        let mut left = WALK_LIMIT_FDS as u64;
        let walked = (0..256).filter(|_| spend_walk(&mut left, 100)).count();
        assert_eq!(walked, WALK_LIMIT_FDS / 100);
    }
    use crate::stats::CloseReason;

    fn numbers(accepted: u64, active: u64) -> WorkerNumbers {
        let mut stats = StatsSnapshot {
            accepted,
            active,
            ..StatsSnapshot::default()
        };
        stats.closed[0] = accepted; // some closes too, in the array
        WorkerNumbers {
            stats,
            ..WorkerNumbers::default()
        }
    }

    #[test]
    fn a_second_mapping_sees_every_slot_and_sums_them() {
        let slots = Arc::new(WorkerSlots::create(3).unwrap());
        let copy = WorkerSlots::map(slots.fd.try_clone().unwrap(), 3).unwrap();
        for index in [0, 2] {
            let mut writer = SlotWriter::claim(Arc::clone(&slots), index).unwrap();
            writer.publish_now(&numbers(5, 1));
            if index == 2 {
                writer.publish_http(&HttpCounters {
                    answered: 4,
                    refused: [0, 1, 0, 0],
                });
            }
        }
        let total = copy.total();
        assert_eq!(total.workers, 2); // slot 1 never claimed
        assert_eq!(total.stats.accepted, 10);
        assert_eq!(total.stats.active, 2);
        assert_eq!(total.stats.closed_by(CloseReason::ALL[0]), 10);
        assert_eq!(total.http.answered, 4);
        assert_eq!(total.http.refused, [0, 1, 0, 0]);
        assert!(slots.slot(3).is_none());
        assert!(SlotWriter::claim(slots, 3).is_err());
    }

    #[test]
    fn a_reaped_worker_s_gauges_leave_the_sum_and_its_successor_carries_its_counters_on() {
        let slots = Arc::new(WorkerSlots::create(2).unwrap());
        let other = SlotWriter::claim(Arc::clone(&slots), 1).unwrap();
        other.publish_now(&numbers(3, 1));
        let mut first = SlotWriter::claim(Arc::clone(&slots), 0).unwrap();
        let mut dying = numbers(100, 7);
        dying.held_fds = 30;
        first.publish_now(&dying);
        first.publish_http(&HttpCounters {
            answered: 2,
            refused: [0; 4],
        });
        assert_eq!(slots.total().stats.active, 8);

        slots.retire(0); // killed, reaped
        let total = slots.total();
        assert_eq!(total.workers, 1);
        assert_eq!(
            total.stats.active, 1,
            "the dead worker's connections are gone"
        );
        assert_eq!(total.stats.accepted, 103, "what it counted is not");
        assert_eq!(total.http.answered, 2);

        // The successor counts from zero; the sum never goes down.
        let mut successor = SlotWriter::claim(Arc::clone(&slots), 0).unwrap();
        successor.publish_now(&numbers(0, 0));
        assert_eq!(slots.total().stats.accepted, 103);
        successor.publish_now(&numbers(4, 2));
        successor.publish_http(&HttpCounters {
            answered: 1,
            refused: [0; 4],
        });
        let total = slots.total();
        assert_eq!((total.stats.accepted, total.stats.active), (107, 3));
        assert_eq!(total.stats.closed_by(CloseReason::ALL[0]), 107);
        assert_eq!(total.http.answered, 3);
        assert_eq!(total.workers, 2);
    }

    #[test]
    fn the_workers_accept_once_each_has_said_so_and_none_was_retired_since() {
        let slots = Arc::new(WorkerSlots::create(2).unwrap());
        let first = SlotWriter::claim(Arc::clone(&slots), 0).unwrap();
        let second = SlotWriter::claim(Arc::clone(&slots), 1).unwrap();
        assert!(!slots.all_accepting(), "started, not yet in their loops");
        first.mark_accepting();
        assert!(!slots.all_accepting());
        second.mark_accepting();
        assert!(slots.all_accepting());
        slots.retire(1); // died: its successor must say so again
        assert!(!slots.all_accepting());
    }

    #[test]
    fn a_skipped_slot_copy_makes_the_loop_wake_when_it_is_due() {
        let slots = Arc::new(WorkerSlots::create(1).unwrap());
        let mut writer = SlotWriter::claim(Arc::clone(&slots), 0).unwrap();
        let seen = || slots.total().stats.accepted;
        writer.publish(100, || numbers(1, 1));
        assert_eq!(seen(), 1);
        assert_eq!(writer.next_deadline(), None, "nothing stale, nothing due");
        // Within the interval: not copied, but the loop must come back.
        writer.publish(105, || numbers(2, 1));
        assert_eq!(seen(), 1);
        assert_eq!(writer.next_deadline(), Some(100 + SLOT_PUBLISH_INTERVAL_MS));
        writer.publish(100 + SLOT_PUBLISH_INTERVAL_MS, || numbers(2, 1));
        assert_eq!(seen(), 2);
        assert_eq!(writer.next_deadline(), None);
    }
}
