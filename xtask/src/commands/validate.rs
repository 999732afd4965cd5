//! `cargo xtask validate`: is images/capi sound? Every JSON file parses, each build
//! target's var-file stack layers cleanly, `packer validate` accepts each target, the
//! playbooks pass `ansible-playbook --syntax-check` with the build's inventory and
//! extra vars, and the Ignition configs pass `ignition-validate`. `plan` is also
//! what `pre-commit` runs, on the staged files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::{anyhow, Context};
use clap::builder::PossibleValuesParser;
use sha2::{Digest, Sha512};
use xshell::{Shell, TempDir};

use crate::checks::engine::{self as checks, Check, CheckOptions, Outcome, Problem};
use crate::checks::source_tree::{Scope, SourceTree, CAPI};
use crate::checks::tool_output::{capture, relative_output};
use crate::install::{self, InstallOptions};
use crate::json_text::{self, Position};
use crate::packer::command;
use crate::packer::layering;
use crate::packer::targets::{self, BuildInput, BuildTarget, TARGETS};
use crate::packer::template::{self, AnsibleProvisioner, Finding, Template};
use crate::rules;
use crate::toolchain::tools::Purpose;
use crate::{build::key, error::Exit};

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// Check only this build target: its var files, its layering, `packer validate`
    /// and the playbooks it runs.
    #[arg(long, value_name = "TARGET", value_parser = PossibleValuesParser::new(targets::names()))]
    target: Option<String>,
    #[command(flatten)]
    options: CheckOptions,
    /// Do not install a missing packer or ansible into .local/ first; their checks are reported as not run.
    #[arg(long)]
    no_install: bool,
    #[command(flatten)]
    install: InstallOptions,
}

impl ValidateArgs {
    /// `validate --target <name>` with `options`: what `build-flatcar` runs first,
    /// after its own install step.
    pub fn for_target(name: &str, options: CheckOptions) -> ValidateArgs {
        ValidateArgs {
            target: Some(name.to_owned()),
            options,
            no_install: true,
            install: InstallOptions::default(),
        }
    }
}

pub fn run(sh: &Shell, args: &ValidateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = args.options.root()?;
    let tree = SourceTree::discover(&root)?;
    if !tree.has_capi() {
        eprintln!(
            "error: {} has no {CAPI}/packer: give --root a checkout of this project or a copy of its image definitions",
            root.display()
        );
        return Err(Exit(2).into());
    }
    if !args.no_install {
        install::install_missing(
            sh,
            Purpose::Validate,
            &args.install,
            install::DEFAULT_RETRIES,
        )?;
    }
    let targets: Vec<&'static BuildTarget> = match &args.target {
        Some(name) => vec![targets::target(name).expect("clap checked the name")],
        None => TARGETS.iter().collect(),
    };
    let checks = plan(&tree, &Scope::All, &targets);
    let results = checks::run(sh, checks, &args.options);
    crate::checks::report::report("validate", &root, &results, &args.options, started)
}

/// The validate checks for `targets` that concern the files in `scope`.
pub fn plan(tree: &SourceTree, scope: &Scope, targets: &[&'static BuildTarget]) -> Vec<Check> {
    let root = tree.root.clone();
    let capi = tree.capi();
    let whole = targets.len() == TARGETS.len();
    let mut checks = Vec::new();

    let json_files: Vec<PathBuf> = if whole {
        scope.filter(tree.capi_json())
    } else {
        let mut files: Vec<PathBuf> = targets
            .iter()
            .flat_map(|t| t.stack())
            .map(|f| Path::new(CAPI).join(f))
            .filter(|f| root.join(f).exists())
            .chain(tree.ignition_configs())
            .collect();
        files.sort();
        files.dedup();
        scope.filter(files)
    };
    if !json_files.is_empty() {
        checks.push(json_check(
            &root,
            json_files,
            whole && matches!(scope, Scope::All),
        ));
    }

    let placeholders: Arc<OnceLock<Result<Placeholders, String>>> = Arc::default();
    for &target in targets {
        let stack: Vec<PathBuf> = target.stack().map(|f| Path::new(CAPI).join(f)).collect();
        if !scope.touches(stack.iter().map(PathBuf::as_path)) {
            continue;
        }
        checks.push(layering_check(&capi, target, &stack, &root));
        checks.push(packer_check(&root, target, placeholders.clone()));
    }

    let ansible_in_scope = scope.touches(tree.ansible_files().iter().map(PathBuf::as_path));
    if ansible_in_scope {
        let templates: Vec<(&'static BuildTarget, Template)> = targets
            .iter()
            .filter_map(|&t| {
                let doc = template::load(&capi, t.template).ok()?;
                Some((t, Template::from_document(doc).0))
            })
            .collect();
        for playbook in tree.playbooks() {
            checks.push(syntax_check(&root, &playbook, &templates));
        }
    }

    for config in scope.filter(tree.ignition_configs()) {
        checks.push(ignition_check(&root, config));
    }

    // Every YAML file, not only what the syntax check loads: the roles' per-OS task
    // files are included at run time, so ansible-playbook never reads them here.
    let yaml_files = scope.filter(
        tree.yaml_files()
            .into_iter()
            .filter(|f| f.starts_with(CAPI))
            .collect(),
    );
    if !yaml_files.is_empty() {
        checks.push(yaml_check(&root, yaml_files));
    }
    let rule_targets: Vec<&'static BuildTarget> = targets
        .iter()
        .copied()
        .filter(|t| t.build_inputs.contains(&BuildInput::NodeRulesDir))
        .collect();
    let rules_inputs: Vec<PathBuf> = rules::FILES
        .iter()
        .map(|f| Path::new(CAPI).join(f.path))
        .chain(
            rule_targets
                .iter()
                .map(|t| Path::new(CAPI).join(t.template)),
        )
        .collect();
    if !rule_targets.is_empty() && scope.touches(rules_inputs.iter().map(PathBuf::as_path)) {
        checks.push(rules_check(&root, rule_targets, rules_inputs));
    }
    checks
}

fn yaml_check(root: &Path, files: Vec<PathBuf>) -> Check {
    let label = format!("{} files", files.len());
    let body_root = root.to_path_buf();
    let body_files = files.clone();
    Check::new("yaml", label, move |_, _| {
        let mut problems = Vec::new();
        for file in &body_files {
            let shown = file.display().to_string();
            let text = std::fs::read_to_string(body_root.join(file))
                .with_context(|| format!("reading {shown}"))?;
            if let Err(e) = rules::yaml::check_syntax(&text) {
                problems.push(
                    Problem::new(format!("YAML syntax error: {}", e.message))
                        .in_file(&shown)
                        .at(e.at.line, Some(e.at.column)),
                );
            }
        }
        Ok(Outcome::from_problems(problems, Vec::new()))
    })
    .cached(root, files, Vec::new())
}

/// The node rules: they parse, use only the supported goss subset, and name only
/// variables every target that runs them supplies.
fn rules_check(root: &Path, targets: Vec<&'static BuildTarget>, inputs: Vec<PathBuf>) -> Check {
    let capi = root.join(CAPI);
    let label = targets
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ");
    Check::new("node rules", label, move |_, _| {
        let mut problems = Vec::new();
        for target in &targets {
            let doc = template::load(&capi, target.template).map_err(|f| anyhow!("{f}"))?;
            let known = Template::from_document(doc)
                .0
                .variables
                .into_keys()
                .collect();
            for (file, p) in rules::problems(&capi, &known) {
                let problem = Problem::new(p.message)
                    .in_file(shown(file))
                    .at(p.at.line, Some(p.at.column));
                if !problems.contains(&problem) {
                    problems.push(problem);
                }
            }
        }
        Ok(Outcome::from_problems(problems, Vec::new()))
    })
    .cached(root, inputs, Vec::new())
}

/// The path of a file of images/capi relative to the root, as reports show it.
fn shown(capi_relative: &str) -> String {
    format!("{CAPI}/{capi_relative}")
}

fn finding_to_problem(finding: Finding) -> Problem {
    let problem = Problem::new(finding.message).in_file(shown(&finding.file));
    match finding.position {
        Some(Position { line, column }) => problem.at(line, Some(column)),
        None => problem,
    }
}

fn json_check(root: &Path, files: Vec<PathBuf>, whole_tree: bool) -> Check {
    let label = if whole_tree {
        format!("{CAPI} ({} files)", files.len())
    } else if files.len() == 1 {
        files[0].display().to_string()
    } else {
        format!("{} files", files.len())
    };
    let body_root = root.to_path_buf();
    let body_files = files.clone();
    Check::new("json", label, move |_, _| {
        let mut problems = Vec::new();
        for file in &body_files {
            let shown = file.display().to_string();
            let bytes =
                std::fs::read(body_root.join(file)).with_context(|| format!("reading {shown}"))?;
            let Ok(text) = String::from_utf8(bytes) else {
                problems.push(Problem::new("not UTF-8 text, so not JSON").in_file(&shown));
                continue;
            };
            match json_text::parse(&text) {
                Ok(_) => {
                    for duplicate in json_text::scan(&text).duplicate_keys {
                        problems.push(
                            Problem::new(format!(
                                "`{}` appears twice in the same object (first on line {}); only the last one counts",
                                duplicate.key, duplicate.first.line
                            ))
                            .in_file(&shown)
                            .at(duplicate.position.line, Some(duplicate.position.column)),
                        );
                    }
                }
                Err(err) => problems.push(
                    Problem::new(err.message)
                        .in_file(&shown)
                        .at(err.position.line, Some(err.position.column))
                        .with_detail(err.excerpt),
                ),
            }
        }
        Ok(Outcome::from_problems(problems, Vec::new()))
    })
    .cached(root, files, Vec::new())
}

fn layering_check(
    capi: &Path,
    target: &'static BuildTarget,
    stack: &[PathBuf],
    root: &Path,
) -> Check {
    let capi = capi.to_path_buf();
    Check::new("layering", target.name, move |_, _| {
        let (stack, mut findings) = layering::load_stack(&capi, target);
        findings.extend(layering::layer(target, &stack).1);
        let problems = findings.into_iter().map(finding_to_problem).collect();
        Ok(Outcome::from_problems(problems, Vec::new()))
    })
    .cached(root, stack.to_vec(), Vec::new())
}

/// Values for the variables only a build knows, good enough for `packer validate`:
/// a real (throwaway) SSH key, because the builder checks that it parses.
struct Placeholders {
    dir: TempDir,
    image: PathBuf,
    image_digest: String,
    private_key: PathBuf,
    ignition: PathBuf,
}

impl Placeholders {
    fn make(sh: &Shell) -> anyhow::Result<Placeholders> {
        let dir = sh
            .create_temp_dir()
            .context("creating a temporary directory")?;
        let image = dir.path().join("flatcar_production_qemu_image.img");
        std::fs::write(&image, b"").with_context(|| format!("writing {}", image.display()))?;
        let ignition = dir.path().join("ignition.json");
        std::fs::write(&ignition, b"{}\n")
            .with_context(|| format!("writing {}", ignition.display()))?;
        let key = key::generate(sh, dir.path(), "cargo-xtask-validate")?;
        // Packer's file provisioner checks that what it uploads exists.
        let node_rules = dir.path().join("node-rules");
        std::fs::create_dir(&node_rules)
            .with_context(|| format!("creating {}", node_rules.display()))?;
        let image_digest = crate::hex::encode(&Sha512::digest(b""));
        Ok(Placeholders {
            dir,
            image,
            image_digest,
            private_key: key.private_key,
            ignition,
        })
    }

    /// The stand-in for `input`; `None` keeps the var files' value (the release
    /// channel and version: `stable`, `current`).
    fn value(&self, input: BuildInput) -> Option<String> {
        let path = |p: &Path| p.display().to_string();
        match input {
            BuildInput::ImagePath => Some(path(&self.image)),
            BuildInput::ImageChecksum => Some(format!("sha512:{}", self.image_digest)),
            BuildInput::SshPrivateKeyFile => Some(path(&self.private_key)),
            BuildInput::IgnitionConfigPath => Some(path(&self.ignition)),
            BuildInput::Accelerator => Some("tcg".to_owned()),
            BuildInput::FlatcarChannel | BuildInput::FlatcarVersion => None,
            BuildInput::OutputDirectory => Some(path(&self.dir.path().join("output"))),
            BuildInput::NodeRulesDir => Some(path(&self.dir.path().join("node-rules"))),
        }
    }
}

fn packer_check(
    root: &Path,
    target: &'static BuildTarget,
    placeholders: Arc<OnceLock<Result<Placeholders, String>>>,
) -> Check {
    let capi = root.join(CAPI);
    let body_capi = capi.clone();
    // The argument vector's shape (the placeholder file's name aside) is part of
    // what decides the result.
    let shape: Vec<String> = command::args("validate", &[], target, &[Path::new("<generated>")])
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Check::new("packer validate", target.name, move |sh, tools| {
        let placeholders = placeholders
            .get_or_init(|| Placeholders::make(sh).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("making placeholder build inputs: {e}"))?;
        let values: Vec<(BuildInput, String)> = target
            .build_inputs
            .iter()
            .filter_map(|&input| Some((input, placeholders.value(input)?)))
            .collect();
        let var_file = placeholders
            .dir
            .path()
            .join(format!("{}.json", target.name));
        std::fs::write(&var_file, command::generated_var_file(&values))
            .with_context(|| format!("writing {}", var_file.display()))?;
        let args = command::args("validate", &[], target, &[&var_file]);
        let _dir = sh.push_dir(&body_capi);
        let ran = capture(
            sh.cmd(tools.path("packer"))
                .args(&args)
                .envs(command::ENV.iter().copied()),
        )?;
        let output = relative_output(&ran.output, &body_capi).replace(
            &placeholders.dir.path().display().to_string(),
            "<placeholders>",
        );
        let output = tidy_output(&output);
        if ran.success {
            let notes = output
                .lines()
                .filter(|l| l.to_lowercase().contains("warning"))
                .map(str::to_owned)
                .collect();
            return Ok(Outcome::Pass { notes });
        }
        let template = template::load(&body_capi, target.template)
            .ok()
            .map(|doc| Template::from_document(doc).0);
        let mut problems: Vec<Problem> = template
            .as_ref()
            .map(|t| command::locate_errors(&output, t))
            .unwrap_or_default()
            .into_iter()
            .map(finding_to_problem)
            .collect();
        if problems.is_empty() {
            problems.push(Problem::new("packer validate failed").in_file(shown(target.template)));
        }
        problems[0].detail = Some(output);
        Ok(Outcome::Fail {
            problems,
            notes: Vec::new(),
        })
    })
    .needs(&["packer", "ssh-keygen"])
    .cached(
        root,
        vec![
            PathBuf::from(CAPI).join("packer"),
            PathBuf::from(CAPI).join("ansible"),
        ],
        shape,
    )
}

/// A tool's output without trailing blanks and runs of empty lines.
fn tidy_output(text: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() && out.last().is_none_or(|l| l.is_empty()) {
            continue;
        }
        out.push(line);
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out.join("\n")
}

/// What `ansible-playbook --syntax-check` of one playbook gets: the inventory,
/// environment and extra vars the build's Packer provisioner would give it.
#[derive(Debug, PartialEq, Eq)]
struct AnsibleRun {
    /// Which target's provisioner it comes from.
    target: Option<&'static str>,
    inventory: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    notes: Vec<String>,
}

/// The playbook's run as the first target whose provisioner runs it would make it,
/// else as the first target's first ansible provisioner would.
fn ansible_run(
    playbook: &str,
    capi: &Path,
    templates: &[(&'static BuildTarget, Template)],
) -> AnsibleRun {
    let normal = |p: &str| p.trim_start_matches("./").to_owned();
    let chosen = templates
        .iter()
        .find_map(|(t, template)| {
            let p = template
                .ansible
                .iter()
                .find(|p| normal(&p.playbook_file) == playbook)?;
            Some((*t, template, p))
        })
        .or_else(|| {
            let (t, template) = templates.first()?;
            Some((*t, template, template.ansible.first()?))
        });
    let Some((target, template, provisioner)) = chosen else {
        return AnsibleRun {
            target: None,
            inventory: "default ansible_host=127.0.0.1\n".into(),
            args: Vec::new(),
            env: Vec::new(),
            notes: vec![
                "no build target runs this playbook: checked without the build's extra vars".into(),
            ],
        };
    };
    let (stack, _) = layering::load_stack(capi, target);
    let (values, _) = layering::layer(target, &stack);
    let mut notes = Vec::new();
    let render = |text: &str, notes: &mut Vec<String>| {
        layering::render(text, &values, &BTreeMap::new()).unwrap_or_else(|why| {
            notes.push(format!("passed `{text}` as it is: {why}"));
            text.to_owned()
        })
    };
    let AnsibleProvisioner {
        extra_arguments,
        env_vars,
        user,
        host_alias,
        groups,
        ..
    } = provisioner;
    let user = user.as_deref().map(|u| render(u, &mut notes));
    let mut inventory = format!("{host_alias} ansible_host=127.0.0.1 ansible_port=22");
    if let Some(user) = &user {
        inventory += &format!(" ansible_user={user}");
    }
    inventory.push('\n');
    for group in groups {
        inventory += &format!("[{group}]\n{host_alias}\n");
    }
    let builder = template.first_builder();
    // What Packer's ansible provisioner adds before the template's own arguments.
    let mut args = vec![
        "--extra-vars".to_owned(),
        format!(
            "packer_build_name={} packer_builder_type={} packer_http_addr=",
            builder.map_or("", |b| b.name.as_str()),
            builder.map_or("", |b| b.type_name.as_str())
        ),
    ];
    for argument in extra_arguments {
        match layering::render(argument, &values, &BTreeMap::new()) {
            Ok(rendered) => args.push(rendered),
            // Extra vars that cannot be worked out (a broken var file) are left out:
            // the roles' defaults stand in, so the syntax is still checked.
            Err(why) if matches!(args.last().map(String::as_str), Some("--extra-vars" | "-e")) => {
                args.pop();
                notes.push(format!("left out the extra vars `{argument}`: {why}"));
            }
            Err(why) => {
                notes.push(format!("passed `{argument}` as it is: {why}"));
                args.push(argument.clone());
            }
        }
    }
    let env = env_vars
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), render(v, &mut notes)))
        .collect();
    AnsibleRun {
        target: Some(target.name),
        inventory,
        args,
        env,
        notes,
    }
}

fn syntax_check(
    root: &Path,
    playbook: &Path,
    templates: &[(&'static BuildTarget, Template)],
) -> Check {
    let capi = root.join(CAPI);
    let in_capi = playbook
        .strip_prefix(CAPI)
        .expect("playbooks are under images/capi")
        .to_string_lossy()
        .into_owned();
    let run = ansible_run(&in_capi, &capi, templates);
    let mut inputs = vec![PathBuf::from(CAPI).join("ansible")];
    if let Some(target) = run.target.and_then(targets::target) {
        inputs.extend(target.stack().map(|f| Path::new(CAPI).join(f)));
    }
    inputs.push(PathBuf::from(CAPI).join("ansible.cfg"));
    let label = match run.target {
        Some(t) => format!("{} ({t})", playbook.display()),
        None => playbook.display().to_string(),
    };
    let salt = vec![
        run.inventory.clone(),
        run.args.join("\0"),
        format!("{:?}", run.env),
    ];
    let root_dir = root.to_path_buf();
    Check::new("syntax-check", label, move |sh, tools| {
        let scratch = sh
            .create_temp_dir()
            .context("creating a temporary directory")?;
        let inventory = scratch.path().join("inventory");
        std::fs::write(&inventory, &run.inventory)
            .with_context(|| format!("writing {}", inventory.display()))?;
        let _dir = sh.push_dir(&capi);
        let mut cmd = sh
            .cmd(tools.path("ansible-playbook"))
            .arg("--syntax-check")
            .arg("-i")
            .arg(&inventory)
            .args(&run.args)
            .arg(&in_capi)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_LOCAL_TEMP", scratch.path());
        for (key, value) in &run.env {
            cmd = cmd.env(key, value);
        }
        let ran = capture(cmd)?;
        let output = tidy_output(&relative_output(&ran.output, &root_dir));
        if ran.success {
            return Ok(Outcome::Pass {
                notes: run.notes.clone(),
            });
        }
        Ok(Outcome::Fail {
            problems: vec![ansible_problem(&output, &format!("{CAPI}/{in_capi}"))],
            notes: run.notes.clone(),
        })
    })
    .needs(&["ansible-playbook"])
    .cached(root, inputs, salt)
    .slow()
}

/// Ansible's error as a located problem: it names the file, line and column in
/// "The error appears to be in '<file>': line L, column C".
fn ansible_problem(output: &str, playbook: &str) -> Problem {
    let lines: Vec<&str> = output.lines().collect();
    let yaml_error = lines
        .iter()
        .position(|l| l.trim() == "Syntax Error while loading YAML.")
        .and_then(|i| lines[i + 1..].iter().find(|l| !l.trim().is_empty()))
        .map(|l| format!("YAML syntax error: {}", l.trim()));
    let message = yaml_error
        .or_else(|| {
            lines
                .iter()
                .find(|l| l.starts_with("ERROR!"))
                .map(|l| l.trim_start_matches("ERROR!").trim().to_owned())
        })
        .unwrap_or_else(|| "ansible-playbook --syntax-check failed".to_owned());
    let flat = output.replace('\n', " ");
    let located = flat.split("appears to be in '").nth(1).and_then(|rest| {
        let (file, rest) = rest.split_once("': line ")?;
        let (line, rest) = rest.split_once(", column ")?;
        let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Some((file.to_owned(), line.parse().ok()?, column.parse().ok()))
    });
    let problem = match located {
        // `<string>`: text that is not a file, such as an extra var.
        Some((file, line, column)) if !file.starts_with('<') => {
            Problem::new(message).in_file(file).at(line, column)
        }
        _ => Problem::new(message).in_file(playbook),
    };
    problem.with_detail(output)
}

fn ignition_check(root: &Path, config: PathBuf) -> Check {
    let path = root.join(&config);
    let shown = config.display().to_string();
    let label = shown.clone();
    Check::new("ignition-validate", label, move |sh, tools| {
        let ran = capture(sh.cmd(tools.path("ignition-validate")).arg(&path))?;
        let output = tidy_output(&relative_output(
            &ran.output,
            path.parent().unwrap_or(&path),
        ));
        let text = String::from_utf8_lossy(
            &std::fs::read(&path).with_context(|| format!("reading {shown}"))?,
        )
        .into_owned();
        let (problems, notes) = ignition_findings(&output, &text, &shown);
        if ran.success {
            return Ok(Outcome::Pass {
                notes: notes
                    .into_iter()
                    .chain(problems.iter().map(|p| p.message.clone()))
                    .collect(),
            });
        }
        let problems = if problems.is_empty() {
            vec![Problem::new("ignition-validate failed")
                .in_file(&shown)
                .with_detail(output)]
        } else {
            problems
        };
        Ok(Outcome::Fail {
            problems,
            notes: Vec::new(),
        })
    })
    .needs(&["ignition-validate"])
    .cached(root, vec![config], Vec::new())
}

/// ignition-validate's report as problems: `error at $.path, line L col C: message`
/// is located already; a config version it does not know is reported without a
/// place, so it is pinned to the config's `ignition.version`.
fn ignition_findings(output: &str, text: &str, shown: &str) -> (Vec<Problem>, Vec<String>) {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    for line in output.lines() {
        let located = ["error at ", "warning at "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (place, message) = rest.split_once(": ")?;
            let (_, position) = place.split_once(", line ")?;
            let (line_no, column) = position.split_once(" col ")?;
            Some((
                *prefix,
                line_no.parse::<usize>().ok()?,
                column.parse::<usize>().ok()?,
                message,
            ))
        });
        match located {
            Some((prefix, line_no, column, message)) => {
                let message = if prefix.starts_with("warning") {
                    format!("warning: {message}")
                } else {
                    message.to_owned()
                };
                let problem = Problem::new(message).in_file(shown);
                // Line 0 means "somewhere": the whole config did not parse.
                problems.push(if line_no > 0 {
                    problem.at(line_no, Some(column))
                } else {
                    problem
                });
            }
            None if line.contains("config version") => {
                let scan = json_text::scan(text);
                let position = scan.value_position(&[
                    json_text::Segment::Key("ignition".into()),
                    json_text::Segment::Key("version".into()),
                ]);
                let version = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.pointer("/ignition/version")?.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let message = format!(
                    "Ignition config version {version:?} is not one this ignition-validate accepts ({}); Flatcar takes spec 3.x, e.g. \"3.3.0\"",
                    line.trim()
                );
                let problem = Problem::new(message).in_file(shown);
                problems.push(match position {
                    Some(p) => problem.at(p.line, Some(p.column)),
                    None => problem,
                });
            }
            None if !line.trim().is_empty() => notes.push(line.to_owned()),
            None => {}
        }
    }
    (problems, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignition_versions_are_pinned_to_the_version_field() {
        let text = "{\n  \"ignition\": {\n    \"version\": \"9.9.9\"\n  }\n}\n";
        let (problems, _) = ignition_findings(
            "couldn't parse config: unsupported config version\n",
            text,
            "images/capi/packer/files/flatcar/bootstrap.ign",
        );
        assert_eq!(problems.len(), 1);
        assert_eq!((problems[0].line, problems[0].column), (Some(3), Some(16)));
        assert!(problems[0].message.contains("\"9.9.9\""));
    }

    #[test]
    fn ignition_errors_keep_their_location() {
        let (problems, notes) = ignition_findings(
            "error at $.storage.files.0.path, line 3 col 34: path not absolute\n",
            "",
            "x.ign",
        );
        assert_eq!(problems[0].line, Some(3));
        assert_eq!(problems[0].column, Some(34));
        assert_eq!(problems[0].message, "path not absolute");
        assert!(notes.is_empty());
    }

    #[test]
    fn ansible_errors_are_located() {
        let output = "ERROR! We were unable to read either as JSON nor YAML\n\
                      Syntax Error while loading YAML.\n  did not find expected node content\n\n\
                      The error appears to be in 'images/capi/ansible/roles/r/tasks/main.yml': line 5, column 1, but may\n\
                      be elsewhere in the file depending on the exact syntax problem.\n";
        let p = ansible_problem(output, "images/capi/ansible/node.yml");
        assert_eq!(
            p.file.as_deref(),
            Some("images/capi/ansible/roles/r/tasks/main.yml")
        );
        assert_eq!((p.line, p.column), (Some(5), Some(1)));
        assert_eq!(
            p.message,
            "YAML syntax error: did not find expected node content"
        );
    }

    #[test]
    fn tidy_output_drops_blank_runs() {
        assert_eq!(
            tidy_output("\nError: x\n\n\n\nmore  \n\n"),
            "Error: x\n\nmore"
        );
    }
}
