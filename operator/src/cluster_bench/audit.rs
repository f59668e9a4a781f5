//! Every request the API server served during the benchmark, counted by who sent it, verb and
//! resource, from its audit log (scripts/cluster.sh writes one, with reads too under
//! CLUSTER_AUDIT_READS=1). `apiserver_request_total` has no user-agent label, so the audit log
//! is where the server says which client asked.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One audit event, the fields counted.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(rename = "auditID")]
    audit_id: String,
    #[serde(default)]
    request_received_timestamp: String,
    verb: String,
    #[serde(default)]
    user_agent: String,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: Option<String>,
}

/// Requests of one client, verb and resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RequestKind {
    pub client: String,
    pub verb: String,
    /// `jobs`, `trials/status`, ...
    pub resource: String,
}

impl RequestKind {
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

/// The client a user agent names: the program (`orchestra-operator`, `kube-scheduler`, `kwok`,
/// ...), and for the controller manager the controller, which its user agent ends with.
pub fn client_of(user_agent: &str) -> String {
    let program = user_agent.split('/').next().unwrap_or("").trim();
    let program = if program.is_empty() { "(none)" } else { program };
    if program == "kube-controller-manager" {
        // With --use-service-account-credentials it ends with the controller's service account.
        let last = user_agent.rsplit('/').next().unwrap_or("");
        let controller = last.rsplit(':').next().unwrap_or("");
        if controller.ends_with("-controller") {
            return format!("{program} ({controller})");
        }
    }
    program.to_string()
}

/// The audit log and the files the API server rotated it into (`audit-<time>.log` beside it:
/// it starts a new file every 100 MB, which a benchmark of 10,000 trials fills twice).
fn log_files(log: &Path) -> Vec<std::path::PathBuf> {
    let dir = log.parent().unwrap_or(Path::new("."));
    let stem = log.file_stem().and_then(|s| s.to_str()).unwrap_or("audit");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{stem}-")) && n.ends_with(".log"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.push(log.to_path_buf());
    files
}

/// Counts the requests the API server received at or after `since` (RFC 3339), in the audit log
/// and its rotated files (a request logged at several stages counts once).
pub fn count(log: &Path, since: &str) -> std::io::Result<BTreeMap<RequestKind, u64>> {
    let since = chrono::DateTime::parse_from_rfc3339(since)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{since}: {e}")))?;
    let mut seen = std::collections::HashSet::new();
    let mut counts = BTreeMap::new();
    for file in log_files(log) {
        for line in BufReader::new(std::fs::File::open(&file)?).lines() {
            let line = line?;
            // A line cut by a log still being written, or not an event: not a request to count.
            let Ok(e) = serde_json::from_str::<Event>(&line) else {
                continue;
            };
            let received = chrono::DateTime::parse_from_rfc3339(&e.request_received_timestamp);
            if received.map_or(true, |t| t < since) || !seen.insert(e.audit_id) {
                continue;
            }
            let resource = match &e.object_ref {
                Some(o) => match &o.subresource {
                    Some(sub) => format!("{}/{sub}", o.resource),
                    None => o.resource.clone(),
                },
                None => "(non-resource)".into(),
            };
            *counts
                .entry(RequestKind {
                    client: client_of(&e.user_agent),
                    verb: e.verb,
                    resource,
                })
                .or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// Now, as the audit log writes times.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_named_by_program_and_controller() {
        assert_eq!(
            client_of("orchestra-operator/0.1.0 (replica-a)"),
            "orchestra-operator"
        );
        assert_eq!(
            client_of("kube-controller-manager/v1.37.2 (linux/amd64) kubernetes/$Format/job-controller"),
            "kube-controller-manager (job-controller)"
        );
        assert_eq!(
            client_of("kube-controller-manager/v1.37.2 (linux/amd64) kubernetes/$Format/system:serviceaccount:kube-system:job-controller"),
            "kube-controller-manager (job-controller)"
        );
        assert_eq!(
            client_of("kube-scheduler/v1.37.2 (linux/amd64) kubernetes/$Format/scheduler"),
            "kube-scheduler"
        );
        assert_eq!(client_of(""), "(none)");
    }

    /// One audit log line.
    fn ev(id: &str, at: &str, verb: &str, agent: &str, res: &str, sub: Option<&str>) -> String {
        serde_json::json!({"auditID": id, "requestReceivedTimestamp": at, "verb": verb,
            "userAgent": agent, "objectRef": {"resource": res, "subresource": sub}})
        .to_string()
    }

    #[test]
    fn each_request_counts_once_from_the_start_on_across_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let rotated = [
            ev(
                "0",
                "2026-12-03T07:00:00.000000Z",
                "create",
                "orchestra-operator/1",
                "jobs",
                None,
            ),
            ev(
                "1",
                "2026-12-03T08:00:00.000000Z",
                "create",
                "orchestra-operator/1",
                "jobs",
                None,
            ),
        ];
        std::fs::write(
            dir.path().join("audit-2026-12-03T08-10-00.000.log"),
            rotated.join("\n"),
        )
        .unwrap();
        let current = [
            ev(
                "2",
                "2026-12-03T08:20:00.000000Z",
                "watch",
                "kwok/v0.8.0",
                "pods",
                None,
            ),
            ev(
                "2",
                "2026-12-03T08:20:00.000000Z",
                "watch",
                "kwok/v0.8.0",
                "pods",
                None,
            ),
            ev(
                "3",
                "2026-12-03T08:21:00.000000Z",
                "patch",
                "orchestra-operator/1",
                "trials",
                Some("status"),
            ),
            "{\"cut".to_string(),
        ];
        std::fs::write(&log, current.join("\n")).unwrap();
        std::fs::write(dir.path().join("kube-apiserver.log"), "not audit").unwrap();
        let counts = count(&log, "2026-12-03T07:30:00Z").unwrap();
        let k = |c: &str, v: &str, r: &str| RequestKind {
            client: c.into(),
            verb: v.into(),
            resource: r.into(),
        };
        assert_eq!(
            counts.get(&k("orchestra-operator", "create", "jobs")),
            Some(&1),
            "before the start: not counted"
        );
        assert_eq!(
            counts.get(&k("kwok", "watch", "pods")),
            Some(&1),
            "two stages, one request"
        );
        assert_eq!(
            counts.get(&k("orchestra-operator", "patch", "trials/status")),
            Some(&1)
        );
        assert_eq!(counts.values().sum::<u64>(), 3);
        assert!(k("a", "patch", "x").is_write() && !k("a", "list", "x").is_write());
    }
}
