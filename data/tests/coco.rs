//! The COCO reader on hand-written instances json (class order, box conversion, crowd boxes,
//! images without boxes, named errors) and, opt-in, on the real `../shared/data/coco-mini`.

use std::path::{Path, PathBuf};

use kiln_data::{CocoBox, CocoDataset, CocoError};

/// A two-image COCO folder whose json is `json`, under `dir`; returns its root.
fn folder(dir: &Path, json: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("annotations")).unwrap();
    std::fs::create_dir_all(dir.join("val2017")).unwrap();
    std::fs::write(dir.join("annotations/instances_val2017.json"), json).unwrap();
    dir.to_path_buf()
}

const IMAGES: &str = r#""images": [
    {"id": 7, "file_name": "a.jpg", "width": 100, "height": 50},
    {"id": 3, "file_name": "b.jpg", "width": 20, "height": 20}]"#;
const CATEGORIES: &str = r#""categories": [
    {"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]"#;

fn json(annotations: &str) -> String {
    format!("{{{IMAGES}, \"annotations\": [{annotations}], {CATEGORIES}}}")
}

fn open(annotations: &str) -> Result<CocoDataset, CocoError> {
    let dir = tempfile::tempdir().unwrap();
    let root = folder(dir.path(), &json(annotations));
    CocoDataset::open(&root, "val2017")
}

#[test]
fn classes_follow_category_ids_and_boxes_become_corners() {
    let ds = open(
        r#"{"id": 1, "image_id": 7, "category_id": 18, "bbox": [10, 5, 20, 10], "iscrowd": 0},
           {"id": 2, "image_id": 7, "category_id": 90, "bbox": [90, 40, 30, 30], "area": 512.5, "iscrowd": 0},
           {"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 0, 50, 50], "iscrowd": 1}"#,
    )
    .unwrap();
    assert_eq!(ds.class_names(), ["person", "dog", "toothbrush"]);
    assert_eq!(
        (ds.category_id(0), ds.category_id(2), ds.category_id(3)),
        (Some(1), Some(90), None)
    );
    assert_eq!(ds.len(), 2);
    let a = &ds.images()[0];
    assert_eq!((a.id, a.width, a.height), (7, 100, 50));
    assert!(a.path.ends_with("val2017/a.jpg"), "{:?}", a.path);
    assert_eq!(
        a.boxes,
        vec![
            CocoBox {
                class: 1,
                xyxy: [10.0, 5.0, 30.0, 15.0]
            },
            // Clipped to the 100×50 image.
            CocoBox {
                class: 2,
                xyxy: [90.0, 40.0, 100.0, 50.0]
            },
        ]
    );
    assert_eq!(
        a.crowd,
        vec![CocoBox {
            class: 0,
            xyxy: [0.0, 0.0, 50.0, 50.0]
        }]
    );
    // An image with no annotations is kept, with no targets.
    let b = &ds.images()[1];
    assert_eq!((b.id, b.boxes.len(), b.crowd.len()), (3, 0, 0));
    // Evaluation sees the json's boxes (unclipped) and areas, crowds included, every image
    // and every category.
    let gt = ds.ground_truth();
    assert_eq!(gt.image_ids, [7, 3]);
    assert_eq!(gt.category_ids, [1, 18, 90]);
    let seen: Vec<_> = gt
        .annotations
        .iter()
        .map(|a| (a.category_id, a.bbox, a.area, a.iscrowd))
        .collect();
    assert_eq!(
        seen,
        [
            (18, [10.0, 5.0, 20.0, 10.0], 200.0, false),
            (90, [90.0, 40.0, 30.0, 30.0], 512.5, false),
            (1, [0.0, 0.0, 50.0, 50.0], 2500.0, true),
        ]
    );
}

#[test]
fn inconsistent_entries_are_named() {
    for (annotations, needles) in [
        (
            r#"{"id": 41, "image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2]}"#,
            vec!["annotation 41", "image 99"],
        ),
        (
            r#"{"id": 42, "image_id": 7, "category_id": 2, "bbox": [1, 1, 2, 2]}"#,
            vec!["annotation 42", "category 2"],
        ),
        (
            r#"{"id": 43, "image_id": 7, "category_id": 1, "bbox": [1, 1, 0, 2]}"#,
            vec!["annotation 43", "no positive area"],
        ),
    ] {
        let e = open(annotations).unwrap_err().to_string();
        for n in needles.iter().chain(&["instances_val2017.json"]) {
            assert!(e.contains(n), "{annotations}: {e}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let bad_size = json("").replace(r#""width": 20"#, r#""width": 0"#);
    let e = CocoDataset::open(&folder(dir.path(), &bad_size), "val2017")
        .unwrap_err()
        .to_string();
    assert!(e.contains("image 3") && e.contains("non-positive size"), "{e}");
    let e = CocoDataset::open(&folder(dir.path(), "{\"images\": []}"), "val2017")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not COCO instances json") && e.contains("annotations"),
        "{e}"
    );
    let e = CocoDataset::open(dir.path(), "train2017").unwrap_err().to_string();
    assert!(e.contains("instances_train2017.json"), "{e}");
}

#[test]
fn undecodable_images_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = folder(dir.path(), &json(""));
    std::fs::write(root.join("val2017/a.jpg"), b"not a jpeg").unwrap();
    let ds = CocoDataset::open(&root, "val2017").unwrap();
    let e = ds.load_rgb(0).unwrap_err().to_string();
    assert!(e.contains("a.jpg") && e.contains("decode"), "{e}");
    let e = ds.load_rgb(1).unwrap_err().to_string();
    assert!(e.contains("b.jpg"), "{e}");
}

#[test]
#[ignore = "reads ../shared/data/coco-mini (run with --include-ignored where it exists)"]
fn real_coco_mini_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/coco-mini");
    for (split, annotations, crowd) in [("train2017", 705, 6), ("val2017", 815, 11)] {
        let ds = CocoDataset::open(&root, split).unwrap();
        assert_eq!(ds.len(), 80);
        let names = ds.class_names();
        assert_eq!((names.len(), names[0], names[79]), (80, "person", "toothbrush"));
        let boxes: usize = ds.images().iter().map(|i| i.boxes.len()).sum();
        let crowds: usize = ds.images().iter().map(|i| i.crowd.len()).sum();
        assert_eq!((boxes, crowds), (annotations - crowd, crowd));
        let first = &ds.images()[0];
        let rgb = ds.load_rgb(0).unwrap();
        assert_eq!(rgb.dimensions(), (first.width, first.height));
        for img in ds.images() {
            for b in img.boxes.iter().chain(&img.crowd) {
                let [x1, y1, x2, y2] = b.xyxy;
                assert!(0.0 <= x1 && x1 < x2 && x2 <= img.width as f32, "{b:?}");
                assert!(0.0 <= y1 && y1 < y2 && y2 <= img.height as f32, "{b:?}");
            }
        }
    }
}
