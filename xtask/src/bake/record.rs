//! `build.json` of a baked output directory: the release image it started from,
//! the extension baked in and every output, each with its SHA-512.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::build::record::{Artifact, SignedBy, FILE_NAME};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BakeRecord {
    /// Always `bake`: tells this record from build-flatcar's.
    pub made_by: String,
    pub channel: String,
    pub version: String,
    pub arch: String,
    pub platform: String,
    pub kubernetes_version: String,
    /// The platform's verified release image, as fetched.
    pub base_image: Artifact,
    pub base_image_url: String,
    pub base_image_signed_by: Option<SignedBy>,
    /// The image's os-release the extension was checked against.
    pub os_release: String,
    pub sysext: Artifact,
    /// The verified upstream files the extension and the CNI plugins came from.
    pub sysext_inputs: Vec<Input>,
    /// The baked raw disk every output was converted from. It is not kept (the
    /// outputs hold it); its digest shows that two bakes made the same disk.
    pub raw_disk: Artifact,
    /// Where kubeadm, kubelet and kubectl are on the node (the extension's /usr/bin).
    pub kubernetes_bin_dir: String,
    pub outputs: Vec<Artifact>,
    pub started: String,
    pub finished: String,
}

/// One downloaded input, as verified against its published checksum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    pub name: String,
    pub version: String,
    pub url: String,
    pub sha512: String,
}

pub const MADE_BY: &str = "bake";

impl BakeRecord {
    pub fn read(output_dir: &Path) -> anyhow::Result<BakeRecord> {
        let path = output_dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let record: BakeRecord =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(
            record.made_by == MADE_BY,
            "{} is not a bake's record",
            path.display()
        );
        Ok(record)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a bake record always serializes") + "\n"
    }
}
