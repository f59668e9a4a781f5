//! The dashboard over HTTP: the pages, their live version, downloads and the embedded assets.
//! Read-only: nothing here writes to a store or a cluster.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use tokio::sync::watch;

use super::assets::{css, JS};
use super::pages;
use super::store_source::StoreSource;
use super::view::{ExperimentList, ExperimentView, TrialPage};

/// Where the pages' views come from. Blocking (stores are read synchronously): the server calls
/// it off the async runtime.
pub trait Source: Send + Sync + 'static {
    fn experiments(&self) -> Result<ExperimentList, String>;
    fn experiment(&self, namespace: &str, name: &str) -> Result<Option<ExperimentView>, String>;
    fn trial(
        &self,
        namespace: &str,
        name: &str,
        trial: &str,
    ) -> Result<Option<(ExperimentView, TrialPage)>, String>;
    /// A trial's model file: its name and bytes.
    fn model(&self, namespace: &str, name: &str, trial: &str) -> Result<Option<(String, Bytes)>, String>;
    /// Changes whenever what the pages show may have changed.
    fn version(&self) -> Result<u64, String>;
    /// What the pages are read from, for their footer.
    fn describe(&self) -> String;
}

impl Source for StoreSource {
    fn experiments(&self) -> Result<ExperimentList, String> {
        StoreSource::experiments(self).map_err(|e| e.to_string())
    }

    fn experiment(&self, namespace: &str, name: &str) -> Result<Option<ExperimentView>, String> {
        let v = StoreSource::experiment(self, name).map_err(|e| e.to_string())?;
        Ok(v.filter(|v| v.namespace == namespace))
    }

    fn trial(
        &self,
        namespace: &str,
        name: &str,
        trial: &str,
    ) -> Result<Option<(ExperimentView, TrialPage)>, String> {
        let t = StoreSource::trial(self, name, trial).map_err(|e| e.to_string())?;
        Ok(t.filter(|(v, _)| v.namespace == namespace))
    }

    fn model(&self, _namespace: &str, name: &str, trial: &str) -> Result<Option<(String, Bytes)>, String> {
        StoreSource::model(self, name, trial).map_err(|e| e.to_string())
    }

    fn version(&self) -> Result<u64, String> {
        StoreSource::version(self).map_err(|e| e.to_string())
    }

    fn describe(&self) -> String {
        format!("store {}", self.uri())
    }
}

#[derive(Clone)]
struct App {
    source: Arc<dyn Source>,
    version: watch::Receiver<u64>,
}

/// How often the source's version is read (a change shows on an open page within about two of
/// these: one here, one for the page's own poll).
const WATCH_EVERY: Duration = Duration::from_millis(800);

/// The dashboard's routes over `source`; its version is watched from a task of its own.
pub async fn router(source: Arc<dyn Source>) -> Router {
    let first = {
        let s = source.clone();
        tokio::task::spawn_blocking(move || s.version().unwrap_or(0))
            .await
            .unwrap_or(0)
    };
    let (tx, rx) = watch::channel(first);
    let watched = source.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let s = watched.clone();
            match tokio::task::spawn_blocking(move || s.version()).await {
                Ok(Ok(v)) => {
                    tx.send_if_modified(|old| std::mem::replace(old, v) != v);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "the dashboard could not read its source"),
                Err(_) => {}
            }
            if tx.is_closed() {
                break;
            }
        }
    });
    Router::new()
        .route("/", get(list))
        .route("/api/version", get(version))
        .route(
            "/assets/dashboard.css",
            get(|| async { asset(css(), "text/css") }),
        )
        .route(
            "/assets/dashboard.js",
            get(|| async { asset(JS, "text/javascript") }),
        )
        .route("/ns/{ns}/experiments/{name}", get(to_folder))
        .route("/ns/{ns}/experiments/{name}/", get(experiment))
        .route("/ns/{ns}/experiments/{name}/spec.yaml", get(experiment_file))
        .route("/ns/{ns}/experiments/{name}/trials/{trial}", get(to_folder))
        .route("/ns/{ns}/experiments/{name}/trials/{trial}/", get(trial))
        .route("/ns/{ns}/experiments/{name}/trials/{trial}/model", get(model))
        .route("/ns/{ns}/experiments/{name}/trials/{trial}/spec.yaml", get(spec))
        .with_state(App { source, version: rx })
}

/// Serves the dashboard on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, source: Arc<dyn Source>) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, source = %source.describe(), "dashboard");
    }
    axum::serve(listener, router(source).await).await
}

fn asset(body: impl IntoResponse, kind: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

async fn version(State(app): State<App>) -> Response {
    let v = *app.version.borrow();
    ([(header::CACHE_CONTROL, "no-store")], v.to_string()).into_response()
}

/// Runs a blocking read of the source.
async fn read<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&dyn Source) -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    let source = app.source.clone();
    match tokio::task::spawn_blocking(move || f(source.as_ref())).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("could not read the runs: {e}"),
        )),
        Err(e) => Err(problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the read failed: {e}"),
        )),
    }
}

fn problem(code: StatusCode, message: &str) -> Response {
    let body = pages::page(
        "Not here",
        &[("Experiments", Some("/".into()))],
        &format!("<h1>{}</h1><p>{}</p>", code, super::charts::html_escape(message)),
        0,
        "",
    );
    (code, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// A page, or only its main part when the page's script asks for a live update.
fn html(
    app: &App,
    q: &HashMap<String, String>,
    title: &str,
    crumbs: &[(&str, Option<String>)],
    main: String,
    version: u64,
) -> Response {
    let v = HeaderValue::from_str(&version.to_string()).expect("digits are a header value");
    let body = if q.contains_key("fragment") {
        main
    } else {
        pages::page(title, crumbs, &main, version, &app.source.describe())
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::HeaderName::from_static("x-orchestra-version"), v),
        ],
        body,
    )
        .into_response()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn list(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let version = *app.version.borrow();
    let list = match read(&app, |s| s.experiments()).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let main = pages::experiments(
        &list,
        q.get("namespace").map(String::as_str),
        q.get("phase").map(String::as_str),
        now_ms(),
    );
    html(&app, &q, "Experiments", &[("Experiments", None)], main, version)
}

async fn to_folder(uri: axum::http::Uri) -> Redirect {
    Redirect::permanent(&format!("{}/", uri.path()))
}

async fn experiment(
    State(app): State<App>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let version = *app.version.borrow();
    let (n, e) = (ns.clone(), name.clone());
    let view = match read(&app, move |s| s.experiment(&n, &e)).await {
        Ok(Some(v)) => v,
        Ok(None) => return problem(StatusCode::NOT_FOUND, &format!("no Experiment {ns}/{name} here")),
        Err(r) => return r,
    };
    let log_x = q.get("x").is_none_or(|x| x != "linear");
    let main = pages::experiment(&view, log_x);
    html(
        &app,
        &q,
        &name,
        &[("Experiments", Some("/".into())), (&name, None)],
        main,
        version,
    )
}

async fn experiment_file(State(app): State<App>, Path((ns, name)): Path<(String, String)>) -> Response {
    let (n, e) = (ns.clone(), name.clone());
    match read(&app, move |s| s.experiment(&n, &e)).await {
        Ok(Some(v)) => {
            let yaml = serde_yaml::to_string(&v.experiment).expect("an Experiment serialises");
            ([(header::CONTENT_TYPE, "text/yaml; charset=utf-8")], yaml).into_response()
        }
        Ok(None) => problem(StatusCode::NOT_FOUND, &format!("no Experiment {ns}/{name} here")),
        Err(r) => r,
    }
}

async fn trial(
    State(app): State<App>,
    Path((ns, name, trial)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let version = *app.version.borrow();
    let (n, e, t) = (ns.clone(), name.clone(), trial.clone());
    let (view, page) = match read(&app, move |s| s.trial(&n, &e, &t)).await {
        Ok(Some(v)) => v,
        Ok(None) => return problem(StatusCode::NOT_FOUND, &format!("no trial {trial} in {ns}/{name}")),
        Err(r) => return r,
    };
    let main = pages::trial(&view, &page);
    let up = pages::experiment_href(&view);
    html(
        &app,
        &q,
        &trial,
        &[
            ("Experiments", Some("/".into())),
            (&name, Some(up)),
            (&trial, None),
        ],
        main,
        version,
    )
}

async fn model(State(app): State<App>, Path((ns, name, trial)): Path<(String, String, String)>) -> Response {
    let (n, e, t) = (ns.clone(), name.clone(), trial.clone());
    match read(&app, move |s| s.model(&n, &e, &t)).await {
        Ok(Some((key, bytes))) => {
            let file = key.replace('/', "_");
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{file}\""),
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        Ok(None) => problem(StatusCode::NOT_FOUND, &format!("{trial} has no checkpoint yet")),
        Err(r) => r,
    }
}

async fn spec(State(app): State<App>, Path((ns, name, trial)): Path<(String, String, String)>) -> Response {
    let (n, e, t) = (ns.clone(), name.clone(), trial.clone());
    match read(&app, move |s| s.trial(&n, &e, &t)).await {
        Ok(Some((_, page))) => (
            [(header::CONTENT_TYPE, "text/yaml; charset=utf-8")],
            page.spec_yaml,
        )
            .into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, &format!("no trial {trial} in {ns}/{name}")),
        Err(r) => r,
    }
}
