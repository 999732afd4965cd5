//! Setting up every tool the project drives (`deps --install`, and `validate` and
//! `build-flatcar` when a tool is missing), as independent components whose failures
//! do not stop each other: the system packages (one package-manager run, as root,
//! after consent), Packer from HashiCorp's signed releases (`packer`; the system's
//! Packer when HashiCorp cannot be reached), and Ansible in a Python venv (`venv`).
//! `plan` decides what is missing; `system` computes and runs the package manager.
//! Where things go is `toolchain::layout`.

pub mod packer;
pub mod plan;
pub mod system;
pub mod venv;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use xshell::Shell;

use crate::fsx;
use crate::net::download::{HttpClient, ProgressStyle, Unreachable};
use crate::toolchain::layout::{self, Component, Record};
use crate::toolchain::tools::{self, PackageManager, Probe, Purpose, Tool, TOOLS};
use packer::{DEFAULT_HASHICORP_RELEASES, DEFAULT_PACKER_VERSION, HASHICORP_KEY_URL};
use plan::Wanted;
use system::{Consent, Ran};
use venv::ANSIBLE_CORE_SERIES;

/// How often `validate` retries a transient network failure while installing.
pub const DEFAULT_RETRIES: u32 = 4;

/// Where the toolchain comes from: every URL a mirror can replace.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Installing tools into .local/")]
pub struct InstallOptions {
    /// The Packer version to install.
    #[arg(
        long,
        value_name = "VERSION",
        env = "FLATCAR_PACKER_VERSION",
        default_value = DEFAULT_PACKER_VERSION,
        value_parser = parse_release_version
    )]
    pub packer_version: String,
    /// HashiCorp's release server, or a mirror with its `packer/<version>/` layout.
    #[arg(
        long,
        value_name = "URL",
        env = "FLATCAR_HASHICORP_RELEASES",
        default_value = DEFAULT_HASHICORP_RELEASES
    )]
    pub hashicorp_releases: String,
    /// Where to fetch HashiCorp's release key from; its fingerprint must be the pinned one.
    #[arg(
        long,
        value_name = "URL",
        env = "FLATCAR_HASHICORP_KEY_URL",
        default_value = HASHICORP_KEY_URL
    )]
    pub hashicorp_key_url: String,
    /// Trust the armored public key in FILE instead of HashiCorp's pinned key (a re-signing mirror).
    #[arg(long, value_name = "FILE", env = "FLATCAR_HASHICORP_KEY")]
    pub hashicorp_key: Option<PathBuf>,
    /// Python package index for pip (its --index-url) [default: pip's own configuration, PyPI].
    #[arg(long, value_name = "URL", env = "FLATCAR_PYPI_INDEX")]
    pub pypi_index: Option<String>,
}

impl Default for InstallOptions {
    fn default() -> InstallOptions {
        InstallOptions {
            packer_version: DEFAULT_PACKER_VERSION.to_owned(),
            hashicorp_releases: DEFAULT_HASHICORP_RELEASES.to_owned(),
            hashicorp_key_url: HASHICORP_KEY_URL.to_owned(),
            hashicorp_key: None,
            pypi_index: None,
        }
    }
}

/// `MAJOR.MINOR.PATCH`, digits only: the form of HashiCorp's release directories.
fn parse_release_version(text: &str) -> Result<String, String> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        Ok(text.to_owned())
    } else {
        Err(format!("`{text}` is not a release version like 1.11.2"))
    }
}

/// How one component of the set-up ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ended {
    Installed,
    AlreadyThere,
    Failed,
    /// It needs the user's consent, which was not given (no terminal, no --yes).
    NotRun,
}

/// One row of the set-up's report.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub component: &'static str,
    pub result: Ended,
    /// What was installed, or why it failed or did not run.
    pub detail: String,
}

/// What an install run did, component by component.
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub rows: Vec<Row>,
    /// Records of what went into the project-local toolchain.
    pub installed: Vec<Record>,
}

impl Outcome {
    fn row(&mut self, component: &'static str, result: Ended, detail: impl Into<String>) {
        self.rows.push(Row {
            component,
            result,
            detail: detail.into(),
        });
    }

    pub fn any(&self, result: &Ended) -> bool {
        self.rows.iter().any(|r| &r.result == result)
    }
}

const SYSTEM_PACKAGES: &str = "system packages";

/// The tools `purpose` needs (every tool: `None`).
pub fn wanted(purpose: Option<Purpose>) -> Vec<&'static Tool> {
    TOOLS
        .iter()
        .filter(|t| purpose.is_none_or(|p| p.wants(t)))
        .collect()
}

fn probes(sh: &Shell, tools: &[&'static Tool]) -> BTreeMap<&'static str, Probe> {
    tools::probe_all(sh, tools)
        .into_iter()
        .map(|p| (p.tool, p))
        .collect()
}

/// Installs what the tools of `purpose` need and lack: system packages first (the
/// components' prerequisites are among them), then each component. A component that
/// fails is reported and the others go on.
pub fn run(
    sh: &Shell,
    purpose: Option<Purpose>,
    options: &InstallOptions,
    retries: u32,
    consent: Consent,
) -> anyhow::Result<Outcome> {
    let wanted = wanted(purpose);
    let optional_too = purpose == Some(Purpose::Test);
    let to_probe = to_probe(&wanted);
    let root = layout::dir();
    let records = || -> BTreeMap<Component, Record> {
        Component::ALL
            .into_iter()
            .filter_map(|c| Some((c, c.record(&root)?)))
            .collect()
    };
    let versions = Wanted {
        packer_version: &options.packer_version,
        ansible_core_series: ANSIBLE_CORE_SERIES,
    };
    let mut probed = probes(sh, &to_probe);
    let first = plan::plan(&wanted, &probed, &root, &records(), &versions, optional_too);
    let manager = tools::detect_package_manager();
    let mut outcome = Outcome::default();

    let from_system: Vec<&'static Tool> = first
        .from_package_manager
        .iter()
        .map(|p| tools::tool(p))
        .collect();
    install_system_packages(manager, &from_system, consent, &mut outcome);
    if outcome.any(&Ended::Installed) {
        probed = probes(sh, &to_probe);
    }
    let plan = plan::plan(&wanted, &probed, &root, &records(), &versions, optional_too);

    let components: Vec<Component> = Component::ALL
        .into_iter()
        .filter(|c| wanted.iter().any(|t| t.component() == Some(*c)))
        .collect();
    let client = HttpClient::new(retries, ProgressStyle::for_stderr(false));
    let mut lock = None;
    for component in components {
        let blocked = plan.blocked.iter().find(|(b, _)| *b == component);
        if let Some((_, missing)) = blocked {
            outcome.row(
                component.name(),
                Ended::Failed,
                format!("needs {}, which is not installed", missing.join(", ")),
            );
            continue;
        }
        if !plan.install.contains(&component) {
            keep_installed(&root, component, &mut outcome);
            continue;
        }
        if lock.is_none() {
            lock = Some(lock_toolchain(&root)?);
        }
        install_component(
            sh,
            &root,
            component,
            options,
            &client,
            consent,
            &mut outcome,
        )?;
    }
    layout::put_first_on_path();
    Ok(outcome)
}

/// What to probe for `wanted`: the tools themselves and the components'
/// prerequisites, which matter only for a component that is to be installed.
fn to_probe(wanted: &[&'static Tool]) -> Vec<&'static Tool> {
    let mut to_probe = wanted.to_vec();
    for tool in Component::ALL
        .iter()
        .flat_map(|c| c.prerequisites())
        .map(|p| tools::tool(p))
    {
        if !to_probe.iter().any(|t| t.program == tool.program) {
            to_probe.push(tool);
        }
    }
    to_probe
}

/// Says that `component` is installed already; a replaced trust anchor is said
/// every run, not only when it was used.
fn keep_installed(root: &Path, component: Component, outcome: &mut Outcome) {
    if let Some(anchor) = component.record(root).and_then(|r| r.trust_anchor) {
        eprintln!(
            "WARNING: the installed {} was verified against {anchor}, NOT the pinned key",
            component.name()
        );
    }
    outcome.row(component.name(), Ended::AlreadyThere, "");
}

/// Takes the toolchain directory's lock (creating it) and clears what a killed
/// install left behind.
fn lock_toolchain(root: &Path) -> anyhow::Result<fsx::DirLock> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let lock = fsx::lock_dir(root)?;
    remove_leftovers(root)?;
    Ok(lock)
}

/// Installs one component into `root` and says how it went in `outcome`; only a
/// failure to write its record is an error (the toolchain directory is broken).
fn install_component(
    sh: &Shell,
    root: &Path,
    component: Component,
    options: &InstallOptions,
    client: &HttpClient,
    consent: Consent,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let installed = match component {
        Component::Packer => packer::install_packer(sh, root, options, client)
            .with_context(|| format!("installing Packer {}", options.packer_version)),
        Component::PythonVenv => venv::install_python_venv(sh, root, options).with_context(|| {
            format!("installing ansible-core {ANSIBLE_CORE_SERIES} in a Python venv")
        }),
    };
    match installed {
        Ok(record) => {
            write_record(root, &record)?;
            eprintln!(
                "Installed {} {} into {}",
                component.name(),
                record.version,
                component.bin_dir(root).display()
            );
            outcome.row(
                component.name(),
                Ended::Installed,
                format!("{} from {}", record.version, record.source),
            );
            outcome.installed.push(record);
        }
        Err(err) => match err.chain().find_map(|e| e.downcast_ref::<Unreachable>()) {
            Some(unreachable) if component == Component::Packer => system_packer(
                tools::detect_package_manager(),
                unreachable,
                consent,
                outcome,
            ),
            _ => {
                eprintln!("error: {err:#}");
                outcome.row(component.name(), Ended::Failed, format!("{err:#}"));
            }
        },
    }
    Ok(())
}

/// Runs the package manager for `tools`, and says how it went in `outcome`.
fn install_system_packages(
    manager: Option<PackageManager>,
    tools: &[&'static Tool],
    consent: Consent,
    outcome: &mut Outcome,
) {
    if tools.is_empty() {
        outcome.row(SYSTEM_PACKAGES, Ended::AlreadyThere, "");
        return;
    }
    let names: Vec<&str> = tools.iter().map(|t| t.program).collect();
    let Some(manager) = manager else {
        outcome.row(
            SYSTEM_PACKAGES,
            Ended::Failed,
            plan::package_manager_line(None, &names),
        );
        return;
    };
    let unpackaged: Vec<&str> = tools
        .iter()
        .filter(|t| t.package(manager).is_none())
        .map(|t| t.program)
        .collect();
    let steps = system::steps(manager, tools, &system::host_facts(manager));
    let (result, mut detail) = match system::run(manager, &steps, &names.join(", "), consent) {
        Ok(Ran::Done) => (Ended::Installed, format!("for {}", names.join(", "))),
        Ok(Ran::NotAsked) => (
            Ended::NotRun,
            format!(
                "needed for {}: run the commands above, or pass --yes",
                names.join(", ")
            ),
        ),
        Ok(Ran::Declined) => (Ended::NotRun, "declined".to_owned()),
        Err(err) => (Ended::Failed, format!("{err:#}")),
    };
    if !unpackaged.is_empty() {
        detail += &format!("; install {} by hand", unpackaged.join(", "));
    }
    outcome.row(SYSTEM_PACKAGES, result, detail);
}

/// HashiCorp's release server cannot be reached: the system's Packer, when its
/// package manager offers one that runs the JSON templates.
fn system_packer(
    manager: Option<PackageManager>,
    unreachable: &Unreachable,
    consent: Consent,
    outcome: &mut Outcome,
) {
    let name = Component::Packer.name();
    let offered = manager.and_then(|m| Some((m, system::offered_version(m, "packer")?)));
    let Some((manager, version)) = offered.filter(|(_, v)| packer::runs_the_templates(*v)) else {
        let why = match offered {
            Some((_, v)) => format!(
                "the system's Packer {v} cannot run the templates without plugins from the network"
            ),
            None => "the system's package manager offers no Packer".to_owned(),
        };
        outcome.row(name, Ended::Failed, format!("{unreachable}; {why}"));
        return;
    };
    eprintln!(
        "{} cannot be reached ({}); falling back to the system's Packer {version}, which has the qemu builder, ansible provisioner and vagrant post-processor built in.",
        unreachable.url, unreachable.reason
    );
    let steps = system::steps(
        manager,
        &[tools::tool("packer")],
        &system::host_facts(manager),
    );
    let (result, detail) = match system::run(manager, &steps, "packer", consent) {
        Ok(Ran::Done) => (
            Ended::Installed,
            format!("system package {version} (HashiCorp unreachable)"),
        ),
        Ok(Ran::NotAsked) => (
            Ended::NotRun,
            format!("HashiCorp unreachable; the system's Packer {version}: run the commands above, or pass --yes"),
        ),
        Ok(Ran::Declined) => (Ended::NotRun, "declined".to_owned()),
        Err(err) => (Ended::Failed, format!("{err:#}")),
    };
    outcome.row(name, result, detail);
}

/// For `validate` and `build-flatcar`: installs what `purpose` needs, asking on a
/// terminal before running the package manager (without one, it shows the commands). A component that failed is an
/// error; tools still missing are left to the caller's own report.
pub fn install_missing(
    sh: &Shell,
    purpose: Purpose,
    options: &InstallOptions,
    retries: u32,
) -> anyhow::Result<()> {
    // The common case costs no probe (a cached `validate` takes milliseconds): every
    // required tool is found, and a project-local one is the version asked for. A
    // tool that is found but too old is left to the caller's report.
    let root = layout::dir();
    let versions = Wanted {
        packer_version: &options.packer_version,
        ansible_core_series: ANSIBLE_CORE_SERIES,
    };
    let all_found = TOOLS
        .iter()
        .filter(|t| purpose.wants(t) && !t.optional)
        .all(
            |tool| match (tools::find_program(tool.program), tool.component()) {
                (None, _) => false,
                (Some(path), Some(component)) if path.starts_with(&root) => component
                    .record(&root)
                    .is_some_and(|r| versions.accepts(&r)),
                (Some(_), _) => true,
            },
        );
    if all_found {
        return Ok(());
    }
    let outcome = run(sh, Some(purpose), options, retries, Consent::Ask)?;
    let failed: Vec<String> = outcome
        .rows
        .iter()
        .filter(|r| r.result == Ended::Failed && r.component != SYSTEM_PACKAGES)
        .map(|r| format!("{}: {}", r.component, r.detail))
        .collect();
    if !failed.is_empty() {
        anyhow::bail!(
            "setting up the project-local tools failed (--no-install skips this step):\n  {}",
            failed.join("\n  ")
        );
    }
    Ok(())
}
/// Removes the work directories of installs that were interrupted.
fn remove_leftovers(root: &Path) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", root.display()))?;
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            eprintln!(
                "Removing {}, left by an interrupted install",
                entry.path().display()
            );
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Makes the component's record the last thing an install writes.
fn write_record(root: &Path, record: &Record) -> anyhow::Result<()> {
    let path = record.component.record_path(root);
    let mut json = serde_json::to_vec_pretty(record).context("encoding the install record")?;
    json.push(b'\n');
    fsx::write_atomically(&path, &json)
}

/// Forgets a component before its files change, so that an install killed half-way
/// leaves a component without a record, which nothing uses.
pub(crate) fn forget(root: &Path, component: Component) -> anyhow::Result<()> {
    fsx::remove_if_present(&component.record_path(root))
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_versions_are_three_numbers() {
        assert_eq!(parse_release_version("1.11.2").unwrap(), "1.11.2");
        assert!(parse_release_version("1.11").is_err());
        assert!(parse_release_version("v1.11.2").is_err());
        assert!(parse_release_version("1.11.2/../x").is_err());
    }
}
