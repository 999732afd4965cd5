//! Deciding what to install: which components of the project-local toolchain are
//! missing or another version, and which tools only the system's package manager
//! provides. Pure: it reads probes and records, and does nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::toolchain::layout::{Component, Record};
use crate::toolchain::tools::{self, PackageManager, Probe, Tool, TOOLS};

impl Component {
    /// The tools installing this component needs first.
    pub fn prerequisites(self) -> &'static [&'static str] {
        match self {
            Component::Packer => &["unzip", "gpg", "gpgv"],
            Component::PythonVenv => &["python3"],
        }
    }
}

/// What to do for the tools of one purpose.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Components to install, each once.
    pub install: Vec<Component>,
    /// Components that cannot be installed because these tools are missing.
    pub blocked: Vec<(Component, Vec<&'static str>)>,
    /// Tools only the system's package manager provides (some are prerequisites of
    /// a blocked component), in the order of `TOOLS`.
    pub from_package_manager: Vec<&'static str>,
}

/// The requested versions an installed component must match to be kept.
pub struct Wanted<'a> {
    pub packer_version: &'a str,
    pub ansible_core_series: &'a str,
}

impl Wanted<'_> {
    /// Whether the installed component of `record` is the version asked for.
    pub fn accepts(&self, record: &Record) -> bool {
        match record.component {
            Component::Packer => record.version == self.packer_version,
            Component::PythonVenv => record
                .version
                .starts_with(&format!("{}.", self.ansible_core_series)),
        }
    }
}

/// Decides what to install, given the tools wanted, how they probed (wanted tools
/// and every component's prerequisites), the toolchain directory and the records
/// of what is installed there. A usable tool from PATH is kept; a project-local one
/// is replaced when its version is not the one asked for. Optional tools that are
/// missing go to the package manager only when `optional_too` (the test suite).
pub fn plan(
    wanted: &[&'static Tool],
    probes: &BTreeMap<&str, Probe>,
    toolchain_dir: &Path,
    records: &BTreeMap<Component, Record>,
    versions: &Wanted<'_>,
    optional_too: bool,
) -> Plan {
    let mut components = BTreeSet::new();
    let mut from_package_manager = BTreeSet::new();
    for tool in wanted {
        let Some(probe) = probes.get(tool.program) else {
            continue;
        };
        match tool.component() {
            Some(component) => {
                let local = probe
                    .path
                    .as_ref()
                    .is_some_and(|p| p.starts_with(toolchain_dir));
                let outdated = local
                    && records
                        .get(&component)
                        .is_some_and(|r| !versions.accepts(r));
                if !probe.usable() || outdated {
                    components.insert(component);
                }
            }
            None if !probe.usable() && (optional_too || !tool.optional) => {
                from_package_manager.insert(tool.program);
            }
            None => {}
        }
    }
    let mut plan = Plan::default();
    for component in components {
        let missing: Vec<&'static str> = component
            .prerequisites()
            .iter()
            .copied()
            .filter(|p| !probes.get(p).is_some_and(Probe::usable))
            .collect();
        if missing.is_empty() {
            plan.install.push(component);
        } else {
            from_package_manager.extend(missing.iter().copied());
            plan.blocked.push((component, missing));
        }
    }
    plan.from_package_manager = TOOLS
        .iter()
        .map(|t| t.program)
        .filter(|p| from_package_manager.contains(p))
        .collect();
    plan
}

/// The one line that installs `programs` with the package manager, or a sentence
/// naming them when this system's package manager is unknown.
pub fn package_manager_line(manager: Option<PackageManager>, programs: &[&'static str]) -> String {
    let tools: Vec<&Tool> = programs.iter().map(|p| tools::tool(p)).collect();
    let unpackaged: Vec<&str> = tools
        .iter()
        .filter(|t| manager.and_then(|m| t.package(m)).is_none())
        .map(|t| t.program)
        .collect();
    let command = manager.and_then(|m| tools::package_command(m, &tools));
    match (command, unpackaged.is_empty()) {
        (Some(command), true) => command,
        (Some(command), false) => {
            format!("{command}; and install {} by hand", unpackaged.join(", "))
        }
        (None, _) => format!(
            "install {} with your system's package manager",
            unpackaged.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toolchain::tools::{Purpose, Status};
    use std::path::PathBuf;

    fn probe(program: &'static str, status: Status, path: Option<&str>) -> (&'static str, Probe) {
        (
            program,
            Probe {
                tool: program,
                path: path.map(PathBuf::from),
                version: None,
                minimum: None,
                optional: tools::tool(program).optional,
                status,
                hint: None,
            },
        )
    }

    fn record(component: Component, version: &str) -> Record {
        Record {
            component,
            version: version.into(),
            source: String::new(),
            sha256: None,
            signed_by: None,
            trust_anchor: None,
            requirements: Vec::new(),
            installed_at: 0,
        }
    }

    const WANTED: Wanted<'static> = Wanted {
        packer_version: "1.11.2",
        ansible_core_series: "2.18",
    };

    fn validate_tools() -> Vec<&'static Tool> {
        TOOLS
            .iter()
            .filter(|t| t.purposes.contains(&Purpose::Validate))
            .collect()
    }

    fn ready() -> BTreeMap<&'static str, Probe> {
        TOOLS
            .iter()
            .map(|t| probe(t.program, Status::Ok, Some("/usr/bin/x")))
            .collect()
    }

    #[test]
    fn nothing_to_do_when_every_tool_is_usable() {
        let plan = plan(
            &validate_tools(),
            &ready(),
            Path::new("/r/.local"),
            &BTreeMap::new(),
            &WANTED,
            false,
        );
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn missing_installable_tools_become_components_and_the_rest_one_package_list() {
        let mut probes = ready();
        probes.extend([
            probe("packer", Status::Missing, None),
            probe(
                "ansible-playbook",
                Status::TooOld,
                Some("/usr/bin/ansible-playbook"),
            ),
            probe("ignition-validate", Status::Missing, None),
        ]);
        let all: Vec<&Tool> = TOOLS.iter().collect();
        let plan = plan(
            &all,
            &probes,
            Path::new("/r/.local"),
            &BTreeMap::new(),
            &WANTED,
            false,
        );
        assert_eq!(
            plan.install,
            [Component::Packer, Component::PythonVenv],
            "each component once, although three tools come from the venv"
        );
        assert_eq!(plan.from_package_manager, ["ignition-validate"]);
        assert!(plan.blocked.is_empty());
    }

    #[test]
    fn a_missing_prerequisite_blocks_its_component_and_joins_the_package_list() {
        let mut probes = ready();
        probes.extend([
            probe("packer", Status::Missing, None),
            probe("unzip", Status::Missing, None),
            probe("shellcheck", Status::Missing, None),
        ]);
        let all: Vec<&Tool> = TOOLS.iter().collect();
        let plan = plan(
            &all,
            &probes,
            Path::new("/r/.local"),
            &BTreeMap::new(),
            &WANTED,
            false,
        );
        assert!(plan.install.is_empty());
        assert_eq!(plan.blocked, [(Component::Packer, vec!["unzip"])]);
        assert_eq!(plan.from_package_manager, ["shellcheck", "unzip"]);
    }

    #[test]
    fn the_test_suite_wants_the_optional_tools_too() {
        let mut probes = ready();
        probes.extend([probe("bzip2", Status::Missing, None)]);
        let all: Vec<&Tool> = TOOLS.iter().collect();
        let root = Path::new("/r/.local");
        let for_test = plan(&all, &probes, root, &BTreeMap::new(), &WANTED, true);
        assert_eq!(for_test.from_package_manager, ["bzip2"]);
        let otherwise = plan(&all, &probes, root, &BTreeMap::new(), &WANTED, false);
        assert!(otherwise.from_package_manager.is_empty(), "{otherwise:?}");
    }

    #[test]
    fn a_project_local_install_of_another_version_is_replaced_a_path_one_is_kept() {
        let mut probes = ready();
        probes.extend([probe("packer", Status::Ok, Some("/r/.local/bin/packer"))]);
        let records = BTreeMap::from([
            (Component::Packer, record(Component::Packer, "1.10.0")),
            (
                Component::PythonVenv,
                record(Component::PythonVenv, "2.18.3"),
            ),
        ]);
        let tools = validate_tools();
        let local = plan(
            &tools,
            &probes,
            Path::new("/r/.local"),
            &records,
            &WANTED,
            false,
        );
        assert_eq!(local.install, [Component::Packer]);

        probes.extend([probe("packer", Status::Ok, Some("/usr/bin/packer"))]);
        let on_path = plan(
            &tools,
            &probes,
            Path::new("/r/.local"),
            &records,
            &WANTED,
            false,
        );
        assert!(on_path.install.is_empty(), "{on_path:?}");
    }

    #[test]
    fn one_package_manager_line_for_everything_missing() {
        assert_eq!(
            package_manager_line(
                Some(PackageManager::Apt),
                &["ignition-validate", "shellcheck", "vagrant", "virsh"]
            ),
            "sudo apt-get install ignition shellcheck vagrant vagrant-libvirt libvirt-clients libvirt-daemon-system"
        );
        assert_eq!(
            package_manager_line(Some(PackageManager::Dnf), &["gpg", "gpgv"]),
            "sudo dnf install gnupg2",
            "a package that provides two tools is named once"
        );
        assert_eq!(
            package_manager_line(
                Some(PackageManager::Pacman),
                &["shellcheck", "ignition-validate"]
            ),
            "sudo pacman -S shellcheck; and install ignition-validate by hand"
        );
        assert_eq!(
            package_manager_line(None, &["shellcheck"]),
            "install shellcheck with your system's package manager"
        );
    }
}
