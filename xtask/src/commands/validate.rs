//! `cargo xtask validate`: is images/capi sound? Every JSON file parses, each build
//! target's var-file stack layers cleanly, `packer validate` accepts each target, the
//! playbooks pass `ansible-playbook --syntax-check` with the build's inventory and
//! extra vars, and the Ignition configs pass `ignition-validate`. `plan` is also
//! what `pre-commit` runs, on the staged files; the checks live in `checks::validate`.

use std::time::Instant;

use clap::builder::PossibleValuesParser;
use xshell::Shell;

use crate::checks::engine::{self as checks, CheckOptions};
use crate::checks::source_tree::{Scope, SourceTree, CAPI};
use crate::checks::validate::plan;
use crate::error::Exit;
use crate::install::{self, InstallOptions};
use crate::packer::targets::{self, BuildTarget, TARGETS};
use crate::toolchain::tools::Purpose;

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// Check only this build target: its var files, its layering, `packer validate`
    /// and the playbooks it runs.
    #[arg(long, value_name = "TARGET", value_parser = PossibleValuesParser::new(targets::names()))]
    target: Option<String>,
    #[command(flatten)]
    options: CheckOptions,
    /// Do not install a missing packer or ansible into .local/ first; their checks are reported as not run.
    #[arg(long)]
    no_install: bool,
    #[command(flatten)]
    install: InstallOptions,
}

impl ValidateArgs {
    /// `validate --target <name>` with `options`: what `build-flatcar` runs first,
    /// after its own install step.
    pub fn for_target(name: &str, options: CheckOptions) -> ValidateArgs {
        ValidateArgs {
            target: Some(name.to_owned()),
            options,
            no_install: true,
            install: InstallOptions::default(),
        }
    }
}

pub fn run(sh: &Shell, args: &ValidateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = args.options.root()?;
    let tree = SourceTree::discover(&root)?;
    if !tree.has_capi() {
        eprintln!(
            "error: {} has no {CAPI}/packer: give --root a checkout of this project or a copy of its image definitions",
            root.display()
        );
        return Err(Exit(2).into());
    }
    if !args.no_install {
        install::install_missing(
            sh,
            Purpose::Validate,
            &args.install,
            install::DEFAULT_RETRIES,
        )?;
    }
    let targets: Vec<&'static BuildTarget> = match &args.target {
        Some(name) => vec![targets::target(name).expect("clap checked the name")],
        None => TARGETS.iter().collect(),
    };
    let checks = plan(&tree, &Scope::All, &targets);
    let results = checks::run(sh, checks, &args.options);
    crate::checks::report::report("validate", &root, &results, &args.options, started)
}
