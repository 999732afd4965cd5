//! The rehearsal guest as a release publishes it for each platform: the same disk
//! with the platform's OEM partition (its `oem_id`, so that the first boot reads the
//! platform's config channel), in the platform's container, under Flatcar's artifact
//! name. Made from the cached guest on first use and cached beside it (the guest's
//! directory is keyed by its recipe, so a new guest gets new platform images).
//! VMware's OVA and Azure's fixed VHD are made with the bake's own converters
//! (`disk_formats`): they cannot boot here, but a bake of every platform needs them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::guest::Guest;
use super::{disk, oem};
use crate::disk_formats::{ova, vhd};
use crate::flatcar::platform::{Platform, SourceFormat};

/// The platforms whose image the test bed makes and QEMU boots: every platform whose
/// release file is a qcow2 or a raw disk.
pub const BOOTABLE: [Platform; 6] = [
    Platform::Qemu,
    Platform::Openstack,
    Platform::Proxmoxve,
    Platform::Kubevirt,
    Platform::Metal,
    Platform::Hetzner,
];

/// Every platform a release publishes an image for: the bootable ones, then the
/// two whose container QEMU does not boot (checked structurally instead).
pub const PUBLISHED: [Platform; 8] = [
    Platform::Qemu,
    Platform::Openstack,
    Platform::Proxmoxve,
    Platform::Kubevirt,
    Platform::Metal,
    Platform::Hetzner,
    Platform::Vmware,
    Platform::Azure,
];

/// One platform's image, as a release serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedImage {
    pub platform: Platform,
    /// The file name in the release directory (Flatcar's artifact name).
    pub file_name: String,
    pub path: PathBuf,
}

/// The release file Flatcar publishes for a platform: qcow2 images and the OVA as
/// they are, raw disks and the VHD only bzip2-compressed
/// (`flatcar_production_image.bin.bz2`, `flatcar_production_azure_image.vhd.bz2`).
pub fn published_name(platform: Platform) -> String {
    let [plain, compressed] = platform.published_files();
    match platform.source_format() {
        SourceFormat::Qcow2 | SourceFormat::Ova => plain,
        SourceFormat::Raw | SourceFormat::Vhd => compressed,
    }
}

/// The images for `platforms`, in that order.
pub fn images(
    sh: &Shell,
    guest: &Guest,
    platforms: &[Platform],
) -> anyhow::Result<Vec<PublishedImage>> {
    platforms
        .iter()
        .map(|&platform| image(sh, guest, platform))
        .collect()
}

/// The guest published for `platform`, made now unless cached.
pub fn image(sh: &Shell, guest: &Guest, platform: Platform) -> anyhow::Result<PublishedImage> {
    let file_name = published_name(platform);
    if platform == Platform::Qemu {
        // The cached guest is QEMU's image: its OEM partition says `qemu`.
        return Ok(PublishedImage {
            platform,
            file_name,
            path: guest.image.clone(),
        });
    }
    let dir = guest
        .image
        .parent()
        .context("the guest image has no directory")?
        .join("platforms");
    let path = dir.join(&file_name);
    if !path.is_file() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        eprintln!("Making the rehearsal guest's {platform} image ...");
        make(sh, &guest.image, platform, &path)
            .with_context(|| format!("making the {platform} image {}", path.display()))?;
    }
    Ok(PublishedImage {
        platform,
        file_name,
        path,
    })
}

/// Writes the `platform` image of the qcow2 `base` to `out` (through a temporary
/// file beside it, renamed when complete).
fn make(sh: &Shell, base: &Path, platform: Platform, out: &Path) -> anyhow::Result<()> {
    let dir = out.parent().context("the output has no directory")?;
    let work = tempfile::tempdir_in(dir)
        .with_context(|| format!("creating a temporary directory in {}", dir.display()))?;
    let raw = work.path().join("disk.raw");
    cmd!(sh, "qemu-img convert -O raw {base} {raw}")
        .quiet()
        .run()
        .context("unpacking the guest's disk")?;
    disk::write_oem(sh, &raw, &oem::files(platform, super::FLATCAR_VERSION))?;
    let made = work.path().join("image");
    // The converters name their output after a base name; the artifact's stem is
    // Flatcar's (`flatcar_production_vmware_ova`, `flatcar_production_azure_image`).
    let stem = platform
        .image_file_name()
        .rsplit_once('.')
        .map_or(platform.image_file_name(), |(stem, _)| stem);
    // Release images carry no meaningful time: the epoch, like a bake without
    // SOURCE_DATE_EPOCH.
    match platform.source_format() {
        SourceFormat::Qcow2 => cmd!(sh, "qemu-img convert -c -O qcow2 {raw} {made}")
            .quiet()
            .run()
            .context("compressing the disk into a qcow2")?,
        SourceFormat::Raw => bzip2(&raw, &made)?,
        SourceFormat::Ova => {
            let ova = ova::write(sh, &raw, work.path(), stem, 0)?;
            ova::check(&ova)?;
            std::fs::rename(&ova, &made).context("naming the OVA")?;
        }
        SourceFormat::Vhd => {
            let vhd = vhd::write(sh, &raw, work.path(), stem, 0)?;
            // The raw disk is not needed any more: free its space before compressing.
            std::fs::remove_file(&raw).context("removing the unpacked disk")?;
            bzip2(&vhd, &made)?;
        }
    }
    std::fs::rename(&made, out)
        .with_context(|| format!("renaming {} to {}", made.display(), out.display()))
}

/// `bzip2 --stdout raw > out`.
fn bzip2(raw: &Path, out: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let status = std::process::Command::new("bzip2")
        .arg("--stdout")
        .arg(raw)
        .stdout(file)
        .status()
        .context("running bzip2")?;
    if !status.success() {
        bail!("bzip2 {} failed ({status})", raw.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_names_are_flatcars_artifacts() {
        let names: Vec<String> = PUBLISHED.iter().map(|&p| published_name(p)).collect();
        assert_eq!(
            names,
            [
                "flatcar_production_qemu_image.img",
                "flatcar_production_openstack_image.img",
                "flatcar_production_proxmoxve_image.img",
                "flatcar_production_kubevirt_image.qcow2",
                "flatcar_production_image.bin.bz2",
                "flatcar_production_hetzner_image.bin.bz2",
                "flatcar_production_vmware_ova.ova",
                "flatcar_production_azure_image.vhd.bz2",
            ]
        );
    }
}
