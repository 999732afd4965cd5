//! The bake's benchmarks: `bake --platform qemu` with warm caches against a small
//! signed release on loopback (a GPT disk with an ext4 ROOT holding 400 MiB of
//! data, qcow2 as Flatcar ships qemu's) and stand-in downloads of the real
//! binaries' sizes, incompressible, so squashing costs what it would; and two
//! bakes of the same inputs compared byte for byte (the extension's and the raw
//! disk's SHA-512 from their records). build-flatcar's time on the rehearsal
//! guest is the `build` row's (`--slow`, root); compare the two medians.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::bake::record::BakeRecord;
use crate::disk_formats::{qcow2, sha256_file};
use crate::measure::{absolute_row, stats, Row};
use crate::testbed::release_tree::{self, Image, Release};
use crate::testbed::server::FileServer;
use crate::testbed::signer::Signer;

/// A version no real release has, so the bench's output directory is its own.
const VERSION: &str = "9999.0.0";
const KUBERNETES: &str = "1.36.2";
const MIB: usize = 1 << 20;

pub fn rows(sh: &Shell, xtask: &Path, n: usize) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir().context("making the bake bench's directory")?;
    let tree = dir.path().join("tree");
    let key = write_release(sh, dir.path(), &tree)?;
    write_downloads(sh, &tree)?;
    let server = FileServer::start(&tree)?;
    let url = format!("http://127.0.0.1:{}", server.port());
    let base = format!("{url}/dl");
    let config = dir.path().join("mirror.json");
    let vars = serde_json::json!({
        "kubernetes_http_source": base,
        "crictl_url": format!("{base}/crictl.tar.gz"),
        "cni_url": format!("{base}/cni.tgz"),
    });
    std::fs::write(&config, vars.to_string())?;
    let bake = || -> anyhow::Result<(Duration, BakeRecord)> {
        let started = Instant::now();
        let out = Command::new(xtask)
            .args(["bake", "stable", VERSION, "--platform", "qemu", "--force"])
            .args([
                "--kubernetes-version",
                KUBERNETES,
                "--arch",
                "amd64",
                "--quiet",
            ])
            .arg("--release-server")
            .arg(format!("{url}/{{channel}}"))
            .arg("--signing-key")
            .arg(&key)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .arg("--mirror-config")
            .arg(&config)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .stderr(Stdio::inherit())
            .output()
            .context("starting bake")?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!("bake failed; its output is above");
        }
        let output_dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let record = BakeRecord::read(&output_dir)?;
        std::fs::remove_dir_all(&output_dir)
            .with_context(|| format!("removing {}", output_dir.display()))?;
        Ok((took, record))
    };
    // The first bake fills the caches (the image and the downloads).
    let (_, first) = bake()?;
    let mut times = Vec::new();
    let mut last = first.clone();
    for _ in 0..n {
        let (took, record) = bake()?;
        times.push(took);
        last = record;
    }
    Ok(vec![
        absolute_row(
            "bake",
            n,
            &times,
            Duration::from_secs(30),
            "qemu, warm caches, 1.2 GiB ROOT holding 400 MiB; build-flatcar's time is the build row's",
        ),
        same_bytes_row(&first, &last, stats(&times)),
    ])
}

/// Whether two bakes of the same inputs made the same extension and raw disk.
fn same_bytes_row(first: &BakeRecord, last: &BakeRecord, time: crate::measure::Stats) -> Row {
    let same =
        first.sysext.sha512 == last.sysext.sha512 && first.raw_disk.sha512 == last.raw_disk.sha512;
    Row {
        name: "bake-same-bytes".into(),
        unit: "s",
        ours: time,
        baseline: None,
        baseline_is: "-".into(),
        ratio: None,
        target: "identical sysext and raw disk".into(),
        met: same,
        iterations: 2,
        note: format!(
            "sysext sha512 {} / {}; raw disk sha512 {} / {}",
            &first.sysext.sha512[..16],
            &last.sysext.sha512[..16],
            &first.raw_disk.sha512[..16],
            &last.raw_disk.sha512[..16],
        ),
    }
}

/// Bytes no compressor shrinks, the same every run (xorshift64).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// A signed release under `tree` whose qemu image is a qcow2 of a GPT disk with
/// OEM and an ext4 ROOT (os-release, 400 MiB of data); returns the key's path.
fn write_release(sh: &Shell, dir: &Path, tree: &Path) -> anyhow::Result<PathBuf> {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("usr/lib"))?;
    std::fs::create_dir_all(root.join("etc"))?;
    std::fs::write(
        root.join("usr/lib/os-release"),
        format!("ID=flatcar\nVERSION_ID={VERSION}\nSYSEXT_LEVEL=1.0\n"),
    )?;
    std::fs::write(root.join("usr/payload"), noise(400 * MIB, 1))?;
    let disk = dir.join("disk.raw");
    let (root_start, root_sectors) = (34816u64, 2_457_600u64);
    let size = (root_start + root_sectors + 2048) * 512;
    std::fs::File::create(&disk)?.set_len(size)?;
    let layout = format!(
        "label: gpt\nstart=2048, size=32768, name=OEM\nstart={root_start}, size={root_sectors}, name=ROOT\n"
    );
    cmd!(sh, "sfdisk --quiet {disk}")
        .stdin(layout)
        .quiet()
        .run()?;
    let offset = format!("offset={}", root_start * 512);
    let fs_size = format!("{}k", root_sectors / 2);
    cmd!(sh, "mkfs.ext4 -q -d {root} -E {offset} {disk} {fs_size}")
        .quiet()
        .run()?;
    let image = qcow2::write(sh, &disk, dir, "release")?;
    let signer = Signer::new("Bake Bench <bench@bake.invalid>")?;
    let key = dir.join("key.asc");
    signer.write_public_key(&key, true)?;
    let release = Release {
        images: vec![Image::published(
            "flatcar_production_qemu_image.img",
            &image,
            signer.signing(),
        )],
        current: true,
        ..Release::new("stable", "amd64", VERSION)
    };
    release_tree::write(tree, &release)?;
    Ok(key)
}

/// Stand-ins for the downloads under `tree/dl/`, the sizes of the real ones,
/// each with its `.sha256`.
fn write_downloads(sh: &Shell, tree: &Path) -> anyhow::Result<()> {
    let dl = tree.join("dl");
    let bin = dl.join(format!("v{KUBERNETES}/bin/linux/amd64"));
    let staging = dl.join("staging");
    std::fs::create_dir_all(&bin)?;
    std::fs::create_dir_all(staging.join("cni"))?;
    for (name, mib, seed) in [("kubeadm", 70, 2), ("kubelet", 80, 3), ("kubectl", 60, 4)] {
        std::fs::write(bin.join(name), noise(mib * MIB, seed))?;
    }
    std::fs::write(staging.join("crictl"), noise(40 * MIB, 5))?;
    for (i, plugin) in ["bridge", "host-local", "loopback", "portmap"]
        .iter()
        .enumerate()
    {
        std::fs::write(
            staging.join("cni").join(plugin),
            noise(4 * MIB, 6 + i as u64),
        )?;
    }
    let (crictl, cni) = (dl.join("crictl.tar.gz"), dl.join("cni.tgz"));
    let cni_dir = staging.join("cni");
    cmd!(sh, "tar -czf {crictl} -C {staging} crictl")
        .quiet()
        .run()?;
    cmd!(sh, "tar -czf {cni} -C {cni_dir} .").quiet().run()?;
    std::fs::remove_dir_all(&staging)?;
    for file in ["kubeadm", "kubelet", "kubectl"]
        .map(|n| bin.join(n))
        .into_iter()
        .chain([crictl, cni])
    {
        let digest = sha256_file(&file)?;
        std::fs::write(format!("{}.sha256", file.display()), digest + "\n")?;
    }
    Ok(())
}
