//! `serve --pid-file PATH`: the file that names the live supervisor, for
//! `kill -USR2 $(cat PATH)` and for service managers (`PIDFile=`).
//!
//! The file is only ever replaced whole: the pid is written to a temporary
//! file beside it, then renamed over it (`rename(2)` is atomic within a
//! directory). A reader — an operator's shell, systemd — sees the old pid
//! or the new one, never an empty or half-written file; that matters when
//! a new generation takes over (`upgrade.rs`) while someone reads the file.
//!
//! The live supervisor holds an `flock` on the file for its whole life, so
//! a second server started on the same file refuses at once, before it
//! binds or touches anything ([`PidFile::claim`]). Since each write puts a
//! new file in place, each write locks the new file before the rename
//! ([`PidFile::write_locked`]), and an upgrade's new generation is handed,
//! at its start, an open file already locked that the old supervisor fills
//! in and renames into place at the commit ([`PidFile::prepare`]): the old
//! and the new supervisor share that lock, which outlives the old one.
//!
//! A first supervisor writes it once every socket is bound (a second
//! server started by mistake fails to bind before it touches the file);
//! after an upgrade the old supervisor rewrites it with the new pid at the
//! commit point (`upgrade.rs`), so a rolled-back generation is never named.
//! On every exit path ([`RemoveAtExit`]) a supervisor removes the file
//! only if it still names itself: after a handover it names the new
//! generation, which must keep it.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where the supervisor's pid is written.
#[derive(Debug, Clone)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// The pid file at `path` (nothing is written yet).
    pub fn new(path: PathBuf) -> Self {
        PidFile { path }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replace the file with `pid` and a newline, atomically (a temporary
    /// file in the same directory, renamed over it). The error names the file.
    pub fn write(&self, pid: u32) -> io::Result<()> {
        let named = |e: io::Error| {
            io::Error::new(e.kind(), format!("--pid-file {}: {e}", self.path.display()))
        };
        let temporary = self.temporary();
        let written = std::fs::File::create(&temporary)
            .and_then(|mut file| file.write_all(format!("{pid}\n").as_bytes()))
            .and_then(|()| std::fs::rename(&temporary, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written.map_err(named)
    }

    /// Refuse to start if a running server holds the file (its lock).
    /// A file nobody holds is stale, and is replaced later.
    pub fn claim(&self) -> io::Result<()> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.named(e)),
        };
        match try_lock(&file) {
            Ok(()) => Ok(()), // released as `file` closes: taken again at the write
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let pid = self.read().map_or("?".to_string(), |pid| pid.to_string());
                Err(self.named(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("held by a running server (pid {pid})"),
                )))
            }
            Err(e) => Err(self.named(e)),
        }
    }

    /// [`PidFile::write`], the new file locked before it is in place; the
    /// lock lasts as long as the returned file is open.
    pub fn write_locked(&self, pid: u32) -> io::Result<File> {
        let prepared = self.prepare()?;
        prepared.commit(pid)
    }

    /// A new file beside this one, locked, not yet in place: filled in and
    /// renamed over it by [`Prepared::commit`], or removed when dropped
    /// uncommitted.
    pub fn prepare(&self) -> io::Result<Prepared> {
        let temporary = self.temporary();
        let file = File::create(&temporary).map_err(|e| self.named(e))?;
        let prepared = Prepared {
            file: Some(file),
            temporary,
            path: self.path.clone(),
        };
        try_lock(prepared.file()).map_err(|e| self.named(e))?;
        Ok(prepared)
    }

    fn named(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("--pid-file {}: {e}", self.path.display()))
    }

    /// The pid the file names now, if it can be read and names one.
    pub fn read(&self) -> Option<u32> {
        std::fs::read_to_string(&self.path)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Remove the file if it still names `pid` (a supervisor exiting: once
    /// a new generation took over, the file is the new one's).
    pub fn remove_if_names(&self, pid: u32) {
        if self.read() == Some(pid) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// `PATH.tmp.PID`: beside the file (a rename across filesystems is not
    /// atomic), and per process, so two writers never share one.
    fn temporary(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".tmp.{}", std::process::id()));
        PathBuf::from(name)
    }
}

/// A pid file written and locked, not yet in place ([`PidFile::prepare`]).
#[derive(Debug)]
pub struct Prepared {
    /// `None` once committed.
    file: Option<File>,
    temporary: PathBuf,
    path: PathBuf,
}

impl Prepared {
    /// The open, locked file (to hand to a new generation).
    pub fn file(&self) -> &File {
        self.file.as_ref().expect("not committed")
    }

    /// Write `pid` into the file and rename it into place: the lock, held
    /// by whoever has the file open, now guards the pid file.
    pub fn commit(mut self, pid: u32) -> io::Result<File> {
        let mut file = self.file.take().expect("committed once");
        let named = |e: io::Error| {
            io::Error::new(e.kind(), format!("--pid-file {}: {e}", self.path.display()))
        };
        file.write_all(format!("{pid}\n").as_bytes())
            .map_err(named)?;
        std::fs::rename(&self.temporary, &self.path).map_err(named)?;
        Ok(file)
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.temporary); // never put in place
        }
    }
}

/// Keep `lock` (an open, locked pid file) open until this process exits,
/// which is when the lock is to go: no owner to drop it earlier.
pub fn hold_for_life(lock: File) {
    std::mem::forget(lock);
}

/// `flock(LOCK_EX | LOCK_NB)`: `WouldBlock` when another open file holds it.
fn try_lock(file: &File) -> io::Result<()> {
    // SAFETY: flock on a descriptor `file` keeps open.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes the pid file, if it still names this process, when dropped:
/// held by the supervisor for its whole run, so every way out of it —
/// an error, a second signal, the end of a drain — cleans up.
#[derive(Debug)]
pub struct RemoveAtExit(pub PidFile);

impl Drop for RemoveAtExit {
    fn drop(&mut self) {
        self.0.remove_if_names(std::process::id());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("echo-reactor-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn the_file_is_replaced_whole_and_names_the_last_pid_written() {
        let file = PidFile::new(scratch("replaced.pid"));
        file.write(41).unwrap();
        assert_eq!(std::fs::read_to_string(file.path()).unwrap(), "41\n");
        file.write(42).unwrap();
        assert_eq!(file.read(), Some(42));
        // No temporary file is left beside it.
        let dir = file.path().parent().unwrap();
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("replaced.pid."))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn only_the_supervisor_the_file_names_removes_it() {
        let file = PidFile::new(scratch("removed.pid"));
        file.write(7).unwrap();
        file.remove_if_names(8); // an old generation, exiting after a handover
        assert_eq!(file.read(), Some(7));
        file.remove_if_names(7);
        assert!(!file.path().exists());
    }

    #[test]
    fn a_file_held_by_a_live_writer_is_refused_and_a_released_one_claimed() {
        let file = PidFile::new(scratch("locked.pid"));
        file.claim().unwrap(); // none yet
        let held = file.write_locked(41).unwrap();
        let text = file.claim().unwrap_err().to_string();
        assert!(text.contains("held by a running server (pid 41)"), "{text}");
        // Prepared for a successor and put in place: still held, by the
        // new file, once the first is closed.
        let next = file.prepare().unwrap();
        drop(held);
        let next = next.commit(42).unwrap();
        assert_eq!(file.read(), Some(42));
        assert!(file.claim().is_err(), "the new file is locked");
        drop(next);
        file.claim().unwrap();
        // One never committed leaves nothing behind.
        drop(file.prepare().unwrap());
        assert_eq!(file.read(), Some(42));
    }

    #[test]
    fn a_file_that_cannot_be_written_is_named_in_the_error() {
        let file = PidFile::new(PathBuf::from("/nonexistent-dir/echo.pid"));
        let text = file.write(1).unwrap_err().to_string();
        assert!(
            text.starts_with("--pid-file /nonexistent-dir/echo.pid: "),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1);
    }
}
