//! Files as the xtask writes and reads them everywhere: one atomic write (a reader
//! sees the old file or the whole new one, also after a crash), a durable rename,
//! removing what may be absent, a lock on a directory being filled, and whether a
//! path is an executable program.

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// A file being written under a temporary name beside its final path; `commit`
/// puts it in place, dropping it uncommitted removes it.
pub struct AtomicFile {
    temp: tempfile::NamedTempFile,
    path: PathBuf,
    mode: Option<u32>,
}

impl AtomicFile {
    /// Starts writing `path` (creating its directory if need be). The temporary file
    /// gets an unpredictable name, created exclusively, in the same directory, so the
    /// rename stays on one file system and nobody can plant a file in its way.
    pub fn create(path: &Path) -> anyhow::Result<AtomicFile> {
        let dir = path.parent().context("a file path has a parent")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let name = path.file_name().context("a file path has a name")?;
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            // What `File::create` would give a new file (the umask applies).
            .permissions(Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        Ok(AtomicFile {
            temp,
            path: path.to_path_buf(),
            mode: None,
        })
    }

    /// The temporary file's path, for an external program that writes the file
    /// (`qemu-img convert`, `tar --file`) before `commit` puts it in place.
    pub fn temp_path(&self) -> &Path {
        self.temp.path()
    }

    /// The permission bits the file gets, instead of those of the file it replaces.
    pub fn with_mode(mut self, mode: u32) -> AtomicFile {
        self.mode = Some(mode);
        self
    }

    /// Syncs the bytes, gives the file its mode (the one asked for, else the replaced
    /// file's), renames it over the path and syncs the directory.
    pub fn commit(self) -> anyhow::Result<()> {
        let AtomicFile { temp, path, mode } = self;
        let mode = mode.or_else(|| {
            std::fs::metadata(&path)
                .ok()
                .map(|meta| meta.permissions().mode())
        });
        if let Some(mode) = mode {
            temp.as_file()
                .set_permissions(Permissions::from_mode(mode))
                .with_context(|| format!("setting the mode of {}", temp.path().display()))?;
        }
        temp.as_file()
            .sync_all()
            .with_context(|| format!("syncing {}", temp.path().display()))?;
        temp.persist(&path).map_err(|err| {
            anyhow::Error::new(err.error).context(format!("replacing {}", path.display()))
        })?;
        sync_dir(parent(&path))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.temp.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.temp.flush()
    }
}

/// Writes `bytes` to `path` atomically, keeping the mode of the file it replaces.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)
        .with_context(|| format!("writing {} (is the disk full?)", path.display()))?;
    file.commit()
}

/// Writes `bytes` to `path` atomically with the permission bits `mode`.
pub fn write_atomically_with_mode(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = AtomicFile::create(path)?.with_mode(mode);
    file.write_all(bytes)
        .with_context(|| format!("writing {} (is the disk full?)", path.display()))?;
    file.commit()
}

/// Renames the complete, synced file `from` to `to` in the same directory and syncs
/// the directory, so the rename survives a crash.
pub fn rename_durably(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::rename(from, to)
        .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
    sync_dir(parent(to))
}

/// Makes the entries of `dir` (new names, renames) survive a crash.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Removes the file `path` if it exists.
pub fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing {}", path.display())),
    }
}

/// An exclusive lock on a directory that a run is filling (a cache entry, the
/// toolchain), so two runs never write the same files. Released when dropped.
pub struct DirLock {
    _file: File,
}

/// Locks `dir` through the file `.lock` in it, waiting (and saying so) while
/// another run holds it. The lock file is never truncated and never followed if
/// it is a symbolic link: in a shared directory, a `.lock` planted to point at
/// someone's file must not let a run (perhaps as root) write to that file.
pub fn lock_dir(dir: &Path) -> anyhow::Result<DirLock> {
    let path = dir.join(".lock");
    let file = open_no_follow(OpenOptions::new().create(true).write(true), &path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!(
                "Waiting for another run that is filling {} ...",
                dir.display()
            );
            file.lock()
                .with_context(|| format!("locking {}", path.display()))?;
        }
        Err(std::fs::TryLockError::Error(err)) => {
            return Err(err).with_context(|| format!("locking {}", path.display()))
        }
    }
    Ok(DirLock { _file: file })
}

/// Opens `path` with `options` unless it is a symbolic link (`O_NOFOLLOW`), so a
/// link planted at a predictable name never redirects a write elsewhere.
pub fn open_no_follow(options: &mut OpenOptions, path: &Path) -> anyhow::Result<File> {
    match options.custom_flags(libc::O_NOFOLLOW).open(path) {
        Ok(file) => Ok(file),
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => anyhow::bail!(
            "{} is a symbolic link where this program keeps a file of its own; someone \
             planted it (it was not followed). Remove it, and check who else can write to {}",
            path.display(),
            parent(path).display()
        ),
        Err(err) => Err(err).with_context(|| format!("opening {}", path.display())),
    }
}

/// Whether `path` is a regular file someone may execute.
pub fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        path.metadata().unwrap().permissions().mode() & 0o777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_file_and_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o750)).unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(mode(&path), 0o750);
        assert_eq!(names(dir.path()), ["hook"]);
    }

    #[test]
    fn a_given_mode_wins_and_directories_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/tool");
        write_atomically_with_mode(&path, b"#!/bin/sh\n", 0o755).unwrap();
        assert_eq!(mode(&path), 0o755);
        assert!(is_executable(&path));
        write_atomically_with_mode(&path, b"data", 0o600).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(!is_executable(&path));
        assert!(!is_executable(dir.path()));
    }

    #[test]
    fn a_new_file_gets_the_usual_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.json");
        write_atomically(&path, b"{}").unwrap();
        // 0o666 less a umask, which never takes the owner's read and write.
        assert_eq!(mode(&path) & 0o600, 0o600);
        assert_eq!(mode(&path) & 0o111, 0);
    }

    #[test]
    fn an_uncommitted_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, "old").unwrap();
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"half").unwrap();
        assert_eq!(
            names(dir.path()).len(),
            2,
            "the temporary file sits beside it"
        );
        drop(file);
        assert_eq!(names(dir.path()), ["x"]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
    }

    #[test]
    fn a_locked_directory_cannot_be_locked_twice() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_dir(dir.path()).unwrap();
        let other = File::open(dir.path().join(".lock")).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(lock);
        other.try_lock().unwrap();
    }

    #[test]
    fn finding_3_a_planted_lock_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let entry = dir.path().join("entry");
        std::fs::create_dir(&entry).unwrap();
        std::os::unix::fs::symlink(&victim, entry.join(".lock")).unwrap();
        let err = format!(
            "{:#}",
            lock_dir(&entry).err().expect("a symlink is refused")
        );
        assert!(
            err.contains("is a symbolic link") && err.contains("Remove it"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        // A lock file of our own is reused as it is, never truncated.
        std::fs::remove_file(entry.join(".lock")).unwrap();
        std::fs::write(entry.join(".lock"), "x").unwrap();
        drop(lock_dir(&entry).unwrap());
        assert_eq!(std::fs::read_to_string(entry.join(".lock")).unwrap(), "x");
    }

    #[test]
    fn removing_what_is_absent_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone");
        remove_if_present(&path).unwrap();
        std::fs::write(&path, "").unwrap();
        remove_if_present(&path).unwrap();
        assert!(!path.exists());
        assert!(remove_if_present(dir.path()).is_err());
    }
}
