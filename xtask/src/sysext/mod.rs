//! The Kubernetes system extension, built on the host from files that were
//! verified before they got here: a staging tree laid out as Flatcar's sysext
//! convention has it, squashed with fixed times and owners so the same inputs
//! always give the same bytes.

pub mod extension_release;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::flatcar::release::Arch;

/// The extension's name: `/etc/extensions/kubernetes.raw` and
/// `extension-release.kubernetes` both carry it.
pub const NAME: &str = "kubernetes";

/// A file the extension carries beyond the binaries (a node file whose target is
/// the extension), at `path` relative to `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionFile {
    pub path: String,
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// What goes into the extension, every file already verified. The CNI plugins
/// are not among them: containerd's configuration names /opt/cni/bin on ROOT,
/// where CNI installers write too, so the bake puts them there.
#[derive(Clone, Debug)]
pub struct SysextInputs {
    /// `v1.36.1`, as Kubernetes releases are named.
    pub kubernetes_version: String,
    pub arch: Arch,
    pub kubeadm: PathBuf,
    pub kubelet: PathBuf,
    pub kubectl: PathBuf,
    /// The crictl release archive (`crictl-<ver>-linux-<arch>.tar.gz`).
    pub crictl_archive: PathBuf,
    pub files: Vec<ExtensionFile>,
    /// Every timestamp in the extension (SOURCE_DATE_EPOCH).
    pub source_date_epoch: u64,
}

/// A built extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysext {
    pub path: PathBuf,
    pub sha512: String,
    /// The text of its extension-release file.
    pub extension_release: String,
}

/// `kubernetes-v1.36.1-x86-64.raw`: the name sysupdate's `MatchPattern` expects.
pub fn file_name(kubernetes_version: &str, arch: Arch) -> String {
    format!(
        "{NAME}-{kubernetes_version}-{}.raw",
        extension_release::systemd_arch(arch)
    )
}

/// Builds the extension into `out_dir` (written under a temporary name, renamed
/// when complete).
pub fn build(sh: &Shell, inputs: &SysextInputs, out_dir: &Path) -> anyhow::Result<Sysext> {
    let staging = tempfile::Builder::new()
        .prefix(".sysext-staging-")
        .tempdir_in(out_dir)
        .with_context(|| format!("making a staging directory in {}", out_dir.display()))?;
    let root = staging.path().join("root");
    let extension_release = stage_tree(sh, inputs, &root)?;
    let name = file_name(&inputs.kubernetes_version, inputs.arch);
    let partial = staging.path().join(&name);
    squash(sh, &root, &partial, inputs.source_date_epoch)?;
    let path = out_dir.join(&name);
    crate::fsx::rename_durably(&partial, &path)?;
    Ok(Sysext {
        sha512: crate::flatcar::cache::sha512_file(&path)?,
        path,
        extension_release,
    })
}

/// Lays out the tree; returns the extension-release text it wrote.
fn stage_tree(sh: &Shell, inputs: &SysextInputs, root: &Path) -> anyhow::Result<String> {
    let bin = root.join("usr/bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    for (name, source) in [
        ("kubeadm", &inputs.kubeadm),
        ("kubelet", &inputs.kubelet),
        ("kubectl", &inputs.kubectl),
    ] {
        let target = bin.join(name);
        std::fs::copy(source, &target)
            .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
        set_mode(&target, 0o755)?;
    }
    let crictl_archive = &inputs.crictl_archive;
    cmd!(sh, "tar -xzf {crictl_archive} -C {bin} crictl")
        .quiet()
        .run()
        .with_context(|| format!("unpacking crictl from {}", crictl_archive.display()))?;
    for file in &inputs.files {
        write_extension_file(root, file)?;
    }
    let text = extension_release::render(inputs.arch);
    write_extension_file(
        root,
        &ExtensionFile {
            path: format!("usr/lib/extension-release.d/extension-release.{NAME}"),
            mode: 0o644,
            contents: text.clone().into_bytes(),
        },
    )?;
    normalise_dir_modes(root)?;
    Ok(text)
}

/// systemd-sysext merges only `/usr` and `/opt`; anything else would be ignored
/// at boot, so it is refused here.
fn write_extension_file(root: &Path, file: &ExtensionFile) -> anyhow::Result<()> {
    let relative = Path::new(&file.path);
    let inside = relative.starts_with("usr") || relative.starts_with("opt");
    if !inside || relative.is_absolute() || file.path.contains("..") {
        bail!(
            "{} cannot go into a system extension: systemd-sysext merges only usr/ and opt/",
            file.path
        );
    }
    let target = root.join(relative);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&target, &file.contents)
        .with_context(|| format!("writing {}", target.display()))?;
    set_mode(&target, file.mode)
}

/// Directories get 0755 whatever the umask or the archives said, so the tree
/// does not depend on the machine it was staged on.
fn normalise_dir_modes(root: &Path) -> anyhow::Result<()> {
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry.with_context(|| format!("walking {}", root.display()))?;
        if entry.file_type().is_dir() {
            set_mode(entry.path(), 0o755)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// mksquashfs sorts directory entries itself; the flags pin everything else that
/// would differ between runs or machines: owners, times, extended attributes.
/// SOURCE_DATE_EPOCH is removed from its environment because mksquashfs refuses
/// it together with the explicit times.
fn squash(sh: &Shell, root: &Path, image: &Path, epoch: u64) -> anyhow::Result<()> {
    let epoch = epoch.to_string();
    cmd!(
        sh,
        "mksquashfs {root} {image} -noappend -all-root -no-xattrs -mkfs-time {epoch} -all-time {epoch} -no-progress -quiet"
    )
    .env_remove("SOURCE_DATE_EPOCH")
    .quiet()
    .ignore_stdout()
    .run()
    .with_context(|| format!("squashing {} into {}", root.display(), image.display()))
}

/// The extension-release text inside an extension image (one made here or a
/// published one), read with unsquashfs.
pub fn read_extension_release(sh: &Shell, image: &Path) -> anyhow::Result<String> {
    let inside = format!("usr/lib/extension-release.d/extension-release.{NAME}");
    cmd!(sh, "unsquashfs -cat {image} {inside}")
        .quiet()
        .read()
        .with_context(|| format!("reading {inside} from {}", image.display()))
}
