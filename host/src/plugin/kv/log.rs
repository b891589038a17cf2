//! An append-only file of checksummed records: the storage under the `file` kv backend and the Redis journal.
//!
//! A record is `[payload length: u32 LE][CRC-32 of the payload: u32 LE][payload]`, written with one `write` call.
//! Once `append` returns, the record is in the kernel's page cache: it survives the process being killed
//! (`kill -9`, a panic, the OOM killer); `sync` (fdatasync) makes it survive a power cut too. On open, records are
//! read until the first one that is incomplete or fails its checksum — a write torn by a crash — and the file is
//! truncated there, so the next append starts on a record boundary.
//!
//! `rewrite` replaces the whole file atomically (write a temporary file, fsync it, rename it over, fsync the
//! directory): compaction. The file is locked (`flock`) while open, so two processes never write one log.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Largest payload accepted when reading (a longer length field is a torn or corrupt record).
const MAX_RECORD: usize = 64 << 20;

pub struct LogFile {
    file: File,
    path: PathBuf,
    /// Bytes in the file.
    pub len: u64,
    /// Whether records were appended since the last `sync`.
    pub dirty: bool,
}

/// What `open` found.
pub struct Opened {
    pub log: LogFile,
    pub records: Vec<Vec<u8>>,
    /// Bytes dropped at the end (a torn last write), if any.
    pub dropped: u64,
}

fn lock(file: &File, path: &Path) -> io::Result<()> {
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("{} is in use by another process (one file store per gateway process)", path.display()),
        ));
    }
    Err(e)
}

impl LogFile {
    /// Opens (creating it, mode 0600) and locks the log at `path`, reading every intact record.
    pub fn open(path: &Path) -> io::Result<Opened> {
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(path).map_err(|e| at(path, e))?;
        lock(&file, path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| at(path, e))?;
        let (records, good) = parse(&bytes);
        let dropped = bytes.len() as u64 - good;
        if dropped > 0 {
            file.set_len(good).map_err(|e| at(path, e))?;
        }
        let log = LogFile { file, path: path.to_path_buf(), len: good, dirty: false };
        Ok(Opened { log, records, dropped })
    }

    /// Appends records with one write.
    pub fn append(&mut self, payloads: &[&[u8]]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(payloads.iter().map(|p| p.len() + 8).sum());
        for p in payloads {
            frame(&mut buf, p);
        }
        self.file.write_all(&buf)?;
        self.len += buf.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Flushes appended records to the disk (fdatasync).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// For syncing without holding whatever guards this log: a handle to the same file when records were appended
    /// since the last sync (they are then counted as synced; call `sync_data` on the handle).
    pub fn take_dirty(&mut self) -> Option<io::Result<File>> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        Some(self.file.try_clone())
    }

    /// Replaces the file's content with `payloads`, atomically and durably.
    pub fn rewrite<'a>(&mut self, payloads: impl Iterator<Item = &'a [u8]>) -> io::Result<()> {
        let tmp = self.path.with_extension("rewrite");
        let mut buf = Vec::new();
        for p in payloads {
            frame(&mut buf, p);
        }
        // A leftover from a rewrite a crash interrupted is never the log: start it afresh.
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new().read(true).append(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        // Lock the new file before it takes the name, so the name is never unlocked; it then replaces the old
        // handle at once (appends after this point go to the new file whatever happens next).
        lock(&f, &tmp)?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = f;
        self.len = buf.len() as u64;
        self.dirty = false;
        match self.path.parent() {
            Some(dir) => File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    }

    /// Empties the file (every record was consumed).
    pub fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.len = 0;
        self.dirty = false;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn frame(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The intact records at the start of `bytes`, and how many bytes they span.
fn parse(bytes: &[u8]) -> (Vec<Vec<u8>>, u64) {
    let mut records = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + 8) {
        let (len, crc) = header.split_at(4);
        let len = u32::from_le_bytes(len.try_into().unwrap_or([0xff; 4])) as usize;
        let crc = u32::from_le_bytes(crc.try_into().unwrap_or([0; 4]));
        if len > MAX_RECORD {
            break;
        }
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        records.push(payload.to_vec());
        at += 8 + len;
    }
    (records, at as u64)
}

/// Reads fields out of a payload without panicking.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.bytes(1)?.first().copied()
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
    pub fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
    /// A `u32`-length-prefixed byte string.
    pub fn field(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.bytes(4)?.try_into().ok()?) as usize;
        self.bytes(n)
    }
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// Appends a `u32`-length-prefixed byte string.
pub fn put_field(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(bytes);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
pub mod tests {
    use super::*;

    #[test]
    fn a_torn_tail_is_cut_at_every_byte() {
        let dir = tempdir();
        let path = dir.join("log");
        {
            let mut log = LogFile::open(&path).unwrap().log;
            log.append(&[b"one", b"two"]).unwrap();
            log.append(&[b"three"]).unwrap();
        }
        let full = std::fs::read(&path).unwrap();
        for cut in 0..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let opened = LogFile::open(&path).unwrap();
            let want: Vec<&[u8]> = match cut {
                c if c < 11 => vec![],
                c if c < 22 => vec![b"one"],
                _ => vec![b"one", b"two"],
            };
            assert_eq!(opened.records, want, "cut at {cut}");
            assert_eq!(opened.log.len + opened.dropped, cut as u64);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), opened.log.len, "truncated to the last record");
        }
        // A flipped bit ends the log there.
        let mut bad = full.clone();
        bad[12] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert_eq!(LogFile::open(&path).unwrap().records, vec![b"one".to_vec()]);
    }

    #[test]
    fn rewrite_replaces_and_a_second_opener_is_refused() {
        let dir = tempdir();
        let path = dir.join("log");
        let mut log = LogFile::open(&path).unwrap().log;
        log.append(&[b"a", b"b", b"c"]).unwrap();
        let e = LogFile::open(&path).err().expect("locked");
        assert!(e.to_string().contains("in use by another process"), "{e}");
        log.rewrite([&b"c"[..]].into_iter()).unwrap();
        log.append(&[b"d"]).unwrap();
        assert!(LogFile::open(&path).is_err(), "still locked after the rewrite");
        drop(log);
        assert_eq!(LogFile::open(&path).unwrap().records, vec![b"c".to_vec(), b"d".to_vec()]);
    }

    pub fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("weir-kv-test-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
