//! The OVF 1.0 descriptor of the VMware appliance (DMTF DSP0243): one virtual
//! system with one stream-optimized disk on an LSI Logic SCSI controller and one
//! VMXNET3 interface on "VM Network". CAPV clones the imported template and sets
//! CPUs, memory, network and the Ignition guestinfo itself, so these are only
//! defaults. Written as text here, and read back with an XML parser by the check.

use anyhow::{bail, Context};

const OVF_NS: &str = "http://schemas.dmtf.org/ovf/envelope/1";
const STREAM_OPTIMIZED: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// What the descriptor describes.
pub struct Appliance<'a> {
    /// The virtual system's ID and name (the template's name after import).
    pub name: &'a str,
    /// The VMDK's file name inside the OVA, and its size in bytes.
    pub disk_file: &'a str,
    pub disk_file_size: u64,
    /// The disk's virtual size in bytes.
    pub capacity: u64,
    pub cpus: u32,
    pub memory_mib: u32,
}

/// The descriptor. Within each hardware item the `rasd:` elements are in the
/// alphabetical order the CIM schema's sequence requires.
pub fn render(appliance: &Appliance<'_>) -> String {
    let name = escape(appliance.name);
    let file = escape(appliance.disk_file);
    let Appliance {
        disk_file_size,
        capacity,
        cpus,
        memory_mib,
        ..
    } = appliance;
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by `cargo xtask bake`: a Flatcar Container Linux Cluster API node. -->
<Envelope xmlns="{OVF_NS}" xmlns:ovf="{OVF_NS}" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:id="disk-file" ovf:href="{file}" ovf:size="{disk_file_size}"/>
  </References>
  <DiskSection>
    <Info>The node's disk</Info>
    <Disk ovf:diskId="disk" ovf:fileRef="disk-file" ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:format="{STREAM_OPTIMIZED}"/>
  </DiskSection>
  <NetworkSection>
    <Info>The network the node's interface is connected to</Info>
    <Network ovf:name="VM Network">
      <Description>The node network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A Flatcar Container Linux Cluster API node</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="36" vmw:osType="other3xLinux64Guest">
      <Info>The guest operating system: Linux (CIM type 36); vSphere reads vmw:osType</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>{cpus} virtual CPUs</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory size</rasd:Description>
        <rasd:ElementName>{memory_mib} MiB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{memory_mib}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI controller</rasd:Description>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/disk</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// `text` with the five XML special characters escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A file the descriptor references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    pub id: String,
    pub href: String,
    pub size: Option<u64>,
}

/// A disk the descriptor declares, with its capacity in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskDecl {
    pub file_ref: String,
    pub capacity: u64,
    pub format: String,
}

/// What a check needs from a descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    pub files: Vec<FileRef>,
    pub disks: Vec<DiskDecl>,
    pub virtual_systems: usize,
}

/// Parses a descriptor: an OVF `Envelope` with its `References`, `DiskSection`
/// and virtual systems. Errors name the line and column.
pub fn parse(text: &str) -> anyhow::Result<Declared> {
    let doc = roxmltree::Document::parse(text).context("the descriptor is not well-formed XML")?;
    let root = doc.root_element();
    if !root.has_tag_name((OVF_NS, "Envelope")) {
        bail!("the root element is not an OVF 1.x Envelope ({OVF_NS})");
    }
    let attribute = |node: roxmltree::Node<'_, '_>, name: &str| {
        node.attribute((OVF_NS, name))
            .map(str::to_owned)
            .with_context(|| {
                let at = doc.text_pos_at(node.range().start);
                format!(
                    "line {}, column {}: <{}> has no ovf:{name}",
                    at.row,
                    at.col,
                    node.tag_name().name()
                )
            })
    };
    let mut declared = Declared {
        files: Vec::new(),
        disks: Vec::new(),
        virtual_systems: children(root, "VirtualSystem").count(),
    };
    for references in children(root, "References") {
        for file in children(references, "File") {
            let size = file.attribute((OVF_NS, "size")).map(str::parse).transpose();
            declared.files.push(FileRef {
                id: attribute(file, "id")?,
                href: attribute(file, "href")?,
                size: size.context("ovf:size of a File is not a number")?,
            });
        }
    }
    for section in children(root, "DiskSection") {
        for disk in children(section, "Disk") {
            let units = disk.attribute((OVF_NS, "capacityAllocationUnits"));
            let capacity: u64 = attribute(disk, "capacity")?
                .parse()
                .context("ovf:capacity of a Disk is not a whole number")?;
            declared.disks.push(DiskDecl {
                file_ref: attribute(disk, "fileRef")?,
                capacity: capacity
                    .checked_mul(unit_bytes(units)?)
                    .context("ovf:capacity overflows")?,
                format: attribute(disk, "format")?,
            });
        }
    }
    Ok(declared)
}

/// The child elements of `parent` named `name` in the OVF namespace.
fn children<'a, 'input>(
    parent: roxmltree::Node<'a, 'input>,
    name: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'input>> {
    parent
        .children()
        .filter(move |n| n.has_tag_name((OVF_NS, name)))
}

/// Bytes per unit of `ovf:capacityAllocationUnits`: absent or `byte` is 1,
/// `byte * 2^N` is 2^N.
fn unit_bytes(units: Option<&str>) -> anyhow::Result<u64> {
    let Some(units) = units.map(str::trim) else {
        return Ok(1);
    };
    if units == "byte" {
        return Ok(1);
    }
    let exponent = units
        .strip_prefix("byte")
        .map(str::trim_start)
        .and_then(|rest| rest.strip_prefix('*'))
        .map(str::trim_start)
        .and_then(|rest| rest.strip_prefix("2^"))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .filter(|&n| n < 64);
    exponent.map(|n| 1u64 << n).with_context(|| {
        format!("ovf:capacityAllocationUnits `{units}` is not `byte` or `byte * 2^N`")
    })
}

/// Whether a disk format URI is VMware's stream-optimized VMDK.
pub fn is_stream_optimized(format: &str) -> bool {
    format == STREAM_OPTIMIZED
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appliance() -> Appliance<'static> {
        Appliance {
            name: "flatcar-stable-4230.2.3-kube-v1.36.2",
            disk_file: "flatcar-stable-4230.2.3-kube-v1.36.2.vmdk",
            disk_file_size: 512_000_000,
            capacity: 9_116_319_744,
            cpus: 2,
            memory_mib: 4096,
        }
    }

    #[test]
    fn the_descriptor_reads_back_as_written() {
        let declared = parse(&render(&appliance())).unwrap();
        assert_eq!(
            declared,
            Declared {
                files: vec![FileRef {
                    id: "disk-file".into(),
                    href: "flatcar-stable-4230.2.3-kube-v1.36.2.vmdk".into(),
                    size: Some(512_000_000),
                }],
                disks: vec![DiskDecl {
                    file_ref: "disk-file".into(),
                    capacity: 9_116_319_744,
                    format: STREAM_OPTIMIZED.into(),
                }],
                virtual_systems: 1,
            }
        );
        assert!(is_stream_optimized(&declared.disks[0].format));
    }

    #[test]
    fn names_are_escaped() {
        let mut odd = appliance();
        odd.name = "a<b>&\"c'";
        let text = render(&odd);
        assert!(
            text.contains("<Name>a&lt;b&gt;&amp;&quot;c&apos;</Name>"),
            "{text}"
        );
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn capacity_units_scale_and_bad_descriptors_say_where() {
        assert_eq!(unit_bytes(None).unwrap(), 1);
        assert_eq!(unit_bytes(Some("byte * 2^30")).unwrap(), 1 << 30);
        assert_eq!(unit_bytes(Some("byte*2^20")).unwrap(), 1 << 20);
        assert!(unit_bytes(Some("kilobyte")).is_err());
        assert!(unit_bytes(Some("byte * 2^64")).is_err());

        let text = render(&appliance()).replace(" ovf:capacity=\"9116319744\"", "");
        let err = format!("{:#}", parse(&text).unwrap_err());
        assert_eq!(err, "line 9, column 5: <Disk> has no ovf:capacity");
        let err = format!("{:#}", parse("<Envelope/>").unwrap_err());
        assert!(err.contains("not an OVF 1.x Envelope"), "{err}");
        let err = format!("{:#}", parse("<Envelope").unwrap_err());
        assert!(
            err.starts_with("the descriptor is not well-formed XML: "),
            "{err}"
        );
    }
}
