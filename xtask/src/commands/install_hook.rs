//! `cargo xtask install-hook`: installs `hack/pre-commit` as the repository's git
//! pre-commit hook, without ever clobbering a hook the user wrote.

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::fsx;
use crate::workspace::project_root;

#[derive(clap::Args, Debug)]
pub struct InstallHookArgs {
    /// Replace a different existing pre-commit hook (it is kept as pre-commit.backup).
    #[arg(long)]
    force: bool,
}

pub fn run(sh: &Shell, args: &InstallHookArgs) -> anyhow::Result<()> {
    let source = project_root().join("hack").join("pre-commit");
    let hook = std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
    let hooks_dir = cmd!(sh, "git rev-parse --git-path hooks")
        .quiet()
        .read()
        .context("finding the git hooks directory (is this a git checkout?)")?;
    let hooks_dir = project_root().join(hooks_dir);
    let target = hooks_dir.join("pre-commit");

    match std::fs::read(&target) {
        Ok(existing) if existing == hook => {
            eprintln!(
                "The pre-commit hook is already installed at {}.",
                target.display()
            );
            return Ok(());
        }
        Ok(_) if !args.force => bail!(
            "{} exists and is not this project's hook; not overwriting it. \
             Re-run with --force to replace it (the old one is kept as pre-commit.backup).",
            target.display()
        ),
        Ok(_) => {
            let backup = hooks_dir.join("pre-commit.backup");
            std::fs::rename(&target, &backup)
                .with_context(|| format!("keeping the old hook as {}", backup.display()))?;
            eprintln!("Kept the previous hook as {}.", backup.display());
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading {}", target.display())),
    }

    std::fs::create_dir_all(&hooks_dir)
        .with_context(|| format!("creating {}", hooks_dir.display()))?;
    // Through a temporary name and a rename, so a hook is never half-written.
    fsx::write_atomically_with_mode(&target, &hook, 0o755)?;
    eprintln!(
        "Installed {} (runs `cargo xtask pre-commit`).",
        target.display()
    );
    Ok(())
}
