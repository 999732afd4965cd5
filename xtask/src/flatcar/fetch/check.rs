//! The streaming check: the download is hashed and fed to gpgv on a worker
//! thread while it is received, so that one pass over the bytes does it all.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use anyhow::bail;
use sha2::{Digest, Sha512};

use crate::hex;
use crate::net::download::Observer;
use crate::net::openpgp::{GoodSignature, Keyring, StreamingCheck};

/// Hashes the download and feeds it to gpgv on a worker thread, so that
/// receiving and writing, our SHA-512 and gpgv's own hashing run side by side
/// (one pass over the bytes, three cores' worth of work on two).
pub(super) struct ImageCheck<'scope, 'env> {
    scope: &'scope std::thread::Scope<'scope, 'env>,
    keyring: Option<&'env Keyring>,
    signature_path: &'env Path,
    worker: Option<Worker<'scope>>,
}

struct Worker<'scope> {
    chunks: mpsc::SyncSender<Vec<u8>>,
    /// Buffers the worker is done with, for reuse.
    spare: mpsc::Receiver<Vec<u8>>,
    /// gpgv stopped reading: its verdict is in, and it is a failure.
    rejected: Arc<AtomicBool>,
    handle: std::thread::ScopedJoinHandle<'scope, Checked>,
}

/// What the worker found.
pub(super) struct Checked {
    pub(super) sha512: String,
    /// `None` when no detached signature is streamed.
    pub(super) signature: Option<anyhow::Result<GoodSignature>>,
    /// The signature failed before the data ended (the download was cut short).
    pub(super) rejected_early: bool,
}

impl<'scope, 'env> ImageCheck<'scope, 'env> {
    pub(super) fn start(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        keyring: Option<&'env Keyring>,
        signature_path: &'env Path,
    ) -> anyhow::Result<ImageCheck<'scope, 'env>> {
        let mut check = ImageCheck {
            scope,
            keyring,
            signature_path,
            worker: None,
        };
        check.restart()?;
        Ok(check)
    }

    pub(super) fn finish(&mut self) -> Checked {
        let worker = self.worker.take().expect("a worker runs until finish");
        drop(worker.chunks);
        worker.handle.join().expect("the hashing thread panicked")
    }
}

fn hash_and_check(
    chunks: mpsc::Receiver<Vec<u8>>,
    spare: mpsc::SyncSender<Vec<u8>>,
    rejected: Arc<AtomicBool>,
    mut signature: Option<StreamingCheck<'_>>,
) -> Checked {
    let mut sha512 = Sha512::new();
    for chunk in chunks {
        sha512.update(&chunk);
        if let Some(check) = signature.as_mut() {
            if let Err(err) = check.write(&chunk) {
                rejected.store(true, Ordering::SeqCst);
                return Checked {
                    sha512: String::new(),
                    signature: Some(Err(err)),
                    rejected_early: true,
                };
            }
        }
        let _ = spare.try_send(chunk);
    }
    Checked {
        sha512: hex::encode(&sha512.finalize()),
        signature: signature.map(StreamingCheck::finish),
        rejected_early: false,
    }
}

impl Observer for ImageCheck<'_, '_> {
    fn bytes(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        let worker = self.worker.as_ref().expect("a worker runs until finish");
        let mut buffer = worker.spare.try_recv().unwrap_or_default();
        buffer.clear();
        buffer.extend_from_slice(chunk);
        if worker.rejected.load(Ordering::SeqCst) || worker.chunks.send(buffer).is_err() {
            bail!("the OpenPGP signature check failed before the download ended");
        }
        Ok(())
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        if self.worker.is_some() {
            // Whatever the old worker found is about bytes now thrown away.
            self.finish();
        }
        let signature = match self.keyring {
            Some(keyring) => Some(keyring.start_detached(self.signature_path)?),
            None => None,
        };
        let (chunks, chunks_rx) = mpsc::sync_channel(8);
        let (spare_tx, spare) = mpsc::sync_channel(8);
        let rejected = Arc::new(AtomicBool::new(false));
        let flag = rejected.clone();
        let handle = self
            .scope
            .spawn(move || hash_and_check(chunks_rx, spare_tx, flag, signature));
        self.worker = Some(Worker {
            chunks,
            spare,
            rejected,
            handle,
        });
        Ok(())
    }
}
