//! `cargo xtask boxes` against the real vagrant: boxes added from a tiny box file the
//! test makes, in a VAGRANT_HOME of its own, with libvirt's built-in test driver
//! standing in for a daemon (no VM is started, no network is touched).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::xtask;

/// A build output of this tool under images/capi/output (a version no real build
/// uses), with a build record naming `box_file`; removed when dropped.
struct RecordedOutput(PathBuf);

impl RecordedOutput {
    fn new(channel: &str, version: &str, box_file: &str) -> RecordedOutput {
        let dir = support::project_root()
            .join("images/capi/output")
            .join(format!("flatcar-{channel}-{version}-kube-v1.36.2"));
        std::fs::create_dir_all(&dir).unwrap();
        let record = serde_json::json!({
            "channel": channel, "version": version, "arch": "amd64", "provider": "qemu",
            "kubernetes_semver": "v1.36.2", "containerd_version": "2.1.4", "cni_version": "1.8.0",
            "accelerator": "tcg", "base_image": null,
            "outputs": [{"file": box_file, "sha512": "00"}],
            "build_ssh_public_key": "", "tools": {}, "started": "", "finished": ""
        });
        std::fs::write(dir.join("build.json"), record.to_string()).unwrap();
        RecordedOutput(dir)
    }
}

impl Drop for RecordedOutput {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn make_box(dir: &Path) -> std::path::PathBuf {
    let img = dir.join("box.img");
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("16M")
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::write(
        dir.join("metadata.json"),
        r#"{"provider":"libvirt","format":"qcow2","virtual_size":1}"#,
    )
    .unwrap();
    let file = dir.join("test.box");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-czf")
        .arg(&file)
        .args(["metadata.json", "box.img"])
        .status()
        .unwrap();
    assert!(ok.success());
    file
}

fn with_env(mut command: Command, home: &Path) -> Output {
    command
        .env("VAGRANT_HOME", home)
        .env("LIBVIRT_DEFAULT_URI", "test:///default")
        .output()
        .unwrap()
}

fn vagrant(home: &Path, args: &[&str]) -> Output {
    let mut command = Command::new("vagrant");
    command.args(args);
    with_env(command, home)
}

#[test]
fn lists_and_cleans_up_only_its_own_boxes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("vagrant.d");
    let box_file = make_box(dir.path());
    let _stable = RecordedOutput::new("stable", "9990.1.0", "b.box");
    let _beta = RecordedOutput::new("beta", "9990.1.1", "b.box");
    for name in [
        "flatcar-stable-9990.1.0",
        "flatcar-beta-9990.1.1",
        "flatcar-alpha-9990.1.2",
        "someone/else",
    ] {
        let out = vagrant(
            &home,
            &["box", "add", "--name", name, box_file.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "vagrant box add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut list = xtask();
    list.args(["boxes", "--pool", "default-pool"]);
    let out = with_env(list, &home);
    // The table is for people: on stderr; stdout carries data only.
    let table = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{table}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert!(
        table.contains("flatcar-stable-9990.1.0  stable   9990.1.0"),
        "{table}"
    );
    assert!(table.contains("flatcar-beta-9990.1.1"), "{table}");
    assert!(!table.contains("someone/else"), "{table}");
    assert!(
        !table.contains("flatcar-alpha-9990.1.2"),
        "no record names it: {table}"
    );

    let mut json = xtask();
    json.args(["boxes", "--pool", "default-pool", "--format", "json"]);
    let out = with_env(json, &home);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["box"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{listed}");
    assert!(names.contains(&"flatcar-stable-9990.1.0"), "{listed}");

    // A channel or version that names no box is a usage error, before anything runs.
    for (args, says) in [
        (["edge", "1.0.0"], "discontinued"),
        (
            ["stabel", "4081.2.0"],
            "the live channels are alpha beta stable lts",
        ),
        (["stable", "4081.2"], "MAJOR.MINOR.PATCH"),
    ] {
        let mut refuse = xtask();
        refuse.args(["boxes", "--cleanup"]).args(args);
        let out = with_env(refuse, &home);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{err}");
    }

    let mut cleanup = xtask();
    cleanup.args([
        "boxes",
        "--cleanup",
        "stable",
        "9990.1.0",
        "--pool",
        "default-pool",
    ]);
    let out = with_env(cleanup, &home);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let left = String::from_utf8_lossy(&vagrant(&home, &["box", "list"]).stdout).into_owned();
    assert!(!left.contains("flatcar-stable-9990.1.0"), "{left}");
    assert!(left.contains("flatcar-beta-9990.1.1"), "{left}");
    assert!(left.contains("someone/else"), "{left}");
}

/// `--cleanup` once removed any box *named* like ours and stopped at the first
/// error. Now: only boxes a build record names, every step tried, every failure said.
#[test]
fn finding_10_cleanup_removes_only_recorded_boxes_and_reports_every_failure() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("vagrant.d");
    let box_file = make_box(dir.path());
    // The first box's record names a .box "file" that cannot be deleted.
    let alpha = RecordedOutput::new("alpha", "9990.2.0", "stuck.box");
    std::fs::create_dir_all(alpha.0.join("stuck.box/inside")).unwrap();
    let _beta = RecordedOutput::new("beta", "9990.2.1", "b.box");
    for name in [
        "flatcar-alpha-9990.2.0",
        "flatcar-beta-9990.2.1",
        "flatcar-stable-9990.2.2",
    ] {
        let out = vagrant(
            &home,
            &["box", "add", "--name", name, box_file.to_str().unwrap()],
        );
        assert!(out.status.success(), "vagrant box add {name}");
    }
    let mut cleanup = xtask();
    cleanup.args(["boxes", "--cleanup", "--pool", "default-pool"]);
    let out = with_env(cleanup, &home);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("these steps failed") && err.contains("stuck.box"),
        "{err}"
    );
    let left = String::from_utf8_lossy(&vagrant(&home, &["box", "list"]).stdout).into_owned();
    assert!(!left.contains("flatcar-alpha-9990.2.0"), "{left}");
    assert!(
        !left.contains("flatcar-beta-9990.2.1"),
        "the cleanup went on after a failure: {left}"
    );
    assert!(
        left.contains("flatcar-stable-9990.2.2"),
        "a box no record names is not ours: {left}"
    );
}
