//! The recorder's disk side: a thread per recording that hashes and writes
//! the 64 KiB blocks the pump fills, so SHA-256 and `write(2)` run beside
//! the byte pump instead of inside it. At most [`QUEUE`] blocks wait: when
//! the disk is slower than the session, the pump waits (memory stays
//! bounded). Emptied blocks go back to the recorder for reuse, so a session
//! allocates a handful of buffers in all.

use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// Blocks that may wait for the disk.
const QUEUE: usize = 4;

enum Job {
    Block(Vec<u8>),
    Snapshot(mpsc::Sender<(u64, String)>),
}

/// What the writer did, once it has finished.
pub(super) struct Done {
    pub sha256: String,
    pub size: u64,
    pub error: Option<io::Error>,
}

type Failure = Arc<Mutex<Option<(io::ErrorKind, String)>>>;

pub(super) struct BlockWriter {
    tx: Option<SyncSender<Job>>,
    free: Receiver<Vec<u8>>,
    handle: Option<JoinHandle<Done>>,
    failure: Failure,
    block_capacity: usize,
}

impl std::fmt::Debug for BlockWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockWriter").finish_non_exhaustive()
    }
}

impl BlockWriter {
    /// Starts the thread; `hasher` and `size` already cover what `file`
    /// holds (the header).
    /// Stops writing (an error) when a block would leave less than
    /// `reserve` bytes free on the file system.
    pub fn spawn(
        mut file: File,
        mut hasher: Sha256,
        mut size: u64,
        block_capacity: usize,
        reserve: u64,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let (free_tx, free) = mpsc::sync_channel::<Vec<u8>>(QUEUE + 1);
        let failure: Failure = Arc::default();
        let failed = failure.clone();
        let handle = std::thread::Builder::new()
            .name("bastion-recorder".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let mut error: Option<io::Error> = None;
                for job in rx {
                    match job {
                        Job::Block(mut block) => {
                            if error.is_none() {
                                let written = below_reserve(&file, block.len(), reserve)
                                    .map_or_else(|| file.write_all(&block), Err);
                                if written.is_ok() {
                                    hasher.update(&block);
                                    size += block.len() as u64;
                                }
                                if let Err(e) = written {
                                    *failed.lock().unwrap_or_else(|p| p.into_inner()) =
                                        Some((e.kind(), e.to_string()));
                                    error = Some(e);
                                }
                            }
                            // Reuse it, unless a flood of escapes grew it
                            // far past the usual size.
                            if block.capacity() <= 2 * block_capacity {
                                block.clear();
                                let _ = free_tx.try_send(block);
                            }
                        }
                        Job::Snapshot(reply) => {
                            let _ = reply.send((size, hex::encode(hasher.clone().finalize())));
                        }
                    }
                }
                if error.is_none()
                    && let Err(e) = file.sync_data()
                {
                    error = Some(e);
                }
                Done {
                    sha256: hex::encode(hasher.finalize()),
                    size,
                    error,
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            free,
            handle: Some(handle),
            failure,
            block_capacity,
        })
    }

    /// Queues `block` (waiting while [`QUEUE`] blocks are queued) and
    /// returns an empty buffer to fill next.
    pub fn send(&mut self, block: Vec<u8>) -> Vec<u8> {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job::Block(block));
        }
        self.free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.block_capacity))
    }

    /// The first write error, once one happened.
    pub fn failure(&self) -> Option<io::Error> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(kind, msg)| io::Error::new(*kind, msg.clone()))
    }

    /// Size and SHA-256 of everything queued so far (waits for the disk).
    pub fn snapshot(&self) -> Option<(u64, String)> {
        let (reply, answer) = mpsc::channel();
        self.tx.as_ref()?.send(Job::Snapshot(reply)).ok()?;
        answer.recv().ok()
    }

    /// Writes what is queued, syncs the file and stops the thread.
    pub fn finish(mut self) -> Done {
        drop(self.tx.take());
        let handle = self.handle.take().expect("finish runs once");
        handle.join().unwrap_or_else(|_| Done {
            sha256: String::new(),
            size: 0,
            error: Some(io::Error::other("the recording thread panicked")),
        })
    }
}

/// The error to stop with when writing `len` more bytes would leave less
/// than `reserve` free where `file` is.
fn below_reserve(file: &File, len: usize, reserve: u64) -> Option<io::Error> {
    if reserve == 0 {
        return None;
    }
    let st = nix::sys::statvfs::fstatvfs(file).ok()?;
    let free = st.blocks_available() * st.fragment_size();
    (free < reserve + len as u64).then(|| {
        io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "the log disk is down to the {} kept free for the audit trail ([recording] reserve)",
                bytesize::ByteSize::b(reserve)
            ),
        )
    })
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        // Without finish(): what is queued is still written and synced
        // before the drop returns.
        drop(self.tx.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
