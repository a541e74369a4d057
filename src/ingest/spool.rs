//! The disk spool: batches of line protocol that could not be written to InfluxDB,
//! kept on local disk until it comes back.
//!
//! A batch is acknowledged on MQTT once it is either in InfluxDB or durably here
//! (written to a temp file, fsynced, renamed, directory fsynced), so the broker's
//! queue is never the only copy during a database outage and the chain stays
//! at-least-once. Files are named by creation time so they drain oldest first. The
//! spool is bounded in bytes: when full, `push` refuses and the caller keeps the
//! batch unacknowledged (the broker holds the rest).
//!
//! Blocking file I/O, called from the writer task: it only happens during an outage,
//! on batches of at most a few hundred kilobytes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why a batch could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool full: {used} of {max} bytes used, batch of {batch} bytes refused")]
    Full { used: u64, max: u64, batch: u64 },
    #[error("spool I/O error in {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: io::Error,
    },
}

/// A directory of pending batches.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    used: u64,
    files: usize,
    seq: u64,
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`, counting what is already
    /// there and removing temp files a crash left behind.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let io_err = |source| SpoolError::Io {
            dir: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let mut used = 0;
        let mut files = 0;
        for entry in fs::read_dir(dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let path = entry.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("tmp") => {
                    let _ = fs::remove_file(&path);
                }
                Some("lp") => {
                    used += entry.metadata().map_err(io_err)?.len();
                    files += 1;
                }
                _ => {}
            }
        }
        Ok(Spool {
            dir: dir.to_owned(),
            max_bytes,
            used,
            files,
            seq: 0,
        })
    }

    fn io(&self, source: io::Error) -> SpoolError {
        SpoolError::Io {
            dir: self.dir.display().to_string(),
            source,
        }
    }

    /// Durably stores one batch.
    pub fn push(&mut self, body: &str) -> Result<(), SpoolError> {
        let len = body.len() as u64;
        if self.used + len > self.max_bytes {
            return Err(SpoolError::Full {
                used: self.used,
                max: self.max_bytes,
                batch: len,
            });
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        self.seq += 1;
        let name = format!("{nanos:024}-{:08}.lp", self.seq);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(body.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, self.dir.join(&name))?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io(e)
        })?;
        self.used += len;
        self.files += 1;
        Ok(())
    }

    /// The oldest pending batch, if any.
    pub fn oldest(&self) -> Result<Option<(PathBuf, String)>, SpoolError> {
        let mut names: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(|e| self.io(e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("lp"))
            .collect();
        names.sort();
        match names.into_iter().next() {
            None => Ok(None),
            Some(p) => {
                let body = fs::read_to_string(&p).map_err(|e| self.io(e))?;
                Ok(Some((p, body)))
            }
        }
    }

    /// Removes a batch once it is in InfluxDB.
    pub fn remove(&mut self, path: &Path) -> Result<(), SpoolError> {
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(path).map_err(|e| self.io(e))?;
        self.used = self.used.saturating_sub(len);
        self.files = self.files.saturating_sub(1);
        Ok(())
    }

    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    pub fn files(&self) -> usize {
        self.files
    }

    pub fn is_empty(&self) -> bool {
        self.files == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_drain_and_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 20).unwrap();
        assert!(s.oldest().unwrap().is_none());
        s.push("m v=1 1\n").unwrap();
        s.push("m v=2 2\n").unwrap();
        assert_eq!((s.files(), s.used_bytes()), (2, 16));
        assert!(matches!(
            s.push("m v=3 3\n"),
            Err(SpoolError::Full {
                used: 16,
                max: 20,
                batch: 8
            })
        ));
        // Reopening (a restart) finds the same batches, oldest first.
        fs::write(dir.path().join("junk.lp.tmp"), "partial").unwrap();
        let mut s = Spool::open(dir.path(), 20).unwrap();
        assert_eq!(s.files(), 2);
        let (p, body) = s.oldest().unwrap().unwrap();
        assert_eq!(body, "m v=1 1\n");
        s.remove(&p).unwrap();
        assert_eq!(s.oldest().unwrap().unwrap().1, "m v=2 2\n");
        assert_eq!(s.used_bytes(), 8);
        assert!(!dir.path().join("junk.lp.tmp").exists());
    }
}
