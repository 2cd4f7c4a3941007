//! The Open Inference Protocol (KServe v2 / Triton HTTP/REST) on `kiln-serve`, with a
//! trained MNIST package: metadata, health, JSON and binary inference, preprocessed `FP32`
//! inputs, and the protocol's errors.

mod common;

use base64::Engine;
use common::{encode_digit, model_labels, python_json_lines, test_digits, trained_package, ServeProcess};
use image::ImageFormat;
use serde_json::{json, Value};

async fn get(url: &str) -> (u16, Option<Value>) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).ok())
}

async fn infer_json(url: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(url).json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_health_describe_the_served_package() {
    let pkg = trained_package();
    let server = ServeProcess::start(&pkg, &[]).await;
    let base = &server.base;
    let (status, body) = get(&format!("{base}/v2")).await;
    assert_eq!(status, 200);
    let body = body.unwrap();
    assert_eq!(body["name"], "kiln-serve");
    assert_eq!(body["extensions"], json!(["binary_tensor_data"]));
    assert_eq!(get(&format!("{base}/v2/health/live")).await.0, 200);
    assert_eq!(get(&format!("{base}/v2/health/ready")).await.0, 200);
    // The package folder's name is the model's.
    for path in ["/v2/models/model", "/v2/models/model/versions/1"] {
        let (status, meta) = get(&format!("{base}{path}")).await;
        assert_eq!(status, 200, "{path}");
        let meta = meta.unwrap();
        assert_eq!(meta["versions"], json!(["1"]));
        assert_eq!(
            meta["inputs"][1],
            json!({"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]})
        );
        assert_eq!(
            meta["outputs"][0],
            json!({"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]})
        );
    }
    assert_eq!(get(&format!("{base}/v2/models/model/ready")).await.0, 200);
    assert_eq!(get(&format!("{base}/v2/models/model/versions/1/ready")).await.0, 200);
    let (status, body) = get(&format!("{base}/v2/models/resnet/ready")).await;
    assert_eq!(status, 404);
    assert!(body.unwrap()["error"].as_str().unwrap().contains("\"resnet\""));
    assert_eq!(get(&format!("{base}/v2/models/model/versions/2")).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_inference_answers_what_the_model_says() {
    let pkg = trained_package();
    let server = ServeProcess::start(&pkg, &[]).await;
    let digits = test_digits(3);
    let (labels, probs) = model_labels(&pkg, &digits);
    let images: Vec<Value> = digits
        .iter()
        .map(|d| json!(base64::engine::general_purpose::STANDARD.encode(encode_digit(d, 1, ImageFormat::Png))))
        .collect();
    let request = json!({
        "id": "digits-1",
        "inputs": [{"name": "image", "shape": [3], "datatype": "BYTES", "data": images}]
    });
    let (status, body) = infer_json(&format!("{}/v2/models/model/infer", server.base), &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["model_name"].as_str(), body["id"].as_str()),
        (Some("model"), Some("digits-1"))
    );
    let outputs = body["outputs"].as_array().unwrap();
    assert_eq!(outputs[0]["name"], "probabilities");
    assert_eq!(outputs[0]["shape"], json!([3, 10]));
    let got: Vec<f32> = outputs[0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    for (g, w) in got.iter().zip(probs.iter().flatten()) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
    let want: Vec<Value> = labels.iter().map(|l| json!(l.to_string())).collect();
    assert_eq!(
        outputs[1],
        json!({"name": "label", "datatype": "BYTES", "shape": [3], "data": want})
    );

    // The same digits preprocessed by the client, as an FP32 tensor, asking for one output.
    let pixels: Vec<f32> = digits
        .iter()
        .flat_map(|d| {
            d.image
                .iter()
                .map(|&p| (p as f32 / 255.0 - 0.1307) / 0.3081)
                .collect::<Vec<_>>()
        })
        .collect();
    let request = json!({
        "inputs": [{"name": "input", "shape": [3, 1, 28, 28], "datatype": "FP32", "data": pixels}],
        "outputs": [{"name": "label"}]
    });
    let (status, body) = infer_json(&format!("{}/v2/models/model/versions/1/infer", server.base), &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(body["outputs"][0]["data"], json!(want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_tensor_data_goes_both_ways() {
    let pkg = trained_package();
    let server = ServeProcess::start(&pkg, &[]).await;
    let digits = test_digits(2);
    let (labels, probs) = model_labels(&pkg, &digits);
    let mut blob = Vec::new();
    for d in &digits {
        let png = encode_digit(d, 2, ImageFormat::Png);
        blob.extend((png.len() as u32).to_le_bytes());
        blob.extend(png);
    }
    let header = json!({
        "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": blob.len()}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}}, {"name": "label"}]
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(&blob);
    let r = reqwest::Client::new()
        .post(format!("{}/v2/models/model/infer", server.base))
        .header("Inference-Header-Content-Length", header.len())
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let json_len: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    let head: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 80);
    assert_eq!(
        head["outputs"][1]["data"],
        json!(labels.iter().map(|l| l.to_string()).collect::<Vec<_>>())
    );
    let got: Vec<f32> = bytes[json_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(got.len(), 20);
    // The upscaled digits go through the resize: close to, not exactly, the raw pixels' scores.
    for (g, w) in got.iter().zip(probs.iter().flatten()) {
        assert!((g - w).abs() < 0.05, "{g} vs {w}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_protocols_errors() {
    let pkg = trained_package();
    let server = ServeProcess::start(&pkg, &[]).await;
    let url = format!("{}/v2/models/model/infer", server.base);
    let png = base64::engine::general_purpose::STANDARD.encode(encode_digit(&test_digits(1)[0], 1, ImageFormat::Png));
    let cases = [
        (json!({"inputs": []}), 400, "no inputs"),
        (
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["bm90IGFuIGltYWdl"]}]}),
            400,
            "image",
        ),
        (
            json!({"inputs": [{"name": "input", "shape": [1, 3, 28, 28], "datatype": "FP32", "data": vec![0.0; 3 * 784]}]}),
            400,
            "[N, 1, 28, 28]",
        ),
        (
            json!({"inputs": [
                {"name": "image", "shape": [1], "datatype": "BYTES", "data": [png.clone()]},
                {"name": "image2", "shape": [1], "datatype": "BYTES", "data": [png.clone()]}
            ]}),
            400,
            "2 inputs",
        ),
        (
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [png]}], "outputs": [{"name": "boxes"}]}),
            400,
            "no output \"boxes\"",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, answer) = infer_json(&url, &body).await;
        assert_eq!(got, status, "{answer}");
        let msg = answer["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{needle}: {answer}");
    }
    let r = reqwest::Client::new().post(&url).body("{").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let (status, answer) = infer_json(&format!("{}/v2/models/other/infer", server.base), &json!({})).await;
    assert_eq!(status, 404);
    assert!(answer["error"].as_str().unwrap().contains("\"other\""));
}

/// On SIGTERM readiness turns 503 at once while the server goes on answering for the grace,
/// then it exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_false_when_shutdown_begins() {
    let pkg = trained_package();
    let mut server = ServeProcess::start(&pkg, &["--unready-grace-s", "3"]).await;
    let base = server.base.clone();
    assert_eq!(get(&format!("{base}/v2/health/ready")).await.0, 200);
    server.terminate();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let (status, _) = get(&format!("{base}/v2/health/ready")).await;
        if status == 503 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "readiness never turned false");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Still live, and the contract's own health check still answers during the grace.
    assert_eq!(get(&format!("{base}/v2/health/live")).await.0, 200);
    assert_eq!(get(&format!("{base}/health")).await.0, 200);
    assert!(server.child.wait().unwrap().success());
}

/// Triton's own client (`tritonclient.http`) against kiln-serve: JSON and binary requests.
/// Needs a Python with tritonclient: set `KILN_TRITON_PYTHON` to it (`.ci/run` does where it
/// can install it); without it the test says so and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_drives_kiln_serve() {
    let Ok(python) = std::env::var("KILN_TRITON_PYTHON") else {
        eprintln!("KILN_TRITON_PYTHON is not set: skipping the tritonclient conformance run");
        return;
    };
    let pkg = trained_package();
    let server = ServeProcess::start(&pkg, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let digits = test_digits(3);
    let (labels, _) = model_labels(&pkg, &digits);
    let paths: Vec<String> = digits
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let path = dir.path().join(format!("{i}.png"));
            std::fs::write(&path, encode_digit(d, 1, ImageFormat::Png)).unwrap();
            path.display().to_string()
        })
        .collect();
    let address = server.base.trim_start_matches("http://");
    let args: Vec<&str> = [address, "model"]
        .into_iter()
        .chain(paths.iter().map(String::as_str))
        .collect();
    let lines = python_json_lines(&python, "client_check.py", &args);
    let want: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    assert_eq!(lines.len(), 3);
    for line in &lines[..2] {
        assert_eq!(line["labels"], json!(want), "{line}");
    }
    assert_eq!(lines[2]["mode"], "fp32-binary");
    assert_eq!(lines[2]["probabilities"].as_array().map(Vec::len), Some(2));
}
