//! What every platform of one bake shares, made once: the verified downloads
//! (from the artifact cache), the Kubernetes extension built from them with the
//! node's `/usr` files inside, and the edits of ROOT — the extension and its
//! link, the CNI plugins, the node's `/etc` files and unit links, and the
//! sysupdate transfer when asked for.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::plan;
use super::record::Input;
use super::BakeOptions;
use crate::artifacts::{self, Cached};
use crate::disk_image::ext4::{Edit, Entry, Meta};
use crate::flatcar::release::Arch;
use crate::net::download::{HttpClient, ProgressStyle};
use crate::node_files::Target;
use crate::sysext::{self, ExtensionFile, Sysext, SysextInputs};

/// The shared part of a bake; its files live in `work` until it is dropped.
pub struct Shared {
    pub sysext: Sysext,
    pub inputs: Vec<Input>,
    /// The edits of ROOT every platform gets, in order.
    pub edits: Vec<Edit>,
    /// Every time written into ROOT (SOURCE_DATE_EPOCH).
    pub time: u64,
    _work: tempfile::TempDir,
}

/// Fetches the inputs (or finds them verified in the cache), builds the
/// extension and lays out the ROOT edits in a hidden work directory below
/// `opts.output_root`, removed when the result is dropped.
pub fn prepare(sh: &Shell, opts: &BakeOptions, arch: Arch) -> anyhow::Result<Shared> {
    let work = super::hidden_dir(&opts.output_root, ".bake-shared-")?;
    let fetch = &opts.fetch;
    // Parallel downloads share stderr: a line each now and then, not bars.
    let progress = match fetch.progress {
        ProgressStyle::Bar => ProgressStyle::Lines,
        other => other,
    };
    let client = HttpClient::with_limits(fetch.retries, progress, fetch.limits);
    let cached = artifacts::fetch_all(&client, &fetch.cache_dir, &opts.inputs, fetch.offline)?;
    super::stop_if_interrupted()?;
    let path_of = |name: &str| -> anyhow::Result<PathBuf> {
        cached
            .iter()
            .find(|c| c.artifact.name == name)
            .map(|c| c.path.clone())
            .with_context(|| format!("the bake's downloads lack {name}"))
    };
    let extension_files = opts
        .node
        .files
        .iter()
        .filter(|f| f.target == Target::Sysext)
        .map(|f| ExtensionFile {
            path: f.path.trim_start_matches('/').to_owned(),
            mode: f.mode,
            contents: f.contents.clone().into_bytes(),
        })
        .collect();
    let sysext = sysext::build(
        sh,
        &SysextInputs {
            kubernetes_version: opts.kubernetes_version.clone(),
            arch,
            kubeadm: path_of("kubeadm")?,
            kubelet: path_of("kubelet")?,
            kubectl: path_of("kubectl")?,
            crictl_archive: path_of("crictl")?,
            files: extension_files,
            source_date_epoch: opts.time,
        },
        work.path(),
    )?;
    let mut edits = extension_edits(opts, &sysext, arch);
    edits.extend(cni_edits(sh, opts, &path_of("cni")?, work.path())?);
    edits.extend(node_edits(opts, work.path())?);
    if opts.sysupdate {
        let (path, text) = plan::sysupdate_conf(&opts.kubernetes_version);
        edits.push(file_edit(
            work.path(),
            "sysupdate.conf",
            &path,
            0o644,
            &text,
            opts.time,
        )?);
    }
    Ok(Shared {
        inputs: inputs_of(&cached)?,
        sysext,
        edits,
        time: opts.time,
        _work: work,
    })
}

fn inputs_of(cached: &[Cached]) -> anyhow::Result<Vec<Input>> {
    cached
        .iter()
        .map(|c| {
            Ok(Input {
                name: c.artifact.name.clone(),
                version: c.artifact.version.clone(),
                url: crate::net::credentials::redact(&c.artifact.url).into_owned(),
                sha512: crate::flatcar::cache::sha512_file(&c.path)?,
            })
        })
        .collect()
}

/// The extension in /opt/extensions/kubernetes/ and the link systemd-sysext merges.
fn extension_edits(opts: &BakeOptions, sysext: &Sysext, arch: Arch) -> Vec<Edit> {
    let path = plan::sysext_path(&opts.kubernetes_version, arch);
    vec![
        Edit {
            path: path.clone(),
            entry: Entry::File(sysext.path.clone()),
            meta: Meta::root(0o644, opts.time),
        },
        Edit {
            path: plan::EXTENSION_LINK.into(),
            entry: Entry::Symlink(path),
            meta: Meta::root(0o777, opts.time),
        },
    ]
}

/// The CNI plugins unpacked into the node's `cni_bin_dir` on ROOT, each with the
/// mode the release archive gives it, in sorted order.
fn cni_edits(
    sh: &Shell,
    opts: &BakeOptions,
    archive: &Path,
    work: &Path,
) -> anyhow::Result<Vec<Edit>> {
    let dir = work.join("cni");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    cmd!(sh, "tar -xzf {archive} -C {dir} --no-same-owner")
        .quiet()
        .run()
        .with_context(|| format!("unpacking the CNI plugins from {}", archive.display()))?;
    let mut edits = Vec::new();
    for entry in walkdir::WalkDir::new(&dir).min_depth(1).sort_by_file_name() {
        let entry = entry.with_context(|| format!("walking {}", dir.display()))?;
        let relative = entry.path().strip_prefix(&dir)?.display().to_string();
        let path = format!("{}/{relative}", opts.node.cni_bin_dir.trim_end_matches('/'));
        let (entry, mode) = if entry.file_type().is_dir() {
            (Entry::Dir, 0o755)
        } else if entry.file_type().is_file() {
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.metadata()?.permissions().mode() & 0o7777;
            (Entry::File(entry.path().to_path_buf()), mode)
        } else {
            bail!(
                "{}: {relative} is neither a file nor a directory",
                archive.display()
            );
        };
        edits.push(Edit {
            path,
            entry,
            meta: Meta::root(mode, opts.time),
        });
    }
    if edits.is_empty() {
        bail!("{} holds no CNI plugins", archive.display());
    }
    Ok(edits)
}

/// The node's files whose target is ROOT, and its enabled units' links.
fn node_edits(opts: &BakeOptions, work: &Path) -> anyhow::Result<Vec<Edit>> {
    let mut edits = Vec::new();
    let root_files = opts.node.files.iter().filter(|f| f.target == Target::Root);
    for (index, file) in root_files.enumerate() {
        let name = format!("node-file-{index}");
        edits.push(file_edit(
            work,
            &name,
            &file.path,
            file.mode,
            &file.contents,
            opts.time,
        )?);
    }
    for link in &opts.node.enabled_units {
        edits.push(Edit {
            path: link.path.clone(),
            entry: Entry::Symlink(link.points_to.clone()),
            meta: Meta::root(0o777, opts.time),
        });
    }
    Ok(edits)
}

/// `contents` written to `work/<name>`, to go into ROOT at `path`.
fn file_edit(
    work: &Path,
    name: &str,
    path: &str,
    mode: u32,
    contents: &str,
    time: u64,
) -> anyhow::Result<Edit> {
    let source = work.join(name);
    std::fs::write(&source, contents).with_context(|| format!("writing {}", source.display()))?;
    Ok(Edit {
        path: path.to_owned(),
        entry: Entry::File(source),
        meta: Meta::root(mode, time),
    })
}
