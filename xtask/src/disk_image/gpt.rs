//! The GUID partition table of a disk image, read from its bytes: which partition
//! carries which label, and where it starts and ends. Only the primary header is
//! read; its CRC32 and the entries' CRC32 are checked, so a damaged or foreign
//! table is refused rather than misread.

use anyhow::{bail, Context};

/// Flatcar's images, like nearly all disks, use 512-byte logical sectors.
pub const SECTOR: u64 = 512;

/// One used entry of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as `sgdisk` and the kernel (`p9`) count.
    pub number: u32,
    /// The type GUID in its usual text form.
    pub type_guid: String,
    pub label: String,
    pub first_lba: u64,
    pub last_lba: u64,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }

    pub fn size(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
}

/// Parses the table from the disk's first sectors: `head` must hold LBA 1 and the
/// entry array (the first 34 sectors cover the usual 128 entries of 128 bytes).
pub fn parse(head: &[u8]) -> anyhow::Result<Vec<Partition>> {
    let header = head
        .get(SECTOR as usize..2 * SECTOR as usize)
        .context("the disk is shorter than two sectors, so it has no GPT")?;
    if &header[0..8] != b"EFI PART" {
        bail!("no GPT header at LBA 1 (no \"EFI PART\" signature)");
    }
    let header_size = le32(header, 12) as usize;
    if !(92..=SECTOR as usize).contains(&header_size) {
        bail!("the GPT header claims an impossible size of {header_size} bytes");
    }
    let mut zeroed = header[..header_size].to_vec();
    zeroed[16..20].fill(0);
    if crc32(&zeroed) != le32(header, 16) {
        bail!("the GPT header's CRC32 does not match: the table is damaged");
    }
    let entries_lba = le64(header, 72);
    let count = le32(header, 80) as usize;
    let entry_size = le32(header, 84) as usize;
    if entry_size < 128 || count > 1024 {
        bail!("the GPT header claims {count} entries of {entry_size} bytes; refusing it");
    }
    let start = (entries_lba * SECTOR) as usize;
    let array = head
        .get(start..start + count * entry_size)
        .context("the GPT entry array lies beyond the bytes read")?;
    if crc32(array) != le32(header, 88) {
        bail!("the GPT entry array's CRC32 does not match: the table is damaged");
    }
    Ok(array
        .chunks(entry_size)
        .enumerate()
        .filter(|(_, entry)| entry[0..16].iter().any(|b| *b != 0))
        .map(|(index, entry)| Partition {
            number: index as u32 + 1,
            type_guid: guid_text(&entry[0..16]),
            label: utf16_label(&entry[56..128]),
            first_lba: le64(entry, 32),
            last_lba: le64(entry, 40),
        })
        .collect())
}

/// How many bytes [`parse`] needs for a table whose entries start at LBA 2.
pub const HEAD_BYTES: usize = 34 * SECTOR as usize;

/// The partition with `label`, or an error listing the labels there are.
pub fn find<'a>(partitions: &'a [Partition], label: &str) -> anyhow::Result<&'a Partition> {
    partitions
        .iter()
        .find(|p| p.label == label)
        .with_context(|| {
            let labels: Vec<&str> = partitions.iter().map(|p| p.label.as_str()).collect();
            format!(
                "no partition labelled {label} (the disk has: {})",
                labels.join(", ")
            )
        })
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

/// GUIDs store their first three fields little-endian, the rest as bytes.
fn guid_text(b: &[u8]) -> String {
    let h = |range: &[u8]| crate::hex::encode(range).to_uppercase();
    let rev = |range: &[u8]| h(&range.iter().rev().copied().collect::<Vec<u8>>());
    format!(
        "{}-{}-{}-{}-{}",
        rev(&b[0..4]),
        rev(&b[4..6]),
        rev(&b[6..8]),
        h(&b[8..10]),
        h(&b[10..16])
    )
}

fn utf16_label(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// CRC-32 (IEEE, reflected), as the GPT uses; bitwise, the table is tiny.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

    /// A table written by hand, field by field as the UEFI specification lays it out.
    fn table(entries: &[(&str, u64, u64)]) -> Vec<u8> {
        let mut disk = vec![0u8; HEAD_BYTES];
        let mut array = vec![0u8; 128 * 128];
        for (i, (label, first, last)) in entries.iter().enumerate() {
            let e = &mut array[i * 128..(i + 1) * 128];
            // 0FC63DAF-8483-4772-8E79-3D69D8477DE4, mixed-endian.
            e[0..16].copy_from_slice(&[
                0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47,
                0x7D, 0xE4,
            ]);
            e[16] = i as u8 + 1;
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            for (j, unit) in label.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
            }
        }
        disk[1024..1024 + array.len()].copy_from_slice(&array);
        let h = &mut disk[512..1024];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
        let header_crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&header_crc.to_le_bytes());
        disk
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn entries_are_read_with_labels_and_extents() {
        let parts = parse(&table(&[("OEM", 2048, 4095), ("ROOT", 4096, 8191)])).unwrap();
        assert_eq!(
            parts,
            [
                Partition {
                    number: 1,
                    type_guid: LINUX_FS.into(),
                    label: "OEM".into(),
                    first_lba: 2048,
                    last_lba: 4095,
                },
                Partition {
                    number: 2,
                    type_guid: LINUX_FS.into(),
                    label: "ROOT".into(),
                    first_lba: 4096,
                    last_lba: 8191,
                },
            ]
        );
        assert_eq!(parts[1].offset(), 4096 * 512);
        assert_eq!(parts[1].size(), 4096 * 512);
        assert_eq!(find(&parts, "ROOT").unwrap().number, 2);
        assert_eq!(
            find(&parts, "USR-A").unwrap_err().to_string(),
            "no partition labelled USR-A (the disk has: OEM, ROOT)"
        );
    }

    #[test]
    fn damaged_or_missing_tables_are_refused() {
        let mut disk = table(&[("ROOT", 2048, 4095)]);
        disk[1024 + 60] ^= 1;
        assert_eq!(
            parse(&disk).unwrap_err().to_string(),
            "the GPT entry array's CRC32 does not match: the table is damaged"
        );
        assert_eq!(
            parse(&vec![0u8; HEAD_BYTES]).unwrap_err().to_string(),
            "no GPT header at LBA 1 (no \"EFI PART\" signature)"
        );
    }
}
