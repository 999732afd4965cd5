//! Where things are: the workspace root and the well-known paths below it. Every
//! path the xtask touches derives from `project_root()`, so commands work from any
//! directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::Shell;

/// The repository root: the parent of the xtask crate.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
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
