//! `cargo xtask build-flatcar` up to the point where it would boot something: the
//! `--dry-run` plan against a loopback release server, and every bad input that must
//! stop the build before any download. The full build runs in the rehearsal.

mod support;

use std::path::Path;
use std::process::Output;

use support::{xtask, FileServer};

const VERSION_TXT: &str =
    "FLATCAR_BUILD=4081\nFLATCAR_BRANCH=2\nFLATCAR_PATCH=0\nFLATCAR_VERSION=4081.2.0\n\
FLATCAR_VERSION_ID=4081.2.0\nFLATCAR_BUILD_ID=\"2024-09-11-0000\"\nFLATCAR_SDK_VERSION=4081.0.0\n";

/// A release tree with version.txt only: enough to resolve, nothing to download.
fn release_tree(dir: &Path) {
    for release in ["current", "4081.2.0"] {
        let d = dir.join("stable/amd64-usr").join(release);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("version.txt"), VERSION_TXT).unwrap();
    }
}

fn build(server: &FileServer, cache: &Path, args: &[&str]) -> Output {
    xtask()
        .arg("build-flatcar")
        .args(args)
        .arg("--release-server")
        .arg(format!("{}/{{channel}}", server.url()))
        .arg("--cache-dir")
        .arg(cache)
        .arg("--accelerator")
        .arg("tcg")
        .env_remove("FLATCAR_CHANNEL")
        .env_remove("FLATCAR_VERSION")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn image_requests(server: &FileServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| !r.path.ends_with("version.txt"))
        .count()
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    release_tree(dir.path());
    let server = FileServer::start(dir.path());
    let cache = dir.path().join("cache");
    let mirror = dir.path().join("mirror.json");
    std::fs::write(
        &mirror,
        "{\n  \"cni_url\": \"http://mirror.example/cni.tgz\"\n}\n",
    )
    .unwrap();
    let out = build(
        &server,
        &cache,
        &[
            "--dry-run",
            "--format",
            "json",
            "--kubernetes-version",
            "1.35.1",
            "--mirror-config",
            mirror.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["version"], "4081.2.0");
    assert_eq!(plan["build_name"], "flatcar-stable-4081.2.0-kube-v1.35.1");
    assert_eq!(plan["kubernetes_semver"], "v1.35.1");
    assert_eq!(plan["accelerator"], "tcg");
    assert_eq!(plan["urls"]["cni_url"], "http://mirror.example/cni.tgz");
    assert_eq!(
        plan["urls"]["flatcar_image"],
        format!(
            "{}/stable/amd64-usr/4081.2.0/flatcar_production_qemu_image.img",
            server.url()
        )
    );
    let argv: Vec<String> = plan["packer_command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let var_files: Vec<&str> = argv
        .iter()
        .filter_map(|a| a.strip_prefix("-var-file="))
        .collect();
    assert_eq!(var_files.len(), 8, "{argv:?}");
    assert_eq!(var_files[0], "packer/config/kubernetes.json");
    assert_eq!(var_files[5], "packer/qemu/qemu-flatcar.json");
    assert_eq!(Path::new(var_files[6]), mirror.canonicalize().unwrap());
    assert!(var_files[7].ends_with("/build-vars.json"));
    assert_eq!(argv.last().unwrap(), "packer/qemu/packer.json");
    assert_eq!(plan["generated_var_file"]["flatcar_version"], "4081.2.0");
    assert_eq!(plan["generated_var_file"]["kubernetes_version"], "1.35.1");
    assert_eq!(image_requests(&server), 0, "a dry run downloads no image");
    assert!(!cache.exists(), "a dry run writes no cache");
    assert!(!support::project_root()
        .join("images/capi/output/flatcar-stable-4081.2.0-kube-v1.35.1")
        .exists());
}

#[test]
fn unknown_channels_and_versions_stop_before_any_download() {
    let dir = tempfile::tempdir().unwrap();
    release_tree(dir.path());
    let server = FileServer::start(dir.path());
    let cache = dir.path().join("cache");

    let out = build(&server, &cache, &["edge"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("discontinued"), "{}", stderr(&out));

    let out = build(&server, &cache, &["stable", "4081.9.9", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("4081.9.9"), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert_eq!(image_requests(&server), 0);
}

#[test]
fn a_mirror_config_with_an_undeclared_variable_stops_the_build() {
    let dir = tempfile::tempdir().unwrap();
    release_tree(dir.path());
    let server = FileServer::start(dir.path());
    let mirror = dir.path().join("mirror.json");
    std::fs::write(
        &mirror,
        "{\n  \"cni_ulr\": \"http://mirror.example/cni.tgz\"\n}\n",
    )
    .unwrap();
    let out = build(
        &server,
        &dir.path().join("cache"),
        &["--dry-run", "--mirror-config", mirror.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cni_ulr"), "{err}");
    assert!(err.contains("mirror.json:2:"), "{err}");
    assert_eq!(image_requests(&server), 0);
}

#[test]
fn a_missing_packer_stops_the_build_before_any_download() {
    let dir = tempfile::tempdir().unwrap();
    release_tree(dir.path());
    let server = FileServer::start(dir.path());
    // A PATH with every tool but packer.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for tool in [
        "ansible-playbook",
        "qemu-system-x86_64",
        "qemu-img",
        "ssh-keygen",
        "gpg",
        "gpgv",
    ] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .map(|d| d.join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is needed for this test"));
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    // --no-install: the build would otherwise install packer into .local/ first.
    let out = xtask()
        .args([
            "build-flatcar",
            "--no-install",
            "--accelerator",
            "tcg",
            "--release-server",
        ])
        .arg(format!("{}/{{channel}}", server.url()))
        .env("PATH", &bin)
        .env("FLATCAR_TOOLCHAIN_DIR", dir.path().join("toolchain"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("packer") && err.contains("install"), "{err}");
    assert!(
        server.requests().is_empty(),
        "nothing may be fetched: {:?}",
        server.requests().len()
    );
}

#[test]
fn an_existing_output_directory_is_not_replaced_without_force() {
    let dir = tempfile::tempdir().unwrap();
    // A version no real build uses, so the repository's own outputs are never touched.
    let version = "9990.0.0";
    let d = dir.path().join("stable/amd64-usr").join(version);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("version.txt"),
        VERSION_TXT.replace("4081.2.0", version),
    )
    .unwrap();
    let server = FileServer::start(dir.path());
    let output =
        support::project_root().join("images/capi/output/flatcar-stable-9990.0.0-kube-v1.36.2");
    std::fs::create_dir_all(&output).unwrap();
    std::fs::write(output.join("keep"), "an earlier build").unwrap();
    let out = build(&server, &dir.path().join("cache"), &["stable", version]);
    let kept = std::fs::read_to_string(output.join("keep"));
    std::fs::remove_dir_all(&output).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(kept.unwrap(), "an earlier build");
    assert_eq!(image_requests(&server), 0);
}
