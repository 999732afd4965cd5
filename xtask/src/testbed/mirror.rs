//! What the rehearsal's loopback mirror serves, as files in a directory: a
//! Flatcar-shaped release tree for the made-up release (the rehearsal guest published
//! for each platform asked for under Flatcar's artifact names, made by `release_tree`
//! and signed by a key made for this mirror), and
//! the download stand-ins (`downloads`). Also the var file that points a build at
//! the mirror, as an air-gapped site would point it at its own.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};
use xshell::Shell;

use super::downloads::{plan_downloads, write_planned, Downloads};
use super::guest::Guest;
use super::platform_images;
use super::release_tree::{self, file_digest, Image, Release};
use super::signer::Signer;
use crate::artifacts::layout::at_base;
use crate::flatcar::platform::Platform;

/// Where the release tree starts below the mirror's root: the release server URL a
/// build takes is `<mirror>/flatcar/{channel}`.
pub const RELEASE_DIR: &str = "flatcar";

/// The armored public half of the mirror's signing key, below the mirror's root.
const SIGNING_KEY_FILE: &str = "flatcar/rehearsal-image-signing-key.asc";

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
    /// mirror at `base_url` (the host fetches them all, as `http://127.0.0.1:<port>`,
    /// and serves them to its VM itself). The PyPy it serves is not the release the
    /// setup role defaults to, so its version and SHA-256 go in as Ansible variables.
    pub fn mirror_config(&self, base_url: &str) -> anyhow::Result<Value> {
        mirror_config(&self.downloads, &self.python, base_url)
    }
}

fn mirror_config(
    downloads: &Downloads,
    python: &PythonOverride,
    base_url: &str,
) -> anyhow::Result<Value> {
    let at_mirror = |url: &str| at_base(base_url, url);
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
/// `channel` with the guest's image for each of `platforms` (see
/// [`platform_images::BOOTABLE`]), and the download stand-ins for `downloads`.
pub fn build(
    sh: &Shell,
    root: &Path,
    guest: &Guest,
    channel: &str,
    platforms: &[Platform],
    downloads: &Downloads,
) -> anyhow::Result<Mirror> {
    let published = platform_images::images(sh, guest, platforms)?;
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
    let key_dir = root.join(RELEASE_DIR);
    std::fs::create_dir_all(&key_dir).with_context(|| format!("creating {}", key_dir.display()))?;
    signer.write_public_key(&signing_key, true)?;
    let release = Release {
        build_id: "rehearsal",
        images: published
            .iter()
            .map(|image| Image::published(&image.file_name, &image.path, signer.signing()))
            .collect(),
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
    use crate::artifacts::layout::mirror_path;
    use crate::testbed::downloads::tests::downloads;

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
        let mirror = build(
            &sh,
            &root,
            &guest,
            "stable",
            &[Platform::Qemu],
            &downloads(),
        )
        .unwrap();

        let image_name = Platform::Qemu.image_file_name();
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
        let listing = xshell::cmd!(sh, "tar --list --verbose --file {containerd}")
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
