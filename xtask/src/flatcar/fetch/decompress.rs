//! Older releases ship their image only as `.bz2`: it is decompressed into place.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha512};

use crate::{fsx, hex};

/// Streams `bzip2 -dc <compressed>` into a temporary file beside `image`,
/// hashing on the way, then moves it into place. Returns (size, SHA-512).
pub(super) fn decompress_into_place(
    compressed: &Path,
    image: &Path,
) -> anyhow::Result<(u64, String)> {
    let bzip2 = crate::toolchain::tools::find_program("bzip2").context(
        "bzip2 is not installed; this release ships its image compressed. Install it \
         (e.g. `sudo apt-get install bzip2`) and run again",
    )?;
    let mut reader = duct::cmd(&bzip2, ["-dc".as_ref(), compressed.as_os_str()])
        .reader()
        .with_context(|| format!("starting {}", bzip2.display()))?;
    let mut out = fsx::AtomicFile::create(image)?;
    let mut sha512 = Sha512::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader
            .read(&mut buffer)
            .with_context(|| format!("decompressing {}", compressed.display()))?;
        if n == 0 {
            break;
        }
        out.write_all(&buffer[..n])
            .with_context(|| format!("writing {} (is the disk full?)", image.display()))?;
        sha512.update(&buffer[..n]);
        size += n as u64;
    }
    out.commit()?;
    Ok((size, hex::encode(&sha512.finalize())))
}
