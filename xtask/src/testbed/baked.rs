//! A baked output booted under QEMU the way its platform boots it: its disk (the
//! qcow2, or the one in a KubeVirt containerDisk's `disk/`) on an overlay, an
//! Ignition config that authorizes a per-run key handed over through the
//! platform's config channel, and the node rules that hold on a booted machine
//! run on it as compiled for a baked image (`MadeBy::Bake`, with the values the
//! bake recorded in its output directory).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use xshell::Shell;

use super::boot::{self, BootOptions};
use crate::disk_formats::tar::{self, Kind};
use crate::flatcar::platform::Platform;
use crate::{build::ignition, build::key, rules, workspace};

/// The platforms whose bake output QEMU boots here, each through its own config
/// channel (fw_cfg, a `config-2` drive, a `cidata` drive). Metal and Hetzner read
/// theirs from a kernel argument and a metadata service the rehearsal guest's
/// first boot does not implement; VMware's and Azure's containers QEMU does not
/// boot. Their outputs are checked structurally.
pub const BOOTED: [Platform; 4] = [
    Platform::Qemu,
    Platform::Openstack,
    Platform::Proxmoxve,
    Platform::Kubevirt,
];

/// How long a clean poweroff may take under TCG.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(90);

/// What booting one output showed.
#[derive(Debug)]
pub struct Booted {
    pub boot_to_ssh: Duration,
    pub rules: rules::report::Run,
    /// Rules limited to images made another way (`[SKIP]` lines).
    pub skipped: usize,
    /// Whether the rules script exited 0.
    pub rules_succeeded: bool,
}

/// Boots the `platform` output in `output_dir` (work files and logs under
/// `work`), runs the node rules on it and powers it off.
pub fn boot_and_check(
    sh: &Shell,
    platform: Platform,
    output_dir: &Path,
    work: &Path,
) -> anyhow::Result<Booted> {
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let base = bootable_disk(platform, output_dir, work)?;
    let key_dir = work.join("key");
    std::fs::create_dir_all(&key_dir).with_context(|| format!("creating {}", key_dir.display()))?;
    let key = key::generate(sh, &key_dir, &format!("rehearse bake {platform}"))?;
    let config = work.join("config.ign");
    let ignition = ignition::authorize_key(
        serde_json::json!({"ignition": {"version": "3.3.0"}}),
        &key.public_key,
    )?;
    std::fs::write(&config, serde_json::to_string_pretty(&ignition)?)
        .with_context(|| format!("writing {}", config.display()))?;
    let overlay = work.join("overlay.qcow2");
    boot::create_overlay(sh, &base, &overlay)?;
    let mut options = BootOptions::like_build(&overlay, &key.private_key, &work.join("boot"));
    options.ignition = Some(config);
    options.channel = platform.config_channel();
    options.ssh_timeout = Duration::from_secs(180);
    eprintln!(
        "Booting the baked {platform} output with its config on {:?} ...",
        options.channel
    );
    let running = boot::boot(sh, &options)?;
    let boot_to_ssh = running.boot_to_ssh;
    let script = runner(output_dir, &work.join("node-rules"))?;
    let (succeeded, output) = running.ssh(sh, &rules::remote_command(&script))?;
    running.shutdown(sh, SHUTDOWN_TIMEOUT)?;
    std::fs::remove_file(&overlay).with_context(|| format!("removing {}", overlay.display()))?;
    if base.starts_with(work) {
        std::fs::remove_file(&base).with_context(|| format!("removing {}", base.display()))?;
    }
    let run = rules::report::parse(&output);
    if run.summary.is_none() {
        bail!(
            "the node rules did not finish on the booted {platform} output:\n{}",
            output.trim()
        );
    }
    let mut skips: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("[SKIP] "))
        .collect();
    skips.dedup();
    Ok(Booted {
        skipped: skips.len(),
        boot_to_ssh,
        rules: run,
        rules_succeeded: succeeded,
    })
}

/// The qcow2 QEMU boots for `platform`'s output: the output's own, or for
/// KubeVirt the one in the containerDisk's layer, copied out to `work`.
fn bootable_disk(platform: Platform, output_dir: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    let (extension, in_container) = match platform {
        Platform::Kubevirt => (".oci.tar", true),
        _ => (".qcow2", false),
    };
    let found = output_file(output_dir, extension)?;
    if !in_container {
        return Ok(found);
    }
    let disk = work.join("containerdisk.qcow2");
    copy_layer_disk(&found, &disk)?;
    Ok(disk)
}

/// The one file in `dir` whose name ends in `extension`.
pub fn output_file(dir: &Path, extension: &str) -> anyhow::Result<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.to_string_lossy().ends_with(extension) && path.is_file() {
            found.push(path);
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "{} holds {} files ending in {extension}, not one: {found:?}",
            dir.display(),
            found.len()
        ),
    }
}

/// Copies the qcow2 under `disk/` in a containerDisk archive's layer to `out`, as
/// KubeVirt finds it: the archive's blobs are read in place, a layer being a tar
/// inside the tar (the structural check has already vouched for their digests).
fn copy_layer_disk(archive: &Path, out: &Path) -> anyhow::Result<()> {
    let mut file = tar::open(archive)?;
    let blobs: Vec<tar::Entry> = tar::list(archive)?
        .into_iter()
        .filter(|e| e.kind == Kind::File && e.name.starts_with("blobs/"))
        .collect();
    for blob in &blobs {
        // The config and manifest blobs are JSON, not tars: they list nothing.
        let Ok(members) = tar::list_within(&mut file, blob.offset, blob.size) else {
            continue;
        };
        let disk = members
            .iter()
            .find(|m| m.kind == Kind::File && m.name.trim_start_matches("./").starts_with("disk/"));
        if let Some(disk) = disk {
            file.seek(SeekFrom::Start(disk.offset))?;
            let mut target = std::fs::File::create(out)
                .with_context(|| format!("creating {}", out.display()))?;
            let copied = std::io::copy(&mut (&mut file).take(disk.size), &mut target)
                .with_context(|| format!("copying {} out of {}", disk.name, archive.display()))?;
            if copied != disk.size {
                bail!("{} ends inside {}", archive.display(), disk.name);
            }
            return Ok(());
        }
    }
    bail!("{} holds no layer with a disk/ file", archive.display())
}

/// Writes the node rules runner for a booted baked machine into `dir` with the
/// values the bake recorded in `output_dir`; returns the script's text.
fn runner(output_dir: &Path, dir: &Path) -> anyhow::Result<String> {
    let vars_path = output_dir.join(rules::VARS_FILE);
    let text = std::fs::read_to_string(&vars_path).with_context(|| {
        format!(
            "reading {} (the bake's values for the node rules)",
            vars_path.display()
        )
    })?;
    let vars: BTreeMap<String, String> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", vars_path.display()))?;
    let script = rules::write_runner(
        dir,
        &workspace::capi_dir(),
        rules::Stage::Booted,
        rules::MadeBy::Bake,
        &vars,
        None,
    )?;
    std::fs::read_to_string(&script).with_context(|| format!("reading {}", script.display()))
}
