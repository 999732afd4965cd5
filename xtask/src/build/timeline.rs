//! Where a build's packer run spent its time, read from packer's own output as it
//! streamed (each line with the time it arrived): starting the VM, boot to SSH,
//! each Ansible role of each playbook, the node rules, shutdown, the qcow2
//! conversion, the box. Pure: the lines and their times go in, phases come out, so
//! any Ansible and any Packer that prints these markers is measured the same way.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::table;

/// One phase and the seconds spent in it (summed when it recurs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
}

/// Where the time went: the phases in the order they first began, and the slowest
/// Ansible tasks (each named with its playbook and role, over all its loop items).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub phases: Vec<Phase>,
    pub slowest_tasks: Vec<Phase>,
}

/// How many of the slowest tasks a timeline keeps.
const SLOWEST: usize = 8;

impl Timeline {
    /// The timeline of packer output whose `n`th line arrived `arrivals[n]` after
    /// packer started; `ended` is when packer exited.
    pub fn read(output: &str, arrivals: &[Duration], ended: Duration) -> Timeline {
        let mut state = State::default();
        let mut phases = Spans::default();
        let mut tasks = Spans::default();
        let mut at = Duration::ZERO;
        let mut phase = "start VM".to_owned();
        let mut task: Option<String> = None;
        for (line, &arrived) in output.lines().zip(arrivals) {
            let Some((next_phase, next_task)) = state.classify(line) else {
                continue;
            };
            phases.add(&phase, arrived.saturating_sub(at));
            if let Some(task) = &task {
                tasks.add(task, arrived.saturating_sub(at));
            }
            (phase, task, at) = (next_phase, next_task, arrived);
        }
        phases.add(&phase, ended.saturating_sub(at));
        if let Some(task) = &task {
            tasks.add(task, ended.saturating_sub(at));
        }
        let mut slowest_tasks = tasks.0;
        slowest_tasks.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        slowest_tasks.truncate(SLOWEST);
        Timeline {
            phases: phases.0,
            slowest_tasks,
        }
    }

    /// Seconds spent in the phases whose name `matches`.
    pub fn seconds_in(&self, matches: impl Fn(&str) -> bool) -> f64 {
        self.phases
            .iter()
            .filter(|p| matches(&p.name))
            .map(|p| p.seconds)
            .sum()
    }

    /// The phases and the slowest tasks as tables, each row with its share of `total`
    /// seconds (the whole build).
    pub fn render(&self, total: f64) -> String {
        let rows = |phases: &[Phase]| -> Vec<Vec<String>> {
            phases
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        format!("{:.1}s", p.seconds),
                        format!("{:.0}%", 100.0 * p.seconds / total.max(f64::EPSILON)),
                    ]
                })
                .collect()
        };
        format!(
            "{}\n{}",
            table::render(&["build phase", "time", "share"], &rows(&self.phases)),
            table::render(
                &["slowest task", "time", "share"],
                &rows(&self.slowest_tasks)
            )
        )
    }
}

/// Durations summed by name, in the order each name first appeared.
#[derive(Default)]
struct Spans(Vec<Phase>);

impl Spans {
    fn add(&mut self, name: &str, took: Duration) {
        let seconds = took.as_secs_f64();
        match self.0.iter_mut().find(|p| p.name == name) {
            Some(phase) => phase.seconds += seconds,
            None => self.0.push(Phase {
                name: name.to_owned(),
                seconds,
            }),
        }
    }
}

/// What the lines so far said: which playbook Ansible runs.
#[derive(Default)]
struct State {
    playbook: String,
}

impl State {
    /// The phase (and Ansible task, if any) that begins at `line`, or `None` when
    /// the line begins nothing.
    fn classify(&mut self, line: &str) -> Option<(String, Option<String>)> {
        let line = line.trim();
        if let Some(command) = line.split("Executing Ansible: ").nth(1) {
            let playbook = command.rsplit('/').next().unwrap_or(command);
            self.playbook = playbook.trim().to_owned();
            return Some((format!("ansible {}: start", self.playbook), None));
        }
        if let Some(task) = ansible_task(line) {
            let role = task.split_once(" : ").map_or("play", |(role, _)| role);
            let phase = format!("ansible {}: {role}", self.playbook);
            return Some((phase, Some(format!("{}: {task}", self.playbook))));
        }
        if line.contains("PLAY RECAP") {
            return Some((format!("ansible {}: end", self.playbook), None));
        }
        let phase = packer_step(line)?;
        Some((phase.to_owned(), None))
    }
}

/// The task a line of Ansible's output starts (`TASK [role : name]`, a handler,
/// fact gathering), if it starts one.
fn ansible_task(line: &str) -> Option<&str> {
    let line = line.strip_prefix("qemu: ").unwrap_or(line);
    let rest = line
        .strip_prefix("TASK [")
        .or_else(|| line.strip_prefix("RUNNING HANDLER ["))?;
    rest.split_once(']').map(|(task, _)| task)
}

/// The packer step a line of packer's own output starts, if it starts one.
fn packer_step(line: &str) -> Option<&'static str> {
    const STEPS: &[(&str, &str)] = &[
        ("Waiting for SSH to become available", "boot to SSH"),
        ("Connected to SSH", "ansible start"),
        ("Uploading ", "node rules"),
        ("Provisioning with shell script", "node rules"),
        ("Gracefully halting virtual machine", "shutdown"),
        ("Converting hard drive", "qcow2 conversion"),
        ("Running post-processor: manifest", "manifest"),
        ("Running post-processor: vagrant", "box"),
    ];
    if !line.starts_with("==> ") {
        return None;
    }
    STEPS
        .iter()
        .find(|(marker, _)| line.contains(marker))
        .map(|(_, phase)| *phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
==> qemu: Copying hard drive...
==> qemu: Waiting for SSH to become available...
==> qemu: Connected to SSH!
==> qemu: Provisioning with Ansible...
==> qemu: Executing Ansible: ansible-playbook -e x=1 /work/images/capi/ansible/node.yml
    qemu: TASK [setup : Read /etc/os-release] ***
    qemu: ok: [default]
    qemu: TASK [containerd : Look for each binary] ***
    qemu: RUNNING HANDLER [containerd : Restart containerd] ***
    qemu: PLAY RECAP *****
==> qemu: Executing Ansible: ansible-playbook /work/images/capi/ansible/sysprep.yml
    qemu: TASK [setup : Read /etc/os-release] ***
==> qemu: Uploading /work/node-rules => /tmp
==> qemu: Provisioning with shell script: /tmp/packer-shell1
==> qemu: Gracefully halting virtual machine...
==> qemu: Converting hard drive...
==> qemu: Running post-processor: manifest
==> qemu: Running post-processor: vagrant
==> qemu (vagrant): Creating a dummy Vagrant box to ensure the host system can create one correctly
Build 'qemu' finished.
";

    fn secs(s: &[u64]) -> Vec<Duration> {
        s.iter().map(|&s| Duration::from_secs(s)).collect()
    }

    #[test]
    fn each_phase_lasts_until_the_next_begins() {
        let arrivals = secs(&[
            0, 2, 10, 10, 11, 12, 13, 20, 30, 31, 32, 35, 40, 41, 50, 52, 60, 61, 62, 70,
        ]);
        let timeline = Timeline::read(OUTPUT, &arrivals, Duration::from_secs(75));
        let phases: Vec<(&str, f64)> = timeline
            .phases
            .iter()
            .map(|p| (p.name.as_str(), p.seconds))
            .collect();
        assert_eq!(
            phases,
            [
                ("start VM", 2.0),
                ("boot to SSH", 8.0),
                ("ansible start", 1.0),
                ("ansible node.yml: start", 1.0),
                ("ansible node.yml: setup", 8.0),
                ("ansible node.yml: containerd", 11.0),
                ("ansible node.yml: end", 1.0),
                ("ansible sysprep.yml: start", 3.0),
                ("ansible sysprep.yml: setup", 5.0),
                ("node rules", 10.0),
                ("shutdown", 2.0),
                ("qcow2 conversion", 8.0),
                ("manifest", 1.0),
                ("box", 14.0),
            ]
        );
        let total: f64 = phases.iter().map(|(_, s)| s).sum();
        assert_eq!(total, 75.0, "the phases cover the whole run");
        assert_eq!(timeline.seconds_in(|p| p.starts_with("ansible")), 30.0);
        let slowest = &timeline.slowest_tasks[0];
        assert_eq!(
            (slowest.name.as_str(), slowest.seconds),
            ("node.yml: containerd : Look for each binary", 10.0)
        );
    }
}
