//! `cargo xtask rehearse-guest`: build (or reuse) the Flatcar-shaped rehearsal guest,
//! boot it the way build-flatcar boots Flatcar, with the repository's Ignition config
//! and a fresh key, check that it behaves like Flatcar where a build depends on it,
//! boot the images published for the platforms whose config comes on a drive
//! (OpenStack, Proxmox VE, KubeVirt) with a config on that drive carrying a test
//! sysext as a bake places one, and report its size, build time and boot-to-SSH times.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use xshell::Shell;

use crate::flatcar::platform::Platform;
use crate::output::Format;
use crate::testbed::boot::{self, BootOptions, RunningGuest};
use crate::testbed::guest::{self, Guest, Provenance};
use crate::testbed::{platform_images, test_sysext};
use crate::{build::ignition, build::key, error::Exit, table, workspace};

#[derive(clap::Args, Debug)]
pub struct RehearseGuestArgs {
    /// Build the guest even when one for the current recipe is cached.
    #[arg(long)]
    rebuild: bool,
    /// Also boot the openstack, proxmoxve and kubevirt images with their config on a
    /// drive and a test sysext (`rehearse --bake` boots the baked ones that way too).
    #[arg(long)]
    drive_platforms: bool,
    /// How to report: a table on stderr for people, or JSON on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// One behaviour checked in the booted guest.
#[derive(Debug, Serialize)]
struct Check {
    name: String,
    passed: bool,
    /// What was seen, for a failure or the curious.
    detail: String,
}

#[derive(Debug, Serialize)]
struct Boot {
    what: String,
    boot_to_ssh_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    image: PathBuf,
    image_bytes: u64,
    python_archive: PathBuf,
    python_version: String,
    pypy_version: String,
    flatcar_version: &'static str,
    recipe: String,
    built: bool,
    build_seconds: Option<f64>,
    build_steps: Vec<(String, f64)>,
    boots: Vec<Boot>,
    checks: Vec<Check>,
    passed: bool,
}

/// How long a clean poweroff may take under TCG.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(90);

pub fn run(sh: &Shell, args: &RehearseGuestArgs) -> anyhow::Result<()> {
    let (guest, provenance) = guest::build_or_reuse(sh, args.rebuild)?;
    let steps = match &provenance {
        Provenance::Reused => {
            eprintln!("Reusing the rehearsal guest {}", guest.image.display());
            Vec::new()
        }
        Provenance::Built { steps } => steps
            .iter()
            .map(|(name, took)| (name.clone(), took.as_secs_f64()))
            .collect(),
    };

    let work = crate::testbed::cache_dir().join("rehearse-guest");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let (mut boots, mut checks) = boot_and_check(sh, &guest.image, &work)?;
    for platform in DRIVE_PLATFORMS.iter().filter(|_| args.drive_platforms) {
        boot_platform(sh, &guest, *platform, &work, &mut boots, &mut checks)?;
    }

    let report = Report {
        image_bytes: guest.image_size()?,
        image: guest.image.clone(),
        python_archive: guest.python.path.clone(),
        python_version: guest.python.python_version.clone(),
        pypy_version: guest.python.pypy_version.clone(),
        flatcar_version: crate::testbed::FLATCAR_VERSION,
        recipe: guest.recipe.clone(),
        built: matches!(provenance, Provenance::Built { .. }),
        build_seconds: (!steps.is_empty()).then(|| steps.iter().map(|(_, s)| s).sum()),
        build_steps: steps,
        passed: checks.iter().all(|c| c.passed),
        boots,
        checks,
    };
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        ),
        Format::Text => eprint!("{}", render(&report)),
    }
    if report.passed {
        Ok(())
    } else {
        eprintln!(
            "The rehearsal guest does not behave like Flatcar: see the failed checks above (logs in {}).",
            work.display()
        );
        Err(Exit(1).into())
    }
}

fn render(report: &Report) -> String {
    let rows: Vec<Vec<String>> = report
        .checks
        .iter()
        .map(|c| {
            vec![
                if c.passed { "ok" } else { "FAILED" }.to_owned(),
                c.name.clone(),
                c.detail.clone(),
            ]
        })
        .collect();
    let mut out = table::render(&["result", "check", "seen"], &rows);
    out += "\n";
    let mut summary = vec![
        vec!["image".to_owned(), report.image.display().to_string()],
        vec![
            "image size".to_owned(),
            format!(
                "{:.0} MB (qcow2, compressed)",
                report.image_bytes as f64 / 1e6
            ),
        ],
        vec![
            "PyPy archive".to_owned(),
            report.python_archive.display().to_string(),
        ],
        vec![
            "guest".to_owned(),
            match report.build_seconds {
                Some(seconds) => format!("built now in {seconds:.0} s"),
                None => "reused from the cache".to_owned(),
            },
        ],
    ];
    for boot in &report.boots {
        summary.push(vec![
            format!("boot-to-SSH, {}", boot.what),
            format!("{:.1} s", boot.boot_to_ssh_seconds),
        ]);
    }
    out += &table::render(&["summary", ""], &summary);
    out
}

/// Boots the guest twice on one overlay: first with the repository's Ignition config
/// and a fresh key, then with a config authorizing another key, which a booted-once
/// machine must ignore.
fn boot_and_check(
    sh: &Shell,
    image: &Path,
    work: &Path,
) -> anyhow::Result<(Vec<Boot>, Vec<Check>)> {
    let first_key = make_key(sh, &work.join("first-key"), "rehearse-guest first boot")?;
    let second_key = make_key(sh, &work.join("second-key"), "rehearse-guest second boot")?;
    let repository_config = repository_ignition()?;
    let first_config = work.join("first.ign");
    write_config(
        &first_config,
        ignition::authorize_key(repository_config.clone(), &first_key.public_key)?,
    )?;
    let second_config = work.join("second.ign");
    write_config(
        &second_config,
        ignition::authorize_key(
            serde_json::json!({"ignition": {"version": "3.3.0"}}),
            &second_key.public_key,
        )?,
    )?;
    let masked = masked_units(&repository_config);

    let overlay = work.join("disk.qcow2");
    boot::create_overlay(sh, image, &overlay)?;
    let mut boots = Vec::new();
    let mut checks = Vec::new();

    eprintln!("Booting the guest with the repository's Ignition config ...");
    let mut options =
        BootOptions::like_build(&overlay, &first_key.private_key, &work.join("boot-1"));
    options.ignition = Some(first_config);
    let guest = boot_timed(sh, &options, "first boot", &mut boots)?;
    check_first_boot(sh, &guest, &masked, &mut checks)?;
    guest.shutdown(sh, SHUTDOWN_TIMEOUT)?;

    eprintln!("Booting it again with another Ignition config, which must be ignored ...");
    let mut options =
        BootOptions::like_build(&overlay, &first_key.private_key, &work.join("boot-2"));
    options.ignition = Some(second_config);
    let guest = boot_timed(sh, &options, "second boot", &mut boots)?;
    check_second_boot(sh, &guest, &second_key.private_key, &masked, &mut checks)?;
    guest.shutdown(sh, SHUTDOWN_TIMEOUT)?;

    std::fs::remove_file(&overlay).with_context(|| format!("removing {}", overlay.display()))?;
    Ok((boots, checks))
}

/// Boots the guest and records, as `what`, how long SSH took to answer.
fn boot_timed(
    sh: &Shell,
    options: &BootOptions,
    what: &str,
    boots: &mut Vec<Boot>,
) -> anyhow::Result<RunningGuest> {
    let guest = boot::boot(sh, options)?;
    let seconds = guest.boot_to_ssh.as_secs_f64();
    eprintln!("  SSH answered after {seconds:.1} s");
    boots.push(Boot {
        what: what.to_owned(),
        boot_to_ssh_seconds: seconds,
    });
    Ok(guest)
}

/// The platforms whose first boot reads its config from a drive.
const DRIVE_PLATFORMS: [Platform; 3] =
    [Platform::Openstack, Platform::Proxmoxve, Platform::Kubevirt];

/// Where the test sysext is stored and linked from, as a bake stores Kubernetes's.
const SYSEXT_STORE: &str = "/opt/extensions/rehearsal/rehearsal-sysext.raw";

/// Boots the image published for `platform` with a config on the platform's drive
/// that authorizes a fresh key and places a test sysext the way a bake does (the
/// image under /opt/extensions, linked from /etc/extensions; its unit enabled by a
/// wants symlink in /etc): SSH with that key shows the config was applied.
fn boot_platform(
    sh: &Shell,
    guest: &Guest,
    platform: Platform,
    work: &Path,
    boots: &mut Vec<Boot>,
    checks: &mut Vec<Check>,
) -> anyhow::Result<()> {
    let image = platform_images::image(sh, guest, platform)?;
    let dir = work.join(platform.name());
    let key = make_key(sh, &dir.join("key"), &format!("rehearse-guest {platform}"))?;
    let sysext = dir.join("rehearsal-sysext.raw");
    test_sysext::write(sh, &sysext)?;
    let config = dir.join("config.ign");
    write_config(
        &config,
        with_sysext(
            ignition::authorize_key(
                serde_json::json!({"ignition": {"version": "3.3.0"}}),
                &key.public_key,
            )?,
            &xshell::cmd!(sh, "base64 --wrap=0 {sysext}")
                .quiet()
                .read()
                .with_context(|| format!("encoding {}", sysext.display()))?,
        ),
    )?;
    let overlay = dir.join("disk.qcow2");
    boot::create_overlay(sh, &image.path, &overlay)?;
    eprintln!(
        "Booting the {platform} image ({}) with its config on a {:?} ...",
        image.file_name,
        platform.config_channel()
    );
    let mut options = BootOptions::like_build(&overlay, &key.private_key, &dir.join("boot"));
    options.ignition = Some(config);
    options.channel = platform.config_channel();
    options.ssh_timeout = Duration::from_secs(180);
    let running = boot_timed(sh, &options, &format!("{platform} image"), boots)?;
    let (_, journal) = running.ssh(
        sh,
        "sudo -n journalctl --boot --unit flatcar-first-boot.service --no-pager --quiet",
    )?;
    check(
        checks,
        &format!("{platform}: Ignition from its drive applied"),
        journal.contains(&format!(
            "applied the Ignition config of platform {platform}"
        )),
        format!("the drive's key logs in; {}", journal.trim()),
    );
    check_sysext(sh, &running, platform, checks)?;
    running.shutdown(sh, SHUTDOWN_TIMEOUT)?;
    std::fs::remove_file(&overlay).with_context(|| format!("removing {}", overlay.display()))
}

/// Adds the test sysext (`data`, its image in base64) to an Ignition config, placed
/// as a bake places Kubernetes.
fn with_sysext(mut config: Value, data: &str) -> Value {
    let storage = &mut config["storage"];
    storage["files"] = serde_json::json!([{
        "path": SYSEXT_STORE,
        "mode": 0o644,
        "contents": {"source": format!("data:;base64,{data}")},
    }]);
    storage["links"] = serde_json::json!([
        {"path": format!("/etc/extensions/{}.raw", test_sysext::NAME), "target": SYSEXT_STORE},
        {
            "path": format!("/etc/systemd/system/multi-user.target.wants/{}", test_sysext::UNIT),
            "target": format!("/usr/lib/systemd/system/{}", test_sysext::UNIT),
        },
    ]);
    config
}

/// The merged sysext: its binary on PATH in /usr/bin, and its unit started.
fn check_sysext(
    sh: &Shell,
    guest: &RunningGuest,
    platform: Platform,
    checks: &mut Vec<Check>,
) -> anyhow::Result<()> {
    let (_, path) = guest.ssh(
        sh,
        "command -v rehearsal-sysext-hello; rehearsal-sysext-hello",
    )?;
    // The unit may still be queued right after SSH answers: wait for it a little.
    let (_, active) = guest.ssh(
        sh,
        &format!(
            "for i in $(seq 30); do s=$(systemctl is-active {unit}); \
             [ \"$s\" = active ] && break; sleep 1; done; echo $s",
            unit = test_sysext::UNIT
        ),
    )?;
    let expected = format!("{}\n{}\n", test_sysext::BINARY, test_sysext::GREETING);
    check(
        checks,
        &format!("{platform}: the sysext is merged, its unit started"),
        path == expected && active.trim() == "active",
        format!("{} {}: {}", path.trim(), test_sysext::UNIT, active.trim()),
    );
    Ok(())
}

fn make_key(sh: &Shell, dir: &Path, comment: &str) -> anyhow::Result<key::BuildKey> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    key::generate(sh, dir, comment)
}

/// The first-boot config build-flatcar starts from.
fn repository_ignition() -> anyhow::Result<Value> {
    let path = workspace::capi_dir().join("packer/files/flatcar/ignition.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn write_config(path: &Path, config: Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&config).context("encoding an Ignition config")?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The units an Ignition config masks.
fn masked_units(config: &Value) -> Vec<String> {
    config
        .pointer("/systemd/units")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|unit| unit.get("mask").and_then(Value::as_bool) == Some(true))
        .filter_map(|unit| unit.get("name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

fn check(checks: &mut Vec<Check>, name: &str, passed: bool, detail: impl Into<String>) {
    checks.push(Check {
        name: name.to_owned(),
        passed,
        detail: detail.into().trim().replace('\n', "; "),
    });
}

/// What the first boot of the built image must show: a read-only Flatcar of the
/// expected version, the Ignition key's user, and the services build-flatcar set up.
fn check_first_boot(
    sh: &Shell,
    guest: &RunningGuest,
    masked: &[String],
    checks: &mut Vec<Check>,
) -> anyhow::Result<()> {
    check_system(sh, guest, checks)?;
    check_login(sh, guest, checks)?;
    check_services(sh, guest, masked, checks)
}

/// Whether `/etc/os-release` describes the Flatcar release the test bed serves.
fn is_expected_flatcar(os_release: &str) -> bool {
    let version_line = format!("VERSION={}", crate::testbed::FLATCAR_VERSION);
    os_release.lines().any(|l| l == "ID=flatcar")
        && os_release.lines().any(|l| l == version_line)
        && os_release.contains("NAME=\"Flatcar Container Linux by Kinvolk\"")
}

/// The operating system: Flatcar, `/usr` read-only, no Python.
fn check_system(sh: &Shell, guest: &RunningGuest, checks: &mut Vec<Check>) -> anyhow::Result<()> {
    let os_release = guest.ssh_ok(sh, "cat /etc/os-release")?;
    check(
        checks,
        "os-release says Flatcar",
        is_expected_flatcar(&os_release),
        os_release
            .lines()
            .filter(|l| l.starts_with("ID=") || l.starts_with("VERSION="))
            .collect::<Vec<_>>()
            .join(" "),
    );

    let (_, options) = guest.ssh(sh, "findmnt --noheadings --output OPTIONS /usr")?;
    let (wrote, write_error) = guest.ssh(sh, "sudo touch /usr/.rehearsal-write-test")?;
    check(
        checks,
        "/usr is read-only, even for root",
        options.trim().split(',').any(|o| o == "ro")
            && !wrote
            && write_error.contains("Read-only file system"),
        format!("mount options {}; {}", options.trim(), write_error.trim()),
    );

    let (_, pythons) = guest.ssh(
        sh,
        "for p in python python3 python2 pypy pypy3; do command -v $p; done; true",
    )?;
    check(
        checks,
        "no Python on PATH",
        pythons.trim().is_empty(),
        if pythons.trim().is_empty() {
            "none of python, python3, python2, pypy, pypy3".to_owned()
        } else {
            pythons
        },
    );
    Ok(())
}

/// The user the Ignition key logs in as: core, with passwordless sudo and no password.
fn check_login(sh: &Shell, guest: &RunningGuest, checks: &mut Vec<Check>) -> anyhow::Result<()> {
    let whoami = guest.ssh_ok(sh, "id -un")?;
    check(
        checks,
        "the Ignition key logs in as core",
        whoami.trim() == "core",
        format!("logged in as {}", whoami.trim()),
    );

    let (sudo_ok, sudo_output) = guest.ssh(sh, "sudo -n true")?;
    let (_, shadow) = guest.ssh(sh, "sudo -n getent shadow core")?;
    let password = shadow.split(':').nth(1).unwrap_or("?").to_owned();
    check(
        checks,
        "core has passwordless sudo and no password",
        sudo_ok && (password == "*" || password.starts_with('!')),
        format!(
            "sudo -n: {}; password field {password:?}",
            if sudo_ok { "ok" } else { sudo_output.trim() }
        ),
    );
    Ok(())
}

/// The services: masked units stay off, the first-boot flag is gone, nothing failed,
/// containerd runs.
fn check_services(
    sh: &Shell,
    guest: &RunningGuest,
    masked: &[String],
    checks: &mut Vec<Check>,
) -> anyhow::Result<()> {
    for unit in masked {
        let (_, enabled) = guest.ssh(sh, &format!("systemctl is-enabled {unit}"))?;
        let (_, active) = guest.ssh(sh, &format!("systemctl is-active {unit}"))?;
        check(
            checks,
            &format!("{unit} is masked and not running"),
            enabled.trim() == "masked" && active.trim() != "active",
            format!(
                "is-enabled: {}, is-active: {}",
                enabled.trim(),
                active.trim()
            ),
        );
    }

    let (flag_gone, _) = guest.ssh(sh, "test ! -e /boot/flatcar/first_boot")?;
    check(
        checks,
        "the first-boot flag is removed",
        flag_gone,
        if flag_gone {
            "/boot/flatcar/first_boot is gone"
        } else {
            "/boot/flatcar/first_boot is still there"
        },
    );

    check_no_failed_units(sh, guest, checks)?;

    let (socket, _) = guest.ssh(sh, "sudo -n test -S /run/containerd/containerd.sock")?;
    let (_, containerd) = guest.ssh(sh, "systemctl is-active containerd.service")?;
    check(
        checks,
        "containerd runs, socket at /run/containerd/containerd.sock",
        socket && containerd.trim() == "active",
        format!("containerd.service {}", containerd.trim()),
    );
    Ok(())
}

fn check_second_boot(
    sh: &Shell,
    guest: &RunningGuest,
    second_key: &Path,
    masked: &[String],
    checks: &mut Vec<Check>,
) -> anyhow::Result<()> {
    let (second_works, _) = guest.ssh_as(sh, second_key, "true")?;
    let (_, journal) = guest.ssh(
        sh,
        "sudo -n journalctl --boot --unit flatcar-first-boot.service --no-pager --quiet",
    )?;
    check(
        checks,
        "a second boot does not apply Ignition again",
        !second_works && !journal.contains("rehearsal-ignition:"),
        format!(
            "the second config's key {}; first-boot unit {}",
            if second_works {
                "logs in"
            } else {
                "is refused"
            },
            if journal.contains("rehearsal-ignition:") {
                "ran"
            } else {
                "did not run"
            }
        ),
    );
    check_no_failed_units(sh, guest, checks)?;
    for unit in masked {
        let (_, enabled) = guest.ssh(sh, &format!("systemctl is-enabled {unit}"))?;
        check(
            checks,
            &format!("{unit} stays masked after a reboot"),
            enabled.trim() == "masked",
            format!("is-enabled: {}", enabled.trim()),
        );
    }
    Ok(())
}

fn check_no_failed_units(
    sh: &Shell,
    guest: &RunningGuest,
    checks: &mut Vec<Check>,
) -> anyhow::Result<()> {
    let failed = guest.ssh_ok(sh, "systemctl list-units --failed --plain --no-legend")?;
    check(
        checks,
        "no unit failed during boot",
        failed.trim().is_empty(),
        if failed.trim().is_empty() {
            "none failed"
        } else {
            failed.as_str()
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testbed::{guest, FLATCAR_VERSION};

    #[test]
    fn the_test_beds_os_release_is_the_expected_flatcar_and_another_version_is_not() {
        assert!(is_expected_flatcar(&guest::os_release(FLATCAR_VERSION)));
        assert!(!is_expected_flatcar(&guest::os_release("1.2.3")));
        assert!(!is_expected_flatcar("ID=debian\nVERSION=9999.0.0\n"));
    }
}
