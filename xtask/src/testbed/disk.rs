//! The rehearsal guest's disk, laid out like Flatcar's where a bake touches it: a GPT
//! with Flatcar's partition numbers and labels (p1 EFI-SYSTEM, p2 BIOS-BOOT, p6 OEM,
//! p9 ROOT), made without a loop device, a mount or udev: each file system is written
//! straight into the image file at its partition's offset (mkfs.fat, mtools and
//! syslinux's mtools installer for the ESP; mkfs.ext4 `-d` and debugfs for ext4).
//!
//! Booting is legacy BIOS, as QEMU's default firmware does it: syslinux's `gptmbr.bin`
//! in the protective MBR starts the partition marked legacy-BIOS-bootable, the ESP,
//! whose syslinux loads the kernel and initramfs kept there (Flatcar keeps its kernel
//! on the ESP too). Flatcar's USR-A/B, ROOT-C and OEM-CONFIG are left out: the guest's
//! /usr lives on ROOT, and nothing a bake does reads them.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context};
use serde_json::Value;
use xshell::{cmd, Shell};

/// The disk's virtual size: sparse, and compressed in the qcow2. ROOT gets what the
/// other partitions leave, room for PyPy, the Kubernetes binaries and images.
pub const DISK_SIZE_BYTES: u64 = 4 << 30;

/// Where syslinux keeps its GPT boot code on Debian.
pub const GPT_MBR_BIN: &str = "/usr/lib/syslinux/mbr/gptmbr.bin";

/// The disk's GUID, fixed so that the same tree gives the same partition table.
const DISK_GUID: &str = "464C4154-4341-5200-8000-726568656172";

/// One partition of the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    pub number: u32,
    /// The GPT partition name (Flatcar's PARTLABEL), also the file system's label.
    pub label: &'static str,
    /// sgdisk's type code.
    type_code: &'static str,
    /// None: the rest of the disk.
    size_mib: Option<u64>,
    /// GPT attribute bit 2, which `gptmbr.bin` boots from.
    legacy_bios_bootable: bool,
}

pub const EFI_SYSTEM: Partition = Partition {
    number: 1,
    label: "EFI-SYSTEM",
    type_code: "EF00",
    // Flatcar's size before release 4487 (1 GiB since): the kernel and initramfs fit.
    size_mib: Some(128),
    legacy_bios_bootable: true,
};
pub const BIOS_BOOT: Partition = Partition {
    number: 2,
    label: "BIOS-BOOT",
    type_code: "EF02",
    size_mib: Some(2),
    legacy_bios_bootable: false,
};
/// Flatcar's OEM partition is btrfs; here it is ext4, written with the same tools
/// as ROOT (mkfs.ext4 `-d`, debugfs), needing no btrfs module in the guest nor
/// btrfs-progs on the host. What lives there (grub.cfg, oem-release) is the same.
pub const OEM: Partition = Partition {
    number: 6,
    label: "OEM",
    type_code: "8300",
    size_mib: Some(128),
    legacy_bios_bootable: false,
};
pub const ROOT: Partition = Partition {
    number: 9,
    label: "ROOT",
    type_code: "8300",
    size_mib: None,
    legacy_bios_bootable: false,
};

/// The layout in partition order.
pub const PARTITIONS: [Partition; 4] = [EFI_SYSTEM, BIOS_BOOT, OEM, ROOT];

/// sgdisk's arguments (before the disk) that write the layout: 1 MiB alignment, each
/// partition after the one before.
pub fn sgdisk_args() -> Vec<String> {
    let mut args = vec![
        "--set-alignment=2048".to_owned(),
        format!("--disk-guid={DISK_GUID}"),
    ];
    for p in PARTITIONS {
        let end = match p.size_mib {
            Some(mib) => format!("+{mib}M"),
            None => "0".to_owned(),
        };
        let n = p.number;
        args.push(format!("--new={n}:0:{end}"));
        args.push(format!("--typecode={n}:{}", p.type_code));
        args.push(format!("--change-name={n}:{}", p.label));
        if p.legacy_bios_bootable {
            args.push(format!("--attributes={n}:set:2"));
        }
    }
    args
}

/// Where a partition lies in the image file, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub size: u64,
}

/// The extent of the partition named `label` in `sfdisk --json`'s output.
pub fn parse_extent(sfdisk_json: &str, label: &str) -> anyhow::Result<Extent> {
    let table: Value =
        serde_json::from_str(sfdisk_json).context("parsing sfdisk --json's output")?;
    let sector = table
        .pointer("/partitiontable/sectorsize")
        .and_then(Value::as_u64)
        .unwrap_or(512);
    let partitions = table
        .pointer("/partitiontable/partitions")
        .and_then(Value::as_array)
        .context("sfdisk --json printed no partitions")?;
    let found: Vec<&Value> = partitions
        .iter()
        .filter(|p| p.get("name").and_then(Value::as_str) == Some(label))
        .collect();
    let [partition] = found.as_slice() else {
        bail!(
            "the disk has {} partitions named {label}, not one",
            found.len()
        );
    };
    let field = |name: &str| {
        partition
            .get(name)
            .and_then(Value::as_u64)
            .with_context(|| format!("partition {label} has no {name} in sfdisk's output"))
    };
    Ok(Extent {
        offset: field("start")? * sector,
        size: field("size")? * sector,
    })
}

/// The extent of the partition named `label` on the disk image `raw`.
pub fn extent(sh: &Shell, raw: &Path, label: &str) -> anyhow::Result<Extent> {
    let json = cmd!(sh, "sfdisk --json {raw}")
        .quiet()
        .read()
        .with_context(|| format!("reading the partition table of {}", raw.display()))?;
    parse_extent(&json, label).with_context(|| format!("in {}", raw.display()))
}

/// Makes the bootable raw disk `raw`: the layout, the ESP from `esp_tree` (its
/// `syslinux/` directory holds the boot loader's configuration), ROOT from
/// `root_tree`, and OEM with `oem_files`.
pub fn make(
    sh: &Shell,
    raw: &Path,
    esp_tree: &Path,
    root_tree: &Path,
    oem_files: &[(&str, String)],
) -> anyhow::Result<()> {
    let disk = std::fs::File::create(raw).with_context(|| format!("creating {}", raw.display()))?;
    disk.set_len(DISK_SIZE_BYTES)
        .with_context(|| format!("sizing {}", raw.display()))?;
    drop(disk);
    let layout = sgdisk_args();
    cmd!(sh, "sgdisk {layout...} {raw}")
        .quiet()
        .ignore_stdout()
        .run()
        .context("writing the partition table")?;
    make_esp(sh, raw, esp_tree)?;
    let root = extent(sh, raw, ROOT.label)?;
    make_ext4(sh, raw, root, ROOT.label, root_tree)
        .context("making the root file system from the guest's tree")?;
    write_oem(sh, raw, oem_files)?;
    write_boot_code(raw)
}

/// The ESP: FAT32 labelled EFI-SYSTEM, `esp_tree`'s files, syslinux installed.
fn make_esp(sh: &Shell, raw: &Path, esp_tree: &Path) -> anyhow::Result<()> {
    let esp = extent(sh, raw, EFI_SYSTEM.label)?;
    let offset_sectors = format!("--offset={}", esp.offset / 512);
    let size_kib = (esp.size / 1024).to_string();
    let label = EFI_SYSTEM.label;
    cmd!(
        sh,
        "mkfs.fat -F 32 -s 1 -n {label} {offset_sectors} {raw} {size_kib}"
    )
    .quiet()
    .ignore_stdout()
    .ignore_stderr()
    .run()
    .context("making the EFI system partition's file system")?;
    let image = format!("{}@@{}", raw.display(), esp.offset);
    let mut entries = Vec::new();
    for entry in
        std::fs::read_dir(esp_tree).with_context(|| format!("reading {}", esp_tree.display()))?
    {
        entries.push(
            entry
                .with_context(|| format!("reading {}", esp_tree.display()))?
                .path(),
        );
    }
    entries.sort();
    cmd!(sh, "mcopy -i {image} -s -p -Q {entries...} ::/")
        .env("MTOOLS_SKIP_CHECK", "1")
        .quiet()
        .run()
        .context("copying the boot files onto the EFI system partition")?;
    let offset = esp.offset.to_string();
    cmd!(
        sh,
        "syslinux --offset {offset} --directory /syslinux --install {raw}"
    )
    .env("MTOOLS_SKIP_CHECK", "1")
    .quiet()
    .run()
    .context("installing syslinux on the EFI system partition")
}

/// An ext4 file system labelled `label` over `extent`, holding `tree`.
fn make_ext4(
    sh: &Shell,
    raw: &Path,
    extent: Extent,
    label: &str,
    tree: &Path,
) -> anyhow::Result<()> {
    // nodiscard: discarding would punch holes in the image file, not the partition.
    let options = format!("offset={},nodiscard,root_owner=0:0", extent.offset);
    let size_kib = format!("{}k", extent.size / 1024);
    cmd!(
        sh,
        "mkfs.ext4 -q -F -L {label} -d {tree} -E {options} {raw} {size_kib}"
    )
    .quiet()
    .run()
    .with_context(|| format!("making the {label} file system"))
}

/// Writes the OEM partition of `raw` anew, holding exactly `files` (name, text),
/// owned by root: no root needed, nothing mounted (debugfs fixes the owner that
/// mkfs copied from the calling user).
pub fn write_oem(sh: &Shell, raw: &Path, files: &[(&str, String)]) -> anyhow::Result<()> {
    let oem = extent(sh, raw, OEM.label)?;
    let staging = tempfile::tempdir().context("creating a temporary directory")?;
    let mut owner_script = String::new();
    for (name, text) in files {
        std::fs::write(staging.path().join(name), text)
            .with_context(|| format!("staging the OEM file {name}"))?;
        owner_script += &format!("sif /{name} uid 0\nsif /{name} gid 0\n");
    }
    make_ext4(sh, raw, oem, OEM.label, staging.path())?;
    let script = staging.path().join("debugfs-owner");
    std::fs::write(&script, owner_script).context("writing a debugfs script")?;
    let device = format!("{}?offset={}", raw.display(), oem.offset);
    let output = cmd!(sh, "debugfs -w -f {script} {device}")
        .quiet()
        .output()
        .context("running debugfs on the OEM partition")?;
    // debugfs reports a failed command on stderr but still exits 0.
    let errors: Vec<String> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    if !output.status.success() || !errors.is_empty() {
        bail!(
            "setting the owner of the OEM files failed: {}",
            errors.join("; ")
        );
    }
    Ok(())
}

/// Puts syslinux's GPT boot code into the protective MBR's first 440 bytes (the
/// rest of that sector is the partition entry sgdisk wrote).
fn write_boot_code(raw: &Path) -> anyhow::Result<()> {
    let code = std::fs::read(GPT_MBR_BIN).with_context(|| format!("reading {GPT_MBR_BIN}"))?;
    if code.len() != 440 {
        bail!(
            "{GPT_MBR_BIN} holds {} bytes, not the 440 of an MBR's boot code",
            code.len()
        );
    }
    let mut disk = std::fs::OpenOptions::new()
        .write(true)
        .open(raw)
        .with_context(|| format!("opening {}", raw.display()))?;
    disk.seek(SeekFrom::Start(0))?;
    disk.write_all(&code)
        .with_context(|| format!("writing the boot code into {}", raw.display()))
}

/// The text of the file `path` (absolute, e.g. `/grub.cfg`) on the ext4 partition
/// named `label`, read with debugfs: None when it does not exist.
pub fn read_ext4_file(
    sh: &Shell,
    raw: &Path,
    label: &str,
    path: &str,
) -> anyhow::Result<Option<String>> {
    let partition = extent(sh, raw, label)?;
    let device = format!("{}?offset={}", raw.display(), partition.offset);
    let request = format!("cat {path}");
    let output = cmd!(sh, "debugfs -R {request} {device}")
        .quiet()
        .output()
        .with_context(|| format!("reading {path} from {label} with debugfs"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("File not found") {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_has_flatcars_numbers_and_labels() {
        expect_test::expect![[r#"
            --set-alignment=2048 --disk-guid=464C4154-4341-5200-8000-726568656172 --new=1:0:+128M --typecode=1:EF00 --change-name=1:EFI-SYSTEM --attributes=1:set:2 --new=2:0:+2M --typecode=2:EF02 --change-name=2:BIOS-BOOT --new=6:0:+128M --typecode=6:8300 --change-name=6:OEM --new=9:0:0 --typecode=9:8300 --change-name=9:ROOT"#]]
        .assert_eq(&sgdisk_args().join(" "));
    }

    #[test]
    fn extents_come_from_sfdisks_json() {
        let json = r#"{"partitiontable": {"label": "gpt", "sectorsize": 512, "partitions": [
            {"node": "d1", "start": 2048, "size": 262144, "name": "EFI-SYSTEM"},
            {"node": "d6", "start": 268288, "size": 262144, "name": "OEM"}]}}"#;
        assert_eq!(
            parse_extent(json, "OEM").unwrap(),
            Extent {
                offset: 268288 * 512,
                size: 128 << 20
            }
        );
        let err = parse_extent(json, "ROOT").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the disk has 0 partitions named ROOT, not one"
        );
    }

    /// The I/O half on a small sparse disk: sgdisk, mkfs.ext4 and debugfs for real.
    #[test]
    fn oem_files_are_written_and_read_back_without_a_mount() {
        let sh = Shell::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        std::fs::File::create(&raw)
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
        let layout = sgdisk_args();
        cmd!(sh, "sgdisk {layout...} {raw}")
            .quiet()
            .ignore_stdout()
            .run()
            .unwrap();
        let files = [("grub.cfg", "set oem_id=\"openstack\"\n".to_owned())];
        write_oem(&sh, &raw, &files).unwrap();
        assert_eq!(
            read_ext4_file(&sh, &raw, OEM.label, "/grub.cfg")
                .unwrap()
                .as_deref(),
            Some("set oem_id=\"openstack\"\n")
        );
        assert_eq!(
            read_ext4_file(&sh, &raw, OEM.label, "/oem-release").unwrap(),
            None
        );
        write_oem(&sh, &raw, &[]).unwrap();
        assert_eq!(
            read_ext4_file(&sh, &raw, OEM.label, "/grub.cfg").unwrap(),
            None,
            "writing the OEM partition anew drops the old files"
        );
    }
}
