//! `cargo xtask deps`: which external tools this machine has, where each one was
//! found (the project-local toolchain under `.local/`, or PATH), whether they are new
//! enough, and how to install what is missing; with `--install`, it installs what it
//! can into `.local/` first. Probing lives in `tools`, installing in `install`.

use std::path::Path;

use anyhow::Context;
use xshell::Shell;

use crate::toolchain::install::{self, InstallOptions};
use crate::toolchain::layout;
use crate::toolchain::tools::{self, Probe, Purpose, Status, TOOLS};
use crate::{error::Exit, table};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
--install puts Packer (HashiCorp's release archive, checked against the release's
SHA256SUMS and its OpenPGP signature by HashiCorp's key, pinned as
C874011F0AB405110D02105534365D9472D7468F) and a Python virtual environment with
ansible-core, ansible-lint and yamllint under .local/ at the repository root; every
command then uses them before anything on PATH. Tools that only the system's package
manager provides are not installed: their one install command is printed and the exit
status is 2. FLATCAR_TOOLCHAIN_DIR puts the toolchain elsewhere.")]
pub struct DepsArgs {
    /// Check only the tools this purpose needs (default: every tool).
    #[arg(long = "for", value_enum, value_name = "PURPOSE")]
    purpose: Option<Purpose>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Install what is missing or too old into .local/ (Packer, ansible-core, ansible-lint, yamllint).
    #[arg(long)]
    install: bool,
    /// How often to retry a transient network failure (connection reset, 5xx) while installing.
    #[arg(long, value_name = "N", env = "FLATCAR_RETRIES", default_value_t = 4)]
    retries: u32,
    #[command(flatten)]
    options: InstallOptions,
}

pub fn run(sh: &Shell, args: &DepsArgs) -> anyhow::Result<()> {
    let outcome = if args.install {
        Some(install::run(sh, args.purpose, &args.options, args.retries)?)
    } else {
        None
    };
    let wanted: Vec<_> = TOOLS
        .iter()
        .filter(|t| args.purpose.is_none_or(|p| t.purposes.contains(&p)))
        .collect();
    let probes = tools::probe_all(sh, &wanted);
    let ready = probes.iter().all(|p| p.optional || p.usable());
    let manager = tools::detect_package_manager();
    let package_line = outcome
        .as_ref()
        .filter(|o| !o.from_package_manager.is_empty())
        .map(|o| install::package_manager_line(manager, &o.from_package_manager));
    if args.json {
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
            report["installed"] =
                serde_json::to_value(&outcome.installed).context("encoding the install records")?;
            report["package_manager_command"] = package_line.clone().into();
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        );
    } else {
        print!("{}", render(&probes, &layout::dir()));
        for (component, missing) in outcome.iter().flat_map(|o| &o.blocked) {
            eprintln!(
                "{} cannot be installed into {} without {}.",
                component.name(),
                layout::dir().display(),
                missing.join(", ")
            );
        }
        if let Some(line) = &package_line {
            let names = outcome
                .as_ref()
                .map(|o| o.from_package_manager.join(", "))
                .unwrap_or_default();
            eprintln!(
                "Not installed by `deps --install`, because only the system's package manager provides them: {names}. Run:\n  {line}"
            );
        } else {
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
    if package_line.is_some() {
        Err(Exit(2).into())
    } else if ready {
        Ok(())
    } else {
        Err(Exit(1).into())
    }
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
}
