//! The raw disk for bare metal and Hetzner, gzip-compressed as CAPT's `oci2disk`
//! and Tinkerbell's `image2disk` stream it and image-builder's raw output is
//! (`<name>.raw.gz`), with a `sha256sum`-style checksum file beside it: the
//! `<hash>  <file name>` line Ironic finds by file name when Metal3's `checksum`
//! is that file's URL (`checksumType: sha256`). Metal3 itself deploys raw or
//! qcow2, not gzip: point it at the qcow2 with its own checksum file
//! ([`write_sha256sum`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use crate::fsx::{write_atomically, AtomicFile};

/// A compressed disk and its checksum file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compressed {
    pub image: PathBuf,
    pub checksum: PathBuf,
}

/// Writes `<out_dir>/<base_name>.raw.gz` (gzip without a name or time stamp, so
/// the same disk gives the same bytes) and its `.sha256sum`, hashing while writing.
pub fn write(raw: &Path, out_dir: &Path, base_name: &str) -> anyhow::Result<Compressed> {
    let image = out_dir.join(super::output_name(base_name, "raw.gz")?);
    // gzip's own complaint would be lost in the pipe: say what is wrong first.
    std::fs::File::open(raw).with_context(|| format!("opening {}", raw.display()))?;
    let mut file = AtomicFile::create(&image)?;
    let mut gzip = duct::cmd!("gzip", "-n", "-c", raw)
        .stderr_capture()
        .reader()
        .with_context(|| format!("starting gzip on {}", raw.display()))?;
    let mut hashing = HashingWriter {
        inner: &mut file,
        hasher: Sha256::new(),
    };
    std::io::copy(&mut gzip, &mut hashing)
        .with_context(|| format!("compressing {} to {}", raw.display(), image.display()))?;
    let digest = crate::hex::encode(&hashing.hasher.finalize());
    file.commit()?;
    let checksum = write_checksum_file(&image, &digest)?;
    Ok(Compressed { image, checksum })
}

/// Writes `<file>.sha256sum` for any output (the qcow2 Metal3 deploys, too).
pub fn write_sha256sum(file: &Path) -> anyhow::Result<PathBuf> {
    let digest = super::sha256_file(file)?;
    write_checksum_file(file, &digest)
}

fn write_checksum_file(file: &Path, digest: &str) -> anyhow::Result<PathBuf> {
    let name = super::file_name(file)?;
    let path = file.with_file_name(format!("{name}.sha256sum"));
    write_atomically(&path, sha256sum_line(digest, &name).as_bytes())?;
    Ok(path)
}

/// One line as `sha256sum` writes it for a binary file: hash, two spaces, name.
pub fn sha256sum_line(digest: &str, name: &str) -> String {
    format!("{digest}  {name}\n")
}

/// The hash and file name of a one-line `sha256sum` file.
pub fn parse_sha256sum(text: &str) -> anyhow::Result<(String, String)> {
    let mut lines = text.lines();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        bail!("it must hold exactly one line `<sha256>  <file name>`");
    };
    let Some((digest, name)) = line.split_once("  ") else {
        bail!("`{line}` is not `<sha256>  <file name>`");
    };
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("`{digest}` is not a SHA-256 in hex");
    }
    Ok((digest.to_ascii_lowercase(), name.to_owned()))
}

/// Checks that `<image>.sha256sum` names `image` with its SHA-256 and that the
/// gzip stream is whole (`gzip --test`).
pub fn check(sh: &Shell, image: &Path) -> anyhow::Result<()> {
    let name = super::file_name(image)?;
    let checksum = image.with_file_name(format!("{name}.sha256sum"));
    let text = std::fs::read_to_string(&checksum)
        .with_context(|| format!("reading {}", checksum.display()))?;
    let mut problems = Vec::new();
    match parse_sha256sum(&text) {
        Err(err) => problems.push(format!("{}: {err}", checksum.display())),
        Ok((digest, listed)) => {
            if listed != name {
                problems.push(format!(
                    "{} names `{listed}`, not `{name}`",
                    checksum.display()
                ));
            }
            let actual = super::sha256_file(image)?;
            if digest != actual {
                problems.push(format!(
                    "{} says SHA-256 {digest}, the file has {actual}",
                    checksum.display()
                ));
            }
        }
    }
    let tested = cmd!(sh, "gzip --test {image}")
        .quiet()
        .ignore_status()
        .output()?;
    if !tested.status.success() {
        problems.push(format!(
            "`gzip --test` fails: {}",
            String::from_utf8_lossy(&tested.stderr).trim()
        ));
    }
    super::verdict(image, problems)
}

/// Passes bytes on to `inner` and hashes them on the way.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_lines_read_back() {
        let digest = "ab".repeat(32);
        let line = sha256sum_line(&digest, "flatcar.raw.gz");
        assert_eq!(line, format!("{digest}  flatcar.raw.gz\n"));
        assert_eq!(
            parse_sha256sum(&line).unwrap(),
            (digest.clone(), "flatcar.raw.gz".to_owned())
        );
        for bad in [
            "",
            "abc  x\n",
            &format!("{digest} x\n"),
            &format!("{line}{line}"),
        ] {
            assert!(parse_sha256sum(bad).is_err(), "{bad:?}");
        }
    }
}
