//! The objects of a trial's gang, built from data alone (tested without a cluster): a ConfigMap
//! with its `TrialSpec`, a headless Service, and an Indexed Job of `worldSize` pods that get
//! the rendezvous variables, the store credentials, resources, placement and a locked-down
//! security context. Workers get no Kubernetes API rights (no service account token).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use orchestra_api::{DeviceKind, Experiment, Trial, TrialSpec};

use super::names;

/// Operator-wide settings the objects depend on.
#[derive(Clone, Debug)]
pub struct GangConfig {
    /// Worker image when the Experiment names none.
    pub worker_image: String,
    pub image_pull_policy: Option<String>,
    /// Seconds the other ranks wait for one collective (worker `--collective-timeout`).
    pub collective_timeout: u64,
}

impl Default for GangConfig {
    fn default() -> Self {
        GangConfig {
            worker_image: "ghcr.io/orchestra-dev/orchestra-worker:latest".into(),
            image_pull_policy: None,
            collective_timeout: 300,
        }
    }
}

fn owner(kind: &str, api_version: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn experiment_owner(exp: &Experiment) -> OwnerReference {
    owner(
        "Experiment",
        "orchestra.dev/v1alpha1",
        &exp.metadata.name.clone().unwrap_or_default(),
        &exp.metadata.uid.clone().unwrap_or_default(),
    )
}

pub fn trial_owner(trial: &Trial) -> OwnerReference {
    owner(
        "Trial",
        "orchestra.dev/v1alpha1",
        &trial.metadata.name.clone().unwrap_or_default(),
        &trial.metadata.uid.clone().unwrap_or_default(),
    )
}

fn meta(name: String, ns: &str, labels: BTreeMap<String, String>, owner: OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(ns.to_string()),
        labels: Some(labels),
        owner_references: Some(vec![owner]),
        ..Default::default()
    }
}

/// The Trial resource of one candidate, owned by its Experiment.
pub fn trial(exp: &Experiment, spec: &TrialSpec, params: &BTreeMap<String, f64>) -> Trial {
    let ns = exp.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let mut t = Trial::new(&spec.trial, spec.clone());
    t.metadata = meta(
        spec.trial.clone(),
        &ns,
        names::labels(&spec.experiment, Some(&spec.trial)),
        experiment_owner(exp),
    );
    if !params.is_empty() {
        t.metadata.annotations = Some(BTreeMap::from([(
            "orchestra.dev/params".to_string(),
            serde_json::to_string(params).expect("params serialise"),
        )]));
    }
    t
}

/// Metadata of an object of `trial`'s gang: its namespace, labels and owner.
fn trial_object_meta(trial: &Trial, object_name: String) -> ObjectMeta {
    let name = trial.metadata.name.clone().unwrap_or_default();
    let ns = trial
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    meta(
        object_name,
        &ns,
        names::labels(&trial.spec.experiment, Some(&name)),
        trial_owner(trial),
    )
}

pub fn spec_config_map(trial: &Trial) -> ConfigMap {
    let name = trial.metadata.name.clone().unwrap_or_default();
    ConfigMap {
        metadata: trial_object_meta(trial, names::spec_config_map(&name)),
        data: Some(BTreeMap::from([(
            "trial.yaml".to_string(),
            serde_yaml::to_string(&trial.spec).expect("trial spec serialises"),
        )])),
        ..Default::default()
    }
}

pub fn service(trial: &Trial) -> Service {
    let name = trial.metadata.name.clone().unwrap_or_default();
    Service {
        metadata: trial_object_meta(trial, names::service(&name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Ranks resolve rank 0 before any readiness: workers have no readiness probe.
            publish_not_ready_addresses: Some(true),
            selector: Some(BTreeMap::from([(names::LABEL_TRIAL.to_string(), name.clone())])),
            ports: Some(
                names::GANG_PORTS
                    .iter()
                    .map(|(name, port)| ServicePort {
                        name: Some(name.to_string()),
                        port: *port,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn quantity(s: &str) -> Quantity {
    Quantity(s.to_string())
}

/// The collectives backend of a gang: NCCL on GPUs, TCP through rank 0 on CPUs (no mpirun
/// starts a Job's pods).
pub fn dist_backend(spec: &TrialSpec) -> &'static str {
    match (spec.device, spec.world_size) {
        (_, 1) => "single",
        (DeviceKind::Cuda, _) => "nccl",
        (DeviceKind::Cpu, _) => "tcp",
    }
}

/// Gang `attempt` of a trial, training to step `until`: an Indexed Job, one pod per rank. Any
/// failed pod fails the Job (backoffLimit 0), and the operator restarts the whole gang from the
/// checkpoint.
pub fn job(exp: &Experiment, trial: &Trial, attempt: u32, until: u64, cfg: &GangConfig) -> Job {
    let name = trial.metadata.name.clone().unwrap_or_default();
    let ns = trial
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let spec = &trial.spec;
    let world = spec.world_size.max(1) as i32;
    let mut labels = names::labels(&spec.experiment, Some(&name));
    labels.insert(names::LABEL_ATTEMPT.into(), attempt.to_string());
    let env = worker_env(exp, &name, attempt, world);
    let pod = worker_pod(exp, &name, worker_container(exp, trial, env, until, cfg));
    // Under Kueue the Job waits suspended in its queue until admitted.
    let mut job_labels = labels.clone();
    if let Some(queue) = &exp.spec.queue_name {
        job_labels.insert(names::LABEL_KUEUE_QUEUE.into(), queue.clone());
    }
    Job {
        metadata: meta(names::job(&name, attempt), &ns, job_labels, trial_owner(trial)),
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: Some(world),
            parallelism: Some(world),
            backoff_limit: Some(0),
            suspend: exp.spec.queue_name.is_some().then_some(true),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The worker's environment: the rendezvous (rank from the Job's completion index), threads
/// for its CPU request, caches on the writable volumes. Sorted by name.
fn worker_env(exp: &Experiment, name: &str, attempt: u32, world: i32) -> Vec<EnvVar> {
    let res = &exp.spec.resources;
    let env_value = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    };
    let mut env = vec![
        env_value("MASTER_ADDR", names::master_addr(name, attempt)),
        env_value("MASTER_PORT", names::RENDEZVOUS_PORT.to_string()),
        env_value("WORLD_SIZE", world.to_string()),
        EnvVar {
            name: "RANK".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.annotations['batch.kubernetes.io/job-completion-index']".into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
        },
        env_value("ORCHESTRA_THREADS", cpu_threads(&res.cpu).to_string()),
        env_value("ORCHESTRA_DATA_CACHE", "/cache/datasets".into()),
        env_value("HOME", "/tmp".into()),
    ];
    env.sort_by(|a, b| a.name.cmp(&b.name));
    env
}

/// The worker container: `orchestra-worker train` on the mounted spec, resumable (to a rung of
/// the search with `--until`), with the store's credentials from a Secret, requests equal to
/// limits, no privileges.
fn worker_container(
    exp: &Experiment,
    trial: &Trial,
    env: Vec<EnvVar>,
    until: u64,
    cfg: &GangConfig,
) -> Container {
    let spec = &trial.spec;
    let res = &exp.spec.resources;
    let mut amounts = BTreeMap::from([
        ("cpu".to_string(), quantity(&res.cpu)),
        ("memory".to_string(), quantity(&res.memory)),
    ]);
    if res.gpus > 0 {
        amounts.insert(res.gpu_resource_name().into(), quantity(&res.gpus.to_string()));
    }
    let mut args: Vec<String> = [
        "--log-json",
        "train",
        "--spec",
        &format!("{}/trial.yaml", names::SPEC_DIR),
        "--resume",
        "--no-progress",
        "--dist",
        dist_backend(spec),
        "--collective-timeout",
        &cfg.collective_timeout.to_string(),
    ]
    .map(String::from)
    .to_vec();
    if until < spec.steps {
        args.extend(["--until".to_string(), until.to_string()]);
    }
    Container {
        name: "worker".into(),
        image: Some(exp.spec.image.clone().unwrap_or_else(|| cfg.worker_image.clone())),
        image_pull_policy: cfg.image_pull_policy.clone(),
        command: Some(vec!["orchestra-worker".into()]),
        args: Some(args),
        env: Some(env),
        env_from: exp.spec.store_secret.as_ref().map(|s| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: s.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }]
        }),
        ports: Some(
            names::GANG_PORTS
                .iter()
                .map(|(name, port)| ContainerPort {
                    name: Some(name.to_string()),
                    container_port: *port,
                    ..Default::default()
                })
                .collect(),
        ),
        resources: Some(ResourceRequirements {
            requests: Some(amounts.clone()),
            limits: Some(amounts),
            ..Default::default()
        }),
        security_context: Some(restricted_container()),
        volume_mounts: Some(worker_mounts()),
        ..Default::default()
    }
}

/// No privileges, no escalation, a read-only root file system.
fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..Default::default()
    }
}

/// The spec (read-only), and writable scratch and cache volumes.
fn worker_mounts() -> Vec<VolumeMount> {
    vec![
        VolumeMount {
            name: "spec".into(),
            mount_path: names::SPEC_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
        VolumeMount {
            name: "cache".into(),
            mount_path: "/cache".into(),
            ..Default::default()
        },
    ]
}

/// The gang's pod: the worker, its spec ConfigMap and scratch volumes, the Experiment's node
/// placement, a restricted security context, never restarted in place (the gang is).
fn worker_pod(exp: &Experiment, name: &str, container: Container) -> PodSpec {
    let empty = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".into()),
        subdomain: Some(names::service(name)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        node_selector: (!exp.spec.node_selector.is_empty()).then(|| exp.spec.node_selector.clone()),
        tolerations: (!exp.spec.tolerations.is_empty()).then(|| exp.spec.tolerations.clone()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            fs_group: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volumes: Some(vec![
            Volume {
                name: "spec".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: names::spec_config_map(name),
                    ..Default::default()
                }),
                ..Default::default()
            },
            empty("tmp"),
            empty("cache"),
        ]),
        ..Default::default()
    }
}

/// Torch threads for a CPU request ("2", "1500m" -> 1, at least 1).
fn cpu_threads(cpu: &str) -> u32 {
    let cores = match cpu.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().map(|m| m / 1000.0),
        None => cpu.parse::<f64>(),
    };
    cores.map_or(1, |c| (c.floor() as u32).max(1))
}

/// The leaderboard as a ConfigMap (Markdown and JSON), owned by the Experiment.
pub fn leaderboard_config_map(exp: &Experiment, markdown: String, json: String) -> ConfigMap {
    let name = exp.metadata.name.clone().unwrap_or_default();
    let ns = exp.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    ConfigMap {
        metadata: meta(
            names::leaderboard_config_map(&name),
            &ns,
            names::labels(&name, None),
            experiment_owner(exp),
        ),
        data: Some(BTreeMap::from([
            ("leaderboard.md".to_string(), markdown),
            ("leaderboard.json".to_string(), json),
        ])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_follow_the_cpu_request() {
        assert_eq!(cpu_threads("4"), 4);
        assert_eq!(cpu_threads("1500m"), 1);
        assert_eq!(cpu_threads("250m"), 1);
        assert_eq!(cpu_threads("junk"), 1);
    }
}
