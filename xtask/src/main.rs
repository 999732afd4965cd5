//! `cargo xtask`: the one front door for building and checking Flatcar Cluster API
//! node images. This file parses the command line and dispatches; the work lives in
//! one module per subcommand, which compose the library modules.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::commands::{
    bake, bench, boxes, build_flatcar, deps, fetch_image, install_hook, lint, mirror, pre_commit,
    rehearse, rehearse_guest, test, validate, verify_vagrant,
};
use xtask::error::Exit;
use xtask::{toolchain, workspace};

/// Build and check Cluster API node images of Flatcar Container Linux.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
#[command(after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One example per subcommand, shown under the top-level help.
const EXAMPLES: &str = "\
Examples:
  cargo xtask build-flatcar            build the current stable release into images/capi/output, then verify its box
  cargo xtask bake --platform qemu,openstack --sysext k8s.raw   bake Kubernetes into each platform's own image: no VM, no root
  cargo xtask bench                    every speed figure, measured side by side with its baseline
  cargo xtask boxes                    the Flatcar boxes vagrant knows, their volumes and VMs
  cargo xtask deps --install           install every tool: system packages, Packer and Ansible into .local/
  cargo xtask fetch-image stable       download and verify the current stable QEMU image into the cache
  cargo xtask install-hook             run the checks on staged files before every commit
  cargo xtask lint --fix               shellcheck, yamllint, ansible-lint, rustfmt, clippy; rewrite JSON canonically
  cargo xtask mirror /srv/flatcar     every file a build needs, verified, in a tree a static web server can serve
  cargo xtask pre-commit               the checks that concern the staged files, on the staged content
  cargo xtask rehearse                 build and verify a box end to end against a loopback mirror (root)
  cargo xtask rehearse-guest           build or reuse the Flatcar-shaped test guest, boot it, time boot-to-SSH
  cargo xtask test --yes               set up the test tools, then run the whole suite with the VM tests
  cargo xtask validate                 check images/capi: JSON, var-file layering, packer, ansible, Ignition
  cargo xtask verify-vagrant           boot the newest build's box and run kubeadm init in it

Run `cargo xtask <COMMAND> --help` for a command's options.";

#[derive(Subcommand, Debug)]
enum Command {
    /// Bake Kubernetes as a systemd-sysext into each platform's own Flatcar image: no VM, no root.
    ///
    /// Fetches each platform's verified release image, writes the extension into its
    /// ROOT partition with debugfs, and writes the raw disk and build.json to
    /// images/capi/output/flatcar-<channel>-<version>-kube-<k8s>-<platform>/.
    ///
    /// Example: `cargo xtask bake stable --platform qemu,openstack --sysext kubernetes.raw --dry-run`
    Bake(bake::BakeArgs),
    /// Measure every speed figure the project promises, side by side with its baseline.
    ///
    /// Example: `cargo xtask bench validate-parallel startup`
    Bench(bench::BenchArgs),
    /// List the Flatcar boxes this tool made, or remove them with --cleanup.
    ///
    /// Example: `cargo xtask boxes --cleanup stable 4081.2.0`
    Boxes(boxes::BoxesArgs),
    /// Build a Flatcar node image and Vagrant box from a release, then verify the box.
    ///
    /// Example: `cargo xtask build-flatcar stable 4081.2.0 --dry-run`
    BuildFlatcar(build_flatcar::BuildArgs),
    /// Report every external tool the project uses, or install the missing ones.
    ///
    /// For each tool: where it was found (the project-local toolchain under .local/ comes
    /// before PATH), its version, the minimum, and how to install it.
    ///
    /// Example: `cargo xtask deps --install --for validate`
    Deps(deps::DepsArgs),
    /// Download a Flatcar QEMU image, verify its signature and SHA-512, and cache it.
    ///
    /// Example: `cargo xtask fetch-image stable 4081.2.0 --arch amd64`
    FetchImage(fetch_image::FetchImageArgs),
    /// Install the git pre-commit hook that runs the project's checks on staged files.
    ///
    /// Example: `cargo xtask install-hook`
    InstallHook(install_hook::InstallHookArgs),
    /// Lint the repository: shell, YAML, Ansible, JSON formatting, Rust.
    ///
    /// shellcheck on every shell script, yamllint on the YAML (.yamllint), ansible-lint
    /// on the playbooks when it is installed (.ansible-lint), canonical JSON under
    /// images/capi (2-space indent, keys sorted, trailing newline), `cargo fmt --check`
    /// and `cargo clippy -- -D warnings`. Only --fix changes files: it rewrites JSON
    /// that is not canonical, and nothing else.
    ///
    /// Example: `cargo xtask lint --fix`
    Lint(lint::LintArgs),
    /// Write every file a build needs into a directory any static web server can serve.
    ///
    /// The Flatcar release files (image, signature, DIGESTS, version.txt, the signing
    /// key) of each channel, and every Kubernetes, CNI, crictl, containerd and PyPy
    /// download with its checksum file, each verified through the cache, at its
    /// upstream host and path below the directory. Writes mirror-config.json for
    /// --mirror-config and prints the build-flatcar command line that uses the mirror.
    ///
    /// Example: `cargo xtask mirror /srv/flatcar stable --channel beta --base-url http://mirror.internal`
    Mirror(mirror::MirrorArgs),
    /// Check what is staged for commit: the validate and lint checks for those files.
    ///
    /// Reads the staged file list, checks out the index into a temporary directory and
    /// runs the checks that concern the staged files there (JSON, layering and packer
    /// validate for the targets they belong to, yamllint and syntax-check for Ansible,
    /// shellcheck, rustfmt), so it checks what will be committed, not the working tree.
    /// `cargo xtask install-hook` makes git run it before every commit.
    ///
    /// Example: `cargo xtask pre-commit`
    PreCommit(pre_commit::PreCommitArgs),
    /// Rehearse the whole build and verify pipeline on a Flatcar-shaped guest served from loopback.
    ///
    /// Example: `cargo xtask rehearse --fault tampered-image`
    Rehearse(rehearse::RehearseArgs),
    /// Build or reuse the Flatcar-shaped rehearsal guest and report boot-to-SSH time.
    ///
    /// The guest (Debian packages made to behave like Flatcar where the build depends on
    /// it) is cached under target/rehearsal/ and rebuilt when its recipe changes; building
    /// it needs root. It is booted twice the way build-flatcar boots Flatcar and checked.
    ///
    /// Example: `cargo xtask rehearse-guest`
    RehearseGuest(rehearse_guest::RehearseGuestArgs),
    /// Set up every tool the test suite drives, then run the whole suite, VM tests included.
    ///
    /// Runs `deps --install --for test`, then `cargo test --workspace --no-fail-fast --
    /// --include-ignored`, and ends with one summary line.
    ///
    /// Example: `cargo xtask test --yes`
    Test(test::TestArgs),
    /// Check that images/capi is sound: JSON, var-file layering, packer, ansible, Ignition.
    ///
    /// Every JSON file must parse; each build target's var files must layer onto its
    /// template with every `{{user}}` resolved and no undeclared variable set; `packer
    /// validate`, `ansible-playbook --syntax-check` and `ignition-validate` must accept
    /// them. The checks run in parallel; a check whose tool is missing is reported as not
    /// run (exit 2 unless --allow-missing). Passes are remembered by content hash under
    /// target/xtask-cache, so an unchanged tree re-validates at once.
    ///
    /// Example: `cargo xtask validate --target qemu-flatcar`
    Validate(validate::ValidateArgs),
    /// Boot a build's Vagrant box on libvirt and check it is a working Kubernetes node.
    ///
    /// Example: `cargo xtask verify-vagrant --output-dir images/capi/output/flatcar-stable-4081.2.0-kube-v1.36.1`
    VerifyVagrant(verify_vagrant::VerifyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before anything runs, while the xtask is single-threaded.
    toolchain::layout::put_first_on_path();
    let result = workspace::shell().and_then(|sh| match &cli.command {
        Command::Bench(args) => bench::run(&sh, args),
        Command::Boxes(args) => boxes::run(&sh, args),
        Command::Bake(args) => bake::run(&sh, args),
        Command::BuildFlatcar(args) => build_flatcar::run(&sh, args),
        Command::Deps(args) => deps::run(&sh, args),
        Command::FetchImage(args) => fetch_image::run(&sh, args),
        Command::InstallHook(args) => install_hook::run(&sh, args),
        Command::Lint(args) => lint::run(&sh, args),
        Command::Mirror(args) => mirror::run(&sh, args),
        Command::PreCommit(args) => pre_commit::run(&sh, args),
        Command::Rehearse(args) => rehearse::run(&sh, args),
        Command::RehearseGuest(args) => rehearse_guest::run(&sh, args),
        Command::Test(args) => test::run(&sh, args),
        Command::Validate(args) => validate::run(&sh, args),
        Command::VerifyVagrant(args) => verify_vagrant::run(&sh, args),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match err.downcast_ref::<Exit>() {
            Some(Exit(code)) => ExitCode::from(*code),
            None => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
