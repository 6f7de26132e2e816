//! What this machine has: its physical memory.
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
