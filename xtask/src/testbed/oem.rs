//! What Flatcar's OEM partition holds for a platform: `grub.cfg`, which sets the
//! `oem_id` GRUB passes to the initramfs as `flatcar.oem.id` (the first boot reads
//! the Ignition config from that platform's channel), and `oem-release`. The generic
//! (metal) image's OEM partition is empty. Flatcar's OEM sysexts are left out: for
//! the platforms the test bed boots they are empty.

use crate::flatcar::platform::Platform;

/// The OEM partition's files (name, text) for `platform` on release `version`.
pub fn files(platform: Platform, version: &str) -> Vec<(&'static str, String)> {
    let Some(id) = platform.oem_id() else {
        return Vec::new();
    };
    vec![
        (
            "grub.cfg",
            format!("# Flatcar GRUB settings for the {id} platform\nset oem_id=\"{id}\"\n"),
        ),
        (
            "oem-release",
            format!(
                "ID={id}\nVERSION_ID={version}\nNAME=\"{}\"\n",
                display_name(platform)
            ),
        ),
    ]
}

fn display_name(platform: Platform) -> &'static str {
    match platform {
        Platform::Qemu => "QEMU",
        Platform::Openstack => "OpenStack",
        Platform::Proxmoxve => "Proxmox VE",
        Platform::Kubevirt => "KubeVirt",
        Platform::Metal => "Bare metal",
        Platform::Hetzner => "Hetzner Cloud",
        Platform::Vmware => "VMware",
        Platform::Azure => "Microsoft Azure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_platform_names_its_oem_id_and_metal_has_none() {
        expect_test::expect![[r##"
            [
                (
                    "grub.cfg",
                    "# Flatcar GRUB settings for the openstack platform\nset oem_id=\"openstack\"\n",
                ),
                (
                    "oem-release",
                    "ID=openstack\nVERSION_ID=9999.0.0\nNAME=\"OpenStack\"\n",
                ),
            ]
        "##]]
        .assert_debug_eq(&files(Platform::Openstack, "9999.0.0"));
        assert!(files(Platform::Metal, "9999.0.0").is_empty());
        for platform in Platform::ALL {
            let files = files(platform, "1.2.3");
            if let Some(id) = platform.oem_id() {
                assert!(files[0].1.contains(&format!("\nset oem_id=\"{id}\"\n")));
                assert!(files[1]
                    .1
                    .starts_with(&format!("ID={id}\nVERSION_ID=1.2.3\n")));
            }
        }
    }
}
