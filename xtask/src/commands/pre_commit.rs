//! `cargo xtask pre-commit`: the validate and lint checks that concern the staged
//! files, run on the staged content (the index, checked out into a temporary
//! directory), not on the working tree. This is what the git hook runs.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::checks::engine::{self as checks, CheckOptions};
use crate::checks::source_tree::{Scope, SourceTree};
use crate::checks::validate;
use crate::commands::lint;
use crate::packer::targets::TARGETS;

#[derive(clap::Args, Debug)]
pub struct PreCommitArgs {
    #[command(flatten)]
    options: CheckOptions,
}

pub fn run(sh: &Shell, args: &PreCommitArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let checkout = args.options.root()?;
    let _dir = sh.push_dir(&checkout);
    let root = PathBuf::from(
        cmd!(sh, "git rev-parse --show-toplevel")
            .quiet()
            .read()
            .with_context(|| format!("{} is not in a git repository", checkout.display()))?,
    );
    let _dir = sh.push_dir(&root);
    let staged = staged_files(sh)?;
    if staged.is_empty() {
        eprintln!("pre-commit: nothing staged, nothing to check.");
        return Ok(());
    }

    // The index as it would be committed, in a directory of its own.
    let snapshot = sh
        .create_temp_dir()
        .context("creating a temporary directory")?;
    let prefix = format!("{}/", snapshot.path().display());
    cmd!(sh, "git checkout-index --all --prefix={prefix}")
        .quiet()
        .run()
        .context("checking out the staged files")?;
    let tree = SourceTree::discover(snapshot.path())?;
    let scope = Scope::Only(staged);

    let targets: Vec<_> = TARGETS.iter().collect();
    let mut checks = if tree.has_capi() {
        validate::plan(&tree, &scope, &targets)
    } else {
        Vec::new()
    };
    checks.extend(lint::plan(
        &tree,
        &scope,
        lint::Settings {
            fix: false,
            // validate's `json` check reports syntax errors already.
            report_parse_errors: !tree.has_capi(),
        },
    ));
    if checks.is_empty() {
        eprintln!("pre-commit: no check concerns the staged files.");
        return Ok(());
    }
    let results = checks::run(sh, checks, &args.options);
    let outcome =
        crate::checks::report::report("pre-commit", &root, &results, &args.options, started);
    if outcome.is_err() {
        eprintln!("pre-commit: the staged content fails the checks above; fix it and `git add` it again (or commit with --no-verify).");
    }
    outcome
}

/// The added, copied, modified and renamed files in the index, relative to the
/// repository root.
fn staged_files(sh: &Shell) -> anyhow::Result<BTreeSet<PathBuf>> {
    let listed = cmd!(sh, "git diff --cached --name-only --diff-filter=ACMR -z")
        .quiet()
        .read()
        .context("listing the staged files")?;
    Ok(listed
        .split('\0')
        .filter(|name| !name.is_empty())
        .map(PathBuf::from)
        .collect())
}
