//! qcow2, as Flatcar ships its qemu, OpenStack, Proxmox VE and KubeVirt images:
//! compressed clusters in a version-2 file (`compat=0.10`), which every qemu and
//! Glance reads. qemu-img writes clusters in order, so the same raw disk gives the
//! same bytes.

use std::path::{Path, PathBuf};

use anyhow::bail;
use xshell::{cmd, Shell};

use crate::fsx::AtomicFile;

/// Converts the raw disk `raw` to `<out_dir>/<base_name>.qcow2`; returns its path.
pub fn write(sh: &Shell, raw: &Path, out_dir: &Path, base_name: &str) -> anyhow::Result<PathBuf> {
    let path = out_dir.join(super::output_name(base_name, "qcow2")?);
    let file = AtomicFile::create(&path)?;
    let temp = file.temp_path();
    super::run_tool(
        cmd!(
            sh,
            "qemu-img convert -f raw -O qcow2 -c -o compat=0.10 {raw} {temp}"
        ),
        &format!("converting {} to qcow2", raw.display()),
    )?;
    file.commit()?;
    Ok(path)
}

/// The virtual size a qcow2 header declares (bytes 24..32), after its magic.
pub fn virtual_size(header: &[u8]) -> anyhow::Result<u64> {
    if header.len() < 32 || &header[..4] != b"QFI\xfb" {
        bail!("not a qcow2 image (no `QFI\\xfb` magic)");
    }
    Ok(u64::from_be_bytes(
        header[24..32].try_into().expect("8 bytes"),
    ))
}

/// The qcow2 version (2 for `compat=0.10`).
fn version(header: &[u8]) -> u32 {
    u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"))
}

/// Checks that `path` is a consistent version-2 qcow2 (`qemu-img check`) of
/// `expected_size` bytes.
pub fn check(sh: &Shell, path: &Path, expected_size: u64) -> anyhow::Result<()> {
    let header = super::read_head(path, 32)?;
    let mut problems = Vec::new();
    match virtual_size(&header) {
        Err(err) => problems.push(err.to_string()),
        Ok(size) if size != expected_size => problems.push(format!(
            "its virtual size is {size} bytes, the raw disk has {expected_size}"
        )),
        Ok(_) => {}
    }
    if header.starts_with(b"QFI\xfb") && version(&header) != 2 {
        problems.push(format!(
            "it is qcow2 version {}, not 2 (compat=0.10)",
            version(&header)
        ));
    }
    if problems.is_empty() {
        let checked = cmd!(sh, "qemu-img check -f qcow2 {path}")
            .quiet()
            .ignore_status()
            .output()?;
        if !checked.status.success() {
            problems.push(format!(
                "`qemu-img check` finds: {}{}",
                String::from_utf8_lossy(&checked.stdout).trim(),
                String::from_utf8_lossy(&checked.stderr).trim()
            ));
        }
    }
    super::verdict(path, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_virtual_size_from_the_header() {
        let mut header = [0u8; 32];
        header[..4].copy_from_slice(b"QFI\xfb");
        header[4..8].copy_from_slice(&2u32.to_be_bytes());
        header[24..32].copy_from_slice(&(64u64 << 20).to_be_bytes());
        assert_eq!(virtual_size(&header).unwrap(), 64 << 20);
        assert_eq!(version(&header), 2);
        header[0] = b'X';
        assert!(virtual_size(&header).is_err());
        assert!(virtual_size(b"QFI\xfb").is_err());
    }
}
