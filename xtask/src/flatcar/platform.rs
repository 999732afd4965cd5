//! Flatcar's platforms as a Cluster API image needs them: which file of a release is
//! the platform's own image, which OEM ID it boots with, where its first boot reads
//! the Ignition config from, and what the platform's Cluster API provider consumes.
//! Facts from Flatcar's image build (`vm_image_util.sh`, the OEM `grub.cfg` files)
//! and Ignition's providers; see ../shared/FLATCAR-PLATFORMS.md.

use std::fmt;
use std::str::FromStr;

use super::release::Variant;

/// A platform a node image is made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Platform {
    Qemu,
    Openstack,
    Proxmoxve,
    Kubevirt,
    Metal,
    Hetzner,
    Vmware,
    Azure,
}

/// How the platform's release file stores the disk, once decompressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceFormat {
    Qcow2,
    Raw,
    /// A tar of an OVF, its manifest and a stream-optimized VMDK.
    Ova,
    /// A fixed VHD: the raw disk followed by a 512-byte footer.
    Vhd,
}

/// What the platform's Cluster API provider (or the platform itself) takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A qcow2, and a libvirt Vagrant box of it (`verify-vagrant` boots that).
    Qcow2AndBox,
    /// A qcow2 to upload (Glance, Proxmox's disk import).
    Qcow2,
    /// A KubeVirt containerDisk: an OCI image with the disk under `/disk/`.
    ContainerDisk,
    /// A compressed raw disk with its checksum file (Metal3, CAPT, Hetzner's rescue).
    CompressedRaw,
    /// An OVA with a stream-optimized VMDK (vSphere templates).
    Ova,
    /// A fixed VHD of a whole number of MiB (Azure).
    FixedVhd,
}

/// Where Flatcar's first boot reads the Ignition config from on the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigChannel {
    /// QEMU's fw_cfg item `opt/org.flatcar-linux/config`.
    FwCfg,
    /// A drive labelled `config-2` holding `openstack/latest/user_data` (OpenStack also
    /// serves it from the metadata service; KubeVirt waits for the drive forever).
    ConfigDrive,
    /// A drive labelled `cidata` holding `/user-data`, JSON only.
    CloudInitDrive,
    /// The `ignition.config.url=` kernel argument or `/oem/config.ign`.
    KernelArgument,
    /// The metadata service at 169.254.169.254.
    MetadataService,
    /// VMware guestinfo `ignition.config.data`.
    GuestInfo,
    /// Azure's `CustomData.bin` on the provisioning CD-ROM.
    CustomData,
}

impl Platform {
    pub const ALL: [Platform; 8] = [
        Platform::Qemu,
        Platform::Openstack,
        Platform::Proxmoxve,
        Platform::Kubevirt,
        Platform::Metal,
        Platform::Hetzner,
        Platform::Vmware,
        Platform::Azure,
    ];

    /// The name on the command line and in output directory names.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Qemu => "qemu",
            Platform::Openstack => "openstack",
            Platform::Proxmoxve => "proxmoxve",
            Platform::Kubevirt => "kubevirt",
            Platform::Metal => "metal",
            Platform::Hetzner => "hetzner",
            Platform::Vmware => "vmware",
            Platform::Azure => "azure",
        }
    }

    /// The `oem_id` the image's OEM `grub.cfg` sets; `None` for the generic image,
    /// which boots as `metal`.
    pub fn oem_id(self) -> Option<&'static str> {
        match self {
            Platform::Metal => None,
            other => Some(other.name()),
        }
    }

    /// The platform's image in a release directory, as it is kept once decompressed.
    /// The release serves it as that name or, for the compressed-only artifacts, that
    /// name plus `.bz2` (see [`Platform::published_files`]).
    pub fn image_file_name(self) -> &'static str {
        match self {
            Platform::Qemu => Variant::Bios.image_file_name(),
            Platform::Openstack => "flatcar_production_openstack_image.img",
            Platform::Proxmoxve => "flatcar_production_proxmoxve_image.img",
            Platform::Kubevirt => "flatcar_production_kubevirt_image.qcow2",
            Platform::Metal => "flatcar_production_image.bin",
            Platform::Hetzner => "flatcar_production_hetzner_image.bin",
            Platform::Vmware => "flatcar_production_vmware_ova.ova",
            Platform::Azure => "flatcar_production_azure_image.vhd",
        }
    }

    /// The release files that hold the image, in the order they are looked for.
    pub fn published_files(self) -> [String; 2] {
        let name = self.image_file_name();
        [name.to_owned(), format!("{name}.bz2")]
    }

    pub fn source_format(self) -> SourceFormat {
        match self {
            Platform::Qemu | Platform::Openstack | Platform::Proxmoxve | Platform::Kubevirt => {
                SourceFormat::Qcow2
            }
            Platform::Metal | Platform::Hetzner => SourceFormat::Raw,
            Platform::Vmware => SourceFormat::Ova,
            Platform::Azure => SourceFormat::Vhd,
        }
    }

    pub fn output(self) -> Output {
        match self {
            Platform::Qemu => Output::Qcow2AndBox,
            Platform::Openstack | Platform::Proxmoxve => Output::Qcow2,
            Platform::Kubevirt => Output::ContainerDisk,
            Platform::Metal | Platform::Hetzner => Output::CompressedRaw,
            Platform::Vmware => Output::Ova,
            Platform::Azure => Output::FixedVhd,
        }
    }

    pub fn config_channel(self) -> ConfigChannel {
        match self {
            Platform::Qemu => ConfigChannel::FwCfg,
            Platform::Openstack | Platform::Kubevirt => ConfigChannel::ConfigDrive,
            Platform::Proxmoxve => ConfigChannel::CloudInitDrive,
            Platform::Metal => ConfigChannel::KernelArgument,
            Platform::Hetzner => ConfigChannel::MetadataService,
            Platform::Vmware => ConfigChannel::GuestInfo,
            Platform::Azure => ConfigChannel::CustomData,
        }
    }

    /// The vendor's image carries agents in its OEM sysext (open-vm-tools, WALinuxAgent):
    /// such a platform must start from its own artifact, never from another
    /// platform's image with the OEM ID changed.
    pub fn vendor_agents(self) -> bool {
        matches!(self, Platform::Vmware | Platform::Azure)
    }

    /// The known platform names, comma separated, for messages.
    pub fn known() -> String {
        Platform::ALL.map(Platform::name).join(", ")
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Platform, String> {
        Platform::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a platform this tool bakes; the known platforms are: {}",
                    Platform::known()
                )
            })
    }
}

/// The image of a release that a fetch asks for: QEMU's in a firmware variant (what
/// `build-flatcar` boots), or a platform's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseImage {
    Qemu(Variant),
    Platform(Platform),
}

impl ReleaseImage {
    /// The image's file name in a release directory and in the cache, decompressed.
    pub fn file_name(self) -> &'static str {
        match self {
            ReleaseImage::Qemu(variant) => variant.image_file_name(),
            ReleaseImage::Platform(platform) => platform.image_file_name(),
        }
    }
}

impl fmt::Display for ReleaseImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseImage::Qemu(variant) => write!(f, "QEMU {variant}"),
            ReleaseImage::Platform(platform) => write!(f, "{platform}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_an_unknown_name_lists_the_known_ones() {
        for platform in Platform::ALL {
            assert_eq!(platform.name().parse::<Platform>().unwrap(), platform);
        }
        let error = "vsphere".parse::<Platform>().unwrap_err();
        assert!(error.contains("`vsphere`"), "{error}");
        assert!(
            error.contains("qemu, openstack, proxmoxve, kubevirt, metal, hetzner, vmware, azure"),
            "{error}"
        );
    }

    #[test]
    fn artifact_names_follow_flatcars_image_build() {
        assert_eq!(
            Platform::Metal.published_files(),
            [
                "flatcar_production_image.bin".to_owned(),
                "flatcar_production_image.bin.bz2".to_owned()
            ]
        );
        assert_eq!(
            Platform::Qemu.image_file_name(),
            "flatcar_production_qemu_image.img"
        );
        assert_eq!(
            Platform::Azure.published_files()[1],
            "flatcar_production_azure_image.vhd.bz2"
        );
        let names: std::collections::BTreeSet<_> =
            Platform::ALL.map(Platform::image_file_name).into();
        assert_eq!(names.len(), Platform::ALL.len(), "one file per platform");
    }

    #[test]
    fn only_the_generic_image_has_no_oem_id() {
        for platform in Platform::ALL {
            assert_eq!(platform.oem_id().is_none(), platform == Platform::Metal);
        }
        assert_eq!(Platform::Proxmoxve.oem_id(), Some("proxmoxve"));
    }

    #[test]
    fn vendor_agent_platforms_start_from_their_own_artifact() {
        assert!(Platform::Vmware.vendor_agents() && Platform::Azure.vendor_agents());
        assert_eq!(Platform::Vmware.source_format(), SourceFormat::Ova);
        assert_eq!(Platform::Azure.source_format(), SourceFormat::Vhd);
        assert!(!Platform::Openstack.vendor_agents());
    }

    #[test]
    fn config_channels_follow_the_oem_id() {
        assert_eq!(Platform::Qemu.config_channel(), ConfigChannel::FwCfg);
        assert_eq!(
            Platform::Kubevirt.config_channel(),
            ConfigChannel::ConfigDrive
        );
        assert_eq!(
            Platform::Proxmoxve.config_channel(),
            ConfigChannel::CloudInitDrive
        );
    }
}
