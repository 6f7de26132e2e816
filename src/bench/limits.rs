//! The load generator's own memory, bounded before the run.
//!
//! Each connection holds up to `--pipeline` messages in its output buffer
//! and in its in-flight list, plus one reply being assembled; each thread
//! a 64 KiB read buffer and one expected reply. `--pipeline 100000000` or a
//! `--size` of gigabytes asks for more than the machine has, and would be
//! found out only by the kernel's OOM killer mid-run. So the estimate is
//! checked up front against a quarter of the machine's physical memory
//! (the rest is for the server, the kernel's socket buffers and everything
//! else), and refused with the figures when over.

use std::mem::size_of;
use std::time::Instant;

/// Bytes of one in-flight entry: its sequence number and two times.
const IN_FLIGHT_ENTRY_BYTES: u128 = (size_of::<u64>() + 2 * size_of::<Instant>()) as u128;
/// Each load thread's read buffer.
const SCRATCH_BYTES: u128 = 64 * 1024;
/// Used when the machine's memory is unknown.
const FALLBACK_CAP_BYTES: u64 = 4 << 30;

/// What the load generator's buffers may take at most, in bytes.
pub fn buffer_cap_bytes() -> u64 {
    crate::machine::physical_memory_bytes().map_or(FALLBACK_CAP_BYTES, |ram| ram / 4)
}

/// The most the load generator's buffers hold for these settings, in bytes.
pub fn buffer_bytes(connections: usize, pipeline: usize, size: usize, threads: usize) -> u128 {
    let (connections, pipeline, size) = (connections as u128, pipeline as u128, size as u128);
    let per_connection = pipeline
        .saturating_mul(size + IN_FLIGHT_ENTRY_BYTES)
        .saturating_add(size);
    let per_thread = size + SCRATCH_BYTES;
    connections
        .saturating_mul(per_connection)
        .saturating_add((threads as u128).saturating_mul(per_thread))
}

/// Refuse settings whose buffers would pass `cap` bytes, with the figures.
pub fn check_buffers(
    (connections, pipeline, size, threads): (usize, usize, usize, usize),
    cap: u64,
) -> Result<(), String> {
    let needed = buffer_bytes(connections, pipeline, size, threads);
    if needed <= u128::from(cap) {
        return Ok(());
    }
    let gib = |b: u128| b as f64 / (1u64 << 30) as f64;
    Err(format!(
        "--connections {connections} x --pipeline {pipeline} x --size {size} needs about {:.1} GiB of buffers in the load generator, \
         over its cap of {:.1} GiB (a quarter of this machine's memory); lower them",
        gib(needed),
        gib(u128::from(cap))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_past_the_cap_are_refused_with_the_figures() {
        let cap = 6 << 30;
        assert!(check_buffers((50, 1, 64, 1), cap).is_ok());
        // 20 000 connections of 64 KiB messages: 2.4 GiB, allowed.
        assert!(check_buffers((20_000, 1, 64 << 10, 2), cap).is_ok());
        let refused = check_buffers((50, 100_000_000, 64, 1), cap).unwrap_err();
        assert!(refused.contains("--pipeline 100000000"), "{refused}");
        assert!(refused.contains("GiB"), "{refused}");
        assert!(check_buffers((1, 1, 4 << 30, 1), cap).is_err());
        // No overflow, whatever the settings.
        assert!(check_buffers((usize::MAX, usize::MAX, usize::MAX, usize::MAX), cap).is_err());
    }
}
