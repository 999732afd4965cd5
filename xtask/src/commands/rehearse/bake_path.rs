//! `rehearse --bake`: `bake` of every platform against the loopback mirror, run as
//! a user runs it (the xtask binary with `--release-server`, `--signing-key`,
//! `--mirror-config`); its dry-run plan checked for every artifact URL; the four
//! outputs QEMU boots booted through their platform's config channel with the
//! node rules run on them; the others checked structurally.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::Value;
use xshell::Shell;

use super::Steps;
use crate::disk_formats::{container_disk, metal, ova, vagrant_box, vhd};
use crate::flatcar::platform::Platform;
use crate::testbed::{baked, mirror, platform_images};
use crate::{error::Exit, table, workspace};

/// Every platform a bake makes from a release (all the mirror publishes).
const PLATFORMS: [Platform; 8] = platform_images::PUBLISHED;

/// One platform's row in the closing table.
struct Row {
    platform: Platform,
    structure: String,
    boot: String,
    rules: String,
    passed: bool,
}

/// Runs the bake path; fails when a platform fails its check or its rules.
pub(super) fn run(
    sh: &Shell,
    mirror: &mirror::Mirror,
    server_url: &str,
    mirror_config: &Path,
    run_dir: &Path,
    keep_output: bool,
    steps: &mut Steps,
) -> anyhow::Result<()> {
    let args = bake_args(mirror, server_url, mirror_config, run_dir);

    let started = Instant::now();
    let plan = run_bake(&args, &["--dry-run"]).context("bake --dry-run")?;
    let urls = check_plan(&plan, mirror, server_url)?;
    steps.record(
        "bake --dry-run",
        &format!("pass ({urls} URLs, every one on the mirror)"),
        started,
    );

    let started = Instant::now();
    let baked_ok = run_bake(&args, &["--force"]);
    steps.record(
        &format!("bake ({} platforms)", PLATFORMS.len()),
        if baked_ok.is_ok() { "pass" } else { "FAIL" },
        started,
    );
    baked_ok.context("bake")?;

    let mut rows = Vec::new();
    for entry in plan["platforms"].as_array().into_iter().flatten() {
        let name = entry["platform"].as_str().unwrap_or_default();
        let platform: Platform = name.parse().map_err(anyhow::Error::msg)?;
        let dir_name = entry["output_dir"]
            .as_str()
            .and_then(|d| Path::new(d).file_name())
            .with_context(|| format!("the plan names no output directory for {name}"))?;
        let output_dir = workspace::output_dir().join(dir_name);
        let started = Instant::now();
        let row = check_platform(sh, platform, &output_dir, &run_dir.join("bake").join(name));
        steps.record(
            &format!("{platform} output"),
            if row.passed { "pass" } else { "FAIL" },
            started,
        );
        rows.push(row);
        if !keep_output {
            std::fs::remove_dir_all(&output_dir)
                .with_context(|| format!("removing {}", output_dir.display()))?;
        }
    }
    eprint!("{}", steps.render());
    eprint!("{}", render(&rows));
    if rows.len() != PLATFORMS.len() || rows.iter().any(|r| !r.passed) {
        eprintln!("error: the bake rehearsal failed: see the table above");
        return Err(Exit(1).into());
    }
    Ok(())
}

/// The bake command line against the mirror, without the mode flags.
fn bake_args(
    mirror: &mirror::Mirror,
    server_url: &str,
    mirror_config: &Path,
    run_dir: &Path,
) -> Vec<OsString> {
    let platforms: Vec<&str> = PLATFORMS.iter().map(|p| p.name()).collect();
    [
        "bake",
        &mirror.channel,
        crate::testbed::FLATCAR_VERSION,
        "--platform",
        &platforms.join(","),
        "--release-server",
        &mirror.release_server(server_url),
        "--signing-key",
        &mirror.signing_key.display().to_string(),
        "--mirror-config",
        &mirror_config.display().to_string(),
        "--cache-dir",
        &run_dir.join("cache").display().to_string(),
        "--format",
        "json",
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

/// Runs `cargo xtask <args> <extra>` (this binary) with its messages on stderr;
/// its JSON answer.
fn run_bake(args: &[OsString], extra: &[&str]) -> anyhow::Result<Value> {
    let xtask = std::env::current_exe().context("finding the xtask binary")?;
    eprintln!(
        "rehearse: cargo xtask {} {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        extra.join(" ")
    );
    let output = Command::new(xtask)
        .args(args)
        .args(extra)
        .current_dir(workspace::project_root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running the xtask binary")?;
    if !output.status.success() {
        bail!("it failed ({})", output.status);
    }
    serde_json::from_slice(&output.stdout).context("reading its JSON answer")
}

/// Every URL in the dry-run plan is served by the mirror, and the plan names
/// each platform's release image and each Kubernetes, CNI and crictl download.
/// Returns how many URLs it names.
fn check_plan(plan: &Value, mirror: &mirror::Mirror, server_url: &str) -> anyhow::Result<usize> {
    let mut urls = Vec::new();
    collect_urls(plan, &mut urls);
    let base = format!("{}/", server_url.trim_end_matches('/'));
    let mut problems: Vec<String> = urls
        .iter()
        .filter(|url| {
            url.strip_prefix(&base)
                .is_none_or(|path| !mirror.files.iter().any(|f| f == path))
        })
        .map(|url| format!("{url} is not a file the mirror serves"))
        .collect();
    let release = mirror
        .release_server(server_url)
        .replace("{channel}", &mirror.channel);
    let mut expected: Vec<String> = PLATFORMS
        .iter()
        .map(|&p| {
            format!(
                "{release}/amd64-usr/{}/{}",
                crate::testbed::FLATCAR_VERSION,
                platform_images::published_name(p)
            )
        })
        .collect();
    expected.extend(
        [
            "/kubeadm",
            "/kubelet",
            "/kubectl",
            "/cni-plugins-linux-amd64-",
            "/crictl-",
        ]
        .map(str::to_owned),
    );
    for want in &expected {
        if !urls.iter().any(|u| u.contains(want.as_str())) {
            problems.push(format!("no URL for {want}"));
        }
    }
    if !problems.is_empty() {
        bail!(
            "the dry-run plan of `bake` does not name every artifact on the mirror:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(urls.len())
}

/// Every string in `value` that is an http(s) URL.
fn collect_urls(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if s.starts_with("http://") || s.starts_with("https://") => {
            out.push(s.clone())
        }
        Value::Array(items) => items.iter().for_each(|v| collect_urls(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_urls(v, out)),
        _ => {}
    }
}

/// Checks one platform's output: its format's structural check, then for the
/// four QEMU boots, a boot through its config channel and the node rules.
fn check_platform(sh: &Shell, platform: Platform, output_dir: &Path, work: &Path) -> Row {
    let structure = structural_check(sh, platform, output_dir);
    let mut row = Row {
        platform,
        structure: match &structure {
            Ok(what) => format!("ok ({what})"),
            Err(err) => format!("FAIL: {err:#}"),
        },
        boot: "-".to_owned(),
        rules: "-".to_owned(),
        passed: structure.is_ok(),
    };
    if !baked::BOOTED.contains(&platform) {
        row.boot = "not booted here".to_owned();
        return row;
    }
    match baked::boot_and_check(sh, platform, output_dir, work) {
        Ok(booted) => {
            for rule in &booted.rules.rules {
                let status = if rule.passed { "PASS" } else { "FAIL" };
                eprintln!(
                    "{platform}: [{status}] {} | expected: {} | found: {}",
                    rule.name, rule.expected, rule.found
                );
            }
            let failed: Vec<&str> = booted
                .rules
                .rules
                .iter()
                .filter(|r| !r.passed)
                .map(|r| r.name.as_str())
                .collect();
            let passed = booted.rules.rules.len() - failed.len();
            row.boot = format!("{:.1}s to SSH", booted.boot_to_ssh.as_secs_f64());
            row.rules = format!(
                "{passed} passed, {} failed, {} skipped{}",
                failed.len(),
                booted.skipped,
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(": {}", failed.join("; "))
                }
            );
            row.passed &= failed.is_empty() && booted.rules_succeeded && passed > 0;
        }
        Err(err) => {
            row.boot = format!("FAIL: {err:#}");
            row.passed = false;
        }
    }
    row
}

/// The disk format's own check of the platform's output; what it checked.
fn structural_check(sh: &Shell, platform: Platform, dir: &Path) -> anyhow::Result<String> {
    let file = |extension: &str| baked::output_file(dir, extension);
    let checked = |path: PathBuf| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match platform {
        Platform::Qemu => {
            let qcow2 = file(".qcow2")?;
            let boxed = file(".box")?;
            vagrant_box::check(&boxed)?;
            Ok(format!("{} and {}", checked(qcow2), checked(boxed)))
        }
        Platform::Openstack | Platform::Proxmoxve => Ok(checked(file(".qcow2")?)),
        Platform::Kubevirt => {
            let archive = file(".oci.tar")?;
            container_disk::check(&archive)?;
            Ok(checked(archive))
        }
        Platform::Metal | Platform::Hetzner => {
            let image = file(".raw.gz")?;
            metal::check(sh, &image)?;
            Ok(checked(image))
        }
        Platform::Vmware => {
            let image = file(".ova")?;
            ova::check(&image)?;
            Ok(checked(image))
        }
        Platform::Azure => {
            let image = file(".vhd")?;
            vhd::check(&image)?;
            Ok(checked(image))
        }
    }
}

fn render(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.platform.name().to_owned(),
                if r.passed { "pass" } else { "FAIL" }.to_owned(),
                r.structure.clone(),
                r.boot.clone(),
                r.rules.clone(),
            ]
        })
        .collect();
    format!(
        "\n{}",
        table::render(
            &["platform", "result", "output check", "boot", "node rules"],
            &cells
        )
    )
}
