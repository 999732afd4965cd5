//! What the checks engine remembers between runs, under target/xtask-cache: the
//! passes, by a hash of everything that decided them, and the tools' versions, by
//! the identity of their binaries. A cached run neither runs a check again nor asks
//! a tool its version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};
use xshell::Shell;

use crate::toolchain::tools::{self, Probe, Status};
use crate::{fsx, hex, workspace};

/// What identifies a tool for the cache: its path, file identity and version.
pub fn tool_identity(probe: &Probe) -> String {
    let path = probe.path.as_deref().unwrap_or(Path::new(""));
    format!(
        "{}|{}|{}",
        probe.tool,
        fingerprint(path).unwrap_or_default(),
        probe.version.map(|v| v.to_string()).unwrap_or_default()
    )
}

/// A file's identity without reading it: where it resolves to, its size and its
/// modification time. A reinstalled tool gets a new one.
fn fingerprint(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let real = path.canonicalize().ok()?;
    let meta = real.metadata().ok()?;
    Some(format!(
        "{}|{}|{}|{}.{}",
        real.display(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    ))
}

/// Probes `programs`, reusing the version of a tool whose binary is unchanged since
/// it last probed fine: asking ansible-playbook its version costs a third of a
/// second, more than a cached run should take.
pub fn probe_tools(
    sh: &Shell,
    programs: &[&'static str],
    cache: Option<&Cache>,
) -> BTreeMap<&'static str, Probe> {
    let mut probes = BTreeMap::new();
    let mut to_probe = Vec::new();
    for &program in programs {
        let tool = tools::tool(program);
        let path = tools::find_program(program);
        let known = match (cache, &path) {
            (Some(cache), Some(path)) => fingerprint(path).and_then(|f| cache.tool_version(&f)),
            _ => None,
        };
        match known {
            Some(version) => {
                probes.insert(
                    program,
                    Probe {
                        tool: tool.program,
                        path,
                        version: tools::parse_version(&version),
                        minimum: tool.minimum,
                        optional: tool.optional,
                        status: Status::Ok,
                        hint: None,
                    },
                );
            }
            None => to_probe.push(tool),
        }
    }
    for probe in tools::probe_all(sh, &to_probe) {
        // Packer >= 1.7 needs plugins that can come and go without the binary
        // changing: probe it every time.
        let plugins_matter =
            probe.tool == "packer" && probe.version.is_some_and(|v| (v.major, v.minor) >= (1, 7));
        if let (Some(cache), Some(path), true, false) =
            (cache, &probe.path, probe.usable(), plugins_matter)
        {
            if let Some(f) = fingerprint(path) {
                let version = probe.version.map(|v| v.to_string()).unwrap_or_default();
                cache.remember_tool(&f, &version);
            }
        }
        probes.insert(probe.tool, probe);
    }
    probes
}

/// Passes remembered by the hash of everything that decided them, under
/// target/xtask-cache. Only passes are kept: a failure is always run again, so its
/// report is always fresh. Entries are empty files named by the hash.
pub struct Cache {
    dir: PathBuf,
    /// Which xtask made the entries: a rebuilt xtask may check differently.
    salt: String,
}

impl Cache {
    pub fn open() -> Cache {
        let exe = std::env::current_exe().ok();
        Cache {
            dir: workspace::project_root().join("target").join("xtask-cache"),
            salt: format!(
                "v1|{}",
                exe.as_deref().and_then(fingerprint).unwrap_or_default()
            ),
        }
    }

    /// The key of one check's pass: its name and target, its tools' identities, and
    /// the content of its input files under `root` with `salt`.
    pub fn key(
        &self,
        (name, target): (&str, &str),
        tools: &[String],
        (root, files, salt): &(PathBuf, Vec<PathBuf>, Vec<String>),
    ) -> anyhow::Result<String> {
        let mut hasher = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        field(self.salt.as_bytes());
        field(name.as_bytes());
        field(target.as_bytes());
        for tool in tools {
            field(tool.as_bytes());
        }
        for s in salt {
            field(s.as_bytes());
        }
        let mut all = Vec::new();
        for file in files {
            let path = root.join(file);
            if path.is_dir() {
                for entry in walkdir::WalkDir::new(&path).sort_by_file_name() {
                    let entry = entry.with_context(|| format!("listing {}", path.display()))?;
                    if entry.file_type().is_file() {
                        all.push(entry.path().strip_prefix(root)?.to_path_buf());
                    }
                }
            } else {
                all.push(file.clone());
            }
        }
        all.sort();
        all.dedup();
        for file in all {
            field(file.to_string_lossy().as_bytes());
            match std::fs::read(root.join(&file)) {
                Ok(content) => field(&content),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => field(b"\0missing"),
                Err(err) => return Err(err).with_context(|| format!("reading {}", file.display())),
            }
        }
        Ok(hex::encode(&hasher.finalize()))
    }

    pub fn passed(&self, key: &str) -> bool {
        self.dir.join("passed").join(key).exists()
    }

    pub fn remember_pass(&self, key: &str) {
        // A cache that cannot be written only makes the next run slower.
        let _ = fsx::write_atomically(&self.dir.join("passed").join(key), b"");
    }

    fn tool_version(&self, fingerprint: &str) -> Option<String> {
        let key = hex::encode(&Sha256::digest(fingerprint.as_bytes()));
        std::fs::read_to_string(self.dir.join("tools").join(key)).ok()
    }

    fn remember_tool(&self, fingerprint: &str, version: &str) {
        let key = hex::encode(&Sha256::digest(fingerprint.as_bytes()));
        let _ = fsx::write_atomically(&self.dir.join("tools").join(key), version.as_bytes());
    }
}
