//! Two checkouts sharing one target directory (a global CARGO_TARGET_DIR, common
//! with git worktrees): `cargo xtask` in the second reuses the binary compiled in
//! the first, and must still check the second one's files.

use std::path::Path;
use std::process::Command;

use xtask::{nested_cargo, workspace};

/// Copies the files git knows in `from` (tracked, or new and not ignored) to `to`,
/// with their modification times, so that cargo finds the xtask it built for
/// `from` up to date for `to` and does not rebuild it.
fn copy_checkout(from: &Path, to: &Path) {
    let listing = Command::new("git")
        .arg("-C")
        .arg(from)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .unwrap();
    assert!(listing.status.success(), "git ls-files failed");
    for name in listing.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).unwrap();
        let source = from.join(name);
        let Ok(meta) = source.symlink_metadata() else {
            continue; // deleted in the work tree
        };
        if !meta.is_file() {
            continue;
        }
        let target = to.join(name);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&source, &target).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&target)
            .unwrap()
            .set_modified(meta.modified().unwrap())
            .unwrap();
    }
}

/// `cargo <args>` in `dir`, building into `target_dir`.
fn cargo(dir: &Path, target_dir: &Path, args: &[&str]) -> std::process::Output {
    let sh = xshell::Shell::new().unwrap();
    Command::from(nested_cargo::command(&sh).args(args))
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .unwrap()
}

#[test]
fn a_second_checkout_validates_its_own_files() {
    let a = workspace::project_root();
    // The target directory this test's xtask was built in: <target>/debug/xtask.
    let binary = Path::new(env!("CARGO_BIN_EXE_xtask"));
    let target_dir = binary.parent().and_then(Path::parent).unwrap();
    // The binary `cargo xtask` runs, compiled in A, as a `cargo xtask` there leaves
    // it (`cargo test` builds the crate as another unit, with the same output path).
    let built = cargo(&a, target_dir, &["build", "--quiet", "--package", "xtask"]);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let compiled_in_a = binary.metadata().unwrap().modified().unwrap();

    let b = tempfile::tempdir().unwrap();
    copy_checkout(&a, b.path());
    // B, and only B, has a trailing comma.
    let file = "images/capi/packer/config/cni.json";
    let text = std::fs::read_to_string(b.path().join(file)).unwrap();
    let broken = text.trim_end().trim_end_matches('}').trim_end().to_owned() + ",\n}\n";
    std::fs::write(b.path().join(file), &broken).unwrap();

    let out = cargo(
        b.path(),
        target_dir,
        &[
            "xtask",
            "validate",
            "--no-install",
            "--allow-missing",
            "--format",
            "json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        binary.metadata().unwrap().modified().unwrap(),
        compiled_in_a,
        "cargo rebuilt the xtask in B, so B did not run the binary compiled in A: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let b_root = b.path().canonicalize().unwrap();
    assert_eq!(report["root"], b_root.display().to_string(), "{stderr}");
    let json = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "json")
        .expect("a json check");
    assert_eq!(json["result"], "fail", "{json}");
    assert_eq!(json["problems"][0]["file"], file);
    assert_eq!(json["problems"][0]["line"], broken.lines().count());
}
