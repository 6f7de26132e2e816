//! `ScriptedStream`: a test-only socket that plays a script.
//!
//! Real sockets make short writes, resets and `EINTR` rare and timing
//! dependent. This `Read + Write` returns exactly what the script says, in
//! order, so the drain and flush loops can be tested deterministically.
//! Each `read` or `write` call takes the next step; reads and writes share
//! one script, because the code under test decides which it calls.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};

use crate::stream::Linger;

#[derive(Debug)]
enum Step {
    /// A read returns these bytes (as many as fit; the rest stays queued).
    Give(Vec<u8>),
    /// A read returns `Ok(0)`.
    Eof,
    /// A write takes at most this many bytes.
    Accept(usize),
    /// The call fails with this kind.
    Fail(ErrorKind),
}

/// A scripted `Read + Write`. An exhausted script answers `WouldBlock`.
#[derive(Debug, Default)]
pub struct ScriptedStream {
    script: VecDeque<Step>,
    written: Vec<u8>,
    calls: usize,
    /// `shutdown(SHUT_WR)` was called.
    write_shut: std::cell::Cell<bool>,
    /// What `unacknowledged` answers.
    unacked: Option<usize>,
}

impl ScriptedStream {
    pub fn new() -> Self {
        Self::default()
    }
    /// The next read returns `bytes`.
    pub fn gives(mut self, bytes: &[u8]) -> Self {
        self.script.push_back(Step::Give(bytes.to_vec()));
        self
    }
    /// The next read returns `Ok(0)`: the peer sent FIN.
    pub fn eof(mut self) -> Self {
        self.script.push_back(Step::Eof);
        self
    }
    /// The next write takes at most `n` bytes (`0` means `Ok(0)`).
    pub fn accepts(mut self, n: usize) -> Self {
        self.script.push_back(Step::Accept(n));
        self
    }
    /// The next call fails with `WouldBlock`.
    pub fn would_block(self) -> Self {
        self.fails(ErrorKind::WouldBlock)
    }
    /// The next call fails with `kind`.
    pub fn fails(mut self, kind: ErrorKind) -> Self {
        self.script.push_back(Step::Fail(kind));
        self
    }
    /// `unacknowledged()` answers `n`: sent bytes the peer has not acknowledged.
    pub fn unacked(mut self, n: Option<usize>) -> Self {
        self.unacked = n;
        self
    }
    /// Whether the code under test shut down the sending side.
    pub fn write_shut(&self) -> bool {
        self.write_shut.get()
    }
    /// Every byte the code under test managed to write.
    pub fn written(&self) -> &[u8] {
        &self.written
    }
    /// How many read/write calls were made (to count syscalls saved).
    pub fn calls(&self) -> usize {
        self.calls
    }
}

impl Read for ScriptedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        match self.script.pop_front() {
            Some(Step::Give(mut bytes)) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                if n < bytes.len() {
                    self.script.push_front(Step::Give(bytes.split_off(n)));
                }
                Ok(n)
            }
            Some(Step::Eof) => Ok(0),
            Some(Step::Fail(kind)) => Err(kind.into()),
            Some(step @ Step::Accept(_)) => panic!("read called, but the script expects {step:?}"),
            None => Err(ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for ScriptedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        match self.script.pop_front() {
            Some(Step::Accept(limit)) => {
                let n = limit.min(buf.len());
                self.written.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            Some(Step::Fail(kind)) => Err(kind.into()),
            Some(step) => panic!("write called, but the script expects {step:?}"),
            None => Err(ErrorKind::WouldBlock.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Linger for ScriptedStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.write_shut.set(true);
        Ok(())
    }
    fn unacknowledged(&self) -> Option<usize> {
        self.unacked
    }
}
