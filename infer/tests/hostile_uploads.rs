//! The `kiln-serve` binary against hostile uploads: tiny files that decode or resize to
//! gigabytes, concurrent heavy decodes, and a server that must keep answering meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::{trained_package, ServeProcess};
use image::ExtendedColorType;
use kiln_data::fuzz::zeros_png;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

async fn post(base: &str, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let form = Form::new().part("image", Part::bytes(bytes).file_name(name.to_string()));
    common::post_form(&format!("{base}/"), form).await
}

/// The server's peak resident memory so far, in MB (Linux).
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb / 1024.0
}

/// A 1×1,000,000 PNG (about 2 KB) would become 28×28,000,000 after the MNIST resize: refused
/// from its header, naming the file, before anything is decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thin_image_that_would_resize_to_gigabytes_is_refused() {
    let pkg = trained_package();
    let server = ServeProcess::start(&pkg, &[]).await;
    let thin = zeros_png(1, 1_000_000, ExtendedColorType::L8);
    assert!(thin.len() < 4_000, "{} bytes", thin.len());
    let started = Instant::now();
    let (status, body) = post(&server.base, "thin.png", thin).await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(msg.contains("thin.png") && msg.contains("28x28000000"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(peak_rss_mb(server.child.id()) < 300.0);
}

/// Heavy decodes share the decode budget: four concurrent 4000×4000 16-bit RGBA images (about
/// 200 MB of working memory each) under a 300 MB budget are decoded one at a time, every one
/// answers, the peak resident memory stays near one decode, and `/health` keeps answering in
/// milliseconds meanwhile. An image needing more than the whole budget is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_decodes_queue_for_the_budget_and_health_stays_fast() {
    let pkg = trained_package();
    let server = ServeProcess::start(&pkg, &["--decode-memory-mb", "300"]).await;
    let heavy = zeros_png(4000, 4000, ExtendedColorType::Rgba16);
    let requests: Vec<_> = (0..4)
        .map(|i| {
            let (base, bytes) = (server.base.clone(), heavy.clone());
            tokio::spawn(async move { post(&base, &format!("heavy{i}.png"), bytes).await })
        })
        .collect();
    let client = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    while !requests.iter().all(|r| r.is_finished()) {
        let started = Instant::now();
        let r = client.get(format!("{}/health", server.base)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in requests {
        let (status, body) = r.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert!(slowest < Duration::from_millis(250), "/health took {slowest:?}");
    let peak = peak_rss_mb(server.child.id());
    assert!(peak < 450.0, "peak RSS {peak:.0} MB");

    let huge = zeros_png(6000, 6000, ExtendedColorType::Rgba16);
    let (status, body) = post(&server.base, "huge.png", huge).await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(
        msg.contains("huge.png") && msg.contains("decode memory budget"),
        "{msg}"
    );
}

/// A JPEG cut off inside its scan is refused, as PIL refuses it ("image file is truncated").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_jpeg_is_refused() {
    let pkg = trained_package();
    let server = ServeProcess::start(&pkg, &[]).await;
    let digit = &common::test_digits(1)[0];
    let jpeg = common::encode_digit(digit, 4, image::ImageFormat::Jpeg);
    let (status, _) = post(&server.base, "whole.jpg", jpeg.clone()).await;
    assert_eq!(status, 200);
    let (status, body) = post(&server.base, "cut.jpg", jpeg[..jpeg.len() * 2 / 3].to_vec()).await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(msg.contains("cut.jpg") && msg.contains("truncated"), "{msg}");
}

/// `GET /ws` without an upgrade gets the JSON error body like every other refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_on_the_websocket_route_is_a_json_error() {
    let pkg = trained_package();
    let server = ServeProcess::start(&pkg, &[]).await;
    let r = reqwest::get(format!("{}/ws", server.base)).await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert!((400..500).contains(&status), "{status}");
    assert_eq!(body["error_code"], format!("KILN.{status}"));
}
