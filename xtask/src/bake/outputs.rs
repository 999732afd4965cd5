//! A baked raw disk turned into what the platform's Cluster API provider
//! consumes, each output checked the way its consumer reads it right after it is
//! written, so a bake never installs an output its own check would refuse.

use std::path::Path;

use anyhow::ensure;
use xshell::Shell;

use crate::disk_formats::{container_disk, metal, ova, qcow2, vagrant_box, vhd};
use crate::flatcar::platform::{Output, Platform};
use crate::flatcar::release::Arch;

/// Writes `platform`'s outputs of `raw` into `out_dir` as `<base_name>.<ext>`
/// (the names `plan::outputs` lists), every time stamp `time`; `work` holds
/// intermediate files.
pub fn write(
    sh: &Shell,
    platform: Platform,
    raw: &Path,
    (out_dir, work): (&Path, &Path),
    base_name: &str,
    arch: Arch,
    time: u64,
) -> anyhow::Result<()> {
    let size = std::fs::metadata(raw)?.len();
    match platform.output() {
        Output::Qcow2AndBox => {
            let image = qcow2::write(sh, raw, out_dir, base_name)?;
            qcow2::check(sh, &image, size)?;
            let vagrant = vagrant_box::write(sh, &image, out_dir, base_name, time)?;
            vagrant_box::check(&vagrant)?;
        }
        Output::Qcow2 => {
            let image = qcow2::write(sh, raw, out_dir, base_name)?;
            qcow2::check(sh, &image, size)?;
        }
        Output::ContainerDisk => {
            let image = qcow2::write(sh, raw, work, base_name)?;
            qcow2::check(sh, &image, size)?;
            let oci = container_disk::write(sh, &image, out_dir, base_name, arch.name(), time)?;
            container_disk::check(&oci)?;
        }
        Output::CompressedRaw => {
            let compressed = metal::write(raw, out_dir, base_name)?;
            metal::check(sh, &compressed.image)?;
        }
        Output::Ova => {
            let appliance = ova::write(sh, raw, out_dir, base_name, time)?;
            let declared = ova::check(&appliance)?;
            ensure!(
                declared == size,
                "{} declares a {declared}-byte disk, but the baked disk has {size} bytes",
                appliance.display()
            );
        }
        Output::FixedVhd => {
            let image = vhd::write(sh, raw, out_dir, base_name, time)?;
            vhd::check(&image)?;
        }
    }
    Ok(())
}

/// Azure takes only virtual sizes of whole MiB: the raw disk grows to the next
/// one (the space after the last partition is free, and Flatcar grows ROOT into
/// it at first boot anyway).
pub fn grow_to_whole_mib(raw: &Path) -> anyhow::Result<()> {
    const MIB: u64 = 1 << 20;
    let file = std::fs::OpenOptions::new().write(true).open(raw)?;
    let size = file.metadata()?.len();
    if !size.is_multiple_of(MIB) {
        file.set_len(size.div_ceil(MIB) * MIB)?;
    }
    Ok(())
}
