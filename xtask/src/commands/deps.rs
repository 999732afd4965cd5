//! `cargo xtask deps`: which external tools this machine has, where each one was
//! found (the project-local toolchain under `.local/`, or PATH), whether they are new
//! enough, and how to install what is missing; with `--install`, it sets them all up
//! first and reports each component. Probing lives in `tools`, installing in `install`.

use std::path::Path;

use anyhow::Context;
use xshell::Shell;

use crate::install::system::Consent;
use crate::install::{self, Ended, InstallOptions, Outcome};
use crate::output::Format;
use crate::toolchain::layout;
use crate::toolchain::tools::{self, Probe, Purpose, Status};
use crate::{error::Exit, table};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
--install sets up every tool, as independent parts that are all reported:
- system packages: the one package-manager command (apt, dnf, pacman, brew) for the
  tools only the system provides, run as root (through sudo when not root) after
  asking on a terminal, or at once with --yes; without a terminal and without --yes
  the command is printed and the exit status is 2;
- Packer under .local/: HashiCorp's release archive, checked against the release's
  SHA256SUMS and its OpenPGP signature by HashiCorp's key, pinned as
  C874011F0AB405110D02105534365D9472D7468F; when HashiCorp's server cannot be reached,
  the system's Packer if the package manager offers one that runs the templates;
- a Python virtual environment under .local/ with ansible-core, ansible-lint, yamllint.
Every command then uses .local/ before anything on PATH. FLATCAR_TOOLCHAIN_DIR puts
the toolchain elsewhere.")]
pub struct DepsArgs {
    /// Check only the tools this purpose needs (default: every tool).
    #[arg(long = "for", value_enum, value_name = "PURPOSE")]
    pub purpose: Option<Purpose>,
    /// How to print the report.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Install what is missing or too old: system packages, Packer, the Ansible venv.
    #[arg(long)]
    pub install: bool,
    /// Run the package manager without asking (CI).
    #[arg(long, short = 'y', requires = "install")]
    pub yes: bool,
    /// How often to retry a transient network failure (timeout, connection reset, 5xx) while installing.
    #[arg(long, value_name = "N", env = "FLATCAR_RETRIES", default_value_t = 4)]
    pub retries: u32,
    #[command(flatten)]
    pub options: InstallOptions,
}

pub fn run(sh: &Shell, args: &DepsArgs) -> anyhow::Result<()> {
    let outcome = if args.install {
        let consent = if args.yes {
            Consent::Given
        } else {
            Consent::Ask
        };
        Some(install::run(
            sh,
            args.purpose,
            &args.options,
            args.retries,
            consent,
        )?)
    } else {
        None
    };
    let probes = tools::probe_all(sh, &install::wanted(args.purpose));
    let ready = probes.iter().all(|p| p.optional || p.usable());
    match args.format {
        Format::Json => {
            let tools: Vec<serde_json::Value> = probes
                .iter()
                .map(|p| {
                    let mut value = serde_json::to_value(p).expect("a probe serializes");
                    value["project_local"] = p
                        .path
                        .as_deref()
                        .is_some_and(layout::is_project_local)
                        .into();
                    value
                })
                .collect();
            let mut report = serde_json::json!({
                "purpose": args.purpose,
                "ready": ready,
                "toolchain": layout::dir(),
                "tools": tools,
            });
            if let Some(outcome) = &outcome {
                report["install"] =
                    serde_json::to_value(outcome).context("encoding the install outcome")?;
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&report).context("encoding the report")?
            );
        }
        Format::Text => {
            print!("{}", render(&probes, &layout::dir()));
            if let Some(outcome) = &outcome {
                print!("\n{}", render_outcome(outcome));
            }
            match (ready, args.purpose) {
                (true, _) => eprintln!("All required tools are usable."),
                (false, Some(p)) => eprintln!(
                    "Some tools needed for {p:?} are missing or unusable: see the hints above{}.",
                    install_suggestion(args.install)
                ),
                (false, None) => eprintln!(
                    "Some required tools are missing or unusable: see the hints above{}.",
                    install_suggestion(args.install)
                ),
            }
        }
    }
    let failed = outcome.as_ref().is_some_and(|o| o.any(&Ended::Failed));
    let not_run = outcome.as_ref().is_some_and(|o| o.any(&Ended::NotRun));
    if failed {
        Err(Exit(1).into())
    } else if not_run {
        Err(Exit(2).into())
    } else if ready {
        Ok(())
    } else {
        Err(Exit(1).into())
    }
}

/// The set-up's table: each component, how it ended, and what or why.
fn render_outcome(outcome: &Outcome) -> String {
    let rows: Vec<Vec<String>> = outcome
        .rows
        .iter()
        .map(|r| {
            let result = match r.result {
                Ended::Installed => "installed",
                Ended::AlreadyThere => "already there",
                Ended::Failed => "FAILED",
                Ended::NotRun => "NOT RUN",
            };
            vec![r.component.to_owned(), result.to_owned(), r.detail.clone()]
        })
        .collect();
    table::render(&["component", "result", "detail"], &rows)
}

fn install_suggestion(installed: bool) -> &'static str {
    if installed {
        ""
    } else {
        ", or run `cargo xtask deps --install`"
    }
}

/// The table; a tool under `local` (the toolchain directory) is "project-local".
fn render(probes: &[Probe], local: &Path) -> String {
    let rows: Vec<Vec<String>> = probes
        .iter()
        .map(|p| {
            let status = match &p.status {
                Status::Ok => "ok".to_owned(),
                Status::Missing if p.optional => "missing (optional)".to_owned(),
                Status::Missing => "MISSING".to_owned(),
                Status::TooOld => "TOO OLD".to_owned(),
                Status::Unusable(why) => format!("UNUSABLE: {why}"),
            };
            let from = match p.path.as_deref() {
                Some(path) if path.starts_with(local) => "project-local",
                Some(_) => "PATH",
                None => "-",
            };
            vec![
                p.tool.to_owned(),
                p.path
                    .as_ref()
                    .map_or("-".to_owned(), |path| path.display().to_string()),
                from.to_owned(),
                p.version.map_or("-".to_owned(), |v| v.to_string()),
                p.minimum.map_or("-".to_owned(), |v| format!(">= {v}")),
                status,
                p.hint.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table::render(
        &[
            "tool", "path", "from", "version", "minimum", "status", "install",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_where_each_tool_came_from_its_status_and_hint() {
        let probes = vec![
            Probe {
                tool: "packer",
                path: Some("/src/.local/bin/packer".into()),
                version: tools::parse_version("Packer v1.11.2"),
                minimum: tools::parse_version("1.5.0"),
                optional: false,
                status: Status::Ok,
                hint: None,
            },
            Probe {
                tool: "ansible-playbook",
                path: Some("/usr/bin/ansible-playbook".into()),
                version: tools::parse_version("ansible-playbook 2.9.6"),
                minimum: tools::parse_version("2.10.0"),
                optional: false,
                status: Status::TooOld,
                hint: Some("sudo apt-get install ansible-core".into()),
            },
            Probe {
                tool: "ansible-lint",
                path: None,
                version: None,
                minimum: None,
                optional: true,
                status: Status::Missing,
                hint: Some("sudo apt-get install ansible-lint".into()),
            },
        ];
        let rendered = render(&probes, Path::new("/src/.local"));
        expect_test::expect![[r#"
            tool              path                       from           version  minimum    status              install
            packer            /src/.local/bin/packer     project-local  1.11.2   >= 1.5.0   ok
            ansible-playbook  /usr/bin/ansible-playbook  PATH           2.9.6    >= 2.10.0  TOO OLD             sudo apt-get install ansible-core
            ansible-lint      -                          -              -        -          missing (optional)  sudo apt-get install ansible-lint
        "#]]
        .assert_eq(&rendered);
    }

    #[test]
    fn the_set_up_table_says_what_each_component_did() {
        let outcome = Outcome {
            rows: vec![
                install::Row {
                    component: "system packages",
                    result: Ended::Installed,
                    detail: "for shellcheck, unzip".into(),
                },
                install::Row {
                    component: "packer",
                    result: Ended::Failed,
                    detail: "https://releases.example.invalid/: host not found".into(),
                },
                install::Row {
                    component: "python-venv",
                    result: Ended::AlreadyThere,
                    detail: String::new(),
                },
            ],
            installed: Vec::new(),
        };
        expect_test::expect![[r#"
            component        result         detail
            system packages  installed      for shellcheck, unzip
            packer           FAILED         https://releases.example.invalid/: host not found
            python-venv      already there
        "#]]
        .assert_eq(&render_outcome(&outcome));
    }
}
