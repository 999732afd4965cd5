//! `cargo xtask deps`: which external tools this machine has, whether they are new
//! enough, and how to install what is missing. The probing itself lives in `tools`.

use anyhow::Context;
use xshell::Shell;

use crate::tools::{self, Probe, Purpose, Status, TOOLS};
use crate::{table, Exit};

#[derive(clap::Args, Debug)]
pub(crate) struct DepsArgs {
    /// Check only the tools this purpose needs (default: every tool).
    #[arg(long = "for", value_enum, value_name = "PURPOSE")]
    purpose: Option<Purpose>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(sh: &Shell, args: &DepsArgs) -> anyhow::Result<()> {
    let wanted: Vec<_> = TOOLS
        .iter()
        .filter(|t| args.purpose.is_none_or(|p| t.purposes.contains(&p)))
        .collect();
    let probes = tools::probe_all(sh, &wanted);
    let ready = probes.iter().all(|p| p.optional || p.usable());
    if args.json {
        let report = serde_json::json!({
            "purpose": args.purpose,
            "ready": ready,
            "tools": probes,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        );
    } else {
        print!("{}", render(&probes));
        match (ready, args.purpose) {
            (true, _) => eprintln!("All required tools are usable."),
            (false, Some(p)) => eprintln!(
                "Some tools needed for {p:?} are missing or unusable: see the hints above."
            ),
            (false, None) => {
                eprintln!("Some required tools are missing or unusable: see the hints above.")
            }
        }
    }
    if ready {
        Ok(())
    } else {
        Err(Exit(1).into())
    }
}

fn render(probes: &[Probe]) -> String {
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
            vec![
                p.tool.to_owned(),
                p.path
                    .as_ref()
                    .map_or("-".to_owned(), |path| path.display().to_string()),
                p.version.map_or("-".to_owned(), |v| v.to_string()),
                p.minimum.map_or("-".to_owned(), |v| format!(">= {v}")),
                status,
                p.hint.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table::render(
        &["tool", "path", "version", "minimum", "status", "install"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn table_shows_status_and_hint() {
        let probes = vec![
            Probe {
                tool: "packer",
                path: Some(PathBuf::from("/usr/bin/packer")),
                version: tools::parse_version("Packer v1.4.0"),
                minimum: tools::parse_version("1.5.0"),
                optional: false,
                status: Status::TooOld,
                hint: Some("sudo apt-get install packer".into()),
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
        expect_test::expect![[r#"
            tool          path             version  minimum   status              install
            packer        /usr/bin/packer  1.4.0    >= 1.5.0  TOO OLD             sudo apt-get install packer
            ansible-lint  -                -        -         missing (optional)  sudo apt-get install ansible-lint
        "#]]
        .assert_eq(&render(&probes));
    }
}
