//! `cargo xtask build-flatcar` up to the point where it would boot something: the
//! `--dry-run` plan against a loopback release server, and every bad input that must
//! stop the build before any download. The full build runs in the rehearsal.

mod support;

use std::path::Path;
use std::process::Output;

use xtask::testbed::release_tree::{self, Digests, Image, Release};

use support::{stderr, xtask, FileServer};

/// A release tree with version.txt only: enough to resolve, nothing to download.
fn release_tree(dir: &Path) {
    release(dir, "4081.2.0", true);
}

fn release(dir: &Path, version: &str, current: bool) {
    let release = Release {
        current,
        ..Release::new("stable", "amd64", version)
    };
    release_tree::write(dir, &release).unwrap();
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
    assert_nothing_written(&cache, "flatcar-stable-4081.2.0-kube-v1.35.1");
}

/// A dry run leaves no trace: no cache, no output or work directory.
fn assert_nothing_written(cache: &Path, build_name: &str) {
    assert!(!cache.exists(), "a dry run writes no cache");
    let outputs = support::project_root().join("images/capi/output");
    assert!(!outputs.join(build_name).exists());
    assert!(
        !outputs.join(".work").exists(),
        "a dry run makes no work directory"
    );
}

#[test]
fn the_dry_run_plan_as_text_is_all_stdout_holds() {
    let dir = tempfile::tempdir().unwrap();
    release_tree(dir.path());
    let server = FileServer::start(dir.path());
    let cache = dir.path().join("cache");
    let out = build(
        &server,
        &cache,
        &["--dry-run", "--kubernetes-version", "1.35.1"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let root = support::project_root().display().to_string();
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .replace(&server.url(), "http://127.0.0.1:PORT")
        .replace(&cache.display().to_string(), "CACHE")
        .replace(&root, "ROOT");
    // The versions of containerd, CNI and the rest come from images/capi/packer/config:
    // when they change, `UPDATE_EXPECT=1 cargo test --test build` shows the new plan.
    expect_test::expect![[r#"
        Flatcar stable 4081.2.0 (amd64), provider qemu
        Kubernetes v1.35.1, containerd 2.3.3, CNI v1.9.1
        Accelerator: tcg
        Output: images/capi/output/flatcar-stable-4081.2.0-kube-v1.35.1

        Downloads:
          cni_url: https://github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-amd64-v1.9.1.tgz
          containerd_url: https://github.com/containerd/containerd/releases/download/v2.3.3/containerd-2.3.3-linux-amd64.tar.gz
          crictl_url: https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.36.0/crictl-v1.36.0-linux-amd64.tar.gz
          flatcar_image: http://127.0.0.1:PORT/stable/amd64-usr/4081.2.0/flatcar_production_qemu_image.img
          flatcar_release: http://127.0.0.1:PORT/stable/amd64-usr/4081.2.0/
          flatcar_signing_key: https://www.flatcar.org/security/image-signing-key/Flatcar_Image_Signing_Key.asc
          kubernetes_http_source: https://dl.k8s.io/release
          pypy_http_source: https://downloads.python.org/pypy

        Artifacts, fetched and verified on this host, served to the VM by the build (http://10.0.2.2:<port>):
          kubeadm v1.35.1: https://dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubeadm
            sha256 from https://dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubeadm.sha256
          kubelet v1.35.1: https://dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubelet
            sha256 from https://dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubelet.sha256
          kubectl v1.35.1: https://dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubectl
            sha256 from https://dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubectl.sha256
          cni v1.9.1: https://github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-amd64-v1.9.1.tgz
            sha256 from https://github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-amd64-v1.9.1.tgz.sha256
          crictl v1.36.0: https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.36.0/crictl-v1.36.0-linux-amd64.tar.gz
            sha256 from https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.36.0/crictl-v1.36.0-linux-amd64.tar.gz.sha256
          containerd 2.3.3: https://github.com/containerd/containerd/releases/download/v2.3.3/containerd-2.3.3-linux-amd64.tar.gz
            sha256 from https://github.com/containerd/containerd/releases/download/v2.3.3/containerd-2.3.3-linux-amd64.tar.gz.sha256sum
          pypy 7.3.17: https://downloads.python.org/pypy/pypy3.10-v7.3.17-linux64.tar.bz2
            sha256 fdcdb9b24f1a7726003586503fdeb264fd68fc37fbfcea022dcfe825a7fee18b (published)

        Packer, run in images/capi:
          packer \
            build \
            -color=false \
            -on-error=cleanup \
            -var-file=packer/config/kubernetes.json \
            -var-file=packer/config/cni.json \
            -var-file=packer/config/containerd.json \
            -var-file=packer/config/ansible-args.json \
            -var-file=packer/config/common.json \
            -var-file=packer/qemu/qemu-flatcar.json \
            -var-file=ROOT/images/capi/output/.work/flatcar-stable-4081.2.0-kube-v1.35.1/build-vars.json \
            packer/qemu/packer.json

        Generated var file:
        {
          "accelerator": "tcg",
          "flatcar_channel": "stable",
          "flatcar_image_path": "CACHE/stable/4081.2.0/amd64/flatcar_production_qemu_image.img",
          "flatcar_version": "4081.2.0",
          "ignition_config_path": "ROOT/images/capi/output/.work/flatcar-stable-4081.2.0-kube-v1.35.1/ignition.json",
          "kubernetes_series": "v1.35",
          "kubernetes_version": "1.35.1",
          "node_rules_dir": "ROOT/images/capi/output/.work/flatcar-stable-4081.2.0-kube-v1.35.1/node-rules",
          "output_directory": "ROOT/images/capi/output/.work/flatcar-stable-4081.2.0-kube-v1.35.1/output",
          "ssh_private_key_file": "ROOT/images/capi/output/.work/flatcar-stable-4081.2.0-kube-v1.35.1/id_ed25519"
        }
    "#]].assert_eq(&text);
    assert_nothing_written(&cache, "flatcar-stable-4081.2.0-kube-v1.35.1");
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

/// A directory for PATH with only `tools` in it (links to the real ones).
fn path_with(dir: &Path, tools: &[&str]) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    for tool in tools {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .map(|d| d.join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is needed for this test"));
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    bin
}

/// The tools a qemu build needs, apart from packer.
const BUILD_TOOLS_BUT_PACKER: &[&str] = &[
    "ansible-playbook",
    "qemu-system-x86_64",
    "qemu-img",
    "ssh-keygen",
    "gpg",
    "gpgv",
];

#[test]
fn a_missing_packer_stops_the_build_before_any_download() {
    let dir = tempfile::tempdir().unwrap();
    release_tree(dir.path());
    let server = FileServer::start(dir.path());
    let bin = path_with(dir.path(), BUILD_TOOLS_BUT_PACKER);
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
    release(dir.path(), version, false);
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
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "validate's table and the build's progress go to stderr"
    );
}

/// `--force` once removed an output directory whose verify VM was running (an
/// orphaned libvirt domain), and any directory of that name whatever made it.
#[test]
fn finding_10_force_leaves_an_output_whose_verify_vm_may_run_or_that_is_not_ours() {
    let dir = tempfile::tempdir().unwrap();
    let version = "9990.0.1";
    release(dir.path(), version, false);
    let server = FileServer::start(dir.path());
    let output =
        support::project_root().join("images/capi/output/flatcar-stable-9990.0.1-kube-v1.36.2");
    let id = output.join("vagrant/.vagrant/machines/default/libvirt/id");
    std::fs::create_dir_all(id.parent().unwrap()).unwrap();
    std::fs::write(&id, "4d1a-running-domain").unwrap();
    let run = || {
        build(
            &server,
            &dir.path().join("cache"),
            &["stable", version, "--force", "--no-verify"],
        )
    };
    // Not ours: no build record.
    let foreign = run();
    std::fs::write(
        output.join("build.json"),
        serde_json::json!({
            "channel": "stable", "version": version, "arch": "amd64", "provider": "qemu",
            "kubernetes_semver": "v1.36.2", "containerd_version": "2.1.4", "cni_version": "1.8.0",
            "accelerator": "tcg", "base_image": null, "outputs": [],
            "build_ssh_public_key": "", "tools": {}, "started": "", "finished": ""
        })
        .to_string(),
    )
    .unwrap();
    // Ours, with its verify VM's id.
    let running = run();
    let kept = id.is_file();
    std::fs::remove_dir_all(&output).unwrap();
    assert_eq!(foreign.status.code(), Some(1), "{}", stderr(&foreign));
    assert!(
        stderr(&foreign).contains("not the output of a build of this tool"),
        "{}",
        stderr(&foreign)
    );
    assert_eq!(running.status.code(), Some(1), "{}", stderr(&running));
    assert!(
        stderr(&running).contains("has a verify VM that may still run")
            && stderr(&running).contains("vagrant destroy --force"),
        "{}",
        stderr(&running)
    );
    assert!(kept, "the verify VM's directory was removed");
    assert_eq!(image_requests(&server), 0);
}

#[test]
fn a_build_resolves_the_release_once() {
    let dir = tempfile::tempdir().unwrap();
    // A release with a version.txt and nothing else: the build resolves it, then
    // fails at the image, having started nothing.
    release(dir.path(), "9991.0.0", true);
    let server = FileServer::start(dir.path());
    let cache = dir.path().join("cache");
    let out = build(
        &server,
        &cache,
        &["stable", "--no-install", "--insecure-skip-signature"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("has no flatcar_production_qemu_image.img"),
        "{err}"
    );
    assert_eq!(
        server.requests_for("version.txt").len(),
        1,
        "{:?}",
        server.requests()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{err}");
}

#[test]
fn why_validation_stopped_the_build_is_said() {
    let dir = tempfile::tempdir().unwrap();
    release_tree(dir.path());
    let server = FileServer::start(dir.path());
    // Everything the build needs, but not ignition-validate, which validate needs.
    let mut tools = BUILD_TOOLS_BUT_PACKER.to_vec();
    tools.push("packer");
    let bin = path_with(dir.path(), &tools);
    let out = xtask()
        .args(["build-flatcar", "--no-install", "--accelerator", "tcg"])
        .arg("--release-server")
        .arg(format!("{}/{{channel}}", server.url()))
        .env("PATH", &bin)
        .env("FLATCAR_TOOLCHAIN_DIR", dir.path().join("toolchain"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("ignition-validate"), "{err}");
    assert!(
        err.contains("error: the image definitions do not validate; fix them before building"),
        "{err}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{err}");
    assert!(server.requests().is_empty());
}

#[test]
fn offline_builds_the_newest_release_the_cache_verified() {
    let dir = tempfile::tempdir().unwrap();
    // Release 1.2.3 with an (unsigned) image, fetched into the cache.
    let image = dir.path().join("image");
    std::fs::write(&image, b"not really a disk image").unwrap();
    let name = "flatcar_production_qemu_image.img";
    let unsigned = Release {
        images: vec![Image {
            digests: Digests::Sha512Only,
            ..Image::new(name, &image)
        }],
        ..Release::new("stable", "amd64", "1.2.3")
    };
    release_tree::write(dir.path(), &unsigned).unwrap();
    let server = FileServer::start(dir.path());
    let cache = dir.path().join("cache");
    let fetch = |args: &[&str]| {
        xtask()
            .arg("fetch-image")
            .args(args)
            .args([
                "--insecure-skip-signature",
                "--arch",
                "amd64",
                "--cache-dir",
            ])
            .arg(&cache)
            .arg("--release-server")
            .arg(format!("{}/{{channel}}", server.url()))
            .output()
            .unwrap()
    };
    let out = fetch(&["stable", "1.2.3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A newer release whose download failed: a lock and a partial file, no record.
    let failed = cache.join("stable/1.2.5/amd64");
    std::fs::create_dir_all(&failed).unwrap();
    std::fs::write(failed.join(".lock"), "").unwrap();
    std::fs::write(failed.join(format!("{name}.part")), "half").unwrap();

    let out = fetch(&["stable", "--offline"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("version: 1.2.3\n"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = build(
        &server,
        &cache,
        &[
            "stable",
            "--offline",
            "--insecure-skip-signature",
            "--dry-run",
            "--format",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["version"], "1.2.3");
    assert!(
        plan["build_name"].as_str().unwrap().contains("-1.2.3-"),
        "{plan}"
    );
}

/// The artifacts of the repository's build written under `root` at their mirror
/// paths, with checksum files; returns the list and PyPy's digest.
fn write_artifacts(root: &Path) -> (Vec<xtask::artifacts::Artifact>, String) {
    use xtask::artifacts::{artifact_list, checksum::Algorithm, Pypy};
    let vars = xtask::build::plan::rendered_variables(
        xtask::build::plan::Provider::Qemu,
        None,
        &Default::default(),
    )
    .unwrap();
    let digest = |body: &str| {
        let mut h = Algorithm::Sha256.hasher();
        h.update(body.as_bytes());
        h.finish()
    };
    let pypy_sha256 = digest("pypy");
    let pypy = Pypy {
        version: "7.3.11".into(),
        python_version: "3.9".into(),
        platform: "linux64".into(),
        sha256: pypy_sha256.clone(),
    };
    let list = artifact_list(&vars, &pypy).unwrap();
    for a in &list {
        let file = root.join(&a.served_path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, &a.name).unwrap();
        if let Some(sums) = a.checksum_served_path().unwrap() {
            let text = format!("{}  {}\n", digest(&a.name), a.file_name());
            std::fs::write(root.join(sums), text).unwrap();
        }
    }
    (list, pypy_sha256)
}

#[test]
fn a_tampered_artifact_stops_the_build_before_packer() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    std::fs::write(&image, b"not really a disk image").unwrap();
    let version = "9992.0.0";
    let unsigned = Release {
        images: vec![Image {
            digests: Digests::Sha512Only,
            ..Image::new("flatcar_production_qemu_image.img", &image)
        }],
        ..Release::new("stable", "amd64", version)
    };
    release_tree::write(dir.path(), &unsigned).unwrap();
    let server = FileServer::start(dir.path());
    let (list, pypy_sha256) = write_artifacts(dir.path());
    let kubelet = &list[1];
    std::fs::write(dir.path().join(&kubelet.served_path), "tampered").unwrap();
    let vars = xtask::build::plan::rendered_variables(
        xtask::build::plan::Provider::Qemu,
        None,
        &Default::default(),
    )
    .unwrap();
    let mut config: serde_json::Map<String, serde_json::Value> =
        xtask::artifacts::variables_at(&vars, &server.url())
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
    config.insert(
        "ansible_extra_vars".into(),
        format!("pypy_python_version=3.9 pypy_version=7.3.11 pypy_sha256={pypy_sha256}").into(),
    );
    let mirror = dir.path().join("mirror.json");
    std::fs::write(&mirror, serde_json::Value::Object(config).to_string()).unwrap();

    let out = build(
        &server,
        &dir.path().join("cache"),
        &[
            "stable",
            version,
            "--no-install",
            "--insecure-skip-signature",
            "--no-verify",
            "--mirror-config",
            mirror.to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let sha = |body: &str| {
        let mut h = xtask::artifacts::checksum::Algorithm::Sha256.hasher();
        h.update(body.as_bytes());
        h.finish()
    };
    let named = format!(
        "kubelet does not match its published checksum: SHA-256 {} downloaded, {} expected (from {}.sha256)",
        sha("tampered"),
        sha("kubelet"),
        kubelet.url.replace("https://", &format!("{}/", server.url()))
    );
    assert!(err.contains(&named), "{named}\n{err}");
    assert!(err.contains("1 of 7 artifacts"), "{err}");
    assert!(!err.contains("==> qemu"), "packer started: {err}");
    let work = support::project_root()
        .join("images/capi/output/.work/flatcar-stable-9992.0.0-kube-v1.36.2");
    assert!(!work.exists(), "{} was left", work.display());
    // Every artifact request came from the xtask, none from anything else.
    let artifact_requests: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| !r.path.starts_with("/stable/"))
        .collect();
    assert_eq!(artifact_requests.len(), 13, "{artifact_requests:#?}");
    assert!(artifact_requests.iter().all(|r| r
        .user_agent
        .as_deref()
        .is_some_and(|ua| ua.starts_with(xtask::net::download::USER_AGENT_NAME))));
}

/// `cargo xtask mirror` (here, beside the build's artifact tests it shares the
/// artifact tree with): a tree with the release and every artifact, a var file that
/// points a build at it, and a second run that downloads nothing.
#[test]
fn mirror_writes_a_servable_tree_and_a_second_run_downloads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    std::fs::write(&image, b"not really a disk image").unwrap();
    let version = "9993.0.0";
    let unsigned = Release {
        images: vec![Image {
            digests: Digests::Sha512Only,
            ..Image::new("flatcar_production_qemu_image.img", &image)
        }],
        ..Release::new("stable", "amd64", version)
    };
    release_tree::write(dir.path(), &unsigned).unwrap();
    let server = FileServer::start(dir.path());
    let (list, pypy_sha256) = write_artifacts(dir.path());
    let vars = xtask::build::plan::rendered_variables(
        xtask::build::plan::Provider::Qemu,
        None,
        &Default::default(),
    )
    .unwrap();
    let mut upstream: serde_json::Map<String, serde_json::Value> =
        xtask::artifacts::variables_at(&vars, &server.url())
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
    upstream.insert(
        "ansible_extra_vars".into(),
        format!("pypy_python_version=3.9 pypy_version=7.3.11 pypy_sha256={pypy_sha256}").into(),
    );
    let upstream_file = dir.path().join("upstream.json");
    std::fs::write(
        &upstream_file,
        serde_json::Value::Object(upstream).to_string(),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let mirror = || {
        xtask()
            .arg("mirror")
            .arg(&out_dir)
            .args([
                "stable",
                version,
                "--arch",
                "amd64",
                "--insecure-skip-signature",
            ])
            .arg("--release-server")
            .arg(format!("{}/{{channel}}", server.url()))
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .arg("--mirror-config")
            .arg(&upstream_file)
            .args(["--base-url", "http://mirror.internal/"])
            .output()
            .unwrap()
    };
    let out = mirror();
    assert!(out.status.success(), "{}", stderr(&out));
    let release = out_dir.join(format!("flatcar/stable/amd64-usr/{version}"));
    for name in ["flatcar_production_qemu_image.img", "version.txt"] {
        assert!(release.join(name).is_file(), "{name}: {}", stderr(&out));
    }
    let served_at = |a: &xtask::artifacts::Artifact| {
        // The upstream here is the loopback server: its host and port lead the path.
        let upstream = server.url().trim_start_matches("http://").to_owned();
        out_dir.join(upstream).join(&a.served_path)
    };
    for a in &list {
        assert_eq!(std::fs::read_to_string(served_at(a)).unwrap(), a.name);
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("mirror-config.json")).unwrap())
            .unwrap();
    let host = server.url().trim_start_matches("http://").to_owned();
    assert_eq!(
        config["kubernetes_http_source"],
        format!("http://mirror.internal/{host}/dl.k8s.io/release")
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("--release-server 'http://mirror.internal/flatcar/{channel}'")
            && stdout.contains("--mirror-config"),
        "{stdout}"
    );

    server.clear_requests();
    let again = mirror();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("Mirrored 7 artifacts (0 downloaded, 7 from the cache)"),
        "{}",
        stderr(&again)
    );
    assert_eq!(server.requests(), [], "a warm cache downloads nothing");
}
