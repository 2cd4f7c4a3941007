//! The prediction page in real headless Chromium, through WebDriver (Debian's `chromium` and
//! `chromium-driver`): an MNIST digit to an MNIST package shows the model's label, a picture
//! to a YOLOX package gets boxes drawn. Screenshots of both are written to
//! `target/tmp/page-*.png`. Where no chromedriver is installed the test says so and passes
//! (`.ci/run` installs it); `KILN_CHROMEDRIVER` and `KILN_CHROMIUM` name other binaries.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::yolox::{package, picture, png};
use common::{encode_digit, model_labels, test_digits, trained_package, ServeProcess};
use image::ImageFormat;
use serde_json::{json, Value};

/// The W3C WebDriver protocol's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    base: String,
    session: String,
    client: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(var: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    path.is_file().then_some(path)
}

impl Driver {
    /// chromedriver on a free port with a headless Chromium session; `None` where either is
    /// not installed.
    async fn start() -> Option<Self> {
        let driver = binary("KILN_CHROMEDRIVER", "/usr/bin/chromedriver")?;
        let chromium = binary("KILN_CHROMIUM", "/usr/bin/chromium")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let user_data = tempfile::tempdir().unwrap().keep();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1100,1300",
                    format!("--user-data-dir={}", user_data.display()),
                ]
            }
        }}});
        let r: Value = client
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        Some(Self {
            child,
            base,
            session,
            client,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let request = self.client.request(method.clone(), url);
        let request = if method == reqwest::Method::GET {
            request
        } else {
            request.json(&body)
        };
        let r: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(r["value"].get("error").is_none(), "{path}: {r}");
        r["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url })).await;
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    async fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Waits until `script` returns something truthy, and returns it.
    async fn wait_for(&self, script: &str, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.script(script).await;
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Picks `file` in the page's file input, presses Predict, waits for the result.
    async fn predict(&self, file: &Path) {
        self.submit(file).await;
        self.wait_for(
            "return document.getElementById('status').textContent.startsWith('Answered')",
            "the answer",
        )
        .await;
    }

    /// Picks `file` and presses Predict.
    async fn submit(&self, file: &Path) {
        let input = self.element("#files").await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{input}/value"),
            json!({"text": file.to_str().unwrap()}),
        )
        .await;
        let button = self.element("#predict").await;
        self.wait_for(
            "return !document.getElementById('predict').disabled",
            "the Predict button",
        )
        .await;
        self.call(reqwest::Method::POST, &format!("/element/{button}/click"), json!({}))
            .await;
    }

    /// Ends the session, closing the browser.
    async fn quit(&self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.client.delete(url).send().await;
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.call(reqwest::Method::GET, "/screenshot", Value::Null).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_labels_and_boxes_in_chromium() {
    let Some(driver) = Driver::start().await else {
        eprintln!("no chromedriver/chromium installed: skipping the browser test");
        return;
    };
    // MNIST: the label the model gives the digit, and its probability bars.
    let pkg = trained_package();
    let server = ServeProcess::start(&pkg, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let digit = &test_digits(1)[0];
    let (labels, _) = model_labels(&pkg, std::slice::from_ref(digit));
    let file = dir.path().join("digit.png");
    std::fs::write(&file, encode_digit(digit, 4, ImageFormat::Png)).unwrap();
    driver.open(&format!("{}/", server.base)).await;
    let ready = driver
        .wait_for(
            "return document.querySelector('#model-info dd').textContent === 'ready'",
            "the model panel",
        )
        .await;
    assert_eq!(ready, json!(true));
    driver.predict(&file).await;
    let label = driver
        .script("return document.querySelector('#result-0 .label').textContent")
        .await;
    assert_eq!(label, json!(labels[0].to_string()));
    let bars = driver
        .script("return document.querySelectorAll('#result-0 .bar').length")
        .await;
    assert_eq!(bars, json!(5));
    let raw = driver.script("return document.getElementById('raw').textContent").await;
    assert!(raw.as_str().unwrap().contains("\"probabilities\""), "{raw}");
    let shot = driver.screenshot("page-mnist.png").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    // A phone-width window: one column, nothing wider than the screen.
    driver
        .call(
            reqwest::Method::POST,
            "/window/rect",
            json!({"width": 390, "height": 1000}),
        )
        .await;
    let overflow = driver
        .script("return document.documentElement.scrollWidth > window.innerWidth")
        .await;
    assert_eq!(
        overflow,
        json!(false),
        "the page scrolls sideways on a phone-width screen"
    );
    driver.screenshot("page-mnist-phone.png").await;
    driver
        .call(
            reqwest::Method::POST,
            "/window/rect",
            json!({"width": 1100, "height": 1300}),
        )
        .await;
    // A file that is not an image: the server's 400, explained, naming the field and file.
    let bad = dir.path().join("notes.png");
    std::fs::write(&bad, b"not an image").unwrap();
    driver.open(&format!("{}/", server.base)).await;
    driver.submit(&bad).await;
    let message = driver
        .wait_for(
            "const s = document.getElementById('status'); return s.classList.contains('error') && s.textContent",
            "the error message",
        )
        .await;
    let message = message.as_str().unwrap();
    assert!(
        message.starts_with("HTTP 400: The server could not use an image") && message.contains("notes.png"),
        "{message}"
    );
    drop(server);

    // YOLOX: boxes drawn on the picture; the threshold slider filters them client-side.
    let pkg = dir.path().join("model");
    let _ = package(&pkg);
    let server = ServeProcess::start(&pkg, &[]).await;
    let file = dir.path().join("picture.png");
    std::fs::write(&file, png(&picture(90, 50, 0))).unwrap();
    driver.open(&format!("{}/", server.base)).await;
    driver
        .wait_for(
            "return document.querySelector('#model-info dd').textContent === 'ready'",
            "the model panel",
        )
        .await;
    driver.predict(&file).await;
    let boxes = driver
        .wait_for(
            "return Number(document.querySelector('#result-0 canvas').dataset.boxes || 0)",
            "boxes drawn",
        )
        .await;
    assert!(boxes.as_u64().unwrap() >= 1, "{boxes}");
    driver.screenshot("page-yolox.png").await;
    driver
        .script("const t = document.getElementById('threshold'); t.value = 1; t.dispatchEvent(new Event('input')); return true")
        .await;
    let left = driver
        .script("return document.querySelector('#result-0 .label').textContent")
        .await;
    assert!(left.as_str().unwrap().starts_with("0 object(s)"), "{left}");
    driver.quit().await;
}
