//! USTAR archives as the disk formats use them: written by GNU tar with a fixed
//! owner, mode and mtime (so the same files give the same bytes), and read back
//! here, header by header, so a check sees member order, owners and modes exactly
//! and can hash a member in place, also a tar inside a tar (an OCI layer).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

const BLOCK: u64 = 512;

/// One member of an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    pub kind: Kind,
    /// Where the member's bytes start in the file that holds the archive.
    pub offset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
}

/// How the members are stored: owner, group and permission bits (GNU tar's
/// `--mode` syntax, e.g. `a=rX`), and the one mtime every member gets.
pub struct Stamp<'a> {
    pub uid: u32,
    pub gid: u32,
    pub mode: &'a str,
    pub mtime: u64,
}

/// Writes `out` as a USTAR archive of `members` (relative to `dir`, directories
/// recursed in name order) in the order given. USTAR because OVF requires it; it
/// limits a member to 8 GiB, which GNU tar reports as an error.
pub fn create(
    sh: &Shell,
    dir: &Path,
    members: &[&str],
    out: &Path,
    stamp: &Stamp<'_>,
) -> anyhow::Result<()> {
    let owner = format!("--owner={}", stamp.uid);
    let group = format!("--group={}", stamp.gid);
    let mode = format!("--mode={}", stamp.mode);
    let mtime = format!("--mtime=@{}", stamp.mtime);
    super::run_tool(
        cmd!(
            sh,
            "tar --create --file {out} --format=ustar --sort=name --numeric-owner {owner} {group} {mode} {mtime} --directory {dir} -- {members...}"
        ),
        &format!("writing the archive {}", out.display()),
    )
}

/// The members of the archive at `path`.
pub fn list(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let mut file = open(path)?;
    let len = file.metadata()?.len();
    list_within(&mut file, 0, len)
        .with_context(|| format!("reading the archive {}", path.display()))
}

/// The members of the archive stored in `file` from `start` for `len` bytes.
pub fn list_within(file: &mut File, start: u64, len: u64) -> anyhow::Result<Vec<Entry>> {
    let end = start + len;
    let mut entries = Vec::new();
    let mut at = start;
    loop {
        if at + BLOCK > end {
            bail!(
                "it ends at byte {} without the end-of-archive blocks",
                at - start
            );
        }
        let mut header = [0u8; BLOCK as usize];
        file.seek(SeekFrom::Start(at))?;
        file.read_exact(&mut header)?;
        let Some(entry) = parse_header(&header, at + BLOCK)
            .with_context(|| format!("the header at byte {}", at - start))?
        else {
            return Ok(entries);
        };
        at = entry.offset + entry.size.div_ceil(BLOCK) * BLOCK;
        if at > end {
            bail!("member {} runs past the end of the archive", entry.name);
        }
        entries.push(entry);
    }
}

/// Reads a header block; `None` for the zero block that ends an archive.
pub fn parse_header(block: &[u8; 512], data_offset: u64) -> anyhow::Result<Option<Entry>> {
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let recorded = octal(&block[148..156]).context("checksum field")?;
    let computed: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| u64::from(if (148..156).contains(&i) { b' ' } else { b }))
        .sum();
    if recorded != computed {
        bail!("the header checksum is {recorded}, the header sums to {computed}: not a tar archive, or a damaged one");
    }
    if &block[257..262] != b"ustar" {
        bail!("not a USTAR header");
    }
    let kind = match block[156] {
        b'0' | 0 => Kind::File,
        b'5' => Kind::Directory,
        other => bail!(
            "member type `{}` is not a regular file or a directory (links, long names and \
             pax headers are not used by these formats)",
            char::from(other)
        ),
    };
    let name = text(&block[0..100]);
    let prefix = text(&block[345..500]);
    let name = if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    };
    let field = |range: std::ops::Range<usize>, what: &str| {
        octal(&block[range]).with_context(|| format!("{what} of member {name}"))
    };
    Ok(Some(Entry {
        mode: u32::try_from(field(100..108, "mode")?).context("mode out of range")?,
        uid: field(108..116, "uid")?,
        gid: field(116..124, "gid")?,
        size: field(124..136, "size")?,
        mtime: field(136..148, "mtime")?,
        kind,
        offset: data_offset,
        name,
    }))
}

/// A NUL- or space-terminated octal number (base-256 numbers are not USTAR).
fn octal(field: &[u8]) -> anyhow::Result<u64> {
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if digits.is_empty() {
        return Ok(0);
    }
    let text = std::str::from_utf8(&digits).ok();
    text.and_then(|t| u64::from_str_radix(t, 8).ok())
        .with_context(|| {
            format!(
                "`{}` is not an octal number",
                String::from_utf8_lossy(&digits)
            )
        })
}

fn text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The bytes of a small member (a descriptor, a manifest), at most `limit` of them.
pub fn read_member(file: &mut File, entry: &Entry, limit: u64) -> anyhow::Result<Vec<u8>> {
    if entry.size > limit {
        bail!(
            "member {} has {} bytes, more than the {limit} such a file may have",
            entry.name,
            entry.size
        );
    }
    let mut bytes = vec![0; usize::try_from(entry.size)?];
    file.seek(SeekFrom::Start(entry.offset))?;
    file.read_exact(&mut bytes)
        .with_context(|| format!("reading member {}", entry.name))?;
    Ok(bytes)
}

/// The first `count` bytes of a member (a disk image's header).
pub fn member_head(file: &mut File, entry: &Entry, count: usize) -> anyhow::Result<Vec<u8>> {
    let count = count.min(usize::try_from(entry.size).unwrap_or(usize::MAX));
    let mut bytes = vec![0; count];
    file.seek(SeekFrom::Start(entry.offset))?;
    file.read_exact(&mut bytes)
        .with_context(|| format!("reading member {}", entry.name))?;
    Ok(bytes)
}

/// The SHA-256 of a member's bytes, as lower-case hex.
pub fn sha256_member(file: &mut File, entry: &Entry) -> anyhow::Result<String> {
    file.seek(SeekFrom::Start(entry.offset))?;
    let mut hasher = Sha256::new();
    let copied = std::io::copy(&mut file.take(entry.size), &mut hasher)
        .with_context(|| format!("reading member {}", entry.name))?;
    if copied != entry.size {
        bail!("member {} is cut short", entry.name);
    }
    Ok(crate::hex::encode(&hasher.finalize()))
}

pub fn open(path: &Path) -> anyhow::Result<File> {
    File::open(path).with_context(|| format!("opening {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A USTAR header for a regular file, as the format defines it.
    fn header(name: &str, mode: u32, uid: u64, size: u64) -> [u8; 512] {
        let mut block = [0u8; 512];
        block[..name.len()].copy_from_slice(name.as_bytes());
        let mut put = |at: usize, width: usize, value: u64| {
            let text = format!("{value:0w$o}\0", w = width - 1);
            block[at..at + width].copy_from_slice(text.as_bytes());
        };
        put(100, 8, u64::from(mode));
        put(108, 8, uid);
        put(116, 8, uid);
        put(124, 12, size);
        put(136, 12, 1_700_000_000);
        block[156] = b'0';
        block[257..263].copy_from_slice(b"ustar\0");
        block[263..265].copy_from_slice(b"00");
        block[148..156].copy_from_slice(b"        ");
        let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        block
    }

    #[test]
    fn reads_a_ustar_header() {
        let entry = parse_header(&header("disk/a.qcow2", 0o444, 107, 5), 512)
            .unwrap()
            .unwrap();
        assert_eq!(
            entry,
            Entry {
                name: "disk/a.qcow2".into(),
                mode: 0o444,
                uid: 107,
                gid: 107,
                size: 5,
                mtime: 1_700_000_000,
                kind: Kind::File,
                offset: 512,
            }
        );
        assert_eq!(parse_header(&[0; 512], 0).unwrap(), None);
    }

    #[test]
    fn refuses_a_damaged_header_and_other_member_types() {
        let mut damaged = header("a", 0o644, 0, 1);
        damaged[0] = b'b';
        let err = parse_header(&damaged, 512).unwrap_err();
        assert!(format!("{err:#}").contains("checksum"), "{err:#}");

        let mut link = header("a", 0o644, 0, 0);
        link[156] = b'2';
        link[148..156].copy_from_slice(b"        ");
        let sum: u64 = link.iter().map(|&b| u64::from(b)).sum();
        link[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let err = parse_header(&link, 512).unwrap_err();
        assert!(format!("{err:#}").contains("member type `2`"), "{err:#}");
    }

    #[test]
    fn octal_fields_end_at_nul_or_space() {
        assert_eq!(octal(b"0000644\0").unwrap(), 0o644);
        assert_eq!(octal(b"   644 \0").unwrap(), 0o644);
        assert_eq!(octal(b"\0\0\0").unwrap(), 0);
        assert!(octal(b"\x80\0\0\0\0\0\0\x01").is_err());
    }
}
