//! A tiny system extension for checking that a guest merges what a bake puts in
//! `/etc/extensions` the way Flatcar does: its binary appears in /usr/bin and its
//! unit, enabled by a symlink in /etc, starts on the boot that merges it (as a
//! baked kubelet.service must). Squashfs from mksquashfs, owned by root.

use std::path::Path;

use anyhow::Context;
use xshell::{cmd, Shell};

/// The extension's name (`/etc/extensions/<NAME>.raw`).
pub const NAME: &str = "rehearsal-sysext";
/// The program it adds, as the guest sees it once merged.
pub const BINARY: &str = "/usr/bin/rehearsal-sysext-hello";
/// The unit it ships in /usr/lib/systemd/system.
pub const UNIT: &str = "rehearsal-sysext.service";
/// What the program prints.
pub const GREETING: &str = "hello from a merged sysext";

/// The extension's files (path below the extension's root, mode, text).
pub fn files() -> Vec<(String, u32, String)> {
    vec![
        (
            BINARY.trim_start_matches('/').to_owned(),
            0o755,
            format!("#!/bin/sh\necho '{GREETING}'\n"),
        ),
        (
            format!("usr/lib/systemd/system/{UNIT}"),
            0o644,
            format!(
                "[Unit]\nDescription=Shipped inside the {NAME} extension\n\n\
                 [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={BINARY}\n\n\
                 [Install]\nWantedBy=multi-user.target\n"
            ),
        ),
        (
            format!("usr/lib/extension-release.d/extension-release.{NAME}"),
            0o644,
            // What Flatcar requires of an extension: its ID and sysext level.
            "ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\n".to_owned(),
        ),
    ]
}

/// Writes the extension image to `out`.
pub fn write(sh: &Shell, out: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let staging = tempfile::tempdir().context("creating a temporary directory")?;
    for (path, mode, text) in files() {
        let path = staging.path().join(path);
        let parent = path
            .parent()
            .context("an extension file has no directory")?;
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    let tree = staging.path();
    cmd!(
        sh,
        "mksquashfs {tree} {out} -all-root -noappend -quiet -no-progress"
    )
    .quiet()
    .ignore_stdout()
    .run()
    .with_context(|| format!("making the test extension {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_is_a_squashfs_with_its_release_file() {
        let sh = Shell::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ext.raw");
        write(&sh, &out).unwrap();
        let listing = cmd!(sh, "unsquashfs -lls {out}").read().unwrap();
        assert!(
            listing.contains("root/root") && listing.contains("/usr/bin/rehearsal-sysext-hello"),
            "{listing}"
        );
        assert!(
            listing.contains("extension-release.rehearsal-sysext"),
            "{listing}"
        );
    }
}
