//! `cargo xtask test`: the test command that sets itself up. It is `deps --install
//! --for test` (every tool the suite drives, the rehearsal's included), then the
//! whole suite with the VM tests, then one summary line.

use std::io::{BufRead, BufReader, Write};
use std::time::Instant;

use anyhow::Context;
use xshell::Shell;

use crate::commands::deps::{self, DepsArgs};
use crate::error::Exit;
use crate::install::{InstallOptions, DEFAULT_RETRIES};
use crate::output::Format;
use crate::toolchain::tools::Purpose;
use crate::{nested_cargo, workspace};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
The suite is `cargo test --workspace --no-fail-fast -- --include-ignored`: the VM
tests (qemu, libvirt, the rehearsal, a fresh Debian root) need root and take a while.
Arguments after `--` go to the test binaries instead of --include-ignored, e.g.
`cargo xtask test -- deps_` runs the tests whose names contain `deps_`, without the
ignored ones.")]
pub struct TestArgs {
    /// Run the package manager without asking (CI).
    #[arg(long, short = 'y')]
    yes: bool,
    /// Arguments for the test binaries [default: --include-ignored].
    #[arg(last = true, value_name = "TEST_ARGS")]
    test_args: Vec<String>,
}

pub fn run(sh: &Shell, args: &TestArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let set_up = DepsArgs {
        purpose: Some(Purpose::Test),
        format: Format::Text,
        install: true,
        yes: args.yes,
        retries: DEFAULT_RETRIES,
        options: InstallOptions::default(),
    };
    if let Err(err) = deps::run(sh, &set_up) {
        eprintln!("The set-up is incomplete (see above); the suite was not run.");
        return Err(err);
    }
    let set_up_time = started.elapsed();

    let mut test_args = args.test_args.clone();
    if test_args.is_empty() {
        test_args.push("--include-ignored".to_owned());
    }
    let mut argv: Vec<String> = ["test", "--workspace", "--no-fail-fast", "--"]
        .map(str::to_owned)
        .into();
    argv.extend(test_args);
    eprintln!("Running cargo {}", argv.join(" "));
    let suite_started = Instant::now();
    let mut cargo = std::process::Command::from(nested_cargo::command(sh).args(&argv));
    let mut child = cargo
        .current_dir(workspace::project_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let mut counts = Counts::default();
    let mut out = std::io::stdout().lock();
    let suite_output = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(suite_output).lines() {
        let line = line.context("reading cargo test's output")?;
        counts.add(&line);
        writeln!(out, "{line}").ok();
    }
    let success = child.wait().context("waiting for cargo test")?.success();
    writeln!(
        out,
        "\nset-up {:.0} s, suite {:.0} s",
        set_up_time.as_secs_f64(),
        suite_started.elapsed().as_secs_f64()
    )
    .ok();
    writeln!(out, "summary: {}", counts.line()).ok();
    if success {
        Ok(())
    } else {
        Err(Exit(1).into())
    }
}

/// The totals of every `test result:` line of a cargo test run.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Counts {
    /// Adds `test result: ok. 5 passed; 1 failed; 2 ignored; 0 measured; ...`.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }

    /// `12 passed, 1 failed, 3 skipped`: the closing line CI counts.
    fn line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.ignored
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_adds_every_test_binary() {
        let mut counts = Counts::default();
        for line in [
            "running 5 tests",
            "test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 123 filtered out; finished in 0.00s",
            "test result: FAILED. 40 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.12s",
            "test a::b ... ok",
        ] {
            counts.add(line);
        }
        assert_eq!(
            counts,
            Counts {
                passed: 45,
                failed: 2,
                ignored: 1
            }
        );
        assert_eq!(counts.line(), "45 passed, 2 failed, 1 skipped");
    }
}
