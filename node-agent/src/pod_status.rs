//! The pod status the agent reports, as the kubelet spells it: phase, conditions, addresses and
//! one status per container (waiting with a reason, running since, terminated with its exit
//! code). Pure: built from what the agent knows, sent as a strategic-merge patch.

use serde_json::{json, Value};

/// What one container is doing now.
#[derive(Clone, Debug, PartialEq)]
pub enum ContainerState {
    Waiting { reason: String, message: String },
    Running { started_at: String, pid: u32 },
    Terminated(Exit),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Exit {
    pub exit_code: i32,
    /// The signal that ended the process, if one did.
    pub signal: Option<i32>,
    pub started_at: String,
    pub finished_at: String,
    pub pid: u32,
}

impl Exit {
    pub fn reason(&self) -> &'static str {
        match (self.exit_code, self.signal) {
            (0, None) => "Completed",
            (_, Some(9)) => "Killed",
            _ => "Error",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ContainerReport {
    pub name: String,
    pub image: String,
    pub state: ContainerState,
    pub restarts: u32,
    pub init: bool,
}

/// Status of a pod on the node at `host_ip`, with its own address `pod_ip` (the node's when
/// pods share it), whose containers are as `containers` say.
pub fn pod_status(
    host_ip: &str,
    pod_ip: &str,
    started: &str,
    containers: &[ContainerReport],
    restart_never: bool,
) -> Value {
    let (init, main): (Vec<&ContainerReport>, Vec<&ContainerReport>) =
        containers.iter().partition(|c| c.init);
    let terminated = |c: &&ContainerReport| matches!(c.state, ContainerState::Terminated(_));
    let succeeded = |c: &&ContainerReport| matches!(&c.state, ContainerState::Terminated(e) if e.exit_code == 0 && e.signal.is_none());
    let init_done = init.iter().all(succeeded);
    let init_failed = init.iter().any(|c| terminated(c) && !succeeded(c));
    let all_running = !main.is_empty()
        && main
            .iter()
            .all(|c| matches!(c.state, ContainerState::Running { .. }));
    let phase = if init_failed && restart_never {
        "Failed"
    } else if !main.is_empty() && main.iter().all(terminated) && (restart_never || main.iter().all(succeeded))
    {
        if main.iter().all(succeeded) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if init_done
        && main
            .iter()
            .any(|c| !matches!(c.state, ContainerState::Waiting { .. }))
    {
        "Running"
    } else {
        "Pending"
    };
    let ready = phase == "Running" && all_running;
    let finished = phase == "Succeeded" || phase == "Failed";
    let cond = |kind: &str, ok: bool, reason: Option<&str>| {
        let mut c =
            json!({"type": kind, "status": if ok { "True" } else { "False" }, "lastTransitionTime": started});
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        c
    };
    let not_ready_reason = if finished {
        Some("PodCompleted")
    } else {
        Some("ContainersNotReady")
    };
    let statuses =
        |list: &[&ContainerReport]| -> Vec<Value> { list.iter().map(|c| container_status(c)).collect() };
    let mut status = json!({
        "phase": phase,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": started,
        "conditions": [
            cond("PodScheduled", true, None),
            cond("Initialized", init_done, (!init_done).then_some("ContainersNotInitialized")),
            cond("ContainersReady", ready, (!ready).then_some(not_ready_reason).flatten()),
            cond("Ready", ready, (!ready).then_some(not_ready_reason).flatten()),
        ],
        "containerStatuses": statuses(&main),
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(statuses(&init));
    }
    status
}

fn container_status(c: &ContainerReport) -> Value {
    let (state, ready, started, id) = match &c.state {
        ContainerState::Waiting { reason, message } => (
            json!({"waiting": {"reason": reason, "message": message}}),
            false,
            false,
            None,
        ),
        ContainerState::Running { started_at, pid } => (
            json!({"running": {"startedAt": started_at}}),
            true,
            true,
            Some(*pid),
        ),
        ContainerState::Terminated(e) => {
            let mut t = json!({"exitCode": e.exit_code, "reason": e.reason(), "startedAt": e.started_at, "finishedAt": e.finished_at,
                "containerID": format!("process://{}", e.pid)});
            if let Some(s) = e.signal {
                t["signal"] = json!(s);
            }
            (json!({"terminated": t}), false, false, Some(e.pid))
        }
    };
    let mut s = json!({
        "name": c.name,
        "image": c.image,
        "imageID": "",
        "ready": ready,
        "started": started,
        "restartCount": c.restarts,
        "state": state,
    });
    if let Some(pid) = id {
        s["containerID"] = json!(format!("process://{pid}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: ContainerState) -> ContainerReport {
        ContainerReport {
            name: "worker".into(),
            image: "w".into(),
            state,
            restarts: 0,
            init: false,
        }
    }

    fn exit(code: i32, signal: Option<i32>) -> ContainerState {
        ContainerState::Terminated(Exit {
            exit_code: code,
            signal,
            started_at: "t0".into(),
            finished_at: "t1".into(),
            pid: 7,
        })
    }

    #[test]
    fn phases_follow_the_containers() {
        let phase = |s: ContainerState, never: bool| {
            pod_status("127.0.0.1", "127.0.0.1", "t0", &[report(s)], never)["phase"].clone()
        };
        let waiting = ContainerState::Waiting {
            reason: "ErrImagePull".into(),
            message: "m".into(),
        };
        assert_eq!(phase(waiting, true), "Pending");
        assert_eq!(
            phase(
                ContainerState::Running {
                    started_at: "t".into(),
                    pid: 3
                },
                true
            ),
            "Running"
        );
        assert_eq!(phase(exit(0, None), true), "Succeeded");
        assert_eq!(phase(exit(1, None), true), "Failed");
        assert_eq!(phase(exit(137, Some(9)), true), "Failed");
        // Under restartPolicy Always a failed container is restarted: the pod stays Running.
        assert_eq!(phase(exit(1, None), false), "Running");
    }

    #[test]
    fn a_terminated_container_reports_its_exit_code_and_reason() {
        let s = pod_status("127.0.0.1", "127.0.0.1", "t0", &[report(exit(3, None))], true);
        let t = &s["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(t["exitCode"], 3);
        assert_eq!(t["reason"], "Error");
        assert_eq!(s["conditions"][3]["status"], "False");
        assert_eq!(s["conditions"][3]["reason"], "PodCompleted");
        let killed = pod_status(
            "127.0.0.1",
            "127.0.0.1",
            "t0",
            &[report(exit(137, Some(9)))],
            true,
        );
        assert_eq!(
            killed["containerStatuses"][0]["state"]["terminated"]["reason"],
            "Killed"
        );
    }

    #[test]
    fn a_failed_init_container_fails_a_never_restarted_pod() {
        let mut init = report(exit(2, None));
        init.init = true;
        let main = report(ContainerState::Waiting {
            reason: "PodInitializing".into(),
            message: String::new(),
        });
        let s = pod_status("127.0.0.1", "10.200.3.10", "t0", &[init, main], true);
        assert_eq!(s["podIP"], "10.200.3.10");
        assert_eq!(s["hostIP"], "127.0.0.1");
        assert_eq!(s["phase"], "Failed");
        assert_eq!(
            s["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
            2
        );
    }
}
