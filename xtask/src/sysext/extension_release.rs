//! The metadata a systemd system extension carries
//! (`usr/lib/extension-release.d/extension-release.<name>`) and the test
//! systemd-sysext applies before merging it: an extension whose metadata does not
//! match the image's os-release is silently skipped at boot, so the bake refuses it
//! up front instead.

use std::collections::BTreeMap;

use anyhow::bail;

use crate::flatcar::release::Arch;

/// Flatcar's os-release says `SYSEXT_LEVEL=1.0`: an extension that names the
/// level instead of one `VERSION_ID` keeps working across OS updates.
pub const SYSEXT_LEVEL: &str = "1.0";

/// The architecture as systemd names it (`ARCHITECTURE=`, sysupdate's `%a`).
pub fn systemd_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "x86-64",
        Arch::Arm64 => "arm64",
    }
}

/// The extension-release text of a Flatcar extension for `arch`.
/// `EXTENSION_RELOAD_MANAGER=1` makes systemd-sysext reload the service manager
/// after merging, so the kubelet unit the extension brings is known to systemd
/// without a `daemon-reload` of our own.
pub fn render(arch: Arch) -> String {
    format!(
        "ID=flatcar\nSYSEXT_LEVEL={SYSEXT_LEVEL}\nARCHITECTURE={}\nEXTENSION_RELOAD_MANAGER=1\n",
        systemd_arch(arch)
    )
}

/// `KEY=VALUE` lines as os-release(5) writes them: `#` comments, blank lines, and
/// values optionally in single or double quotes.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| {
            let value = value.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(value);
            (key.trim().to_string(), unquoted.replace("\\\"", "\""))
        })
        .collect()
}

/// Whether systemd-sysext on an image with `os_release` for `image_arch` would
/// merge an extension with `extension`'s metadata; the error names both sides.
pub fn check_compatible(extension: &str, os_release: &str, image_arch: Arch) -> anyhow::Result<()> {
    let ext = parse(extension);
    let os = parse(os_release);
    let get = |map: &BTreeMap<String, String>, key: &str| map.get(key).cloned().unwrap_or_default();
    let ext_id = get(&ext, "ID");
    if ext_id != "_any" {
        let os_id = get(&os, "ID");
        if ext_id != os_id {
            bail!("the extension's ID={ext_id} does not match the image's os-release ID={os_id}");
        }
        if let Some(level) = ext.get("SYSEXT_LEVEL") {
            let os_level = get(&os, "SYSEXT_LEVEL");
            if *level != os_level {
                bail!(
                    "the extension's SYSEXT_LEVEL={level} does not match the image's os-release SYSEXT_LEVEL={os_level}"
                );
            }
        } else {
            let version = get(&ext, "VERSION_ID");
            let os_version = get(&os, "VERSION_ID");
            if version.is_empty() || version != os_version {
                bail!(
                    "the extension's VERSION_ID={version} (and no SYSEXT_LEVEL) does not match the image's os-release VERSION_ID={os_version}"
                );
            }
        }
    }
    if let Some(arch) = ext.get("ARCHITECTURE") {
        let image = systemd_arch(image_arch);
        if arch != "_any" && arch != image {
            bail!("the extension's ARCHITECTURE={arch} does not match the image's architecture {image}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLATCAR: &str = "NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nID_LIKE=coreos\nVERSION=4081.2.0\nVERSION_ID=4081.2.0\nSYSEXT_LEVEL=1.0\n";

    #[test]
    fn our_extension_matches_flatcar() {
        check_compatible(&render(Arch::Amd64), FLATCAR, Arch::Amd64).unwrap();
        assert_eq!(
            render(Arch::Arm64),
            "ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=arm64\nEXTENSION_RELOAD_MANAGER=1\n"
        );
    }

    #[test]
    fn a_mismatch_names_both_values() {
        let err =
            |ext: &str, os: &str, arch| check_compatible(ext, os, arch).unwrap_err().to_string();
        assert_eq!(
            err(
                &render(Arch::Amd64),
                "ID=debian\nSYSEXT_LEVEL=1.0\n",
                Arch::Amd64
            ),
            "the extension's ID=flatcar does not match the image's os-release ID=debian"
        );
        assert_eq!(
            err(
                &render(Arch::Amd64),
                "ID=flatcar\nVERSION_ID=4081.2.0\n",
                Arch::Amd64
            ),
            "the extension's SYSEXT_LEVEL=1.0 does not match the image's os-release SYSEXT_LEVEL="
        );
        assert_eq!(
            err(&render(Arch::Arm64), FLATCAR, Arch::Amd64),
            "the extension's ARCHITECTURE=arm64 does not match the image's architecture x86-64"
        );
        assert_eq!(
            err("ID=flatcar\nVERSION_ID=4081.1.0\n", FLATCAR, Arch::Amd64),
            "the extension's VERSION_ID=4081.1.0 (and no SYSEXT_LEVEL) does not match the image's os-release VERSION_ID=4081.2.0"
        );
    }

    #[test]
    fn any_id_and_version_id_are_accepted_as_systemd_does() {
        check_compatible("ID=_any\nARCHITECTURE=_any\n", "ID=debian\n", Arch::Amd64).unwrap();
        check_compatible("ID=flatcar\nVERSION_ID=4081.2.0\n", FLATCAR, Arch::Amd64).unwrap();
    }

    #[test]
    fn quotes_and_comments_are_read_as_os_release_writes_them() {
        let parsed = parse("# c\n\nID='flatcar'\nNAME=\"Flatcar \\\"CL\\\"\"\n");
        assert_eq!(parsed["ID"], "flatcar");
        assert_eq!(parsed["NAME"], "Flatcar \"CL\"");
    }
}
