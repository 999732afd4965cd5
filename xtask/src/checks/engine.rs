//! Running a command's checks: each check's tools are found first (a missing tool
//! makes it "not run", never "passed"), independent checks run in parallel up to
//! `--jobs`, passes are remembered in a content-hash cache under target/, and one
//! result type prints as a table for people or as JSON for CI.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use xshell::Shell;

use super::pass_cache::{probe_tools, tool_identity, Cache};
use crate::output::Format;
use crate::toolchain::tools::{Probe, Status};
use crate::workspace;

/// The options every checking command shares.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CheckOptions {
    /// Check the repository at DIR instead of this one: another checkout, or a copy
    /// of the image definitions laid out as DIR/images/capi.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// How many checks run at once (default: the number of cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<NonZeroUsize>,
    /// How to report: `text` for people (problems, then a summary table), `json` for
    /// CI (on stdout).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Run every check, even one whose inputs and tools are unchanged since it last
    /// passed (passes are remembered under target/xtask-cache).
    #[arg(long)]
    pub no_cache: bool,
    /// Exit 0 even if a check could not run because its tool is missing (the check
    /// is still reported as not run).
    #[arg(long)]
    pub allow_missing: bool,
}

impl CheckOptions {
    /// The repository to check, made absolute.
    pub fn root(&self) -> anyhow::Result<PathBuf> {
        match &self.root {
            None => Ok(workspace::project_root()),
            Some(dir) => dir
                .canonicalize()
                .with_context(|| format!("--root {}", dir.display())),
        }
    }
}

/// One thing a check found wrong, where it is when that is known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Relative to the checked repository's root.
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    /// More lines for a person: the offending line, a tool's own output.
    pub detail: Option<String>,
}

impl Problem {
    pub fn new(message: impl Into<String>) -> Problem {
        Problem {
            file: None,
            line: None,
            column: None,
            message: message.into(),
            detail: None,
        }
    }

    pub fn in_file(mut self, file: impl Into<String>) -> Problem {
        self.file = Some(file.into());
        self
    }

    pub fn at(mut self, line: usize, column: Option<usize>) -> Problem {
        self.line = Some(line);
        self.column = column;
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Problem {
        let detail = detail.into();
        self.detail = (!detail.trim().is_empty()).then_some(detail);
        self
    }
}

/// What a check's body found.
#[derive(Debug)]
pub enum Outcome {
    Pass {
        notes: Vec<String>,
    },
    Fail {
        problems: Vec<Problem>,
        notes: Vec<String>,
    },
    /// The body found it cannot run (a missing component the tool table does not
    /// know, such as rustfmt).
    NotRun {
        reason: String,
        hint: Option<String>,
    },
}

impl Outcome {
    /// Pass when `problems` is empty, else Fail.
    pub fn from_problems(problems: Vec<Problem>, notes: Vec<String>) -> Outcome {
        if problems.is_empty() {
            Outcome::Pass { notes }
        } else {
            Outcome::Fail { problems, notes }
        }
    }
}

/// The tools a running check may use, found on PATH.
pub struct Tools(BTreeMap<&'static str, PathBuf>);

impl Tools {
    /// Where `program` is; only for programs the check declared.
    pub fn path(&self, program: &str) -> &Path {
        self.0
            .get(program)
            .unwrap_or_else(|| panic!("the check did not declare that it needs {program}"))
    }
}

type Body = Box<dyn Fn(&Shell, &Tools) -> anyhow::Result<Outcome> + Send + Sync>;

/// One independent check.
pub struct Check {
    pub name: &'static str,
    /// What it checks: a build target, a file, a set of files.
    pub target: String,
    /// The programs it needs, from `tools::TOOLS`.
    tools: Vec<&'static str>,
    /// The files whose content decides its result (relative to `root`) and anything
    /// else that does; `None` when it must always run.
    cache_inputs: Option<(PathBuf, Vec<PathBuf>, Vec<String>)>,
    /// Start it early: it takes longest.
    slow: bool,
    body: Body,
}

impl Check {
    pub fn new(
        name: &'static str,
        target: impl Into<String>,
        body: impl Fn(&Shell, &Tools) -> anyhow::Result<Outcome> + Send + Sync + 'static,
    ) -> Check {
        Check {
            name,
            target: target.into(),
            tools: Vec::new(),
            cache_inputs: None,
            slow: false,
            body: Box::new(body),
        }
    }

    pub fn needs(mut self, programs: &[&'static str]) -> Check {
        self.tools.extend_from_slice(programs);
        self
    }

    /// Its result depends only on these files under `root` (directories count with
    /// every file below them), its tools' versions and `salt`: a pass is reused
    /// while all of them are unchanged.
    pub fn cached(mut self, root: &Path, files: Vec<PathBuf>, salt: Vec<String>) -> Check {
        self.cache_inputs = Some((root.to_path_buf(), files, salt));
        self
    }

    pub fn slow(mut self) -> Check {
        self.slow = true;
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    Fail,
    NotRun,
}

/// How one check ended.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub target: String,
    pub result: Verdict,
    pub seconds: f64,
    /// Passed before with the same inputs and tools; not run again.
    pub cached: bool,
    /// Its tool is optional: not running it fails nothing.
    pub optional: bool,
    pub problems: Vec<Problem>,
    pub notes: Vec<String>,
    /// Why it did not run.
    pub reason: Option<String>,
    /// What makes it run.
    pub hint: Option<String>,
}

/// Runs `checks`, `jobs` at a time, and returns their results in the order given.
pub fn run(sh: &Shell, checks: Vec<Check>, options: &CheckOptions) -> Vec<CheckResult> {
    let jobs = options
        .jobs
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    let cache = Cache::open();
    let mut programs: Vec<&'static str> = checks.iter().flat_map(|c| c.tools.clone()).collect();
    programs.sort_unstable();
    programs.dedup();
    // Tool versions are remembered by the binary's identity even with --no-cache,
    // which is about checks: a reinstalled tool is a different file.
    let probes = probe_tools(sh, &programs, Some(&cache));
    let cache = (!options.no_cache).then_some(cache);

    // Slow checks start first; results keep the given order.
    let mut order: Vec<usize> = (0..checks.len()).collect();
    order.sort_by_key(|&i| !checks[i].slow);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<CheckResult>>> = Mutex::new(vec![None; checks.len()]);
    let progress = std::io::stderr().is_terminal() && options.format == Format::Text;
    let (checks, order, next, done, results, probes, cache) = (
        &checks,
        &order,
        &next,
        &done,
        &results,
        &probes,
        cache.as_ref(),
    );
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(checks.len()) {
            let sh = sh.clone();
            scope.spawn(move || loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                let Some(&index) = order.get(n) else { break };
                let result = run_one(&sh, &checks[index], probes, cache);
                results.lock().expect("a check thread panicked")[index] = Some(result);
                let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                if progress {
                    eprint!("\r\x1b[2K[{finished}/{}] checks done", checks.len());
                }
            });
        }
    });
    if progress {
        eprint!("\r\x1b[2K");
    }
    let finished = std::mem::take(&mut *results.lock().expect("a check thread panicked"));
    finished
        .into_iter()
        .map(|r| r.expect("every check ran"))
        .collect()
}

fn run_one(
    sh: &Shell,
    check: &Check,
    probes: &BTreeMap<&'static str, Probe>,
    cache: Option<&Cache>,
) -> CheckResult {
    let started = Instant::now();
    let mut result = CheckResult::not_run(check.name, &check.target);
    let unusable: Vec<&Probe> = check
        .tools
        .iter()
        .map(|program| &probes[program])
        .filter(|probe| !probe.usable())
        .collect();
    if !unusable.is_empty() {
        result.optional = unusable.iter().all(|p| p.optional);
        result.reason = Some(why_unusable(&unusable));
        result.hint = Some(
            unusable
                .iter()
                .filter_map(|p| p.hint.clone())
                .collect::<Vec<_>>()
                .join(" && "),
        );
        return result;
    }

    let key = cache.and_then(|cache| cache_key(check, probes, cache, &mut result.notes));
    if let (Some(cache), Some(key)) = (cache, &key) {
        if cache.passed(key) {
            result.result = Verdict::Pass;
            result.cached = true;
            result.seconds = round(started.elapsed().as_secs_f64());
            return result;
        }
    }

    let tools = Tools(
        check
            .tools
            .iter()
            .filter_map(|program| Some((*program, probes[program].path.clone()?)))
            .collect(),
    );
    let outcome = (check.body)(sh, &tools);
    if let (Ok(Outcome::Pass { .. }), Some(cache), Some(key)) = (&outcome, cache, &key) {
        cache.remember_pass(key);
    }
    result.record(outcome);
    result.seconds = round(started.elapsed().as_secs_f64());
    result
}

/// Why a check cannot run with these tools, one reason per tool.
fn why_unusable(unusable: &[&Probe]) -> String {
    unusable
        .iter()
        .map(|p| match &p.status {
            Status::Missing => format!("{} is not installed", p.tool),
            Status::TooOld => format!(
                "{} {} is older than {}",
                p.tool,
                p.version.map(|v| v.to_string()).unwrap_or_default(),
                p.minimum.map(|v| v.to_string()).unwrap_or_default()
            ),
            Status::Unusable(why) => format!("{}: {why}", p.tool),
            Status::Ok => unreachable!("only unusable tools are given"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The pass-cache key of `check`, if it is cached; when its inputs cannot be read,
/// a note says so and the check simply runs.
fn cache_key(
    check: &Check,
    probes: &BTreeMap<&'static str, Probe>,
    cache: &Cache,
    notes: &mut Vec<String>,
) -> Option<String> {
    let inputs = check.cache_inputs.as_ref()?;
    let tools: Vec<String> = check
        .tools
        .iter()
        .map(|program| tool_identity(&probes[program]))
        .collect();
    match cache.key((check.name, &check.target), &tools, inputs) {
        Ok(key) => Some(key),
        Err(err) => {
            notes.push(format!("not cached: {err:#}"));
            None
        }
    }
}

impl CheckResult {
    /// A result for `check` on `target` that has not run (yet).
    pub fn not_run(check: &str, target: &str) -> CheckResult {
        CheckResult {
            check: check.to_owned(),
            target: target.to_owned(),
            result: Verdict::NotRun,
            seconds: 0.0,
            cached: false,
            optional: false,
            problems: Vec::new(),
            notes: Vec::new(),
            reason: None,
            hint: None,
        }
    }

    /// Takes in what the check's body found.
    fn record(&mut self, outcome: anyhow::Result<Outcome>) {
        match outcome {
            Ok(Outcome::Pass { notes }) => {
                self.result = Verdict::Pass;
                self.notes.extend(notes);
            }
            Ok(Outcome::Fail { problems, notes }) => {
                self.result = Verdict::Fail;
                self.problems = problems;
                self.notes.extend(notes);
            }
            Ok(Outcome::NotRun { reason, hint }) => {
                self.reason = Some(reason);
                self.hint = hint;
            }
            Err(err) => self.reason = Some(format!("{err:#}")),
        }
    }
}

/// Seconds rounded to milliseconds, as every report shows them.
pub fn round(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}
