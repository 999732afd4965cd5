//! The downloads a build makes besides Flatcar (Kubernetes, CNI, crictl,
//! containerd, PyPy), as stand-ins at the paths of the URLs the var files name, each
//! with the checksum file the roles check it against, in the upstream's format.
//!
//! Stand-ins are honest: scripts that say what they are, record their calls and refuse
//! what needs real Kubernetes. The PyPy is real: Debian's, built with the guest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::release_tree::file_digest;
use crate::artifacts::layout::mirror_path;

/// The CNI plugins a release archive carries, each a stand-in here.
const CNI_PLUGINS: &[&str] = &[
    "bandwidth",
    "bridge",
    "dhcp",
    "dummy",
    "firewall",
    "host-device",
    "host-local",
    "ipvlan",
    "loopback",
    "macvlan",
    "portmap",
    "ptp",
    "sbr",
    "static",
    "tap",
    "tuning",
    "vlan",
    "vrf",
];

/// The binaries a containerd release archive carries under `bin/`.
const CONTAINERD_BINARIES: &[&str] = &[
    "containerd",
    "containerd-shim-runc-v2",
    "containerd-stress",
    "ctr",
];

const KUBEADM: &str = include_str!("stand-ins/kubeadm");
const KUBELET: &str = include_str!("stand-ins/kubelet");
const KUBECTL: &str = include_str!("stand-ins/kubectl");
const CRICTL: &str = include_str!("stand-ins/crictl");
const CNI_PLUGIN: &str = include_str!("stand-ins/cni-plugin");
const CONTAINERD_TOOL: &str = include_str!("stand-ins/containerd-tool");

/// The download settings of a build, as rendered Packer variables (no `{{user}}` left).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloads {
    pub goarch: String,
    pub kubernetes_http_source: String,
    pub kubernetes_semver: String,
    pub cni_url: String,
    pub cni_version: String,
    pub crictl_url: String,
    pub crictl_version: String,
    pub containerd_url: String,
    pub containerd_version: String,
    pub pypy_http_source: String,
}

impl Downloads {
    /// The variables this mirror stands in for, read from a build's layered and
    /// rendered variables; fails naming every one that is missing or unrendered.
    pub fn from_vars(vars: &BTreeMap<String, String>) -> anyhow::Result<Downloads> {
        let mut problems = Vec::new();
        let mut get = |name: &str| match vars.get(name) {
            Some(value) if value.contains("{{") => {
                problems.push(format!("`{name}` is not rendered: {value}"));
                String::new()
            }
            Some(value) => value.clone(),
            None => {
                problems.push(format!("`{name}` is not set"));
                String::new()
            }
        };
        let downloads = Downloads {
            goarch: get("goarch"),
            kubernetes_http_source: get("kubernetes_http_source"),
            kubernetes_semver: get("kubernetes_semver"),
            cni_url: get("cni_url"),
            cni_version: get("cni_version"),
            crictl_url: get("crictl_url"),
            crictl_version: get("crictl_version"),
            containerd_url: get("containerd_url"),
            containerd_version: get("containerd_version"),
            pypy_http_source: get("pypy_http_source"),
        };
        if !problems.is_empty() {
            bail!(
                "the build's download variables cannot be mirrored: {}",
                problems.join("; ")
            );
        }
        Ok(downloads)
    }
}

/// How a checksum file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumStyle {
    /// `<hex>` alone (dl.k8s.io's `.sha256`).
    HexOnly,
    /// `<hex>  <file name>` (sha256sum's output, GitHub release assets).
    HexAndName,
}

/// A stand-in file's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// An executable script.
    Script(String),
    /// A gzipped tar of executable scripts at these paths.
    Tarball(Vec<(String, String)>),
    /// The SHA-256 of another planned file.
    Sha256Of { file: String, style: ChecksumStyle },
    /// A copy of a file made elsewhere.
    Copy(PathBuf),
}

/// One file the mirror will hold, relative to its root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub path: String,
    pub content: Content,
}

fn stand_in(template: &str, name: &str, version: &str) -> String {
    template
        .replace("@NAME@", name)
        .replace("@VERSION@", version)
}

/// A tarball of stand-ins made from `template`, one per name, at `prefix` + name.
fn stand_in_tarball(names: &[&str], prefix: &str, template: &str, version: &str) -> Content {
    Content::Tarball(
        names
            .iter()
            .map(|name| (format!("{prefix}{name}"), stand_in(template, name, version)))
            .collect(),
    )
}

fn checksum_of(file: &str, style: ChecksumStyle, suffix: &str) -> Planned {
    Planned {
        path: format!("{file}{suffix}"),
        content: Content::Sha256Of {
            file: file.to_owned(),
            style,
        },
    }
}

/// Every download stand-in and checksum file, in an order in which each checksum
/// follows its file. `python_archive` is the guest's PyPy archive.
pub fn plan_downloads(
    downloads: &Downloads,
    python_archive: &Path,
    python_archive_name: &str,
) -> anyhow::Result<Vec<Planned>> {
    let mut planned = Vec::new();

    let k8s_dir = format!(
        "{}/{}/bin/linux/{}",
        mirror_path(&downloads.kubernetes_http_source)?,
        downloads.kubernetes_semver,
        downloads.goarch
    );
    for (name, template) in [
        ("kubeadm", KUBEADM),
        ("kubelet", KUBELET),
        ("kubectl", KUBECTL),
    ] {
        let path = format!("{k8s_dir}/{name}");
        planned.push(Planned {
            path: path.clone(),
            content: Content::Script(stand_in(template, name, &downloads.kubernetes_semver)),
        });
        planned.push(checksum_of(&path, ChecksumStyle::HexOnly, ".sha256"));
    }

    let cni = mirror_path(&downloads.cni_url)?;
    planned.push(Planned {
        path: cni.clone(),
        content: stand_in_tarball(CNI_PLUGINS, "./", CNI_PLUGIN, &downloads.cni_version),
    });
    planned.push(checksum_of(&cni, ChecksumStyle::HexAndName, ".sha256"));

    let crictl = mirror_path(&downloads.crictl_url)?;
    planned.push(Planned {
        path: crictl.clone(),
        content: stand_in_tarball(&["crictl"], "", CRICTL, &downloads.crictl_version),
    });
    planned.push(checksum_of(&crictl, ChecksumStyle::HexAndName, ".sha256"));

    let containerd = mirror_path(&downloads.containerd_url)?;
    planned.push(Planned {
        path: containerd.clone(),
        content: stand_in_tarball(
            CONTAINERD_BINARIES,
            "bin/",
            CONTAINERD_TOOL,
            &downloads.containerd_version,
        ),
    });
    planned.push(checksum_of(
        &containerd,
        ChecksumStyle::HexAndName,
        ".sha256sum",
    ));

    let pypy = format!(
        "{}/{python_archive_name}",
        mirror_path(&downloads.pypy_http_source)?
    );
    planned.push(Planned {
        path: pypy.clone(),
        content: Content::Copy(python_archive.to_owned()),
    });
    planned.push(checksum_of(&pypy, ChecksumStyle::HexAndName, ".sha256"));
    Ok(planned)
}

fn create_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(())
}

fn write_executable(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    create_parent(path)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Writes `item` below `root`.
pub fn write_planned(sh: &Shell, root: &Path, item: &Planned) -> anyhow::Result<()> {
    let path = root.join(&item.path);
    match &item.content {
        Content::Script(text) => write_executable(&path, text),
        Content::Tarball(entries) => {
            let staging = path.with_extension("staging");
            let names: Vec<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
            for (name, text) in entries {
                write_executable(&staging.join(name), text)?;
            }
            cmd!(
                sh,
                "tar --create --gzip --owner=0 --group=0 --numeric-owner --file {path} --directory {staging} {names...}"
            )
            .quiet()
            .run()
            .with_context(|| format!("packing {}", path.display()))?;
            std::fs::remove_dir_all(&staging)
                .with_context(|| format!("removing {}", staging.display()))
        }
        Content::Sha256Of { file, style } => {
            let hex = file_digest(sh, "sha256", &root.join(file))?;
            let name = file.rsplit('/').next().unwrap_or(file);
            let text = match style {
                ChecksumStyle::HexOnly => format!("{hex}\n"),
                ChecksumStyle::HexAndName => format!("{hex}  {name}\n"),
            };
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        }
        Content::Copy(source) => {
            create_parent(&path)?;
            std::fs::copy(source, &path)
                .with_context(|| format!("copying {} to {}", source.display(), path.display()))?;
            Ok(())
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The downloads of a build with the repository's current defaults.
    pub(crate) fn downloads() -> Downloads {
        Downloads {
            goarch: "amd64".into(),
            kubernetes_http_source: "https://dl.k8s.io/release".into(),
            kubernetes_semver: "v1.36.2".into(),
            cni_url: "https://github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-amd64-v1.9.1.tgz".into(),
            cni_version: "v1.9.1".into(),
            crictl_url: "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.36.0/crictl-v1.36.0-linux-amd64.tar.gz".into(),
            crictl_version: "v1.36.0".into(),
            containerd_url: "https://github.com/containerd/containerd/releases/download/v2.3.3/containerd-2.3.3-linux-amd64.tar.gz".into(),
            containerd_version: "2.3.3".into(),
            pypy_http_source: "https://downloads.python.org/pypy".into(),
        }
    }

    #[test]
    fn download_paths_follow_the_urls() {
        let planned = plan_downloads(
            &downloads(),
            Path::new("/cache/pypy3.9-v7.3.11-linux64.tar.bz2"),
            "pypy3.9-v7.3.11-linux64.tar.bz2",
        )
        .unwrap();
        let paths: Vec<&str> = planned.iter().map(|p| p.path.as_str()).collect();
        expect_test::expect![[r#"
            [
                "dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubeadm",
                "dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubeadm.sha256",
                "dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubelet",
                "dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubelet.sha256",
                "dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubectl",
                "dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubectl.sha256",
                "github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-amd64-v1.9.1.tgz",
                "github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-amd64-v1.9.1.tgz.sha256",
                "github.com/kubernetes-sigs/cri-tools/releases/download/v1.36.0/crictl-v1.36.0-linux-amd64.tar.gz",
                "github.com/kubernetes-sigs/cri-tools/releases/download/v1.36.0/crictl-v1.36.0-linux-amd64.tar.gz.sha256",
                "github.com/containerd/containerd/releases/download/v2.3.3/containerd-2.3.3-linux-amd64.tar.gz",
                "github.com/containerd/containerd/releases/download/v2.3.3/containerd-2.3.3-linux-amd64.tar.gz.sha256sum",
                "downloads.python.org/pypy/pypy3.9-v7.3.11-linux64.tar.bz2",
                "downloads.python.org/pypy/pypy3.9-v7.3.11-linux64.tar.bz2.sha256",
            ]
        "#]]
        .assert_debug_eq(&paths);
    }

    #[test]
    fn checksums_follow_their_files_in_the_upstream_styles() {
        let planned = plan_downloads(&downloads(), Path::new("/p"), "p.tar.bz2").unwrap();
        for (index, item) in planned.iter().enumerate() {
            if let Content::Sha256Of { file, style } = &item.content {
                assert_eq!(
                    &planned[index - 1].path,
                    file,
                    "{} follows its file",
                    item.path
                );
                let expected = if file.starts_with("dl.k8s.io/") {
                    ChecksumStyle::HexOnly
                } else {
                    ChecksumStyle::HexAndName
                };
                assert_eq!(*style, expected, "{}", item.path);
            }
        }
    }

    #[test]
    fn stand_ins_say_what_they_are_and_carry_the_version() {
        let planned = plan_downloads(&downloads(), Path::new("/p"), "p.tar.bz2").unwrap();
        let Content::Script(kubeadm) = &planned[0].content else {
            panic!("kubeadm is a script")
        };
        assert!(kubeadm.contains("version='v1.36.2'"));
        assert!(kubeadm.contains("rehearsal stand-in"));
        assert!(!kubeadm.contains("@VERSION@") && !kubeadm.contains("@NAME@"));
        let Content::Tarball(entries) = &planned[10].content else {
            panic!("containerd is a tarball")
        };
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin/containerd",
                "bin/containerd-shim-runc-v2",
                "bin/containerd-stress",
                "bin/ctr"
            ]
        );
        assert!(entries[3].1.contains("name='ctr'") && entries[3].1.contains("version='2.3.3'"));
    }

    #[test]
    fn download_variables_must_be_set_and_rendered() {
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        vars.insert("goarch".into(), "amd64".into());
        vars.insert("cni_url".into(), "https://x/{{user `cni_version`}}".into());
        let err = Downloads::from_vars(&vars).unwrap_err().to_string();
        assert!(err.contains("`cni_url` is not rendered"), "{err}");
        assert!(err.contains("`kubernetes_http_source` is not set"), "{err}");
        assert!(!err.contains("`goarch`"), "{err}");
    }
}
