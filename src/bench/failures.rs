//! Why connections never came up, by class, each with its OS reason.
//!
//! The invariant the summary rests on: every connection asked for is
//! either achieved or counted here exactly once, so requested − achieved
//! equals [`ConnectFailures::total`]. The classes are what a user can act
//! on: a refusing or unreachable target, a server too slow to complete
//! handshakes, the bench out of source ports or out of descriptors.

use std::io;

use super::schema::ConnectFailureCounts;

/// Connect failures by class.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectFailures {
    /// `ECONNREFUSED`: nothing listens there (or its backlog refused).
    pub refused: u64,
    /// `ETIMEDOUT`: the kernel gave up retrying the handshake.
    pub timed_out: u64,
    /// Still under way, or never started, when the bench's own connect
    /// deadline passed (the server completes handshakes too slowly).
    pub gave_up: u64,
    /// Still under way, or never started, when a signal stopped the run.
    pub stopped: u64,
    /// `EADDRNOTAVAIL`: no ephemeral port left on the source address.
    pub no_ports: u64,
    /// `EMFILE`/`ENFILE`: the bench ran out of file descriptors.
    pub no_descriptors: u64,
    /// `EHOSTUNREACH`/`ENETUNREACH`: no route to the target.
    pub unreachable: u64,
    /// Anything else; `other_errno` is the first one seen.
    pub other: u64,
    /// The OS error number of the first "other" failure (0: none).
    pub other_errno: i32,
}

/// The classes in the order the summary names them: (JSON key, what it means).
const CLASSES: [(&str, &str); 8] = [
    (
        "refused",
        "refused (ECONNREFUSED: nothing listening, or its queue full)",
    ),
    (
        "timed_out",
        "timed out (ETIMEDOUT: no answer to the handshake)",
    ),
    ("gave_up", "not up within the bench's connect deadline"),
    ("stopped", "not up when the run was interrupted"),
    ("no_ports", "no source port left (EADDRNOTAVAIL)"),
    ("no_descriptors", "out of file descriptors (EMFILE/ENFILE)"),
    ("unreachable", "unreachable (no route to the target)"),
    ("other", "other"),
];

impl ConnectFailures {
    /// Count one failure of a connect (or of setting up a connected socket).
    pub fn count(&mut self, error: &io::Error) {
        match error.raw_os_error() {
            Some(libc::ECONNREFUSED) => self.refused += 1,
            Some(libc::ETIMEDOUT) => self.timed_out += 1,
            Some(libc::EADDRNOTAVAIL) => self.no_ports += 1,
            Some(libc::EMFILE | libc::ENFILE) => self.no_descriptors += 1,
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => self.unreachable += 1,
            errno => {
                if self.other == 0 {
                    self.other_errno = errno.unwrap_or(0);
                }
                self.other += 1;
            }
        }
    }

    /// Every failure, whatever its class.
    pub fn total(&self) -> u64 {
        self.counts().iter().sum()
    }

    fn counts(&self) -> [u64; 8] {
        [
            self.refused,
            self.timed_out,
            self.gave_up,
            self.stopped,
            self.no_ports,
            self.no_descriptors,
            self.unreachable,
            self.other,
        ]
    }

    /// Add another thread's counts.
    pub fn add(&mut self, other: &ConnectFailures) {
        if self.other == 0 {
            self.other_errno = other.other_errno;
        }
        self.refused += other.refused;
        self.timed_out += other.timed_out;
        self.gave_up += other.gave_up;
        self.stopped += other.stopped;
        self.no_ports += other.no_ports;
        self.no_descriptors += other.no_descriptors;
        self.unreachable += other.unreachable;
        self.other += other.other;
    }

    /// The report's `connect_failures`: a count per class, and the OS's
    /// text for the first `other`.
    pub fn to_counts(&self) -> ConnectFailureCounts {
        ConnectFailureCounts {
            refused: self.refused,
            timed_out: self.timed_out,
            gave_up: self.gave_up,
            stopped: self.stopped,
            no_ports: self.no_ports,
            no_descriptors: self.no_descriptors,
            unreachable: self.unreachable,
            other: self.other,
            other_reason: (self.other > 0).then(|| self.other_reason()),
        }
    }

    fn other_reason(&self) -> String {
        match self.other_errno {
            0 => "no OS error code".into(),
            errno => io::Error::from_raw_os_error(errno).to_string(),
        }
    }
}

/// The classes with a non-zero count in `reasons` (a report's
/// `connect_failures`), in words: `"5 refused (ECONNREFUSED: ...), 2 other
/// (Permission denied ...)"`. Empty when there are none.
pub fn describe(reasons: &ConnectFailureCounts) -> String {
    let counts = [
        reasons.refused,
        reasons.timed_out,
        reasons.gave_up,
        reasons.stopped,
        reasons.no_ports,
        reasons.no_descriptors,
        reasons.unreachable,
        reasons.other,
    ];
    let mut parts = Vec::new();
    for ((key, words), count) in CLASSES.into_iter().zip(counts) {
        if count == 0 {
            continue;
        }
        match (key, &reasons.other_reason) {
            ("other", Some(why)) => parts.push(format!("{count} other ({why})")),
            _ => parts.push(format!("{count} {words}")),
        }
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn each_os_reason_lands_in_its_class_and_every_failure_is_counted_once() {
        let mut f = ConnectFailures::default();
        for errno in [
            libc::ECONNREFUSED,
            libc::ECONNREFUSED,
            libc::ETIMEDOUT,
            libc::EADDRNOTAVAIL,
            libc::EMFILE,
            libc::ENFILE,
            libc::EHOSTUNREACH,
            libc::EACCES,
        ] {
            f.count(&os(errno));
        }
        f.gave_up += 3;
        assert_eq!(
            (
                f.refused,
                f.timed_out,
                f.no_ports,
                f.no_descriptors,
                f.unreachable
            ),
            (2, 1, 1, 2, 1)
        );
        assert_eq!((f.other, f.other_errno), (1, libc::EACCES));
        assert_eq!(f.total(), 8 + 3);
        let text = describe(&f.to_counts());
        assert!(text.starts_with("2 refused (ECONNREFUSED"), "{text}");
        assert!(text.contains("3 not up within"), "{text}");
        assert!(text.contains("2 out of file descriptors"), "{text}");
        assert!(text.contains("1 other (Permission denied"), "{text}");
    }

    #[test]
    fn threads_add_up() {
        let mut a = ConnectFailures::default();
        a.count(&os(libc::ECONNREFUSED));
        let mut b = ConnectFailures::default();
        b.count(&os(libc::EPERM));
        a.add(&b);
        assert_eq!((a.total(), a.other_errno), (2, libc::EPERM));
        assert_eq!(describe(&ConnectFailures::default().to_counts()), "");
    }
}
