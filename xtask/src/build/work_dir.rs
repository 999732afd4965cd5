//! A build's work directory: made fresh for each build and removed on every way
//! out of it, because it holds the build's private key.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// A build's work directory (its key, Ignition config, var file, staging output):
/// made fresh, and removed when the value is dropped, whatever ends the build.
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn create(path: &Path) -> anyhow::Result<WorkDir> {
        if path.exists() {
            std::fs::remove_dir_all(path)
                .with_context(|| format!("removing the stale work directory {}", path.display()))?;
        }
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir {
            path: path.to_path_buf(),
        })
    }

    /// Removes it now, saying so when that fails (the key would be left behind).
    pub fn remove(self) -> anyhow::Result<()> {
        let removed = std::fs::remove_dir_all(&self.path);
        if removed.is_ok() {
            remove_if_empty(self.path.parent());
        }
        removed.with_context(|| {
            format!(
                "removing the build's work directory {} (it holds the build's private key: remove it)",
                self.path.display()
            )
        })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.path.exists() {
            let _ = std::fs::remove_dir_all(&self.path);
            remove_if_empty(self.path.parent());
        }
    }
}

/// Removes the shared `.work` directory once no build uses it (fails harmlessly when one does).
fn remove_if_empty(dir: Option<&Path>) {
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::key;
    use crate::build::output_dir::digests_of;

    /// An error after packer (a failed digest, record write or install) and a panic
    /// both leave no key behind.
    #[test]
    fn finding_8_the_build_key_is_removed_on_every_exit_path() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join(".work/flatcar-stable-1.2.3-kube-v1.36.2");
        let key = work.join(key::PRIVATE_KEY_FILE);

        let failed = (|| -> anyhow::Result<()> {
            let _work = WorkDir::create(&work)?;
            std::fs::write(&key, "private")?;
            // What an error in record_build does: staging is missing here.
            digests_of(&work.join("output"))?;
            Ok(())
        })();
        assert!(failed.is_err());
        assert!(!key.exists() && !work.exists(), "the key outlived an error");
        assert!(!dir.path().join(".work").exists(), "the empty .work stays");

        let panicked = std::panic::catch_unwind(|| {
            let _work = WorkDir::create(&work).unwrap();
            std::fs::write(&key, "private").unwrap();
            panic!("a bug half-way through a build");
        });
        assert!(panicked.is_err());
        assert!(!key.exists(), "the key outlived a panic");

        let done = WorkDir::create(&work).unwrap();
        std::fs::write(&key, "private").unwrap();
        done.remove().unwrap();
        assert!(!work.exists());
    }
}
