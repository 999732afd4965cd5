//! `build.json`: what went into a build and what came out, with digests, so an
//! image can be traced to its inputs and checked later. `verify-vagrant` and
//! `boxes` read it back to know which release an output directory holds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::build::plan::{Plan, Recipe};
use crate::build::timeline::Timeline;
use crate::vm::accelerator::Accelerator;

/// The name of the record in an output directory.
pub const FILE_NAME: &str = "build.json";

/// One file and its SHA-512.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub file: String,
    pub sha512: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// What was built, as the plan said.
    #[serde(flatten)]
    pub recipe: Recipe,
    /// The accelerator the build's VM ran with, and the box's VM runs with by default.
    pub accelerator: Accelerator,
    /// The verified Flatcar image the build started from (none for an AMI).
    pub base_image: Option<Artifact>,
    /// The URL that served the base image, after redirects (when it was downloaded
    /// by this version of the xtask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image_url: Option<String>,
    /// The key whose signature vouched for the base image (none for an AMI or
    /// with `--insecure-skip-signature`).
    #[serde(default)]
    pub base_image_signed_by: Option<SignedBy>,
    pub outputs: Vec<Artifact>,
    /// The public half of the build's key, which sysprep must have removed.
    pub build_ssh_public_key: String,
    /// Tool name to version.
    pub tools: BTreeMap<String, String>,
    pub started: String,
    pub finished: String,
    /// Seconds from the command's start to the record: the whole build but
    /// verify-vagrant (absent in records of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Seconds packer ran; the rest of `seconds` is the xtask's own work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packer_seconds: Option<f64>,
    /// Where packer's time went.
    #[serde(default)]
    pub timeline: Timeline,
}

/// Who signed the base image, and whether that key is the pinned Flatcar key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBy {
    pub primary_key: String,
    pub signing_key: String,
    /// `false`: a key the user named replaced the pinned one (`trust_anchor` says which).
    pub pinned_flatcar_key: bool,
    pub trust_anchor: Option<String>,
}

impl SignedBy {
    /// Who signed `image`, as checked under `policy`; `None` when unsigned.
    pub fn of(
        image: &crate::flatcar::VerifiedImage,
        policy: &crate::flatcar::SignaturePolicy,
    ) -> Option<SignedBy> {
        let signature = image.signature.as_ref()?;
        let anchor = policy.replaced_anchor();
        Some(SignedBy {
            primary_key: signature.primary_key.clone(),
            signing_key: signature.signing_key.clone(),
            pinned_flatcar_key: anchor.is_none()
                && signature.primary_key == crate::flatcar::fetch::FLATCAR_SIGNING_KEY_FINGERPRINT,
            trust_anchor: anchor,
        })
    }
}

/// What only the finished build knows.
pub struct Finished {
    pub base_image: Option<Artifact>,
    pub base_image_url: Option<String>,
    pub base_image_signed_by: Option<SignedBy>,
    pub outputs: Vec<Artifact>,
    pub build_ssh_public_key: String,
    pub tools: BTreeMap<String, String>,
    pub started: String,
    /// When the command started, for `seconds`.
    pub started_at: Instant,
    pub packer_seconds: f64,
    pub timeline: Timeline,
}

impl BuildRecord {
    /// The record of a build that ran `plan` and finished now.
    pub fn new(plan: &Plan, finished: Finished) -> BuildRecord {
        BuildRecord {
            recipe: plan.recipe.clone(),
            accelerator: plan.accelerator.unwrap_or(Accelerator::Tcg),
            base_image: finished.base_image,
            base_image_url: finished.base_image_url,
            base_image_signed_by: finished.base_image_signed_by,
            outputs: finished.outputs,
            build_ssh_public_key: finished.build_ssh_public_key,
            tools: finished.tools,
            started: finished.started,
            finished: crate::utc::now(),
            seconds: Some(finished.started_at.elapsed().as_secs_f64()),
            packer_seconds: Some(finished.packer_seconds),
            timeline: finished.timeline,
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::plan::Provider;

    #[test]
    fn record_round_trips() {
        let record = BuildRecord {
            recipe: Recipe {
                channel: "stable".into(),
                version: "4081.2.0".into(),
                arch: "amd64".into(),
                provider: Provider::Qemu,
                kubernetes_semver: "v1.36.1".into(),
                containerd_version: "2.1.4".into(),
                cni_version: "1.8.0".into(),
            },
            accelerator: Accelerator::Tcg,
            base_image: Some(Artifact {
                file: "flatcar_production_qemu_image.img".into(),
                sha512: "ab".into(),
            }),
            base_image_url: Some("https://mirror.example/flatcar_production_qemu_image.img".into()),
            base_image_signed_by: None,
            outputs: vec![Artifact {
                file: "flatcar-stable-4081.2.0-kube-v1.36.1".into(),
                sha512: "cd".into(),
            }],
            build_ssh_public_key: "ssh-ed25519 AAAA build".into(),
            tools: BTreeMap::from([("packer".into(), "1.6.6".into())]),
            started: "2026-11-24 06:49:05 UTC".into(),
            finished: "2026-11-24 07:09:05 UTC".into(),
            seconds: Some(1200.0),
            packer_seconds: Some(1198.5),
            timeline: Timeline::default(),
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), record.to_json()).unwrap();
        assert_eq!(BuildRecord::read(dir.path()).unwrap(), record);
    }
}
