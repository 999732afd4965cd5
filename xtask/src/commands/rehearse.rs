//! `cargo xtask rehearse`: the whole `build-flatcar` + `verify-vagrant` pipeline, for
//! real, on a machine that cannot reach Flatcar, Kubernetes or PyPy. A Flatcar-shaped
//! guest and a loopback mirror stand in for the release server and the download
//! sites; the build reaches them only through the options an air-gapped user has
//! (`--release-server`, `--signing-key`, `--mirror-config`). The box is verified
//! with vagrant-libvirt inside a private network namespace, so no bridge, dnsmasq or
//! libvirtd of the rehearsal ever touches the host. With `--bake` it rehearses
//! `bake` instead (`bake_path`).

mod bake_path;

use std::ffi::OsString;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use xshell::Shell;

use crate::build::plan::{self, Provider};
use crate::commands::build_flatcar::{self, BuildArgs};
use crate::flatcar::platform::Platform;
use crate::flatcar::release::Variant;
use crate::testbed::{self, downloads, guest, mirror, platform_images, release_tree, server};
use crate::vm::libvirt_namespace::LibvirtNamespace;
use crate::{error::Exit, rules, table, vm::streaming, workspace};

/// A fault the rehearsal can inject, to prove the build stops the way it should.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// The mirror serves the image with one byte flipped after signing: the build
    /// must stop before booting anything and leave nothing in the cache.
    TamperedImage,
    /// The mirror serves a PyPy archive that does not match its published checksum:
    /// the build's host-side fetch must stop before packer starts, naming the file
    /// and both checksums, and leave no output.
    CorruptDownload,
    /// The mirror serves the guest, whose image says it is 9999.0.0, as a
    /// release it claims is 9999.0.1 (signed, with a matching DIGESTS and
    /// version.txt): the build must stop at the first provisioning step, naming both.
    RolledBackRelease,
    /// The site's var file gives the node role kernel settings without
    /// `vm.overcommit_memory` (through `ansible_extra_vars`, as any user can): the
    /// node rule on it fails at the end of the build, which must name it and leave
    /// no output.
    KernelParamUnset,
}

/// The release the rehearsal's mirror claims to serve under `fault`.
fn claimed_version(fault: Option<Fault>) -> &'static str {
    match fault {
        Some(Fault::RolledBackRelease) => "9999.0.1",
        _ => testbed::FLATCAR_VERSION,
    }
}

#[derive(clap::Args, Debug)]
pub struct RehearseArgs {
    /// Build the guest even when one for the current recipe is cached.
    #[arg(long)]
    rebuild_guest: bool,
    /// Inject this fault; the command then fails the way the build fails.
    #[arg(long, value_enum)]
    fault: Option<Fault>,
    /// Build only; do not boot the box with vagrant-libvirt.
    #[arg(long)]
    no_verify: bool,
    /// Keep the rehearsal's output directory under images/capi/output.
    #[arg(long)]
    keep_output: bool,
    /// Rehearse `bake` instead of build-flatcar: bake every platform from the mirror, boot the qemu, openstack, proxmoxve and kubevirt outputs through their config channels and run the node rules on them, check the other outputs structurally.
    #[arg(long, conflicts_with_all = ["fault", "no_verify"])]
    bake: bool,
}

/// Lets the rehearsal parse `build-flatcar`'s own command line.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct BuildCommandLine {
    #[command(flatten)]
    args: BuildArgs,
}

pub fn run(sh: &Shell, args: &RehearseArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the rehearsal needs root: it builds a guest with debootstrap and runs libvirtd in its own namespaces");
    }
    let mut steps = Steps::default();

    let started = Instant::now();
    let (guest, provenance) = guest::build_or_reuse(sh, args.rebuild_guest)?;
    let how = match provenance {
        guest::Provenance::Reused => "reused",
        guest::Provenance::Built { .. } => "built",
    };
    steps.record("guest image", how, started);

    let started = Instant::now();
    let run_dir = fresh_run_dir()?;
    let platforms: &[Platform] = if args.bake {
        &platform_images::PUBLISHED
    } else {
        &platform_images::BOOTABLE
    };
    let (mirror, server, mirror_config) =
        serve_mirror(sh, &run_dir, &guest, platforms, args.fault)?;
    steps.record(
        "loopback mirror",
        &format!(
            "{} files on {}, signed by {}",
            mirror.files.len(),
            server.url(),
            mirror.signing_key_fingerprint
        ),
        started,
    );
    if args.bake {
        let baked = bake_path::run(
            sh,
            &mirror,
            &server.url(),
            &mirror_config,
            &run_dir,
            args.keep_output,
            &mut steps,
        );
        check_only_the_host_downloaded(&server.requests())?;
        return baked;
    }
    build_path(
        sh,
        args,
        &mirror,
        &server,
        &mirror_config,
        &run_dir,
        &mut steps,
    )
}

/// The build path: build-flatcar against the mirror, then verify-vagrant on its box.
fn build_path(
    sh: &Shell,
    args: &RehearseArgs,
    mirror: &mirror::Mirror,
    server: &server::FileServer,
    mirror_config: &Path,
    run_dir: &Path,
    steps: &mut Steps,
) -> anyhow::Result<()> {
    let build_args = build_args(
        mirror,
        &server.url(),
        run_dir,
        mirror_config,
        claimed_version(args.fault),
    )?;
    let started = Instant::now();
    let built = build_flatcar::plan(sh, &build_args)
        .and_then(|planned| build_flatcar::build(sh, &build_args, planned));
    let (output_dir, record) = match built {
        Ok(built) => (built.output_dir, built.record),
        Err(err) => {
            steps.record("build-flatcar", "FAIL", started);
            eprint!("{}", steps.render());
            return Err(err);
        }
    };
    let served = server.requests();
    let downloads_served = served
        .iter()
        .filter(|r| r.status == 200 || r.status == 206)
        .count();
    steps.record(
        "build-flatcar",
        &format!("pass ({downloads_served} downloads from the mirror)"),
        started,
    );
    check_only_the_host_downloaded(&served)?;

    eprint!(
        "{}",
        record.timeline.render(record.seconds.unwrap_or_default())
    );
    eprintln!(
        "xtask's own time: {:.1}s of {:.1}s",
        record.seconds.unwrap_or_default() - record.packer_seconds.unwrap_or_default(),
        record.seconds.unwrap_or_default()
    );
    let build_rules = std::fs::read_to_string(output_dir.join("packer.log"))
        .map(|log| rules::report::parse(&log))
        .unwrap_or_default();
    let (verified, verify_rules) = verify_built(args, run_dir, &output_dir, steps);
    if !args.keep_output {
        std::fs::remove_dir_all(&output_dir)
            .with_context(|| format!("removing {}", output_dir.display()))?;
    }
    eprint!("{}", steps.render());
    eprint!("{}", rules_table(&build_rules, &verify_rules));
    verified
}

/// Every request the mirror saw came from the xtask on the host (its User-Agent):
/// the VM fetched nothing from it, only from the build's own server.
fn check_only_the_host_downloaded(served: &[server::Request]) -> anyhow::Result<()> {
    let from_elsewhere: Vec<String> = served
        .iter()
        .filter(|r| {
            !r.user_agent
                .as_deref()
                .is_some_and(|ua| ua.starts_with(crate::net::download::USER_AGENT_NAME))
        })
        .map(|r| {
            format!(
                "{} {} ({})",
                r.method,
                r.path,
                r.user_agent.as_deref().unwrap_or("no User-Agent")
            )
        })
        .collect();
    if !from_elsewhere.is_empty() {
        bail!(
            "the mirror answered requests that did not come from the xtask on the host (the VM must fetch only from the build's server):\n  {}",
            from_elsewhere.join("\n  ")
        );
    }
    eprintln!(
        "rehearse: all {} mirror requests came from the host's xtask, none from the VM",
        served.len()
    );
    Ok(())
}

/// The rehearsal's steps so far, each with its result and time, for the closing table.
#[derive(Default)]
struct Steps(Vec<Vec<String>>);

impl Steps {
    fn record(&mut self, name: &str, result: &str, started: Instant) {
        self.0.push(vec![
            name.to_owned(),
            result.to_owned(),
            format!("{:.1}s", started.elapsed().as_secs_f64()),
        ]);
    }

    fn render(&self) -> String {
        table::render(&["step", "result", "time"], &self.0)
    }
}

/// The rehearsal's run directory under the test bed's cache, emptied of an earlier run.
fn fresh_run_dir() -> anyhow::Result<PathBuf> {
    let run_dir = testbed::cache_dir().join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("removing {}", run_dir.display()))?;
    }
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    Ok(run_dir)
}

/// verify-vagrant on the built box inside the libvirt namespace, unless --no-verify;
/// returns its result and the node rules' results it reported.
fn verify_built(
    args: &RehearseArgs,
    run_dir: &Path,
    output_dir: &Path,
    steps: &mut Steps,
) -> (anyhow::Result<()>, rules::report::Run) {
    let mut verify_rules = rules::report::Run::default();
    let verified = if args.no_verify {
        steps.record("verify-vagrant", "not run (--no-verify)", Instant::now());
        Ok(())
    } else {
        let started = Instant::now();
        let result = verify_in_namespace(run_dir, output_dir).map(|output| {
            verify_rules = rules::report::parse(&output);
        });
        steps.record(
            "verify-vagrant",
            if result.is_ok() { "pass" } else { "FAIL" },
            started,
        );
        steps.record(
            "kubeadm init, cluster-info, node Ready",
            "not run in rehearsal (stand-in Kubernetes binaries)",
            Instant::now(),
        );
        result
    };
    (verified, verify_rules)
}

/// Each node rule with its result in the build and on the booted box, and how
/// long each whole run took inside the guest.
fn rules_table(build: &rules::report::Run, verify: &rules::report::Run) -> String {
    let result =
        |run: &rules::report::Run, name: &str| match run.rules.iter().find(|r| r.name == name) {
            Some(r) if r.passed => "pass".to_owned(),
            Some(r) => format!("FAIL (found {})", r.found),
            None => "-".to_owned(),
        };
    let mut names: Vec<&str> = build.rules.iter().map(|r| r.name.as_str()).collect();
    for rule in &verify.rules {
        if !names.contains(&rule.name.as_str()) {
            names.push(&rule.name);
        }
    }
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|name| vec![name.to_string(), result(build, name), result(verify, name)])
        .collect();
    let mut out = format!(
        "\n{}",
        table::render(&["node rule", "build", "verify"], &rows)
    );
    for (stage, run) in [("build", build), ("verify", verify)] {
        if let Some(summary) = &run.summary {
            out += &format!("{stage}: {summary}\n");
        }
    }
    out
}

/// The node role's `node_sysctl_settings` with all its kernel settings but one:
/// the role's own defaults, read from the role, minus `vm.overcommit_memory`.
fn kernel_settings_without_overcommit() -> anyhow::Result<serde_json::Value> {
    let defaults = workspace::capi_dir().join("ansible/roles/node/defaults/main.yml");
    let text = std::fs::read_to_string(&defaults)
        .with_context(|| format!("reading {}", defaults.display()))?;
    let root = rules::yaml::parse(&text).map_err(|e| {
        anyhow::anyhow!("{}: line {}: {}", defaults.display(), e.at.line, e.message)
    })?;
    let mut settings = serde_json::Map::new();
    if let Some(rules::yaml::Node {
        value: rules::yaml::Value::Mapping(vars),
        ..
    }) = root
    {
        for (name, value) in vars {
            if name.scalar() != Some("node_sysctl_settings") {
                continue;
            }
            if let rules::yaml::Value::Mapping(pairs) = &value.value {
                for (key, value) in pairs {
                    let (Some(key), Some(value)) = (key.scalar(), value.scalar()) else {
                        continue;
                    };
                    if key != "vm.overcommit_memory" {
                        settings.insert(key.to_owned(), value.into());
                    }
                }
            }
        }
    }
    if settings.is_empty() {
        bail!("no node_sysctl_settings in {}", defaults.display());
    }
    Ok(settings.into())
}

/// The loopback mirror for the rehearsal's build, damaged as `fault` says,
/// served, and the site var file that points the build's downloads at it.
fn serve_mirror(
    sh: &Shell,
    run_dir: &Path,
    guest: &guest::Guest,
    platforms: &[Platform],
    fault: Option<Fault>,
) -> anyhow::Result<(mirror::Mirror, server::FileServer, PathBuf)> {
    let downloads = downloads::Downloads::from_vars(&plan::rendered_variables(
        Provider::Qemu,
        None,
        &Default::default(),
    )?)?;
    let mirror = mirror::build(
        sh,
        &run_dir.join("mirror"),
        guest,
        "stable",
        platforms,
        &downloads,
    )?;
    if let Some(fault) = fault.filter(|f| *f != Fault::KernelParamUnset) {
        inject(&mirror, fault)?;
    }
    let server = server::FileServer::start(&mirror.root)?;
    let mirror_config = run_dir.join("mirror-config.json");
    // The host fetches every download; the VM gets them from the build's own server.
    let mut config = mirror.mirror_config(&server.url())?;
    if fault == Some(Fault::KernelParamUnset) {
        // The site's extra vars keep what the mirror set (PyPy's version and
        // checksum) and gain the kernel settings, as one JSON document.
        let mut vars = serde_json::Map::new();
        let mirror_vars = config["ansible_extra_vars"].as_str().unwrap_or_default();
        for pair in mirror_vars.split_whitespace() {
            if let Some((name, value)) = pair.split_once('=') {
                vars.insert(name.to_owned(), value.into());
            }
        }
        vars.insert(
            "node_sysctl_settings".to_owned(),
            kernel_settings_without_overcommit()?,
        );
        config["ansible_extra_vars"] = serde_json::Value::Object(vars).to_string().into();
        eprintln!("rehearse: fault injected: the site's var file sets the node role's kernel settings without vm.overcommit_memory");
    }
    std::fs::write(
        &mirror_config,
        serde_json::to_string_pretty(&config)? + "\n",
    )
    .with_context(|| format!("writing {}", mirror_config.display()))?;
    Ok((mirror, server, mirror_config))
}

/// `build-flatcar`'s arguments for the mirror, parsed from the command line a user
/// would type (and printed as such), so the rehearsal has no options of its own.
fn build_args(
    mirror: &mirror::Mirror,
    server_url: &str,
    run_dir: &Path,
    mirror_config: &Path,
    version: &str,
) -> anyhow::Result<BuildArgs> {
    let command_line: Vec<OsString> = [
        mirror.channel.as_str(),
        version,
        "--release-server",
        &mirror.release_server(server_url),
        "--signing-key",
        &mirror.signing_key.display().to_string(),
        "--cache-dir",
        &run_dir.join("cache").display().to_string(),
        "--mirror-config",
        &mirror_config.display().to_string(),
        "--accelerator",
        "tcg",
        "--force",
        "--no-verify",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    eprintln!(
        "rehearse: cargo xtask build-flatcar {}",
        command_line
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(BuildCommandLine::try_parse_from(&command_line)
        .context("the rehearsal's build-flatcar command line")?
        .args)
}

/// Runs `verify-vagrant` on the box in a libvirtd of its own, in a private network
/// and mount namespace, with a VAGRANT_HOME of its own; returns its output.
fn verify_in_namespace(run_dir: &Path, output_dir: &Path) -> anyhow::Result<String> {
    let state = run_dir.join("libvirt");
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let namespace = LibvirtNamespace::start(&state)?;
    let xtask = std::env::current_exe().context("finding the xtask binary")?;
    let verify_args: Vec<OsString> = vec![
        "verify-vagrant".into(),
        "--output-dir".into(),
        output_dir.into(),
        "--no-cluster".into(),
        "--destroy".into(),
        "--accelerator".into(),
        "tcg".into(),
    ];
    let (nsenter, argv) = namespace.wrap(&xtask, &verify_args);
    let vagrant_home: PathBuf = run_dir.join("vagrant.d");
    let env = [("VAGRANT_HOME", vagrant_home.into_os_string())];
    let finished = streaming::run(&nsenter, &argv, run_dir, &env, Some("verify"), None)?;
    drop(namespace);
    if !finished.success || streaming::interrupted() {
        eprintln!("error: verify-vagrant failed in the rehearsal namespace");
        return Err(Exit(1).into());
    }
    Ok(finished.output)
}

/// Serves the release the guest is (its signed image, DIGESTS and signature)
/// again under another version, as a mirror that rolls a build back would.
fn serve_under_another_version(mirror: &mirror::Mirror) -> anyhow::Result<()> {
    let claimed = claimed_version(Some(Fault::RolledBackRelease));
    let tree = mirror.root.join(mirror::RELEASE_DIR);
    let dir = |version| release_tree::release_dir(&tree, &mirror.channel, "amd64", version);
    let (real, current, renamed) = (dir(testbed::FLATCAR_VERSION), dir("current"), dir(claimed));
    std::fs::create_dir_all(&renamed).with_context(|| format!("creating {}", renamed.display()))?;
    for entry in std::fs::read_dir(&real).with_context(|| format!("reading {}", real.display()))? {
        let entry = entry.with_context(|| format!("reading {}", real.display()))?;
        if entry.file_name() != "version.txt" {
            std::fs::copy(entry.path(), renamed.join(entry.file_name()))
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    for dir in [&renamed, &current] {
        let version_txt = dir.join("version.txt");
        // version.txt may be a hard link to the real release's: replace, never write through.
        let _ = std::fs::remove_file(&version_txt);
        std::fs::write(
            &version_txt,
            release_tree::version_txt(claimed, "rehearsal"),
        )
        .with_context(|| format!("writing {}", version_txt.display()))?;
    }
    eprintln!(
        "rehearse: fault injected: the {} guest is served as {claimed}",
        testbed::FLATCAR_VERSION
    );
    Ok(())
}

/// Damages the mirror the way `fault` says, after it was signed.
fn inject(mirror: &mirror::Mirror, fault: Fault) -> anyhow::Result<()> {
    let (suffix, what) = match fault {
        Fault::RolledBackRelease => return serve_under_another_version(mirror),
        Fault::TamperedImage => (
            format!("/{}", Variant::Bios.image_file_name()),
            "flipped one byte of",
        ),
        Fault::CorruptDownload => (".tar.bz2".to_owned(), "appended a byte to"),
        Fault::KernelParamUnset => unreachable!("a var-file fault, not a mirror one"),
    };
    let relative = mirror
        .files
        .iter()
        .find(|f| f.ends_with(&suffix))
        .with_context(|| format!("the mirror has no file ending in {suffix}"))?;
    let path = mirror.root.join(relative);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match fault {
        Fault::TamperedImage => {
            use std::io::Read;
            let offset = 1 << 20;
            let mut byte = [0u8; 1];
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut byte)?;
            file.seek(SeekFrom::Start(offset))?;
            file.write_all(&[byte[0] ^ 0xff])?;
        }
        Fault::CorruptDownload => {
            file.seek(SeekFrom::End(0))?;
            file.write_all(b"\n")?;
        }
        Fault::RolledBackRelease | Fault::KernelParamUnset => unreachable!("handled above"),
    }
    eprintln!("rehearse: fault injected: {what} {relative}");
    Ok(())
}
