//! Where things are: the workspace root and the well-known paths below it. Every
//! path the xtask touches derives from `project_root()`, so commands work from any
//! directory.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use xshell::Shell;

/// The repository root: the parent of the xtask crate. `cargo run` (so `cargo
/// xtask`) tells the process it starts where the crate is, in CARGO_MANIFEST_DIR;
/// that is the checkout being worked on even when the binary was compiled in
/// another one that shares its target directory. The directory compiled in is
/// only the fallback, for a binary started some other way.
pub fn project_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let at_run_time = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute() && is_xtask_crate(dir));
        at_run_time
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
            .parent()
            .expect("xtask lives one level below the workspace root")
            .to_path_buf()
    })
    .clone()
}

/// Whether `dir` holds the xtask crate's Cargo.toml (CARGO_MANIFEST_DIR may name
/// another package when something else that cargo runs starts this binary).
fn is_xtask_crate(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .is_ok_and(|manifest| package_name(&manifest) == Some("xtask"))
}

/// The `name` in a Cargo.toml's `[package]` table.
fn package_name(manifest: &str) -> Option<&str> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let Some((key, value)) = line.split_once('=') {
            if in_package && key.trim() == "name" {
                return Some(value.trim().trim_matches('"'));
            }
        }
    }
    None
}

/// The image definitions, in the upstream image-builder layout, relative to the root.
pub const CAPI: &str = "images/capi";

/// Where finished builds go (one directory each), relative to the root.
pub const OUTPUT: &str = "images/capi/output";

/// The image definitions, in the upstream image-builder layout.
pub fn capi_dir() -> PathBuf {
    project_root().join(CAPI)
}

/// Where finished builds go: one directory each, plus `.work/` while one runs.
pub fn output_dir() -> PathBuf {
    project_root().join(OUTPUT)
}

/// A shell whose working directory is the repository root.
pub fn shell() -> anyhow::Result<Shell> {
    let sh = Shell::new().context("setting up a shell")?;
    sh.change_dir(project_root());
    Ok(sh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_name_comes_from_the_package_table() {
        let manifest = "[workspace]\nname = \"no\"\n\n[package]\nversion = \"0.1.0\"\nname = \"xtask\"\n\n[dependencies]\nname = \"no\"\n";
        assert_eq!(package_name(manifest), Some("xtask"));
        assert_eq!(package_name("[workspace]\nmembers = [\"xtask\"]\n"), None);
    }

    #[test]
    fn the_root_holds_this_crate() {
        // `cargo test` sets CARGO_MANIFEST_DIR for the test process too.
        let root = project_root();
        assert!(is_xtask_crate(&root.join("xtask")), "{}", root.display());
        assert!(!is_xtask_crate(&root));
    }
}
