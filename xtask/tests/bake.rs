//! The bake's parts against the real tools: the Kubernetes sysext squashed twice
//! to the same bytes, and a GPT disk image with an ext4 ROOT (made here with
//! sfdisk and `mkfs.ext4 -d`, no root) edited with debugfs and read back.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use xshell::Shell;
use xtask::disk_image::ext4::{Edit, Entry, Meta};
use xtask::disk_image::DiskImage;
use xtask::flatcar::release::Arch;
use xtask::sysext::{self, ExtensionFile, SysextInputs};

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stdout(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Stand-ins for the verified downloads: small executables and release-shaped
/// archives.
fn sysext_inputs(dir: &Path) -> SysextInputs {
    let file = |name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        path
    };
    std::fs::create_dir_all(dir.join("cni")).unwrap();
    for plugin in ["bridge", "loopback", "host-local"] {
        file(
            &format!("cni/{plugin}"),
            &format!("#!/bin/sh\necho {plugin}\n"),
        );
    }
    file("crictl", "#!/bin/sh\necho crictl\n");
    let d = dir.to_str().unwrap();
    run(
        "tar",
        &["-czf", &format!("{d}/crictl.tar.gz"), "-C", d, "crictl"],
    );
    run(
        "tar",
        &[
            "-czf",
            &format!("{d}/cni.tgz"),
            "-C",
            &format!("{d}/cni"),
            ".",
        ],
    );
    SysextInputs {
        kubernetes_version: "v1.36.1".into(),
        arch: Arch::Amd64,
        kubeadm: file("kubeadm", "#!/bin/sh\necho kubeadm\n"),
        kubelet: file("kubelet", "#!/bin/sh\necho kubelet\n"),
        kubectl: file("kubectl", "#!/bin/sh\necho kubectl\n"),
        crictl_archive: dir.join("crictl.tar.gz"),
        cni_archive: dir.join("cni.tgz"),
        files: vec![ExtensionFile {
            path: "usr/lib/systemd/system/kubelet.service".into(),
            mode: 0o644,
            contents: b"[Service]\nExecStart=/usr/bin/kubelet\n".to_vec(),
        }],
        source_date_epoch: 1_700_000_000,
    }
}

#[test]
fn the_sysext_has_the_conventional_layout_and_the_same_bytes_every_time() {
    let sh = Shell::new().unwrap();
    let first_dir = tempfile::tempdir().unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let first = sysext::build(&sh, &sysext_inputs(first_dir.path()), first_dir.path()).unwrap();
    // Other staging times, another directory: still the same bytes.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = sysext::build(&sh, &sysext_inputs(second_dir.path()), second_dir.path()).unwrap();
    assert_eq!(
        first.sha512, second.sha512,
        "the same inputs give the same bytes"
    );
    assert_eq!(
        first.path.file_name().unwrap(),
        "kubernetes-v1.36.1-x86-64.raw"
    );
    let listing = stdout("unsquashfs", &["-lln", first.path.to_str().unwrap()]);
    for expected in [
        "-rwxr-xr-x 0/0 ",
        "/usr/bin/kubeadm",
        "/usr/bin/kubelet",
        "/usr/bin/kubectl",
        "/usr/bin/crictl",
        "/usr/local/bin/cni/bridge",
        "/usr/lib/systemd/system/kubelet.service",
        "/usr/lib/extension-release.d/extension-release.kubernetes",
    ] {
        assert!(
            listing.contains(expected),
            "{expected} missing from\n{listing}"
        );
    }
    assert!(
        !listing.contains(" 1000/"),
        "every file is root's:\n{listing}"
    );
    let release = stdout(
        "unsquashfs",
        &[
            "-cat",
            first.path.to_str().unwrap(),
            "usr/lib/extension-release.d/extension-release.kubernetes",
        ],
    );
    assert_eq!(release, first.extension_release);
    assert!(release.contains("ARCHITECTURE=x86-64\n"), "{release}");
}

#[test]
fn a_node_file_outside_usr_and_opt_is_refused() {
    let sh = Shell::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = sysext_inputs(dir.path());
    inputs.files[0].path = "etc/kubeadm.yml".into();
    let err = sysext::build(&sh, &inputs, dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "etc/kubeadm.yml cannot go into a system extension: systemd-sysext merges only usr/ and opt/"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".sysext")),
        "no staging directory is left behind"
    );
}

/// A GPT disk with OEM and ROOT partitions (and USR-A when given a btrfs file
/// system), ROOT an ext4 made from a tree with an os-release.
pub fn small_flatcar_disk(dir: &Path, usr_btrfs: Option<&Path>) -> PathBuf {
    let tree = dir.join("root-tree");
    std::fs::create_dir_all(tree.join("usr/lib")).unwrap();
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(
        tree.join("usr/lib/os-release"),
        "ID=flatcar\nVERSION_ID=0.0.1\nSYSEXT_LEVEL=1.0\n",
    )
    .unwrap();
    let disk = dir.join("disk.raw");
    let usr_sectors = usr_btrfs.map_or(0, |f| std::fs::metadata(f).unwrap().len() / 512);
    let size = (64 << 20) + usr_sectors * 512;
    run(
        "truncate",
        &["-s", &size.to_string(), disk.to_str().unwrap()],
    );
    let mut layout =
        "label: gpt\nstart=2048, size=16384, name=OEM\nstart=18432, size=65536, name=ROOT\n"
            .to_string();
    if usr_sectors > 0 {
        layout.push_str(&format!("start=83968, size={usr_sectors}, name=USR-A\n"));
    }
    let mut sfdisk = Command::new("sfdisk")
        .arg("--quiet")
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(layout.as_bytes())
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-d",
            tree.to_str().unwrap(),
            "-E",
            &format!("offset={}", 18432 * 512),
            disk.to_str().unwrap(),
            "32M",
        ],
    );
    if let Some(btrfs) = usr_btrfs {
        let seek = format!("seek={}", 83968 * 512);
        run(
            "dd",
            &[
                &format!("if={}", btrfs.display()),
                &format!("of={}", disk.display()),
                "bs=1M",
                "oflag=seek_bytes",
                &seek,
                "conv=notrunc,sparse",
                "status=none",
            ],
        );
    }
    disk
}

fn sha512(path: &Path) -> String {
    xtask::flatcar::cache::sha512_file(path).unwrap()
}

#[test]
fn root_is_edited_in_the_image_file_and_reads_back() {
    let sh = Shell::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let disk = small_flatcar_disk(dir.path(), None);
    let payload = dir.path().join("payload");
    std::fs::write(&payload, "sysext bytes").unwrap();
    let edits = [
        Edit {
            path: "/opt/extensions/kubernetes/kubernetes-v1.36.1-x86-64.raw".into(),
            entry: Entry::File(payload.clone()),
            meta: Meta::root(0o644, 1_700_000_000),
        },
        Edit {
            path: "/etc/extensions/kubernetes.raw".into(),
            entry: Entry::Symlink(
                "/opt/extensions/kubernetes/kubernetes-v1.36.1-x86-64.raw".into(),
            ),
            meta: Meta::root(0o777, 1_700_000_000),
        },
        Edit {
            path: "/etc/kubeadm.yml".into(),
            entry: Entry::File(payload.clone()),
            meta: Meta {
                mode: 0o600,
                uid: 0,
                gid: 500,
                time: 1_700_000_000,
            },
        },
    ];
    let copy = dir.path().join("copy.raw");
    std::fs::copy(&disk, &copy).unwrap();

    let image = DiskImage::open(&disk).unwrap();
    assert_eq!(
        image
            .partitions
            .iter()
            .map(|p| p.label.as_str())
            .collect::<Vec<_>>(),
        ["OEM", "ROOT"]
    );
    let root = image.root().unwrap();
    assert_eq!(root.offset, 18432 * 512);
    root.apply(&sh, &edits, 1_700_000_000).unwrap();
    // A second run replaces what the first wrote.
    root.apply(&sh, &edits, 1_700_000_000).unwrap();
    assert_eq!(
        root.read_file(
            &sh,
            "/opt/extensions/kubernetes/kubernetes-v1.36.1-x86-64.raw"
        )
        .unwrap(),
        b"sysext bytes"
    );
    let link = root.stat(&sh, "/etc/extensions/kubernetes.raw").unwrap();
    assert!(link.contains("Type: symlink"), "{link}");
    assert!(
        link.contains("Fast link dest: \"/opt/extensions/kubernetes/"),
        "{link}"
    );
    let config = root.stat(&sh, "/etc/kubeadm.yml").unwrap();
    assert!(config.contains("Mode:  0600"), "{config}");
    assert!(config.contains("Group:   500"), "{config}");
    assert!(config.contains("mtime: 0x6553f100"), "{config}");
    let parent = root.stat(&sh, "/opt/extensions").unwrap();
    assert!(
        parent.contains("Type: directory    Mode:  0755"),
        "{parent}"
    );
    assert!(
        root.read_file(&sh, "/etc/missing").is_err(),
        "reading a missing file is an error"
    );

    // The same edits on a copy made before: the same bytes.
    let again = DiskImage::open(&copy).unwrap().root().unwrap();
    again.apply(&sh, &edits, 1_700_000_000).unwrap();
    again.apply(&sh, &edits, 1_700_000_000).unwrap();
    assert_eq!(
        sha512(&disk),
        sha512(&copy),
        "the same edits give the same disk bytes"
    );

    assert_eq!(
        image.os_release(&sh).unwrap(),
        "ID=flatcar\nVERSION_ID=0.0.1\nSYSEXT_LEVEL=1.0\n"
    );
}

#[test]
fn os_release_is_read_from_a_btrfs_usr_partition_without_mounting() {
    let sh = Shell::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let usr = dir.path().join("usr-tree");
    std::fs::create_dir_all(usr.join("lib")).unwrap();
    std::fs::write(
        usr.join("lib/os-release"),
        "ID=flatcar\nVERSION_ID=4081.2.0\n",
    )
    .unwrap();
    let btrfs = dir.path().join("usr.btrfs");
    run("truncate", &["-s", "120M", btrfs.to_str().unwrap()]);
    run(
        "mkfs.btrfs",
        &[
            "-q",
            "--rootdir",
            usr.to_str().unwrap(),
            btrfs.to_str().unwrap(),
        ],
    );
    let disk = small_flatcar_disk(dir.path(), Some(&btrfs));
    let image = DiskImage::open(&disk).unwrap();
    assert_eq!(
        image.os_release(&sh).unwrap(),
        "ID=flatcar\nVERSION_ID=4081.2.0\n"
    );
}

/// A signed release on a loopback server with a qemu (qcow2) and a metal (raw)
/// image, both small GPT disks with an ext4 ROOT; the key, a cache and a copy of
/// the repository to bake into.
struct Bed {
    dir: tempfile::TempDir,
    repo: tempfile::TempDir,
    server: support::FileServer,
    key: PathBuf,
    sysext: PathBuf,
}

impl Bed {
    fn new(os_release: &str) -> Bed {
        use xtask::testbed::release_tree::{self, Image, Release};
        let sh = Shell::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let disk = small_flatcar_disk(dir.path(), None);
        let os_release_file = dir.path().join("os-release");
        std::fs::write(&os_release_file, os_release).unwrap();
        let root = DiskImage::open(&disk).unwrap().root().unwrap();
        root.apply(
            &sh,
            &[Edit {
                path: "/usr/lib/os-release".into(),
                entry: Entry::File(os_release_file),
                meta: Meta::root(0o644, 0),
            }],
            0,
        )
        .unwrap();
        let qcow2 = dir.path().join("disk.qcow2");
        run(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "qcow2",
                disk.to_str().unwrap(),
                qcow2.to_str().unwrap(),
            ],
        );
        let signer = xtask::testbed::signer::Signer::new("Bake Test <bake@test.invalid>").unwrap();
        let key = dir.path().join("key.asc");
        signer.write_public_key(&key, true).unwrap();
        let tree = dir.path().join("tree");
        let release = Release {
            images: vec![
                Image::published(
                    "flatcar_production_qemu_image.img",
                    &qcow2,
                    signer.signing(),
                ),
                Image::published("flatcar_production_image.bin", &disk, signer.signing()),
            ],
            current: true,
            ..Release::new("stable", "amd64", "4081.2.0")
        };
        release_tree::write(&tree, &release).unwrap();
        let sysext_dir = dir.path().join("sysext");
        std::fs::create_dir_all(&sysext_dir).unwrap();
        let sysext = sysext::build(&sh, &sysext_inputs(&sysext_dir), &sysext_dir)
            .unwrap()
            .path;
        let repo = support::copy_of_repository();
        std::fs::create_dir_all(repo.path().join("xtask")).unwrap();
        std::fs::copy(
            support::project_root().join("xtask/Cargo.toml"),
            repo.path().join("xtask/Cargo.toml"),
        )
        .unwrap();
        Bed {
            server: support::FileServer::start(&tree),
            repo,
            key,
            sysext,
            dir,
        }
    }

    fn bake(&self, args: &[&str]) -> std::process::Output {
        // The binary finds the repository it works on through CARGO_MANIFEST_DIR.
        support::xtask()
            .env("CARGO_MANIFEST_DIR", self.repo.path().join("xtask"))
            .arg("bake")
            .args(args)
            .args([
                "--arch",
                "amd64",
                "--quiet",
                "--kubernetes-version",
                "1.36.1",
            ])
            .arg("--release-server")
            .arg(format!("http://127.0.0.1:{}/{{channel}}", self.server.port))
            .arg("--signing-key")
            .arg(&self.key)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .arg("--sysext")
            .arg(&self.sysext)
            .output()
            .unwrap()
    }

    fn output_root(&self) -> PathBuf {
        self.repo.path().join("images/capi/output")
    }
}

const FLATCAR_OS_RELEASE: &str = "ID=flatcar\nVERSION_ID=4081.2.0\nSYSEXT_LEVEL=1.0\n";

#[test]
fn the_dry_run_lists_every_url_and_an_absent_platform_is_named_before_any_download() {
    let bed = Bed::new(FLATCAR_OS_RELEASE);
    let out = bed.bake(&[
        "stable",
        "--platform",
        "qemu,metal",
        "--sysupdate",
        "--dry-run",
    ]);
    let text = support::both(&out);
    assert!(out.status.success(), "{text}");
    let base = format!(
        "http://127.0.0.1:{}/stable/amd64-usr/4081.2.0/",
        bed.server.port
    );
    assert!(
        text.contains(&format!("from   {base}flatcar_production_qemu_image.img\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("from   {base}flatcar_production_image.bin\n")),
        "{text}"
    );
    assert!(
        text.contains("/etc/sysupdate.kubernetes.d/kubernetes-v1.36.conf"),
        "{text}"
    );

    let out = bed.bake(&["stable", "--platform", "qemu,azure,vmware"]);
    let text = support::both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("lacks the image of 2 platform(s)"), "{text}");
    assert!(
        text.contains("azure: ") && text.contains("flatcar_production_azure_image.vhd"),
        "{text}"
    );
    assert!(text.contains("vmware: "), "{text}");
    let images: Vec<String> = bed
        .server
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| !p.ends_with("version.txt") && !p.ends_with(".DIGESTS"))
        .collect();
    assert_eq!(
        images,
        Vec::<String>::new(),
        "nothing but release metadata was downloaded"
    );

    let out = bed.bake(&["stable", "--platform", "qemu,vsphere", "--dry-run"]);
    let text = support::both(&out);
    assert!(!out.status.success());
    assert!(
        text.contains("the known platforms are: qemu, openstack"),
        "{text}"
    );
    assert!(
        !bed.output_root().exists(),
        "no output directory after failed runs"
    );
}

#[test]
fn a_bake_writes_the_sysext_into_root_of_each_platform_and_records_it() {
    let bed = Bed::new(FLATCAR_OS_RELEASE);
    let out = bed.bake(&["stable", "--platform", "qemu,metal", "--sysupdate"]);
    assert!(out.status.success(), "{}", support::both(&out));
    let sh = Shell::new().unwrap();
    let sysext_bytes = std::fs::read(&bed.sysext).unwrap();
    for platform in ["qemu", "metal"] {
        let name = format!("flatcar-stable-4081.2.0-kube-v1.36.1-{platform}");
        let dir = bed.output_root().join(&name);
        let raw = dir.join(format!("{name}.raw"));
        let root = DiskImage::open(&raw).unwrap().root().unwrap();
        assert_eq!(
            root.read_file(
                &sh,
                "/opt/extensions/kubernetes/kubernetes-v1.36.1-x86-64.raw"
            )
            .unwrap(),
            sysext_bytes,
            "{platform}: the sysext reads back from ROOT"
        );
        let link = root.stat(&sh, "/etc/extensions/kubernetes.raw").unwrap();
        assert!(
            link.contains("/opt/extensions/kubernetes/kubernetes-v1.36.1-x86-64.raw"),
            "{link}"
        );
        let conf = root
            .read_file(&sh, "/etc/sysupdate.kubernetes.d/kubernetes-v1.36.conf")
            .unwrap();
        assert!(String::from_utf8(conf)
            .unwrap()
            .contains("MatchPattern=kubernetes-v1.36.@v-%a.raw"));
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("build.json")).unwrap())
                .unwrap();
        assert_eq!(record["platform"], platform);
        assert_eq!(record["sysext"]["sha512"], sha512(&bed.sysext));
        assert_eq!(record["outputs"][0]["sha512"], sha512(&raw));
        assert!(
            record["base_image_signed_by"]["primary_key"].is_string(),
            "{record}"
        );
    }
    let leftovers: Vec<String> = std::fs::read_dir(bed.output_root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert_eq!(
        leftovers,
        Vec::<String>::new(),
        "no staging directory is left"
    );

    // Baked again with the same inputs: the same disk bytes.
    let name = "flatcar-stable-4081.2.0-kube-v1.36.1-metal";
    let first = sha512(&bed.output_root().join(name).join(format!("{name}.raw")));
    let out = bed.bake(&["stable", "--platform", "metal", "--sysupdate"]);
    assert!(!out.status.success(), "an existing output needs --force");
    let out = bed.bake(&["stable", "--platform", "metal", "--sysupdate", "--force"]);
    assert!(out.status.success(), "{}", support::both(&out));
    assert_eq!(
        first,
        sha512(&bed.output_root().join(name).join(format!("{name}.raw")))
    );
}

#[test]
fn an_image_whose_os_release_the_sysext_does_not_match_is_refused_with_both_values() {
    let bed = Bed::new("ID=flatcar\nVERSION_ID=4081.2.0\n");
    let out = bed.bake(&["stable", "--platform", "metal"]);
    let text = support::both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("SYSEXT_LEVEL=1.0 does not match the image's os-release SYSEXT_LEVEL="),
        "{text}"
    );
    let entries: Vec<_> = std::fs::read_dir(bed.output_root())
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert_eq!(
        entries,
        Vec::<std::ffi::OsString>::new(),
        "no output directory, no staging left"
    );
}
