//! Reading a message file for RETR and TOP: from the page cache on the
//! session's own thread when the octets are there, on the blocking pool
//! only when reading would wait for the disk.
//!
//! A read served by the page cache is a copy that takes microseconds; a
//! blocking-pool round trip for it costs two thread wake-ups and two
//! context switches, more than the copy. `preadv2` with `RWF_NOWAIT`
//! (Linux 4.14) reads only what is cached and says `EAGAIN` instead of
//! waiting: then (and on a filesystem that does not support the flag) the
//! chunk is read on the blocking pool as before.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rustix::io::{Errno, ReadWriteFlags};

/// Octets read per chunk: large enough that per-chunk work (a read, the
/// encoder's pass, a write) is small against the copy itself.
const CHUNK: usize = 128 * 1024;

/// A message file read chunk by chunk from `offset` on.
#[derive(Debug)]
pub(crate) struct FileBody {
    file: Arc<File>,
    offset: u64,
    /// The file's length when opened: a cached read of nothing at this
    /// offset is the end, with no round trip to confirm it.
    len: u64,
    /// Whether `RWF_NOWAIT` reads are still worth trying on this file.
    nowait: bool,
}

impl FileBody {
    /// Reads `file` (of length `len`) from its start.
    pub(crate) fn new(file: File, len: u64) -> Self {
        Self {
            file: Arc::new(file),
            offset: 0,
            len,
            nowait: true,
        }
    }

    /// The next chunk, or `None` at the end of the file.
    pub(crate) async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let mut buf = BytesMut::zeroed(CHUNK);
        if self.nowait {
            match self.read_cached(&mut buf) {
                Ok(0) if self.offset >= self.len => return Ok(None),
                Ok(0) => {}
                Ok(n) => return Ok(Some(self.advance(buf, n))),
                Err(Errno::AGAIN | Errno::INTR) => {}
                Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => self.nowait = false,
                Err(e) => return Err(e.into()),
            }
        }
        let (file, offset) = (self.file.clone(), self.offset);
        let (buf, n) = tokio::task::spawn_blocking(move || read_at(&file, buf, offset))
            .await
            .map_err(io::Error::other)??;
        Ok((n > 0).then(|| self.advance(buf, n)))
    }

    /// What the page cache holds of the next chunk, without waiting.
    fn read_cached(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        rustix::io::preadv2(
            &*self.file,
            &mut [IoSliceMut::new(buf)],
            self.offset,
            ReadWriteFlags::NOWAIT,
        )
    }

    fn advance(&mut self, mut buf: BytesMut, n: usize) -> Bytes {
        self.offset += n as u64;
        buf.truncate(n);
        buf.freeze()
    }
}

/// A blocking read of up to `buf.len()` octets at `offset`.
fn read_at(file: &File, mut buf: BytesMut, offset: u64) -> io::Result<(BytesMut, usize)> {
    loop {
        match file.read_at(&mut buf, offset) {
            Ok(n) => return Ok((buf, n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    async fn read_all(body: &mut FileBody) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(chunk) = body.next_chunk().await.unwrap() {
            assert!(!chunk.is_empty() && chunk.len() <= CHUNK);
            all.extend_from_slice(&chunk);
        }
        all
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn reads_every_octet_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        // Over two chunks and a partial one, with a pattern that shows a
        // chunk read at the wrong offset.
        let data: Vec<u8> = (0..(2 * CHUNK + 4321) as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        for cached in [true, false] {
            let file = File::open(&path).unwrap();
            let mut body = FileBody::new(file, data.len() as u64);
            // Without the flag every chunk takes the blocking pool.
            body.nowait = cached;
            assert_eq!(read_all(&mut body).await, data);
            assert_eq!(body.next_chunk().await.unwrap(), None);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_empty_file_ends_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        std::fs::File::create(&path).unwrap();
        let mut body = FileBody::new(File::open(&path).unwrap(), 0);
        assert_eq!(body.next_chunk().await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_file_cut_short_ends_where_it_ends() {
        // Another program truncated the file after it was opened: the
        // read ends at its new end, not at the length it had.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&[b'x'; 1000])
            .unwrap();
        let file = File::open(&path).unwrap();
        let mut body = FileBody::new(file, 1000);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        assert_eq!(read_all(&mut body).await, vec![b'x'; 10]);
    }
}
