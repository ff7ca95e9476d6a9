//! Advisory locks that keep two processes from working on the same sweep folder or run:
//! `flock` on a small file that records who holds it. The kernel drops the lock when its
//! holder exits, however it exits, so a killed sweep leaves no stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::status::this_host;

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// Takes the lock at `path` (created if needed) without waiting. When another process
    /// holds it, the error says who (`pid N on HOST`) and that `what` is in use.
    pub fn acquire(path: &Path, what: &str) -> Result<Lock> {
        Self::acquire_within(path, what, std::time::Duration::ZERO)
    }

    /// [`Lock::acquire`], trying again for up to `wait`: a holder that is exiting (a worker
    /// whose runner was killed) lets go within moments, one at work does not.
    pub fn acquire_within(path: &Path, what: &str, wait: std::time::Duration) -> Result<Lock> {
        let deadline = std::time::Instant::now() + wait;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        let mut locked = try_lock(&file)?;
        while !locked && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            locked = try_lock(&file)?;
        }
        if !locked {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            anyhow::bail!(
                "{what} is in use by another process ({}; lock file {}): wait for it to end or \
                 stop it first",
                if holder.is_empty() { "unknown" } else { holder },
                path.display()
            );
        }
        let me = format!("pid {} on {}\n", std::process::id(), this_host());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(me.as_bytes()))
            .with_context(|| format!("cannot write the lock file {}", path.display()))?;
        Ok(Lock {
            _file: file,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(unix)]
fn try_lock(file: &File) -> Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this File owns for the call's duration.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(err).context("flock")
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("sweep.lock");
        let first = Lock::acquire(&p, "sweep folder x").unwrap();
        // flock locks belong to the open file description: a second open is a second holder.
        let e = Lock::acquire(&p, "sweep folder x").unwrap_err().to_string();
        assert!(
            e.starts_with("sweep folder x is in use by another process (pid "),
            "{e}"
        );
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        Lock::acquire(&p, "sweep folder x").unwrap();
    }
}
