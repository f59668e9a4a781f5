//! A mock Kubernetes API server for reconcile scenarios: a `tower-test` service that records
//! every request (method, path, query, body) and answers like a tiny in-memory API server
//! (create, get, list by label, server-side apply, status subresource, JSON patch, delete,
//! delete collection), so that scenarios assert the exact requests the reconciler makes.
//! With `inject_faults` it also misbehaves like a busy API server: conflicts, errors before or
//! after a write, and slow answers, drawn from a seeded generator.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{json, Value};

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path with the query, e.g. `GET /apis/batch/v1/namespaces/ns/jobs?labelSelector=...`.
    pub target: String,
    pub body: Value,
    /// The status code answered.
    pub code: u16,
}

impl Recorded {
    /// `METHOD path` without the query.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.target.split('?').next().unwrap_or(""))
    }
}

#[derive(Default)]
pub struct State {
    /// Objects by their path (`/apis/group/v/namespaces/ns/plural/name`).
    pub objects: BTreeMap<String, Value>,
    pub log: Vec<Recorded>,
    uid: u64,
    faults: Option<Faults>,
}

/// Injected misbehaviour: `per_mille` of all requests get one of the faults.
#[derive(Clone, Copy, Debug)]
struct Faults {
    state: u64,
    per_mille: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// 409 Conflict, nothing done.
    Conflict,
    /// 500, nothing done.
    ErrorBefore,
    /// The request is carried out, but the answer is a 500 (a lost response).
    ErrorAfter,
    /// Carried out after a delay.
    Slow(u64),
}

impl Faults {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic per seed, good enough to pick faults.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn draw(&mut self) -> Option<Fault> {
        let roll = self.next() % 1000;
        if roll >= self.per_mille {
            return None;
        }
        Some(match self.next() % 4 {
            0 => Fault::Conflict,
            1 => Fault::ErrorBefore,
            2 => Fault::ErrorAfter,
            _ => Fault::Slow(5 + self.next() % 40),
        })
    }
}

#[derive(Clone, Default)]
pub struct FakeApi(pub Arc<Mutex<State>>);

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

fn list_kind(plural: &str) -> &'static str {
    match plural {
        "trials" => "TrialList",
        "experiments" => "ExperimentList",
        "jobs" => "JobList",
        "pods" => "PodList",
        "services" => "ServiceList",
        "configmaps" => "ConfigMapList",
        "events" => "EventList",
        _ => "List",
    }
}

fn matches_selector(obj: &Value, query: &str) -> bool {
    let Some(sel) = query.split('&').find_map(|kv| kv.strip_prefix("labelSelector=")) else {
        return true;
    };
    let sel = sel.replace("%2F", "/").replace("%3D", "=");
    sel.split(',').all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

impl FakeApi {
    /// From now on `per_mille` of the requests misbehave (see `Fault`), drawn from `seed`.
    pub fn inject_faults(&self, seed: u64, per_mille: u64) {
        self.0.lock().unwrap().faults = Some(Faults {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            per_mille,
        });
    }

    pub fn put(&self, path: &str, obj: Value) {
        self.0.lock().unwrap().objects.insert(path.to_string(), obj);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.0.lock().unwrap().objects.get(path).cloned()
    }

    pub fn log(&self) -> Vec<Recorded> {
        self.0.lock().unwrap().log.clone()
    }

    /// The requests as `METHOD path` lines, events left out (see `events`).
    pub fn lines(&self) -> Vec<String> {
        self.log()
            .iter()
            .filter(|r| !r.target.contains("/events"))
            .map(Recorded::line)
            .collect()
    }

    /// (reason, note) of every event published (created, or a repeat counted in a series).
    pub fn events(&self) -> Vec<(String, String)> {
        self.log()
            .iter()
            .filter(|r| r.target.contains("/events") && (r.method == "POST" || r.method == "PATCH"))
            .map(|r| {
                (
                    r.body["reason"].as_str().unwrap_or("").to_string(),
                    r.body["note"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// The body of the first request whose `METHOD path` line is `line`.
    pub fn body_of(&self, line: &str) -> Value {
        self.log()
            .into_iter()
            .find(|r| r.line() == line)
            .unwrap_or_else(|| panic!("no request {line}"))
            .body
    }

    /// Serves requests until the client is dropped.
    pub fn serve(
        self,
        mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let method = req.method().to_string();
                let target = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                let bytes = req.into_body().collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let fault = self.0.lock().unwrap().faults.as_mut().and_then(Faults::draw);
                let (code, answer) = match fault {
                    Some(Fault::Conflict) => (409, status(409, "Conflict", "injected conflict")),
                    Some(Fault::ErrorBefore) => (500, status(500, "InternalError", "injected error")),
                    Some(Fault::ErrorAfter) => {
                        self.answer(&method, &target, &body);
                        (
                            500,
                            status(500, "InternalError", "injected error after the write"),
                        )
                    }
                    Some(Fault::Slow(ms)) => {
                        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                        self.answer(&method, &target, &body)
                    }
                    None => self.answer(&method, &target, &body),
                };
                // A write counts as done when it was carried out, whatever the answer said.
                let done = if fault == Some(Fault::ErrorAfter) {
                    200
                } else {
                    code
                };
                self.0.lock().unwrap().log.push(Recorded {
                    method,
                    target,
                    body,
                    code: done,
                });
                let response = Response::builder()
                    .status(StatusCode::from_u16(code).unwrap())
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        })
    }

    fn answer(&self, method: &str, target: &str, body: &Value) -> (u16, Value) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut st = self.0.lock().unwrap();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // .../namespaces/<ns>/<plural>[/<name>[/status]]
        let ns_at = segments.iter().position(|s| *s == "namespaces").unwrap_or(0);
        let rest = &segments[ns_at + 2..];
        let is_status = rest.len() == 3 && rest[2] == "status";
        let object_path = if rest.len() >= 2 {
            segments[..ns_at + 4].join("/")
        } else {
            String::new()
        };
        let object_path = format!("/{object_path}");
        match (method, rest.len()) {
            ("GET", 1) => {
                let prefix = format!("{path}/");
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|(k, v)| k.starts_with(&prefix) && matches_selector(v, query))
                    .map(|(_, v)| v.clone())
                    .collect();
                (
                    200,
                    json!({"kind": list_kind(rest[0]), "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            ("GET", _) => match st.objects.get(&object_path) {
                Some(o) => (200, o.clone()),
                None => (404, status(404, "NotFound", "not found")),
            },
            ("POST", 1) => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| {
                        st.uid += 1;
                        format!("generated-{}", st.uid)
                    });
                let key = format!("{path}/{name}");
                if st.objects.contains_key(&key) {
                    return (409, status(409, "AlreadyExists", "already exists"));
                }
                st.uid += 1;
                let mut obj = body.clone();
                obj["metadata"]["name"] = json!(name);
                obj["metadata"]["uid"] = json!(format!("uid-{}", st.uid));
                obj["metadata"]["resourceVersion"] = json!("1");
                obj["metadata"]["creationTimestamp"] = json!("2026-11-26T00:00:00Z");
                st.objects.insert(key, obj.clone());
                (201, obj)
            }
            ("PATCH", _) if is_status => match st.objects.get_mut(&object_path) {
                Some(o) => {
                    o["status"] = body["status"].clone();
                    (200, o.clone())
                }
                None => (404, status(404, "NotFound", "not found")),
            },
            ("PATCH", _) if body.is_array() => match st.objects.get_mut(&object_path) {
                // JSON patch (the finalizer helper): add/remove/test on metadata.finalizers.
                Some(o) => {
                    for op in body.as_array().unwrap() {
                        let p = op["path"].as_str().unwrap_or("");
                        match op["op"].as_str() {
                            Some("add") if p == "/metadata/finalizers" => {
                                o["metadata"]["finalizers"] = op["value"].clone()
                            }
                            Some("add") if p == "/metadata/finalizers/-" => {
                                let list = o["metadata"]["finalizers"]
                                    .as_array()
                                    .cloned()
                                    .unwrap_or_default();
                                let mut list = list;
                                list.push(op["value"].clone());
                                o["metadata"]["finalizers"] = json!(list);
                            }
                            Some("remove") if p.starts_with("/metadata/finalizers/") => {
                                let i: usize = p.rsplit('/').next().unwrap().parse().unwrap();
                                o["metadata"]["finalizers"].as_array_mut().unwrap().remove(i);
                            }
                            _ => {}
                        }
                    }
                    (200, o.clone())
                }
                None => (404, status(404, "NotFound", "not found")),
            },
            ("PATCH", _) => {
                // Server-side apply: create or merge.
                st.uid += 1;
                let uid = st.uid;
                let o = st.objects.entry(object_path).or_insert_with(|| {
                    json!({"metadata": {"uid": format!("uid-{uid}"), "creationTimestamp": "2026-11-26T00:00:00Z"}})
                });
                merge(o, body);
                (200, o.clone())
            }
            ("PUT", _) => {
                // Replace, with optimistic concurrency on metadata.resourceVersion.
                let Some(current) = st.objects.get(&object_path) else {
                    return (404, status(404, "NotFound", "not found"));
                };
                let have = current["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("1")
                    .to_string();
                if body["metadata"]["resourceVersion"].as_str() != Some(have.as_str()) {
                    return (409, status(409, "Conflict", "the object has been modified"));
                }
                let next = have.parse::<u64>().unwrap_or(1) + 1;
                let mut obj = body.clone();
                obj["metadata"]["resourceVersion"] = json!(next.to_string());
                st.objects.insert(object_path, obj.clone());
                (200, obj)
            }
            ("DELETE", 1) => {
                let prefix = format!("{path}/");
                let gone: Vec<String> = st
                    .objects
                    .iter()
                    .filter(|(k, v)| k.starts_with(&prefix) && matches_selector(v, query))
                    .map(|(k, _)| k.clone())
                    .collect();
                let items: Vec<Value> = gone.iter().filter_map(|k| st.objects.remove(k)).collect();
                (
                    200,
                    json!({"kind": list_kind(rest[0]), "apiVersion": "v1", "metadata": {}, "items": items}),
                )
            }
            ("DELETE", _) => match st.objects.remove(&object_path) {
                Some(_) => (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                ),
                None => (404, status(404, "NotFound", "not found")),
            },
            _ => (405, status(405, "MethodNotAllowed", "not supported by the fake")),
        }
    }
}
