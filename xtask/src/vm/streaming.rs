//! Long-running external commands (packer, vagrant): their output streams live to
//! stderr, each line under a prefix, and is kept for error messages; Ctrl-C is
//! forwarded to them as SIGINT so they can stop their VMs, and only then does the
//! xtask go on to clean up its own files.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The signals that count as Ctrl-C.
const CAUGHT: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// Ctrl-C presses (SIGINT or SIGTERM) that arrived while they were caught.
static PRESSES: AtomicUsize = AtomicUsize::new(0);

/// How many [`CatchInterrupts`] are alive, and the handling the first one replaced.
struct Catching {
    depth: usize,
    previous: Option<[libc::sigaction; 2]>,
}

static CATCHING: Mutex<Catching> = Mutex::new(Catching {
    depth: 0,
    previous: None,
});

extern "C" fn count_press(_signal: libc::c_int) {
    // Async-signal-safe: one atomic add, nothing else.
    PRESSES.fetch_add(1, Ordering::SeqCst);
}

/// While one of these lives, Ctrl-C is counted instead of ending the xtask, so a
/// streamed command can stop its VMs and the caller can clean up. Dropping the last
/// one restores the handling from before (normally: Ctrl-C ends the process), so a
/// download or a `[y/N]` prompt after a streamed command stops on Ctrl-C again.
#[must_use = "Ctrl-C is caught only while the guard lives"]
pub struct CatchInterrupts(());

/// From now until the guard is dropped, Ctrl-C sets [`interrupted`] instead of
/// killing the xtask outright.
pub fn catch_interrupts() -> CatchInterrupts {
    let mut catching = CATCHING.lock().unwrap_or_else(PoisonError::into_inner);
    if catching.depth == 0 {
        let handler = count_press as extern "C" fn(libc::c_int) as libc::sighandler_t;
        catching.previous = Some(CAUGHT.map(|signal| set_action(signal, handler)));
    }
    catching.depth += 1;
    CatchInterrupts(())
}

impl Drop for CatchInterrupts {
    fn drop(&mut self) {
        let mut catching = CATCHING.lock().unwrap_or_else(PoisonError::into_inner);
        catching.depth -= 1;
        if catching.depth == 0 {
            if let Some(previous) = catching.previous.take() {
                for (signal, action) in CAUGHT.into_iter().zip(previous) {
                    // SAFETY: puts back an action sigaction(2) itself returned.
                    unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
                }
            }
        }
    }
}

/// Makes `handler` the action for `signal`, returning the action it replaced.
fn set_action(signal: libc::c_int, handler: libc::sighandler_t) -> libc::sigaction {
    // SAFETY: zeroed sigaction structs are valid; the handler only adds to an atomic.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        // Reads interrupted by Ctrl-C go on; the watcher thread acts on the press.
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, &action, &mut previous);
        previous
    }
}

/// Whether Ctrl-C was pressed while it was caught.
pub fn interrupted() -> bool {
    PRESSES.load(Ordering::SeqCst) > 0
}

/// How a streamed command ended.
pub struct Finished {
    pub success: bool,
    /// Its stdout and stderr, interleaved as they came.
    pub output: String,
    /// When each line of `output` arrived, counted from the command's start: the
    /// build's timeline (`build::timeline`) is read from these.
    pub arrivals: Vec<Duration>,
}

/// Runs `program args...` in `dir` with `env` added, echoing each output line to
/// stderr as `prefix | line` (or not at all when `prefix` is `None`) and
/// optionally appending it to `log`. The first Ctrl-C (of the whole run) is passed
/// on to the command as SIGINT, so it can stop its VMs, and waited for; any later
/// one, the user insisting, kills the command and fails, so the caller cleans up
/// and the process ends.
pub fn run(
    program: &Path,
    args: &[OsString],
    dir: &Path,
    env: &[(&str, OsString)],
    prefix: Option<&str>,
    log: Option<&Path>,
) -> anyhow::Result<Finished> {
    let _interrupts = catch_interrupts();
    let started = Instant::now();
    // The command leads a process group of its own, and Ctrl-C goes to that whole
    // group: Packer's wrapper process does not pass SIGINT on to the packer that
    // does the work, which only a terminal's Ctrl-C to the group would reach.
    let mut expression = duct::cmd(program, args)
        .dir(dir)
        .stderr_to_stdout()
        .stdin_null()
        .unchecked()
        .before_spawn(|command| {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
            Ok(())
        });
    for (key, value) in env {
        expression = expression.env(key, value);
    }
    let reader = expression
        .reader()
        .with_context(|| format!("starting {}", program.display()))?;
    let mut log_file = open_log(log)?;
    let watcher = PressWatcher::start(reader.pids());
    let (output, arrivals) = match echo_lines(&reader, prefix, log_file.as_mut(), started) {
        Ok(lines) => lines,
        Err(err) => {
            watcher.stop();
            return Err(err)
                .with_context(|| format!("reading the output of {}", program.display()));
        }
    };
    let status = reader.try_wait();
    let killed = watcher.stop();
    let status = status
        .context("collecting the exit status")?
        .map(|o| o.status.success());
    if killed {
        anyhow::bail!(
            "interrupted again: stopped {} without waiting for it",
            program.display()
        );
    }
    Ok(Finished {
        success: status.unwrap_or(false),
        output,
        arrivals,
    })
}

/// `log` opened for appending, if there is one.
fn open_log(log: Option<&Path>) -> anyhow::Result<Option<std::fs::File>> {
    let Some(path) = log else {
        return Ok(None);
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(Some(file))
}

/// Reads `reader` to its end, echoing and logging each line; returns the lines and
/// when each arrived after `started`.
fn echo_lines(
    reader: &duct::ReaderHandle,
    prefix: Option<&str>,
    mut log_file: Option<&mut std::fs::File>,
    started: Instant,
) -> std::io::Result<(String, Vec<Duration>)> {
    let mut output = String::new();
    let mut arrivals = Vec::new();
    let mut lines = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line) {
            Ok(0) => return Ok((output, arrivals)),
            Ok(_) => {
                arrivals.push(started.elapsed());
                let text = String::from_utf8_lossy(&line);
                // A mirror URL's credentials never reach the screen or the log.
                let text = crate::net::credentials::redact(final_state(&text));
                if let Some(prefix) = prefix {
                    eprintln!("{prefix} | {text}");
                }
                if let Some(file) = log_file.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(file, "{text}");
                }
                output.push_str(&text);
                output.push('\n');
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
}

/// A line without its ending, as it finally looks: progress bars redraw with
/// carriage returns, and only the last state is kept.
fn final_state(line: &str) -> &str {
    line.trim_end_matches(['\n', '\r'])
        .rsplit('\r')
        .next()
        .unwrap_or("")
}

/// A thread that acts on Ctrl-C presses made while a command runs, and only those:
/// a cleanup command run after an interrupted one is not stopped at once. The first
/// press sends the command's process group SIGINT, any later one SIGKILL.
struct PressWatcher {
    done: Arc<AtomicBool>,
    killed: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl PressWatcher {
    fn start(pids: Vec<u32>) -> PressWatcher {
        let done = Arc::new(AtomicBool::new(false));
        let killed = Arc::new(AtomicBool::new(false));
        let thread = {
            let (done, killed) = (done.clone(), killed.clone());
            let mut handled = PRESSES.load(Ordering::SeqCst);
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let presses = PRESSES.load(Ordering::SeqCst);
                    if presses > handled {
                        handled = presses;
                        let signal = if presses >= 2 {
                            killed.store(true, Ordering::SeqCst);
                            libc::SIGKILL
                        } else {
                            libc::SIGINT
                        };
                        for &pid in &pids {
                            // SAFETY: kill(2) of the process group a child we started
                            // leads (its pid), with a valid signal.
                            unsafe { libc::kill(-(pid as libc::pid_t), signal) };
                        }
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            })
        };
        PressWatcher {
            done,
            killed,
            thread,
        }
    }

    /// Stops watching; whether the command was killed.
    fn stop(self) -> bool {
        self.done.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        self.killed.load(Ordering::SeqCst)
    }
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
        assert_eq!(finished.arrivals.len(), 2, "one arrival time per line");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\n");
    }

    /// Set in the environment of the child process the test below starts.
    const CHILD: &str = "STREAMING_TEST_CHILD";

    #[test]
    fn finding_11_ctrl_c_ends_the_process_again_after_a_streamed_command() {
        if std::env::var_os(CHILD).is_some() {
            // The child: one streamed command, then an ordinary wait, as before a
            // download or a prompt.
            let args: Vec<OsString> = vec!["0".into()];
            let finished = run(
                Path::new("/bin/sleep"),
                &args,
                Path::new("/"),
                &[],
                None,
                None,
            );
            assert!(finished.unwrap().success);
            println!("streamed");
            std::thread::sleep(std::time::Duration::from_secs(30));
            return;
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "vm::streaming::tests::finding_11_ctrl_c_ends_the_process_again_after_a_streamed_command",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let streamed = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .any(|line| line.unwrap() == "streamed");
        assert!(streamed, "the child never ran its streamed command");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.and_then(|s| s.signal()),
            Some(libc::SIGINT),
            "Ctrl-C after a streamed command must end the process"
        );
    }

    #[test]
    fn a_redrawn_line_keeps_its_final_state() {
        assert_eq!(final_state("10%\r50%\r100%\n"), "100%");
        assert_eq!(final_state("plain\r\n"), "plain");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
