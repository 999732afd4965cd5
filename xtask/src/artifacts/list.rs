//! The artifact list of one build: every file the roles download besides the
//! Flatcar image (kubeadm, kubelet, kubectl, the CNI plugins, crictl, containerd,
//! PyPy), with where its checksum comes from, computed from the same layered and
//! rendered variables Packer gets, by the same formulas the roles use.

use std::collections::BTreeMap;

use anyhow::bail;
use serde::Serialize;

use super::checksum::{is_digest, Algorithm};
use super::layout::{at_base, mirror_path};
use super::pypy::Pypy;

/// Where an artifact's published checksum comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChecksumSource {
    /// A checksum file published next to it.
    File {
        #[serde(serialize_with = "redacted")]
        url: String,
        algorithm: Algorithm,
    },
    /// A value published elsewhere and carried in the image definitions.
    Fixed {
        algorithm: Algorithm,
        digest: String,
    },
}

impl ChecksumSource {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            ChecksumSource::File { algorithm, .. } | ChecksumSource::Fixed { algorithm, .. } => {
                *algorithm
            }
        }
    }
}

/// A URL as printed: a mirror's credentials stay out of plans and records.
fn redacted<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::net::credentials::redact(url))
}

/// One file a build downloads besides Flatcar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Artifact {
    /// `kubeadm`, `kubelet`, `kubectl`, `cni`, `crictl`, `containerd` or `pypy`.
    pub name: String,
    pub version: String,
    pub goarch: String,
    #[serde(serialize_with = "redacted")]
    pub url: String,
    pub checksum: ChecksumSource,
    /// Bytes, once a verified copy says so (never from the var files).
    pub size: Option<u64>,
    /// The path below the build's own server (and below a mirror's root) the guest
    /// fetches it from: the upstream host and path.
    pub served_path: String,
}

impl Artifact {
    /// The file's name: the last segment of its URL.
    pub fn file_name(&self) -> &str {
        self.served_path.rsplit('/').next().unwrap_or_default()
    }

    /// Where its checksum file is served, when it has one.
    pub fn checksum_served_path(&self) -> anyhow::Result<Option<String>> {
        match &self.checksum {
            ChecksumSource::File { url, .. } => Ok(Some(mirror_path(url)?)),
            ChecksumSource::Fixed { .. } => Ok(None),
        }
    }
}

/// The variables whose values say where the roles download from; each one holds an
/// upstream URL (or the base of a release tree) that a mirror replaces.
pub const DOWNLOAD_VARIABLES: &[&str] = &[
    "kubernetes_http_source",
    "cni_url",
    "crictl_url",
    "containerd_url",
    "pypy_http_source",
];

/// The Kubernetes binaries the kubernetes role downloads (`kubernetes_binaries`).
pub const KUBERNETES_BINARIES: &[&str] = &["kubeadm", "kubelet", "kubectl"];

/// The artifacts of a build, from its rendered variables and its PyPy; fails naming
/// every variable that is missing or not rendered.
pub fn artifact_list(
    vars: &BTreeMap<String, String>,
    pypy: &Pypy,
) -> anyhow::Result<Vec<Artifact>> {
    let mut problems = Vec::new();
    let mut get = |name: &str| match vars.get(name) {
        Some(value) if value.contains("{{") => {
            problems.push(format!("`{name}` is not rendered: {value}"));
            String::new()
        }
        Some(value) if !value.is_empty() => value.clone(),
        _ => {
            problems.push(format!("`{name}` is not set"));
            String::new()
        }
    };
    let goarch = get("goarch");
    let source = get("kubernetes_http_source");
    let semver = get("kubernetes_semver");
    let source_type = get("kubernetes_source_type");
    let [cni_url, cni_version, crictl_url, crictl_version, containerd_url, containerd_version, pypy_source] =
        [
            "cni_url",
            "cni_version",
            "crictl_url",
            "crictl_version",
            "containerd_url",
            "containerd_version",
            "pypy_http_source",
        ]
        .map(&mut get);
    if !problems.is_empty() {
        bail!("the build's download variables: {}", problems.join("; "));
    }
    if source_type != "http" {
        bail!("kubernetes_source_type is `{source_type}`; the Flatcar roles download only from a release tree (http)");
    }
    if !is_digest(&pypy.sha256, Algorithm::Sha256) {
        bail!(
            "pypy_sha256 `{}` is not a SHA-256 digest (64 hex digits)",
            pypy.sha256
        );
    }
    let with_file =
        |name: &str, version: &str, url: String, suffix: &str| -> anyhow::Result<Artifact> {
            Ok(Artifact {
                name: name.to_owned(),
                version: version.to_owned(),
                goarch: goarch.clone(),
                served_path: mirror_path(&url)?,
                checksum: ChecksumSource::File {
                    url: format!("{url}{suffix}"),
                    algorithm: Algorithm::Sha256,
                },
                url,
                size: None,
            })
        };
    let mut list = Vec::new();
    let base = source.trim_end_matches('/');
    for binary in KUBERNETES_BINARIES {
        let url = format!("{base}/{semver}/bin/linux/{goarch}/{binary}");
        list.push(with_file(binary, &semver, url, ".sha256")?);
    }
    list.push(with_file("cni", &cni_version, cni_url, ".sha256")?);
    list.push(with_file("crictl", &crictl_version, crictl_url, ".sha256")?);
    list.push(with_file(
        "containerd",
        &containerd_version,
        containerd_url,
        ".sha256sum",
    )?);
    let pypy_url = format!("{}/{}", pypy_source.trim_end_matches('/'), pypy.file_name());
    list.push(Artifact {
        name: "pypy".into(),
        version: pypy.version.clone(),
        goarch: goarch.clone(),
        served_path: mirror_path(&pypy_url)?,
        url: pypy_url,
        checksum: ChecksumSource::Fixed {
            algorithm: Algorithm::Sha256,
            digest: pypy.sha256.to_ascii_lowercase(),
        },
        size: None,
    });
    Ok(list)
}

/// The download variables pointed at the mirror (or build server) at `base`, which
/// serves each file at its upstream host and path: what a `--mirror-config` holds,
/// and what the build passes to reach its own server.
pub fn variables_at(
    vars: &BTreeMap<String, String>,
    base: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    DOWNLOAD_VARIABLES
        .iter()
        .map(|name| {
            let value = vars.get(*name).map(String::as_str).unwrap_or_default();
            Ok(((*name).to_owned(), at_base(base, value)?))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A build's rendered variables with the repository's current defaults.
    pub(crate) fn vars() -> BTreeMap<String, String> {
        [
            ("goarch", "amd64"),
            ("kubernetes_http_source", "https://dl.k8s.io/release"),
            ("kubernetes_semver", "v1.36.2"),
            ("kubernetes_source_type", "http"),
            ("cni_url", "https://github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-amd64-v1.9.1.tgz"),
            ("cni_version", "v1.9.1"),
            ("crictl_url", "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.36.0/crictl-v1.36.0-linux-amd64.tar.gz"),
            ("crictl_version", "v1.36.0"),
            ("containerd_url", "https://github.com/containerd/containerd/releases/download/v2.3.3/containerd-2.3.3-linux-amd64.tar.gz"),
            ("containerd_version", "2.3.3"),
            ("pypy_http_source", "https://downloads.python.org/pypy"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    pub(crate) fn pypy() -> Pypy {
        Pypy {
            version: "7.3.17".into(),
            python_version: "3.10".into(),
            platform: "linux64".into(),
            sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn the_list_follows_the_roles_formulas() {
        let list = artifact_list(&vars(), &pypy()).unwrap();
        let lines: Vec<String> = list
            .iter()
            .map(|a| {
                let checksum = match &a.checksum {
                    ChecksumSource::File { url, .. } => url.rsplit('/').next().unwrap().to_owned(),
                    ChecksumSource::Fixed { digest, .. } => format!("fixed {}", &digest[..8]),
                };
                format!("{} {} {} <- {}", a.name, a.version, a.url, checksum)
            })
            .collect();
        expect_test::expect![[r#"
            [
                "kubeadm v1.36.2 https://dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubeadm <- kubeadm.sha256",
                "kubelet v1.36.2 https://dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubelet <- kubelet.sha256",
                "kubectl v1.36.2 https://dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubectl <- kubectl.sha256",
                "cni v1.9.1 https://github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-amd64-v1.9.1.tgz <- cni-plugins-linux-amd64-v1.9.1.tgz.sha256",
                "crictl v1.36.0 https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.36.0/crictl-v1.36.0-linux-amd64.tar.gz <- crictl-v1.36.0-linux-amd64.tar.gz.sha256",
                "containerd 2.3.3 https://github.com/containerd/containerd/releases/download/v2.3.3/containerd-2.3.3-linux-amd64.tar.gz <- containerd-2.3.3-linux-amd64.tar.gz.sha256sum",
                "pypy 7.3.17 https://downloads.python.org/pypy/pypy3.10-v7.3.17-linux64.tar.bz2 <- fixed abababab",
            ]
        "#]]
        .assert_debug_eq(&lines);
        assert_eq!(
            list[0].served_path,
            "dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubeadm"
        );
        assert_eq!(list[0].file_name(), "kubeadm");
    }

    #[test]
    fn missing_or_unrendered_variables_are_named() {
        let mut vars = vars();
        vars.remove("crictl_url");
        vars.insert("cni_url".into(), "https://x/{{user `cni_version`}}".into());
        let err = artifact_list(&vars, &pypy()).unwrap_err().to_string();
        assert!(err.contains("`cni_url` is not rendered"), "{err}");
        assert!(err.contains("`crictl_url` is not set"), "{err}");
        let mut bad = pypy();
        bad.sha256 = "abc".into();
        let err = artifact_list(&super::tests::vars(), &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pypy_sha256 `abc`"), "{err}");
    }

    #[test]
    fn variables_at_a_base_keep_the_upstream_paths() {
        let at = variables_at(&vars(), "http://10.0.2.2:4321").unwrap();
        assert_eq!(
            at["kubernetes_http_source"],
            "http://10.0.2.2:4321/dl.k8s.io/release"
        );
        assert_eq!(
            at["pypy_http_source"],
            "http://10.0.2.2:4321/downloads.python.org/pypy"
        );
        // Each artifact's URL under the new variables is its served path at the base.
        let moved = vars().into_iter().chain(at).collect();
        for (before, after) in artifact_list(&vars(), &pypy())
            .unwrap()
            .iter()
            .zip(artifact_list(&moved, &pypy()).unwrap())
        {
            assert_eq!(
                after.url,
                format!("http://10.0.2.2:4321/{}", before.served_path)
            );
        }
    }
}
