//! The Flatcar-shaped rehearsal guest: Debian minbase made to behave like Flatcar
//! where a node-image build depends on it (os-release, read-only /usr, no Python, the
//! `core` user, a first-boot stand-in for Ignition reading the channel the OEM
//! partition's oem_id names, masked-unit semantics, systemd-sysext with Flatcar's
//! reload of merged units), on a disk laid out like Flatcar's (`disk`), and kept as
//! a compressed qcow2 under target/rehearsal/ (with the QEMU platform's OEM
//! partition), keyed by a hash of its recipe. The same build makes the Python
//! a build bootstraps on it: Debian's PyPy, laid out like a portable PyPy release.

use std::borrow::Cow;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use super::{disk, oem};
use crate::flatcar::platform::Platform;
use crate::{toolchain::tools, vm::streaming};

/// Bump when a build step changes in a way the recipe's files and package list do
/// not show (the steps in this file), so that cached guests are rebuilt.
const RECIPE_VERSION: &str = "2";

/// The Debian release the guest is made from, and where its packages come from.
const SUITE: &str = "bookworm";
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// What the guest has on top of Debian's minbase variant. Each earns its place:
/// Flatcar has it, and the build or its checks use it.
const PACKAGES: &[&str] = &[
    // Booting: systemd as init (with systemd-networkd), a kernel with virtio and
    // qemu_fw_cfg modules, modprobe, and dbus for hostnamectl and logind.
    "systemd-sysv",
    "linux-image-cloud-amd64",
    "kmod",
    "dbus",
    // Logging in: what Packer, Ansible and vagrant use.
    "openssh-server",
    "sudo",
    // What the setup role's raw PyPy bootstrap runs (curl, sha256sum, tar --bzip2)
    // and Ansible modules call (ip, sysctl, ps).
    "curl",
    "bzip2",
    "xz-utils",
    "iproute2",
    "procps",
    // The first-boot Ignition stand-in reads its config with jq (Flatcar ships jq).
    "jq",
    // CA certificates where OpenSSL looks (Flatcar ships them): PyPy's ssl module,
    // which Ansible's get_url sets up even for http URLs, fails without them.
    "ca-certificates",
    // Flatcar ships containerd; the build configures it and checks its socket.
    "containerd",
    // Flatcar keeps time with systemd-timesyncd (a node rule checks it runs).
    "systemd-timesyncd",
];

/// The guest's image file name in its cache directory.
const IMAGE_NAME: &str = "guest.qcow2";

/// Scripts run during the build (part of the recipe).
const CONFIGURE_SCRIPT: &str = include_str!("guest-files/configure-guest.sh");

/// A file the recipe puts into the guest's tree before it is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    /// Absolute path inside the guest.
    pub path: &'static str,
    pub mode: u32,
    pub contents: Cow<'static, str>,
}

fn file(path: &'static str, mode: u32, contents: &'static str) -> GuestFile {
    GuestFile {
        path,
        mode,
        contents: Cow::Borrowed(contents),
    }
}

/// Every file the recipe adds to the debootstrapped tree.
pub fn guest_files() -> Vec<GuestFile> {
    macro_rules! unit {
        ($name:literal) => {
            file(
                concat!("/usr/lib/systemd/system/", $name),
                0o644,
                include_str!(concat!("guest-files/", $name)),
            )
        };
    }
    vec![
        GuestFile {
            path: "/usr/lib/os-release",
            mode: 0o644,
            contents: Cow::Owned(os_release(super::FLATCAR_VERSION)),
        },
        unit!("flatcar-first-boot.service"),
        unit!("update-engine.service"),
        unit!("locksmithd.service"),
        unit!("containerd.service"),
        unit!("sshd-keygen.service"),
        unit!("usr.mount"),
        unit!("boot.mount"),
        unit!("oem.mount"),
        unit!("ensure-sysext.service"),
        file(
            "/usr/lib/flatcar/rehearsal-ignition",
            0o755,
            include_str!("guest-files/rehearsal-ignition"),
        ),
        file(
            "/usr/share/containerd/config.toml",
            0o644,
            include_str!("guest-files/containerd-config.toml"),
        ),
        file(
            "/etc/ssh/sshd_config.d/flatcar.conf",
            0o644,
            include_str!("guest-files/sshd-flatcar.conf"),
        ),
        file(
            "/etc/sudoers.d/wheel",
            0o440,
            include_str!("guest-files/sudoers-wheel"),
        ),
        file(
            "/etc/systemd/network/50-dhcp.network",
            0o644,
            include_str!("guest-files/dhcp.network"),
        ),
        file("/etc/fstab", 0o644, include_str!("guest-files/fstab")),
        // The channel the image belongs to, where Flatcar keeps it; the build's
        // first provisioning step compares it (and os-release) with what it asked for.
        file(
            "/usr/share/flatcar/update.conf",
            0o644,
            include_str!("guest-files/update.conf"),
        ),
        file(
            "/etc/systemd/timesyncd.conf.d/rehearsal.conf",
            0o644,
            include_str!("guest-files/timesyncd-rehearsal.conf"),
        ),
        file(
            "/etc/systemd/system-preset/00-rehearsal.preset",
            0o644,
            include_str!("guest-files/rehearsal.preset"),
        ),
        file(
            "/etc/initramfs-tools/modules",
            0o644,
            include_str!("guest-files/initramfs-modules"),
        ),
        file(
            "/etc/initramfs-tools/conf.d/rehearsal.conf",
            0o644,
            "# Only the modules listed in ../modules: a small initramfs boots faster.\nMODULES=list\n",
        ),
        // /boot is the EFI system partition (the build moves it there).
        file("/boot/syslinux/syslinux.cfg", 0o644, SYSLINUX_CFG),
        // A fresh image: the next boot is a first boot, as on Flatcar.
        file("/boot/flatcar/first_boot", 0o644, ""),
    ]
}

/// `/etc/os-release` (really `/usr/lib/os-release`) as Flatcar writes it. ansible-core
/// reports distribution `Flatcar` and os_family `Flatcar` from `ID=flatcar` and reads
/// the version from `VERSION=`; nothing may say Debian, or its Debian parser wins.
pub fn os_release(version: &str) -> String {
    format!(
        "NAME=\"Flatcar Container Linux by Kinvolk\"\n\
         ID=flatcar\n\
         ID_LIKE=coreos\n\
         VERSION={version}\n\
         VERSION_ID={version}\n\
         BUILD_ID=rehearsal\n\
         SYSEXT_LEVEL=1.0\n\
         PRETTY_NAME=\"Flatcar Container Linux by Kinvolk {version} (rehearsal guest)\"\n\
         ANSI_COLOR=\"38;5;75\"\n\
         HOME_URL=\"https://flatcar.org/\"\n\
         BUG_REPORT_URL=\"https://issues.flatcar.org\"\n\
         FLATCAR_BOARD=\"amd64-usr\"\n\
         CPE_NAME=\"cpe:2.3:o:flatcar-linux:flatcar_linux:{version}:*:*:*:*:*:*:*\"\n"
    )
}

/// The boot loader's one entry, paths on the ESP. The root file system is found by
/// its label, as Flatcar's GRUB passes it (`root=LABEL=ROOT`); `net.ifnames=0` names
/// the NIC eth0; the kernel messages and the login prompt go to the serial console.
const SYSLINUX_CFG: &str = "DEFAULT flatcar\n\
PROMPT 0\n\
TIMEOUT 0\n\
LABEL flatcar\n\
\x20 LINUX /vmlinuz\n\
\x20 INITRD /initrd.img\n\
\x20 APPEND root=LABEL=ROOT rw net.ifnames=0 console=ttyS0\n";

/// A short hash of everything that decides what the guest is: a change to any
/// file, package, step or size gives a new guest.
pub fn recipe_id(files: &[GuestFile]) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(RECIPE_VERSION.as_bytes());
    field(SUITE.as_bytes());
    field(DEBIAN_MIRROR.as_bytes());
    for package in PACKAGES {
        field(package.as_bytes());
    }
    field(&disk::DISK_SIZE_BYTES.to_le_bytes());
    for arg in disk::sgdisk_args() {
        field(arg.as_bytes());
    }
    for (name, text) in oem::files(Platform::Qemu, super::FLATCAR_VERSION) {
        field(name.as_bytes());
        field(text.as_bytes());
    }
    field(CONFIGURE_SCRIPT.as_bytes());
    for f in files {
        field(f.path.as_bytes());
        field(&f.mode.to_le_bytes());
        field(f.contents.as_bytes());
    }
    let digest = hasher.finalize();
    crate::hex::encode(&digest[..8])
}

/// The portable-PyPy-shaped archive made from Debian's PyPy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonArchive {
    pub path: PathBuf,
    /// The archive's file name: `pypy<python>-v<pypy>-linux64.tar.bz2`.
    pub file_name: String,
    /// The Python language version, e.g. `3.9`.
    pub python_version: String,
    /// The PyPy release, e.g. `7.3.11`.
    pub pypy_version: String,
}

/// Reads `pypy3.9-v7.3.11-linux64.tar.bz2` as Python 3.9, PyPy 7.3.11.
pub fn parse_pypy_archive_name(name: &str) -> Option<(String, String)> {
    let rest = name
        .strip_prefix("pypy")?
        .strip_suffix("-linux64.tar.bz2")?;
    let (python, pypy) = rest.split_once("-v")?;
    let numeric = |s: &str| !s.is_empty() && s.split('.').all(|p| p.parse::<u32>().is_ok());
    (numeric(python) && numeric(pypy)).then(|| (python.to_owned(), pypy.to_owned()))
}

/// A built guest in the cache.
#[derive(Debug, Clone)]
pub struct Guest {
    /// The disk image, qcow2 (what Flatcar ships as `flatcar_production_qemu_image.img`).
    pub image: PathBuf,
    pub python: PythonArchive,
    /// The recipe hash in the cache directory's name.
    pub recipe: String,
}

impl Guest {
    /// The bytes the image takes on disk.
    pub fn image_size(&self) -> anyhow::Result<u64> {
        Ok(std::fs::metadata(&self.image)
            .with_context(|| format!("reading {}", self.image.display()))?
            .len())
    }
}

/// How [`build_or_reuse`] got the guest.
#[derive(Debug, Clone)]
pub enum Provenance {
    Reused,
    /// Built now: each step with its time.
    Built {
        steps: Vec<(String, Duration)>,
    },
}

/// The guest for the current recipe: the cached one, or a new one when there is
/// none or `rebuild` is set. Building needs root (debootstrap, chroot; the disk
/// itself is made without mounts) and the package mirror.
pub fn build_or_reuse(sh: &Shell, rebuild: bool) -> anyhow::Result<(Guest, Provenance)> {
    let files = guest_files();
    let recipe = recipe_id(&files);
    let cache = super::cache_dir();
    let dir = cache.join(format!("guest-{recipe}"));
    if !rebuild {
        if let Some(guest) = cached(&dir, &recipe)? {
            return Ok((guest, Provenance::Reused));
        }
    }
    let steps = build(sh, &cache, &dir, &recipe, &files)?;
    let guest = cached(&dir, &recipe)?.with_context(|| {
        format!(
            "the guest build finished but {} is incomplete",
            dir.display()
        )
    })?;
    Ok((guest, Provenance::Built { steps }))
}

/// The guest in `dir`, if the directory exists (it only ever appears complete).
fn cached(dir: &Path, recipe: &str) -> anyhow::Result<Option<Guest>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let image = dir.join(IMAGE_NAME);
    let mut python = None;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((python_version, pypy_version)) = parse_pypy_archive_name(&name) {
            python = Some(PythonArchive {
                path: entry.path(),
                file_name: name,
                python_version,
                pypy_version,
            });
        }
    }
    match (image.is_file(), python) {
        (true, Some(python)) => Ok(Some(Guest {
            image,
            python,
            recipe: recipe.to_owned(),
        })),
        _ => bail!(
            "{} lacks {IMAGE_NAME} or the PyPy archive; remove it and build again (--rebuild)",
            dir.display()
        ),
    }
}

/// The host programs a guest build runs, with the Debian packages that have them.
const BUILD_TOOLS: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("unshare", "util-linux"),
    ("chroot", "coreutils"),
    ("sgdisk", "gdisk"),
    ("sfdisk", "fdisk"),
    ("mkfs.ext4", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("mkfs.fat", "dosfstools"),
    ("mcopy", "mtools"),
    ("syslinux", "syslinux"),
    ("qemu-img", "qemu-utils"),
];

/// Fails with one message naming every missing tool and the packages to install.
fn check_build_host() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "building the rehearsal guest needs root (debootstrap and chroot); \
             run as root, or reuse a guest built earlier"
        );
    }
    let mut missing: Vec<&str> = Vec::new();
    for (program, package) in BUILD_TOOLS {
        if tools::find_program(program).is_none() && !missing.contains(package) {
            missing.push(package);
        }
    }
    if !Path::new(disk::GPT_MBR_BIN).is_file() && !missing.contains(&"syslinux-common") {
        missing.push("syslinux-common");
    }
    if !missing.is_empty() {
        bail!(
            "building the rehearsal guest needs more host packages: apt-get install {}",
            missing.join(" ")
        );
    }
    Ok(())
}

/// A build directory that is removed unless the build completes (and never while
/// anything is mounted beneath it).
struct PartialBuild {
    dir: PathBuf,
    done: bool,
}

impl Drop for PartialBuild {
    fn drop(&mut self) {
        if !self.done {
            if let Err(err) = remove_build_dir(&self.dir) {
                eprintln!("warning: {err:#}");
            }
        }
    }
}

/// The mount points at or below `dir`, from `/proc/self/mountinfo`'s text.
pub fn mounts_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|mount_point| mount_point.starts_with(dir))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if let Ok(byte) = u8::from_str_radix(&digits, 8) {
                out.push(byte as char);
                chars.nth(2);
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Removes a build directory, refusing while anything is mounted inside it (a
/// removal would then reach into the mounted file system).
fn remove_build_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mounts = mounts_below(&mountinfo, dir);
    if !mounts.is_empty() {
        bail!(
            "not removing {}: still mounted there: {}",
            dir.display(),
            mounts
                .iter()
                .map(|m| m.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// Runs one build step, streaming its output into the build log, and fails with
/// the output's last lines.
fn run_logged(log: &Path, what: &str, program: &str, args: &[OsString]) -> anyhow::Result<()> {
    let program_path = tools::find_program(program)
        .with_context(|| format!("{what}: {program} is not on PATH"))?;
    let finished = streaming::run(
        &program_path,
        args,
        Path::new("/"),
        &[("LC_ALL", "C".into())],
        None,
        Some(log),
    )
    .with_context(|| format!("{what}: running {program}"))?;
    if streaming::interrupted() {
        bail!("{what}: interrupted");
    }
    if !finished.success {
        bail!(
            "{what} failed (full log: {}):\n{}",
            log.display(),
            streaming::tail(&finished.output, 20)
        );
    }
    Ok(())
}

fn os(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    args.iter().map(|a| a.as_ref().to_owned()).collect()
}

/// Builds the guest into `dir` (through `dir.partial`, renamed when complete).
fn build(
    sh: &Shell,
    cache: &Path,
    dir: &Path,
    recipe: &str,
    files: &[GuestFile],
) -> anyhow::Result<Vec<(String, Duration)>> {
    check_build_host()?;
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let partial_dir = cache.join(format!("guest-{recipe}.partial"));
    remove_build_dir(&partial_dir)?;
    std::fs::create_dir_all(&partial_dir)
        .with_context(|| format!("creating {}", partial_dir.display()))?;
    let mut partial = PartialBuild {
        dir: partial_dir.clone(),
        done: false,
    };
    let log = cache.join("guest-build.log");
    std::fs::write(&log, "").with_context(|| format!("creating {}", log.display()))?;
    eprintln!(
        "Building the rehearsal guest {recipe} (log: {})",
        log.display()
    );

    let mut steps = Vec::new();
    let mut step = |name: &str, work: &mut dyn FnMut() -> anyhow::Result<()>| {
        eprintln!("  {name} ...");
        let started = Instant::now();
        work()?;
        let took = started.elapsed();
        eprintln!("  {name}: {:.1} s", took.as_secs_f64());
        steps.push((name.to_owned(), took));
        anyhow::Ok(())
    };

    let tree = partial_dir.join("tree");
    step("debootstrap", &mut || debootstrap(&log, &tree))?;

    step("configure", &mut || {
        configure(&log, &tree, files, &partial_dir)
    })?;

    let raw = partial_dir.join("disk.raw");
    step("disk", &mut || make_disk(sh, &tree, &raw, &partial_dir))?;

    step("qcow2", &mut || {
        let image = partial_dir.join(IMAGE_NAME);
        cmd!(sh, "qemu-img convert -c -O qcow2 {raw} {image}")
            .quiet()
            .run()
            .context("compressing the guest disk into a qcow2")?;
        std::fs::remove_file(&raw).with_context(|| format!("removing {}", raw.display()))?;
        remove_build_dir(&tree)
    })?;

    remove_build_dir(dir)?;
    std::fs::rename(&partial_dir, dir)
        .with_context(|| format!("renaming {} to {}", partial_dir.display(), dir.display()))?;
    partial.done = true;
    remove_other_guests(cache, dir);
    Ok(steps)
}

/// Debootstraps the guest's packages into `tree`, in a mount namespace of its own:
/// the /proc and /sys mounts debootstrap makes vanish with it, even when the build
/// is killed.
fn debootstrap(log: &Path, tree: &Path) -> anyhow::Result<()> {
    let include = format!("--include={}", PACKAGES.join(","));
    run_logged(
        log,
        "debootstrap",
        "unshare",
        &os(&[
            &"--mount",
            &"--fork",
            &"debootstrap",
            &"--variant=minbase",
            &include,
            &SUITE,
            &tree,
            &DEBIAN_MIRROR,
        ]),
    )
}

/// Writes the recipe's files into `tree`, runs the configure script chrooted in
/// it, and moves the Python archive beside the disk.
fn configure(
    log: &Path,
    tree: &Path,
    files: &[GuestFile],
    partial_dir: &Path,
) -> anyhow::Result<()> {
    for f in files {
        write_guest_file(tree, f)?;
    }
    let script = tree.join("tmp").join("configure-guest.sh");
    std::fs::write(&script, CONFIGURE_SCRIPT)
        .with_context(|| format!("writing {}", script.display()))?;
    let proc_dir = format!("--mount-proc={}", tree.join("proc").display());
    run_logged(
        log,
        "configuring the guest",
        "unshare",
        &os(&[
            &"--fork",
            &proc_dir,
            &"chroot",
            &tree,
            &"/bin/sh",
            &"/tmp/configure-guest.sh",
        ]),
    )?;
    std::fs::remove_file(&script).with_context(|| format!("removing {}", script.display()))?;
    move_python_archive(tree, partial_dir)
}

/// Writes one recipe file into the tree with its mode.
fn write_guest_file(tree: &Path, f: &GuestFile) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = tree.join(f.path.trim_start_matches('/'));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, f.contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Moves the PyPy archive the configure script made out of the guest's tree.
fn move_python_archive(tree: &Path, into: &Path) -> anyhow::Result<()> {
    let made = tree.join("var/tmp/rehearsal-python");
    let mut moved = false;
    for entry in std::fs::read_dir(&made).with_context(|| format!("reading {}", made.display()))? {
        let entry = entry.with_context(|| format!("reading {}", made.display()))?;
        let name = entry.file_name();
        if parse_pypy_archive_name(&name.to_string_lossy()).is_some() {
            std::fs::rename(entry.path(), into.join(&name))
                .with_context(|| format!("moving {}", entry.path().display()))?;
            moved = true;
        }
    }
    if !moved {
        bail!(
            "the configure step made no PyPy archive in {}",
            made.display()
        );
    }
    std::fs::remove_dir_all(&made).with_context(|| format!("removing {}", made.display()))
}

/// The raw disk: the tree's /boot becomes the EFI system partition, the rest ROOT,
/// and the OEM partition is the QEMU platform's (the cached image is QEMU's).
fn make_disk(sh: &Shell, tree: &Path, raw: &Path, work: &Path) -> anyhow::Result<()> {
    let esp = work.join("esp");
    let boot = tree.join("boot");
    std::fs::rename(&boot, &esp)
        .with_context(|| format!("moving {} to {}", boot.display(), esp.display()))?;
    std::fs::create_dir(&boot).with_context(|| format!("creating {}", boot.display()))?;
    let oem_files = oem::files(Platform::Qemu, super::FLATCAR_VERSION);
    disk::make(sh, raw, &esp, tree, &oem_files)?;
    std::fs::remove_dir_all(&esp).with_context(|| format!("removing {}", esp.display()))
}

/// Guests of other recipes are stale: remove them (a failure only warns).
fn remove_other_guests(cache: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path != keep && name.starts_with("guest-") && path.is_dir() {
            match remove_build_dir(&path) {
                Ok(()) => eprintln!("Removed the stale guest {}", path.display()),
                Err(err) => eprintln!("warning: {err:#}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_names_flatcar_and_never_debian() {
        let text = os_release("9999.0.0");
        assert!(text.contains("\nID=flatcar\n"));
        assert!(text.starts_with("NAME=\"Flatcar Container Linux by Kinvolk\"\n"));
        assert!(text.contains("\nVERSION=9999.0.0\n"));
        // ansible-core's Debian-family parser claims any os-release containing these.
        for word in [
            "Debian",
            "Ubuntu",
            "Raspbian",
            "SteamOS",
            "Devuan",
            "Cumulus",
            "Mint",
            "UOS",
            "Uos",
            "uos",
            "Deepin",
            "deepin",
            "Kali",
            "Parrot",
            "Amazon",
            "suse",
            "SUSE",
            "Clear Linux",
        ] {
            assert!(!text.contains(word), "os-release mentions {word}");
        }
    }

    #[test]
    fn recipe_id_changes_with_any_file() {
        let files = guest_files();
        let id = recipe_id(&files);
        assert_eq!(id.len(), 16);
        assert_eq!(id, recipe_id(&guest_files()), "the id is deterministic");
        let mut changed = files.clone();
        changed[0].contents = Cow::Owned(changed[0].contents.to_string() + "X=1\n");
        assert_ne!(recipe_id(&changed), id);
        let mut changed = files;
        changed[1].mode = 0o600;
        assert_ne!(recipe_id(&changed), id);
    }

    #[test]
    fn guest_files_are_absolute_and_unique() {
        let files = guest_files();
        let mut paths: Vec<_> = files.iter().map(|f| f.path).collect();
        assert!(paths.iter().all(|p| p.starts_with('/')));
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), files.len());
    }

    #[test]
    fn the_boot_loader_finds_root_by_its_label() {
        assert!(SYSLINUX_CFG.contains("  APPEND root=LABEL=ROOT rw net.ifnames=0 console=ttyS0\n"));
        assert!(SYSLINUX_CFG.contains("  LINUX /vmlinuz\n"));
        assert_eq!(disk::ROOT.label, "ROOT");
    }

    #[test]
    fn pypy_archive_names() {
        assert_eq!(
            parse_pypy_archive_name("pypy3.9-v7.3.11-linux64.tar.bz2"),
            Some(("3.9".to_owned(), "7.3.11".to_owned()))
        );
        assert_eq!(
            parse_pypy_archive_name("pypy3.9-v7.3.11-linux64.tar.gz"),
            None
        );
        assert_eq!(
            parse_pypy_archive_name("pypy-v7.3.11-linux64.tar.bz2"),
            None
        );
        assert_eq!(
            parse_pypy_archive_name("pypy3.x-v7.3.11-linux64.tar.bz2"),
            None
        );
    }

    #[test]
    fn finds_mounts_below_a_directory() {
        let mountinfo = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 0:5 / /work/target/rehearsal/guest-1.partial/tree/proc rw - proc proc rw
91 22 0:6 / /work/target/rehearsal/guest-1.partial/with\\040space rw - tmpfs tmpfs rw
92 22 0:7 / /work/target/rehearsal/guest-10 rw - tmpfs tmpfs rw
";
        let dir = Path::new("/work/target/rehearsal/guest-1.partial");
        assert_eq!(
            mounts_below(mountinfo, dir),
            vec![dir.join("tree/proc"), dir.join("with space")]
        );
        assert!(mounts_below(mountinfo, Path::new("/work/target/rehearsal/guest-2")).is_empty());
    }
}
