//! Helpers the training jobs' end-to-end tests share: ports for multi-node runs on loopback,
//! waiting on a child with a limit, and a tiny COCO folder.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use serde_json::json;

/// A port with (very likely) two free ports above it, for the orchestrator and node services.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port < 65000 && (1..=2).all(|k| TcpListener::bind(("127.0.0.1", port + k)).is_ok()) {
            return port;
        }
    }
}

/// Waits for every node's process at most `limit` each, in rank order.
pub fn wait_all(children: Vec<Child>, limit: Duration) -> Vec<Output> {
    children
        .into_iter()
        .enumerate()
        .map(|(rank, c)| wait(c, limit, &format!("node {rank}")))
        .collect()
}

/// Waits for `child` at most `limit`; kills it and fails past that.
pub fn wait(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().ok();
            panic!("{what} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// `root/annotations/instances_train2017.json` and `root/train2017/*.png`: `n` images, each
/// with a red (category 1) and a blue (category 3) rectangle at positions that vary.
pub fn coco_folder(root: &Path, n: usize) {
    let images_dir = root.join("train2017");
    fs::create_dir_all(&images_dir).unwrap();
    fs::create_dir_all(root.join("annotations")).unwrap();
    let mut images = Vec::new();
    let mut annotations = Vec::new();
    for i in 0..n {
        let mut img = RgbImage::from_pixel(64, 64, Rgb([200, 200, 200]));
        let boxes = [
            (
                1,
                [4 + 3 * (i % 5) as u32, 6 + 2 * (i % 4) as u32, 24, 20],
                Rgb([220, 30, 30]),
            ),
            (
                3,
                [34 - 2 * (i % 3) as u32, 30 + (i % 6) as u32, 22, 28],
                Rgb([30, 30, 220]),
            ),
        ];
        for (k, (category, [x, y, w, h], colour)) in boxes.into_iter().enumerate() {
            for py in y..y + h {
                for px in x..x + w {
                    img.put_pixel(px, py, colour);
                }
            }
            annotations.push(json!({
                "id": i * 2 + k + 1, "image_id": i + 1, "category_id": category,
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0
            }));
        }
        let file = format!("{i:03}.png");
        img.save(images_dir.join(&file)).unwrap();
        images.push(json!({"id": i + 1, "file_name": file, "width": 64, "height": 64}));
    }
    let doc = json!({
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "red"}, {"id": 3, "name": "blue"}],
    });
    fs::write(
        root.join("annotations/instances_train2017.json"),
        serde_json::to_string(&doc).unwrap(),
    )
    .unwrap();
}
