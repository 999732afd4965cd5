//! `cargo xtask rehearse`: the real build-flatcar and verify-vagrant pipeline on the
//! Flatcar-shaped guest, and the faults it must survive: a tampered image, a failing
//! Ansible task, a broken node rule, Ctrl-C during provisioning. Each boots VMs under TCG and needs root,
//! so they run with `--include-ignored` (CI runs them); they share the rehearsal's
//! directories, so they run one at a time.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::Mutex;

use support::{project_root, stderr, xtask};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const BUILD_NAME: &str = "flatcar-stable-9999.0.0-kube-v1.36.2";

fn output_dir() -> PathBuf {
    project_root().join("images/capi/output").join(BUILD_NAME)
}

fn work_dir() -> PathBuf {
    project_root()
        .join("images/capi/output/.work")
        .join(BUILD_NAME)
}

fn run_dir() -> PathBuf {
    project_root().join("target/rehearsal/run")
}

/// qemu processes started for the rehearsal (by packer or libvirt) that are still alive.
fn rehearsal_qemus() -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let qemu = cmdline.starts_with("qemu-system") || cmdline.contains("/qemu-system");
        if qemu && (cmdline.contains(BUILD_NAME) || cmdline.contains("target/rehearsal")) {
            found.push(cmdline);
        }
    }
    found
}

fn rehearse(args: &[&str]) -> Output {
    xtask().arg("rehearse").args(args).output().unwrap()
}

fn assert_no_half_output() {
    assert!(
        !output_dir().exists(),
        "{} was left behind",
        output_dir().display()
    );
    assert!(
        !work_dir().exists(),
        "{} was left behind (it holds the build key)",
        work_dir().display()
    );
    assert_eq!(
        rehearsal_qemus(),
        Vec::<String>::new(),
        "qemu was left running"
    );
}

#[test]
#[ignore = "builds and boots VMs under TCG as root (minutes); CI runs it"]
fn the_whole_pipeline_builds_and_verifies_a_box() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = rehearse(&["--keep-output"]);
    // The summary table is for people: on stderr, with everything else.
    let table = stderr(&out);
    let err = table.clone();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "stdout is data only"
    );
    assert!(
        out.status.success(),
        "rehearse failed:\n{table}\n{}",
        support_tail(&err)
    );
    for step in [
        "guest image",
        "loopback mirror",
        "build-flatcar",
        "verify-vagrant",
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(step)
                && (l.contains("pass")
                    || l.contains("reused")
                    || l.contains("built")
                    || l.contains("files"))),
            "{step}:\n{table}"
        );
    }
    assert!(table.contains("not run in rehearsal"), "{table}");
    // What the build produced: image, manifest, box, log and a record with digests.
    let output = output_dir();
    for file in [
        format!("{BUILD_NAME}.qcow2"),
        format!("{BUILD_NAME}.box"),
        "packer-manifest.json".into(),
        "packer.log".into(),
    ] {
        assert!(
            output.join(&file).is_file(),
            "{file} missing in {}",
            output.display()
        );
    }
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(output.join("build.json")).unwrap()).unwrap();
    assert_eq!(record["version"], "9999.0.0");
    assert_eq!(record["accelerator"], "tcg");
    assert_eq!(record["base_image"]["sha512"].as_str().unwrap().len(), 128);
    assert!(record["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["file"] == format!("{BUILD_NAME}.box")));
    // The node rules ran in the build and on the booted box, each reported and passed.
    for rule in [
        "kernel-param vm.overcommit_memory: value",
        "service containerd: running",
        "command crictl ps answers on the build's socket: exit-status",
        "command the build's SSH key is nowhere: exit-status",
        "file /etc/kubeadm.yml: exists",
    ] {
        let row = table
            .lines()
            .find(|l| l.starts_with(rule))
            .unwrap_or_else(|| panic!("{rule} is not in the rules table:\n{table}"));
        assert_eq!(
            row.split_whitespace().rev().take(2).collect::<Vec<_>>(),
            ["pass", "pass"],
            "{row}"
        );
        assert!(
            err.contains(&format!("verify: [PASS] {rule} |")),
            "{rule} did not pass in verify:\n{}",
            support_tail(&err)
        );
    }
    let build_only = table
        .lines()
        .find(|l| l.starts_with("file /boot/flatcar/first_boot: exists"))
        .unwrap_or_else(|| panic!("no first-boot rule:\n{table}"));
    assert!(
        build_only.contains("pass") && build_only.trim_end().ends_with('-'),
        "{build_only}"
    );
    assert!(
        table.contains("build: node rules: ") && table.contains(", 0 failed in "),
        "{table}"
    );
    assert!(table.contains("verify: node rules: "), "{table}");
    assert!(
        err.contains("verify: kubeadm init: not run"),
        "{}",
        support_tail(&err)
    );
    std::fs::remove_dir_all(&output).unwrap();
    assert_eq!(rehearsal_qemus(), Vec::<String>::new());
    let bridges = std::process::Command::new("ip")
        .args(["-br", "link", "show", "type", "bridge"])
        .output()
        .unwrap();
    assert!(
        bridges.stdout.is_empty(),
        "a bridge was left on the host: {}",
        String::from_utf8_lossy(&bridges.stdout)
    );
}

/// `rehearse --bake`: every platform baked from the mirror through bake's own
/// command line, the dry-run plan names every artifact URL, the four outputs QEMU
/// boots pass the node rules through their own config channel, the others pass
/// their format's structural check, and nothing is left behind.
#[test]
#[ignore = "bakes every platform and boots four VMs under TCG as root (minutes); CI runs it"]
fn the_bake_rehearsal_boots_each_bootable_output_and_checks_the_rest() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = std::time::Instant::now();
    let out = rehearse(&["--bake"]);
    let err = stderr(&out);
    eprintln!(
        "rehearse --bake took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "{}", support_tail(&err));
    assert!(
        err.lines()
            .any(|l| l.starts_with("bake --dry-run") && l.contains("every one on the mirror")),
        "{}",
        support_tail(&err)
    );
    let booted = ["qemu", "openstack", "proxmoxve", "kubevirt"];
    for platform in booted
        .iter()
        .chain(&["metal", "hetzner", "vmware", "azure"])
    {
        let row = err
            .lines()
            .find(|l| l.starts_with(&format!("{platform} ")) && l.contains(" ok ("))
            .unwrap_or_else(|| panic!("no checked {platform} row:\n{}", support_tail(&err)));
        assert!(row.contains(" pass "), "{row}");
        if booted.contains(platform) {
            assert!(
                row.contains("s to SSH") && row.contains(" passed, 0 failed"),
                "{row}"
            );
            for rule in [
                "service kubelet",
                "kernel-param vm.overcommit_memory",
                "command crictl ps answers on the build's socket",
                "command kubeadm reports the build's Kubernetes",
                "file /etc/kubeadm.yml",
            ] {
                assert!(
                    err.contains(&format!("{platform}: [PASS] {rule}")),
                    "{platform}: {rule}:\n{}",
                    support_tail(&err)
                );
            }
        } else {
            assert!(row.contains("not booted here"), "{row}");
        }
    }
    let left: Vec<_> = std::fs::read_dir(project_root().join("images/capi/output"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{BUILD_NAME}-"))
        })
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "output left behind: {left:?}");
    assert_eq!(rehearsal_qemus(), Vec::<String>::new());
}

#[test]
#[ignore = "needs the rehearsal guest (root, minutes); CI runs it"]
fn a_tampered_image_stops_the_build_before_anything_boots() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = rehearse(&["--fault", "tampered-image", "--no-verify"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}", support_tail(&err));
    assert!(
        err.contains("fault injected: flipped one byte"),
        "{}",
        support_tail(&err)
    );
    assert!(
        err.contains("SHA-512") || err.contains("signature"),
        "{}",
        support_tail(&err)
    );
    assert!(
        !err.contains("packer | "),
        "packer must not have started:\n{}",
        support_tail(&err)
    );
    let cache = run_dir().join("cache");
    let trusted: Vec<PathBuf> = walkdir::WalkDir::new(&cache)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| {
            p.to_string_lossy().ends_with(".img") || p.to_string_lossy().ends_with(".verified.json")
        })
        .collect();
    assert!(trusted.is_empty(), "the cache holds {trusted:?}");
    assert_no_half_output();
}

/// A mirror serves the signed 9999.0.0 guest as 9999.0.1: every signature and
/// digest passes, so the first provisioning step must catch it, naming both.
#[test]
#[ignore = "builds a VM under TCG as root (minutes); CI runs it"]
fn finding_2_a_rolled_back_release_stops_at_the_first_provisioning_step() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = rehearse(&["--fault", "rolled-back-release", "--no-verify"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}", support_tail(&err));
    let summary = err
        .split("packer build failed:")
        .nth(1)
        .unwrap_or_else(|| panic!("no failure summary:\n{}", support_tail(&err)));
    assert!(
        summary.contains("TASK [setup : Stop unless the booted image is the Flatcar release"),
        "not stopped by the first provisioning step:\n{summary}"
    );
    assert!(
        summary.contains("Flatcar stable 9999.0.0") && summary.contains("stable 9999.0.1"),
        "both versions are not named:\n{summary}"
    );
    assert!(
        !err.contains("TASK [setup : Bootstrap PyPy"),
        "provisioning went on:\n{}",
        support_tail(&err)
    );
    assert_no_half_output();
    let claimed = BUILD_NAME.replace("9999.0.0", "9999.0.1");
    for dir in ["images/capi/output", "images/capi/output/.work"] {
        let left = project_root().join(dir).join(&claimed);
        assert!(!left.exists(), "{} was left behind", left.display());
    }
}

#[test]
#[ignore = "builds a VM under TCG as root (minutes); CI runs it"]
fn a_tampered_artifact_stops_the_build_before_packer_and_leaves_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = rehearse(&["--fault", "corrupt-download", "--no-verify"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}", support_tail(&err));
    assert!(
        err.contains(".tar.bz2 does not match its published checksum: SHA-256 "),
        "the tampered file and its checksums are not named:\n{}",
        support_tail(&err)
    );
    assert!(
        !err.contains("packer build") && !err.contains("TASK ["),
        "packer started:\n{}",
        support_tail(&err)
    );
    assert_no_half_output();
}

#[test]
#[ignore = "builds a VM under TCG as root (minutes); CI runs it"]
fn a_broken_node_rule_fails_the_build_by_name_and_leaves_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = rehearse(&["--fault", "kernel-param-unset", "--no-verify"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}", support_tail(&err));
    let summary = err
        .split("packer build failed:")
        .nth(1)
        .unwrap_or_else(|| panic!("no failure summary:\n{}", support_tail(&err)));
    assert!(
        summary
            .contains("[FAIL] kernel-param vm.overcommit_memory: value | expected: 1 | found: 0"),
        "the broken rule is not named with what was expected and found:\n{summary}"
    );
    assert!(
        summary.contains("node rules: ") && summary.contains(", 1 failed in "),
        "only that rule may fail:\n{summary}"
    );
    assert_no_half_output();
}

#[test]
#[ignore = "builds a VM under TCG as root (minutes); CI runs it"]
fn ctrl_c_during_provisioning_stops_packer_and_its_vm() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = xtask()
        .args(["rehearse", "--no-verify"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let reader = BufReader::new(child.stderr.take().unwrap());
    let mut lines = reader.lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("TASK [setup : ") {
            // SAFETY: sending SIGINT to the child this test started.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            break;
        }
    }
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "rehearse succeeded after SIGINT:\n{}",
        support_tail(&seen)
    );
    assert!(
        seen.contains("TASK [setup : "),
        "provisioning never started:\n{}",
        support_tail(&seen)
    );
    assert_no_half_output();
}

fn support_tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
