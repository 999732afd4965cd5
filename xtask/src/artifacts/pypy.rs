//! The PyPy release the setup role bootstraps, and its SHA-256: PyPy publishes its
//! checksums on a web page, not as files, so the role's defaults carry them
//! (`pypy_sha256_by_platform`) and a build that changes the release passes
//! `pypy_version`, `pypy_python_version` and `pypy_sha256` in `ansible_extra_vars`.
//! Read here from the same file and variables the role reads.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};

use crate::rules::yaml::{self, Value};

/// The setup role's defaults file, relative to images/capi.
pub const SETUP_DEFAULTS: &str = "ansible/roles/setup/defaults/main.yml";

/// What the setup role's defaults say about PyPy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PypyDefaults {
    pub version: String,
    pub python_version: String,
    pub platform_by_goarch: BTreeMap<String, String>,
    pub sha256_by_platform: BTreeMap<String, String>,
}

/// The PyPy archive of one build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pypy {
    pub version: String,
    pub python_version: String,
    /// PyPy's name for the platform (`linux64`, `aarch64`).
    pub platform: String,
    pub sha256: String,
}

impl Pypy {
    /// The archive's file name, as the role's `pypy_url` builds it.
    pub fn file_name(&self) -> String {
        format!(
            "pypy{}-v{}-{}.tar.bz2",
            self.python_version, self.version, self.platform
        )
    }
}

impl PypyDefaults {
    /// Reads the setup role's defaults under `capi`.
    pub fn load(capi: &Path) -> anyhow::Result<PypyDefaults> {
        let path = capi.join(SETUP_DEFAULTS);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        PypyDefaults::parse(&text).with_context(|| format!("reading {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<PypyDefaults> {
        let root = yaml::parse(text)
            .map_err(|e| anyhow::anyhow!("{}:{}: {}", e.at.line, e.at.column, e.message))?
            .context("the file is empty")?;
        let Value::Mapping(entries) = root.value else {
            bail!("expected a mapping of variables, found {}", root.kind());
        };
        let find = |name: &str| {
            entries
                .iter()
                .find(|(k, _)| k.scalar() == Some(name))
                .map(|(_, v)| v)
                .with_context(|| format!("`{name}` is not set"))
        };
        let scalar = |name: &str| -> anyhow::Result<String> {
            let node = find(name)?;
            node.scalar()
                .map(str::to_owned)
                .with_context(|| format!("`{name}` is {}, not a scalar", node.kind()))
        };
        let mapping = |name: &str| -> anyhow::Result<BTreeMap<String, String>> {
            let node = find(name)?;
            let Value::Mapping(pairs) = &node.value else {
                bail!("`{name}` is {}, not a mapping", node.kind());
            };
            Ok(pairs
                .iter()
                .filter_map(|(k, v)| Some((k.scalar()?.to_owned(), v.scalar()?.to_owned())))
                .collect())
        };
        Ok(PypyDefaults {
            version: scalar("pypy_version")?,
            python_version: scalar("pypy_python_version")?,
            platform_by_goarch: mapping("pypy_platform_by_goarch")?,
            sha256_by_platform: mapping("pypy_sha256_by_platform")?,
        })
    }
}

/// The PyPy of a build for `goarch`: the role's defaults, overridden by the
/// `key=value` words of `ansible_extra_vars` the way Ansible's `--extra-vars` does.
pub fn pypy(defaults: &PypyDefaults, goarch: &str, extra_vars: &str) -> anyhow::Result<Pypy> {
    let extra = extra_var_values(extra_vars);
    let pick = |name: &str, default: &str| extra.get(name).map_or(default, |v| v).to_owned();
    let platform = defaults
        .platform_by_goarch
        .get(goarch)
        .with_context(|| {
            format!(
                "PyPy has no platform for goarch `{goarch}` in {SETUP_DEFAULTS} (pypy_platform_by_goarch)"
            )
        })?
        .clone();
    let sha256 = match extra.get("pypy_sha256") {
        Some(sha) => sha.clone(),
        None => defaults
            .sha256_by_platform
            .get(&platform)
            .with_context(|| {
                format!("{SETUP_DEFAULTS} publishes no SHA-256 for PyPy on `{platform}` (pypy_sha256_by_platform); set pypy_sha256 in ansible_extra_vars")
            })?
            .clone(),
    };
    Ok(Pypy {
        version: pick("pypy_version", &defaults.version),
        python_version: pick("pypy_python_version", &defaults.python_version),
        platform,
        sha256,
    })
}

/// The values of an Ansible `--extra-vars` argument: `key=value` words, or a JSON
/// object (Ansible takes both; a site's var file may hand it either).
fn extra_var_values(extra_vars: &str) -> BTreeMap<String, String> {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(extra_vars.trim()) {
        return map
            .into_iter()
            .filter_map(|(key, value)| match value {
                serde_json::Value::String(text) => Some((key, text)),
                serde_json::Value::Number(number) => Some((key, number.to_string())),
                _ => None,
            })
            .collect();
    }
    extra_vars
        .split_whitespace()
        .filter_map(|word| word.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository_defaults() -> PypyDefaults {
        PypyDefaults::load(&crate::workspace::capi_dir()).unwrap()
    }

    #[test]
    fn reads_the_setup_roles_defaults() {
        let d = repository_defaults();
        assert_eq!(d.platform_by_goarch["amd64"], "linux64");
        assert_eq!(d.sha256_by_platform["linux64"].len(), 64);
        let p = pypy(&d, "amd64", "").unwrap();
        assert_eq!(p.sha256, d.sha256_by_platform["linux64"]);
        assert_eq!(
            p.file_name(),
            format!("pypy{}-v{}-linux64.tar.bz2", d.python_version, d.version)
        );
    }

    /// The file name here is the one the role downloads: its `pypy_url` is this formula.
    #[test]
    fn the_role_builds_the_same_url() {
        let text =
            std::fs::read_to_string(crate::workspace::capi_dir().join(SETUP_DEFAULTS)).unwrap();
        assert!(text.contains(
            "pypy_url: \"{{ pypy_http_source }}/pypy{{ pypy_python_version }}-v{{ pypy_version }}-{{ pypy_platform }}.tar.bz2\""
        ));
    }

    #[test]
    fn extra_vars_override_the_defaults() {
        let sha = "cd".repeat(32);
        let p = pypy(
            &repository_defaults(),
            "amd64",
            &format!("pypy_python_version=3.9 pypy_version=7.3.11 pypy_sha256={sha} other=x"),
        )
        .unwrap();
        assert_eq!(p.file_name(), "pypy3.9-v7.3.11-linux64.tar.bz2");
        assert_eq!(p.sha256, sha);
        let err = pypy(&repository_defaults(), "riscv64", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("goarch `riscv64`"), "{err}");
    }

    /// Ansible reads a JSON object as extra vars too (the rehearsal's kernel-param
    /// fault hands one over, keeping the mirror's PyPy in it).
    #[test]
    fn json_extra_vars_override_the_defaults_too() {
        let sha = "ef".repeat(32);
        let json = serde_json::json!({
            "pypy_version": "7.3.11",
            "pypy_python_version": "3.9",
            "pypy_sha256": sha,
            "node_sysctl_settings": {"kernel.panic": 10},
        });
        let p = pypy(&repository_defaults(), "amd64", &json.to_string()).unwrap();
        assert_eq!(p.file_name(), "pypy3.9-v7.3.11-linux64.tar.bz2");
        assert_eq!(p.sha256, sha);
    }
}
