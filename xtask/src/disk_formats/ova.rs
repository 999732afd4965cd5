//! VMware's appliance: an OVA, a USTAR archive of the OVF descriptor (first, as
//! OVF requires), the manifest with each file's SHA-256 (second), and the disk as
//! a stream-optimized VMDK. The VMDK's content ID, which qemu-img draws at random,
//! is derived from the output name, so the same disk gives the same bytes.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use super::ovf::{self, Appliance};
use super::tar::{self, Kind, Stamp};
use crate::fsx::{write_atomically, AtomicFile};

/// The template's default hardware; CAPV sets its own on every clone.
const CPUS: u32 = 2;
const MEMORY_MIB: u32 = 4096;
/// How much of a VMDK holds its header and embedded descriptor.
const VMDK_HEAD: usize = 64 * 1024;

/// Converts the raw disk `raw` to `<out_dir>/<base_name>.ova`, every member with
/// the mtime `mtime` (seconds since the epoch); the OVF's disk capacity is the raw
/// disk's size. Returns its path.
pub fn write(
    sh: &Shell,
    raw: &Path,
    out_dir: &Path,
    base_name: &str,
    mtime: u64,
) -> anyhow::Result<PathBuf> {
    let path = out_dir.join(super::output_name(base_name, "ova")?);
    let (ovf_name, mf_name, vmdk_name) = (
        super::output_name(base_name, "ovf")?,
        super::output_name(base_name, "mf")?,
        super::output_name(base_name, "vmdk")?,
    );
    let staging = super::staging_dir(out_dir, base_name)?;
    // Named as in the OVA from the start: the VMDK's descriptor records its file name.
    let vmdk = staging.path().join(&vmdk_name);
    super::run_tool(
        cmd!(sh, "qemu-img convert -f raw -O vmdk -o subformat=streamOptimized,adapter_type=lsilogic {raw} {vmdk}"),
        &format!("converting {} to a stream-optimized VMDK", raw.display()),
    )?;
    pin_content_id(&vmdk, content_id(base_name))?;
    let descriptor = ovf::render(&Appliance {
        name: base_name,
        disk_file: &vmdk_name,
        disk_file_size: super::file_size(&vmdk)?,
        capacity: super::file_size(raw)?,
        cpus: CPUS,
        memory_mib: MEMORY_MIB,
    });
    write_atomically(&staging.path().join(&ovf_name), descriptor.as_bytes())?;
    let manifest = manifest_text(&[
        (&ovf_name, &crate::hex::encode(&Sha256::digest(&descriptor))),
        (&vmdk_name, &super::sha256_file(&vmdk)?),
    ]);
    write_atomically(&staging.path().join(&mf_name), manifest.as_bytes())?;
    let file = AtomicFile::create(&path)?;
    let stamp = Stamp {
        uid: 0,
        gid: 0,
        mode: "u=rw,go=r",
        mtime,
    };
    tar::create(
        sh,
        staging.path(),
        &[&ovf_name, &mf_name, &vmdk_name],
        file.temp_path(),
        &stamp,
    )?;
    file.commit()?;
    Ok(path)
}

/// The manifest: `SHA256(<file>)= <hex>` a line.
pub fn manifest_text(files: &[(&str, &str)]) -> String {
    files
        .iter()
        .map(|(name, digest)| format!("SHA256({name})= {digest}\n"))
        .collect()
}

/// The (file, SHA-256) pairs of a manifest; other algorithms are refused.
pub fn parse_manifest(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let parsed = line
                .strip_prefix("SHA256(")
                .and_then(|rest| rest.split_once(")="))
                .map(|(name, digest)| (name.to_owned(), digest.trim().to_ascii_lowercase()))
                .filter(|(_, digest)| {
                    digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit())
                });
            parsed.with_context(|| {
                format!(
                    "manifest line {}: `{line}` is not `SHA256(<file>)= <hex>`",
                    i + 1
                )
            })
        })
        .collect()
}

/// A content ID from the output name; never `ffffffff`, which means "none".
fn content_id(base_name: &str) -> u32 {
    let digest = Sha256::digest(format!("flatcar-capi-builder vmdk {base_name}"));
    u32::from_be_bytes(digest[..4].try_into().expect("4 bytes")) & 0x7fff_ffff
}

/// Writes `cid` as the 8 hex digits after `CID=` in the VMDK's embedded
/// descriptor. qemu-img writes its random CID without leading zeros, so the text
/// after it moves into the descriptor's NUL padding when the digits were fewer.
fn pin_content_id(vmdk: &Path, cid: u32) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(vmdk)
        .with_context(|| format!("opening {}", vmdk.display()))?;
    let mut head = vec![0; VMDK_HEAD];
    let read = file.read(&mut head)?;
    head.truncate(read);
    let (at, len, end) =
        descriptor_cid(&head).with_context(|| format!("reading {}", vmdk.display()))?;
    let grow = 8 - len;
    if head[end - grow..end].iter().any(|b| *b != 0) {
        bail!(
            "{}: its descriptor has no room for an 8-digit CID",
            vmdk.display()
        );
    }
    let mut rewritten = format!("{cid:08x}").into_bytes();
    rewritten.extend_from_slice(&head[at + len..end - grow]);
    file.seek(SeekFrom::Start(at as u64))?;
    file.write_all(&rewritten)
        .with_context(|| format!("writing {}", vmdk.display()))
}

/// Where the hex digits of `CID=` start in a sparse VMDK's head, how many there
/// are (1 to 8), and where the descriptor's sectors end.
fn descriptor_cid(head: &[u8]) -> anyhow::Result<(usize, usize, usize)> {
    let (start, end) = descriptor_range(head)?;
    let descriptor = &head[start..end];
    let at = descriptor
        .windows(5)
        .position(|w| w == b"\nCID=")
        .context("its descriptor has no CID= line")?;
    let digits = start + at + 5;
    let len = head[digits..end]
        .iter()
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    if !(1..=8).contains(&len) || head.get(digits + len) != Some(&b'\n') {
        bail!("its descriptor's CID is not 1 to 8 hex digits");
    }
    Ok((digits, len, end))
}

/// The byte range of the descriptor a sparse VMDK header points to, within `head`.
fn descriptor_range(head: &[u8]) -> anyhow::Result<(usize, usize)> {
    if head.len() < 512 || &head[..4] != b"KDMV" {
        bail!("not a sparse VMDK (no `KDMV` magic)");
    }
    let sectors = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    let start = usize::try_from(sectors(28) * 512)?;
    let end = start + usize::try_from(sectors(36) * 512)?;
    if start == 0 || end > head.len() {
        bail!(
            "its embedded descriptor is missing or lies beyond the first {} bytes",
            head.len()
        );
    }
    Ok((start, end))
}

/// A sparse VMDK's virtual size (header capacity in 512-byte sectors) and whether
/// its descriptor says `createType="streamOptimized"`.
pub fn vmdk_facts(head: &[u8]) -> anyhow::Result<(u64, bool)> {
    let (start, end) = descriptor_range(head)?;
    let capacity = u64::from_le_bytes(head[12..20].try_into().expect("8 bytes")) * 512;
    let descriptor = String::from_utf8_lossy(&head[start..end]);
    let stream = descriptor
        .lines()
        .any(|l| l.trim() == "createType=\"streamOptimized\"");
    Ok((capacity, stream))
}

/// Checks an OVA as vSphere imports it: the descriptor first and the manifest
/// second, every referenced file present in reference order with its declared
/// size, one stream-optimized disk whose capacity the OVF declares, and every
/// file's SHA-256 in the manifest. Returns the declared capacity.
pub fn check(path: &Path) -> anyhow::Result<u64> {
    let entries = tar::list(path)?;
    let mut file = tar::open(path)?;
    let mut problems = Vec::new();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    if names.len() < 2 || !names[0].ends_with(".ovf") || !names[1].ends_with(".mf") {
        bail!(
            "{}: its members are {names:?}; an OVA starts with the .ovf, then the .mf",
            path.display()
        );
    }
    for entry in entries
        .iter()
        .filter(|e| e.kind != Kind::File || e.name.contains('/'))
    {
        problems.push(format!(
            "member {} is not a plain file at the top level",
            entry.name
        ));
    }
    let text = tar::read_member(&mut file, &entries[0], 1 << 20)?;
    let declared = ovf::parse(&String::from_utf8_lossy(&text))
        .with_context(|| format!("{}: {}", path.display(), entries[0].name))?;
    if declared.virtual_systems == 0 {
        problems.push("the OVF declares no VirtualSystem".to_owned());
    }
    let referenced: Vec<&str> = declared.files.iter().map(|f| f.href.as_str()).collect();
    if names[2..] != referenced[..] {
        problems.push(format!(
            "after the .ovf and .mf come {:?}; the OVF references {referenced:?}, in that order",
            &names[2..]
        ));
    }
    for reference in &declared.files {
        let member = entries.iter().find(|e| e.name == reference.href);
        if let (Some(member), Some(size)) = (member, reference.size) {
            if member.size != size {
                problems.push(format!(
                    "{} has {} bytes, the OVF says {size}",
                    member.name, member.size
                ));
            }
        }
    }
    let [disk] = &declared.disks[..] else {
        bail!(
            "{}: the OVF declares {} disks, not one",
            path.display(),
            declared.disks.len()
        );
    };
    problems.extend(disk_problems(&mut file, &entries, &declared, disk)?);
    let manifest = tar::read_member(&mut file, &entries[1], 1 << 20)?;
    problems.extend(manifest_problems(
        &mut file,
        &entries,
        &String::from_utf8_lossy(&manifest),
    )?);
    super::verdict(path, problems)?;
    Ok(disk.capacity)
}

/// Whether the declared disk is a stream-optimized VMDK of the declared capacity.
fn disk_problems(
    file: &mut std::fs::File,
    entries: &[tar::Entry],
    declared: &ovf::Declared,
    disk: &ovf::DiskDecl,
) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    if !ovf::is_stream_optimized(&disk.format) {
        problems.push(format!(
            "the disk's ovf:format is {}, not streamOptimized",
            disk.format
        ));
    }
    let href = declared
        .files
        .iter()
        .find(|f| f.id == disk.file_ref)
        .map(|f| &f.href);
    let Some(member) = href.and_then(|h| entries.iter().find(|e| &e.name == h)) else {
        problems.push(format!(
            "the disk's file `{}` is not in the archive",
            disk.file_ref
        ));
        return Ok(problems);
    };
    match vmdk_facts(&tar::member_head(file, member, VMDK_HEAD)?) {
        Err(err) => problems.push(format!("{}: {err}", member.name)),
        Ok((capacity, stream)) => {
            if capacity != disk.capacity {
                problems.push(format!(
                    "the OVF declares a capacity of {} bytes, {} holds {capacity}",
                    disk.capacity, member.name
                ));
            }
            if !stream {
                problems.push(format!(
                    "{} is not createType=\"streamOptimized\"",
                    member.name
                ));
            }
        }
    }
    Ok(problems)
}

/// Whether the manifest lists every other member with its SHA-256.
fn manifest_problems(
    file: &mut std::fs::File,
    entries: &[tar::Entry],
    manifest: &str,
) -> anyhow::Result<Vec<String>> {
    let listed = match parse_manifest(manifest) {
        Ok(listed) => listed,
        Err(err) => return Ok(vec![err.to_string()]),
    };
    let mut problems = Vec::new();
    for entry in entries.iter().filter(|e| e.name != entries[1].name) {
        match listed.iter().find(|(name, _)| name == &entry.name) {
            None => problems.push(format!("the manifest does not list {}", entry.name)),
            Some((_, digest)) => {
                let actual = tar::sha256_member(file, entry)?;
                if &actual != digest {
                    problems.push(format!(
                        "{}: the manifest says SHA-256 {digest}, the file has {actual}",
                        entry.name
                    ));
                }
            }
        }
    }
    for (name, _) in &listed {
        if !entries.iter().any(|e| &e.name == name) {
            problems.push(format!(
                "the manifest lists {name}, which the archive lacks"
            ));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lines_read_back() {
        let digest = "0f".repeat(32);
        let text = manifest_text(&[("a.ovf", &digest), ("a.vmdk", &digest)]);
        assert_eq!(
            text,
            format!("SHA256(a.ovf)= {digest}\nSHA256(a.vmdk)= {digest}\n")
        );
        assert_eq!(
            parse_manifest(&text).unwrap(),
            vec![
                ("a.ovf".to_owned(), digest.clone()),
                ("a.vmdk".to_owned(), digest.clone())
            ]
        );
        let err = parse_manifest(&format!("SHA1(a.ovf)= {}\n", "0f".repeat(20))).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "manifest line 1: `SHA1(a.ovf)= {}` is not `SHA256(<file>)= <hex>`",
                "0f".repeat(20)
            )
        );
    }

    /// A sparse VMDK head: header sector, then a one-sector descriptor.
    fn vmdk_head(descriptor: &str, capacity_sectors: u64) -> Vec<u8> {
        let mut head = vec![0u8; 1024];
        head[..4].copy_from_slice(b"KDMV");
        head[12..20].copy_from_slice(&capacity_sectors.to_le_bytes());
        head[28..36].copy_from_slice(&1u64.to_le_bytes());
        head[36..44].copy_from_slice(&1u64.to_le_bytes());
        head[512..512 + descriptor.len()].copy_from_slice(descriptor.as_bytes());
        head
    }

    #[test]
    fn a_cid_qemu_wrote_without_leading_zeros_is_pinned_to_eight_digits() {
        let dir = tempfile::tempdir().unwrap();
        let vmdk = dir.path().join("disk.vmdk");
        let text = "version=1\nCID=750e831\ncreateType=\"streamOptimized\"\n";
        std::fs::write(&vmdk, vmdk_head(text, 8)).unwrap();
        pin_content_id(&vmdk, 0x0123_4567).unwrap();
        let head = std::fs::read(&vmdk).unwrap();
        let (start, end) = descriptor_range(&head).unwrap();
        let descriptor = String::from_utf8_lossy(&head[start..end]);
        assert!(
            descriptor.starts_with("version=1\nCID=01234567\ncreateType=\"streamOptimized\"\n\0"),
            "{descriptor:?}"
        );
    }

    #[test]
    fn reads_capacity_type_and_content_id_from_a_vmdk_head() {
        let head = vmdk_head(
            "# Disk DescriptorFile\nversion=1\nCID=b750e831\ncreateType=\"streamOptimized\"\n",
            131_072,
        );
        assert_eq!(vmdk_facts(&head).unwrap(), (64 << 20, true));
        let (at, len, _) = descriptor_cid(&head).unwrap();
        assert_eq!(&head[at..at + len], b"b750e831");
        let short = vmdk_head("version=1\nCID=750e831\ncreateType=\"x\"\n", 8);
        assert_eq!(descriptor_cid(&short).unwrap().1, 7);
        let sparse = vmdk_head("version=1\nCID=zz\ncreateType=\"monolithicSparse\"\n", 8);
        assert_eq!(vmdk_facts(&sparse).unwrap(), (4096, false));
        assert!(descriptor_cid(&sparse).is_err());
        assert!(vmdk_facts(&[0; 1024]).is_err());
        assert_ne!(content_id("a"), content_id("b"));
        assert_ne!(content_id("a"), u32::MAX);
    }
}
