//! `kiln-serve` with a YOLOX package: letterboxed BGR inputs, decoded and NMS-filtered boxes
//! mapped back onto the uploaded image, the platform's object-detection body.

mod common;

use burn::backend::Flex;
use common::yolox::{model_detections, package, picture, png, LABELS};
use common::{python_json_lines, ServeProcess};
use image::RgbImage;
use kiln_models::{DetectionSpec, Yolox};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

fn form(field: &str, images: &[&RgbImage]) -> Form {
    images.iter().enumerate().fold(Form::new(), |form, (i, img)| {
        form.part(field.to_string(), Part::bytes(png(img)).file_name(format!("p{i}.png")))
    })
}

async fn post(base: &str, query: &str, form: Form) -> (u16, Value) {
    common::post_form(&format!("{base}/{query}"), form).await
}

/// Checks one detection body against the model's own detections of `img`.
fn assert_matches_model(body: &Value, model: &Yolox<Flex>, img: &RgbImage, thresholds: DetectionSpec, what: &str) {
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["detection_boxes", "detection_classes", "detection_scores"],
        "{what}"
    );
    let (want, ratio) = model_detections(model, img, thresholds);
    let classes = body["detection_classes"].as_array().unwrap();
    let boxes = body["detection_boxes"].as_array().unwrap();
    let scores: Vec<f32> = serde_json::from_value(body["detection_scores"].clone()).unwrap();
    assert_eq!(
        (classes.len(), boxes.len(), scores.len()),
        (want.len(), want.len(), want.len()),
        "{what}: {body}"
    );
    assert!(scores.windows(2).all(|s| s[0] >= s[1]), "{what}: not sorted {scores:?}");
    let (w, h) = (img.width() as f32, img.height() as f32);
    for (i, d) in want.iter().enumerate() {
        assert_eq!(classes[i], LABELS[d.class], "{what}: box {i}");
        assert!(
            (scores[i] - d.score).abs() <= 1e-6 * d.score.max(1e-3),
            "{what}: {} vs {}",
            scores[i],
            d.score
        );
        let got: [f32; 4] = serde_json::from_value(boxes[i].clone()).unwrap();
        let [x1, y1, x2, y2] = d.xyxy.map(|v| v / ratio);
        let expected = [y1.clamp(0.0, h), x1.clamp(0.0, w), y2.clamp(0.0, h), x2.clamp(0.0, w)];
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-3, "{what}: box {i} {got:?} vs {expected:?}");
        }
        let [ymin, xmin, ymax, xmax] = got;
        assert!(
            0.0 <= ymin && ymin <= ymax && ymax <= h && 0.0 <= xmin && xmin <= xmax && xmax <= w,
            "{what}: box {i} {got:?} outside {w}x{h}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boxes_match_the_model_in_the_platform_body() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("model");
    let (model, config, kept) = package(&pkg);
    let thresholds = config.kiln.detection.unwrap();
    let server = ServeProcess::start(&pkg, &[]).await;
    let health: Value = reqwest::get(format!("{}/health", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({ "status": "OK" }));

    // Wide, tall and larger-than-input pictures: padding right, below, and downscaling.
    let pictures = [picture(90, 50, 0), picture(40, 70, 1), picture(130, 100, 2)];
    for (i, img) in pictures.iter().enumerate() {
        let (status, body) = post(&server.base, "", form("images", &[img])).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
        assert_matches_model(&body[0], &model, img, thresholds, &format!("picture {i}"));
        if i == 0 {
            // The package's threshold applies: exactly the best `kept` boxes are left.
            assert_eq!(body[0]["detection_scores"].as_array().unwrap().len(), kept, "{body}");
        }
    }

    // One object per field, for its first file; with detail, every file by name.
    let two_fields =
        form("images", &[&pictures[1], &pictures[2]]).part("other", Part::bytes(png(&pictures[0])).file_name("o.png"));
    let (status, body) = post(&server.base, "", two_fields).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_array().map(Vec::len), Some(2), "{body}");
    assert_matches_model(&body[0], &model, &pictures[1], thresholds, "field images");
    assert_matches_model(&body[1], &model, &pictures[0], thresholds, "field other");
    let (status, detail) = post(
        &server.base,
        "?detail=true",
        form("images", &[&pictures[1], &pictures[2]]),
    )
    .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail[0]["field"], "images");
    for (i, img) in pictures[1..].iter().enumerate() {
        let mut file = detail[0]["files"][i].clone();
        assert_eq!(file["filename"], format!("p{i}.png"));
        file.as_object_mut().unwrap().remove("filename");
        assert_matches_model(&file, &model, img, thresholds, &format!("detail file {i}"));
    }
}

/// The v2 protocol's detection tensors hold the contract body's boxes, image by image:
/// `detection_image` says whose each box is. Also driven by Triton's client where available.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_inference_gives_the_same_boxes_as_tensors() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("model");
    let (model, config, _) = package(&pkg);
    let thresholds = config.kiln.detection.unwrap();
    let server = ServeProcess::start(&pkg, &[]).await;
    let pictures = [picture(90, 50, 0), picture(40, 70, 1)];
    let images: Vec<Value> = pictures
        .iter()
        .map(|p| json!(base64::engine::general_purpose::STANDARD.encode(png(p))))
        .collect();
    let request = json!({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": images}]});
    let r = reqwest::Client::new()
        .post(format!("{}/v2/models/model/infer", server.base))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let output = |name: &str| {
        body["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {body}"))
            .clone()
    };
    let (boxes, scores, classes, image) = (
        output("detection_boxes"),
        output("detection_scores"),
        output("detection_classes"),
        output("detection_image"),
    );
    let k = scores["shape"][0].as_u64().unwrap() as usize;
    assert_eq!(boxes["shape"], json!([k, 4]));
    for (i, img) in pictures.iter().enumerate() {
        let rows: Vec<usize> = (0..k).filter(|&j| image["data"][j] == i).collect();
        let contract = json!({
            "detection_classes": rows.iter().map(|&j| classes["data"][j].clone()).collect::<Vec<_>>(),
            "detection_boxes": rows.iter().map(|&j| (0..4).map(|c| boxes["data"][4 * j + c].clone()).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "detection_scores": rows.iter().map(|&j| scores["data"][j].clone()).collect::<Vec<_>>(),
        });
        assert_matches_model(&contract, &model, img, thresholds, &format!("v2 picture {i}"));
    }
}

/// Triton's own client against a detection package, JSON and binary (`KILN_TRITON_PYTHON`;
/// without it the test says so and passes): the same boxes as the contract route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_gets_the_boxes() {
    let Ok(python) = std::env::var("KILN_TRITON_PYTHON") else {
        eprintln!("KILN_TRITON_PYTHON is not set: skipping the tritonclient conformance run");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("model");
    let (model, config, _) = package(&pkg);
    let thresholds = config.kiln.detection.unwrap();
    let server = ServeProcess::start(&pkg, &[]).await;
    let img = picture(90, 50, 0);
    let path = dir.path().join("p.png");
    std::fs::write(&path, png(&img)).unwrap();
    let address = server.base.trim_start_matches("http://");
    let lines = python_json_lines(&python, "client_check.py", &[address, "model", path.to_str().unwrap()]);
    for line in &lines[..2] {
        let mut body = line.clone();
        let body = body.as_object_mut().unwrap();
        body.remove("mode");
        body.remove("detection_image");
        assert_matches_model(&Value::Object(body.clone()), &model, &img, thresholds, "tritonclient");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_the_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("model");
    package(&pkg);
    let server = ServeProcess::start(&pkg, &[]).await;
    let not_an_image = Form::new().part("images", Part::bytes(b"not a picture".to_vec()).file_name("x.png"));
    let (status, body) = post(&server.base, "", not_an_image).await;
    assert_eq!(status, 400);
    assert_eq!(body["error_code"], "KILN.400");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(
        msg.contains("\"images\" (x.png)") && msg.contains("not a decodable image"),
        "{msg}"
    );
    // A good picture afterwards is still answered.
    let (status, body) = post(&server.base, "", form("images", &[&picture(30, 30, 4)])).await;
    assert_eq!(status, 200, "{body}");
    assert!(body[0]["detection_boxes"].is_array(), "{body}");
}
