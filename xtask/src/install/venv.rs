//! ansible-core, ansible-lint and yamllint in a Python virtual environment under
//! `.local/venv`, installed with pip from the configured package index, every
//! package pinned to a version and its files' hashes by `requirements.lock`.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::{forget, now, InstallOptions};
use crate::fsx;
use crate::toolchain::layout::{self, Component, Record};
use crate::toolchain::tools::{self, Version};
use crate::vm::streaming;

/// The ansible-core series pip installs: 2.18 runs on Python 3.11-3.13 (Debian 12's
/// python3 is 3.11) and manages targets with Python >= 3.8 (the PyPy 3.10 the setup
/// role bootstraps on Flatcar).
pub const ANSIBLE_CORE_SERIES: &str = "2.18";

/// Every package of the venv with its version and the SHA-256 of each file the
/// index publishes for it. Kept beside this installer (and compiled in) because it
/// is the installer's input, changed together with `ANSIBLE_CORE_SERIES`; its
/// header says how to regenerate it.
pub const REQUIREMENTS_LOCK: &str = include_str!("requirements.lock");

/// What pip is asked for: the `name==version` lines of the lock.
pub fn python_requirements() -> Vec<String> {
    REQUIREMENTS_LOCK
        .lines()
        .filter(|line| !line.starts_with([' ', '#']) && !line.trim().is_empty())
        .map(|line| line.trim_end_matches('\\').trim().to_owned())
        .collect()
}

/// pip's arguments: only the locked files, each checked against its hash
/// (`--require-hashes`), nothing resolved beyond the lock (`--no-deps`).
fn pip_install_args(lock: &Path, index: Option<&str>) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--require-hashes",
        "--no-deps",
        "--only-binary=:all:",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    if let Some(index) = index {
        args.push("--index-url".into());
        args.push(index.into());
    }
    args.push("-r".into());
    args.push(lock.into());
    args
}

/// Creates the virtual environment in place (a venv's scripts name its absolute
/// path, so it cannot be built elsewhere and renamed) and has pip install the
/// requirements. Whatever fails, the half-made venv is removed.
pub fn install_python_venv(
    sh: &Shell,
    root: &Path,
    options: &InstallOptions,
) -> anyhow::Result<Record> {
    let python3 = tools::find_on_path("python3").context("python3 is not installed")?;
    let venv = layout::venv_dir(root);
    forget(root, Component::PythonVenv)?;
    if venv.exists() {
        std::fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    let result = fill_venv(sh, &python3, &venv, options);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&venv);
    }
    let version = result?;
    Ok(Record {
        component: Component::PythonVenv,
        version: version.to_string(),
        source: options
            .pypi_index
            .clone()
            .unwrap_or_else(|| "pip's configured index (PyPI by default)".to_owned()),
        sha256: None,
        signed_by: None,
        trust_anchor: None,
        requirements: python_requirements(),
        installed_at: now(),
    })
}

/// Returns the ansible-core version that ended up in the venv.
fn fill_venv(
    sh: &Shell,
    python3: &Path,
    venv: &Path,
    options: &InstallOptions,
) -> anyhow::Result<Version> {
    eprintln!(
        "Creating a Python virtual environment in {}",
        venv.display()
    );
    let out = cmd!(sh, "{python3} -m venv {venv}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running {} -m venv", python3.display()))?;
    if !out.status.success() {
        bail!(
            "`{} -m venv {}` failed: {}{}",
            python3.display(),
            venv.display(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let requirements = python_requirements();
    // Kept in the venv: it says exactly what is installed there.
    let lock = venv.join("requirements.lock");
    fsx::write_atomically(&lock, REQUIREMENTS_LOCK.as_bytes())?;
    let args = pip_install_args(&lock, options.pypi_index.as_deref());
    eprintln!(
        "Installing the {} packages pinned in {} with pip from {}",
        requirements.len(),
        lock.display(),
        options
            .pypi_index
            .as_deref()
            .unwrap_or("pip's configured index")
    );
    let python = venv.join("bin").join("python");
    let venv_parent = venv.parent().unwrap_or(venv);
    let finished = streaming::run(&python, &args, venv_parent, &[], Some("pip"), None)?;
    if !finished.success {
        bail!(
            "pip could not install the packages pinned in {}; its output:\n{}",
            lock.display(),
            streaming::tail(&finished.output, 20)
        );
    }
    let bin = venv.join("bin");
    for program in Component::PythonVenv.programs() {
        if !fsx::is_executable(&bin.join(program)) {
            bail!("pip finished, but {} has no {program}", bin.display());
        }
    }
    let playbook = bin.join("ansible-playbook");
    let said = cmd!(sh, "{playbook} --version")
        .quiet()
        .ignore_status()
        .read()
        .unwrap_or_default();
    let version = tools::parse_version(&said)
        .with_context(|| format!("`{} --version` printed no version", playbook.display()))?;
    if !version
        .to_string()
        .starts_with(&format!("{ANSIBLE_CORE_SERIES}."))
    {
        bail!("pip installed ansible-core {version}, not {ANSIBLE_CORE_SERIES}.*");
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every package in the lock has an exact version and at least one SHA-256,
    /// and pip is told to insist on them.
    #[test]
    fn finding_14_every_python_package_is_pinned_with_hashes() {
        let mut current: Option<(&str, usize)> = None;
        let mut pinned = Vec::new();
        let mut check = |entry: Option<(&str, usize)>| {
            if let Some((requirement, hashes)) = entry {
                assert!(
                    hashes > 0,
                    "{requirement} has no --hash in requirements.lock"
                );
                pinned.push(requirement.to_owned());
            }
        };
        for line in REQUIREMENTS_LOCK.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if !line.starts_with(' ') {
                check(current.take());
                let requirement = trimmed.trim_end_matches('\\').trim();
                let (name, version) = requirement
                    .split_once("==")
                    .unwrap_or_else(|| panic!("`{requirement}` is not name==version"));
                assert!(!name.is_empty() && version.split('.').all(|p| !p.is_empty()));
                assert!(!version.contains('*'), "{requirement} is not exact");
                current = Some((requirement, 0));
            } else if let Some(hash) = trimmed.strip_prefix("--hash=sha256:") {
                let hash = hash.trim_end_matches('\\').trim();
                assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
                current.as_mut().expect("a hash follows its requirement").1 += 1;
            } else {
                panic!("unexpected line in requirements.lock: {line}");
            }
        }
        check(current.take());
        assert_eq!(pinned, python_requirements());
        for wanted in ["ansible-core==2.18.", "ansible-lint==", "yamllint=="] {
            assert!(
                pinned.iter().any(|p| p.starts_with(wanted)),
                "no {wanted} in {pinned:?}"
            );
        }
        assert!(ANSIBLE_CORE_SERIES == "2.18");

        let args = pip_install_args(Path::new("/v/requirements.lock"), Some("http://i/simple"));
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        for flag in ["--require-hashes", "--no-deps"] {
            assert!(args.contains(&flag), "{args:?}");
        }
        assert!(args.ends_with(&["-r", "/v/requirements.lock"]), "{args:?}");
        assert!(args
            .windows(2)
            .any(|w| w == ["--index-url", "http://i/simple"]));
    }
}
