//! The project-local toolchain under `.local/` at the repository root: where each
//! component (Packer, the Python virtual environment with Ansible) lives, the install
//! record that says it is complete, and putting it before PATH. Installing is
//! `install`'s business; this module only knows the layout, so `tools` can look here
//! first without depending on the installer.
//!
//! ```text
//! .local/bin/packer              Packer (renamed into place from a temporary directory)
//! .local/packer-plugins/         PACKER_PLUGIN_PATH for Packer >= 1.7
//! .local/venv/                   python3 -m venv: ansible-core, ansible-lint, yamllint
//! .local/installed/<name>.json   install records, written last
//! .local/.tmp-*                  work directories of a running install
//! ```
//!
//! A component counts as installed only when its record exists: the record is
//! written after everything else, so an interrupted install is never taken for a
//! finished one, by `deps` or by anything that runs the tools.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{fsx, workspace};

/// Overrides where the toolchain lives (default: `.local` at the repository root);
/// a relative path is taken from the repository root.
pub const DIR_ENV: &str = "FLATCAR_TOOLCHAIN_DIR";

/// Packer's variable for the one directory it installs plugins into and loads them from.
pub const PACKER_PLUGIN_PATH: &str = "PACKER_PLUGIN_PATH";

/// The toolchain's root directory.
pub fn dir() -> PathBuf {
    let root = workspace::project_root();
    match std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        Some(dir) => root.join(dir),
        None => root.join(".local"),
    }
}

/// One separately installed part of the toolchain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    /// HashiCorp's release archive, verified, plus its plugins for Packer >= 1.7.
    Packer,
    /// A Python virtual environment with ansible-core, ansible-lint and yamllint.
    PythonVenv,
}

impl Component {
    pub const ALL: [Component; 2] = [Component::Packer, Component::PythonVenv];

    pub fn name(self) -> &'static str {
        match self {
            Component::Packer => "packer",
            Component::PythonVenv => "python-venv",
        }
    }

    /// The directory that holds this component's programs.
    pub fn bin_dir(self, root: &Path) -> PathBuf {
        match self {
            Component::Packer => root.join("bin"),
            Component::PythonVenv => venv_dir(root).join("bin"),
        }
    }

    /// The programs of `tools::TOOLS` this component provides.
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Component::Packer => &["packer"],
            Component::PythonVenv => &["ansible-playbook", "ansible-lint", "yamllint"],
        }
    }

    pub fn record_path(self, root: &Path) -> PathBuf {
        root.join("installed").join(format!("{}.json", self.name()))
    }

    /// The component's install record, if a complete install left one.
    pub fn record(self, root: &Path) -> Option<Record> {
        let text = std::fs::read(self.record_path(root)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn is_installed(self, root: &Path) -> bool {
        self.record(root).is_some()
    }
}

pub fn venv_dir(root: &Path) -> PathBuf {
    root.join("venv")
}

pub fn packer_plugins_dir(root: &Path) -> PathBuf {
    root.join("packer-plugins")
}

/// What an install left behind, written last. `version` is Packer's version, or
/// the ansible-core version in the virtual environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub component: Component,
    pub version: String,
    /// Where it came from: the archive URL, or the package index (`pip's default`).
    pub source: String,
    /// For Packer: the archive's SHA-256 and the key that signed its SHA256SUMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// For Packer: what replaced HashiCorp's pinned key, when the user named another
    /// key (`--hashicorp-key`); absent when the pinned key vouched for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_anchor: Option<String>,
    /// For the virtual environment: the requirements given to pip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requirements: Vec<String>,
    /// Seconds since the epoch.
    pub installed_at: u64,
}

/// The project-local `program`, when a finished install provides it.
pub fn local_program(program: &str) -> Option<PathBuf> {
    let root = dir();
    Component::ALL
        .into_iter()
        .filter(|c| c.programs().contains(&program))
        .filter(|c| c.is_installed(&root))
        .map(|c| c.bin_dir(&root).join(program))
        .find(|path| fsx::is_executable(path))
}

/// Whether `path` is one of the toolchain's programs.
pub fn is_project_local(path: &Path) -> bool {
    path.starts_with(dir())
}

/// `dirs` first, then `path` without them: the new PATH.
fn path_with_first(dirs: &[PathBuf], path: Option<OsString>) -> OsString {
    let rest: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let all = dirs
        .iter()
        .cloned()
        .chain(rest.into_iter().filter(|d| !dirs.contains(d)));
    // join_paths fails only for a directory name with a `:`; such a toolchain
    // directory is refused here rather than half-added.
    std::env::join_paths(all).unwrap_or_else(|_| std::env::var_os("PATH").unwrap_or_default())
}

/// Puts the installed components' program directories first on this process's PATH,
/// and points PACKER_PLUGIN_PATH at the project-local plugins when the local Packer
/// is installed (unless the user set it). Everything the xtask starts inherits
/// this, including programs that start others by name (Packer's ansible
/// provisioner runs `ansible-playbook`; ansible-lint runs `ansible-config`).
///
/// Changes the process environment: call it only while the xtask runs a single
/// thread (at start-up in `main`, and after an install, before any checks start).
pub fn put_first_on_path() {
    let root = dir();
    let dirs: Vec<PathBuf> = Component::ALL
        .into_iter()
        .filter(|c| c.is_installed(&root))
        .map(|c| c.bin_dir(&root))
        .collect();
    if !dirs.is_empty() {
        std::env::set_var("PATH", path_with_first(&dirs, std::env::var_os("PATH")));
    }
    let plugins = packer_plugins_dir(&root);
    if Component::Packer.is_installed(&root)
        && plugins.is_dir()
        && std::env::var_os(PACKER_PLUGIN_PATH).is_none()
    {
        std::env::set_var(PACKER_PLUGIN_PATH, plugins);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolchain_directories_go_first_once() {
        let dirs = [
            PathBuf::from("/r/.local/bin"),
            PathBuf::from("/r/.local/venv/bin"),
        ];
        assert_eq!(
            path_with_first(&dirs, Some("/usr/bin:/r/.local/bin:/bin".into())),
            OsString::from("/r/.local/bin:/r/.local/venv/bin:/usr/bin:/bin")
        );
        assert_eq!(
            path_with_first(&dirs[..1], None),
            OsString::from("/r/.local/bin")
        );
    }

    #[test]
    fn layout_under_the_root() {
        let root = Path::new("/r/.local");
        assert_eq!(Component::Packer.bin_dir(root), Path::new("/r/.local/bin"));
        assert_eq!(
            Component::PythonVenv.bin_dir(root),
            Path::new("/r/.local/venv/bin")
        );
        assert_eq!(
            Component::PythonVenv.record_path(root),
            Path::new("/r/.local/installed/python-venv.json")
        );
    }

    #[test]
    fn a_component_without_its_record_is_not_installed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/packer"), "#!/bin/sh\n").unwrap();
        assert!(!Component::Packer.is_installed(root));
        let record = Record {
            component: Component::Packer,
            version: "1.11.2".into(),
            source: "https://releases.hashicorp.com/packer/1.11.2/packer_1.11.2_linux_amd64.zip"
                .into(),
            sha256: Some("00".into()),
            signed_by: Some("C874011F0AB405110D02105534365D9472D7468F".into()),
            trust_anchor: None,
            requirements: Vec::new(),
            installed_at: 1,
        };
        std::fs::create_dir_all(root.join("installed")).unwrap();
        std::fs::write(
            Component::Packer.record_path(root),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        assert_eq!(Component::Packer.record(root), Some(record));
        // A torn record is no record.
        std::fs::write(Component::Packer.record_path(root), "{\"component\":").unwrap();
        assert!(!Component::Packer.is_installed(root));
    }
}
