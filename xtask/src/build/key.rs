//! The per-build SSH key: a fresh ed25519 pair made for one build, readable by its
//! owner only, never a well-known key. Packer logs in with it; sysprep removes its
//! public half from the image before the image is written.

use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::{cmd, Shell};

/// A key pair on disk.
pub struct BuildKey {
    pub private_key: PathBuf,
    /// The public key line (`ssh-ed25519 AAAA... comment`).
    pub public_key: String,
}

/// The private key's file name in the directory it is made in; the public key adds `.pub`.
pub const PRIVATE_KEY_FILE: &str = "id_ed25519";

/// Makes a new ed25519 key pair as `dir/id_ed25519` (mode 0600) and `.pub`.
pub fn generate(sh: &Shell, dir: &Path, comment: &str) -> anyhow::Result<BuildKey> {
    let private_key = dir.join(PRIVATE_KEY_FILE);
    let public_path = dir.join(format!("{PRIVATE_KEY_FILE}.pub"));
    for stale in [&private_key, &public_path] {
        if stale.exists() {
            std::fs::remove_file(stale)
                .with_context(|| format!("removing the old key {}", stale.display()))?;
        }
    }
    cmd!(
        sh,
        "ssh-keygen -q -t ed25519 -N '' -C {comment} -f {private_key}"
    )
    .quiet()
    .run()
    .with_context(|| format!("generating the build's SSH key in {}", dir.display()))?;
    let public_key = std::fs::read_to_string(&public_path)
        .with_context(|| format!("reading {}", public_path.display()))?
        .trim()
        .to_owned();
    Ok(BuildKey {
        private_key,
        public_key,
    })
}
