//! A Flatcar disk image as a file: its partition table, the ext4 ROOT partition
//! that the bake writes into, and the os-release it ships — all read and written
//! with userspace tools on the file itself, never mounted, never as root.

pub mod ext4;
pub mod gpt;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use ext4::Ext4;
use gpt::Partition;

/// The partition labels Flatcar's disk layout uses for what the bake touches.
pub const ROOT_LABEL: &str = "ROOT";
pub const OEM_LABEL: &str = "OEM";
pub const USR_LABEL: &str = "USR-A";

/// A raw disk image and its partitions.
#[derive(Clone, Debug)]
pub struct DiskImage {
    pub path: PathBuf,
    pub partitions: Vec<Partition>,
}

/// The file system found at a partition's start, by its magic number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileSystem {
    Ext4,
    Btrfs,
    Unknown,
}

impl DiskImage {
    pub fn open(path: &Path) -> anyhow::Result<DiskImage> {
        let mut head = vec![0u8; gpt::HEAD_BYTES];
        let mut file = std::fs::File::open(path)
            .with_context(|| format!("opening the disk image {}", path.display()))?;
        file.read_exact(&mut head)
            .with_context(|| format!("reading the partition table of {}", path.display()))?;
        let partitions =
            gpt::parse(&head).with_context(|| format!("reading the GPT of {}", path.display()))?;
        Ok(DiskImage {
            path: path.to_path_buf(),
            partitions,
        })
    }

    pub fn partition(&self, label: &str) -> anyhow::Result<&Partition> {
        gpt::find(&self.partitions, label).with_context(|| format!("in {}", self.path.display()))
    }

    /// The ext4 ROOT partition, checked to be ext4.
    pub fn root(&self) -> anyhow::Result<Ext4> {
        let root = self.partition(ROOT_LABEL)?;
        match self.file_system(root)? {
            FileSystem::Ext4 => Ok(Ext4 {
                image: self.path.clone(),
                offset: root.offset(),
            }),
            other => bail!(
                "the ROOT partition of {} holds {other:?}, not ext4",
                self.path.display()
            ),
        }
    }

    pub fn file_system(&self, partition: &Partition) -> anyhow::Result<FileSystem> {
        let mut file = std::fs::File::open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        let mut probe = vec![0u8; 0x10048];
        file.seek(SeekFrom::Start(partition.offset()))?;
        let read = file.read(&mut probe)?;
        probe.truncate(read);
        Ok(if probe.get(1080..1082) == Some(&[0x53, 0xEF]) {
            FileSystem::Ext4
        } else if probe.get(0x10040..0x10048) == Some(b"_BHRfS_M") {
            FileSystem::Btrfs
        } else {
            FileSystem::Unknown
        })
    }

    /// The image's `/usr/lib/os-release`. On Flatcar it lives on USR-A (btrfs,
    /// read with `btrfs restore` from a copy of the partition, which needs neither
    /// a mount nor root); an image without USR-A (the rehearsal guest) keeps /usr
    /// on ROOT.
    pub fn os_release(&self, sh: &Shell) -> anyhow::Result<String> {
        let bytes = match gpt::find(&self.partitions, USR_LABEL) {
            Ok(usr) => self.read_from_usr(sh, usr)?,
            Err(_) => self.root()?.read_file(sh, "/usr/lib/os-release")?,
        };
        String::from_utf8(bytes)
            .with_context(|| format!("os-release of {} is not UTF-8", self.path.display()))
    }

    fn read_from_usr(&self, sh: &Shell, usr: &Partition) -> anyhow::Result<Vec<u8>> {
        match self.file_system(usr)? {
            FileSystem::Ext4 => Ext4 {
                image: self.path.clone(),
                offset: usr.offset(),
            }
            .read_file(sh, "/lib/os-release"),
            FileSystem::Btrfs => {
                let work = tempfile::tempdir().context("making a directory for btrfs restore")?;
                let copy = work.path().join("usr.img");
                copy_partition(&self.path, usr, &copy)?;
                let out = work.path().join("out");
                std::fs::create_dir(&out)?;
                cmd!(
                    sh,
                    "btrfs restore --path-regex ^/(|lib(|/os-release))$ {copy} {out}"
                )
                .quiet()
                .ignore_stdout()
                .run()
                .with_context(|| {
                    format!(
                        "reading /lib/os-release from the {USR_LABEL} partition of {}",
                        self.path.display()
                    )
                })?;
                let path = out.join("lib/os-release");
                std::fs::read(&path).with_context(|| {
                    format!(
                        "the {USR_LABEL} partition of {} has no /lib/os-release",
                        self.path.display()
                    )
                })
            }
            FileSystem::Unknown => bail!(
                "the {USR_LABEL} partition of {} holds neither ext4 nor btrfs",
                self.path.display()
            ),
        }
    }
}

/// Copies one partition's bytes into a file of its own, leaving runs of zeros
/// as holes (a Flatcar USR partition is mostly empty).
fn copy_partition(image: &Path, partition: &Partition, to: &Path) -> anyhow::Result<()> {
    let mut from = std::fs::File::open(image)?;
    from.seek(SeekFrom::Start(partition.offset()))?;
    let mut out =
        std::fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let mut left = partition.size();
    let mut block = vec![0u8; 1 << 20];
    while left > 0 {
        let n = block.len().min(left as usize);
        from.read_exact(&mut block[..n]).with_context(|| {
            format!(
                "reading partition {} of {}",
                partition.number,
                image.display()
            )
        })?;
        if block[..n].iter().all(|b| *b == 0) {
            out.seek(SeekFrom::Current(n as i64))?;
        } else {
            out.write_all(&block[..n])?;
        }
        left -= n as u64;
    }
    out.set_len(partition.size())
        .with_context(|| format!("writing {}", to.display()))
}
