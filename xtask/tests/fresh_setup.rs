//! Proof that the set-up works on a really fresh system: a minimal Debian 12 root made
//! with debootstrap (cached under target/fresh-root/, keyed by its recipe), the built
//! xtask and a copy of the repository put into it, `deps --install --for test --yes`
//! run inside (chroot in a private mount namespace: apt there installs into the root,
//! never into the host), then `deps --for test` must find every tool.

mod support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use sha2::{Digest, Sha256};
use support::project_root;

const MIRROR: &str = "http://deb.debian.org/debian";
/// A machine with nothing but a base system: no qemu, packer, ansible or libvirt.
const DEBOOTSTRAP_ARGS: &[&str] = &["--variant=minbase", "--include=ca-certificates", "bookworm"];

fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The debootstrapped root, made once per recipe.
fn cached_base_root(cache: &Path) -> PathBuf {
    let recipe = format!("debootstrap {} {MIRROR}", DEBOOTSTRAP_ARGS.join(" "));
    let key = Sha256::digest(recipe.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let dir = cache.join(key);
    let root = dir.join("root");
    if dir.join("complete").is_file() {
        return root;
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("{recipe} (cached in {})", dir.display());
    run(Command::new("debootstrap")
        .args(DEBOOTSTRAP_ARGS)
        .arg(&root)
        .arg(MIRROR));
    std::fs::write(dir.join("recipe"), &recipe).unwrap();
    std::fs::write(dir.join("complete"), "").unwrap();
    root
}

/// The working tree as a user's clone has it: no build output, no toolchain.
fn copy_repository(from: &Path, to: &Path) {
    let skip = |path: &Path| {
        let relative = path.strip_prefix(from).unwrap();
        ["target", ".git", ".local", "images/capi/output"]
            .iter()
            .any(|s| relative.starts_with(s))
    };
    for entry in walkdir::WalkDir::new(from)
        .into_iter()
        .filter_entry(|e| !skip(e.path()))
    {
        let entry = entry.unwrap();
        let target = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// `program args` chrooted into `root`, in a mount namespace of its own with /dev and
/// /proc mounted: the mounts vanish with the namespace.
fn in_root(root: &Path, program: &str, args: &[&str]) -> Command {
    let root_c = c_path(root);
    let dev = c_path(&root.join("dev"));
    let proc_dir = c_path(&root.join("proc"));
    let slash = CString::new("/").unwrap();
    let host_dev = CString::new("/dev").unwrap();
    let proc_fs = CString::new("proc").unwrap();
    let mut command = Command::new(program);
    command.args(args).env_clear().envs([
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/root"),
        ("LANG", "C.UTF-8"),
    ]);
    // This machine's network set-up, as a fresh machine here would have it: pip's
    // settings and any proxy.
    for (name, value) in std::env::vars() {
        let lower = name.to_ascii_lowercase();
        if name.starts_with("PIP_") && name != "PIP_FIND_LINKS" || lower.ends_with("_proxy") {
            command.env(name, value);
        }
    }
    let check = |code: libc::c_int| {
        if code == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: between fork and exec only async-signal-safe calls (unshare, mount,
    // chroot, chdir) on strings made before the fork.
    unsafe {
        command.pre_exec(move || {
            let null = std::ptr::null();
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                null,
                slash.as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                null as *const libc::c_void,
            ))?;
            check(libc::mount(
                host_dev.as_ptr(),
                dev.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                null as *const libc::c_void,
            ))?;
            check(libc::mount(
                proc_fs.as_ptr(),
                proc_dir.as_ptr(),
                proc_fs.as_ptr(),
                0,
                null as *const libc::c_void,
            ))?;
            check(libc::chroot(root_c.as_ptr()))?;
            check(libc::chdir(slash.as_ptr()))
        });
    }
    command
}

fn disk_usage_kib(path: &Path) -> u64 {
    let out = run(Command::new("du").args(["-s", "-x", "-k"]).arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
#[ignore = "root: debootstraps Debian 12 and installs every test tool into it from Debian's registry and PyPI (minutes, about 1 GiB)"]
fn a_fresh_debian_root_has_every_test_tool_after_deps_install_yes() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (debootstrap, chroot, mount namespaces)"
    );
    let cache = project_root().join("target/fresh-root");
    let base = cached_base_root(&cache);
    let work = tempfile::tempdir_in(&cache).unwrap();
    let root = work.path().join("root");
    run(Command::new("cp").arg("-a").arg(&base).arg(&root));

    let repository = project_root();
    copy_repository(
        &repository,
        &root.join(repository.strip_prefix("/").unwrap()),
    );
    let xtask = root.join("usr/local/bin/xtask");
    std::fs::copy(env!("CARGO_BIN_EXE_xtask"), &xtask).unwrap();
    // The host's resolver and CA bundle (this machine's network reaches the package
    // registries through them); no init system, so packages start no services.
    std::fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf")).unwrap();
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        root.join("etc/ssl/certs/ca-certificates.crt"),
    )
    .unwrap();
    let policy = root.join("usr/sbin/policy-rc.d");
    std::fs::write(&policy, "#!/bin/sh\nexit 101\n").unwrap();
    run(Command::new("chmod").arg("0755").arg(&policy));

    let before = disk_usage_kib(&root);
    let started = Instant::now();
    let set_up = in_root(
        &root,
        "/usr/local/bin/xtask",
        &["deps", "--install", "--for", "test", "--yes"],
    )
    .output()
    .unwrap();
    let took = started.elapsed();
    let installed_mib = disk_usage_kib(&root).saturating_sub(before) / 1024;
    eprintln!(
        "set-up on a fresh Debian 12 root: {:.0} s, {installed_mib} MiB installed\n{}",
        took.as_secs_f64(),
        String::from_utf8_lossy(&set_up.stdout)
    );
    assert!(
        set_up.status.success(),
        "deps --install --for test --yes failed ({}):\n{}",
        set_up.status,
        String::from_utf8_lossy(&set_up.stderr)
    );

    let report = in_root(
        &root,
        "/usr/local/bin/xtask",
        &["deps", "--for", "test", "--format", "json"],
    )
    .output()
    .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&report.stdout)
        .unwrap_or_else(|e| panic!("deps printed no JSON ({e}): {report:?}"));
    let missing: Vec<String> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] != "ok")
        .map(|t| format!("{}: {}", t["tool"], t["status"]))
        .collect();
    assert!(missing.is_empty(), "not every tool is there: {missing:?}");
    assert_eq!(report["ready"], true, "{report:#}");
}
