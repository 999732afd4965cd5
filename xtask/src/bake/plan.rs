//! What a bake will do, decided before anything is downloaded: the release's file
//! for each platform, the extension, the files written into ROOT and the output
//! directories. Pure, so `--dry-run` prints exactly this and a snapshot pins it.

use serde::Serialize;

use crate::artifacts::{Artifact, ChecksumSource};
use crate::flatcar::platform::{Output, Platform};
use crate::flatcar::release::Arch;
use crate::sysext::{self, extension_release};

/// Where the extension lives on ROOT, and the link systemd-sysext merges.
pub const EXTENSIONS_DIR: &str = "/opt/extensions/kubernetes";
pub const EXTENSION_LINK: &str = "/etc/extensions/kubernetes.raw";

/// The downloads of a build that a bake uses: the Kubernetes binaries and crictl
/// go into the extension, the CNI plugins onto ROOT. containerd is Flatcar's own
/// and nothing runs Python.
pub const SYSEXT_INPUTS: &[&str] = &["kubeadm", "kubelet", "kubectl", "crictl", "cni"];

/// The build's artifact list narrowed to what a bake downloads.
pub fn bake_inputs(all: Vec<Artifact>) -> Vec<Artifact> {
    all.into_iter()
        .filter(|a| SYSEXT_INPUTS.contains(&a.name.as_str()))
        .collect()
}

/// What the plan is made from; the release was resolved once, and each
/// platform's published file was found in it.
#[derive(Clone, Debug)]
pub struct BakeInputs {
    pub channel: String,
    pub version: String,
    pub arch: Arch,
    /// The release directory URL, ending in `/`.
    pub release_url: String,
    /// Each platform with the release file that holds its image.
    pub platforms: Vec<(Platform, String)>,
    pub kubernetes_version: String,
    /// The verified downloads the extension and the CNI plugins come from.
    pub inputs: Vec<Artifact>,
    /// The node's files and unit links the bake writes into ROOT, by path.
    pub node_root_files: Vec<String>,
    /// Where the CNI plugins go on ROOT.
    pub cni_bin_dir: String,
    pub sysupdate: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InputPlan {
    pub name: String,
    pub version: String,
    pub url: String,
    /// The published checksum file's URL, or the published digest itself.
    pub checksum: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlatformPlan {
    pub platform: String,
    pub artifact_url: String,
    /// The output directory's name under images/capi/output/.
    pub output_dir: String,
    pub outputs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BakePlan {
    pub channel: String,
    pub version: String,
    pub arch: String,
    pub kubernetes_version: String,
    pub sysext: String,
    pub sysext_inputs: Vec<InputPlan>,
    /// Every path the bake writes into each image's ROOT partition.
    pub root_files: Vec<String>,
    pub platforms: Vec<PlatformPlan>,
}

/// `flatcar-stable-4081.2.0-kube-v1.36.1-openstack`: one directory per platform.
pub fn output_dir_name(
    channel: &str,
    version: &str,
    kubernetes: &str,
    platform: Platform,
) -> String {
    format!("flatcar-{channel}-{version}-kube-{kubernetes}-{platform}")
}

/// The sysupdate transfer for patch updates of the extension within its minor
/// version (`v1.36.*`), from the sysext-bakery's published extensions, as the
/// bakery's own documentation configures it. Its path and text.
pub fn sysupdate_conf(kubernetes_version: &str) -> (String, String) {
    let minor = minor_of(kubernetes_version);
    let path = format!("/etc/sysupdate.kubernetes.d/kubernetes-{minor}.conf");
    // The bakery publishes no signature sysupdate could check, hence Verify=false.
    let text = format!(
        "[Transfer]\nVerify=false\n\n[Source]\nType=url-file\nPath=https://extensions.flatcar.org/extensions/kubernetes/\nMatchPattern=kubernetes-{minor}.@v-%a.raw\n\n[Target]\nInstancesMax=3\nType=regular-file\nPath={EXTENSIONS_DIR}\nMatchPattern=kubernetes-{minor}.@v-%a.raw\nCurrentSymlink={EXTENSION_LINK}\n"
    );
    (path, text)
}

/// `v1.36.1` → `v1.36`.
fn minor_of(version: &str) -> &str {
    match version.rmatch_indices('.').next() {
        Some((i, _)) if version[..i].contains('.') => &version[..i],
        _ => version,
    }
}

/// The extension's path on ROOT.
pub fn sysext_path(kubernetes_version: &str, arch: Arch) -> String {
    format!(
        "{EXTENSIONS_DIR}/{}",
        sysext::file_name(kubernetes_version, arch)
    )
}

/// The files of a platform's output directory besides the record and the node
/// rules' values: what its Cluster API provider consumes. The baked raw disk is
/// not kept (the outputs hold it; keeping it would double the disk space).
pub fn outputs(platform: Platform, dir: &str) -> Vec<String> {
    let names: &[&str] = match platform.output() {
        Output::Qcow2AndBox => &["qcow2", "box"],
        Output::Qcow2 => &["qcow2"],
        Output::ContainerDisk => &["oci.tar"],
        Output::CompressedRaw => &["raw.gz", "raw.gz.sha256sum"],
        Output::Ova => &["ova"],
        Output::FixedVhd => &["vhd"],
    };
    names.iter().map(|ext| format!("{dir}.{ext}")).collect()
}

fn input_plan(artifact: &Artifact) -> InputPlan {
    InputPlan {
        name: artifact.name.clone(),
        version: artifact.version.clone(),
        url: crate::net::credentials::redact(&artifact.url).into_owned(),
        checksum: match &artifact.checksum {
            ChecksumSource::File { url, algorithm } => {
                format!(
                    "{} from {}",
                    algorithm.name(),
                    crate::net::credentials::redact(url)
                )
            }
            ChecksumSource::Fixed { algorithm, digest } => {
                format!("{} {digest} (published)", algorithm.name())
            }
        },
    }
}

pub fn plan(inputs: &BakeInputs) -> BakePlan {
    let mut root_files = vec![
        sysext_path(&inputs.kubernetes_version, inputs.arch),
        EXTENSION_LINK.to_string(),
        format!("{}/ (the CNI plugins)", inputs.cni_bin_dir),
    ];
    root_files.extend(inputs.node_root_files.iter().cloned());
    if inputs.sysupdate {
        root_files.push(sysupdate_conf(&inputs.kubernetes_version).0);
    }
    let platforms = inputs
        .platforms
        .iter()
        .map(|(platform, file)| {
            let dir = output_dir_name(
                &inputs.channel,
                &inputs.version,
                &inputs.kubernetes_version,
                *platform,
            );
            PlatformPlan {
                platform: platform.name().to_string(),
                artifact_url: format!("{}{file}", inputs.release_url),
                outputs: outputs(*platform, &dir)
                    .into_iter()
                    .chain([
                        crate::build::record::FILE_NAME.to_string(),
                        crate::rules::VARS_FILE.to_string(),
                    ])
                    .collect(),
                output_dir: dir,
            }
        })
        .collect();
    BakePlan {
        channel: inputs.channel.clone(),
        version: inputs.version.clone(),
        arch: extension_release::systemd_arch(inputs.arch).to_string(),
        kubernetes_version: inputs.kubernetes_version.clone(),
        sysext: sysext::file_name(&inputs.kubernetes_version, inputs.arch),
        sysext_inputs: inputs.inputs.iter().map(input_plan).collect(),
        root_files,
        platforms,
    }
}

/// Parses `qemu,openstack`: every name known, none twice, in the order given.
pub fn parse_platforms(list: &str) -> anyhow::Result<Vec<Platform>> {
    let mut platforms = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let platform: Platform = name.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        if !platforms.contains(&platform) {
            platforms.push(platform);
        }
    }
    if platforms.is_empty() {
        anyhow::bail!(
            "--platform names no platform; the known platforms are: {}",
            Platform::known()
        );
    }
    Ok(platforms)
}

pub fn render_text(plan: &BakePlan) -> String {
    let mut out = format!(
        "Bake Flatcar {} {} ({}) with Kubernetes {}\nsysext {} from:\n",
        plan.channel, plan.version, plan.arch, plan.kubernetes_version, plan.sysext,
    );
    for input in &plan.sysext_inputs {
        out.push_str(&format!(
            "  {} {}: {}\n    {}\n",
            input.name, input.version, input.url, input.checksum
        ));
    }
    out.push_str("written into ROOT:\n");
    for file in &plan.root_files {
        out.push_str(&format!("  {file}\n"));
    }
    for platform in &plan.platforms {
        out.push_str(&format!(
            "{}:\n  from   {}\n  output images/capi/output/{}/: {}\n",
            platform.platform,
            platform.artifact_url,
            platform.output_dir,
            platform.outputs.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn inputs() -> BakeInputs {
        BakeInputs {
            channel: "stable".into(),
            version: "4081.2.0".into(),
            arch: Arch::Amd64,
            release_url: "https://stable.release.flatcar-linux.net/amd64-usr/4081.2.0/".into(),
            platforms: [Platform::Qemu, Platform::Metal, Platform::Vmware]
                .map(|p| (p, p.published_files()[0].clone()))
                .to_vec(),
            kubernetes_version: "v1.36.2".into(),
            inputs: bake_inputs(
                crate::artifacts::artifact_list(
                    &crate::artifacts::list::tests::vars(),
                    &crate::artifacts::list::tests::pypy(),
                )
                .unwrap(),
            ),
            node_root_files: vec!["/etc/kubeadm.yml".into()],
            cni_bin_dir: "/opt/cni/bin".into(),
            sysupdate: true,
        }
    }

    #[test]
    fn the_plan_names_every_url_file_and_output() {
        expect![[r#"
            Bake Flatcar stable 4081.2.0 (x86-64) with Kubernetes v1.36.2
            sysext kubernetes-v1.36.2-x86-64.raw from:
              kubeadm v1.36.2: https://dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubeadm
                sha256 from https://dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubeadm.sha256
              kubelet v1.36.2: https://dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubelet
                sha256 from https://dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubelet.sha256
              kubectl v1.36.2: https://dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubectl
                sha256 from https://dl.k8s.io/release/v1.36.2/bin/linux/amd64/kubectl.sha256
              cni v1.9.1: https://github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-amd64-v1.9.1.tgz
                sha256 from https://github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-amd64-v1.9.1.tgz.sha256
              crictl v1.36.0: https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.36.0/crictl-v1.36.0-linux-amd64.tar.gz
                sha256 from https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.36.0/crictl-v1.36.0-linux-amd64.tar.gz.sha256
            written into ROOT:
              /opt/extensions/kubernetes/kubernetes-v1.36.2-x86-64.raw
              /etc/extensions/kubernetes.raw
              /opt/cni/bin/ (the CNI plugins)
              /etc/kubeadm.yml
              /etc/sysupdate.kubernetes.d/kubernetes-v1.36.conf
            qemu:
              from   https://stable.release.flatcar-linux.net/amd64-usr/4081.2.0/flatcar_production_qemu_image.img
              output images/capi/output/flatcar-stable-4081.2.0-kube-v1.36.2-qemu/: flatcar-stable-4081.2.0-kube-v1.36.2-qemu.qcow2, flatcar-stable-4081.2.0-kube-v1.36.2-qemu.box, build.json, node-rules-vars.json
            metal:
              from   https://stable.release.flatcar-linux.net/amd64-usr/4081.2.0/flatcar_production_image.bin
              output images/capi/output/flatcar-stable-4081.2.0-kube-v1.36.2-metal/: flatcar-stable-4081.2.0-kube-v1.36.2-metal.raw.gz, flatcar-stable-4081.2.0-kube-v1.36.2-metal.raw.gz.sha256sum, build.json, node-rules-vars.json
            vmware:
              from   https://stable.release.flatcar-linux.net/amd64-usr/4081.2.0/flatcar_production_vmware_ova.ova
              output images/capi/output/flatcar-stable-4081.2.0-kube-v1.36.2-vmware/: flatcar-stable-4081.2.0-kube-v1.36.2-vmware.ova, build.json, node-rules-vars.json
        "#]]
        .assert_eq(&render_text(&plan(&inputs())));
    }

    #[test]
    fn sysupdate_stays_within_the_minor_version() {
        let (path, text) = sysupdate_conf("v1.36.1");
        assert_eq!(path, "/etc/sysupdate.kubernetes.d/kubernetes-v1.36.conf");
        assert!(
            text.contains("MatchPattern=kubernetes-v1.36.@v-%a.raw\n"),
            "{text}"
        );
        assert!(
            text.contains("CurrentSymlink=/etc/extensions/kubernetes.raw\n"),
            "{text}"
        );
    }

    #[test]
    fn platforms_are_parsed_once_each_and_unknown_ones_list_the_known() {
        assert_eq!(
            parse_platforms("qemu, openstack,qemu").unwrap(),
            [Platform::Qemu, Platform::Openstack]
        );
        let err = parse_platforms("qemu,vsphere").unwrap_err().to_string();
        assert!(
            err.contains("`vsphere`") && err.contains("openstack, proxmoxve"),
            "{err}"
        );
    }
}
