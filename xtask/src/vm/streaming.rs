//! Long-running external commands (packer, vagrant): their output streams live to
//! stderr, each line under a prefix, and is kept for error messages; Ctrl-C is
//! forwarded to them as SIGINT so they can stop their VMs, and only then does the
//! xtask go on to clean up its own files.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context;

/// Set once the user pressed Ctrl-C (or the process got SIGINT/SIGTERM).
fn interrupted_flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Registering only fails for forbidden signals, which these are not.
            signal_hook::flag::register(signal, flag.clone())
                .expect("registering a signal handler");
        }
        flag
    })
}

/// From now on, Ctrl-C sets a flag instead of killing the xtask outright.
pub fn catch_interrupts() {
    interrupted_flag();
}

/// Whether Ctrl-C was pressed since [`catch_interrupts`].
pub fn interrupted() -> bool {
    interrupted_flag().load(Ordering::SeqCst)
}

/// How a streamed command ended.
pub struct Finished {
    pub success: bool,
    /// Its stdout and stderr, interleaved as they came.
    pub output: String,
}

/// Runs `program args...` in `dir` with `env` added, echoing each output line to
/// stderr as `prefix | line` (or not at all when `prefix` is `None`) and
/// optionally appending it to `log`. On Ctrl-C the command gets SIGINT and is
/// waited for.
pub fn run(
    program: &Path,
    args: &[OsString],
    dir: &Path,
    env: &[(&str, OsString)],
    prefix: Option<&str>,
    log: Option<&Path>,
) -> anyhow::Result<Finished> {
    catch_interrupts();
    let mut expression = duct::cmd(program, args)
        .dir(dir)
        .stderr_to_stdout()
        .stdin_null()
        .unchecked();
    for (key, value) in env {
        expression = expression.env(key, value);
    }
    let reader = expression
        .reader()
        .with_context(|| format!("starting {}", program.display()))?;
    let pids = reader.pids();
    let mut log_file = match log {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => None,
    };

    // A watcher forwards Ctrl-C to the child while the main thread reads lines.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut forwarded = false;
            while !done.load(Ordering::SeqCst) {
                if !forwarded && interrupted() {
                    for &pid in &pids {
                        // SAFETY: kill(2) with a pid we started and a valid signal.
                        unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
                    }
                    forwarded = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        })
    };

    let mut output = String::new();
    let mut lines = BufReader::new(&reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                // Progress bars redraw with carriage returns: keep the final state.
                let text = text
                    .trim_end_matches(['\n', '\r'])
                    .rsplit('\r')
                    .next()
                    .unwrap_or("");
                if let Some(prefix) = prefix {
                    eprintln!("{prefix} | {text}");
                }
                if let Some(file) = log_file.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(file, "{text}");
                }
                output.push_str(text);
                output.push('\n');
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => {
                done.store(true, Ordering::SeqCst);
                let _ = watcher.join();
                return Err(err)
                    .with_context(|| format!("reading the output of {}", program.display()));
            }
        }
    }
    let status = reader
        .try_wait()
        .context("collecting the exit status")?
        .map(|o| o.status.success());
    done.store(true, Ordering::SeqCst);
    let _ = watcher.join();
    Ok(Finished {
        success: status.unwrap_or(false),
        output,
    })
}

/// The last `n` lines of `text`, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_keeps_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let args: Vec<OsString> = vec!["-c".into(), "echo one; echo two >&2; exit 3".into()];
        let finished = run(
            Path::new("/bin/sh"),
            &args,
            dir.path(),
            &[],
            None,
            Some(&log),
        )
        .unwrap();
        assert!(!finished.success);
        assert_eq!(finished.output, "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\n");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
