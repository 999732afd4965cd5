//! The files of a repository checkout that the checks look at, found once and sorted
//! by kind: JSON and Ignition under images/capi, YAML, Ansible playbooks, shell
//! scripts. Build outputs, caches and version-control data are never walked.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where the image definitions are, relative to the root (one definition, in `workspace`).
pub use crate::workspace::CAPI;
use crate::workspace::OUTPUT;

/// Directories never walked: version control, build products, local state.
const SKIPPED_DIRS: &[&str] = &[
    ".git",
    "target",
    ".local",
    OUTPUT,
    ".vagrant",
    "node_modules",
];

/// A checkout (or a copy) and its files.
#[derive(Debug)]
pub struct SourceTree {
    pub root: PathBuf,
    /// Every file, relative to `root`, sorted.
    pub files: Vec<PathBuf>,
}

impl SourceTree {
    /// Lists the files under `root`.
    pub fn discover(root: &Path) -> anyhow::Result<SourceTree> {
        let mut files = Vec::new();
        let walk = walkdir::WalkDir::new(root)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                let relative = e.path().strip_prefix(root).unwrap_or(e.path());
                !(e.file_type().is_dir() && SKIPPED_DIRS.iter().any(|d| relative == Path::new(d)))
            });
        for entry in walk {
            let entry = entry.with_context(|| format!("listing {}", root.display()))?;
            if entry.file_type().is_file() {
                files.push(entry.path().strip_prefix(root)?.to_path_buf());
            }
        }
        Ok(SourceTree {
            root: root.to_path_buf(),
            files,
        })
    }

    /// images/capi of this tree.
    pub fn capi(&self) -> PathBuf {
        self.root.join(CAPI)
    }

    /// Whether the tree has image definitions at all.
    pub fn has_capi(&self) -> bool {
        self.capi().join("packer").is_dir()
    }

    fn under<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = &'a PathBuf> + 'a {
        self.files.iter().filter(move |f| f.starts_with(dir))
    }

    /// Every `*.json` under images/capi.
    pub fn capi_json(&self) -> Vec<PathBuf> {
        self.under(CAPI)
            .filter(|f| has_extension(f, &["json"]))
            .cloned()
            .collect()
    }

    /// The Ignition configs a build hands to Flatcar's first boot.
    pub fn ignition_configs(&self) -> Vec<PathBuf> {
        self.under("images/capi/packer/files/flatcar")
            .filter(|f| has_extension(f, &["ign", "json"]))
            .cloned()
            .collect()
    }

    /// The playbooks: YAML files directly in images/capi/ansible.
    pub fn playbooks(&self) -> Vec<PathBuf> {
        self.under("images/capi/ansible")
            .filter(|f| {
                f.parent() == Some(Path::new("images/capi/ansible"))
                    && has_extension(f, &["yml", "yaml"])
            })
            .cloned()
            .collect()
    }

    /// Every file under images/capi/ansible (roles, playbooks, templates, config).
    pub fn ansible_files(&self) -> Vec<PathBuf> {
        self.under("images/capi/ansible").cloned().collect()
    }

    /// Every YAML file in the tree.
    pub fn yaml_files(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|f| has_extension(f, &["yml", "yaml"]))
            .cloned()
            .collect()
    }

    /// Every shell script: `*.sh`, and files whose first line is a shell shebang.
    pub fn shell_scripts(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|f| {
                has_extension(f, &["sh"])
                    || (f.extension().is_none() && has_shell_shebang(&self.root.join(f)))
            })
            .cloned()
            .collect()
    }

    /// Every Rust source file.
    pub fn rust_files(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|f| has_extension(f, &["rs"]))
            .cloned()
            .collect()
    }
}

/// Which files a run is about: all of them, or a set (the staged files).
#[derive(Clone, Debug)]
pub enum Scope {
    All,
    Only(BTreeSet<PathBuf>),
}

impl Scope {
    pub fn includes(&self, file: &Path) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(files) => files.contains(file),
        }
    }

    /// Whether any of `files` is in scope.
    pub fn touches<'a>(&self, mut files: impl Iterator<Item = &'a Path>) -> bool {
        files.any(|f| self.includes(f))
    }

    /// The files of `files` in scope.
    pub fn filter(&self, files: Vec<PathBuf>) -> Vec<PathBuf> {
        files.into_iter().filter(|f| self.includes(f)).collect()
    }
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.contains(&e))
}

/// Whether the file starts with `#!` naming sh, bash, dash or ksh (directly or
/// through `env`).
pub fn has_shell_shebang(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 128];
    let Ok(n) = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)) else {
        return false;
    };
    is_shell_shebang(&String::from_utf8_lossy(&head[..n]))
}

fn is_shell_shebang(head: &str) -> bool {
    let Some(line) = head.lines().next().and_then(|l| l.strip_prefix("#!")) else {
        return false;
    };
    let mut words = line.split_whitespace();
    let mut program = words.next().unwrap_or("");
    if program.ends_with("/env") {
        program = words.find(|w| !w.starts_with('-')).unwrap_or("");
    }
    let name = program.rsplit('/').next().unwrap_or("");
    matches!(name, "sh" | "bash" | "dash" | "ksh")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_shell_shebangs() {
        assert!(is_shell_shebang("#!/bin/sh\nexec x"));
        assert!(is_shell_shebang("#!/usr/bin/env bash\n"));
        assert!(is_shell_shebang("#!/usr/bin/env -S bash -e\n"));
        assert!(is_shell_shebang("#! /bin/bash -eu\n"));
        assert!(!is_shell_shebang("#!/usr/bin/env python3\n"));
        assert!(!is_shell_shebang("#!/usr/bin/zsh\n"));
        assert!(!is_shell_shebang("echo no shebang\n"));
    }
}
