//! The pods kube-scheduler binds to this node, run as local processes: their ConfigMaps,
//! Secrets and tokens fetched, volumes written, init containers in order, then the containers,
//! each a process in its own process group with its log in the pod's folder. Status is reported
//! as it changes; a deleted pod's processes get SIGTERM, then SIGKILL after the grace period,
//! and the pod is then removed for good (as the kubelet does, with grace 0).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use crate::env::{container_env, expand, Sources};
use crate::images::ImageMap;
use crate::network::{pod_hostname, PodNetwork, Sandbox};
use crate::now_rfc3339;
use crate::pod_status::{pod_status, ContainerReport, ContainerState, Exit};
use crate::volumes::{materialize, Mounts};

/// Settings shared by every pod of the node.
pub struct Agent {
    pub client: Client,
    pub node: String,
    pub ip: String,
    pub root: PathBuf,
    pub images: ImageMap,
    /// Variables every container starts with (what an image would bake in, e.g. PATH).
    pub base_env: Vec<(String, String)>,
    /// A network namespace and address per pod, or none (pods share the node's address).
    pub network: Option<PodNetwork>,
    pods: Mutex<HashMap<String, Running>>,
    /// The agent is stopping: processes are killed, but the pods stay as they are in the API
    /// (a node going away does not finish its pods; the node lifecycle controller deals with them).
    shutting_down: AtomicBool,
}

/// A pod this agent is running: its stop signal (the grace period in seconds).
struct Running {
    stop: watch::Sender<Option<u64>>,
}

/// What every container of one pod shares: when the pod started, its address, its host name
/// and its sandbox (when the node has a pod network).
struct PodRun {
    started: String,
    ip: String,
    hostname: String,
    sandbox: Option<Sandbox>,
}

impl Agent {
    pub fn new(
        client: Client,
        node: String,
        ip: String,
        root: PathBuf,
        images: ImageMap,
        base_env: Vec<(String, String)>,
        network: Option<PodNetwork>,
    ) -> Agent {
        Agent {
            client,
            node,
            ip,
            root,
            images,
            base_env,
            network,
            pods: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// One watch event's view of a pod bound to this node.
    pub fn observe(self: &Arc<Self>, pod: Pod) {
        let uid = pod.uid().unwrap_or_default();
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let terminal = phase == "Succeeded" || phase == "Failed";
        let mut pods = self.pods.lock().expect("pod table");
        if pod.metadata.deletion_timestamp.is_some() {
            match pods.get(&uid) {
                Some(r) => {
                    let grace = pod
                        .metadata
                        .deletion_grace_period_seconds
                        .or(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
                        .unwrap_or(30)
                        .max(0) as u64;
                    r.stop.send_if_modified(|g| {
                        let tighter = g.is_none_or(|old| grace < old);
                        if tighter {
                            *g = Some(grace);
                        }
                        tighter
                    });
                }
                // Not running here (finished, or never started): the pod can go now.
                None => {
                    let agent = self.clone();
                    tokio::spawn(async move { agent.remove(&pod).await });
                }
            }
        } else if !terminal && !pods.contains_key(&uid) {
            let (stop, stopped) = watch::channel(None);
            pods.insert(uid.clone(), Running { stop });
            let agent = self.clone();
            tokio::spawn(async move {
                agent.clone().run(pod, stopped).await;
                agent.pods.lock().expect("pod table").remove(&uid);
            });
        }
    }

    /// The pod is gone from the API server: stop its processes at once.
    pub fn forget(&self, pod: &Pod) {
        if let Some(r) = self
            .pods
            .lock()
            .expect("pod table")
            .get(&pod.uid().unwrap_or_default())
        {
            r.stop.send_replace(Some(0));
        }
    }

    /// Stops every process (the agent is shutting down) and waits for the pods' tasks.
    pub async fn stop_all(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for r in self.pods.lock().expect("pod table").values() {
            r.stop.send_replace(Some(0));
        }
        for _ in 0..100 {
            if self.pods.lock().expect("pod table").is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn remove(&self, pod: &Pod) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &params).await {
            Ok(_) => tracing::info!(pod = %pod.name_any(), "pod removed"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(pod = %pod.name_any(), error = %e, "removing the pod failed"),
        }
    }

    fn pod_dir(&self, pod: &Pod) -> PathBuf {
        self.root.join(format!(
            "{}_{}_{}",
            pod.namespace().unwrap_or_default(),
            pod.name_any(),
            pod.uid().unwrap_or_default()
        ))
    }

    async fn report(&self, pod: &Pod, run: &PodRun, reports: &[ContainerReport]) {
        if self.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let never = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("Never");
        let status = pod_status(&self.ip, &run.ip, &run.started, reports, never);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        // A status that cannot be written now is written again with the next change, so a
        // passing one is tried a few times only. The last one (the pod finished) has no next
        // change: it is retried until it lands, the pod is gone or the agent stops, however
        // long the API server is away (a Job whose pod never reads as finished never
        // completes, and its trial would wait for ever).
        let terminal = matches!(status["phase"].as_str(), Some("Succeeded" | "Failed"));
        let mut attempt = 0u32;
        loop {
            match api
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(json!({"status": status})),
                )
                .await
            {
                Ok(_) => return,
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), error = %e, attempt, terminal, "pod status update failed");
                    if (!terminal && attempt >= 5) || self.shutting_down.load(Ordering::SeqCst) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200 << attempt.min(4))).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Everything the pod's volumes and variables refer to, or why it cannot be had.
    async fn sources(&self, pod: &Pod) -> Result<Sources, String> {
        let ns = pod.namespace().unwrap_or_default();
        let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
        // Each named once, however many volumes and variables refer to it.
        let mut cms = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        let mut token = false;
        for v in spec.volumes.iter().flatten() {
            if let Some(c) = &v.config_map {
                cms.insert(c.name.clone());
            }
            if let Some(s) = &v.secret {
                secrets.insert(s.secret_name.clone().unwrap_or_default());
            }
            for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
                cms.extend(p.config_map.as_ref().map(|c| c.name.clone()));
                secrets.extend(p.secret.as_ref().map(|s| s.name.clone()));
                token |= p.service_account_token.is_some();
            }
        }
        for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
            for f in c.env_from.iter().flatten() {
                cms.extend(f.config_map_ref.as_ref().map(|c| c.name.clone()));
                secrets.extend(f.secret_ref.as_ref().map(|s| s.name.clone()));
            }
            for e in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
                cms.extend(e.config_map_key_ref.as_ref().map(|k| k.name.clone()));
                secrets.extend(e.secret_key_ref.as_ref().map(|k| k.name.clone()));
            }
        }
        let mut src = Sources::default();
        let cm_api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
        src.config_maps = fetch(&cm_api, "ConfigMap", cms, |cm| {
            let text = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()));
            let binary = cm
                .binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0));
            text.chain(binary).collect()
        })
        .await?;
        let secret_api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        src.secrets = fetch(&secret_api, "Secret", secrets, |s| {
            let data = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0));
            let text = s
                .string_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()));
            data.chain(text).collect()
        })
        .await?;
        if token {
            src.service_account_token = Some(self.token(pod).await?);
        }
        Ok(src)
    }

    /// A token of the pod's service account bound to the pod (TokenRequest, as the kubelet).
    async fn token(&self, pod: &Pod) -> Result<String, String> {
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let api: Api<ServiceAccount> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let request: TokenRequest = serde_json::from_value(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [], "expirationSeconds": 3600,
                     "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "uid": pod.uid()}}
        }))
        .map_err(|e| e.to_string())?;
        // (The client serializes the body itself: bytes would go as a JSON array of numbers.)
        let answer: TokenRequest = api
            .create_subresource("token", &sa, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("requesting a token of service account {sa}: {e}"))?;
        Ok(answer.status.map(|s| s.token).unwrap_or_default())
    }

    /// What the kubelet does when a pod cannot start yet: every container waits with `reason`
    /// and `message`, reported, and the caller tries again in 2 s; false if the pod is stopped
    /// meanwhile.
    async fn wait_to_retry(
        &self,
        pod: &Pod,
        run: &PodRun,
        reports: &Mutex<Vec<ContainerReport>>,
        reason: &str,
        message: String,
        stop: &mut watch::Receiver<Option<u64>>,
    ) -> bool {
        tracing::warn!(pod = %pod.name_any(), %message, reason, "the pod cannot start yet");
        let now = {
            let mut r = reports.lock().expect("reports");
            for c in r.iter_mut() {
                c.state = ContainerState::Waiting {
                    reason: reason.into(),
                    message: message.clone(),
                };
            }
            r.clone()
        };
        self.report(pod, run, &now).await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => true,
            _ = stop.changed() => false,
        }
    }

    /// The pod's host name, and its sandbox when the node has a pod network: retried until it
    /// can be made (or the pod is stopped), with the reason in the containers' waiting state.
    async fn pod_run(
        &self,
        pod: &Pod,
        dir: &Path,
        reports: &Mutex<Vec<ContainerReport>>,
        stop: &mut watch::Receiver<Option<u64>>,
    ) -> Option<PodRun> {
        let spec = pod.spec.as_ref();
        let ns = pod.namespace().unwrap_or_default();
        let domain = self
            .network
            .as_ref()
            .map_or("cluster.local", |n| n.config.domain.as_str());
        let (hostname, fqdn) = pod_hostname(
            &pod.name_any(),
            spec.and_then(|s| s.hostname.as_deref()),
            spec.and_then(|s| s.subdomain.as_deref()),
            &ns,
            domain,
        );
        let mut run = PodRun {
            started: now_rfc3339(),
            ip: self.ip.clone(),
            hostname,
            sandbox: None,
        };
        let Some(net) = &self.network else {
            return Some(run);
        };
        loop {
            let uid = pod.uid().unwrap_or_default();
            match net.create(&uid, &ns, &run.hostname, fqdn.as_deref(), dir).await {
                Ok(sandbox) => {
                    run.ip = sandbox.ip.to_string();
                    run.sandbox = Some(sandbox);
                    return Some(run);
                }
                Err(e) => {
                    let message = format!("creating the pod sandbox: {e}");
                    if !self
                        .wait_to_retry(pod, &run, reports, "ContainerCreating", message, stop)
                        .await
                    {
                        return None;
                    }
                }
            }
        }
    }

    /// The whole life of one pod on this node.
    async fn run(self: Arc<Self>, pod: Pod, mut stop: watch::Receiver<Option<u64>>) {
        let spec = pod.spec.clone().unwrap_or_default();
        let inits = spec.init_containers.clone().unwrap_or_default();
        let mains = spec.containers.clone();
        let reports = Arc::new(Mutex::new(waiting_reports(&inits, &mains)));
        let snapshot = |r: &Arc<Mutex<Vec<ContainerReport>>>| r.lock().expect("reports").clone();
        let dir = self.pod_dir(&pod);
        let Some(mut run) = self.pod_run(&pod, &dir, &reports, &mut stop).await else {
            if !self.shutting_down.load(Ordering::SeqCst) {
                self.remove(&pod).await;
            }
            return;
        };
        self.report(&pod, &run, &snapshot(&reports)).await;

        // Volumes and variables: retried until their sources exist, as the kubelet does.
        let sources = loop {
            let prepared = match self.sources(&pod).await {
                Ok(src) => materialize(&pod, &dir, &src)
                    .map(|_| src)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match prepared {
                Ok(src) => break Some(src),
                Err(message) => {
                    let reason = "CreateContainerConfigError";
                    if !self
                        .wait_to_retry(&pod, &run, &reports, reason, message, &mut stop)
                        .await
                    {
                        break None;
                    }
                }
            }
        };
        let mut ok = sources.is_some();
        if let Some(src) = &sources {
            for (i, c) in inits.iter().enumerate() {
                ok = self
                    .container(&pod, &dir, c, i, src, &reports, &run, stop.clone())
                    .await;
                if !ok {
                    break;
                }
            }
            if ok {
                let offset = inits.len();
                let runs = mains.iter().enumerate().map(|(i, c)| {
                    self.container(&pod, &dir, c, offset + i, src, &reports, &run, stop.clone())
                });
                join_all(runs).await;
            }
        }
        if let (Some(net), Some(sandbox)) = (&self.network, run.sandbox.take()) {
            net.destroy(sandbox).await;
        }
        // The pod is finished here; if it is being deleted, it goes for good.
        let deleting = stop.borrow().is_some();
        if deleting && !self.shutting_down.load(Ordering::SeqCst) {
            self.remove(&pod).await;
        }
    }

    /// Runs container `index` of the pod until it is done for good (by its restart policy) or
    /// the pod stops; returns whether it succeeded.
    #[allow(clippy::too_many_arguments)]
    async fn container(
        &self,
        pod: &Pod,
        dir: &Path,
        c: &Container,
        index: usize,
        src: &Sources,
        reports: &Arc<Mutex<Vec<ContainerReport>>>,
        run: &PodRun,
        mut stop: watch::Receiver<Option<u64>>,
    ) -> bool {
        let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.clone());
        let is_init = reports.lock().expect("reports")[index].init;
        let set = |state: ContainerState| {
            let mut r = reports.lock().expect("reports");
            r[index].state = state;
            r.clone()
        };
        let mut backoff = Duration::from_secs(1);
        loop {
            let prepared = self.command(pod, dir, c, src, run);
            let mut cmd = match prepared {
                Ok(cmd) => cmd,
                Err((reason, message)) => {
                    tracing::warn!(pod = %pod.name_any(), container = %c.name, %message, "cannot start");
                    self.report(pod, run, &set(ContainerState::Waiting { reason, message }))
                        .await;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                        _ = stop.changed() => return false,
                    }
                }
            };
            let mut child = match cmd.spawn() {
                Ok(child) => child,
                Err(e) => {
                    let (reason, message) = ("RunContainerError".into(), format!("starting {}: {e}", c.name));
                    self.report(pod, run, &set(ContainerState::Waiting { reason, message }))
                        .await;
                    return false;
                }
            };
            let pid = child.id().unwrap_or_default();
            let since = now_rfc3339();
            tracing::info!(pod = %pod.name_any(), container = %c.name, pid, "started");
            self.report(
                pod,
                run,
                &set(ContainerState::Running {
                    started_at: since.clone(),
                    pid,
                }),
            )
            .await;
            let status = wait_or_stop(&mut child, pid, &mut stop).await;
            let exit = exit_of(status, since, pid);
            let (code, signal) = (exit.exit_code, exit.signal);
            tracing::info!(pod = %pod.name_any(), container = %c.name, code, ?signal, "exited");
            let succeeded = code == 0 && signal.is_none();
            self.report(pod, run, &set(ContainerState::Terminated(exit)))
                .await;
            let stopping = stop.borrow().is_some();
            if stopping || !restarts(policy.as_deref(), is_init, succeeded) {
                return succeeded;
            }
            reports.lock().expect("reports")[index].restarts += 1;
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return false,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// The container's process, ready to spawn, or the waiting reason and message.
    fn command(
        &self,
        pod: &Pod,
        dir: &Path,
        c: &Container,
        src: &Sources,
        run: &PodRun,
    ) -> Result<tokio::process::Command, (String, String)> {
        let image = c.image.clone().unwrap_or_default();
        let command = c.command.clone().unwrap_or_default();
        let exe = self
            .images
            .executable(&image, &command)
            .map_err(|e| ("ErrImagePull".to_string(), e.to_string()))?;
        let config = |e: String| ("CreateContainerConfigError".to_string(), e);
        let env = container_env(pod, c, src).map_err(|e| config(e.to_string()))?;
        let mounts = Mounts::of(pod, c, dir).map_err(|e| config(e.to_string()))?;
        let mut vars = self.base_env.clone();
        vars.push(("HOSTNAME".into(), run.hostname.clone()));
        for (k, v) in env {
            vars.retain(|(name, _)| *name != k);
            vars.push((k, mounts.rewrite(&v)));
        }
        let args: Vec<String> = command
            .iter()
            .skip(1)
            .chain(c.args.iter().flatten())
            .map(|a| mounts.rewrite(&expand(a, &vars)))
            .collect();
        let workdir = c
            .working_dir
            .as_deref()
            .map(|w| PathBuf::from(mounts.rewrite(w)))
            .unwrap_or_else(|| dir.to_path_buf());
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| config(format!("{}: {e}", logs.display())))?;
        let log_path = logs.join(format!("{}.log", c.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| config(format!("{}: {e}", log_path.display())))?;
        let err_log = log.try_clone().map_err(|e| config(e.to_string()))?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(args)
            .env_clear()
            .envs(vars)
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches only the child's own process state.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        if let Some(sandbox) = &run.sandbox {
            sandbox
                .enter(&mut cmd)
                .map_err(|e| ("RunContainerError".to_string(), e.to_string()))?;
        }
        Ok(cmd)
    }
}

/// The data of each named object that exists (an absent one is for the volume or variable that
/// names it to judge: it may be optional).
async fn fetch<K>(
    api: &Api<K>,
    kind: &str,
    names: BTreeSet<String>,
    data: impl Fn(K) -> BTreeMap<String, Vec<u8>>,
) -> Result<BTreeMap<String, BTreeMap<String, Vec<u8>>>, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut found = BTreeMap::new();
    for name in names {
        match api.get_opt(&name).await {
            Ok(Some(obj)) => {
                found.insert(name, data(obj));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("reading {kind} {name}: {e}")),
        }
    }
    Ok(found)
}

/// An init container that succeeded is done; it never runs again.
/// Each container's report before anything started: init containers PodInitializing, the
/// others ContainerCreating.
fn waiting_reports(inits: &[Container], mains: &[Container]) -> Vec<ContainerReport> {
    inits
        .iter()
        .map(|c| (c, true))
        .chain(mains.iter().map(|c| (c, false)))
        .map(|(c, init)| ContainerReport {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: ContainerState::Waiting {
                reason: if init {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                }
                .into(),
                message: String::new(),
            },
            restarts: 0,
            init,
        })
        .collect()
}

fn is_init_done(is_init: bool, succeeded: bool) -> bool {
    is_init && succeeded
}

/// Whether a container that ended starts again, by the pod's restart policy (Always when unset)
/// and, for an init container, only until it has succeeded.
fn restarts(policy: Option<&str>, is_init: bool, succeeded: bool) -> bool {
    !is_init_done(is_init, succeeded)
        && match policy.unwrap_or("Always") {
            "Always" => true,
            "OnFailure" => !succeeded,
            _ => false,
        }
}

/// Waits for a container's process; if the pod is stopped first, SIGTERM to its process group
/// and SIGKILL after the pod's grace period. Whatever the container left in its process group
/// goes with it.
async fn wait_or_stop(
    child: &mut tokio::process::Child,
    pid: u32,
    stop: &mut watch::Receiver<Option<u64>>,
) -> std::io::Result<std::process::ExitStatus> {
    // The grace period once the pod is stopped (the watch's guard is not held across awaits).
    let stopped = async {
        let requested = stop.wait_for(|g| g.is_some()).await.map(|g| g.unwrap_or(0));
        requested.unwrap_or(0)
    };
    let status = tokio::select! {
        s = child.wait() => s,
        grace = stopped => {
            signal_group(pid, libc::SIGTERM);
            match tokio::time::timeout(Duration::from_secs(grace), child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    signal_group(pid, libc::SIGKILL);
                    child.wait().await
                }
            }
        }
    };
    signal_group(pid, libc::SIGKILL);
    status
}

/// How a container's process ended, as the pod's status tells it (a signal as 128 + its number,
/// as a shell would; 255 when it could not be waited for).
fn exit_of(status: std::io::Result<std::process::ExitStatus>, started_at: String, pid: u32) -> Exit {
    let (exit_code, signal) = match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            (s.code().unwrap_or(128 + s.signal().unwrap_or(0)), s.signal())
        }
        Err(_) => (255, None),
    };
    Exit {
        exit_code,
        signal,
        started_at,
        finished_at: now_rfc3339(),
        pid,
    }
}

fn signal_group(pid: u32, signal: i32) {
    if pid > 0 {
        // SAFETY: kill(2) on a process group we created (the child's pid is its group id).
        unsafe {
            libc::kill(-(pid as i32), signal);
        }
    }
}
