//! Installing what only the system's package manager provides: the steps (one
//! install command per package source, and on apt the sources and index they need)
//! computed from the tool table and a few facts about the host, shown to the user,
//! and run as root after consent (through sudo when not root).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::fsx;
use crate::toolchain::tools::{self, AptSuite, PackageManager, Tool, Version};

/// Whether the user has agreed to run the package manager as root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consent {
    /// `--yes`: run without asking (CI).
    Given,
    /// Ask on a terminal; without one, show the steps and run nothing.
    Ask,
}

/// What the host says that changes the steps: its Debian codename, the installed
/// versions of the packages the table's quirks look at, and which apt suites its
/// sources already name.
#[derive(Debug, Default)]
pub struct HostFacts {
    pub codename: Option<String>,
    pub installed: BTreeMap<&'static str, String>,
    pub configured_suites: Vec<String>,
}

/// One step of an install, run as root.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Write `line` into `file`: an apt source for a suite the host does not name yet.
    AddSource {
        file: PathBuf,
        line: String,
    },
    Run(Vec<String>),
}

impl Step {
    /// The step as a person would type it.
    pub fn shown(&self, manager: PackageManager) -> String {
        let sudo = if manager == PackageManager::Brew {
            ""
        } else {
            "sudo "
        };
        match self {
            Step::AddSource { file, line } => {
                format!("echo '{line}' | {sudo}tee {}", file.display())
            }
            Step::Run(argv) => format!("{sudo}{}", argv.join(" ")),
        }
    }
}

/// The apt suite `tool`'s packages must come from on this host, if not the default.
fn apt_suite(tool: &Tool, facts: &HostFacts) -> Option<&'static AptSuite> {
    let quirk = tool.apt_suite()?;
    let applies = facts.codename.as_deref() == Some(quirk.codename)
        && facts
            .installed
            .get(quirk.package)
            .is_some_and(|v| v.contains(quirk.version_mark));
    applies.then_some(quirk)
}

/// The steps that install `tools` with `manager`: each package once, grouped by the
/// suite it must come from.
pub fn steps(manager: PackageManager, tools: &[&Tool], facts: &HostFacts) -> Vec<Step> {
    let mut groups: Vec<(Option<&'static AptSuite>, Vec<&'static str>)> = Vec::new();
    for tool in tools {
        let Some(packages) = tool.package(manager) else {
            continue;
        };
        let suite = (manager == PackageManager::Apt)
            .then(|| apt_suite(tool, facts))
            .flatten();
        let at = match groups.iter().position(|(s, _)| *s == suite) {
            Some(at) => at,
            None => {
                groups.push((suite, Vec::new()));
                groups.len() - 1
            }
        };
        for package in packages.split_whitespace() {
            if !groups.iter().any(|(_, p)| p.contains(&package)) {
                groups[at].1.push(package);
            }
        }
    }
    groups.retain(|(_, packages)| !packages.is_empty());
    // The default suite first: its packages do not depend on a backport.
    groups.sort_by_key(|(suite, _)| suite.is_some());
    if groups.is_empty() {
        return Vec::new();
    }
    let argv = |words: &[&str], packages: &[&str]| -> Step {
        Step::Run(
            words
                .iter()
                .chain(packages)
                .map(|w| (*w).to_owned())
                .collect(),
        )
    };
    match manager {
        PackageManager::Apt => {
            let mut steps = Vec::new();
            for (suite, _) in &groups {
                if let Some(suite) = suite {
                    if !facts.configured_suites.iter().any(|s| s == suite.suite) {
                        steps.push(Step::AddSource {
                            file: PathBuf::from(format!(
                                "/etc/apt/sources.list.d/{}.list",
                                suite.suite
                            )),
                            line: suite.source.to_owned(),
                        });
                    }
                }
            }
            // A fresh machine has no package lists at all.
            steps.push(argv(&["apt-get", "update"], &[]));
            for (suite, packages) in &groups {
                let mut words = vec!["apt-get", "install", "-y", "--no-install-recommends"];
                if let Some(suite) = suite {
                    words.extend(["-t", suite.suite]);
                }
                steps.push(argv(&words, packages));
            }
            steps
        }
        PackageManager::Dnf => groups
            .iter()
            .map(|(_, p)| argv(&["dnf", "install", "-y"], p))
            .collect(),
        PackageManager::Pacman => groups
            .iter()
            .map(|(_, p)| argv(&["pacman", "-S", "--needed", "--noconfirm"], p))
            .collect(),
        PackageManager::Brew => groups
            .iter()
            .map(|(_, p)| argv(&["brew", "install"], p))
            .collect(),
    }
}

/// Reads the facts `steps` needs from this host (only apt has quirks).
pub fn host_facts(manager: PackageManager) -> HostFacts {
    let mut facts = HostFacts::default();
    if manager != PackageManager::Apt {
        return facts;
    }
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    facts.codename = os_release.lines().find_map(|l| {
        l.strip_prefix("VERSION_CODENAME=")
            .map(|v| v.trim_matches('"').to_owned())
    });
    for quirk in tools::TOOLS.iter().filter_map(|t| t.apt_suite()) {
        let version = duct::cmd!("dpkg-query", "-W", "-f", "${Version}", quirk.package)
            .stderr_null()
            .unchecked()
            .read()
            .unwrap_or_default();
        if !version.is_empty() {
            facts.installed.insert(quirk.package, version);
        }
    }
    facts.configured_suites = configured_apt_suites();
    facts
}

/// Every word of the host's apt sources: suites appear as words in both formats
/// (`deb URL SUITE COMPONENTS`, and `Suites: A B` in deb822 files).
fn configured_apt_suites() -> Vec<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources")),
        );
    }
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .flat_map(|l| l.split_whitespace().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The version of `package` the package manager would install, if it offers one
/// (apt only: `apt-cache policy`'s candidate).
pub fn offered_version(manager: PackageManager, package: &str) -> Option<Version> {
    if manager != PackageManager::Apt {
        return None;
    }
    let policy = duct::cmd!("apt-cache", "policy", package)
        .stderr_null()
        .unchecked()
        .read()
        .ok()?;
    candidate_version(&policy)
}

/// `Candidate: 1.6.6+ds2-1+b1` gives 1.6.6; `Candidate: (none)` or nothing, `None`.
fn candidate_version(policy: &str) -> Option<Version> {
    let candidate = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))?
        .trim();
    // An epoch (`1:10.0.2`) is not part of the upstream version.
    let upstream = candidate.split_once(':').map_or(candidate, |(_, v)| v);
    tools::parse_version(upstream)
}

/// What became of a run of the package manager.
#[derive(Debug)]
pub enum Ran {
    Done,
    /// No consent: the steps were shown, nothing ran.
    NotAsked,
    Declined,
}

/// Shows the steps, asks for consent as `consent` says, and runs them as root.
/// `what` names the tools the packages are for.
pub fn run(
    manager: PackageManager,
    steps: &[Step],
    what: &str,
    consent: Consent,
) -> anyhow::Result<Ran> {
    let shown: Vec<String> = steps.iter().map(|s| s.shown(manager)).collect();
    let lines = shown
        .iter()
        .map(|s| format!("  {s}"))
        .collect::<Vec<_>>()
        .join("\n");
    match consent {
        Consent::Given => eprintln!("Installing system packages for {what}:\n{lines}"),
        Consent::Ask if std::io::stdin().is_terminal() => {
            let question =
                format!("Install system packages for {what} with these commands?\n{lines}\n");
            if !crate::prompt::yes_or_no(&question)? {
                return Ok(Ran::Declined);
            }
        }
        Consent::Ask => {
            eprintln!(
                "Only the system's package manager provides {what}; run (or pass --yes):\n{lines}"
            );
            return Ok(Ran::NotAsked);
        }
    }
    let sudo = as_root(manager)?;
    for (step, shown) in steps.iter().zip(&shown) {
        match step {
            Step::AddSource { file, line } => add_source(sudo.as_deref(), file, line)?,
            Step::Run(argv) => {
                let (program, args) = match &sudo {
                    Some(sudo) => (sudo.as_str(), &argv[..]),
                    None => (argv[0].as_str(), &argv[1..]),
                };
                let status = duct::cmd(program, args)
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .stdout_to_stderr()
                    .unchecked()
                    .run()
                    .with_context(|| format!("running `{shown}`"))?
                    .status;
                if !status.success() {
                    bail!("`{shown}` failed ({status})");
                }
            }
        }
    }
    Ok(Ran::Done)
}

/// `None`: already root (or brew, which refuses root); `Some("sudo")` otherwise.
fn as_root(manager: PackageManager) -> anyhow::Result<Option<String>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root || manager == PackageManager::Brew {
        return Ok(None);
    }
    match tools::find_on_path("sudo") {
        Some(_) => Ok(Some("sudo".to_owned())),
        None => bail!("installing system packages needs root, and sudo is not installed: run the commands above as root"),
    }
}

fn add_source(sudo: Option<&str>, file: &std::path::Path, line: &str) -> anyhow::Result<()> {
    let text = format!("{line}\n");
    match sudo {
        None => fsx::write_atomically(file, text.as_bytes()),
        Some(sudo) => {
            duct::cmd(sudo, [std::ffi::OsStr::new("tee"), file.as_os_str()])
                .stdin_bytes(text)
                .stdout_null()
                .run()
                .with_context(|| format!("writing {} with {sudo} tee", file.display()))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(programs: &[&str]) -> Vec<&'static Tool> {
        programs.iter().map(|p| tools::tool(p)).collect()
    }

    fn shown(manager: PackageManager, steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| s.shown(manager)).collect()
    }

    fn bookworm(qemu_utils: Option<&str>, suites: &[&str]) -> HostFacts {
        HostFacts {
            codename: Some("bookworm".into()),
            installed: qemu_utils
                .map(|v| ("qemu-utils", v.to_owned()))
                .into_iter()
                .collect(),
            configured_suites: suites.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn a_fresh_debian_gets_an_index_update_and_one_install() {
        let planned = steps(
            PackageManager::Apt,
            &tools(&["shellcheck", "qemu-system-x86_64", "qemu-img", "vagrant"]),
            &bookworm(None, &["bookworm"]),
        );
        assert_eq!(
            shown(PackageManager::Apt, &planned),
            [
                "sudo apt-get update",
                "sudo apt-get install -y --no-install-recommends shellcheck qemu-system-x86 qemu-utils vagrant vagrant-libvirt",
            ]
        );
    }

    #[test]
    fn qemu_follows_a_qemu_utils_from_bookworm_backports() {
        let facts = bookworm(Some("1:10.0.2+ds-2+deb13u1~bpo12+1"), &["bookworm"]);
        let planned = steps(
            PackageManager::Apt,
            &tools(&["qemu-system-x86_64", "shellcheck"]),
            &facts,
        );
        assert_eq!(
            shown(PackageManager::Apt, &planned),
            [
                "echo 'deb http://deb.debian.org/debian bookworm-backports main' | sudo tee /etc/apt/sources.list.d/bookworm-backports.list",
                "sudo apt-get update",
                "sudo apt-get install -y --no-install-recommends shellcheck",
                "sudo apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-x86",
            ]
        );
        let configured = bookworm(
            Some("1:10.0.2+ds-2+deb13u1~bpo12+1"),
            &["bookworm", "bookworm-backports"],
        );
        let again = steps(
            PackageManager::Apt,
            &tools(&["qemu-system-x86_64"]),
            &configured,
        );
        assert!(
            !matches!(again[0], Step::AddSource { .. }),
            "a configured suite is not added twice: {again:?}"
        );
    }

    #[test]
    fn the_backports_quirk_is_for_bookworm_only() {
        let trixie = HostFacts {
            codename: Some("trixie".into()),
            ..bookworm(Some("1:10.0.2+ds-2~bpo12+1"), &[])
        };
        let planned = steps(
            PackageManager::Apt,
            &tools(&["qemu-system-x86_64"]),
            &trixie,
        );
        assert_eq!(
            shown(PackageManager::Apt, &planned)[1],
            "sudo apt-get install -y --no-install-recommends qemu-system-x86"
        );
    }

    #[test]
    fn other_package_managers_get_one_command_each_package_once() {
        let facts = HostFacts::default();
        let planned = steps(
            PackageManager::Dnf,
            &tools(&["gpg", "gpgv", "curl"]),
            &facts,
        );
        assert_eq!(
            shown(PackageManager::Dnf, &planned),
            ["sudo dnf install -y gnupg2 curl"]
        );
        let unpackaged = steps(
            PackageManager::Pacman,
            &tools(&["ignition-validate"]),
            &facts,
        );
        assert!(unpackaged.is_empty(), "{unpackaged:?}");
    }

    #[test]
    fn the_candidate_version_is_read_from_apt_cache_policy() {
        let policy =
            "packer:\n  Installed: (none)\n  Candidate: 1.6.6+ds2-1+b1\n  Version table:\n";
        assert_eq!(
            candidate_version(policy).map(|v| v.to_string()).as_deref(),
            Some("1.6.6")
        );
        let epoch = "qemu-utils:\n  Candidate: 1:10.0.2+ds-2+deb13u1~bpo12+1\n";
        assert_eq!(
            candidate_version(epoch).map(|v| v.to_string()).as_deref(),
            Some("10.0.2")
        );
        assert_eq!(
            candidate_version("packer:\n  Installed: (none)\n  Candidate: (none)\n"),
            None
        );
        assert_eq!(candidate_version(""), None);
    }
}
