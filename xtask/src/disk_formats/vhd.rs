//! Azure's disk: a fixed VHD, the disk's bytes followed by a 512-byte footer, whose
//! virtual size Azure requires to be a whole number of MiB. qemu-img writes it
//! (`force_size` keeps the exact size instead of rounding to a CHS geometry); the
//! footer's time stamp and unique ID, which qemu-img takes from the clock and the
//! random generator, are then set from the build's time and the output name, so
//! the same disk gives the same bytes.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use crate::fsx::AtomicFile;

pub const FOOTER_SIZE: u64 = 512;
const MIB: u64 = 1 << 20;
/// `Disk Type` 2: a fixed hard disk.
const FIXED: u32 = 2;
/// VHD time stamps count seconds from 2000-01-01 00:00:00 UTC.
const VHD_EPOCH: u64 = 946_684_800;

/// The footer fields a check needs (big-endian on disk).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footer {
    pub data_offset: u64,
    pub timestamp: u32,
    pub original_size: u64,
    pub current_size: u64,
    pub disk_type: u32,
    pub checksum: u32,
    pub unique_id: [u8; 16],
}

/// Reads a footer; an error when it does not start with the cookie `conectix`.
pub fn parse_footer(bytes: &[u8; 512]) -> anyhow::Result<Footer> {
    if &bytes[..8] != b"conectix" {
        bail!("the last 512 bytes do not start with the VHD cookie `conectix`");
    }
    let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    Ok(Footer {
        data_offset: u64_at(16),
        timestamp: u32_at(24),
        original_size: u64_at(40),
        current_size: u64_at(48),
        disk_type: u32_at(60),
        checksum: u32_at(64),
        unique_id: bytes[68..84].try_into().expect("16 bytes"),
    })
}

/// The footer checksum: the one's complement of the sum of every byte but the
/// checksum field's own four.
pub fn footer_checksum(bytes: &[u8; 512]) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |sum, (_, &b)| sum.wrapping_add(u32::from(b)));
    !sum
}

/// Sets the footer's time stamp and unique ID and its checksum to match.
fn pin_footer(bytes: &mut [u8; 512], created: u64, unique_id: [u8; 16]) {
    let timestamp = u32::try_from(created.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX);
    bytes[24..28].copy_from_slice(&timestamp.to_be_bytes());
    bytes[68..84].copy_from_slice(&unique_id);
    let checksum = footer_checksum(bytes);
    bytes[64..68].copy_from_slice(&checksum.to_be_bytes());
}

/// A unique ID derived from the output name (an RFC 9562 version-8 UUID), the same
/// for every bake of the same image.
fn unique_id(base_name: &str) -> [u8; 16] {
    let digest = Sha256::digest(format!("flatcar-capi-builder vhd {base_name}"));
    let mut id: [u8; 16] = digest[..16].try_into().expect("16 bytes");
    id[6] = (id[6] & 0x0f) | 0x80;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// Converts the raw disk `raw` (a whole number of MiB) to the fixed VHD
/// `<out_dir>/<base_name>.vhd`, its footer stamped with `created` (seconds since
/// the epoch); returns its path.
pub fn write(
    sh: &Shell,
    raw: &Path,
    out_dir: &Path,
    base_name: &str,
    created: u64,
) -> anyhow::Result<PathBuf> {
    let size = super::file_size(raw)?;
    if size == 0 || !size.is_multiple_of(MIB) {
        bail!(
            "{} has {size} bytes; Azure needs a virtual size that is a whole number of MiB: \
             grow the raw disk to {} bytes first",
            raw.display(),
            size.div_ceil(MIB).max(1) * MIB
        );
    }
    let path = out_dir.join(super::output_name(base_name, "vhd")?);
    let file = AtomicFile::create(&path)?;
    let temp = file.temp_path();
    super::run_tool(
        cmd!(
            sh,
            "qemu-img convert -f raw -O vpc -o subformat=fixed,force_size {raw} {temp}"
        ),
        &format!("converting {} to a fixed VHD", raw.display()),
    )?;
    let mut vhd = OpenOptions::new()
        .read(true)
        .write(true)
        .open(temp)
        .with_context(|| format!("opening {}", temp.display()))?;
    let mut footer = [0u8; 512];
    vhd.seek(SeekFrom::End(-(FOOTER_SIZE as i64)))?;
    vhd.read_exact(&mut footer)?;
    parse_footer(&footer)
        .with_context(|| format!("reading what qemu-img wrote to {}", temp.display()))?;
    pin_footer(&mut footer, created, unique_id(base_name));
    vhd.seek(SeekFrom::End(-(FOOTER_SIZE as i64)))?;
    vhd.write_all(&footer)
        .with_context(|| format!("writing the footer of {}", temp.display()))?;
    drop(vhd);
    file.commit()?;
    check(&path)?;
    Ok(path)
}

/// Checks a VHD as Azure takes it: footer cookie and checksum, a fixed disk whose
/// size is the file's size less the footer and a whole number of MiB. Returns the
/// virtual size.
pub fn check(path: &Path) -> anyhow::Result<u64> {
    let length = super::file_size(path)?;
    if length < FOOTER_SIZE {
        bail!(
            "{} has {length} bytes, too few for a VHD footer",
            path.display()
        );
    }
    let mut footer = [0u8; 512];
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.seek(SeekFrom::Start(length - FOOTER_SIZE))?;
    file.read_exact(&mut footer)
        .with_context(|| format!("reading the footer of {}", path.display()))?;
    let parsed = parse_footer(&footer).with_context(|| path.display().to_string())?;
    super::verdict(path, footer_problems(&footer, &parsed, length))?;
    Ok(parsed.current_size)
}

fn footer_problems(bytes: &[u8; 512], footer: &Footer, file_length: u64) -> Vec<String> {
    let mut problems = Vec::new();
    if footer.checksum != footer_checksum(bytes) {
        problems.push(format!(
            "the footer checksum is {:#010x}, the footer sums to {:#010x}",
            footer.checksum,
            footer_checksum(bytes)
        ));
    }
    if footer.disk_type != FIXED {
        problems.push(format!(
            "disk type {} is not 2 (fixed); Azure takes fixed VHDs only",
            footer.disk_type
        ));
    }
    if footer.data_offset != u64::MAX {
        problems.push(format!(
            "data offset {:#x} is not that of a fixed disk (0xffffffffffffffff)",
            footer.data_offset
        ));
    }
    if footer.current_size != file_length - FOOTER_SIZE {
        problems.push(format!(
            "current size {} is not the file's {file_length} bytes less the 512-byte footer",
            footer.current_size
        ));
    }
    if !footer.current_size.is_multiple_of(MIB) {
        problems.push(format!(
            "current size {} is not a whole number of MiB, as Azure requires",
            footer.current_size
        ));
    }
    if footer.original_size != footer.current_size {
        problems.push(format!(
            "original size {} differs from current size {}",
            footer.original_size, footer.current_size
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed-disk footer of `size` bytes with a correct checksum.
    fn footer(size: u64) -> [u8; 512] {
        let mut bytes = [0u8; 512];
        bytes[..8].copy_from_slice(b"conectix");
        bytes[8..12].copy_from_slice(&2u32.to_be_bytes());
        bytes[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        bytes[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
        bytes[40..48].copy_from_slice(&size.to_be_bytes());
        bytes[48..56].copy_from_slice(&size.to_be_bytes());
        bytes[60..64].copy_from_slice(&FIXED.to_be_bytes());
        pin_footer(&mut bytes, VHD_EPOCH, [7; 16]);
        bytes
    }

    #[test]
    fn a_fixed_footer_of_whole_mib_passes() {
        let bytes = footer(64 * MIB);
        let parsed = parse_footer(&bytes).unwrap();
        assert_eq!(parsed.current_size, 64 * MIB);
        assert_eq!(parsed.timestamp, 0);
        assert_eq!(
            footer_problems(&bytes, &parsed, 64 * MIB + 512),
            Vec::<String>::new()
        );
    }

    #[test]
    fn pinning_sets_time_id_and_a_matching_checksum() {
        let mut bytes = footer(MIB);
        let id = unique_id("flatcar-stable-4230.2.3-kube-v1.36.2");
        pin_footer(&mut bytes, 1_700_000_000, id);
        let parsed = parse_footer(&bytes).unwrap();
        assert_eq!(u64::from(parsed.timestamp), 1_700_000_000 - VHD_EPOCH);
        assert_eq!(parsed.unique_id, id);
        assert_eq!(parsed.checksum, footer_checksum(&bytes));
        assert_eq!(id[6] >> 4, 8, "version 8");
        assert_eq!(id[8] >> 6, 0b10, "RFC 9562 variant");
        assert_eq!(id, unique_id("flatcar-stable-4230.2.3-kube-v1.36.2"));
        assert_ne!(id, unique_id("flatcar-beta-4230.2.3-kube-v1.36.2"));
    }

    #[test]
    fn problems_name_each_broken_field() {
        let mut bytes = footer(MIB + 1);
        bytes[60..64].copy_from_slice(&3u32.to_be_bytes());
        let parsed = parse_footer(&bytes).unwrap();
        expect_test::expect![[r#"
            [
                "the footer checksum is 0xfffff413, the footer sums to 0xfffff412",
                "disk type 3 is not 2 (fixed); Azure takes fixed VHDs only",
                "current size 1048577 is not the file's 2048 bytes less the 512-byte footer",
                "current size 1048577 is not a whole number of MiB, as Azure requires",
            ]
        "#]]
        .assert_debug_eq(&footer_problems(&bytes, &parsed, 2048));
        bytes[0] = b'C';
        assert!(parse_footer(&bytes).is_err());
    }
}
