//! ansible-core, ansible-lint and yamllint in a Python virtual environment under
//! `.local/venv`, installed with pip from the configured package index.

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

/// What pip is asked for.
pub fn python_requirements() -> Vec<String> {
    vec![
        format!("ansible-core=={ANSIBLE_CORE_SERIES}.*"),
        "ansible-lint".to_owned(),
        "yamllint".to_owned(),
    ]
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
    let mut args: Vec<OsString> = ["-m", "pip", "install", "--disable-pip-version-check"]
        .into_iter()
        .map(OsString::from)
        .collect();
    args.push("--no-input".into());
    if let Some(index) = &options.pypi_index {
        args.push("--index-url".into());
        args.push(index.into());
    }
    args.extend(requirements.iter().map(OsString::from));
    eprintln!(
        "Installing {} with pip from {}",
        requirements.join(" "),
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
            "pip could not install {}; its output:\n{}",
            requirements.join(" "),
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
