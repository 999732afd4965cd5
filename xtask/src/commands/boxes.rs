//! `cargo xtask boxes`: the Flatcar boxes this tool made, with their libvirt volumes
//! and VMs (a table on stderr, or `--format json` on stdout), and `--cleanup` to
//! remove them. Only boxes a build record under images/capi/output names are
//! touched; a cleanup tries every step and reports every failure.

use std::path::PathBuf;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::build::record::BuildRecord;
use crate::flatcar::release::{Channel, Version};
use crate::output::Format;
use crate::vm::vagrant::{self, Machine};
use crate::{table, workspace};

#[derive(clap::Args, Debug)]
pub struct BoxesArgs {
    /// Halt and destroy the VMs, then remove the boxes, their libvirt volumes and
    /// their local .box files (all of this tool's boxes, or CHANNEL VERSION's).
    #[arg(long)]
    cleanup: bool,
    /// Only the boxes of this channel: alpha, beta, stable or lts (with --cleanup).
    #[arg(requires = "cleanup")]
    channel: Option<Channel>,
    /// Only the box of this version, MAJOR.MINOR.PATCH (with --cleanup and CHANNEL).
    #[arg(requires = "channel")]
    version: Option<Version>,
    /// The libvirt storage pool vagrant-libvirt keeps box volumes in.
    #[arg(long, default_value = "default")]
    pool: String,
    /// How to list the boxes: a table on stderr, or JSON on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// What is known about one box.
struct BoxState {
    name: String,
    channel: Channel,
    version: Version,
    volumes: Vec<String>,
    machines: Vec<Machine>,
    box_files: Vec<PathBuf>,
}

pub fn run(sh: &Shell, args: &BoxesArgs) -> anyhow::Result<()> {
    let boxes = collect(sh, &args.pool)?;
    let selected: Vec<&BoxState> = boxes
        .iter()
        .filter(|b| args.channel.is_none_or(|c| c == b.channel))
        .filter(|b| args.version.is_none_or(|v| v == b.version))
        .collect();

    if !args.cleanup {
        return list(&selected, args.format);
    }

    if selected.is_empty() {
        eprintln!("No matching Flatcar boxes to clean up.");
    }
    // Every step is tried; the failures are reported together at the end.
    let mut failures = Vec::new();
    for b in selected {
        failures.extend(clean_up(sh, b, &args.pool));
    }
    if !failures.is_empty() {
        bail!(
            "the cleanup did not finish; these steps failed (everything else was removed):\n  - {}",
            failures.join("\n  - ")
        );
    }
    Ok(())
}

/// Removes one box's VMs, the box, its libvirt volumes and its .box files; the
/// steps that failed, each a sentence.
fn clean_up(sh: &Shell, b: &BoxState, pool: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let mut step = |what: String, result: anyhow::Result<()>| {
        if let Err(err) = result {
            eprintln!("{}: {what} failed: {err:#}", b.name);
            failures.push(format!("{}: {what}: {err:#}", b.name));
        }
    };
    for machine in &b.machines {
        let id = &machine.id;
        eprintln!("{}: destroying VM {id} ({})", b.name, machine.state);
        step(
            format!("destroying VM {id}"),
            cmd!(sh, "vagrant destroy --force {id}")
                .run()
                .map_err(Into::into),
        );
    }
    let name = &b.name;
    eprintln!("{name}: removing the box");
    step(
        format!("removing box {name}"),
        cmd!(sh, "vagrant box remove --force --all {name}")
            .run()
            .map_err(Into::into),
    );
    let uri = vagrant::libvirt_uri();
    for volume in &b.volumes {
        eprintln!("{name}: deleting libvirt volume {volume}");
        step(
            format!("deleting libvirt volume {volume}"),
            cmd!(sh, "virsh -c {uri} vol-delete --pool {pool} {volume}")
                .run()
                .map_err(Into::into),
        );
    }
    for file in &b.box_files {
        eprintln!("{name}: deleting {}", file.display());
        step(
            format!("deleting {}", file.display()),
            std::fs::remove_file(file).map_err(Into::into),
        );
    }
    failures
}

/// The boxes: a table on stderr for people, or JSON on stdout.
fn list(boxes: &[&BoxState], format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        let json: Vec<serde_json::Value> = boxes
            .iter()
            .map(|b| {
                serde_json::json!({
                    "box": b.name,
                    "channel": b.channel.name(),
                    "version": b.version.to_string(),
                    "libvirt_volumes": b.volumes,
                    "vm_states": b.machines.iter().map(|m| &m.state).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = boxes
        .iter()
        .map(|b| {
            let or = |list: Vec<&str>, none: &str| match list.is_empty() {
                true => none.to_owned(),
                false => list.join(", "),
            };
            vec![
                b.name.clone(),
                b.channel.to_string(),
                b.version.to_string(),
                or(b.volumes.iter().map(String::as_str).collect(), "-"),
                or(
                    b.machines.iter().map(|m| m.state.as_str()).collect(),
                    "no VM",
                ),
            ]
        })
        .collect();
    eprint!(
        "{}",
        table::render(
            &["box", "channel", "version", "libvirt volume", "vm"],
            &rows
        )
    );
    if rows.is_empty() {
        eprintln!("No Flatcar boxes made by this tool are known to vagrant.");
    }
    Ok(())
}

/// This tool's boxes as vagrant, libvirt and images/capi/output know them.
fn collect(sh: &Shell, pool: &str) -> anyhow::Result<Vec<BoxState>> {
    let listed = cmd!(sh, "vagrant box list")
        .quiet()
        .read()
        .context("listing vagrant boxes")?;
    let uri = vagrant::libvirt_uri();
    let volumes = match cmd!(sh, "virsh -c {uri} vol-list --pool {pool}")
        .quiet()
        .ignore_stderr()
        .read()
    {
        Ok(out) => vagrant::parse_vol_list(&out),
        Err(_) => {
            eprintln!(
                "warning: libvirt ({uri}, pool {pool}) did not answer; volumes are not listed"
            );
            Vec::new()
        }
    };
    let machines = vagrant::parse_global_status(
        &cmd!(sh, "vagrant global-status --prune")
            .quiet()
            .read()
            .unwrap_or_default(),
    );
    let outputs = output_dirs();

    let mut boxes: Vec<BoxState> = Vec::new();
    for (name, provider) in vagrant::parse_box_list(&listed) {
        let Some((channel, version)) = vagrant::parse_box_name(&name) else {
            continue;
        };
        if provider != "libvirt" || boxes.iter().any(|b| b.name == name) {
            continue;
        }
        let ours: Vec<&(PathBuf, BuildRecord)> = outputs
            .iter()
            .filter(|(_, r)| {
                r.recipe.channel == channel.name() && r.recipe.version == version.to_string()
            })
            .collect();
        // A box only named like ours may be anyone's: only a build record makes it ours.
        if ours.is_empty() {
            continue;
        }
        boxes.push(BoxState {
            volumes: vagrant::box_volumes(&volumes, &name)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            machines: machines
                .iter()
                .filter(|m| {
                    ours.iter()
                        .any(|(dir, _)| dir.join("vagrant") == std::path::Path::new(&m.directory))
                })
                .cloned()
                .collect(),
            box_files: ours
                .iter()
                .flat_map(|(dir, record)| box_files(dir, record))
                .collect(),
            channel,
            version,
            name,
        });
    }
    Ok(boxes)
}

/// Every finished build under images/capi/output, with its record.
fn output_dirs() -> Vec<(PathBuf, BuildRecord)> {
    let root = workspace::output_dir();
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| BuildRecord::read(&e.path()).ok().map(|r| (e.path(), r)))
        .collect()
}

/// The .box files in `dir` that its build record names as outputs.
fn box_files(dir: &std::path::Path, record: &BuildRecord) -> Vec<PathBuf> {
    record
        .outputs
        .iter()
        .filter(|o| o.file.ends_with(".box") && !o.file.contains('/'))
        .map(|o| dir.join(&o.file))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect()
}
