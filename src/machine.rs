//! What this machine has: its physical memory; and how it backs ours
//! (small pages, not transparent huge pages).
//!
//! `serve` refuses a `--max-buffered` larger than the machine when no
//! `--max-memory` budget bounds it, and `bench` caps its own buffers at a
//! quarter of it; both ask here, below either.

/// The machine's physical memory, if the system says.
pub fn physical_memory_bytes() -> Option<u64> {
    // SAFETY: sysconf only reads a system setting.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let pages = u64::try_from(pages).ok()?;
    let page = u64::try_from(page).ok()?;
    pages.checked_mul(page)
}

/// Ask the kernel never to back this process's memory with transparent
/// huge pages (`prctl(PR_SET_THP_DISABLE)`); kept across `fork` and
/// `execve`, so a supervisor's workers inherit it. Returns whether the
/// kernel took it (it is Linux's, since 3.15).
///
/// Why: an idle connection costs this server about 70 bytes of its own
/// memory (docs/BENCHMARKS.md), touched a few bytes at a time across a
/// table of many megabytes. With THP set to `always`, one touched byte
/// can bring in a whole 2 MiB page (and `khugepaged` collapses a 2 MiB
/// range holding a single used page into one), and a program's text
/// mapped in 2 MiB pages is counted whole in every worker: with dozens of
/// workers that costs more than the connections do. Nothing here gains
/// from huge pages: an event loop that waits on the network misses the
/// TLB on few of its turns.
pub fn keep_small_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_THP_DISABLE reads only its integer
        // arguments and sets a flag of this process.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}
