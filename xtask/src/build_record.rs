//! `build.json`: what went into a build and what came out, with digests, so an
//! image can be traced to its inputs and checked later. `verify-vagrant` and
//! `boxes` read it back to know which release an output directory holds.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use crate::accelerator::Accelerator;

/// The name of the record in an output directory.
pub(crate) const FILE_NAME: &str = "build.json";

/// One file and its SHA-512.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Artifact {
    pub(crate) file: String,
    pub(crate) sha512: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BuildRecord {
    pub(crate) channel: String,
    pub(crate) version: String,
    pub(crate) arch: String,
    pub(crate) provider: String,
    pub(crate) kubernetes_semver: String,
    pub(crate) containerd_version: String,
    pub(crate) cni_version: String,
    pub(crate) accelerator: Accelerator,
    /// The verified Flatcar image the build started from.
    pub(crate) base_image: Artifact,
    pub(crate) outputs: Vec<Artifact>,
    /// The public half of the build's key, which sysprep must have removed.
    pub(crate) build_ssh_public_key: String,
    /// Tool name to version.
    pub(crate) tools: BTreeMap<String, String>,
    pub(crate) started: String,
    pub(crate) finished: String,
}

impl BuildRecord {
    pub(crate) fn read(output_dir: &Path) -> anyhow::Result<BuildRecord> {
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

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a build record always serializes") + "\n"
    }
}

/// The SHA-512 of a file, as lowercase hex, read in one streaming pass.
pub(crate) fn sha512_file(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha512::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Now, as an RFC 3339 UTC timestamp.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_502_945), "2026-11-24T06:49:05Z");
    }

    #[test]
    fn sha512_of_a_known_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, "abc").unwrap();
        assert_eq!(
            sha512_file(&path).unwrap(),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

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
            started: "2026-11-24T06:49:05Z".into(),
            finished: "2026-11-24T07:09:05Z".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), record.to_json()).unwrap();
        assert_eq!(BuildRecord::read(dir.path()).unwrap(), record);
    }
}
