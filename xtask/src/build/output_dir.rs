//! A build's output directory: whether an existing one may be replaced, the
//! digests of what packer wrote, and the install that replaces the old output only
//! once the new one is complete.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::build::record::{Artifact, BuildRecord};

/// An existing output directory is replaced only with --force or a "yes" on a
/// terminal, and only when it is one of ours (its build.json reads) whose verify
/// VM is gone: removing a running VM's directory would orphan the VM.
pub fn confirm_replace(output_dir: &Path, force: bool) -> anyhow::Result<()> {
    if !output_dir.exists() {
        return Ok(());
    }
    if let Err(err) = BuildRecord::read(output_dir) {
        bail!(
            "{} exists but is not the output of a build of this tool ({err:#}); \
             it is not replaced, even with --force: move or remove it yourself",
            output_dir.display()
        );
    }
    let ids = verify_vm_ids(output_dir);
    if !ids.is_empty() {
        bail!(
            "{} has a verify VM that may still run ({}); it is not replaced, even with --force: \
             run `vagrant destroy --force` in {} (or `cargo xtask boxes --cleanup`) first",
            output_dir.display(),
            ids.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            output_dir.join("vagrant").display()
        );
    }
    if force {
        return Ok(());
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        let question = format!(
            "{} exists. Replace it when the build succeeds?",
            output_dir.display()
        );
        if crate::prompt::yes_or_no(&question)? {
            return Ok(());
        }
    }
    bail!(
        "{} exists from an earlier build; pass --force to replace it (it is replaced only once the new build succeeds)",
        output_dir.display()
    )
}

/// Every file packer wrote, with its SHA-512, sorted by name.
pub fn digests_of(dir: &Path) -> anyhow::Result<Vec<Artifact>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    names
        .iter()
        .map(|path| {
            Ok(Artifact {
                file: path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                sha512: crate::flatcar::cache::sha512_file(path)?,
            })
        })
        .collect()
}

/// Moves the finished staging directory into place; an older output is replaced
/// only now, so a failed build never destroys a good one. The older output is
/// moved aside under a fresh name of its own, so no leftover of another build
/// (another patch version, an interrupted run) stands in the way.
pub fn install_output(staging: &Path, output_dir: &Path) -> anyhow::Result<()> {
    if !output_dir.exists() {
        return std::fs::rename(staging, output_dir)
            .with_context(|| format!("installing {}", output_dir.display()));
    }
    let parent = output_dir.parent().unwrap_or(Path::new("."));
    let name = output_dir.file_name().unwrap_or_default().to_string_lossy();
    let aside = tempfile::Builder::new()
        .prefix(&format!(".{name}.replaced-"))
        .tempdir_in(parent)
        .with_context(|| format!("making a directory to move {} aside", output_dir.display()))?;
    let old = aside.path().join("old");
    std::fs::rename(output_dir, &old)
        .with_context(|| format!("moving aside {}", output_dir.display()))?;
    if let Err(err) = std::fs::rename(staging, output_dir) {
        // Put the old output back: a failed install must not lose it.
        let _ = std::fs::rename(&old, output_dir);
        return Err(err).with_context(|| format!("installing {}", output_dir.display()));
    }
    let old_path = aside.path().to_path_buf();
    aside
        .close()
        .with_context(|| format!("removing the replaced output {}", old_path.display()))
}

/// Whether the verify VM of an existing output may still exist: vagrant keeps a
/// machine's id under `vagrant/.vagrant/machines/<name>/<provider>/id` until it is
/// destroyed.
pub fn verify_vm_ids(output_dir: &Path) -> Vec<PathBuf> {
    let machines = output_dir.join("vagrant/.vagrant/machines");
    let mut ids = Vec::new();
    for machine in std::fs::read_dir(machines).into_iter().flatten().flatten() {
        for provider in std::fs::read_dir(machine.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = provider.path().join("id");
            if id.is_file() {
                ids.push(id);
            }
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `…-v1.36.2` and `…-v1.36.3` once shared `…-v1.36.replaced`: a leftover of one
    /// made the other's install fail after a complete build.
    #[test]
    fn finding_9_a_leftover_move_aside_does_not_block_the_install() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("flatcar-stable-1.2.3-kube-v1.36.2");
        std::fs::create_dir_all(&output).unwrap();
        std::fs::write(output.join("old.qcow2"), "old").unwrap();
        for leftover in [
            "flatcar-stable-1.2.3-kube-v1.36.replaced",
            "flatcar-stable-1.2.3-kube-v1.36.2.replaced",
        ] {
            let leftover = dir.path().join(leftover);
            std::fs::create_dir_all(&leftover).unwrap();
            std::fs::write(leftover.join("other"), "another build's").unwrap();
        }
        let staging = dir.path().join("staging");
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("new.qcow2"), "new").unwrap();

        install_output(&staging, &output).unwrap();
        assert_eq!(
            std::fs::read_to_string(output.join("new.qcow2")).unwrap(),
            "new"
        );
        assert!(!output.join("old.qcow2").exists());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "flatcar-stable-1.2.3-kube-v1.36.2",
                "flatcar-stable-1.2.3-kube-v1.36.2.replaced",
                "flatcar-stable-1.2.3-kube-v1.36.replaced"
            ],
            "another build's leftovers are not ours to remove, and nothing of ours is left"
        );
    }
}
