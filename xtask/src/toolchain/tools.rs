//! The external programs the project drives: where each one is found, which version
//! it is, whether that is new enough, and the one command that installs it on this
//! platform. Every check that needs a tool asks here first, so a missing tool is
//! named with its install hint and never mistaken for a passing check.

use std::path::{Path, PathBuf};

use serde::Serialize;
use xshell::{cmd, Shell};

use crate::toolchain::layout::{self, Component};
use crate::{ansi, fsx};

/// What the user is about to do; each purpose needs its own set of tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Checking the image definitions (packer, ansible, ignition-validate).
    Validate,
    /// Linting shell, YAML and Ansible.
    Lint,
    /// Building an image with packer and qemu.
    Build,
    /// Baking Kubernetes into platform images (squashfs, debugfs, btrfs restore, qemu-img).
    Bake,
    /// Booting a built box with vagrant and libvirt.
    Verify,
    /// Rehearsing the pipeline on a Flatcar-shaped guest built with debootstrap.
    Rehearse,
    /// Running the whole test suite: every tool, optional ones included.
    Test,
}

impl Purpose {
    /// Whether `tool` is needed for this purpose.
    pub fn wants(self, tool: &Tool) -> bool {
        self == Purpose::Test || tool.purposes.contains(&self)
    }
}

/// A `MAJOR.MINOR.PATCH` version; a missing patch reads as 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The package that provides a tool, per package manager (`None`: not packaged there).
/// Several packages are separated by spaces.
pub struct Packages {
    apt: Option<&'static str>,
    dnf: Option<&'static str>,
    pacman: Option<&'static str>,
    brew: Option<&'static str>,
    /// Where apt must take them from on some hosts, instead of the default suite.
    apt_suite: Option<&'static AptSuite>,
}

/// An apt quirk: on the Debian release `codename`, when the installed `package` is a
/// build from `suite` (its version carries `version_mark`), the tool's packages must
/// come from `suite` too, or apt refuses the mix of versions. `source` is the
/// sources.list line that enables the suite.
#[derive(Debug, PartialEq, Eq)]
pub struct AptSuite {
    pub codename: &'static str,
    pub package: &'static str,
    pub version_mark: &'static str,
    pub suite: &'static str,
    pub source: &'static str,
}

/// Debian 12 machines that come with qemu-utils from bookworm-backports (10.x) and no
/// backports source configured: qemu-system-x86 from bookworm (7.2) cannot be
/// installed next to it.
pub const BOOKWORM_BACKPORTS_QEMU: AptSuite = AptSuite {
    codename: "bookworm",
    package: "qemu-utils",
    version_mark: "~bpo12",
    suite: "bookworm-backports",
    source: "deb http://deb.debian.org/debian bookworm-backports main",
};

/// One external tool and what the project requires of it.
pub struct Tool {
    /// The executable's name, looked up in the project-local toolchain, then on PATH.
    pub program: &'static str,
    /// The arguments that make it print its version; `None`: it has no such flag.
    version_args: Option<&'static [&'static str]>,
    pub minimum: Option<Version>,
    /// Optional tools are used when present; their absence fails nothing.
    pub optional: bool,
    pub purposes: &'static [Purpose],
    packages: Packages,
}

const fn v(major: u64, minor: u64, patch: u64) -> Option<Version> {
    Some(Version {
        major,
        minor,
        patch,
    })
}

use Purpose::{Bake, Build, Lint, Rehearse, Validate, Verify};

/// Every external tool the project uses.
pub const TOOLS: &[Tool] = &[
    Tool {
        program: "packer",
        version_args: Some(&["version"]),
        minimum: v(1, 5, 0),
        optional: false,
        purposes: &[Validate, Build],
        packages: Packages {
            apt: Some("packer"),
            dnf: Some("packer"),
            pacman: Some("packer"),
            brew: Some("hashicorp/tap/packer"),
            apt_suite: None,
        },
    },
    Tool {
        program: "ansible-playbook",
        version_args: Some(&["--version"]),
        minimum: v(2, 10, 0),
        optional: false,
        purposes: &[Validate, Build],
        packages: Packages {
            apt: Some("ansible-core"),
            dnf: Some("ansible-core"),
            pacman: Some("ansible-core"),
            brew: Some("ansible"),
            apt_suite: None,
        },
    },
    Tool {
        program: "ignition-validate",
        version_args: Some(&["--version"]),
        minimum: None,
        optional: false,
        purposes: &[Validate],
        packages: Packages {
            apt: Some("ignition"),
            dnf: Some("ignition-validate"),
            pacman: None,
            brew: None,
            apt_suite: None,
        },
    },
    Tool {
        program: "ssh-keygen",
        version_args: None,
        minimum: None,
        optional: false,
        purposes: &[Validate, Build],
        packages: Packages {
            apt: Some("openssh-client"),
            dnf: Some("openssh-clients"),
            pacman: Some("openssh"),
            brew: Some("openssh"),
            apt_suite: None,
        },
    },
    Tool {
        program: "shellcheck",
        version_args: Some(&["--version"]),
        minimum: v(0, 7, 0),
        optional: false,
        purposes: &[Lint],
        packages: Packages {
            apt: Some("shellcheck"),
            dnf: Some("ShellCheck"),
            pacman: Some("shellcheck"),
            brew: Some("shellcheck"),
            apt_suite: None,
        },
    },
    Tool {
        program: "yamllint",
        version_args: Some(&["--version"]),
        minimum: v(1, 20, 0),
        optional: false,
        purposes: &[Lint],
        packages: Packages {
            apt: Some("yamllint"),
            dnf: Some("yamllint"),
            pacman: Some("yamllint"),
            brew: Some("yamllint"),
            apt_suite: None,
        },
    },
    Tool {
        program: "ansible-lint",
        version_args: Some(&["--version"]),
        minimum: v(6, 0, 0),
        optional: true,
        purposes: &[Lint],
        packages: Packages {
            apt: Some("ansible-lint"),
            dnf: Some("ansible-lint"),
            pacman: Some("ansible-lint"),
            brew: Some("ansible-lint"),
            apt_suite: None,
        },
    },
    Tool {
        program: "qemu-system-x86_64",
        version_args: Some(&["--version"]),
        minimum: v(5, 0, 0),
        optional: false,
        purposes: &[Build],
        packages: Packages {
            apt: Some("qemu-system-x86"),
            dnf: Some("qemu-system-x86"),
            pacman: Some("qemu-system-x86"),
            brew: Some("qemu"),
            apt_suite: Some(&BOOKWORM_BACKPORTS_QEMU),
        },
    },
    Tool {
        program: "qemu-img",
        version_args: Some(&["--version"]),
        minimum: v(5, 0, 0),
        optional: false,
        purposes: &[Build, Bake],
        packages: Packages {
            apt: Some("qemu-utils"),
            dnf: Some("qemu-img"),
            pacman: Some("qemu-img"),
            brew: Some("qemu"),
            apt_suite: Some(&BOOKWORM_BACKPORTS_QEMU),
        },
    },
    // `bake`: the Kubernetes sysext is squashfs; ROOT is edited with debugfs and
    // checked with e2fsck; os-release is read from a btrfs USR partition with
    // `btrfs restore`. None of them needs root or a mount.
    Tool {
        program: "mksquashfs",
        version_args: Some(&["-version"]),
        minimum: v(4, 4, 0),
        optional: false,
        purposes: &[Bake, Rehearse],
        packages: Packages {
            apt: Some("squashfs-tools"),
            dnf: Some("squashfs-tools"),
            pacman: Some("squashfs-tools"),
            brew: None,
            apt_suite: None,
        },
    },
    Tool {
        program: "debugfs",
        version_args: Some(&["-V"]),
        minimum: v(1, 43, 0),
        optional: false,
        purposes: &[Bake, Rehearse],
        packages: Packages {
            apt: Some("e2fsprogs"),
            dnf: Some("e2fsprogs"),
            pacman: Some("e2fsprogs"),
            brew: None,
            apt_suite: None,
        },
    },
    Tool {
        program: "btrfs",
        version_args: Some(&["--version"]),
        minimum: None,
        optional: false,
        purposes: &[Bake],
        packages: Packages {
            apt: Some("btrfs-progs"),
            dnf: Some("btrfs-progs"),
            pacman: Some("btrfs-progs"),
            brew: None,
            apt_suite: None,
        },
    },
    Tool {
        program: "gpg",
        version_args: Some(&["--version"]),
        minimum: v(2, 2, 0),
        optional: false,
        purposes: &[Build],
        packages: Packages {
            apt: Some("gnupg"),
            dnf: Some("gnupg2"),
            pacman: Some("gnupg"),
            brew: Some("gnupg"),
            apt_suite: None,
        },
    },
    Tool {
        program: "gpgv",
        version_args: Some(&["--version"]),
        minimum: v(2, 2, 0),
        optional: false,
        purposes: &[Build],
        packages: Packages {
            apt: Some("gpgv"),
            dnf: Some("gnupg2"),
            pacman: Some("gnupg"),
            brew: Some("gnupg"),
            apt_suite: None,
        },
    },
    Tool {
        program: "vagrant",
        version_args: Some(&["--version"]),
        minimum: v(2, 2, 0),
        optional: false,
        purposes: &[Verify],
        packages: Packages {
            apt: Some("vagrant vagrant-libvirt"),
            dnf: Some("vagrant vagrant-libvirt"),
            pacman: Some("vagrant"),
            brew: Some("hashicorp/tap/hashicorp-vagrant"),
            apt_suite: None,
        },
    },
    Tool {
        program: "virsh",
        version_args: Some(&["--version"]),
        minimum: v(6, 0, 0),
        optional: false,
        purposes: &[Verify],
        packages: Packages {
            apt: Some("libvirt-clients libvirt-daemon-system"),
            dnf: Some("libvirt-client libvirt-daemon"),
            pacman: Some("libvirt"),
            brew: Some("libvirt"),
            apt_suite: None,
        },
    },
    // What `deps --install` itself needs, and nothing else does: listed so that
    // `deps` shows them, optional so that their absence fails no other command.
    Tool {
        program: "python3",
        version_args: Some(&["--version"]),
        // ansible-core 2.18, the pinned series, needs Python >= 3.11 on the controller.
        minimum: v(3, 11, 0),
        optional: true,
        purposes: &[],
        packages: Packages {
            apt: Some("python3 python3-venv"),
            dnf: Some("python3"),
            pacman: Some("python"),
            brew: Some("python"),
            apt_suite: None,
        },
    },
    Tool {
        program: "unzip",
        version_args: Some(&["-v"]),
        minimum: None,
        optional: true,
        purposes: &[],
        packages: Packages {
            apt: Some("unzip"),
            dnf: Some("unzip"),
            pacman: Some("unzip"),
            brew: Some("unzip"),
            apt_suite: None,
        },
    },
    // Used when present: a release that ships its image compressed needs bzip2, and
    // `bench` measures curl as the download baseline.
    Tool {
        program: "bzip2",
        version_args: None,
        minimum: None,
        optional: true,
        purposes: &[Build],
        packages: Packages {
            apt: Some("bzip2"),
            dnf: Some("bzip2"),
            pacman: Some("bzip2"),
            brew: Some("bzip2"),
            apt_suite: None,
        },
    },
    Tool {
        program: "curl",
        version_args: Some(&["--version"]),
        minimum: None,
        optional: true,
        purposes: &[],
        packages: Packages {
            apt: Some("curl"),
            dnf: Some("curl"),
            pacman: Some("curl"),
            brew: Some("curl"),
            apt_suite: None,
        },
    },
    // Writing the image formats of `disk_formats` (archives with fixed owners, modes
    // and times need GNU tar's --sort and --mtime; gzip for metal's raw.gz), and
    // unpacking crictl and the CNI plugins: the bake's.
    Tool {
        program: "tar",
        version_args: Some(&["--version"]),
        minimum: v(1, 28, 0),
        optional: false,
        purposes: &[Bake],
        packages: Packages {
            apt: Some("tar"),
            dnf: Some("tar"),
            pacman: Some("tar"),
            brew: Some("gnu-tar"),
            apt_suite: None,
        },
    },
    Tool {
        program: "gzip",
        version_args: Some(&["--version"]),
        minimum: None,
        optional: false,
        purposes: &[Bake],
        packages: Packages {
            apt: Some("gzip"),
            dnf: Some("gzip"),
            pacman: Some("gzip"),
            brew: Some("gzip"),
            apt_suite: None,
        },
    },
    Tool {
        program: "skopeo",
        version_args: Some(&["--version"]),
        minimum: None,
        optional: true,
        purposes: &[],
        packages: Packages {
            apt: Some("skopeo"),
            dnf: Some("skopeo"),
            pacman: Some("skopeo"),
            brew: Some("skopeo"),
            apt_suite: None,
        },
    },
    // The rehearsal: a Flatcar-shaped guest built with debootstrap onto a GPT disk
    // without mounts (sgdisk; the ESP with mkfs.fat, mtools and syslinux's mtools
    // installer, syslinux-common has the GPT boot code; ext4 with mkfs.ext4 and
    // debugfs), config drives as ISO 9660 (genisoimage), test sysexts (mksquashfs),
    // and a libvirtd with its dnsmasq in private namespaces. Most live in sbin.
    Tool {
        program: "debootstrap",
        version_args: Some(&["--version"]),
        minimum: None,
        optional: false,
        purposes: &[Rehearse],
        packages: Packages {
            apt: Some("debootstrap"),
            dnf: Some("debootstrap"),
            pacman: Some("debootstrap"),
            brew: None,
            apt_suite: None,
        },
    },
    Tool {
        program: "syslinux",
        version_args: Some(&["--version"]),
        minimum: None,
        optional: false,
        purposes: &[Rehearse],
        packages: Packages {
            apt: Some("syslinux syslinux-common"),
            dnf: Some("syslinux"),
            pacman: Some("syslinux"),
            brew: None,
            apt_suite: None,
        },
    },
    Tool {
        program: "sgdisk",
        version_args: Some(&["--version"]),
        minimum: None,
        optional: false,
        purposes: &[Rehearse],
        packages: Packages {
            apt: Some("gdisk"),
            dnf: Some("gdisk"),
            pacman: Some("gptfdisk"),
            brew: None,
            apt_suite: None,
        },
    },
    Tool {
        program: "mkfs.fat",
        version_args: None,
        minimum: None,
        optional: false,
        purposes: &[Rehearse],
        packages: Packages {
            apt: Some("dosfstools"),
            dnf: Some("dosfstools"),
            pacman: Some("dosfstools"),
            brew: None,
            apt_suite: None,
        },
    },
    Tool {
        program: "mcopy",
        version_args: Some(&["--version"]),
        minimum: None,
        optional: false,
        purposes: &[Rehearse],
        packages: Packages {
            apt: Some("mtools"),
            dnf: Some("mtools"),
            pacman: Some("mtools"),
            brew: None,
            apt_suite: None,
        },
    },
    Tool {
        program: "genisoimage",
        version_args: Some(&["--version"]),
        minimum: None,
        optional: false,
        purposes: &[Rehearse],
        packages: Packages {
            apt: Some("genisoimage"),
            dnf: Some("genisoimage"),
            pacman: Some("cdrtools"),
            brew: None,
            apt_suite: None,
        },
    },
    Tool {
        program: "sfdisk",
        version_args: Some(&["--version"]),
        minimum: None,
        optional: false,
        purposes: &[Rehearse],
        packages: Packages {
            apt: Some("fdisk"),
            dnf: Some("util-linux"),
            pacman: Some("util-linux"),
            brew: None,
            apt_suite: None,
        },
    },
    Tool {
        program: "mkfs.ext4",
        version_args: Some(&["-V"]),
        minimum: None,
        optional: false,
        purposes: &[Rehearse],
        packages: Packages {
            apt: Some("e2fsprogs"),
            dnf: Some("e2fsprogs"),
            pacman: Some("e2fsprogs"),
            brew: None,
            apt_suite: None,
        },
    },
    Tool {
        program: "libvirtd",
        version_args: Some(&["--version"]),
        minimum: v(6, 0, 0),
        optional: false,
        purposes: &[Rehearse],
        packages: Packages {
            apt: Some("libvirt-daemon-system"),
            dnf: Some("libvirt-daemon"),
            pacman: Some("libvirt"),
            brew: None,
            apt_suite: None,
        },
    },
    Tool {
        program: "dnsmasq",
        version_args: Some(&["--version"]),
        minimum: None,
        optional: false,
        purposes: &[Rehearse],
        packages: Packages {
            apt: Some("dnsmasq-base"),
            dnf: Some("dnsmasq"),
            pacman: Some("dnsmasq"),
            brew: None,
            apt_suite: None,
        },
    },
];

/// The tool named `program` in [`TOOLS`].
pub fn tool(program: &str) -> &'static Tool {
    TOOLS
        .iter()
        .find(|t| t.program == program)
        .unwrap_or_else(|| panic!("{program} is not in tools::TOOLS"))
}

/// Where the host's packages come from, for install hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    Apt,
    Dnf,
    Pacman,
    Brew,
}

/// Reads the host's package manager from `/etc/os-release` (or macOS).
pub fn detect_package_manager() -> Option<PackageManager> {
    if cfg!(target_os = "macos") {
        return Some(PackageManager::Brew);
    }
    let os_release = std::fs::read_to_string("/etc/os-release").ok()?;
    package_manager_from_os_release(&os_release)
}

fn package_manager_from_os_release(os_release: &str) -> Option<PackageManager> {
    let mut ids = Vec::new();
    for line in os_release.lines() {
        if let Some((key, value)) = line.split_once('=') {
            if key == "ID" || key == "ID_LIKE" {
                ids.extend(
                    value
                        .trim_matches('"')
                        .split_whitespace()
                        .map(str::to_owned),
                );
            }
        }
    }
    ids.iter().find_map(|id| match id.as_str() {
        "debian" | "ubuntu" => Some(PackageManager::Apt),
        "fedora" | "rhel" | "centos" => Some(PackageManager::Dnf),
        "arch" => Some(PackageManager::Pacman),
        _ => None,
    })
}

impl PackageManager {
    /// The command that installs `packages` (space-separated names).
    pub fn install_command(self, packages: &str) -> String {
        match self {
            PackageManager::Apt => format!("sudo apt-get install {packages}"),
            PackageManager::Dnf => format!("sudo dnf install {packages}"),
            PackageManager::Pacman => format!("sudo pacman -S {packages}"),
            PackageManager::Brew => format!("brew install {packages}"),
        }
    }
}

impl Tool {
    /// The package(s) that provide this tool with `manager`.
    pub fn package(&self, manager: PackageManager) -> Option<&'static str> {
        match manager {
            PackageManager::Apt => self.packages.apt,
            PackageManager::Dnf => self.packages.dnf,
            PackageManager::Pacman => self.packages.pacman,
            PackageManager::Brew => self.packages.brew,
        }
    }

    /// The apt suite quirk of this tool's packages, if it has one.
    pub fn apt_suite(&self) -> Option<&'static AptSuite> {
        self.packages.apt_suite
    }

    /// The one command that installs this tool with `manager`.
    pub fn install_hint(&self, manager: Option<PackageManager>) -> String {
        match manager.and_then(|m| Some((m, self.package(m)?))) {
            Some((manager, package)) => manager.install_command(package),
            None => format!(
                "install {} with your system's package manager and put it on PATH",
                self.program
            ),
        }
    }

    /// The part of the project-local toolchain that provides this tool, if any:
    /// `deps --install` installs it; everything else comes from the package manager.
    pub fn component(&self) -> Option<Component> {
        Component::ALL
            .into_iter()
            .find(|c| c.programs().contains(&self.program))
    }
}

/// One command line that installs every tool of `tools` with `manager`, each
/// package once, in the order given; `None` when none of them is packaged there.
pub fn package_command(manager: PackageManager, tools: &[&Tool]) -> Option<String> {
    let mut packages: Vec<&str> = Vec::new();
    for package in tools
        .iter()
        .filter_map(|t| t.package(manager))
        .flat_map(str::split_whitespace)
    {
        if !packages.contains(&package) {
            packages.push(package);
        }
    }
    (!packages.is_empty()).then(|| manager.install_command(&packages.join(" ")))
}

/// Where `program` is: the project-local toolchain first (only a finished install
/// counts), then PATH.
pub fn find_program(program: &str) -> Option<PathBuf> {
    layout::local_program(program).or_else(|| find_on_path(program))
}

/// The first `program` on PATH, skipping the project-local toolchain.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !layout::is_project_local(dir))
        .map(|dir| dir.join(program))
        .find(|candidate| fsx::is_executable(candidate))
}

/// The first `MAJOR.MINOR[.PATCH]` in a tool's version output, after stripping
/// terminal colour codes (ansible-lint colours its version even into a pipe).
/// Works for every tool in [`TOOLS`]: `Packer v1.6.6`, `ansible-playbook [core
/// 2.14.18]`, `QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)`, `version: 0.9.0`.
pub fn parse_version(output: &str) -> Option<Version> {
    let text = ansi::strip(output);
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let boundary =
            start == 0 || !bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'v';
        if bytes[start].is_ascii_digit() && boundary {
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .map_or(text.len(), |i| start + i);
            let numbers: Vec<u64> = text[start..end]
                .split('.')
                .map_while(|n| n.parse().ok())
                .collect();
            if numbers.len() >= 2 {
                return Some(Version {
                    major: numbers[0],
                    minor: numbers[1],
                    patch: numbers.get(2).copied().unwrap_or(0),
                });
            }
            start = end.max(start + 1);
        } else {
            start += 1;
        }
    }
    None
}

/// How a tool stands on this machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Missing,
    TooOld,
    /// It ran, but its version could not be read or a part it needs is absent.
    Unusable(String),
}

/// The result of probing one tool.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    pub tool: &'static str,
    pub path: Option<PathBuf>,
    pub version: Option<Version>,
    pub minimum: Option<Version>,
    pub optional: bool,
    pub status: Status,
    /// What to run to fix a status other than `Ok`.
    pub hint: Option<String>,
}

impl Probe {
    pub fn usable(&self) -> bool {
        self.status == Status::Ok
    }
}

/// Finds `tool`, asks its version and checks the parts the project needs
/// (packer plugins on Packer >= 1.7, the vagrant-libvirt plugin).
pub fn probe(sh: &Shell, tool: &'static Tool, manager: Option<PackageManager>) -> Probe {
    let mut probe = Probe {
        tool: tool.program,
        path: find_program(tool.program),
        version: None,
        minimum: tool.minimum,
        optional: tool.optional,
        status: Status::Missing,
        hint: None,
    };
    let Some(path) = probe.path.clone() else {
        probe.hint = Some(tool.install_hint(manager));
        return probe;
    };
    probe.status = Status::Ok;
    if let Some(args) = tool.version_args {
        let output = cmd!(sh, "{path} {args...}")
            .ignore_status()
            .quiet()
            .output();
        let text = output
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default();
        probe.version = parse_version(&text);
        probe.status = match (probe.version, tool.minimum) {
            (None, _) => Status::Unusable(format!(
                "`{} {}` printed no version",
                tool.program,
                args.join(" ")
            )),
            (Some(found), Some(min)) if found < min => Status::TooOld,
            _ => Status::Ok,
        };
    }
    if probe.status == Status::Ok {
        if let Some(missing) = missing_parts(sh, tool, &path, probe.version, manager) {
            probe.status = Status::Unusable(missing.0);
            probe.hint = Some(missing.1);
            return probe;
        }
    }
    if probe.status != Status::Ok {
        probe.hint = Some(tool.install_hint(manager));
    }
    probe
}

/// Packer >= 1.7 runs JSON templates only with its plugins installed, and a JSON
/// template cannot declare them; vagrant needs the libvirt provider plugin; python3
/// needs its venv module for `deps --install`. Returns what is missing and how to
/// install it.
fn missing_parts(
    sh: &Shell,
    tool: &Tool,
    path: &Path,
    version: Option<Version>,
    manager: Option<PackageManager>,
) -> Option<(String, String)> {
    match tool.program {
        "packer" if version >= v(1, 7, 0) => {
            let listed = cmd!(sh, "{path} plugins installed")
                .ignore_status()
                .quiet()
                .read()
                .unwrap_or_default();
            missing_packer_plugins(&listed)
        }
        "python3" => {
            // Debian splits venv's pip bootstrap (ensurepip) into python3-venv.
            let works = cmd!(sh, "{path} -c 'import venv, ensurepip'")
                .ignore_stdout()
                .ignore_stderr()
                .quiet()
                .run()
                .is_ok();
            (!works).then(|| {
                (
                    "its venv module (with ensurepip) is missing".to_owned(),
                    tool.install_hint(manager),
                )
            })
        }
        "vagrant" => {
            let listed = cmd!(sh, "{path} plugin list")
                .ignore_status()
                .quiet()
                .read()
                .unwrap_or_default();
            (!listed.contains("vagrant-libvirt")).then(|| {
                (
                    "the vagrant-libvirt plugin is not installed".to_owned(),
                    "vagrant plugin install vagrant-libvirt".to_owned(),
                )
            })
        }
        _ => None,
    }
}

/// The plugins the JSON templates use, which Packer >= 1.7 no longer has built in.
pub const PACKER_PLUGINS: [&str; 3] = [
    "github.com/hashicorp/qemu",
    "github.com/hashicorp/ansible",
    "github.com/hashicorp/vagrant",
];

fn missing_packer_plugins(listed: &str) -> Option<(String, String)> {
    let missing: Vec<&str> = PACKER_PLUGINS
        .into_iter()
        .filter(|p| !listed.contains(p))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let names: Vec<&str> = missing
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .collect();
    let installs: Vec<String> = missing
        .iter()
        .map(|p| format!("packer plugins install {p}"))
        .collect();
    Some((
        format!("packer plugins missing: {}", names.join(", ")),
        installs.join(" && "),
    ))
}

/// Probes every tool (in parallel: vagrant alone takes a second to start) and
/// returns the results in the order of [`TOOLS`].
/// Probes `tools` and, when a required one is missing or unusable, names each with
/// its install hint and stops with exit status 2 before `what` starts anything.
pub fn require(sh: &Shell, tools: &[&'static Tool], what: &str) -> anyhow::Result<Vec<Probe>> {
    let probes = probe_all(sh, tools);
    let unusable: Vec<String> = probes
        .iter()
        .filter(|p| !p.optional && !p.usable())
        .map(|p| {
            format!(
                "  {}: {:?}; install: {}",
                p.tool,
                p.status,
                p.hint.as_deref().unwrap_or("-")
            )
        })
        .collect();
    if !unusable.is_empty() {
        eprintln!(
            "error: {what} needs tools that are missing or unusable:\n{}",
            unusable.join("\n")
        );
        return Err(crate::error::Exit(2).into());
    }
    Ok(probes)
}

pub fn probe_all(sh: &Shell, tools: &[&'static Tool]) -> Vec<Probe> {
    let manager = detect_package_manager();
    std::thread::scope(|scope| {
        let handles: Vec<_> = tools
            .iter()
            .map(|&tool| {
                let sh = sh.clone();
                scope.spawn(move || probe(&sh, tool, manager))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread panicked"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ver(text: &str) -> String {
        parse_version(text)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none".into())
    }

    #[test]
    fn parses_real_version_strings() {
        assert_eq!(ver("Packer v1.6.6\n"), "1.6.6");
        assert_eq!(
            ver("Packer v1.11.2\n\nYour version of Packer is out of date! The latest version\nis 1.12.0."),
            "1.11.2"
        );
        assert_eq!(
            ver("ansible-playbook [core 2.14.18]\n  config file = None\n  python version = 3.11.2"),
            "2.14.18"
        );
        assert_eq!(
            ver("ansible-playbook 2.10.8\n  config file = None"),
            "2.10.8"
        );
        assert_eq!(
            ver("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025"),
            "10.0.2"
        );
        assert_eq!(
            ver("qemu-img version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)"),
            "7.2.15"
        );
        assert_eq!(
            ver("ShellCheck - shell script analysis tool\nversion: 0.9.0\nlicense: GNU General Public License, version 3"),
            "0.9.0"
        );
        assert_eq!(ver("yamllint 1.29.0"), "1.29.0");
        assert_eq!(
            ver("ansible-lint \u{1b}[1;36m6.13\u{1b}[0m\u{1b}[1;36m.\u{1b}[0m\u{1b}[1;36m1\u{1b}[0m using ansible \u{1b}[1;36m2.14\u{1b}[0m"),
            "6.13.1"
        );
        assert_eq!(
            ver("ansible-lint 24.2.0 using ansible-core:2.16.4 ansible-compat:4.1.11"),
            "24.2.0"
        );
        assert_eq!(ver("Ignition Debian 2.14.0+ds1-1+b6"), "2.14.0");
        assert_eq!(ver("Ignition v2.20.0"), "2.20.0");
        assert_eq!(ver("Vagrant 2.3.4"), "2.3.4");
        assert_eq!(ver("9.0.0\n"), "9.0.0");
        assert_eq!(ver("gpgv (GnuPG) 2.2.40\nlibgcrypt 1.10.1"), "2.2.40");
        assert_eq!(ver("command not found"), "none");
        assert_eq!(ver("x86_64 build 3"), "none");
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(parse_version("1.10.0") > parse_version("1.9.9"));
        assert!(parse_version("2.10") >= v(2, 10, 0));
        assert!(parse_version("1.4.5") < v(1, 5, 0));
    }

    #[test]
    fn package_manager_follows_os_release() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            package_manager_from_os_release(debian),
            Some(PackageManager::Apt)
        );
        let mint = "ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n";
        assert_eq!(
            package_manager_from_os_release(mint),
            Some(PackageManager::Apt)
        );
        let rocky = "ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n";
        assert_eq!(
            package_manager_from_os_release(rocky),
            Some(PackageManager::Dnf)
        );
        assert_eq!(
            package_manager_from_os_release("ID=arch\n"),
            Some(PackageManager::Pacman)
        );
        assert_eq!(package_manager_from_os_release("ID=flatcar\n"), None);
    }

    #[test]
    fn install_hints_name_the_package() {
        let qemu = tool("qemu-system-x86_64");
        assert_eq!(
            qemu.install_hint(Some(PackageManager::Apt)),
            "sudo apt-get install qemu-system-x86"
        );
        assert_eq!(
            qemu.install_hint(Some(PackageManager::Brew)),
            "brew install qemu"
        );
        let ignition = tool("ignition-validate");
        assert_eq!(
            ignition.install_hint(Some(PackageManager::Pacman)),
            "install ignition-validate with your system's package manager and put it on PATH"
        );
    }

    #[test]
    fn packer_plugins_are_checked_by_source() {
        let all = "/root/.config/packer/plugins/github.com/hashicorp/qemu/packer-plugin-qemu_v1.1.0_x5.0_linux_amd64\n\
                   /root/.config/packer/plugins/github.com/hashicorp/ansible/packer-plugin-ansible_v1.1.1_x5.0_linux_amd64\n\
                   /root/.config/packer/plugins/github.com/hashicorp/vagrant/packer-plugin-vagrant_v1.1.5_x5.0_linux_amd64\n";
        assert_eq!(missing_packer_plugins(all), None);
        let (what, fix) = missing_packer_plugins("").unwrap();
        assert_eq!(what, "packer plugins missing: qemu, ansible, vagrant");
        assert!(fix.starts_with("packer plugins install github.com/hashicorp/qemu && "));
    }
}
