//! What `bake` turns a baked raw Flatcar disk into, one file per format: the
//! qcow2 of qemu, OpenStack and Proxmox VE, the libvirt Vagrant box, KubeVirt's
//! containerDisk, the compressed raw of bare metal and Hetzner, VMware's OVA and
//! Azure's fixed VHD. Each format has a `write` (plain functions over paths; the
//! output appears whole or not at all) and a structural `check` that reads the
//! result back as its consumer would, for tests and the rehearsal.

pub mod container_disk;
pub mod metal;
pub mod ova;
pub mod ovf;
pub mod qcow2;
pub mod tar;
pub mod vagrant_box;
pub mod vhd;

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

/// The SHA-256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(crate::hex::encode(&hasher.finalize()))
}

/// The size of a file in bytes: a raw disk's virtual size.
fn file_size(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len())
}

/// The first `count` bytes of a file (a disk image's header).
fn read_head(path: &Path, count: usize) -> anyhow::Result<Vec<u8>> {
    let mut bytes = vec![0; count];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .with_context(|| format!("reading the first {count} bytes of {}", path.display()))?;
    Ok(bytes)
}

/// The file name `<base_name>.<extension>`, refusing a base name that is not one
/// plain file name (it lands in archives and descriptors as is).
fn output_name(base_name: &str, extension: &str) -> anyhow::Result<String> {
    let plain = !base_name.is_empty()
        && base_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !base_name.starts_with(['.', '-']);
    if !plain {
        bail!(
            "the output name `{base_name}` must be letters, digits, `.`, `_` and `-`, \
             not starting with `.` or `-` (e.g. flatcar-stable-4230.2.3-kube-v1.36.2)"
        );
    }
    Ok(format!("{base_name}.{extension}"))
}

/// Runs a converter; on failure the error says `doing` and what the tool said.
fn run_tool(command: xshell::Cmd<'_>, doing: &str) -> anyhow::Result<()> {
    let output = command
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("{doing}: the tool did not start"))?;
    if !output.status.success() {
        bail!(
            "{doing}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A directory beside the outputs where an archive's members are put together;
/// removed when dropped, so a failed write leaves nothing behind.
fn staging_dir(out_dir: &Path, base_name: &str) -> anyhow::Result<tempfile::TempDir> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    tempfile::Builder::new()
        .prefix(&format!(".{base_name}."))
        .tempdir_in(out_dir)
        .with_context(|| format!("creating a staging directory in {}", out_dir.display()))
}

/// Puts `from` at `to` without copying its bytes when both are on one file system
/// (a disk image is large); the archive's owner and mode come from tar's options,
/// so the shared inode's own mode never matters.
fn link_or_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

/// A check's verdict: every problem found, or none.
fn verdict(what: &Path, problems: Vec<String>) -> anyhow::Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "{} is not well formed:\n  - {}",
        what.display(),
        problems.join("\n  - ")
    )
}

/// A file name's name part as text.
fn file_name(path: &Path) -> anyhow::Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no file name in UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_are_plain_file_names() {
        assert_eq!(
            output_name("flatcar-stable-4230.2.3-kube-v1.36.2", "qcow2").unwrap(),
            "flatcar-stable-4230.2.3-kube-v1.36.2.qcow2"
        );
        for bad in ["", "a/b", "../x", ".hidden", "-x", "a b", "a'b"] {
            let err = output_name(bad, "qcow2").unwrap_err().to_string();
            assert!(err.contains("must be letters"), "{bad}: {err}");
        }
    }
}
