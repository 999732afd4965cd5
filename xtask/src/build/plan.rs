//! The plan of a build: everything decided before anything changes, as one value
//! made by a pure function from the resolved release, the layered var files and
//! the user's choices (and the image's verified digest once it is known). It is
//! what `build-flatcar --dry-run` prints, what the build runs, and what its record
//! repeats.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::artifacts::{self, Artifact, PypyDefaults};
use crate::flatcar::cache;
use crate::flatcar::platform::ReleaseImage;
use crate::flatcar::release::Release;
use crate::net::credentials;
use crate::packer::layering::{self, Layered};
use crate::packer::targets::{self, BuildInput, BuildTarget};
use crate::packer::template::{self, VarFile};
use crate::vm::accelerator::Accelerator;
use crate::{json_text, workspace};

/// Where a build's image comes from and where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// A qcow2 image and a libvirt box, built locally with qemu.
    Qemu,
    /// An AMI, built on EC2 from the channel's Flatcar AMI (AWS credentials from the environment).
    Ami,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Qemu => "qemu",
            Provider::Ami => "ami",
        }
    }

    pub fn target(self) -> &'static BuildTarget {
        let name = match self {
            Provider::Qemu => "qemu-flatcar",
            Provider::Ami => "ami-flatcar",
        };
        targets::target(name).expect("every provider has a build target")
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Kubernetes release, `1.36.2` or `v1.36.2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KubernetesVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl FromStr for KubernetesVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<KubernetesVersion, String> {
        let bare = s.strip_prefix('v').unwrap_or(s);
        let numbers: Vec<u32> = bare
            .split('.')
            .map(|p| match p.bytes().all(|b| b.is_ascii_digit()) {
                true => p.parse().ok(),
                false => None,
            })
            .collect::<Option<_>>()
            .unwrap_or_default();
        match numbers[..] {
            [major, minor, patch] => Ok(KubernetesVersion {
                major,
                minor,
                patch,
            }),
            _ => Err(format!("`{s}`: expected MAJOR.MINOR.PATCH such as 1.36.2")),
        }
    }
}

impl KubernetesVersion {
    /// The var-file values for this release.
    pub fn overrides(self) -> BTreeMap<String, String> {
        let KubernetesVersion {
            major,
            minor,
            patch,
        } = self;
        BTreeMap::from([
            (
                "kubernetes_version".to_owned(),
                format!("{major}.{minor}.{patch}"),
            ),
            ("kubernetes_series".to_owned(), format!("v{major}.{minor}")),
        ])
    }
}

/// What is built, named the same in the plan and in the build record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    pub channel: String,
    pub version: String,
    pub arch: String,
    pub provider: Provider,
    pub kubernetes_semver: String,
    pub containerd_version: String,
    pub cni_version: String,
}

/// Everything the plan is made from.
#[derive(Clone, Debug)]
pub struct PlanInputs {
    pub provider: Provider,
    /// Resolved once; the build uses exactly this release.
    pub release: Release,
    pub image: ReleaseImage,
    /// Where the pinned Flatcar key comes from (`None` with a key file or no check).
    pub signing_key_url: Option<String>,
    /// The target's var files layered, the site's var file included.
    pub values: BTreeMap<String, Layered>,
    /// The site's var file (`--mirror-config`), absolute.
    pub mirror_config: Option<PathBuf>,
    pub kubernetes: Option<KubernetesVersion>,
    /// `None` for providers that boot no local VM.
    pub accelerator: Option<Accelerator>,
    /// The repository root, under which outputs go.
    pub root: PathBuf,
    pub cache_dir: PathBuf,
    /// What the setup role's defaults say about PyPy (its published SHA-256).
    pub pypy: PypyDefaults,
}

/// Where a build writes: its work directory while it runs, its output once done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildPaths {
    /// `images/capi/output/<build name>`: complete or absent.
    pub output: PathBuf,
    /// `images/capi/output/.work/<build name>`: key, Ignition config, var file, log.
    pub work: PathBuf,
    /// Where packer writes, inside `work`; renamed to `output` when complete.
    pub staging: PathBuf,
    pub generated_var_file: PathBuf,
    pub ssh_private_key: PathBuf,
    pub ignition_config: PathBuf,
    pub packer_log: PathBuf,
    /// The `node-rules` directory the image runs the node rules from.
    pub node_rules: PathBuf,
}

impl BuildPaths {
    fn new(root: &Path, build_name: &str) -> BuildPaths {
        let outputs = root.join(workspace::OUTPUT);
        let work = outputs.join(".work").join(build_name);
        BuildPaths {
            output: outputs.join(build_name),
            staging: work.join("output"),
            generated_var_file: work.join("build-vars.json"),
            ssh_private_key: work.join(crate::build::key::PRIVATE_KEY_FILE),
            ignition_config: work.join("ignition.json"),
            packer_log: work.join("packer.log"),
            node_rules: work.join("node-rules"),
            work,
        }
    }
}

/// Who downloads a build's artifacts (Kubernetes, CNI, crictl, containerd, PyPy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// This host, verified into the cache; the build serves them to its VM on
    /// 127.0.0.1, which QEMU's user-mode network shows the guest as 10.0.2.2.
    Host,
    /// The build machine itself, from the URLs as they are: an EC2 instance cannot
    /// reach this host's loopback.
    Guest,
}

impl Delivery {
    fn describe(self) -> &'static str {
        match self {
            Delivery::Host => "fetched and verified on this host, served to the VM by the build (http://10.0.2.2:<port>)",
            Delivery::Guest => "downloaded by the EC2 instance itself, which cannot reach this host's loopback",
        }
    }
}

/// Everything decided before anything is changed: what `--dry-run` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    #[serde(flatten)]
    pub recipe: Recipe,
    pub build_name: String,
    pub accelerator: Option<Accelerator>,
    /// Relative to the repository root.
    pub output_dir: String,
    /// Every download, by variable (or role in the release).
    pub urls: BTreeMap<String, String>,
    /// Who fetches the artifacts.
    pub artifact_delivery: Delivery,
    /// Every file the roles download besides Flatcar, with its checksum's source.
    pub artifacts: Vec<Artifact>,
    /// `packer` and its arguments, run in images/capi.
    pub packer_command: Vec<String>,
    /// The generated var file's content. The image's checksum is in it once the
    /// image is verified (never in a dry run's plan, which downloads nothing).
    pub generated_var_file: BTreeMap<String, String>,
    #[serde(skip)]
    pub paths: BuildPaths,
}

/// `packer build` options: plain output for the prefixed log, and a failed build
/// stops and removes its VM instead of asking.
const BUILD_OPTIONS: &[&str] = &["-color=false", "-on-error=cleanup"];

/// The plan for `inputs`; `image_sha512` is the verified image's digest once known,
/// `artifact_server` the base URL the VM reaches the build's own server at once it
/// runs (the download variables then point there).
/// The values a build or a bake supplies to the var files: the resolved release's
/// channel and version, and the Kubernetes version when one was asked for.
pub fn supplied_values(
    release: &Release,
    kubernetes: Option<KubernetesVersion>,
) -> BTreeMap<String, String> {
    let mut supplied = kubernetes
        .map(KubernetesVersion::overrides)
        .unwrap_or_default();
    supplied.insert(
        BuildInput::FlatcarChannel.variable().into(),
        release.channel.to_string(),
    );
    supplied.insert(
        BuildInput::FlatcarVersion.variable().into(),
        release.version.to_string(),
    );
    supplied
}

pub fn plan(
    inputs: &PlanInputs,
    image_sha512: Option<&str>,
    artifact_server: Option<&str>,
) -> anyhow::Result<Plan> {
    let release = &inputs.release;
    let mut supplied = supplied_values(release, inputs.kubernetes);
    let build_name = rendered(&inputs.values, &supplied, "build_name");
    let paths = BuildPaths::new(&inputs.root, &build_name);
    supplied.extend(build_variables(inputs, &paths, image_sha512));
    let render = |name| rendered(&inputs.values, &supplied, name);
    let recipe = Recipe {
        channel: release.channel.to_string(),
        version: release.version.to_string(),
        arch: release.arch.to_string(),
        provider: inputs.provider,
        kubernetes_semver: render("kubernetes_semver"),
        containerd_version: render("containerd_version"),
        cni_version: render("cni_version"),
    };
    let upstream = rendered_all(&inputs.values, &supplied);
    let pypy = artifacts::pypy(
        &inputs.pypy,
        &upstream.get("goarch").cloned().unwrap_or_default(),
        upstream
            .get("ansible_extra_vars")
            .map_or("", String::as_str),
    )?;
    let artifacts = artifacts::artifact_list(&upstream, &pypy)?;
    let urls = urls(inputs, &supplied);
    let artifact_delivery = match inputs.provider {
        Provider::Qemu => Delivery::Host,
        Provider::Ami => Delivery::Guest,
    };
    if let (Delivery::Host, Some(base)) = (artifact_delivery, artifact_server) {
        supplied.extend(artifacts::variables_at(&upstream, base)?);
    }
    Ok(Plan {
        recipe,
        build_name,
        accelerator: inputs.accelerator,
        output_dir: paths
            .output
            .strip_prefix(&inputs.root)
            .unwrap_or(&paths.output)
            .display()
            .to_string(),
        urls,
        artifact_delivery,
        artifacts,
        packer_command: packer_command(inputs, &paths),
        generated_var_file: supplied,
        paths,
    })
}

/// Every variable the var files set, rendered with what the build supplies.
fn rendered_all(
    values: &BTreeMap<String, Layered>,
    supplied: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut all: BTreeMap<String, String> = values
        .keys()
        .map(|name| (name.clone(), rendered(values, supplied, name)))
        .collect();
    all.extend(supplied.clone());
    all
}

/// Every variable of the build as this plan renders it (the var files' values and
/// what the build supplies): the values the node rules are checked against.
pub fn variables(inputs: &PlanInputs, plan: &Plan) -> BTreeMap<String, String> {
    rendered_all(&inputs.values, &plan.generated_var_file)
}

/// The variables only the build knows: where it writes, and for a local VM the
/// image, its checksum (once verified), the key, the Ignition config, the accelerator.
fn build_variables(
    inputs: &PlanInputs,
    paths: &BuildPaths,
    image_sha512: Option<&str>,
) -> BTreeMap<String, String> {
    let path = |p: &Path| p.display().to_string();
    let mut vars = BTreeMap::from([(
        BuildInput::OutputDirectory.variable().to_owned(),
        path(&paths.staging),
    )]);
    if inputs.provider != Provider::Qemu {
        return vars;
    }
    let release = &inputs.release;
    let image = cache::entry_dir(
        &inputs.cache_dir,
        release.channel,
        release.version,
        release.arch,
    )
    .join(inputs.image.file_name());
    let mut set = |input: BuildInput, value: String| {
        vars.insert(input.variable().to_owned(), value);
    };
    set(BuildInput::ImagePath, path(&image));
    if let Some(sha512) = image_sha512 {
        set(BuildInput::ImageChecksum, format!("sha512:{sha512}"));
    }
    set(BuildInput::SshPrivateKeyFile, path(&paths.ssh_private_key));
    set(BuildInput::IgnitionConfigPath, path(&paths.ignition_config));
    set(BuildInput::NodeRulesDir, path(&paths.node_rules));
    if let Some(accelerator) = inputs.accelerator {
        set(
            BuildInput::Accelerator,
            accelerator.packer_name().to_owned(),
        );
    }
    vars
}

/// Every download location, by variable, and the release's own files.
fn urls(inputs: &PlanInputs, supplied: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut urls: BTreeMap<String, String> = inputs
        .values
        .keys()
        .filter(|name| is_url_variable(name))
        .map(|name| (name.clone(), rendered(&inputs.values, supplied, name)))
        .collect();
    if inputs.provider == Provider::Qemu {
        let release = &inputs.release;
        urls.insert("flatcar_release".into(), release.url.clone());
        urls.insert(
            "flatcar_image".into(),
            release.file_url(inputs.image.file_name()),
        );
        if let Some(url) = &inputs.signing_key_url {
            urls.insert("flatcar_signing_key".into(), url.clone());
        }
    }
    // The plan is printed: a mirror's credentials stay out of it.
    urls.into_iter()
        .map(|(name, url)| (name, credentials::redact(&url).into_owned()))
        .collect()
}

fn packer_command(inputs: &PlanInputs, paths: &BuildPaths) -> Vec<String> {
    let later: Vec<&Path> = inputs
        .mirror_config
        .iter()
        .map(PathBuf::as_path)
        .chain([paths.generated_var_file.as_path()])
        .collect();
    let args =
        crate::packer::command::args("build", BUILD_OPTIONS, inputs.provider.target(), &later);
    ["packer".to_owned()]
        .into_iter()
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect()
}

/// The variables whose values are download locations: shown in the plan.
fn is_url_variable(name: &str) -> bool {
    name.ends_with("_url") || name.ends_with("_http_source")
}

/// The value of `name` after layering, with `{{user}}` references rendered.
fn rendered(
    values: &BTreeMap<String, Layered>,
    supplied: &BTreeMap<String, String>,
    name: &str,
) -> String {
    let raw = supplied
        .get(name)
        .cloned()
        .or_else(|| values.get(name).and_then(|l| l.value.clone()))
        .unwrap_or_default();
    layering::render(&raw, values, supplied).unwrap_or(raw)
}

/// The plan for people.
pub fn render_text(plan: &Plan) -> String {
    let r = &plan.recipe;
    let mut out = format!(
        "Flatcar {} {} ({}), provider {}\nKubernetes {}, containerd {}, CNI {}\n",
        r.channel,
        r.version,
        r.arch,
        r.provider,
        r.kubernetes_semver,
        r.containerd_version,
        r.cni_version
    );
    if let Some(accelerator) = plan.accelerator {
        out += &format!("Accelerator: {}\n", accelerator.packer_name());
    }
    out += &format!("Output: {}\n\nDownloads:\n", plan.output_dir);
    for (name, url) in &plan.urls {
        out += &format!("  {name}: {url}\n");
    }
    out += &format!("\nArtifacts, {}:\n", plan.artifact_delivery.describe());
    for a in &plan.artifacts {
        let checksum = match &a.checksum {
            artifacts::ChecksumSource::File { url, algorithm } => {
                format!("{} from {}", algorithm.name(), credentials::redact(url))
            }
            artifacts::ChecksumSource::Fixed { algorithm, digest } => {
                format!("{} {digest} (published)", algorithm.name())
            }
        };
        out += &format!(
            "  {} {}: {}\n    {checksum}\n",
            a.name,
            a.version,
            credentials::redact(&a.url)
        );
    }
    out += "\nPacker, run in images/capi:\n  ";
    out += &plan.packer_command.join(" \\\n    ");
    out += "\n\nGenerated var file:\n";
    out += &json_text::canonical(&serde_json::json!(plan.generated_var_file));
    out
}

/// The target's var files layered with the site's var file: every variable the site
/// sets must be one the template declares (Packer would ignore it silently).
/// Returns the values and the site's var file, absolute.
pub fn layer_with_mirror(
    capi: &Path,
    target: &BuildTarget,
    mirror: Option<&Path>,
) -> anyhow::Result<(BTreeMap<String, Layered>, Option<PathBuf>)> {
    let (mut stack, findings) = layering::load_stack(capi, target);
    let mirror = match mirror {
        Some(path) => {
            let path = path
                .canonicalize()
                .with_context(|| format!("--mirror-config {}", path.display()))?;
            let doc = template::load(capi, &path.display().to_string())
                .map_err(|f| anyhow::anyhow!("--mirror-config {f}"))?;
            let (vars, problems) = VarFile::from_document(doc);
            if let Some(problem) = problems.first() {
                bail!("{problem}");
            }
            stack.var_files.push(vars);
            Some(path)
        }
        None => None,
    };
    let (values, layering_findings) = layering::layer(target, &stack);
    let problems: Vec<String> = findings
        .iter()
        .chain(&layering_findings)
        .map(|f| f.to_string())
        .collect();
    if !problems.is_empty() {
        bail!(
            "the var files of {} do not layer cleanly:\n{}",
            target.name,
            problems.join("\n")
        );
    }
    Ok((values, mirror))
}

/// Every variable of `provider`'s target after layering its var files, rendered
/// with the site's var file and `supplied` (values a build supplies, such as a
/// Kubernetes version): what a mirror for this build has to stand in for.
pub fn rendered_variables(
    provider: Provider,
    site: Option<&Path>,
    supplied: &BTreeMap<String, String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let (values, _) = layer_with_mirror(&workspace::capi_dir(), provider.target(), site)?;
    Ok(rendered_all(&values, supplied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatcar::release::{Arch, Channel, ReleaseServer};

    #[test]
    fn kubernetes_version_sets_version_and_series() {
        let k: KubernetesVersion = "v1.35.4".parse().unwrap();
        let o = k.overrides();
        assert_eq!(o["kubernetes_version"], "1.35.4");
        assert_eq!(o["kubernetes_series"], "v1.35");
        for bad in ["1.35", "1.35.x", "1..4", "1.35.4.1", ""] {
            let err = bad.parse::<KubernetesVersion>().unwrap_err();
            assert!(err.contains("MAJOR.MINOR.PATCH"), "{bad}: {err}");
        }
    }

    #[test]
    fn url_variables_are_the_download_locations() {
        assert!(is_url_variable("cni_url"));
        assert!(is_url_variable("kubernetes_http_source"));
        assert!(!is_url_variable("kubernetes_source_type"));
    }

    fn inputs(provider: Provider) -> PlanInputs {
        let server: ReleaseServer = "http://mirror.example/{channel}".parse().unwrap();
        let release = Release::from_version_txt(
            &server,
            Channel::Stable,
            Arch::Amd64,
            b"FLATCAR_VERSION=4081.2.0\n".to_vec(),
        )
        .unwrap();
        let layered = |value: &str| Layered {
            value: Some(value.to_owned()),
            origin: layering::Origin::Default,
        };
        PlanInputs {
            provider,
            release,
            image: ReleaseImage::Qemu(crate::flatcar::Variant::Bios),
            signing_key_url: Some("http://mirror.example/key.asc".into()),
            values: crate::artifacts::list::tests::vars()
                .iter()
                .map(|(k, v)| (k.clone(), layered(v)))
                .chain([
                (
                    "build_name".to_owned(),
                    layered("flatcar-{{user `flatcar_channel`}}-{{user `flatcar_version`}}-kube-{{user `kubernetes_semver`}}"),
                ),
                ("kubernetes_semver".to_owned(), layered("v{{user `kubernetes_version`}}")),
                ("kubernetes_version".to_owned(), layered("1.36.1")),
                ("containerd_version".to_owned(), layered("2.1.4")),
                ("cni_version".to_owned(), layered("1.8.0")),
                ("cni_url".to_owned(), layered("https://cni.example/v{{user `cni_version`}}.tgz")),
            ])
                .collect(),
            mirror_config: None,
            kubernetes: Some("1.35.1".parse().unwrap()),
            accelerator: Some(Accelerator::Tcg),
            root: PathBuf::from("/repo"),
            cache_dir: PathBuf::from("/cache"),
            pypy: PypyDefaults {
                version: "7.3.17".into(),
                python_version: "3.10".into(),
                platform_by_goarch: BTreeMap::from([("amd64".into(), "linux64".into())]),
                sha256_by_platform: BTreeMap::from([("linux64".into(), "ab".repeat(32))]),
            },
        }
    }

    #[test]
    fn the_checksum_is_planned_only_once_verified() {
        let inputs = inputs(Provider::Qemu);
        let before = plan(&inputs, None, None).unwrap();
        let after = plan(&inputs, Some("ab12"), None).unwrap();
        assert!(!before
            .generated_var_file
            .contains_key("flatcar_image_checksum"));
        assert_eq!(
            after.generated_var_file["flatcar_image_checksum"],
            "sha512:ab12"
        );
        assert_eq!(before.paths, after.paths);
        assert_eq!(before.recipe, after.recipe);
    }

    #[test]
    fn a_running_artifact_server_takes_every_download_of_the_vm() {
        let inputs = inputs(Provider::Qemu);
        let plan = plan(&inputs, Some("ab12"), Some("http://10.0.2.2:4321")).unwrap();
        let vars = &plan.generated_var_file;
        assert_eq!(
            vars["cni_url"],
            "http://10.0.2.2:4321/cni.example/v1.8.0.tgz"
        );
        assert_eq!(
            vars["kubernetes_http_source"],
            "http://10.0.2.2:4321/dl.k8s.io/release"
        );
        assert_eq!(
            plan.artifacts[3].url, "https://cni.example/v1.8.0.tgz",
            "the list keeps the upstream"
        );
        assert_eq!(plan.urls["cni_url"], "https://cni.example/v1.8.0.tgz");
        assert_eq!(
            plan.artifacts[0].url,
            "https://dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubeadm"
        );
    }

    #[test]
    fn a_plan_without_a_local_vm_has_no_image_or_accelerator() {
        let mut inputs = inputs(Provider::Ami);
        inputs.accelerator = None;
        let plan = plan(&inputs, None, None).unwrap();
        assert_eq!(
            plan.generated_var_file.keys().collect::<Vec<_>>(),
            [
                "flatcar_channel",
                "flatcar_version",
                "kubernetes_series",
                "kubernetes_version",
                "output_directory"
            ]
        );
        assert!(!plan.urls.contains_key("flatcar_image"));
        assert_eq!(plan.artifact_delivery, Delivery::Guest);
        assert_eq!(
            plan.artifacts.len(),
            7,
            "listed, though the instance fetches them"
        );
        let served = super::plan(&inputs, None, Some("http://10.0.2.2:1")).unwrap();
        assert!(!served.generated_var_file.contains_key("cni_url"));
        assert_eq!(plan.recipe.provider.to_string(), "ami");
    }

    /// The plan as `--dry-run --format json` prints it (the text form is pinned by
    /// tests/build.rs on the real command's output).
    #[test]
    fn the_plan_as_json() {
        let plan = plan(&inputs(Provider::Qemu), None, None).unwrap();
        expect_test::expect![[r#"
            {
              "channel": "stable",
              "version": "4081.2.0",
              "arch": "amd64",
              "provider": "qemu",
              "kubernetes_semver": "v1.35.1",
              "containerd_version": "2.1.4",
              "cni_version": "1.8.0",
              "build_name": "flatcar-stable-4081.2.0-kube-v1.35.1",
              "accelerator": "tcg",
              "output_dir": "images/capi/output/flatcar-stable-4081.2.0-kube-v1.35.1",
              "urls": {
                "cni_url": "https://cni.example/v1.8.0.tgz",
                "containerd_url": "https://github.com/containerd/containerd/releases/download/v2.3.3/containerd-2.3.3-linux-amd64.tar.gz",
                "crictl_url": "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.36.0/crictl-v1.36.0-linux-amd64.tar.gz",
                "flatcar_image": "http://mirror.example/stable/amd64-usr/4081.2.0/flatcar_production_qemu_image.img",
                "flatcar_release": "http://mirror.example/stable/amd64-usr/4081.2.0/",
                "flatcar_signing_key": "http://mirror.example/key.asc",
                "kubernetes_http_source": "https://dl.k8s.io/release",
                "pypy_http_source": "https://downloads.python.org/pypy"
              },
              "artifact_delivery": "host",
              "artifacts": [
                {
                  "name": "kubeadm",
                  "version": "v1.35.1",
                  "goarch": "amd64",
                  "url": "https://dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubeadm",
                  "checksum": {
                    "kind": "file",
                    "url": "https://dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubeadm.sha256",
                    "algorithm": "sha256"
                  },
                  "size": null,
                  "served_path": "dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubeadm"
                },
                {
                  "name": "kubelet",
                  "version": "v1.35.1",
                  "goarch": "amd64",
                  "url": "https://dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubelet",
                  "checksum": {
                    "kind": "file",
                    "url": "https://dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubelet.sha256",
                    "algorithm": "sha256"
                  },
                  "size": null,
                  "served_path": "dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubelet"
                },
                {
                  "name": "kubectl",
                  "version": "v1.35.1",
                  "goarch": "amd64",
                  "url": "https://dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubectl",
                  "checksum": {
                    "kind": "file",
                    "url": "https://dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubectl.sha256",
                    "algorithm": "sha256"
                  },
                  "size": null,
                  "served_path": "dl.k8s.io/release/v1.35.1/bin/linux/amd64/kubectl"
                },
                {
                  "name": "cni",
                  "version": "1.8.0",
                  "goarch": "amd64",
                  "url": "https://cni.example/v1.8.0.tgz",
                  "checksum": {
                    "kind": "file",
                    "url": "https://cni.example/v1.8.0.tgz.sha256",
                    "algorithm": "sha256"
                  },
                  "size": null,
                  "served_path": "cni.example/v1.8.0.tgz"
                },
                {
                  "name": "crictl",
                  "version": "v1.36.0",
                  "goarch": "amd64",
                  "url": "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.36.0/crictl-v1.36.0-linux-amd64.tar.gz",
                  "checksum": {
                    "kind": "file",
                    "url": "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.36.0/crictl-v1.36.0-linux-amd64.tar.gz.sha256",
                    "algorithm": "sha256"
                  },
                  "size": null,
                  "served_path": "github.com/kubernetes-sigs/cri-tools/releases/download/v1.36.0/crictl-v1.36.0-linux-amd64.tar.gz"
                },
                {
                  "name": "containerd",
                  "version": "2.1.4",
                  "goarch": "amd64",
                  "url": "https://github.com/containerd/containerd/releases/download/v2.3.3/containerd-2.3.3-linux-amd64.tar.gz",
                  "checksum": {
                    "kind": "file",
                    "url": "https://github.com/containerd/containerd/releases/download/v2.3.3/containerd-2.3.3-linux-amd64.tar.gz.sha256sum",
                    "algorithm": "sha256"
                  },
                  "size": null,
                  "served_path": "github.com/containerd/containerd/releases/download/v2.3.3/containerd-2.3.3-linux-amd64.tar.gz"
                },
                {
                  "name": "pypy",
                  "version": "7.3.17",
                  "goarch": "amd64",
                  "url": "https://downloads.python.org/pypy/pypy3.10-v7.3.17-linux64.tar.bz2",
                  "checksum": {
                    "kind": "fixed",
                    "algorithm": "sha256",
                    "digest": "abababababababababababababababababababababababababababababababab"
                  },
                  "size": null,
                  "served_path": "downloads.python.org/pypy/pypy3.10-v7.3.17-linux64.tar.bz2"
                }
              ],
              "packer_command": [
                "packer",
                "build",
                "-color=false",
                "-on-error=cleanup",
                "-var-file=packer/config/kubernetes.json",
                "-var-file=packer/config/cni.json",
                "-var-file=packer/config/containerd.json",
                "-var-file=packer/config/ansible-args.json",
                "-var-file=packer/config/common.json",
                "-var-file=packer/qemu/qemu-flatcar.json",
                "-var-file=/repo/images/capi/output/.work/flatcar-stable-4081.2.0-kube-v1.35.1/build-vars.json",
                "packer/qemu/packer.json"
              ],
              "generated_var_file": {
                "accelerator": "tcg",
                "flatcar_channel": "stable",
                "flatcar_image_path": "/cache/stable/4081.2.0/amd64/flatcar_production_qemu_image.img",
                "flatcar_version": "4081.2.0",
                "ignition_config_path": "/repo/images/capi/output/.work/flatcar-stable-4081.2.0-kube-v1.35.1/ignition.json",
                "kubernetes_series": "v1.35",
                "kubernetes_version": "1.35.1",
                "node_rules_dir": "/repo/images/capi/output/.work/flatcar-stable-4081.2.0-kube-v1.35.1/node-rules",
                "output_directory": "/repo/images/capi/output/.work/flatcar-stable-4081.2.0-kube-v1.35.1/output",
                "ssh_private_key_file": "/repo/images/capi/output/.work/flatcar-stable-4081.2.0-kube-v1.35.1/id_ed25519"
              }
            }"#]]
            .assert_eq(&serde_json::to_string_pretty(&plan).unwrap());
    }
}
