//! Helpers the training jobs' end-to-end tests share: ports for multi-node runs on loopback,
//! waiting on a child with a limit, a tiny COCO folder and a tiny ImageFolder of digits.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use burn::data::dataset::Dataset;
use image::{GrayImage, Rgb, RgbImage};
use kiln_data::{MnistDataset, MnistSplit};
use serde_json::json;

/// `kiln-train <job> <args>`, run to completion with diagnostics at `warn`.
pub fn kiln_train(job: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln-train"))
        .arg(job)
        .args(args)
        .env("KILN_LOG", "warn")
        .output()
        .unwrap()
}

/// The stdout of a run that must have succeeded (its stderr and stdout in the failure).
pub fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kiln-train failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

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

/// The classes of [`digit_folder`] and the MNIST digit each holds.
pub const DIGIT_CLASSES: [(&str, u8); 3] = [("one", 1), ("seven", 7), ("zero", 0)];

/// `root/{train,val}/<class>/*.png`: `per_class` train and `per_class / 2` val digits per
/// class of [`DIGIT_CLASSES`], real MNIST test digits upscaled to `width × height` RGB so
/// resizing and cropping have work to do.
pub fn digit_folder(root: &Path, per_class: usize, (width, height): (u32, u32)) {
    let mnist = MnistDataset::from_dir(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist"),
        MnistSplit::Test,
    )
    .unwrap();
    for (class, digit) in DIGIT_CLASSES {
        let items = (0..mnist.len())
            .map(|i| mnist.get(i).unwrap())
            .filter(|it| it.label == digit)
            .take(per_class + per_class / 2);
        for (i, item) in items.enumerate() {
            let split = if i < per_class { "train" } else { "val" };
            let dir = root.join(split).join(class);
            fs::create_dir_all(&dir).unwrap();
            let gray = GrayImage::from_raw(28, 28, item.image.to_vec()).unwrap();
            let rgb = RgbImage::from_fn(width, height, |x, y| {
                let v = gray.get_pixel(x * 28 / width, y * 28 / height).0[0];
                Rgb([v, v / 2, 255 - v])
            });
            rgb.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}

/// `root/{train,val}/{cat,dog}/`: the first `train` and `val` photos of each class of the real
/// dog/cat set in `../shared/data/dogcat` (opt-in tests only: it is not in the repository).
pub fn dogcat_subset(root: &Path, train: usize, val: usize) {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/dogcat");
    for (split, n) in [("train", train), ("val", val)] {
        for class in ["cat", "dog"] {
            let from = shared.join(split).join(class);
            let to = root.join(split).join(class);
            fs::create_dir_all(&to).unwrap();
            let mut files: Vec<_> = fs::read_dir(&from).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            for f in files.iter().take(n) {
                fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
}
