//! KubeVirt's containerDisk: an OCI image whose one layer holds the qcow2 under
//! `/disk/`, owned by UID and GID 107 (KubeVirt's qemu user) and readable by it,
//! shipped as an OCI image layout in a tar (`oci-archive:` for skopeo and podman).
//! The layer is an uncompressed tar: the qcow2 inside is compressed already.
//! Fixed owners, modes and times and sorted members make the same qcow2 give the
//! same bytes, and so the same image digest.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};
use sha2::Digest;
use xshell::Shell;

use super::tar::{self, Kind, Stamp};
use crate::fsx::{write_atomically, AtomicFile};

/// KubeVirt runs qemu as this user and group.
pub const QEMU_ID: u64 = 107;
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// The largest JSON document a check reads into memory.
const JSON_LIMIT: u64 = 1 << 20;

/// A blob's descriptor: media type, digest, size.
fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", crate::hex::encode(&sha2::Sha256::digest(bytes))),
        "size": bytes.len(),
    })
}

/// The image configuration: the platform and the one layer's uncompressed digest.
pub fn config_json(
    architecture: &str,
    created: u64,
    layer_digest: &str,
    base_name: &str,
) -> String {
    let created = rfc3339(created);
    json!({
        "architecture": architecture,
        "os": "linux",
        "created": created,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{
            "created": created,
            "created_by": format!("cargo xtask bake: the KubeVirt containerDisk of {base_name}"),
        }],
    })
    .to_string()
}

/// `seconds` since the epoch as RFC 3339 (`2024-01-31T12:00:00Z`).
fn rfc3339(seconds: u64) -> String {
    crate::utc::format(seconds)
        .replacen(' ', "T", 1)
        .replace(" UTC", "Z")
}

/// Writes `<out_dir>/<base_name>.oci.tar` from the qcow2 `qcow2`: the disk at
/// `/disk/<base_name>.qcow2`, the image for `architecture` (`amd64`, `arm64`)
/// created at `created` (seconds since the epoch, also every member's mtime) and
/// named `<base_name>` in the layout's index. Returns its path.
pub fn write(
    sh: &Shell,
    qcow2: &Path,
    out_dir: &Path,
    base_name: &str,
    architecture: &str,
    created: u64,
) -> anyhow::Result<PathBuf> {
    let path = out_dir.join(super::output_name(base_name, "oci.tar")?);
    let staging = super::staging_dir(out_dir, base_name)?;
    let root = staging.path().join("layer");
    std::fs::create_dir_all(root.join("disk"))?;
    super::link_or_copy(
        qcow2,
        &root
            .join("disk")
            .join(super::output_name(base_name, "qcow2")?),
    )?;
    let layer = staging.path().join("layer.tar");
    let layer_stamp = Stamp {
        uid: QEMU_ID as u32,
        gid: QEMU_ID as u32,
        mode: "a=rX",
        mtime: created,
    };
    tar::create(sh, &root, &["disk"], &layer, &layer_stamp)?;
    let layer_hex = super::sha256_file(&layer)?;
    let layer_descriptor = json!({
        "mediaType": LAYER_TYPE,
        "digest": format!("sha256:{layer_hex}"),
        "size": super::file_size(&layer)?,
    });
    let config = config_json(
        architecture,
        created,
        &format!("sha256:{layer_hex}"),
        base_name,
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor(CONFIG_TYPE, config.as_bytes()),
        "layers": [layer_descriptor],
    })
    .to_string();
    let mut manifest_descriptor = descriptor(MANIFEST_TYPE, manifest.as_bytes());
    manifest_descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": base_name});
    let index =
        json!({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [manifest_descriptor]});

    let layout = staging.path().join("oci");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    crate::fsx::rename_durably(&layer, &blobs.join(&layer_hex))?;
    for blob in [&config, &manifest] {
        let hex = crate::hex::encode(&sha2::Sha256::digest(blob.as_bytes()));
        write_atomically(&blobs.join(hex), blob.as_bytes())?;
    }
    write_atomically(
        &layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    write_atomically(&layout.join("index.json"), index.to_string().as_bytes())?;

    let file = AtomicFile::create(&path)?;
    let stamp = Stamp {
        uid: 0,
        gid: 0,
        mode: "u=rwX,go=rX",
        mtime: created,
    };
    tar::create(
        sh,
        &layout,
        &["oci-layout", "index.json", "blobs"],
        file.temp_path(),
        &stamp,
    )?;
    file.commit()?;
    Ok(path)
}

/// Checks an OCI archive as a runtime loads it: the layout version, every blob
/// the index reaches present with its digest and size, a config naming a platform
/// whose diff IDs are the layers, and in the layer one disk under `disk/` that is
/// a qcow2 readable by UID 107.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let entries = tar::list(path)?;
    let mut archive = Archive {
        file: tar::open(path)?,
        entries,
    };
    let layout = archive.json("oci-layout")?;
    let mut problems = Vec::new();
    if layout["imageLayoutVersion"] != "1.0.0" {
        problems.push(format!(
            "oci-layout: imageLayoutVersion is {}, not \"1.0.0\"",
            layout["imageLayoutVersion"]
        ));
    }
    let index = archive.json("index.json")?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    if manifests.is_empty() {
        problems.push("index.json lists no manifests".to_owned());
    }
    for manifest in &manifests {
        problems.extend(archive.manifest_problems(manifest)?);
    }
    super::verdict(path, problems)
}

/// An OCI archive being checked.
struct Archive {
    file: std::fs::File,
    entries: Vec<tar::Entry>,
}

impl Archive {
    fn member(&self, name: &str) -> anyhow::Result<tar::Entry> {
        self.entries
            .iter()
            .find(|e| e.name == name && e.kind == Kind::File)
            .cloned()
            .with_context(|| format!("the archive has no {name}"))
    }

    fn json(&mut self, name: &str) -> anyhow::Result<Value> {
        let entry = self.member(name)?;
        let bytes = tar::read_member(&mut self.file, &entry, JSON_LIMIT)?;
        serde_json::from_slice(&bytes).with_context(|| format!("{name} is not JSON"))
    }

    /// The blob a descriptor names, checked against its digest and size.
    fn blob(
        &mut self,
        descriptor: &Value,
        problems: &mut Vec<String>,
    ) -> anyhow::Result<Option<tar::Entry>> {
        let Some(hex) = descriptor["digest"]
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
        else {
            problems.push(format!("descriptor {descriptor} has no sha256 digest"));
            return Ok(None);
        };
        let Ok(entry) = self.member(&format!("blobs/sha256/{hex}")) else {
            problems.push(format!("blob sha256:{hex} is missing"));
            return Ok(None);
        };
        if descriptor["size"].as_u64() != Some(entry.size) {
            problems.push(format!(
                "blob sha256:{hex} has {} bytes, its descriptor says {}",
                entry.size, descriptor["size"]
            ));
        }
        let actual = tar::sha256_member(&mut self.file, &entry)?;
        if actual != hex {
            problems.push(format!("blob sha256:{hex} has the digest sha256:{actual}"));
        }
        Ok(Some(entry))
    }

    fn manifest_problems(&mut self, descriptor: &Value) -> anyhow::Result<Vec<String>> {
        let mut problems = Vec::new();
        let Some(entry) = self.blob(descriptor, &mut problems)? else {
            return Ok(problems);
        };
        let manifest: Value =
            serde_json::from_slice(&tar::read_member(&mut self.file, &entry, JSON_LIMIT)?)
                .context("the image manifest is not JSON")?;
        if manifest["mediaType"] != MANIFEST_TYPE || manifest["schemaVersion"] != 2 {
            problems.push(format!(
                "the manifest is not an OCI image manifest (schemaVersion 2, {MANIFEST_TYPE})"
            ));
        }
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        if let Some(config) = self.blob(&manifest["config"], &mut problems)? {
            let config: Value =
                serde_json::from_slice(&tar::read_member(&mut self.file, &config, JSON_LIMIT)?)
                    .context("the image config is not JSON")?;
            for key in ["architecture", "os"] {
                if config[key].as_str().is_none_or(str::is_empty) {
                    problems.push(format!("the image config has no `{key}`"));
                }
            }
            let layer_digests: Vec<&Value> = layers.iter().map(|l| &l["digest"]).collect();
            let diff_ids: Vec<&Value> = config["rootfs"]["diff_ids"]
                .as_array()
                .map(|d| d.iter().collect())
                .unwrap_or_default();
            if diff_ids != layer_digests {
                problems.push(
                    "the config's rootfs.diff_ids are not the digests of the (uncompressed) layers"
                        .to_owned(),
                );
            }
        }
        let mut disks = Vec::new();
        for layer in &layers {
            if layer["mediaType"] != LAYER_TYPE {
                problems.push(format!(
                    "layer media type {} is not {LAYER_TYPE}",
                    layer["mediaType"]
                ));
            } else if let Some(entry) = self.blob(layer, &mut problems)? {
                disks.extend(self.layer_disks(&entry, &mut problems)?);
            }
        }
        if disks.len() != 1 {
            problems.push(format!(
                "the image holds {} disks under disk/ ({disks:?}), not one",
                disks.len()
            ));
        }
        Ok(problems)
    }

    /// The regular files under `disk/` in a layer, each checked for UID 107.
    fn layer_disks(
        &mut self,
        layer: &tar::Entry,
        problems: &mut Vec<String>,
    ) -> anyhow::Result<Vec<String>> {
        let members = tar::list_within(&mut self.file, layer.offset, layer.size)
            .context("reading the layer")?;
        let mut disks = Vec::new();
        for member in &members {
            let name = member.name.trim_start_matches("./").trim_start_matches('/');
            if member.kind == Kind::Directory
                && name.trim_end_matches('/') == "disk"
                && !can_access(member, 0o1)
            {
                problems.push(format!(
                    "disk/ (mode {:o}, owner {}:{}) is not searchable by UID 107",
                    member.mode, member.uid, member.gid
                ));
            }
            if member.kind != Kind::File || !name.starts_with("disk/") {
                continue;
            }
            if !can_access(member, 0o4) {
                problems.push(format!(
                    "{name} (mode {:o}, owner {}:{}) is not readable by UID 107",
                    member.mode, member.uid, member.gid
                ));
            }
            if tar::member_head(&mut self.file, member, 4)? != b"QFI\xfb" {
                problems.push(format!("{name} is not a qcow2 image"));
            }
            disks.push(name.to_owned());
        }
        Ok(disks)
    }
}

/// Whether UID/GID 107 has the permission `bit` (4 read, 1 search) on a member.
fn can_access(member: &tar::Entry, bit: u32) -> bool {
    let class = if member.uid == QEMU_ID {
        member.mode >> 6
    } else if member.gid == QEMU_ID {
        member.mode >> 3
    } else {
        member.mode
    };
    class & bit != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_names_platform_layer_and_time() {
        expect_test::expect![[r#"{"architecture":"amd64","config":{},"created":"2023-11-14T22:13:20Z","history":[{"created":"2023-11-14T22:13:20Z","created_by":"cargo xtask bake: the KubeVirt containerDisk of flatcar-x"}],"os":"linux","rootfs":{"diff_ids":["sha256:ab"],"type":"layers"}}"#]]
        .assert_eq(&config_json("amd64", 1_700_000_000, "sha256:ab", "flatcar-x"));
    }

    #[test]
    fn access_goes_by_owner_then_group_then_others() {
        let member = |uid, gid, mode| tar::Entry {
            name: "disk/x.qcow2".into(),
            mode,
            uid,
            gid,
            size: 0,
            mtime: 0,
            kind: Kind::File,
            offset: 0,
        };
        assert!(can_access(&member(107, 107, 0o440), 0o4));
        assert!(can_access(&member(0, 107, 0o440), 0o4));
        assert!(!can_access(&member(0, 0, 0o440), 0o4));
        assert!(can_access(&member(0, 0, 0o444), 0o4));
        // The owner class decides for the owner, even when others could read.
        assert!(!can_access(&member(107, 0, 0o044), 0o4));
        assert!(can_access(&member(107, 107, 0o555), 0o1));
    }
}
