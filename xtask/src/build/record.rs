//! `build.json`: what went into a build and what came out, with digests, so an
//! image can be traced to its inputs and checked later. `verify-vagrant` and
//! `boxes` read it back to know which release an output directory holds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::vm::accelerator::Accelerator;

/// The name of the record in an output directory.
pub const FILE_NAME: &str = "build.json";

/// One file and its SHA-512.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub file: String,
    pub sha512: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    pub channel: String,
    pub version: String,
    pub arch: String,
    pub provider: String,
    pub kubernetes_semver: String,
    pub containerd_version: String,
    pub cni_version: String,
    pub accelerator: Accelerator,
    /// The verified Flatcar image the build started from.
    pub base_image: Artifact,
    pub outputs: Vec<Artifact>,
    /// The public half of the build's key, which sysprep must have removed.
    pub build_ssh_public_key: String,
    /// Tool name to version.
    pub tools: BTreeMap<String, String>,
    pub started: String,
    pub finished: String,
}

impl BuildRecord {
    pub fn read(output_dir: &Path) -> anyhow::Result<BuildRecord> {
        let path = output_dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (is {} the output directory of a finished build?)",
                path.display(),
                output_dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a build record always serializes") + "\n"
    }
}

/// Now, in UTC, as the rest of the tool prints times (`2026-11-24 06:49:05 UTC`).
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    crate::net::openpgp::utc(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let record = BuildRecord {
            channel: "stable".into(),
            version: "4081.2.0".into(),
            arch: "amd64".into(),
            provider: "qemu".into(),
            kubernetes_semver: "v1.36.1".into(),
            containerd_version: "2.1.4".into(),
            cni_version: "1.8.0".into(),
            accelerator: Accelerator::Tcg,
            base_image: Artifact {
                file: "flatcar_production_qemu_image.img".into(),
                sha512: "ab".into(),
            },
            outputs: vec![Artifact {
                file: "flatcar-stable-4081.2.0-kube-v1.36.1".into(),
                sha512: "cd".into(),
            }],
            build_ssh_public_key: "ssh-ed25519 AAAA build".into(),
            tools: BTreeMap::from([("packer".into(), "1.6.6".into())]),
            started: "2026-11-24 06:49:05 UTC".into(),
            finished: "2026-11-24 07:09:05 UTC".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), record.to_json()).unwrap();
        assert_eq!(BuildRecord::read(dir.path()).unwrap(), record);
    }
}
