//! Starting cargo from inside `cargo xtask` (or a test cargo runs). Cargo gives the
//! process it runs the variables of that package (CARGO_MANIFEST_DIR, CARGO_PKG_*,
//! ...); a cargo started with them passes them on to build scripts, and ring's
//! declares `rerun-if-env-changed` on several: every nested cargo would rebuild
//! ring, rustls and the xtask, relinking the running binary under its feet.

use std::ffi::OsString;
use std::path::PathBuf;

use xshell::{Cmd, Shell};

/// A `cargo` command (the one that runs us, else the one on PATH) whose
/// environment is ours without the variables cargo sets for a running package.
/// Those that configure cargo itself (CARGO_HOME, CARGO_TARGET_DIR, RUSTUP_*, ...)
/// stay. `std::process::Command::from` turns it into a plain command.
pub fn command(sh: &Shell) -> Cmd<'_> {
    let mut cmd = sh.cmd(program());
    for (name, _) in std::env::vars_os() {
        if is_package_variable(&name) {
            cmd = cmd.env_remove(name);
        }
    }
    cmd
}

/// `$CARGO` (set by cargo for what it runs: the same toolchain), else `cargo`.
fn program() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// Whether cargo sets `name` for the package it builds, runs or tests (see "Environment
/// variables Cargo sets for crates" and "... for build scripts" in the Cargo book).
fn is_package_variable(name: &OsString) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    const EXACT: &[&str] = &[
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    const PREFIXES: &[&str] = &[
        "CARGO_PKG_",
        "CARGO_BIN_EXE_",
        "CARGO_CFG_",
        "CARGO_FEATURE_",
    ];
    EXACT.contains(&name) || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_variables_go_and_cargo_settings_stay() {
        let is = |name: &str| is_package_variable(&OsString::from(name));
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_BIN_EXE_xtask",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "OUT_DIR",
        ] {
            assert!(is(name), "{name}");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO_TERM_COLOR",
            "RUSTUP_TOOLCHAIN",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!is(name), "{name}");
        }
    }

    #[test]
    fn the_command_runs_without_them() {
        let sh = Shell::new().unwrap();
        let command = std::process::Command::from(command(&sh).args(["--version"]));
        let removed: Vec<String> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        // `cargo test` runs this test with the xtask package's variables set.
        assert!(
            removed.iter().any(|n| n == "CARGO_MANIFEST_DIR"),
            "{removed:?}"
        );
        assert!(removed.iter().all(|n| is_package_variable(&n.into())));
    }
}
