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
        "/usr/lib/systemd/system/kubelet.service",
        "/usr/lib/extension-release.d/extension-release.kubernetes",
    ] {
        assert!(
            listing.contains(expected),
            "{expected} missing from\n{listing}"
        );
    }
    assert!(
        !listing.contains("cni"),
        "the CNI plugins go onto ROOT, not into the extension:\n{listing}"
    );
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

/// The platforms whose images the test release publishes, with their names.
const PUBLISHED: &[(&str, &str)] = &[
    ("qemu", "flatcar_production_qemu_image.img"),
    ("openstack", "flatcar_production_openstack_image.img"),
    ("proxmoxve", "flatcar_production_proxmoxve_image.img"),
    ("kubevirt", "flatcar_production_kubevirt_image.qcow2"),
    ("metal", "flatcar_production_image.bin"),
    ("vmware", "flatcar_production_vmware_ova.ova"),
    ("azure", "flatcar_production_azure_image.vhd"),
];

/// A signed release on a loopback server with every platform's image made from
/// one small GPT disk with an ext4 ROOT (qcow2, raw, an OVA, a fixed VHD, made
/// with disk_formats as Flatcar ships them), stand-ins for the Kubernetes
/// binaries, crictl and the CNI plugins with their checksum files, a mirror
/// config that points the build's downloads there, the key, a cache and a copy
/// of the repository to bake into.
struct Bed {
    dir: tempfile::TempDir,
    repo: tempfile::TempDir,
    server: support::FileServer,
    key: PathBuf,
    mirror_config: PathBuf,
}

/// The small disk with `os_release` as its /usr/lib/os-release.
fn release_disk(sh: &Shell, dir: &Path, os_release: &str) -> PathBuf {
    let disk = small_flatcar_disk(dir, None);
    let os_release_file = dir.join("os-release");
    std::fs::write(&os_release_file, os_release).unwrap();
    let root = DiskImage::open(&disk).unwrap().root().unwrap();
    let edit = Edit {
        path: "/usr/lib/os-release".into(),
        entry: Entry::File(os_release_file),
        meta: Meta::root(0o644, 0),
    };
    root.apply(sh, &[edit], 0).unwrap();
    disk
}

/// Each platform's release file made from `disk`.
fn platform_images(sh: &Shell, disk: &Path, dir: &Path) -> Vec<(&'static str, PathBuf)> {
    use xtask::disk_formats::{ova, qcow2, vhd};
    let qcow2 = qcow2::write(sh, disk, dir, "disk").unwrap();
    let ova = ova::write(sh, disk, dir, "disk", 0).unwrap();
    let vhd = vhd::write(sh, disk, dir, "disk", 0).unwrap();
    PUBLISHED
        .iter()
        .map(|(platform, name)| {
            let source = match *platform {
                "metal" => disk.to_path_buf(),
                "vmware" => ova.clone(),
                "azure" => vhd.clone(),
                _ => qcow2.clone(),
            };
            (*name, source)
        })
        .collect()
}

/// The stand-in downloads under `tree/dl/`, each with a `.sha256`.
fn write_downloads(sh: &Shell, tree: &Path, scratch: &Path) {
    let inputs = sysext_inputs(scratch);
    let bin = tree.join("dl/v1.36.1/bin/linux/amd64");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, source) in [
        ("v1.36.1/bin/linux/amd64/kubeadm", &inputs.kubeadm),
        ("v1.36.1/bin/linux/amd64/kubelet", &inputs.kubelet),
        ("v1.36.1/bin/linux/amd64/kubectl", &inputs.kubectl),
        ("crictl.tar.gz", &inputs.crictl_archive),
        ("cni.tgz", &scratch.join("cni.tgz")),
    ] {
        let target = tree.join("dl").join(name);
        std::fs::copy(source, &target).unwrap();
        let digest = xtask::testbed::release_tree::file_digest(sh, "sha256", &target).unwrap();
        std::fs::write(format!("{}.sha256", target.display()), digest + "\n").unwrap();
    }
}

impl Bed {
    fn new(os_release: &str) -> Bed {
        use xtask::testbed::release_tree::{self, Image, Release};
        let sh = Shell::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let disk = release_disk(&sh, dir.path(), os_release);
        let images = platform_images(&sh, &disk, dir.path());
        let signer = xtask::testbed::signer::Signer::new("Bake Test <bake@test.invalid>").unwrap();
        let key = dir.path().join("key.asc");
        signer.write_public_key(&key, true).unwrap();
        let tree = dir.path().join("tree");
        let release = Release {
            images: images
                .iter()
                .map(|(name, source)| Image::published(name, source, signer.signing()))
                .collect(),
            current: true,
            ..Release::new("stable", "amd64", "4081.2.0")
        };
        release_tree::write(&tree, &release).unwrap();
        let scratch = dir.path().join("downloads");
        std::fs::create_dir_all(&scratch).unwrap();
        write_downloads(&sh, &tree, &scratch);
        let server = support::FileServer::start(&tree);
        let base = format!("http://127.0.0.1:{}/dl", server.port);
        let mirror_config = dir.path().join("mirror.json");
        let config = serde_json::json!({
            "kubernetes_http_source": base,
            "crictl_url": format!("{base}/crictl.tar.gz"),
            "cni_url": format!("{base}/cni.tgz"),
        });
        std::fs::write(&mirror_config, config.to_string()).unwrap();
        let repo = support::copy_of_repository();
        std::fs::create_dir_all(repo.path().join("xtask")).unwrap();
        std::fs::copy(
            support::project_root().join("xtask/Cargo.toml"),
            repo.path().join("xtask/Cargo.toml"),
        )
        .unwrap();
        Bed {
            server,
            repo,
            key,
            mirror_config,
            dir,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        // The binary finds the repository it works on through CARGO_MANIFEST_DIR.
        let mut command = support::xtask();
        command
            .env("CARGO_MANIFEST_DIR", self.repo.path().join("xtask"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
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
            .arg("--mirror-config")
            .arg(&self.mirror_config);
        command
    }

    fn bake(&self, args: &[&str]) -> std::process::Output {
        self.command(args).output().unwrap()
    }

    fn output_root(&self) -> PathBuf {
        self.repo.path().join("images/capi/output")
    }

    fn record(&self, platform: &str) -> serde_json::Value {
        let dir = self.output_root().join(output_name(platform));
        serde_json::from_str(&std::fs::read_to_string(dir.join("build.json")).unwrap()).unwrap()
    }

    /// Every entry of the output root (hidden ones included).
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.output_root())
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

fn output_name(platform: &str) -> String {
    format!("flatcar-stable-4081.2.0-kube-v1.36.1-{platform}")
}

const FLATCAR_OS_RELEASE: &str = "ID=flatcar\nVERSION_ID=4081.2.0\nSYSEXT_LEVEL=1.0\n";
const SYSEXT_ON_ROOT: &str = "/opt/extensions/kubernetes/kubernetes-v1.36.1-x86-64.raw";

#[test]
fn the_dry_run_lists_every_url_and_an_absent_platform_is_named_before_any_download() {
    let bed = Bed::new(FLATCAR_OS_RELEASE);
    let all: Vec<&str> = PUBLISHED.iter().map(|(p, _)| *p).collect();
    let out = bed.bake(&[
        "stable",
        "--platform",
        &all.join(","),
        "--sysupdate",
        "--dry-run",
    ]);
    let text = support::both(&out);
    assert!(out.status.success(), "{text}");
    let port = bed.server.port;
    let base = format!("http://127.0.0.1:{port}/stable/amd64-usr/4081.2.0/");
    for (_, file) in PUBLISHED {
        assert!(
            text.contains(&format!("from   {base}{file}\n")),
            "{file}: {text}"
        );
    }
    for download in [
        "v1.36.1/bin/linux/amd64/kubeadm",
        "v1.36.1/bin/linux/amd64/kubelet",
        "v1.36.1/bin/linux/amd64/kubectl",
        "crictl.tar.gz",
        "cni.tgz",
    ] {
        let url = format!("http://127.0.0.1:{port}/dl/{download}");
        assert!(text.contains(&format!(": {url}\n")), "{url}: {text}");
        assert!(
            text.contains(&format!("sha256 from {url}.sha256\n")),
            "{url}: {text}"
        );
    }
    for root_file in [
        SYSEXT_ON_ROOT,
        "/etc/extensions/kubernetes.raw",
        "/opt/cni/bin/",
        "/etc/kubeadm.yml",
        "/etc/sysupdate.kubernetes.d/kubernetes-v1.36.conf",
    ] {
        assert!(text.contains(root_file), "{root_file}: {text}");
    }
    assert!(text.contains("-vmware.ova"), "{text}");

    let out = bed.bake(&["stable", "--platform", "qemu,hetzner"]);
    let text = support::both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("lacks the image of 1 platform(s)"), "{text}");
    assert!(
        text.contains("hetzner: ") && text.contains("flatcar_production_hetzner_image.bin"),
        "{text}"
    );
    let fetched: Vec<String> = bed
        .server
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| !p.ends_with("version.txt") && !p.ends_with(".DIGESTS"))
        .collect();
    assert_eq!(
        fetched,
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
    assert_eq!(
        bed.entries(),
        Vec::<String>::new(),
        "nothing after failed runs"
    );
}

/// ROOT of the disk inside a platform's qcow2, converted back to raw in `dir`.
fn root_of_qcow2(qcow2: &Path, dir: &Path) -> xtask::disk_image::ext4::Ext4 {
    let raw = dir.join("back.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            qcow2.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    DiskImage::open(&raw).unwrap().root().unwrap()
}

/// What a bake wrote into ROOT: the extension with the kubelet inside, its link,
/// the CNI plugins, the node's /etc files and unit links, the sysupdate transfer.
fn assert_root_is_baked(sh: &Shell, root: &xtask::disk_image::ext4::Ext4, sysext_sha512: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let sysext = scratch.path().join("kubernetes.raw");
    std::fs::write(&sysext, root.read_file(sh, SYSEXT_ON_ROOT).unwrap()).unwrap();
    assert_eq!(sha512(&sysext), sysext_sha512, "the recorded extension");
    let listing = stdout("unsquashfs", &["-lln", sysext.to_str().unwrap()]);
    for inside in ["/usr/bin/kubelet", "/usr/bin/kubeadm", "/usr/bin/crictl"] {
        assert!(listing.contains(inside), "{inside}:\n{listing}");
    }
    let link = root.stat(sh, "/etc/extensions/kubernetes.raw").unwrap();
    assert!(link.contains("Type: symlink"), "{link}");
    assert!(link.contains(SYSEXT_ON_ROOT), "{link}");
    let bridge = root.stat(sh, "/opt/cni/bin/bridge").unwrap();
    assert!(bridge.contains("Type: regular"), "{bridge}");
    assert!(!root.read_file(sh, "/etc/kubeadm.yml").unwrap().is_empty());
    let unit = root
        .stat(
            sh,
            "/etc/systemd/system/multi-user.target.wants/kubelet.service",
        )
        .unwrap();
    assert!(
        unit.contains("Type: symlink") && unit.contains("kubelet.service"),
        "{unit}"
    );
    let conf = root
        .read_file(sh, "/etc/sysupdate.kubernetes.d/kubernetes-v1.36.conf")
        .unwrap();
    assert!(String::from_utf8(conf)
        .unwrap()
        .contains("MatchPattern=kubernetes-v1.36.@v-%a.raw"));
}

/// Each output passes its format's check, as its consumer reads it.
fn assert_outputs_check(sh: &Shell, bed: &Bed, platform: &str) {
    use xtask::disk_formats::{container_disk, metal, ova, qcow2, vagrant_box, vhd};
    let name = output_name(platform);
    let dir = bed.output_root().join(&name);
    let file = |ext: &str| dir.join(format!("{name}.{ext}"));
    let disk_size = 64 << 20;
    match platform {
        "qemu" => {
            qcow2::check(sh, &file("qcow2"), disk_size).unwrap();
            vagrant_box::check(&file("box")).unwrap();
        }
        "openstack" | "proxmoxve" => qcow2::check(sh, &file("qcow2"), disk_size).unwrap(),
        "kubevirt" => container_disk::check(&file("oci.tar")).unwrap(),
        "metal" => metal::check(sh, &file("raw.gz")).unwrap(),
        "vmware" => assert_eq!(ova::check(&file("ova")).unwrap(), disk_size),
        "azure" => assert_eq!(vhd::check(&file("vhd")).unwrap(), disk_size),
        other => panic!("no check for {other}"),
    }
    assert!(dir.join("node-rules-vars.json").is_file());
}

#[test]
fn a_bake_makes_every_platforms_output_from_verified_inputs_and_again_the_same_bytes() {
    let bed = Bed::new(FLATCAR_OS_RELEASE);
    let all: Vec<&str> = PUBLISHED.iter().map(|(p, _)| *p).collect();
    let out = bed.bake(&["stable", "--platform", &all.join(","), "--sysupdate"]);
    assert!(out.status.success(), "{}", support::both(&out));
    let sh = Shell::new().unwrap();
    let mut expected: Vec<String> = all.iter().map(|p| output_name(p)).collect();
    expected.sort();
    assert_eq!(bed.entries(), expected, "the outputs, and no staging left");
    for platform in &all {
        assert_outputs_check(&sh, &bed, platform);
        let record = bed.record(platform);
        assert_eq!(record["made_by"], "bake");
        assert_eq!(record["platform"], *platform);
        assert_eq!(record["kubernetes_bin_dir"], "/usr/bin");
        assert!(record["base_image_signed_by"]["primary_key"].is_string());
        let names: Vec<&str> = record["sysext_inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["kubeadm", "kubelet", "kubectl", "cni", "crictl"]);
        assert_eq!(
            record["raw_disk"]["sha512"],
            bed.record("qemu")["raw_disk"]["sha512"],
            "{platform}: the same release disk, baked the same way"
        );
    }
    let scratch = tempfile::tempdir().unwrap();
    let qemu = bed.output_root().join(output_name("qemu"));
    let root = root_of_qcow2(
        &qemu.join(format!("{}.qcow2", output_name("qemu"))),
        scratch.path(),
    );
    let sysext_sha512 = bed.record("qemu")["sysext"]["sha512"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_root_is_baked(&sh, &root, &sysext_sha512);

    // Baked again with the same inputs: the same extension and disk bytes.
    let first = bed.record("metal");
    let out = bed.bake(&["stable", "--platform", "metal", "--sysupdate"]);
    assert!(!out.status.success(), "an existing output needs --force");
    let out = bed.bake(&["stable", "--platform", "metal", "--sysupdate", "--force"]);
    assert!(out.status.success(), "{}", support::both(&out));
    let second = bed.record("metal");
    assert_eq!(first["sysext"], second["sysext"]);
    assert_eq!(first["raw_disk"], second["raw_disk"]);
    assert_eq!(first["outputs"], second["outputs"]);
}

#[test]
fn an_interrupted_bake_leaves_no_output_and_no_staging() {
    let bed = Bed::new(FLATCAR_OS_RELEASE);
    let child = bed
        .command(&["stable", "--platform", "qemu,metal,vmware"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while bed.entries().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        !bed.entries().is_empty(),
        "the bake made its work directory"
    );
    // SAFETY: signals the child this test started, by its id.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let text = support::both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("interrupted"), "{text}");
    assert_eq!(bed.entries(), Vec::<String>::new(), "{text}");
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
    assert_eq!(
        bed.entries(),
        Vec::<String>::new(),
        "no output directory, no staging left"
    );
}
