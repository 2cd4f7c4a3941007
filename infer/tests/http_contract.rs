//! The `kiln-serve` binary against the contract, driven by a real HTTP client.

mod common;

use common::{encode_digit, model_labels, test_digits, trained_package, ServeProcess};
use image::ImageFormat;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

fn form(field: &str, name: &str, bytes: Vec<u8>) -> Form {
    Form::new().part(field.to_string(), Part::bytes(bytes).file_name(name.to_string()))
}

async fn post(base: &str, form: Form) -> (u16, Value) {
    common::post_form(&format!("{base}/"), form).await
}

/// Real test digits as PNG and JPEG, at 28×28 and enlarged: the server's labels equal the
/// model's on the raw idx tensors (exactly for lossless 28×28 PNG, with its probabilities).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_match_the_model_on_raw_digits() {
    let pkg = trained_package();
    let digits = test_digits(60);
    let (want, want_probs) = model_labels(&pkg, &digits);
    let truth: Vec<i64> = digits.iter().map(|d| d.label as i64).collect();
    let accuracy = want.iter().zip(&truth).filter(|(a, b)| a == b).count();
    assert!(accuracy >= 50, "fixture model too weak: {accuracy}/60");

    let server = ServeProcess::start(&pkg, &[]).await;
    let mut agree = [0usize; 3];
    for (i, d) in digits.iter().enumerate() {
        let (status, body) = post(
            &server.base,
            form("image", "d.png", encode_digit(d, 1, ImageFormat::Png)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, serde_json::json!([{ "image": want[i] }]), "digit {i}");
        agree[0] += 1;

        let r = reqwest::Client::new()
            .post(format!("{}/?detail=true", server.base))
            .multipart(form("image", "d.png", encode_digit(d, 1, ImageFormat::Png)))
            .send()
            .await
            .unwrap();
        let detail: Value = r.json().await.unwrap();
        let probs: Vec<f64> = serde_json::from_value(detail[0]["files"][0]["probabilities"].clone()).unwrap();
        for (p, q) in probs.iter().zip(&want_probs[i]) {
            assert!(
                (p - *q as f64).abs() < 1e-5,
                "digit {i}: {probs:?} vs {:?}",
                want_probs[i]
            );
        }

        for (k, (scale, fmt)) in [(1, ImageFormat::Jpeg), (3, ImageFormat::Png)].into_iter().enumerate() {
            let (status, body) = post(&server.base, form("image", "d", encode_digit(d, scale, fmt))).await;
            assert_eq!(status, 200, "{body}");
            agree[k + 1] += (body[0]["image"] == want[i]) as usize;
        }
    }
    assert_eq!(agree[0], 60);
    assert!(
        agree[1] >= 57 && agree[2] >= 57,
        "JPEG / 84×84 PNG agreement {agree:?} of 60"
    );
}

/// Several fields and several files: one object per field, in order, first file's label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_object_per_field_from_its_first_file() {
    let pkg = trained_package();
    let digits = test_digits(3);
    let (want, _) = model_labels(&pkg, &digits);
    let server = ServeProcess::start(&pkg, &[]).await;
    let png = |i: usize| Part::bytes(encode_digit(&digits[i], 1, ImageFormat::Png)).file_name(format!("{i}.png"));
    let f = Form::new()
        .part("a", png(0))
        .part("a", png(1))
        .text("note", "ignored text field")
        .part("b", png(2));
    let (status, body) = post(&server.base, f).await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!([{ "a": want[0] }, { "b": want[2] }]));
}

/// Every bad input gets its status and a JSON error naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors() {
    let pkg = trained_package();
    let server = ServeProcess::start(&pkg, &["--max-body-mb", "0.2", "--max-pixels", "10000"]).await;
    let base = &server.base;
    let client = reqwest::Client::new();
    let check = |status: u16, body: &Value, want: u16, needle: &str| {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["error_code"], format!("KILN.{want}"), "{body}");
        let msg = body["error_msg"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    };

    let (s, b) = post(base, form("image", "big.bin", vec![7u8; 300_000])).await;
    check(s, &b, 413, "limit of 200000 bytes");
    let r = client
        .post(format!("{base}/"))
        .json(&serde_json::json!({"image": 1}))
        .send()
        .await
        .unwrap();
    check(
        r.status().as_u16(),
        &r.json().await.unwrap(),
        415,
        "multipart/form-data",
    );
    let (s, b) = post(base, Form::new().text("image", "no file here")).await;
    check(s, &b, 400, "no file");
    let (s, b) = post(base, form("image", "empty.png", vec![])).await;
    check(s, &b, 400, "\"image\" (empty.png): the file is empty");
    let (s, b) = post(base, form("photo", "notes.txt", b"plain text, not pixels".to_vec())).await;
    check(s, &b, 400, "\"photo\" (notes.txt): not a decodable image");
    let big = encode_digit(&test_digits(1)[0], 4, ImageFormat::Png); // 112×112 = 12544 px
    let (s, b) = post(base, form("image", "big.png", big)).await;
    check(s, &b, 400, "over the limit of 10000");
    let png = encode_digit(&test_digits(1)[0], 1, ImageFormat::Png);
    let (s, b) = post(base, form("image", "cut.png", png[..png.len() / 2].to_vec())).await;
    check(s, &b, 400, "cut.png");
    let r = client
        .post(format!("{base}/"))
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body("--XYZ\r\nbroken")
        .send()
        .await
        .unwrap();
    check(r.status().as_u16(), &r.json().await.unwrap(), 400, "multipart");

    let r = client.get(format!("{base}/nowhere")).send().await.unwrap();
    check(r.status().as_u16(), &r.json().await.unwrap(), 404, "/nowhere");
    let r = client.get(format!("{base}/")).send().await.unwrap();
    check(r.status().as_u16(), &r.json().await.unwrap(), 405, "GET");

    // The nginx front's security headers are on every response, errors included.
    let r = client.get(format!("{base}/nowhere")).send().await.unwrap();
    for (h, v) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "SAMEORIGIN"),
        ("content-security-policy", "default-src 'self'"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(r.headers()[h], v);
    }
    assert!(r.headers()["strict-transport-security"]
        .to_str()
        .unwrap()
        .starts_with("max-age="));

    // The server is still healthy after all of that, and counted it.
    let r = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kiln_http_requests_total{method=\"POST\",path=\"/\",status=\"413\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("kiln_model_load_seconds"), "{metrics}");
}

/// HTTPS with a certificate generated at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_tls_serves_https() {
    let pkg = trained_package();
    let server = ServeProcess::start(&pkg, &["--tls-self-signed"]).await;
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = client.get(format!("{}/health", server.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let digit = &test_digits(1)[0];
    let f = form("image", "d.png", encode_digit(digit, 1, ImageFormat::Png));
    let r = client
        .post(format!("{}/", server.base))
        .multipart(f)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The prediction page and its script over HTTPS too.
    for (path, accept) in [("/", "text/html"), ("/page.js", "*/*")] {
        let r = client
            .get(format!("{}{path}", server.base))
            .header("Accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // Plain HTTP to the TLS port does not get an answer as if it were HTTPS.
    let plain = server.base.replace("https://", "http://");
    assert!(reqwest::get(format!("{plain}/health"))
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true));
}

/// WebSocket: each binary message is one image, each reply the HTTP route's JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_answers_each_image() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let pkg = trained_package();
    let digits = test_digits(5);
    let (want, _) = model_labels(&pkg, &digits);
    let server = ServeProcess::start(&pkg, &[]).await;
    let url = format!("{}/ws", server.base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for (i, d) in digits.iter().enumerate() {
        ws.send(Message::Binary(encode_digit(d, 1, ImageFormat::Png).into()))
            .await
            .unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        let v: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        assert_eq!(v, serde_json::json!([{ "image": want[i] }]));
    }
    ws.send(Message::Binary(b"garbage".to_vec().into())).await.unwrap();
    let v: Value = serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(v["error_code"], "KILN.400");
}

/// SIGTERM stops the process cleanly (exit status 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly() {
    let pkg = trained_package();
    let mut server = ServeProcess::start(&pkg, &[]).await;
    assert_eq!(
        reqwest::get(format!("{}/health", server.base)).await.unwrap().status(),
        200
    );
    server.terminate();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// A package that names an unknown architecture stops the server with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_architecture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("model");
    std::fs::create_dir(&pkg).unwrap();
    let mut config = kiln_models::net_package_config(&kiln_models::NetConfig::new());
    config.kiln.architecture = "vgg_9000".into();
    std::fs::write(pkg.join("config.json"), serde_json::to_string(&config).unwrap()).unwrap();
    std::fs::write(pkg.join("model.safetensors"), b"").unwrap();
    let err = common::refused_at_start(&pkg);
    assert!(err.contains("vgg_9000") && err.contains("config.json"), "{err}");
}

/// `GET /` gives a browser the prediction page and any other client the method error;
/// `/info` describes what is served; the page's files come with the security headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_get_the_prediction_page() {
    let pkg = trained_package();
    let server = ServeProcess::start(&pkg, &[]).await;
    let client = reqwest::Client::new();
    let page = client
        .get(format!("{}/", server.base))
        .header("Accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-security-policy"], "default-src 'self'");
    assert!(page.text().await.unwrap().contains("<script src=\"/page.js\""));
    let api = client.get(format!("{}/", server.base)).send().await.unwrap();
    assert_eq!(api.status(), 405);
    let body: Value = api.json().await.unwrap();
    assert_eq!(body["error_code"], "KILN.405");
    for (path, kind) in [("/page.js", "text/javascript"), ("/page.css", "text/css")] {
        let r = client.get(format!("{}{path}", server.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
    }
    let info: Value = client
        .get(format!("{}/info", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["architecture"], "mnist_net");
    assert_eq!(
        (info["ready"].as_bool(), info["device"].as_str()),
        (Some(true), Some("cpu"))
    );
    assert_eq!(info["labels"].as_array().map(Vec::len), Some(10));
}
