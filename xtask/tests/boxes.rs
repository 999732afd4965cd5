//! `cargo xtask boxes` against the real vagrant: boxes added from a tiny box file the
//! test makes, in a VAGRANT_HOME of its own, with libvirt's built-in test driver
//! standing in for a daemon (no VM is started, no network is touched).

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::xtask;

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
    for name in [
        "flatcar-stable-4081.2.0",
        "flatcar-beta-4152.1.0",
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
        table.contains("flatcar-stable-4081.2.0  stable   4081.2.0"),
        "{table}"
    );
    assert!(table.contains("flatcar-beta-4152.1.0"), "{table}");
    assert!(!table.contains("someone/else"), "{table}");

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
    assert!(names.contains(&"flatcar-stable-4081.2.0"), "{listed}");

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
        "4081.2.0",
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
    assert!(!left.contains("flatcar-stable-4081.2.0"), "{left}");
    assert!(left.contains("flatcar-beta-4152.1.0"), "{left}");
    assert!(left.contains("someone/else"), "{left}");
}
