//! Every output format `bake` writes, made for real from a small GPT disk with
//! Flatcar's partition labels, read back by its own check and by the tools its
//! consumers use (qemu-img, vagrant, skopeo, gzip), twice to show the same input
//! gives the same bytes, and broken on purpose to show each check can fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use xshell::Shell;
use xtask::disk_formats::{container_disk, metal, ova, qcow2, sha256_file, tar, vagrant_box, vhd};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;
const BASE: &str = "flatcar-stable-4230.2.3-kube-v1.36.2";
const EPOCH: u64 = 1_700_000_000;

/// A 64 MiB raw disk: a GPT with EFI-SYSTEM, OEM and ROOT, and 3 MiB of
/// pseudo-random (but fixed) bytes in ROOT so compression has work to do.
fn raw_disk(dir: &Path) -> PathBuf {
    let raw = dir.join("disk.raw");
    let file = std::fs::File::create(&raw).unwrap();
    file.set_len(SIZE).unwrap();
    drop(file);
    let script = "label: gpt\nsize=8MiB, name=EFI-SYSTEM\nsize=16MiB, name=OEM\nname=ROOT\n";
    let mut child = tool("sfdisk")
        .args(["--quiet"])
        .arg(&raw)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk failed");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..3 * MIB)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut disk = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    use std::io::{Seek, SeekFrom};
    disk.seek(SeekFrom::Start(30 * MIB)).unwrap();
    disk.write_all(&noise).unwrap();
    raw
}

/// A command for an installed tool; a missing one fails the test with its hint.
fn tool(program: &str) -> Command {
    if xtask::toolchain::tools::find_program(program).is_none() {
        let hint = xtask::toolchain::tools::tool(program)
            .install_hint(xtask::toolchain::tools::detect_package_manager());
        panic!("`{program}` is not installed: {hint}");
    }
    Command::new(program)
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `qemu-img compare` says the two images hold the same disk.
fn same_disk(raw: &Path, image: &Path, format: &str) {
    run(tool("qemu-img")
        .args(["compare", "-f", "raw", "-F", format])
        .arg(raw)
        .arg(image));
}

fn names(archive: &Path) -> Vec<String> {
    tar::list(archive)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

/// Nothing but the expected files: no staging directory or temporary file left.
fn only_files(dir: &Path, expected: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(found, expected);
}

#[test]
fn qcow2_box_and_container_disk_hold_the_disk_and_repeat_byte_for_byte() {
    let work = tempfile::tempdir().unwrap();
    let raw = raw_disk(work.path());
    let sh = Shell::new().unwrap();
    let mut digests = Vec::new();
    for round in ["one", "two"] {
        let out = work.path().join(round);
        let image = qcow2::write(&sh, &raw, &out, BASE).unwrap();
        qcow2::check(&sh, &image, SIZE).unwrap();
        same_disk(&raw, &image, "qcow2");
        let boxed = vagrant_box::write(&sh, &image, &out, BASE, EPOCH).unwrap();
        vagrant_box::check(&boxed).unwrap();
        let oci = container_disk::write(&sh, &image, &out, BASE, "amd64", EPOCH).unwrap();
        container_disk::check(&oci).unwrap();
        only_files(
            &out,
            &[
                &format!("{BASE}.qcow2"),
                &format!("{BASE}.box"),
                &format!("{BASE}.oci.tar"),
            ],
        );
        digests.push([image, boxed, oci].map(|p| sha256_file(&p).unwrap()));
    }
    assert_eq!(digests[0], digests[1], "the same disk gave different bytes");

    let out = work.path().join("one");
    let image = out.join(format!("{BASE}.qcow2"));
    let err = qcow2::check(&sh, &image, SIZE + MIB)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("its virtual size is 67108864 bytes, the raw disk has 68157440"),
        "{err}"
    );

    let boxed = out.join(format!("{BASE}.box"));
    assert_eq!(names(&boxed), ["metadata.json", "Vagrantfile", "box.img"]);
    // vagrant takes the box as build-flatcar's, in a Vagrant home of its own.
    let home = work.path().join("vagrant-home");
    run(tool("vagrant")
        .env("VAGRANT_HOME", &home)
        .args(["box", "add", "--name", "formats-test"])
        .arg(&boxed));
    let list = run(tool("vagrant")
        .env("VAGRANT_HOME", &home)
        .args(["box", "list"]));
    assert!(list.contains("formats-test (libvirt, 0"), "{list}");

    let oci = out.join(format!("{BASE}.oci.tar"));
    let copy = work.path().join("copied");
    run(tool("skopeo")
        .args(["copy", &format!("oci-archive:{}", oci.display())])
        .arg(format!("dir:{}", copy.display())));
    let config = run(tool("skopeo").args([
        "inspect",
        "--config",
        &format!("oci-archive:{}", oci.display()),
    ]));
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        (config["architecture"].as_str(), config["os"].as_str()),
        (Some("amd64"), Some("linux"))
    );
    let layer = tar::list(&oci)
        .unwrap()
        .into_iter()
        .filter(|e| e.name.starts_with("blobs/sha256/"))
        .max_by_key(|e| e.size)
        .unwrap();
    let mut file = tar::open(&oci).unwrap();
    let disks = tar::list_within(&mut file, layer.offset, layer.size).unwrap();
    let disk = disks
        .iter()
        .find(|e| e.name == format!("disk/{BASE}.qcow2"))
        .unwrap();
    assert_eq!(
        (disk.uid, disk.gid, disk.mode, disk.mtime),
        (107, 107, 0o444, EPOCH)
    );
}

#[test]
fn container_disk_check_finds_a_disk_qemu_cannot_read() {
    let work = tempfile::tempdir().unwrap();
    let raw = raw_disk(work.path());
    let sh = Shell::new().unwrap();
    let image = qcow2::write(&sh, &raw, work.path(), BASE).unwrap();
    // The same layout, but the layer's disk owned by root and readable by root only.
    let layer_root = work.path().join("root");
    std::fs::create_dir_all(layer_root.join("disk")).unwrap();
    std::fs::copy(&image, layer_root.join("disk/x.qcow2")).unwrap();
    let layer = work.path().join("layer.tar");
    let stamp = tar::Stamp {
        uid: 0,
        gid: 0,
        mode: "u=r,go=",
        mtime: EPOCH,
    };
    tar::create(&sh, &layer_root, &["disk"], &layer, &stamp).unwrap();
    let oci = container_disk::write(&sh, &image, work.path(), BASE, "amd64", EPOCH).unwrap();
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    run(tool("tar").arg("-xf").arg(&oci).arg("-C").arg(&unpacked));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("index.json")).unwrap()).unwrap();
    let manifest_hex = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(unpacked.join("blobs/sha256").join(&manifest_hex)).unwrap(),
    )
    .unwrap();
    let layer_hex = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    std::fs::copy(&layer, unpacked.join("blobs/sha256").join(&layer_hex)).unwrap();
    let broken = work.path().join("broken.oci.tar");
    let stamp = tar::Stamp {
        uid: 0,
        gid: 0,
        mode: "u=rwX,go=rX",
        mtime: EPOCH,
    };
    tar::create(
        &sh,
        &unpacked,
        &["oci-layout", "index.json", "blobs"],
        &broken,
        &stamp,
    )
    .unwrap();
    let err = container_disk::check(&broken).unwrap_err().to_string();
    assert!(
        err.contains(&format!("blob sha256:{layer_hex} has the digest sha256:")),
        "{err}"
    );
    assert!(
        err.contains("disk/x.qcow2 (mode 400, owner 0:0) is not readable by UID 107"),
        "{err}"
    );
    assert!(
        err.contains("disk/ (mode 400, owner 0:0) is not searchable by UID 107"),
        "{err}"
    );
}

#[test]
fn metal_raw_is_gzip_of_the_disk_with_its_checksum_file() {
    let work = tempfile::tempdir().unwrap();
    let raw = raw_disk(work.path());
    let sh = Shell::new().unwrap();
    let out = work.path().join("out");
    let written = metal::write(&raw, &out, BASE).unwrap();
    metal::check(&sh, &written.image).unwrap();
    let name = format!("{BASE}.raw.gz");
    only_files(&out, &[&name, &format!("{name}.sha256sum")]);
    let line = std::fs::read_to_string(&written.checksum).unwrap();
    assert_eq!(
        line,
        format!("{}  {name}\n", sha256_file(&written.image).unwrap())
    );
    // sha256sum itself agrees, run where the files are, as a consumer would.
    run(tool("sha256sum")
        .arg("--check")
        .arg(&written.checksum)
        .current_dir(&out));
    let unpacked = run(tool("sh")
        .arg("-c")
        .arg("gzip -dc \"$1\" | sha256sum")
        .arg("sh")
        .arg(&written.image));
    assert!(
        unpacked.starts_with(&sha256_file(&raw).unwrap()),
        "{unpacked}"
    );
    let again = metal::write(&raw, &work.path().join("again"), BASE).unwrap();
    assert_eq!(
        sha256_file(&again.image).unwrap(),
        sha256_file(&written.image).unwrap()
    );

    std::fs::write(&written.checksum, format!("{}  {name}\n", "0".repeat(64))).unwrap();
    let err = metal::check(&sh, &written.image).unwrap_err().to_string();
    assert!(
        err.contains(&format!("says SHA-256 {}, the file has", "0".repeat(64))),
        "{err}"
    );
}

#[test]
fn ova_declares_the_disk_and_lists_every_hash() {
    let work = tempfile::tempdir().unwrap();
    let raw = raw_disk(work.path());
    let sh = Shell::new().unwrap();
    let first = ova::write(&sh, &raw, &work.path().join("one"), BASE, EPOCH).unwrap();
    assert_eq!(ova::check(&first).unwrap(), SIZE);
    assert_eq!(
        names(&first),
        [
            format!("{BASE}.ovf"),
            format!("{BASE}.mf"),
            format!("{BASE}.vmdk")
        ]
    );
    only_files(&work.path().join("one"), &[&format!("{BASE}.ova")]);
    let second = ova::write(&sh, &raw, &work.path().join("two"), BASE, EPOCH).unwrap();
    assert_eq!(sha256_file(&first).unwrap(), sha256_file(&second).unwrap());

    let unpacked = work.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    run(tool("tar").arg("-xf").arg(&first).arg("-C").arg(&unpacked));
    same_disk(&raw, &unpacked.join(format!("{BASE}.vmdk")), "vmdk");

    // The vmdk first, and an OVF edited after its hash was taken: both found.
    let ovf = unpacked.join(format!("{BASE}.ovf"));
    let text = std::fs::read_to_string(&ovf).unwrap();
    std::fs::write(
        &ovf,
        text.replace(&format!("ovf:capacity=\"{SIZE}\""), "ovf:capacity=\"1024\""),
    )
    .unwrap();
    let broken = work.path().join("broken.ova");
    let stamp = tar::Stamp {
        uid: 0,
        gid: 0,
        mode: "u=rw,go=r",
        mtime: EPOCH,
    };
    let members = [
        format!("{BASE}.vmdk"),
        format!("{BASE}.ovf"),
        format!("{BASE}.mf"),
    ];
    tar::create(
        &sh,
        &unpacked,
        &members.each_ref().map(String::as_str),
        &broken,
        &stamp,
    )
    .unwrap();
    let err = ova::check(&broken).unwrap_err().to_string();
    assert!(
        err.contains("an OVA starts with the .ovf, then the .mf"),
        "{err}"
    );
    let members = [
        format!("{BASE}.ovf"),
        format!("{BASE}.mf"),
        format!("{BASE}.vmdk"),
    ];
    tar::create(
        &sh,
        &unpacked,
        &members.each_ref().map(String::as_str),
        &broken,
        &stamp,
    )
    .unwrap();
    let err = ova::check(&broken).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "the OVF declares a capacity of 1024 bytes, {BASE}.vmdk holds {SIZE}"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{BASE}.ovf: the manifest says SHA-256")),
        "{err}"
    );
}

#[test]
fn vhd_is_fixed_whole_mib_and_repeats_byte_for_byte() {
    let work = tempfile::tempdir().unwrap();
    let raw = raw_disk(work.path());
    let sh = Shell::new().unwrap();
    let first = vhd::write(&sh, &raw, &work.path().join("one"), BASE, EPOCH).unwrap();
    assert_eq!(vhd::check(&first).unwrap(), SIZE);
    assert_eq!(std::fs::metadata(&first).unwrap().len(), SIZE + 512);
    same_disk(&raw, &first, "vpc");
    let second = vhd::write(&sh, &raw, &work.path().join("two"), BASE, EPOCH).unwrap();
    assert_eq!(sha256_file(&first).unwrap(), sha256_file(&second).unwrap());

    // A raw disk that is not a whole number of MiB is refused, and nothing is left.
    let odd = work.path().join("odd.raw");
    std::fs::copy(&raw, &odd).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&odd)
        .unwrap()
        .set_len(SIZE + 512)
        .unwrap();
    let out = work.path().join("odd");
    let err = vhd::write(&sh, &odd, &out, BASE, EPOCH)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("whole number of MiB: grow the raw disk to 68157440 bytes first"),
        "{err}"
    );
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());

    // A damaged footer fails the check with what is wrong.
    let bytes = std::fs::read(&first).unwrap();
    let broken = work.path().join("broken.vhd");
    let mut damaged = bytes.clone();
    let footer = damaged.len() - 512;
    damaged[footer + 63] = 3; // disk type dynamic
    std::fs::write(&broken, &damaged).unwrap();
    let err = vhd::check(&broken).unwrap_err().to_string();
    assert!(err.contains("disk type 3 is not 2 (fixed)"), "{err}");
    assert!(err.contains("the footer checksum is"), "{err}");
}

#[test]
fn a_failed_conversion_leaves_no_output_behind() {
    let work = tempfile::tempdir().unwrap();
    let sh = Shell::new().unwrap();
    let missing = work.path().join("missing.raw");
    let out = work.path().join("out");
    let errors = [
        qcow2::write(&sh, &missing, &out, BASE).map(drop),
        ova::write(&sh, &missing, &out, BASE, EPOCH).map(drop),
        metal::write(&missing, &out, BASE).map(drop),
        vagrant_box::write(&sh, &missing, &out, BASE, EPOCH).map(drop),
        container_disk::write(&sh, &missing, &out, BASE, "amd64", EPOCH).map(drop),
    ];
    for result in errors {
        let err = format!("{:#}", result.unwrap_err());
        assert!(
            err.contains("missing.raw") && err.contains("No such file"),
            "{err}"
        );
    }
    only_files(&out, &[]);
}
