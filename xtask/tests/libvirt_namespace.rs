//! The private libvirt namespace dies with the process that made it: this test runs
//! itself again as a child process that starts the namespace (libvirtd and virtlogd,
//! no VM), SIGKILLs that child, and looks for survivors.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xtask::vm::libvirt_namespace::LibvirtNamespace;

/// Set in the child's environment: the state directory it gives the namespace.
const CHILD_STATE: &str = "LIBVIRT_NAMESPACE_TEST_STATE";

fn netns_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces, so split after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// `(pid, command name)` of every live process in `netns`.
fn processes_in(netns: &str) -> Vec<(u32, String)> {
    all_pids()
        .into_iter()
        .filter(|&pid| netns_of(pid).as_deref() == Some(netns))
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            (pid, comm.trim().to_owned())
        })
        .collect()
}

/// The network namespace of a descendant of `ancestor` that is not ours.
fn namespace_below(ancestor: u32) -> Option<String> {
    let own = netns_of(std::process::id());
    all_pids().into_iter().find_map(|pid| {
        let mut up = pid;
        while let Some(parent) = parent_of(up) {
            if parent == ancestor {
                return netns_of(pid).filter(|ns| Some(ns) != own.as_ref());
            }
            if parent <= 1 {
                break;
            }
            up = parent;
        }
        None
    })
}

#[test]
#[ignore = "needs root and libvirtd: starts a libvirtd of its own in a private namespace (no VM)"]
fn finding_1_the_namespace_dies_with_the_xtask() {
    if let Some(state) = std::env::var_os(CHILD_STATE) {
        // The child: start the namespace, say so, and wait to be killed.
        let _namespace = LibvirtNamespace::start(&PathBuf::from(state)).unwrap();
        println!("namespace started");
        std::thread::sleep(Duration::from_secs(120));
        panic!("the child was not killed within 120 s");
    }

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "finding_1_the_namespace_dies_with_the_xtask",
            "--exact",
            "--include-ignored",
            "--nocapture",
        ])
        .env(CHILD_STATE, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut started = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if line.unwrap() == "namespace started" {
            started = true;
            break;
        }
    }
    let netns = started.then(|| namespace_below(child.id())).flatten();
    let members = netns.as_deref().map(processes_in).unwrap_or_default();
    child.kill().unwrap();
    child.wait().unwrap();
    let netns = netns.expect("the child did not start the namespace (see its output above)");
    for daemon in ["libvirtd", "virtlogd"] {
        assert!(
            members.iter().any(|(_, comm)| comm == daemon),
            "{daemon} was not running in the namespace: {members:?}"
        );
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut survivors = processes_in(&netns);
    while !survivors.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        survivors = processes_in(&netns);
    }
    for (pid, _) in &survivors {
        // Leave nothing behind, even when the test fails.
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(
        survivors.is_empty(),
        "processes of the namespace survived the xtask's SIGKILL: {survivors:?}"
    );
    // The private tmpfs hid everything the namespace wrote from the host.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
#[ignore = "needs root and libvirtd: starts a libvirtd of its own in a private namespace (no VM)"]
fn dropping_the_namespace_ends_every_process_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let namespace = LibvirtNamespace::start(dir.path()).unwrap();
    let netns = namespace_below(std::process::id()).expect("no namespace below the test");
    assert!(!processes_in(&netns).is_empty());
    let started = Instant::now();
    drop(namespace);
    let survivors = processes_in(&netns);
    for (pid, _) in &survivors {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(survivors.is_empty(), "survivors: {survivors:?}");
    // libvirtd and virtlogd stop on SIGTERM; nothing waits for the 5 s SIGKILL.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
