//! `kiln-serve --model-repository`: several models at once, new versions swapped in by
//! polling and by Triton's load requests while requests keep being answered, failed loads
//! that leave the old version serving, and unloading.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{encode_digit, python_json_lines, refused_at_start_from, test_digits, trained_package, ServeProcess};
use image::ImageFormat;
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

/// Copies the trained MNIST package to `<root>/<name>/<version>/`, its labels renamed
/// `<tag>-0` … `<tag>-9` so an answer tells which copy gave it.
fn add_version(root: &Path, name: &str, version: u64, tag: &str) {
    let dir = root.join(name).join(version.to_string());
    // Written beside the repository and moved in, as a deployment would: the poller never
    // sees half a package.
    let staging = root.parent().unwrap().join(format!(".staging-{name}-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    for entry in std::fs::read_dir(trained_package()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), staging.join(entry.file_name())).unwrap();
    }
    let config_path = staging.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["kiln"]["labels"] = json!((0..10).map(|k| format!("{tag}-{k}")).collect::<Vec<_>>());
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    std::fs::rename(&staging, &dir).unwrap();
}

/// A repository folder inside a temporary folder (which holds the staging copies).
fn repository() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("models");
    std::fs::create_dir_all(&root).unwrap();
    (tmp, root)
}

fn digit_form() -> Form {
    let png = encode_digit(&test_digits(1)[0], 1, ImageFormat::Png);
    Form::new().part("image", Part::bytes(png).file_name("d.png"))
}

/// The JSON answer to `request`, or its status when not 200.
async fn answer(request: reqwest::RequestBuilder) -> Result<Value, u16> {
    let r = request.send().await.unwrap();
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    Ok(r.json().await.unwrap())
}

/// The label the contract route answers for the first test digit (a 7), or the status.
async fn contract_label(base: &str) -> Result<String, u16> {
    let body = answer(reqwest::Client::new().post(format!("{base}/")).multipart(digit_form())).await?;
    Ok(body[0]["image"].as_str().unwrap_or_default().to_string())
}

/// The label model `name` answers over v2 for the first test digit, or the status.
async fn v2_label(base: &str, name: &str) -> Result<String, u16> {
    let png = encode_digit(&test_digits(1)[0], 1, ImageFormat::Png);
    use base64::Engine;
    let request = json!({"inputs": [{
        "name": "image", "datatype": "BYTES", "shape": [1],
        "data": [base64::engine::general_purpose::STANDARD.encode(png)],
    }]});
    let body = answer(
        reqwest::Client::new()
            .post(format!("{base}/v2/models/{name}/infer"))
            .json(&request),
    )
    .await?;
    let label = body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap()["data"][0]
        .as_str()
        .unwrap()
        .to_string();
    Ok(label)
}

async fn get(url: String) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(url: String) -> (u16, Value) {
    let r = reqwest::Client::new().post(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn index(base: &str) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{base}/v2/repository/index"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Waits until `check` holds, for at most 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_models_serve_side_by_side() {
    let (_tmp, root) = repository();
    add_version(&root, "digits", 1, "a");
    add_version(&root, "digits", 2, "b");
    add_version(&root, "numerals", 7, "n");
    std::fs::write(root.join("README.md"), "not a model").unwrap();
    let server = ServeProcess::start_repository(&root, &[]).await;
    let base = &server.base;

    // Each model's highest version serves; the contract route answers with the first by name.
    assert_eq!(v2_label(base, "digits").await, Ok("b-7".into()));
    assert_eq!(v2_label(base, "numerals").await, Ok("n-7".into()));
    assert_eq!(contract_label(base).await, Ok("b-7".into()));
    let (status, meta) = get(format!("{base}/v2/models/numerals")).await;
    assert_eq!((status, meta["versions"].clone()), (200, json!(["7"])));
    assert_eq!(get(format!("{base}/v2/models/numerals/versions/7/ready")).await.0, 200);
    assert_eq!(get(format!("{base}/v2/models/digits/versions/1/ready")).await.0, 404);
    let (status, e) = get(format!("{base}/v2/models/nothing")).await;
    assert_eq!(status, 404);
    assert!(e["error"].as_str().unwrap().contains("digits, numerals"), "{e}");
    assert_eq!(
        index(base).await,
        json!([
            {"name": "digits", "version": "2", "state": "READY"},
            {"name": "numerals", "version": "7", "state": "READY"},
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_model_is_chosen_by_flag() {
    let (_tmp, root) = repository();
    add_version(&root, "digits", 1, "a");
    add_version(&root, "numerals", 1, "n");
    let server = ServeProcess::start_repository(&root, &["--default-model", "numerals"]).await;
    assert_eq!(contract_label(&server.base).await, Ok("n-7".into()));
    let (_, info) = get(format!("{}/info", server.base)).await;
    assert_eq!(
        (info["model"].as_str(), info["ready"].as_bool()),
        (Some("numerals"), Some(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_swaps_in_new_versions_and_keeps_the_old_one_when_a_load_fails() {
    let (_tmp, root) = repository();
    add_version(&root, "digits", 1, "a");
    let server = ServeProcess::start_repository(&root, &["--repository-poll-secs", "0.1"]).await;
    let base = server.base.clone();
    assert_eq!(contract_label(&base).await, Ok("a-7".into()));

    add_version(&root, "digits", 2, "b");
    eventually("version 2 serves", || async {
        contract_label(&base).await == Ok("b-7".into())
    })
    .await;

    // A broken version 3: its weights do not match the checksum in its config.
    add_version(&root, "digits", 3, "c");
    std::fs::write(root.join("digits/3/model.safetensors"), b"not the weights").unwrap();
    eventually("the failed load is counted", || async {
        metrics(&base)
            .await
            .contains(r#"kiln_model_loads_total{model="digits",outcome="failed"} 1"#)
    })
    .await;
    assert_eq!(contract_label(&base).await, Ok("b-7".into()));
    assert_eq!(get(format!("{base}/v2/health/ready")).await.0, 200);
    assert_eq!(get(format!("{base}/v2/models/digits/versions/2/ready")).await.0, 200);
    assert!(metrics(&base)
        .await
        .contains(r#"kiln_model_serving_version{model="digits"} 2"#));
    // Polling does not retry the same files; a load request does, and says why it fails.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(metrics(&base)
        .await
        .contains(r#"kiln_model_loads_total{model="digits",outcome="failed"} 1"#));
    let (status, e) = post(format!("{base}/v2/repository/models/digits/load")).await;
    assert_eq!(status, 400);
    let why = e["error"].as_str().unwrap();
    assert!(why.contains("model.safetensors") && why.contains("version 3"), "{why}");

    // A new model folder is loaded; a removed one stops serving.
    add_version(&root, "numerals", 1, "n");
    eventually("the new model serves", || async {
        v2_label(&base, "numerals").await == Ok("n-7".into())
    })
    .await;
    std::fs::remove_dir_all(root.join("numerals")).unwrap();
    eventually("the removed model is gone", || async {
        get(format!("{base}/v2/models/numerals/ready")).await.0 == 404
    })
    .await;

    // Fixing version 3 (new files) gets it loaded.
    std::fs::remove_dir_all(root.join("digits/3")).unwrap();
    add_version(&root, "digits", 3, "c");
    eventually("version 3 serves", || async {
        contract_label(&base).await == Ok("c-7".into())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_and_unload_requests_control_what_serves() {
    let (_tmp, root) = repository();
    add_version(&root, "digits", 1, "a");
    add_version(&root, "numerals", 1, "n");
    let server = ServeProcess::start_repository(&root, &[]).await;
    let base = server.base.clone();

    assert_eq!(
        post(format!("{base}/v2/repository/models/numerals/unload")).await.0,
        200
    );
    assert_eq!(get(format!("{base}/v2/models/numerals/ready")).await.0, 503);
    assert_eq!(v2_label(&base, "numerals").await, Err(503));
    assert_eq!(v2_label(&base, "digits").await, Ok("a-7".into()));
    assert_eq!(
        index(&base).await[1],
        json!({"name": "numerals", "state": "UNAVAILABLE", "reason": "unloaded"})
    );
    // Without polling, a new version waits for a load request.
    add_version(&root, "digits", 2, "b");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(contract_label(&base).await, Ok("a-7".into()));
    assert_eq!(post(format!("{base}/v2/repository/models/digits/load")).await.0, 200);
    assert_eq!(contract_label(&base).await, Ok("b-7".into()));
    assert_eq!(post(format!("{base}/v2/repository/models/numerals/load")).await.0, 200);
    assert_eq!(v2_label(&base, "numerals").await, Ok("n-7".into()));

    let (status, e) = post(format!("{base}/v2/repository/models/absent/load")).await;
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().contains("absent"), "{e}");
    assert_eq!(post(format!("{base}/v2/repository/models/absent/unload")).await.0, 400);
    // The default model unloaded: the contract route says so.
    assert_eq!(post(format!("{base}/v2/repository/models/digits/unload")).await.0, 200);
    assert_eq!(contract_label(&base).await, Err(503));
    assert_eq!(get(format!("{base}/health")).await.0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_package_refuses_repository_control() {
    let server = ServeProcess::start(&trained_package(), &[]).await;
    let (status, e) = post(format!("{}/v2/repository/models/model/load", server.base)).await;
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().contains("--model-repository"), "{e}");
    assert_eq!(
        index(&server.base).await,
        json!([{"name": "model", "version": "1", "state": "READY"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_whose_model_fails_at_start_is_refused() {
    let (_tmp, root) = repository();
    add_version(&root, "digits", 1, "a");
    std::fs::create_dir_all(root.join("empty")).unwrap();
    let stderr = refused_at_start_from("--model-repository", &root);
    assert!(
        stderr.contains("empty") && stderr.contains("no version folder"),
        "{stderr}"
    );
}

/// Swaps under concurrent load: every request is answered 200, by the old version or the
/// new one, never an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_versions_under_load_fails_no_request() {
    let (_tmp, root) = repository();
    add_version(&root, "digits", 1, "v1");
    let server = ServeProcess::start_repository(&root, &[]).await;
    let base = server.base.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (base, stop) = (base.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    answers.push(contract_label(&base).await);
                }
                answers
            })
        })
        .collect();
    for version in 2..=6 {
        add_version(&root, "digits", version, &format!("v{version}"));
        let (status, e) = post(format!("{base}/v2/repository/models/digits/load")).await;
        assert_eq!(status, 200, "{e}");
        assert_eq!(contract_label(&base).await, Ok(format!("v{version}-7")));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = 0;
    for client in clients {
        for answer in client.await.unwrap() {
            let label = answer.expect("a request failed during a swap");
            assert!(label.starts_with('v') && label.ends_with("-7"), "{label}");
            answered += 1;
        }
    }
    assert!(answered > 8, "only {answered} requests ran during the swaps");
}

/// Triton's own client (`tritonclient.http`) drives the repository extension: index, unload,
/// load, and a load that fails. Needs `KILN_TRITON_PYTHON` as the v2 conformance run does;
/// without it the test says so and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_controls_the_repository() {
    let Ok(python) = std::env::var("KILN_TRITON_PYTHON") else {
        eprintln!("KILN_TRITON_PYTHON is not set: skipping the tritonclient repository run");
        return;
    };
    let (_tmp, root) = repository();
    add_version(&root, "digits", 1, "a");
    add_version(&root, "numerals", 1, "n");
    let server = ServeProcess::start_repository(&root, &[]).await;
    add_version(&root, "numerals", 2, "n");
    std::fs::write(root.join("numerals/2/model.safetensors"), b"broken").unwrap();
    let address = server.base.trim_start_matches("http://");
    let lines = python_json_lines(&python, "repository_check.py", &[address, "digits", "numerals"]);
    assert_eq!(
        lines[0]["models"],
        json!([
            {"name": "digits", "version": "1", "state": "READY"},
            {"name": "numerals", "version": "1", "state": "READY"},
        ])
    );
    assert_eq!(lines[1], json!({"step": "unloaded", "ready": false}));
    assert_eq!(lines[2], json!({"step": "loaded", "ready": true}));
    let error = lines[3]["error"].as_str().unwrap();
    assert!(
        error.contains("numerals") && error.contains("model.safetensors"),
        "{error}"
    );
    // The failed load left version 1 serving.
    assert_eq!(v2_label(&server.base, "numerals").await, Ok("n-7".into()));
}
