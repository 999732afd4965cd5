//! What the rehearsal's loopback mirror serves, as files in a directory: a
//! Flatcar-shaped release tree for the made-up release (the rehearsal guest as the
//! QEMU image, made by `release_tree` and signed by a key made for this mirror), and
//! stand-ins for the Kubernetes, CNI, crictl, containerd and PyPy
//! downloads at the paths of the URLs the var files name, each with the checksum file
//! the roles check it against. Also the var file that points a build at the mirror,
//! as an air-gapped site would point it at its own.
//!
//! Stand-ins are honest: scripts that say what they are, record their calls and refuse
//! what needs real Kubernetes. The PyPy is real: Debian's, built with the guest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use xshell::{cmd, Shell};

use super::guest::Guest;
use super::release_tree::{self, file_digest, Image, Release};
use super::signer::Signer;
use crate::flatcar::release::Variant;

/// Where the release tree starts below the mirror's root: the release server URL a
/// build takes is `<mirror>/flatcar/{channel}`.
const RELEASE_DIR: &str = "flatcar";

/// The armored public half of the mirror's signing key, below the mirror's root.
const SIGNING_KEY_FILE: &str = "flatcar/rehearsal-image-signing-key.asc";

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

/// Where a URL's file sits in the mirror: its host, then its path, so that a mirror
/// URL reads like the original (`https://dl.k8s.io/release/x` is `dl.k8s.io/release/x`).
pub fn mirror_path(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .with_context(|| format!("`{url}` is not an http(s) URL"))?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let path = rest.trim_end_matches('/');
    if path.is_empty() || path.split('/').any(|part| part.is_empty() || part == "..") {
        bail!("`{url}` has no plain file path to mirror");
    }
    Ok(path.to_owned())
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
        content: Content::Tarball(
            CNI_PLUGINS
                .iter()
                .map(|name| {
                    (
                        format!("./{name}"),
                        stand_in(CNI_PLUGIN, name, &downloads.cni_version),
                    )
                })
                .collect(),
        ),
    });
    planned.push(checksum_of(&cni, ChecksumStyle::HexAndName, ".sha256"));

    let crictl = mirror_path(&downloads.crictl_url)?;
    planned.push(Planned {
        path: crictl.clone(),
        content: Content::Tarball(vec![(
            "crictl".to_owned(),
            stand_in(CRICTL, "crictl", &downloads.crictl_version),
        )]),
    });
    planned.push(checksum_of(&crictl, ChecksumStyle::HexAndName, ".sha256"));

    let containerd = mirror_path(&downloads.containerd_url)?;
    planned.push(Planned {
        path: containerd.clone(),
        content: Content::Tarball(
            CONTAINERD_BINARIES
                .iter()
                .map(|name| {
                    (
                        format!("bin/{name}"),
                        stand_in(CONTAINERD_TOOL, name, &downloads.containerd_version),
                    )
                })
                .collect(),
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

/// A built mirror.
#[derive(Debug)]
pub struct Mirror {
    /// The directory to serve.
    pub root: PathBuf,
    /// The armored public key the release is signed with (for `--signing-key`).
    pub signing_key: PathBuf,
    /// Its primary key's fingerprint.
    pub signing_key_fingerprint: String,
    /// The channel whose release tree it holds.
    pub channel: String,
    /// Every file it holds, relative to `root`, sorted.
    pub files: Vec<String>,
    downloads: Downloads,
    python: PythonOverride,
}

/// What a build must be told to bootstrap the mirror's PyPy instead of the default.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PythonOverride {
    python_version: String,
    pypy_version: String,
    sha256: String,
}

impl Mirror {
    /// The release server a build takes (`--release-server`), given the mirror's
    /// base URL as the host sees it (`http://127.0.0.1:<port>`).
    pub fn release_server(&self, host_url: &str) -> String {
        format!(
            "{}/{RELEASE_DIR}/{{channel}}",
            host_url.trim_end_matches('/')
        )
    }

    /// The var file (`--mirror-config`) that sends every download of the build to the
    /// mirror at `guest_url`, the base URL as the guest sees it (`http://10.0.2.2:<port>`
    /// under QEMU user-mode networking). The PyPy it serves is not the release the
    /// setup role defaults to, so its version and SHA-256 go in as Ansible variables.
    pub fn mirror_config(&self, guest_url: &str) -> anyhow::Result<Value> {
        mirror_config(&self.downloads, &self.python, guest_url)
    }
}

fn mirror_config(
    downloads: &Downloads,
    python: &PythonOverride,
    guest_url: &str,
) -> anyhow::Result<Value> {
    let base = guest_url.trim_end_matches('/');
    let at_mirror = |url: &str| anyhow::Ok(format!("{base}/{}", mirror_path(url)?));
    Ok(json!({
        "kubernetes_http_source": at_mirror(&downloads.kubernetes_http_source)?,
        "cni_url": at_mirror(&downloads.cni_url)?,
        "crictl_url": at_mirror(&downloads.crictl_url)?,
        "containerd_url": at_mirror(&downloads.containerd_url)?,
        "pypy_http_source": at_mirror(&downloads.pypy_http_source)?,
        "ansible_extra_vars": format!(
            "pypy_python_version={} pypy_version={} pypy_sha256={}",
            python.python_version, python.pypy_version, python.sha256
        ),
    }))
}

/// Builds the mirror for `guest` under `root` (emptied first): the release tree for
/// `channel` and the download stand-ins for `downloads`.
pub fn build(
    sh: &Shell,
    root: &Path,
    guest: &Guest,
    channel: &str,
    downloads: &Downloads,
) -> anyhow::Result<Mirror> {
    if root.exists() {
        std::fs::remove_dir_all(root).with_context(|| format!("removing {}", root.display()))?;
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let root = root
        .canonicalize()
        .with_context(|| format!("opening {}", root.display()))?;

    let planned = plan_downloads(downloads, &guest.python.path, &guest.python.file_name)?;
    let mut python_sha256 = None;
    for item in &planned {
        let path = root.join(&item.path);
        write_planned(sh, &root, item)?;
        if item.path.ends_with(&guest.python.file_name) {
            python_sha256 = Some(file_digest(sh, "sha256", &path)?);
        }
    }

    let signing_key = root.join(SIGNING_KEY_FILE);
    let signer = Signer::new(
        "Flatcar rehearsal image signing key (made for one local mirror) <rehearsal@localhost>",
    )?;
    create_parent(&signing_key)?;
    signer.write_public_key(&signing_key, true)?;
    let release = Release {
        build_id: "rehearsal",
        images: vec![Image::published(
            Variant::Bios.image_file_name(),
            &guest.image,
            signer.signing(),
        )],
        current: true,
        ..Release::new(channel, "amd64", super::FLATCAR_VERSION)
    };
    release_tree::write(&root.join(RELEASE_DIR), &release)?;

    let mut files = Vec::new();
    list_files(&root, &root, &mut files)?;
    files.sort();
    Ok(Mirror {
        signing_key,
        signing_key_fingerprint: signer.fingerprint().to_owned(),
        channel: channel.to_owned(),
        files,
        root,
        downloads: downloads.clone(),
        python: PythonOverride {
            python_version: guest.python.python_version.clone(),
            pypy_version: guest.python.pypy_version.clone(),
            sha256: python_sha256.context("the PyPy archive was not planned")?,
        },
    })
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

fn write_planned(sh: &Shell, root: &Path, item: &Planned) -> anyhow::Result<()> {
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

fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let path = entry.path();
        if path.is_dir() {
            list_files(root, &path, out)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.push(relative.display().to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downloads() -> Downloads {
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
    fn mirror_paths() {
        assert_eq!(
            mirror_path("https://dl.k8s.io/release/").unwrap(),
            "dl.k8s.io/release"
        );
        assert_eq!(mirror_path("http://h/a/b?x=1").unwrap(), "h/a/b");
        assert!(mirror_path("ftp://h/a").is_err());
        assert!(mirror_path("https://h/a/../b").is_err());
        assert!(mirror_path("https://").is_err());
    }

    #[test]
    fn mirror_config_points_every_download_at_the_mirror() {
        let python = PythonOverride {
            python_version: "3.9".into(),
            pypy_version: "7.3.11".into(),
            sha256: "ab".repeat(32),
        };
        let config = mirror_config(&downloads(), &python, "http://10.0.2.2:8080/").unwrap();
        assert_eq!(
            config["kubernetes_http_source"],
            "http://10.0.2.2:8080/dl.k8s.io/release"
        );
        assert_eq!(
            config["containerd_url"],
            "http://10.0.2.2:8080/github.com/containerd/containerd/releases/download/v2.3.3/containerd-2.3.3-linux-amd64.tar.gz"
        );
        assert_eq!(
            config["pypy_http_source"],
            "http://10.0.2.2:8080/downloads.python.org/pypy"
        );
        assert_eq!(
            config["ansible_extra_vars"],
            format!(
                "pypy_python_version=3.9 pypy_version=7.3.11 pypy_sha256={}",
                "ab".repeat(32)
            )
        );
        for value in config.as_object().unwrap().values() {
            assert!(!value.as_str().unwrap().contains("https://"), "{value}");
        }
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

    /// The I/O half on small files: tar, coreutils and gpg for real, and the build's
    /// own OpenPGP check on the release it holds.
    #[test]
    fn builds_a_mirror_the_build_accepts() {
        let sh = Shell::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("guest.qcow2");
        std::fs::write(&image, b"not really a qcow2").unwrap();
        let python = dir.path().join("pypy3.9-v7.3.11-linux64.tar.bz2");
        std::fs::write(&python, b"not really PyPy").unwrap();
        let guest = Guest {
            image,
            python: super::super::guest::PythonArchive {
                path: python,
                file_name: "pypy3.9-v7.3.11-linux64.tar.bz2".into(),
                python_version: "3.9".into(),
                pypy_version: "7.3.11".into(),
            },
            recipe: "test".into(),
        };
        let root = dir.path().join("mirror");
        let mirror = build(&sh, &root, &guest, "stable", &downloads()).unwrap();

        let image_name = Variant::Bios.image_file_name();
        for release in ["9999.0.0", "current"] {
            let release = format!("flatcar/stable/amd64-usr/{release}");
            for name in ["version.txt", image_name] {
                let path = format!("{release}/{name}");
                assert!(
                    mirror.files.contains(&path),
                    "{path} in {:#?}",
                    mirror.files
                );
            }
        }
        assert!(mirror.files.contains(&SIGNING_KEY_FILE.to_owned()));
        assert_eq!(
            mirror.release_server("http://127.0.0.1:1234/"),
            "http://127.0.0.1:1234/flatcar/{channel}"
        );
        let armored = std::fs::read(&mirror.signing_key).unwrap();
        let keyring =
            crate::net::openpgp::Keyring::from_armored(&sh, &armored, "the test key", None)
                .unwrap();
        let served = mirror
            .root
            .join("flatcar/stable/amd64-usr/current")
            .join(image_name);
        let good = keyring
            .verify_detached(&super::super::signer::with_suffix(&served, ".sig"), &served)
            .unwrap();
        assert_eq!(good.primary_key.as_str(), mirror.signing_key_fingerprint);

        let kubeadm_sum = std::fs::read_to_string(
            mirror
                .root
                .join("dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubeadm.sha256"),
        )
        .unwrap();
        let kubeadm = mirror
            .root
            .join("dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubeadm");
        assert_eq!(
            kubeadm_sum.trim(),
            file_digest(&sh, "sha256", &kubeadm).unwrap()
        );
        let containerd = mirror
            .root
            .join(mirror_path(&downloads().containerd_url).unwrap());
        let listing = cmd!(sh, "tar --list --verbose --file {containerd}")
            .read()
            .unwrap();
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("-rwxr-xr-x 0/0") && l.ends_with(" bin/ctr")),
            "{listing}"
        );
        let config = mirror.mirror_config("http://10.0.2.2:1234").unwrap();
        let python_sha = file_digest(&sh, "sha256", &guest.python.path).unwrap();
        assert!(config["ansible_extra_vars"]
            .as_str()
            .unwrap()
            .ends_with(&python_sha));
    }
}
