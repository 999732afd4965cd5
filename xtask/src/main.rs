//! `cargo xtask`: the one front door for building and checking Flatcar Cluster API
//! node images. This file parses the command line and dispatches; the work lives in
//! one module per subcommand, which compose the library modules.

mod accelerator;
mod boxes;
mod build_key;
mod build_record;
mod deps;
mod ignition;
mod install_hook;
mod streaming;
mod table;
mod tools;
mod vagrant;
mod verify_vagrant;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
  cargo xtask boxes                    the Flatcar boxes vagrant knows, their volumes and VMs
  cargo xtask deps --for validate      which tools are missing for `validate`, and how to install them
  cargo xtask install-hook             run the checks on staged files before every commit
  cargo xtask verify-vagrant           boot the newest build's box and run kubeadm init in it

Run `cargo xtask <COMMAND> --help` for a command's options.";

#[derive(Subcommand, Debug)]
enum Command {
    /// List the Flatcar boxes this tool made, or remove them with --cleanup.
    ///
    /// Example: `cargo xtask boxes --cleanup stable 4081.2.0`
    Boxes(boxes::BoxesArgs),
    /// Report every external tool the project uses: path, version, minimum, install hint.
    ///
    /// Example: `cargo xtask deps --for validate`
    Deps(deps::DepsArgs),
    /// Install the git pre-commit hook that runs the project's checks on staged files.
    ///
    /// Example: `cargo xtask install-hook`
    InstallHook(install_hook::InstallHookArgs),
    /// Boot a build's Vagrant box on libvirt and check it is a working Kubernetes node.
    ///
    /// Example: `cargo xtask verify-vagrant --output-dir images/capi/output/flatcar-stable-4081.2.0-kube-v1.36.1`
    VerifyVagrant(verify_vagrant::VerifyArgs),
}

/// An error whose message has already been printed (a failed check's report):
/// main only turns it into the exit status.
#[derive(Debug)]
pub(crate) struct Exit(pub(crate) u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Exit {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = workspace::shell().and_then(|sh| match &cli.command {
        Command::Boxes(args) => boxes::run(&sh, args),
        Command::Deps(args) => deps::run(&sh, args),
        Command::InstallHook(args) => install_hook::run(&sh, args),
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
