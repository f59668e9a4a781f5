//! Headless Chromium driven through chromedriver over the WebDriver protocol (JSON over HTTP):
//! just what the dashboard's browser test needs (open a page, run a script, press a key on an
//! element, take a screenshot). Chromium starts with a fresh profile and no background
//! networking (this machine's network is closed).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find(names: &[&str]) -> Option<PathBuf> {
    names.iter().map(PathBuf::from).find(|p| p.exists()).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|d| names.iter().map(move |n| d.join(n)))
            .find(|p| p.is_file())
    })
}

impl Browser {
    /// A browser, or why there is none (Chromium or chromedriver missing: `make setup` installs
    /// Debian's `chromium` and `chromium-driver`).
    pub fn start() -> Result<Browser, String> {
        let chromium = find(&["/usr/lib/chromium/chromium", "chromium", "chromium-browser"])
            .ok_or("no chromium (Debian's package `chromium`; make setup installs it)")?;
        let chromedriver = find(&["chromedriver"])
            .ok_or("no chromedriver (Debian's package `chromium-driver`; make setup installs it)")?;
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", chromedriver.display()))?;
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while browser.get("/status").is_err() {
            if Instant::now() > deadline {
                return Err("chromedriver did not answer within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
                         "--hide-scrollbars", "--window-size=1280,1600",
                         format!("--user-data-dir={}", browser._profile.path().display())]
            }
        }}});
        let answer = browser.post("/session", &caps)?;
        browser.session = answer["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {answer}"))?
            .to_string();
        Ok(browser)
    }

    fn get(&self, path: &str) -> Result<Value, String> {
        let mut r = ureq::get(&format!("{}{path}", self.base))
            .call()
            .map_err(|e| e.to_string())?;
        let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        Ok(v["value"].clone())
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let r = ureq::post(&format!("{}{path}", self.base))
            .config()
            .http_status_as_error(false)
            .build()
            .header("Content-Type", "application/json")
            .send(body.to_string());
        let mut r = r.map_err(|e| e.to_string())?;
        let status = r.status();
        let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if !status.is_success() {
            return Err(format!("{path}: {status}: {}", v["value"]));
        }
        Ok(v["value"].clone())
    }

    fn session(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.post(&self.session("/url"), &json!({ "url": url }))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` (a function body: `return ...`) in the page and gives back its value.
    pub fn run(&self, script: &str) -> Value {
        self.post(
            &self.session("/execute/sync"),
            &json!({"script": script, "args": []}),
        )
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Presses `key` (a WebDriver key code, e.g. "\u{E007}" for Enter) on the element `css`.
    pub fn press(&self, css: &str, key: &str) {
        let el = self
            .post(
                &self.session("/element"),
                &json!({"using": "css selector", "value": css}),
            )
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        let id = el[ELEMENT].as_str().expect("an element id").to_string();
        self.post(
            &self.session(&format!("/element/{id}/value")),
            &json!({ "text": key }),
        )
        .unwrap_or_else(|e| panic!("keys on {css}: {e}"));
    }

    /// Waits until `script` returns true (or panics naming `what` after `limit`); the time it took.
    pub fn wait_for(&self, script: &str, limit: Duration, what: &str) -> Duration {
        let start = Instant::now();
        loop {
            if self.run(script) == Value::Bool(true) {
                return start.elapsed();
            }
            assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn screenshot(&self, path: &Path) {
        let png = self.get(&self.session("/screenshot")).expect("a screenshot");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("base64 decodes");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
