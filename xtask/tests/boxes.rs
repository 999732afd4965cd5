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
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("flatcar-stable-4081.2.0  stable   4081.2.0"),
        "{table}"
    );
    assert!(table.contains("flatcar-beta-4152.1.0"), "{table}");
    assert!(!table.contains("someone/else"), "{table}");

    let mut refuse = xtask();
    refuse.args(["boxes", "--cleanup", "edge", "1.0.0"]);
    let out = with_env(refuse, &home);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not name a box this tool makes"));

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
