//! Pod Security admission as Kubernetes' `pod-security-admission` evaluates it: the levels privileged,
//! baseline and restricted, chosen per namespace by the `pod-security.kubernetes.io/{enforce,audit,warn}`
//! labels (with `-version`) or the cluster's defaults, each check with Kubernetes' reason and detail, in the
//! order of its check IDs. Pure: the apiserver supplies the namespace's labels and the pod.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::{BTreeMap, BTreeSet};

/// The label prefix of the namespace's policy.
pub const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// A Pod Security Standard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Anything goes.
    Privileged,
    /// Known privilege escalations refused (hostPath, host namespaces and ports, privileged...).
    Baseline,
    /// Hardened: also non-root, no escalation, dropped capabilities, seccomp, core volume types only.
    Restricted,
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "privileged" => Ok(Self::Privileged),
            "baseline" => Ok(Self::Baseline),
            "restricted" => Ok(Self::Restricted),
            other => Err(format!(
                "{other:?} is not a Pod Security level (privileged, baseline, restricted)"
            )),
        }
    }
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

/// The version of a level's checks: `latest` or `v1.N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The newest checks.
    Latest,
    /// The checks as of Kubernetes 1.N.
    Minor(u32),
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "latest" {
            return Ok(Self::Latest);
        }
        text.strip_prefix("v1.")
            .and_then(|minor| minor.parse().ok())
            .map(Self::Minor)
            .ok_or_else(|| format!("{text:?} is not a Pod Security version (latest or v1.N)"))
    }
}

impl Version {
    /// Whether a check introduced in Kubernetes 1.`minor` applies.
    fn has(self, minor: u32) -> bool {
        match self {
            Self::Latest => true,
            Self::Minor(own) => own >= minor,
        }
    }
}

/// A level at a version, as the policy names it (`baseline:latest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelVersion {
    /// The level.
    pub level: Level,
    /// The version of its checks.
    pub version: Version,
}

impl std::fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            Version::Latest => write!(f, "{}:latest", self.level.name()),
            Version::Minor(minor) => write!(f, "{}:v1.{minor}", self.level.name()),
        }
    }
}

impl LevelVersion {
    /// A level at its latest version.
    pub fn latest(level: Level) -> Self {
        Self {
            level,
            version: Version::Latest,
        }
    }
}

/// What a namespace enforces, audits and warns about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Pods that break it are refused.
    pub enforce: LevelVersion,
    /// Breaches are recorded.
    pub audit: LevelVersion,
    /// Breaches are sent back as warnings.
    pub warn: LevelVersion,
}

impl Policy {
    /// The same level for enforce, audit and warn.
    pub fn uniform(level: Level) -> Self {
        let level = LevelVersion::latest(level);
        Self {
            enforce: level,
            audit: level,
            warn: level,
        }
    }

    /// The policy of a namespace with these labels, over the cluster's defaults; a label that cannot be read
    /// counts as `restricted`, as Kubernetes does, and is returned with why.
    pub fn of_namespace(
        labels: &BTreeMap<String, String>,
        defaults: &Policy,
    ) -> (Policy, Vec<String>) {
        let mut errors = Vec::new();
        let mut mode = |name: &str, default: LevelVersion| {
            let level = match labels.get(&format!("{LABEL_PREFIX}{name}")) {
                None => default.level,
                Some(text) => text.parse().unwrap_or_else(|e: String| {
                    errors.push(e);
                    Level::Restricted
                }),
            };
            let version = match labels.get(&format!("{LABEL_PREFIX}{name}-version")) {
                None => default.version,
                Some(text) => text.parse().unwrap_or_else(|e: String| {
                    errors.push(e);
                    Version::Latest
                }),
            };
            LevelVersion { level, version }
        };
        let policy = Policy {
            enforce: mode("enforce", defaults.enforce),
            audit: mode("audit", defaults.audit),
            warn: mode("warn", defaults.warn),
        };
        (policy, errors)
    }
}

/// The cluster's Pod Security settings: the policy of namespaces without labels, and who is exempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The policy of a namespace without pod-security labels.
    pub defaults: Policy,
    /// Namespaces whose pods are never checked.
    pub exempt_namespaces: Vec<String>,
    /// Users whose requests are never checked.
    pub exempt_usernames: Vec<String>,
}

impl Config {
    /// The same level everywhere, no exemptions (`--pod-security-default`).
    pub fn uniform(level: Level) -> Self {
        Self {
            defaults: Policy::uniform(level),
            exempt_namespaces: Vec::new(),
            exempt_usernames: Vec::new(),
        }
    }

    /// Reads an `AdmissionConfiguration` (apiserver.config.k8s.io/v1) whose `PodSecurity` plugin holds a
    /// `PodSecurityConfiguration`: `defaults` (enforce, audit, warn and their `-version`) and `exemptions`
    /// (namespaces, usernames). Levels not named default to privileged, as Kubernetes does.
    pub fn from_admission_configuration(text: &str) -> Result<Self, String> {
        let document: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
        if document["kind"].as_str() != Some("AdmissionConfiguration") {
            return Err("the file is not an AdmissionConfiguration".into());
        }
        let plugin = document["plugins"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str() == Some("PodSecurity"))
            .ok_or("the AdmissionConfiguration has no PodSecurity plugin")?;
        let configuration = &plugin["configuration"];
        if configuration["kind"].as_str() != Some("PodSecurityConfiguration") {
            return Err(
                "the PodSecurity plugin's configuration is not a PodSecurityConfiguration".into(),
            );
        }
        let defaults = &configuration["defaults"];
        let mode = |name: &str| -> Result<LevelVersion, String> {
            let level = match defaults[name].as_str() {
                Some(text) => text.parse()?,
                None => Level::Privileged,
            };
            let version = match defaults[format!("{name}-version").as_str()].as_str() {
                Some(text) => text.parse()?,
                None => Version::Latest,
            };
            Ok(LevelVersion { level, version })
        };
        let names = |field: &str| -> Vec<String> {
            configuration["exemptions"][field]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        Ok(Self {
            defaults: Policy {
                enforce: mode("enforce")?,
                audit: mode("audit")?,
                warn: mode("warn")?,
            },
            exempt_namespaces: names("namespaces"),
            exempt_usernames: names("usernames"),
        })
    }
}

/// The errors of a namespace's pod-security labels: the values Kubernetes accepts.
pub fn label_errors(labels: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    for mode in ["enforce", "audit", "warn"] {
        let key = format!("{LABEL_PREFIX}{mode}");
        if let Some(value) = labels.get(&key)
            && let Err(e) = value.parse::<Level>()
        {
            errors.push((key.clone(), e));
        }
        let key = format!("{key}-version");
        if let Some(value) = labels.get(&key)
            && let Err(e) = value.parse::<Version>()
        {
            errors.push((key, e));
        }
    }
    errors
}

/// One broken rule: Kubernetes' reason (`hostPath volumes`) and detail (`volume "root"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// What is forbidden.
    pub reason: &'static str,
    /// Where.
    pub detail: String,
}

/// `violation (detail), violation (detail)`, as Kubernetes joins them.
pub fn forbidden_detail(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("{} ({})", v.reason, v.detail))
        .collect::<Vec<_>>()
        .join(", ")
}

fn pluralize(one: &'static str, many: &'static str, n: usize) -> &'static str {
    if n == 1 { one } else { many }
}

fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|i| format!("{:?}", i.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

/// `containers "a", "b"` (or `container "a"`).
fn named(names: &[String]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

fn names_where(spec: &PodSpec, bad: impl Fn(&Container) -> bool) -> Vec<String> {
    containers(spec)
        .filter(|c| bad(c))
        .map(|c| c.name.clone())
        .collect()
}

/// The capabilities baseline lets a container add.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The sysctls baseline allows.
const SAFE_SYSCTLS: [&str; 9] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
];

fn fail(reason: &'static str, detail: String) -> Option<Violation> {
    Some(Violation { reason, detail })
}

fn allow_privilege_escalation(spec: &PodSpec) -> Option<Violation> {
    let bad = names_where(spec, |c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.allow_privilege_escalation)
            != Some(false)
    });
    (!bad.is_empty()).then(|| Violation {
        reason: "allowPrivilegeEscalation != false",
        detail: format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            named(&bad)
        ),
    })
}

fn app_armor(meta: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    let mut bad = BTreeSet::new();
    for (key, value) in meta.annotations.iter().flatten() {
        if key.starts_with("container.apparmor.security.beta.kubernetes.io/")
            && value != "runtime/default"
            && !value.starts_with("localhost/")
        {
            bad.insert(format!("{key}={value:?}"));
        }
    }
    let unconfined = |profile: Option<&k8s_openapi::api::core::v1::AppArmorProfile>| {
        profile.is_some_and(|p| p.type_ == "Unconfined")
    };
    if unconfined(
        spec.security_context
            .as_ref()
            .and_then(|s| s.app_armor_profile.as_ref()),
    ) {
        bad.insert(
            "pod must not set securityContext.appArmorProfile.type to \"Unconfined\"".into(),
        );
    }
    for name in names_where(spec, |c| {
        unconfined(
            c.security_context
                .as_ref()
                .and_then(|s| s.app_armor_profile.as_ref()),
        )
    }) {
        bad.insert(format!(
            "container {name:?} must not set securityContext.appArmorProfile.type to \"Unconfined\""
        ));
    }
    (!bad.is_empty()).then(|| Violation {
        reason: "forbidden AppArmor profile",
        detail: bad.into_iter().collect::<Vec<_>>().join(", "),
    })
}

fn volume_types(
    spec: &PodSpec,
    allowed: impl Fn(&k8s_openapi::api::core::v1::Volume) -> Option<&'static str>,
) -> Option<Violation> {
    let mut names = Vec::new();
    let mut kinds = BTreeSet::new();
    for volume in spec.volumes.iter().flatten() {
        if let Some(kind) = allowed(volume) {
            names.push(volume.name.clone());
            kinds.insert(kind);
        }
    }
    let kinds: Vec<&str> = kinds.into_iter().collect();
    (!names.is_empty()).then(|| Violation {
        reason: "restricted volume types",
        detail: format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", names.len()),
            join_quote(&names),
            pluralize("uses", "use", names.len()),
            pluralize(
                "restricted volume type",
                "restricted volume types",
                kinds.len()
            ),
            join_quote(&kinds)
        ),
    })
}

fn baseline_volumes(spec: &PodSpec) -> Option<Violation> {
    volume_types(spec, |v| v.git_repo.is_some().then_some("gitRepo"))
}

fn restricted_volumes(spec: &PodSpec) -> Option<Violation> {
    volume_types(spec, |v| {
        let allowed = v.config_map.is_some()
            || v.csi.is_some()
            || v.downward_api.is_some()
            || v.empty_dir.is_some()
            || v.ephemeral.is_some()
            || v.persistent_volume_claim.is_some()
            || v.projected.is_some()
            || v.secret.is_some()
            || v.image.is_some();
        if allowed {
            return None;
        }
        Some(if v.host_path.is_some() {
            "hostPath"
        } else if v.git_repo.is_some() {
            "gitRepo"
        } else if v.nfs.is_some() {
            "nfs"
        } else {
            "unknown"
        })
    })
}

fn capabilities_baseline(spec: &PodSpec) -> Option<Violation> {
    let extra = |c: &Container| -> Vec<String> {
        c.security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|caps| caps.add.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|cap| !BASELINE_CAPABILITIES.contains(&cap.as_str()))
            .collect()
    };
    let bad = names_where(spec, |c| !extra(c).is_empty());
    let added: Vec<String> = containers(spec)
        .flat_map(extra)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    (!bad.is_empty()).then(|| Violation {
        reason: "non-default capabilities",
        detail: format!(
            "{} must not include {} in securityContext.capabilities.add",
            named(&bad),
            join_quote(&added)
        ),
    })
}

fn capabilities_restricted(spec: &PodSpec) -> Option<Violation> {
    let capabilities = |c: &Container| {
        c.security_context
            .as_ref()
            .and_then(|s| s.capabilities.clone())
    };
    let missing_drop = names_where(spec, |c| {
        !capabilities(c)
            .and_then(|caps| caps.drop)
            .is_some_and(|drop| drop.iter().any(|d| d == "ALL"))
    });
    let mut forbidden = BTreeSet::new();
    let adding = names_where(spec, |c| {
        let adds = capabilities(c)
            .and_then(|caps| caps.add)
            .unwrap_or_default();
        adds.iter().any(|cap| cap != "NET_BIND_SERVICE")
    });
    for c in containers(spec) {
        let adds = capabilities(c)
            .and_then(|caps| caps.add)
            .unwrap_or_default();
        forbidden.extend(adds.into_iter().filter(|cap| cap != "NET_BIND_SERVICE"));
    }
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            named(&missing_drop)
        ));
    }
    if !adding.is_empty() {
        let forbidden: Vec<String> = forbidden.into_iter().collect();
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            named(&adding),
            join_quote(&forbidden)
        ));
    }
    (!details.is_empty()).then(|| Violation {
        reason: "unrestricted capabilities",
        detail: details.join("; "),
    })
}

fn host_namespaces(spec: &PodSpec) -> Option<Violation> {
    let used: Vec<&str> = [
        ("hostIPC", spec.host_ipc),
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
    ]
    .into_iter()
    .filter(|(_, on)| *on == Some(true))
    .map(|(name, _)| name)
    .collect();
    (!used.is_empty()).then(|| Violation {
        reason: "host namespaces",
        detail: used
            .iter()
            .map(|name| format!("{name}=true"))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn host_path_volumes(spec: &PodSpec) -> Option<Violation> {
    let names: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.host_path.is_some())
        .map(|v| v.name.clone())
        .collect();
    (!names.is_empty()).then(|| Violation {
        reason: "hostPath volumes",
        detail: format!(
            "{} {}",
            pluralize("volume", "volumes", names.len()),
            join_quote(&names)
        ),
    })
}

fn host_ports(spec: &PodSpec) -> Option<Violation> {
    let mut ports = BTreeSet::new();
    let bad = names_where(spec, |c| {
        c.ports
            .iter()
            .flatten()
            .any(|p| p.host_port.is_some_and(|h| h != 0))
    });
    for c in containers(spec) {
        ports.extend(
            c.ports
                .iter()
                .flatten()
                .filter_map(|p| p.host_port.filter(|h| *h != 0))
                .map(|h| h.to_string()),
        );
    }
    (!bad.is_empty()).then(|| Violation {
        reason: "hostPort",
        detail: format!(
            "{} {} {} {}",
            named(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            ports.into_iter().collect::<Vec<_>>().join(", ")
        ),
    })
}

fn privileged(spec: &PodSpec) -> Option<Violation> {
    let bad = names_where(spec, |c| {
        c.security_context.as_ref().and_then(|s| s.privileged) == Some(true)
    });
    (!bad.is_empty()).then(|| Violation {
        reason: "privileged",
        detail: format!(
            "{} must not set securityContext.privileged=true",
            named(&bad)
        ),
    })
}

fn proc_mount(spec: &PodSpec) -> Option<Violation> {
    let mut values = BTreeSet::new();
    let bad = names_where(spec, |c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.proc_mount.as_deref())
            .is_some_and(|m| m != "Default")
    });
    for c in containers(spec) {
        if let Some(mount) = c
            .security_context
            .as_ref()
            .and_then(|s| s.proc_mount.clone())
            .filter(|m| m != "Default")
        {
            values.insert(mount);
        }
    }
    let values: Vec<String> = values.into_iter().collect();
    (!bad.is_empty()).then(|| Violation {
        reason: "procMount",
        detail: format!(
            "{} must not set securityContext.procMount to {}",
            named(&bad),
            join_quote(&values)
        ),
    })
}

/// Who sets a pod-or-container field to a bad value: `pod`, `container "a"`, joined with ` and `.
fn setters(pod: bool, containers: &[String]) -> String {
    let mut who = Vec::new();
    if pod {
        who.push("pod".to_owned());
    }
    if !containers.is_empty() {
        who.push(named(containers));
    }
    who.join(" and ")
}

fn run_as_non_root(spec: &PodSpec) -> Option<Violation> {
    let pod_value = spec
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_non_root);
    let own = |c: &Container| c.security_context.as_ref().and_then(|s| s.run_as_non_root);
    let explicit = names_where(spec, |c| own(c) == Some(false));
    if pod_value == Some(false) || !explicit.is_empty() {
        return fail(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters(pod_value == Some(false), &explicit)
            ),
        );
    }
    let implicit = names_where(spec, |c| own(c).is_none() && pod_value != Some(true));
    (!implicit.is_empty()).then(|| Violation {
        reason: "runAsNonRoot != true",
        detail: format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            named(&implicit)
        ),
    })
}

fn run_as_user(spec: &PodSpec) -> Option<Violation> {
    let pod = spec.security_context.as_ref().and_then(|s| s.run_as_user) == Some(0);
    let bad = names_where(spec, |c| {
        c.security_context.as_ref().and_then(|s| s.run_as_user) == Some(0)
    });
    (pod || !bad.is_empty()).then(|| Violation {
        reason: "runAsUser=0",
        detail: format!("{} must not set runAsUser=0", setters(pod, &bad)),
    })
}

fn seccomp(spec: &PodSpec, restricted: bool) -> Option<Violation> {
    let valid = |kind: &str| kind == "RuntimeDefault" || kind == "Localhost";
    let pod_type = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.clone());
    let own = |c: &Container| {
        c.security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref())
            .map(|p| p.type_.clone())
    };
    let bad_value = |kind: &str| {
        if restricted {
            !valid(kind)
        } else {
            kind == "Unconfined"
        }
    };
    let pod_bad = pod_type.as_deref().is_some_and(bad_value);
    let explicit = names_where(spec, |c| own(c).as_deref().is_some_and(bad_value));
    if pod_bad || !explicit.is_empty() {
        let mut values = BTreeSet::new();
        values.extend(pod_type.clone().filter(|t| bad_value(t)));
        for c in containers(spec) {
            values.extend(own(c).filter(|t| bad_value(t)));
        }
        let values: Vec<String> = values.into_iter().collect();
        return fail(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters(pod_bad, &explicit),
                join_quote(&values)
            ),
        );
    }
    if !restricted {
        return None;
    }
    let pod_set = pod_type.as_deref().is_some_and(valid);
    let implicit = names_where(spec, |c| own(c).is_none() && !pod_set);
    (!implicit.is_empty()).then(|| Violation {
        reason: "seccompProfile",
        detail: format!(
            "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
            named(&implicit)
        ),
    })
}

fn se_linux_options(spec: &PodSpec) -> Option<Violation> {
    let allowed_types = [
        "",
        "container_t",
        "container_init_t",
        "container_kvm_t",
        "container_engine_t",
    ];
    let mut bad = BTreeSet::new();
    let mut check = |options: Option<&k8s_openapi::api::core::v1::SELinuxOptions>| {
        let Some(options) = options else {
            return false;
        };
        let mut wrong = false;
        if let Some(kind) = options
            .type_
            .as_deref()
            .filter(|t| !allowed_types.contains(t))
        {
            bad.insert(format!("type {kind:?}"));
            wrong = true;
        }
        if options.user.as_deref().is_some_and(|u| !u.is_empty()) {
            bad.insert(format!(
                "user {:?}",
                options.user.as_deref().unwrap_or_default()
            ));
            wrong = true;
        }
        if options.role.as_deref().is_some_and(|r| !r.is_empty()) {
            bad.insert(format!(
                "role {:?}",
                options.role.as_deref().unwrap_or_default()
            ));
            wrong = true;
        }
        wrong
    };
    let pod = check(
        spec.security_context
            .as_ref()
            .and_then(|s| s.se_linux_options.as_ref()),
    );
    let names = names_where(spec, |c| {
        let options = c
            .security_context
            .as_ref()
            .and_then(|s| s.se_linux_options.clone());
        options.is_some_and(|o| {
            o.type_
                .as_deref()
                .is_some_and(|t| !allowed_types.contains(&t))
                || o.user.as_deref().is_some_and(|u| !u.is_empty())
                || o.role.as_deref().is_some_and(|r| !r.is_empty())
        })
    });
    for c in containers(spec) {
        check(
            c.security_context
                .as_ref()
                .and_then(|s| s.se_linux_options.as_ref()),
        );
    }
    (pod || !names.is_empty()).then(|| Violation {
        reason: "seLinuxOptions",
        detail: format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters(pod, &names),
            bad.into_iter().collect::<Vec<_>>().join("; ")
        ),
    })
}

fn sysctls(spec: &PodSpec) -> Option<Violation> {
    let bad: Vec<String> = spec
        .security_context
        .iter()
        .flat_map(|s| s.sysctls.iter().flatten())
        .filter(|s| !SAFE_SYSCTLS.contains(&s.name.as_str()))
        .map(|s| s.name.clone())
        .collect();
    (!bad.is_empty()).then(|| Violation {
        reason: "forbidden sysctls",
        detail: bad.join(", "),
    })
}

fn windows_host_process(spec: &PodSpec) -> Option<Violation> {
    let host_process = |options: Option<
        &k8s_openapi::api::core::v1::WindowsSecurityContextOptions,
    >| { options.and_then(|o| o.host_process) == Some(true) };
    let pod = host_process(
        spec.security_context
            .as_ref()
            .and_then(|s| s.windows_options.as_ref()),
    );
    let bad = names_where(spec, |c| {
        host_process(
            c.security_context
                .as_ref()
                .and_then(|s| s.windows_options.as_ref()),
        )
    });
    (pod || !bad.is_empty()).then(|| Violation {
        reason: "hostProcess",
        detail: format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters(pod, &bad)
        ),
    })
}

/// The violations of a pod at a level, in the order of Kubernetes' check IDs. Restricted runs baseline's
/// checks too, except those it replaces (volume types, seccomp).
pub fn check(level: LevelVersion, meta: &ObjectMeta, spec: &PodSpec) -> Vec<Violation> {
    let baseline = level.level >= Level::Baseline;
    let restricted = level.level == Level::Restricted;
    let version = level.version;
    let checks = [
        (restricted, allow_privilege_escalation(spec)),
        (baseline, app_armor(meta, spec)),
        (
            baseline && !restricted && version.has(31),
            baseline_volumes(spec),
        ),
        (baseline, capabilities_baseline(spec)),
        (restricted && version.has(22), capabilities_restricted(spec)),
        (baseline, host_namespaces(spec)),
        (baseline && !restricted, host_path_volumes(spec)),
        (baseline, host_ports(spec)),
        (baseline, privileged(spec)),
        (baseline, proc_mount(spec)),
        (restricted, restricted_volumes(spec)),
        (restricted, run_as_non_root(spec)),
        (restricted && version.has(23), run_as_user(spec)),
        (baseline, se_linux_options(spec)),
        (baseline && !restricted, seccomp(spec, false)),
        (restricted, seccomp(spec, true)),
        (baseline, sysctls(spec)),
        (baseline, windows_host_process(spec)),
    ];
    checks
        .into_iter()
        .filter(|(applies, _)| *applies)
        .filter_map(|(_, violation)| violation)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    fn detail(level: Level, value: serde_json::Value) -> String {
        forbidden_detail(&check(
            LevelVersion::latest(level),
            &ObjectMeta::default(),
            &spec(value),
        ))
    }

    #[test]
    fn baseline_refuses_host_paths_ports_and_privilege_in_kubernetes_words() {
        let found = detail(
            Level::Baseline,
            json!({
                "hostNetwork": true,
                "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
                "containers": [{"name": "app", "image": "a.wasm",
                    "ports": [{"containerPort": 80, "hostPort": 8080}],
                    "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}}]
            }),
        );
        assert_eq!(
            found,
            "non-default capabilities (container \"app\" must not include \"NET_ADMIN\" in \
             securityContext.capabilities.add), host namespaces (hostNetwork=true), hostPath volumes \
             (volume \"root\"), hostPort (container \"app\" uses hostPort 8080), privileged (container \"app\" \
             must not set securityContext.privileged=true)"
        );
        assert_eq!(
            detail(
                Level::Privileged,
                json!({"hostNetwork": true, "containers": [{"name": "a"}]})
            ),
            ""
        );
    }

    #[test]
    fn restricted_asks_for_a_hardened_pod() {
        let found = detail(
            Level::Restricted,
            json!({"containers": [{"name": "app", "image": "a.wasm"}]}),
        );
        assert_eq!(
            found,
            "allowPrivilegeEscalation != false (container \"app\" must set \
             securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"app\" must \
             set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"app\" \
             must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"app\" must set \
             securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        let hardened = json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "app", "image": "a.wasm", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
        });
        assert_eq!(detail(Level::Restricted, hardened), "");
    }

    #[test]
    fn namespace_labels_choose_the_policy_and_bad_ones_count_as_restricted() {
        let defaults = Policy::uniform(Level::Baseline);
        let labels = BTreeMap::from([
            (format!("{LABEL_PREFIX}enforce"), "privileged".to_owned()),
            (format!("{LABEL_PREFIX}warn"), "strict".to_owned()),
            (format!("{LABEL_PREFIX}audit-version"), "v1.25".to_owned()),
        ]);
        let (policy, errors) = Policy::of_namespace(&labels, &defaults);
        assert_eq!(policy.enforce.level, Level::Privileged);
        assert_eq!(policy.warn.level, Level::Restricted);
        assert_eq!(policy.audit.to_string(), "baseline:v1.25");
        assert_eq!(errors.len(), 1);
        assert_eq!(label_errors(&labels).len(), 1);
    }

    #[test]
    fn an_admission_configuration_file_sets_defaults_and_exemptions() {
        let text = r#"
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults:
      enforce: baseline
      enforce-version: v1.30
      warn: restricted
    exemptions:
      namespaces: [tools]
      usernames: [ci-bot]
"#;
        let config = Config::from_admission_configuration(text).unwrap();
        assert_eq!(config.defaults.enforce.to_string(), "baseline:v1.30");
        assert_eq!(config.defaults.audit.level, Level::Privileged);
        assert_eq!(config.defaults.warn.level, Level::Restricted);
        assert_eq!(config.exempt_namespaces, ["tools"]);
        assert_eq!(config.exempt_usernames, ["ci-bot"]);
        assert!(Config::from_admission_configuration("kind: Pod").is_err());
    }
}
