//! One scrape for the whole server under `--workers`: each worker publishes
//! its numbers into its own slot of a shared memory region, and whichever
//! worker accepts a scrape sums every slot.
//!
//! The supervisor creates the region (a `memfd`, one [`WorkerSlot`] per
//! worker) before starting any worker and hands its descriptor to each one
//! beside the listening sockets (`supervisor.rs`); each worker maps it
//! `MAP_SHARED` for the rest of its life. A worker writes its slot at the end of
//! a loop turn, at most every 10 ms (the same relaxed stores that publish
//! `stats.rs`'s `SharedStats` to other threads — never per message; a turn
//! that skips it makes the loop wake by the due time even if idle), and
//! reads the others' only when answering `/metrics`. Relaxed is enough:
//! each number is independent, and a scrape is a moment's picture, at most
//! about 10 ms old per worker.
//!
//! Every process mapping the region is the same binary (the supervisor
//! re-executes itself), so the slot layout agrees; a fresh `memfd` is
//! zero-filled, and all zeros is a valid `AtomicU64`.
//!
//! A worker that dies and is restarted starts its slot from zero, so the
//! summed counters go down once: Prometheus' `rate()` and `increase()`
//! treat that as a counter reset, as for a restarted server.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::buffer::BufferGauge;
use crate::metrics::{HttpCounters, ProcessFigures};
use crate::stats::{Counters, SharedStats, StatsSnapshot};

/// What one worker publishes.
#[repr(C)]
#[derive(Debug, Default)]
pub struct WorkerSlot {
    /// The worker's pid (0: never started), for its descriptors and memory.
    pid: AtomicU64,
    stats: SharedStats,
    http_answered: AtomicU64,
    http_refused: [AtomicU64; 4],
}

impl WorkerSlot {
    /// Say which process this slot now belongs to (once, at start).
    pub fn claim(&self) {
        self.pid.store(u64::from(std::process::id()), Relaxed);
    }

    /// Copy the loop's numbers in (at most every 10 ms).
    pub fn publish(&self, counters: &Counters, gauge: &BufferGauge, active: usize) {
        self.stats.publish(counters, gauge, active);
    }

    /// Copy the metrics endpoint's tallies in (when they change).
    pub fn publish_http(&self, http: &HttpCounters) {
        self.http_answered.store(http.answered, Relaxed);
        for (slot, &n) in self.http_refused.iter().zip(&http.refused) {
            slot.store(n, Relaxed);
        }
    }

    fn http(&self) -> HttpCounters {
        HttpCounters {
            answered: self.http_answered.load(Relaxed),
            refused: std::array::from_fn(|i| self.http_refused[i].load(Relaxed)),
        }
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
    /// Workers that have published (started at least once).
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

    /// Every slot summed, with each live worker's descriptors and memory.
    pub fn total(&self) -> WorkersTotal {
        let mut total = WorkersTotal::default();
        for slot in (0..self.count).filter_map(|i| self.slot(i)) {
            let pid = slot.pid.load(Relaxed);
            if pid == 0 {
                continue;
            }
            total.workers += 1;
            total.stats.add(&slot.stats.snapshot());
            total.http.add(&slot.http());
            total
                .process
                .add(&ProcessFigures::read(u32::try_from(pid).ok()));
        }
        total
    }
}

/// Names a worker's metrics descriptors: `LISTENER_FD,SLOTS_FD`.
pub const METRICS_FDS_ENV: &str = "ECHO_REACTOR_METRICS_FDS";

/// The supervisor's half of `--metrics` under `--workers`: one listener
/// every worker accepts on (a scrape is answered by whichever takes it),
/// and the slots.
#[derive(Debug)]
pub struct WorkersMetrics {
    /// The `--metrics` listener, shared by every worker.
    pub listener: std::net::TcpListener,
    /// The shared slots.
    pub slots: WorkerSlots,
}

impl WorkersMetrics {
    /// The descriptors to place after a worker's sockets, in order.
    pub fn fds(&self) -> [RawFd; 2] {
        [self.listener.as_raw_fd(), self.slots.raw_fd()]
    }

    /// The value of [`METRICS_FDS_ENV`] when [`WorkersMetrics::fds`] land
    /// at descriptors `first`, `first + 1`.
    pub fn env_value(first: RawFd) -> String {
        format!("{first},{}", first + 1)
    }
}

/// A worker's half: the listener and the slots its supervisor handed over
/// (named by [`METRICS_FDS_ENV`]), for worker `index` of `count`. `None`
/// when the variable is not set (no `--metrics`).
pub fn inherited_metrics(
    index: usize,
    count: usize,
) -> io::Result<Option<(std::net::TcpListener, WorkerSlots)>> {
    let Ok(value) = std::env::var(METRICS_FDS_ENV) else {
        return Ok(None);
    };
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{METRICS_FDS_ENV}={value}: expected LISTENER_FD,SLOTS_FD"),
        )
    };
    let (listener_fd, slots_fd) = value.split_once(',').ok_or_else(bad)?;
    let listener_fd: RawFd = listener_fd.parse().map_err(|_| bad())?;
    let slots_fd: RawFd = slots_fd.parse().map_err(|_| bad())?;
    for fd in [listener_fd, slots_fd] {
        // SAFETY: fcntl on a descriptor number; a closed one gives EBADF.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("{METRICS_FDS_ENV}: fd {fd}: {e}"),
            ));
        }
    }
    // SAFETY: the supervisor placed these descriptors for us alone; we
    // take ownership once (the variable is read once, at start).
    let (listener, slots) = unsafe {
        (
            std::net::TcpListener::from_raw_fd(listener_fd),
            OwnedFd::from_raw_fd(slots_fd),
        )
    };
    listener.set_nonblocking(true)?;
    let slots = WorkerSlots::map(slots, count)?;
    if slots.slot(index).is_none() {
        return Err(bad());
    }
    Ok(Some((listener, slots)))
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
    use crate::stats::CloseReason;

    #[test]
    fn a_second_mapping_sees_every_slot_and_sums_them() {
        let slots = WorkerSlots::create(3).unwrap();
        let copy = WorkerSlots::map(slots.fd.try_clone().unwrap(), 3).unwrap();
        let mut counters = Counters {
            accepted: 5,
            ..Counters::default()
        };
        counters.count_close(CloseReason::Idle);
        for index in [0, 2] {
            let slot = slots.slot(index).unwrap();
            slot.claim();
            slot.publish(&counters, &BufferGauge::default(), 1);
        }
        copy.slot(2).unwrap().publish_http(&HttpCounters {
            answered: 4,
            refused: [0, 1, 0, 0],
        });
        let total = copy.total();
        assert_eq!(total.workers, 2); // slot 1 never claimed
        assert_eq!(total.stats.accepted, 10);
        assert_eq!(total.stats.active, 2);
        assert_eq!(total.stats.closed_by(CloseReason::Idle), 2);
        assert_eq!(total.http.answered, 4);
        assert_eq!(total.http.refused, [0, 1, 0, 0]);
        assert!(slots.slot(3).is_none());
    }
}
