//! Editing an ext4 file system inside a disk image file with e2fsprogs' debugfs,
//! addressed as `image?offset=N`: no mount, no loop device, no root. The edits
//! become one debugfs script (a pure function of the edits and of which paths
//! already exist), and e2fsck checks the result.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

/// An ext4 file system at a byte offset of an image file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext4 {
    pub image: PathBuf,
    pub offset: u64,
}

/// Owner, permission bits and time of an entry written into the file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch, for every timestamp of the inode.
    pub time: u64,
}

impl Meta {
    /// root-owned with `mode`, at `time`.
    pub fn root(mode: u32, time: u64) -> Meta {
        Meta {
            mode,
            uid: 0,
            gid: 0,
            time,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir,
    /// A file with the bytes of this host file.
    File(PathBuf),
    /// A symbolic link to this target.
    Symlink(String),
}

/// One entry to create or replace, at an absolute path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    pub path: String,
    pub entry: Entry,
    pub meta: Meta,
}

impl Ext4 {
    /// The device argument e2fsprogs understands for a file system at an offset.
    pub fn device(&self) -> String {
        format!("{}?offset={}", self.image.display(), self.offset)
    }

    /// Applies `edits` in order, creating missing parent directories (root, 0755,
    /// at `time`), then checks the file system.
    pub fn apply(&self, sh: &Shell, edits: &[Edit], time: u64) -> anyhow::Result<()> {
        for edit in edits {
            check_path(&edit.path)?;
            if let Entry::File(source) = &edit.entry {
                check_path(&source.to_string_lossy())?;
            }
        }
        let probed: Vec<String> = edits.iter().flat_map(|e| with_ancestors(&e.path)).collect();
        let existing = self.existing(sh, &probed)?;
        let script = edit_script(edits, &existing, time);
        self.run_script(sh, &script, true)
            .with_context(|| format!("writing into the ext4 file system at {}", self.device()))?;
        self.pin_write_time(time)?;
        self.check(sh)
    }

    /// debugfs stamps the superblock's last-write time with the clock when it
    /// closes the file system (even over its own `ssv`); set it to `time`, with
    /// the superblock's checksum, so the same edits give the same bytes.
    fn pin_write_time(&self, time: u64) -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.image)
            .with_context(|| format!("opening {}", self.image.display()))?;
        let at = self.offset + 1024;
        let mut block = [0u8; 1024];
        file.seek(SeekFrom::Start(at))?;
        file.read_exact(&mut block)
            .with_context(|| format!("reading the superblock at {}", self.device()))?;
        pin_superblock_write_time(&mut block, time);
        file.seek(SeekFrom::Start(at))?;
        file.write_all(&block)
            .with_context(|| format!("writing the superblock at {}", self.device()))
    }

    /// The bytes of the file at `path`.
    pub fn read_file(&self, sh: &Shell, path: &str) -> anyhow::Result<Vec<u8>> {
        check_path(path)?;
        let device = self.device();
        let request = format!("cat {path}");
        let output = cmd!(sh, "debugfs -R {request} {device}")
            .quiet()
            .output()
            .with_context(|| format!("reading {path} from {device}"))?;
        errors_of(&output.stderr).with_context(|| format!("reading {path} from {device}"))?;
        Ok(output.stdout)
    }

    /// debugfs's `stat` of `path`: type, mode, owner, times.
    pub fn stat(&self, sh: &Shell, path: &str) -> anyhow::Result<String> {
        check_path(path)?;
        let device = self.device();
        let request = format!("stat {path}");
        let output = cmd!(sh, "debugfs -R {request} {device}").quiet().output()?;
        errors_of(&output.stderr).with_context(|| format!("stat of {path} in {device}"))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `e2fsck -fn`: a full, read-only check.
    pub fn check(&self, sh: &Shell) -> anyhow::Result<()> {
        let device = self.device();
        let output = cmd!(sh, "e2fsck -fn {device}")
            .quiet()
            .ignore_status()
            .output()?;
        if !output.status.success() {
            bail!(
                "e2fsck -fn {device} found problems:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Which of `paths` exist (one read-only debugfs run).
    fn existing(&self, sh: &Shell, paths: &[String]) -> anyhow::Result<BTreeSet<String>> {
        let unique: BTreeSet<&String> = paths.iter().collect();
        let script: String = unique.iter().map(|p| format!("stat {p}\n")).collect();
        let stderr = self.debugfs(sh, &script, false)?;
        let missing: BTreeSet<&str> = stderr
            .lines()
            .filter_map(|line| {
                line.trim_end()
                    .strip_suffix(": File not found by ext2_lookup")
            })
            .collect();
        Ok(unique
            .into_iter()
            .filter(|p| !missing.contains(p.as_str()))
            .cloned()
            .collect())
    }

    fn run_script(&self, sh: &Shell, script: &str, write: bool) -> anyhow::Result<()> {
        let stderr = self.debugfs(sh, script, write)?;
        errors_of(stderr.as_bytes())
    }

    /// Runs a debugfs script and returns its stderr; debugfs exits 0 even when a
    /// command fails, so the caller reads the errors from there.
    fn debugfs(&self, sh: &Shell, script: &str, write: bool) -> anyhow::Result<String> {
        let file = tempfile::NamedTempFile::new().context("creating a debugfs script")?;
        std::fs::write(file.path(), script).context("writing a debugfs script")?;
        let script_path = file.path();
        let device = self.device();
        let write_flag = write.then_some("-w");
        let output = cmd!(sh, "debugfs {write_flag...} -f {script_path} {device}")
            .quiet()
            .output()
            .with_context(|| format!("running debugfs on {device}"))?;
        Ok(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Sets `s_wtime` (low 32 bits at 0x30, high 8 at 0x274) and, when the file
/// system has metadata checksums, the superblock's CRC32C at 0x3FC.
pub fn pin_superblock_write_time(superblock: &mut [u8; 1024], time: u64) {
    superblock[0x30..0x34].copy_from_slice(&(time as u32).to_le_bytes());
    superblock[0x274] = (time >> 32) as u8;
    let ro_compat = u32::from_le_bytes(superblock[0x64..0x68].try_into().expect("four bytes"));
    const METADATA_CSUM: u32 = 0x400;
    if ro_compat & METADATA_CSUM != 0 {
        let sum = crc32c_raw(!0, &superblock[..0x3FC]);
        superblock[0x3FC..].copy_from_slice(&sum.to_le_bytes());
    }
}

/// CRC32C (Castagnoli) without the final inversion, as ext4 checksums use it.
fn crc32c_raw(mut crc: u32, bytes: &[u8]) -> u32 {
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// debugfs reports failures only on stderr, after its version banner.
fn errors_of(stderr: &[u8]) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(stderr);
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with("debugfs ") && !line.trim().is_empty())
        .collect();
    if !errors.is_empty() {
        bail!("debugfs: {}", errors.join("; "));
    }
    Ok(())
}

/// debugfs splits its command lines at whitespace and treats quotes specially,
/// so paths that need either are refused rather than mangled.
fn check_path(path: &str) -> anyhow::Result<()> {
    if !path.starts_with('/')
        || path
            .chars()
            .any(|c| c.is_whitespace() || "\"'\\".contains(c))
    {
        bail!("{path:?} cannot be written with debugfs: it must be absolute, without whitespace, quotes or backslashes");
    }
    Ok(())
}

/// `/a/b/c` → `/a`, `/a/b`, `/a/b/c`.
fn with_ancestors(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        current = format!("{current}/{part}");
        out.push(current.clone());
    }
    out
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The debugfs commands that make `edits` true, given the paths that exist.
/// Every directory whose entries change gets `time` too, so the same edits on
/// the same image give the same bytes.
pub fn edit_script(edits: &[Edit], existing: &BTreeSet<String>, time: u64) -> String {
    let mut script = String::new();
    let mut made: BTreeSet<String> = existing.clone();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let set_meta = |script: &mut String, path: &str, type_bits: u32, meta: &Meta| {
        script.push_str(&format!("sif {path} mode 0{:o}\n", type_bits | meta.mode));
        script.push_str(&format!(
            "sif {path} uid {}\nsif {path} gid {}\n",
            meta.uid, meta.gid
        ));
        for field in ["mtime", "ctime", "atime", "crtime"] {
            script.push_str(&format!("sif {path} {field} @{}\n", meta.time));
        }
    };
    for edit in edits {
        let ancestors = with_ancestors(&edit.path);
        for dir in &ancestors[..ancestors.len() - 1] {
            if made.insert(dir.clone()) {
                script.push_str(&format!("mkdir {dir}\n"));
                set_meta(&mut script, dir, 0o040000, &Meta::root(0o755, time));
                touched.insert(parent(dir).to_string());
            }
        }
        let path = &edit.path;
        let exists = made.contains(path);
        let type_bits = match &edit.entry {
            Entry::Dir => {
                if !exists {
                    script.push_str(&format!("mkdir {path}\n"));
                }
                0o040000
            }
            Entry::File(source) => {
                if exists {
                    script.push_str(&format!("rm {path}\n"));
                }
                script.push_str(&format!("write {} {path}\n", source.display()));
                0o100000
            }
            Entry::Symlink(target) => {
                if exists {
                    script.push_str(&format!("rm {path}\n"));
                }
                script.push_str(&format!("symlink {path} {target}\n"));
                0o120000
            }
        };
        made.insert(path.clone());
        touched.insert(parent(path).to_string());
        set_meta(&mut script, path, type_bits, &edit.meta);
    }
    for dir in touched {
        for field in ["mtime", "ctime"] {
            script.push_str(&format!("sif {dir} {field} @{time}\n"));
        }
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_makes_parents_replaces_files_and_pins_times() {
        let edits = [
            Edit {
                path: "/opt/extensions/kubernetes/k.raw".into(),
                entry: Entry::File(PathBuf::from("/tmp/k.raw")),
                meta: Meta::root(0o644, 7),
            },
            Edit {
                path: "/etc/extensions/kubernetes.raw".into(),
                entry: Entry::Symlink("/opt/extensions/kubernetes/k.raw".into()),
                meta: Meta::root(0o777, 7),
            },
        ];
        let existing: BTreeSet<String> = [
            "/opt",
            "/etc",
            "/etc/extensions",
            "/etc/extensions/kubernetes.raw",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let script = edit_script(&edits, &existing, 7);
        let commands: Vec<&str> = script.lines().filter(|l| !l.starts_with("sif")).collect();
        assert_eq!(
            commands,
            [
                "mkdir /opt/extensions",
                "mkdir /opt/extensions/kubernetes",
                "write /tmp/k.raw /opt/extensions/kubernetes/k.raw",
                "rm /etc/extensions/kubernetes.raw",
                "symlink /etc/extensions/kubernetes.raw /opt/extensions/kubernetes/k.raw",
            ]
        );
        assert!(script.contains("sif /opt/extensions mode 040755\n"));
        assert!(script.contains("sif /opt/extensions/kubernetes/k.raw mode 0100644\n"));
        assert!(script.contains("sif /etc/extensions/kubernetes.raw mode 0120777\n"));
        assert!(
            script.contains("sif /opt mtime @7\n"),
            "a changed directory gets the fixed time"
        );
    }

    #[test]
    fn crc32c_is_castagnolis() {
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn paths_debugfs_would_mangle_are_refused() {
        assert!(check_path("/etc/a b").is_err());
        assert!(check_path("etc/a").is_err());
        check_path("/etc/kubeadm.yml").unwrap();
    }
}
