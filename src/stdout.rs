//! Printing a report on stdout: the `listening on` lines, the final `stats`
//! line, the supervisor's summed line.
//!
//! A parent process (a test, a script, `bench` starting its own server)
//! may be waiting for a line, so each one is flushed at once. When nobody
//! reads stdout any more (a closed pipe, `EPIPE`) the error is returned for
//! the caller to log: `println!` would panic there instead, and stdout is a
//! report, not the service.

use std::io::{self, Write};

/// Write `text` to stdout and flush it (a parent process may be waiting for
/// the line). An error — `EPIPE` once the reader is gone — is returned,
/// never a panic.
pub fn print_report(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}
