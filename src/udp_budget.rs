//! A per-source budget on UDP reply bytes, so the server cannot be used as
//! a reflector.
//!
//! A UDP request's source address is not checked by anyone: an attacker can
//! send datagrams "from" a victim's address, and the server's replies go to
//! the victim. `echo` and `upper` answer byte for byte, `prefix` and `greet`
//! add bytes (an amplification). This module caps the reply bytes sent to
//! each source network per second, with a token bucket per source, the way
//! DNS servers do it (BIND's response-rate limiting).
//!
//! Invariants:
//! - **Bounded memory.** The buckets live in a fixed table, one bucket per
//!   slot, the slot chosen by a keyed hash of the source; however many
//!   addresses an attacker spoofs, the table does not grow. Sources that
//!   land in one slot share its bucket: the safe side, since a collision
//!   can only cut replies, never allow more — and a bucket left idle is full
//!   again, so an idle neighbour costs nothing. The hash key is random per
//!   process, so an attacker cannot aim collisions at a chosen source.
//! - **Sources are networks**, not single addresses: an IPv4 /24 and an
//!   IPv6 /56 (BIND's defaults), because a victim owning a prefix could
//!   otherwise be hit from every address in it, each with a fresh bucket.
//! - **Loopback is exempt**: the kernel drops loopback-sourced packets that
//!   arrive from outside, so they cannot be spoofed from the network (and
//!   local benchmarks are never throttled).
//! - No syscall, no allocation and O(1) work per datagram; integer
//!   arithmetic in milli-bytes, so slow rates lose nothing to rounding.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;

/// Bytes charged per reply on top of its payload: the IPv4 and UDP headers
/// the victim receives too (and what makes an empty reply cost something).
pub const HEADER_BYTES: u64 = 28;

/// Leading bits of an IPv4 source that name its network.
pub const IPV4_PREFIX_BITS: u32 = 24;
/// Leading bits of an IPv6 source that name its network.
pub const IPV6_PREFIX_BITS: u32 = 56;

/// One token bucket, for the source networks that hash to its slot.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Milli-bytes available (bytes × 1000).
    tokens_milli: u64,
    /// When `tokens_milli` was last brought up to date (ms).
    updated_ms: u64,
}

/// Token buckets of reply bytes per source network, in a fixed-size table.
#[derive(Debug)]
pub struct ReplyBudget<S = RandomState> {
    slots: Box<[Slot]>,
    hasher: S,
    /// Refill rate: bytes per second = milli-bytes per millisecond.
    bytes_per_sec: u64,
    burst_milli: u64,
}

impl ReplyBudget {
    /// A budget of `bytes_per_sec` reply bytes per source network, allowing
    /// bursts of `burst_bytes`, in a table of `slots` buckets (rounded up to
    /// a power of two, at least 1). Each slot takes 16 bytes.
    pub fn new(bytes_per_sec: u64, burst_bytes: u64, slots: usize) -> Self {
        Self::with_hasher(bytes_per_sec, burst_bytes, slots, RandomState::new())
    }
}

impl<S: BuildHasher> ReplyBudget<S> {
    /// [`ReplyBudget::new`] with a chosen hash (tests use a fixed one).
    pub fn with_hasher(bytes_per_sec: u64, burst_bytes: u64, slots: usize, hasher: S) -> Self {
        let burst_milli = burst_bytes.saturating_mul(1000);
        let empty = Slot {
            tokens_milli: burst_milli,
            updated_ms: 0,
        };
        ReplyBudget {
            slots: vec![empty; slots.max(1).next_power_of_two()].into_boxed_slice(),
            hasher,
            bytes_per_sec,
            burst_milli,
        }
    }

    /// May a reply of `reply_bytes` go to `source` at `now_ms`? If so, it is
    /// charged (payload plus [`HEADER_BYTES`]); if not, nothing changes and
    /// the caller drops the reply (and counts it).
    pub fn allow(&mut self, source: IpAddr, reply_bytes: usize, now_ms: u64) -> bool {
        if source.is_loopback() {
            return true;
        }
        let network = network_of(source);
        let index = (self.hasher.hash_one(network) as usize) & (self.slots.len() - 1);
        let (rate, burst) = (self.bytes_per_sec, self.burst_milli);
        let slot = &mut self.slots[index];
        let elapsed = now_ms.saturating_sub(slot.updated_ms);
        slot.tokens_milli = slot
            .tokens_milli
            .saturating_add(elapsed.saturating_mul(rate))
            .min(burst);
        slot.updated_ms = slot.updated_ms.max(now_ms);
        let cost = (reply_bytes as u64)
            .saturating_add(HEADER_BYTES)
            .saturating_mul(1000);
        if slot.tokens_milli < cost {
            return false;
        }
        slot.tokens_milli -= cost;
        true
    }

    /// How many buckets the table holds (fixed at construction).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }
}

/// The source's network as one number: an IPv4 /24 (as an IPv4-mapped IPv6
/// address) or an IPv6 /56, host bits cleared.
fn network_of(source: IpAddr) -> u128 {
    match source {
        IpAddr::V4(v4) => {
            let mask = u32::MAX << (32 - IPV4_PREFIX_BITS);
            let network = std::net::Ipv4Addr::from(u32::from(v4) & mask);
            u128::from(network.to_ipv6_mapped())
        }
        IpAddr::V6(v6) => u128::from(v6) & (u128::MAX << (128 - IPV6_PREFIX_BITS)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasherDefault;
    use std::net::Ipv6Addr;

    /// A deterministic hash, so which sources share a slot is fixed.
    type Fixed = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// A budget of 1000 B/s, bursts of 1000 B, over `slots` buckets.
    fn budget(slots: usize) -> ReplyBudget<Fixed> {
        ReplyBudget::with_hasher(1000, 1000, slots, Fixed::default())
    }

    // ---- one source ----

    #[test]
    fn a_source_gets_its_burst_then_the_refill_rate() {
        let mut b = budget(64);
        let victim = ip("192.0.2.7");
        // 72 + 28 header = 100 bytes per reply: ten fit the 1000-byte burst.
        for i in 0..10 {
            assert!(b.allow(victim, 72, 0), "reply {i} of the burst");
        }
        assert!(!b.allow(victim, 72, 0), "burst spent");
        assert!(
            !b.allow(victim, 72, 99),
            "99 ms refill 99 bytes: not enough"
        );
        assert!(b.allow(victim, 72, 100), "100 ms refill 100 bytes");
        assert!(!b.allow(victim, 72, 100));
        // A long pause refills to the burst, never beyond.
        for _ in 0..10 {
            assert!(b.allow(victim, 72, 60_000));
        }
        assert!(!b.allow(victim, 72, 60_000));
    }

    #[test]
    fn slow_rates_lose_nothing_to_rounding() {
        let mut b = ReplyBudget::with_hasher(1, 100, 1, Fixed::default()); // 1 byte per second
        let victim = ip("198.51.100.1");
        assert!(b.allow(victim, 72, 0)); // the whole burst (72 + 28 bytes)
                                         // Asked again and again (each refusal brings the bucket up to date):
                                         // the fractions of a byte each millisecond adds must add up.
        for ms in 1..100_000 {
            assert!(!b.allow(victim, 72, ms), "at {ms} ms");
        }
        assert!(b.allow(victim, 72, 100_000), "100 s at 1 B/s = 100 bytes");
    }

    #[test]
    fn a_reply_larger_than_the_burst_is_never_sent_and_costs_nothing() {
        let mut b = budget(8);
        let victim = ip("192.0.2.1");
        assert!(!b.allow(victim, 5000, 0));
        assert!(b.allow(victim, 972, 0), "the refused reply was not charged");
    }

    // ---- many sources ----

    #[test]
    fn addresses_in_one_network_share_a_bucket_and_other_networks_do_not() {
        let mut b = budget(1024);
        assert!(b.allow(ip("192.0.2.1"), 972, 0));
        assert!(!b.allow(ip("192.0.2.200"), 0, 0), "same /24");
        assert!(b.allow(ip("192.0.3.1"), 972, 0), "another /24");
        assert!(b.allow(ip("2001:db8:0:1::1"), 972, 0));
        assert!(!b.allow(ip("2001:db8:0:ff:ffff::9"), 0, 0), "same /56");
        assert!(b.allow(ip("2001:db8:0:100::1"), 972, 0), "another /56");
    }

    #[test]
    fn a_bucket_is_two_words() {
        assert_eq!(std::mem::size_of::<Slot>(), 16);
    }

    #[test]
    fn loopback_sources_are_never_limited() {
        let mut b = budget(1);
        for _ in 0..10_000 {
            assert!(b.allow(ip("127.0.0.1"), 65_000, 0));
            assert!(b.allow(IpAddr::V6(Ipv6Addr::LOCALHOST), 65_000, 0));
        }
    }

    #[test]
    fn sources_in_one_slot_share_its_bucket_which_refills_for_whoever_comes_next() {
        let mut b = budget(1); // every source lands in the one slot
        assert!(b.allow(ip("192.0.2.1"), 472, 0)); // 500 of 1000 spent
        assert!(b.allow(ip("203.0.113.1"), 472, 0), "shares the rest");
        assert!(
            !b.allow(ip("203.0.113.1"), 0, 0),
            "the shared bucket is empty"
        );
        // A second later the bucket is full again, for anyone hashing there.
        assert!(b.allow(ip("198.51.100.1"), 972, 1000));
        assert!(!b.allow(ip("192.0.2.1"), 0, 1000));
    }

    #[test]
    fn a_spoofed_flood_from_many_sources_leaves_the_table_its_size_and_caps_the_victim() {
        let mut b = ReplyBudget::new(1000, 1000, 4096);
        let victim = ip("192.0.2.7");
        let mut sent_to_victim = 0u64;
        for i in 0..200_000u32 {
            let now = u64::from(i / 200); // 200 datagrams per ms: 1 s in all
            let spoofed = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)));
            b.allow(spoofed, 100, now);
            if b.allow(victim, 72, now) {
                sent_to_victim += 100;
            }
        }
        assert_eq!(b.slots(), 4096);
        // Burst plus one second of refill, whatever the collisions.
        assert!(sent_to_victim <= 2000, "{sent_to_victim} bytes reflected");
    }
}
