//! kiln-data's COCO evaluator against pycocotools: a fixture whose 12 numbers pycocotools
//! computed (`fixtures/coco_eval/make_fixture.py`), and small cases derived by hand.

use kiln_data::coco_eval::{evaluate, CocoEvalError, CocoGroundTruth, Detection, GtBox, STAT_LABELS};
use serde_json::Value;
use std::path::Path;

fn read_json(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/coco_eval")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or_else(|| panic!("missing {key} in {v}"))
}

fn ids(list: &Value) -> Vec<u64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|x| field(x, "id").as_u64().unwrap())
        .collect()
}

fn bbox(v: &Value) -> [f64; 4] {
    let b: Vec<f64> = field(v, "bbox")
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    b.try_into().unwrap()
}

fn load_gt(v: &Value) -> CocoGroundTruth {
    let annotations = field(v, "annotations").as_array().unwrap().iter().map(|a| GtBox {
        image_id: field(a, "image_id").as_u64().unwrap(),
        category_id: field(a, "category_id").as_u64().unwrap(),
        bbox: bbox(a),
        area: field(a, "area").as_f64().unwrap(),
        iscrowd: field(a, "iscrowd").as_u64().unwrap() != 0,
    });
    CocoGroundTruth {
        image_ids: ids(field(v, "images")),
        category_ids: ids(field(v, "categories")),
        annotations: annotations.collect(),
    }
}

fn load_dets(v: &Value) -> Vec<Detection> {
    let dets = v.as_array().unwrap().iter().map(|d| Detection {
        image_id: field(d, "image_id").as_u64().unwrap(),
        category_id: field(d, "category_id").as_u64().unwrap(),
        bbox: bbox(d),
        score: field(d, "score").as_f64().unwrap(),
    });
    dets.collect()
}

#[test]
fn fixture_matches_pycocotools() {
    let gt = load_gt(&read_json("gt.json"));
    let dets = load_dets(&read_json("dets.json"));
    let expected = read_json("expected.json");
    let expected: Vec<f64> = field(&expected, "stats")
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let got = evaluate(&gt, &dets).unwrap().stats;
    let mut max_diff: f64 = 0.0;
    for ((label, want), have) in STAT_LABELS.iter().zip(&expected).zip(got) {
        println!("{label}: pycocotools {want:.12} kiln {have:.12}");
        max_diff = max_diff.max((want - have).abs());
    }
    println!("max difference {max_diff:e}");
    assert!(max_diff < 1e-9, "max difference {max_diff:e}");
}

/// One image (id 1), categories 1 and 2.
fn ground_truth(annotations: Vec<GtBox>) -> CocoGroundTruth {
    CocoGroundTruth {
        image_ids: vec![1],
        category_ids: vec![1, 2],
        annotations,
    }
}

fn gt_box(bbox: [f64; 4], iscrowd: bool) -> GtBox {
    GtBox {
        image_id: 1,
        category_id: 1,
        bbox,
        area: bbox[2] * bbox[3],
        iscrowd,
    }
}

fn det(bbox: [f64; 4], score: f64) -> Detection {
    Detection {
        image_id: 1,
        category_id: 1,
        bbox,
        score,
    }
}

fn assert_stats(got: [f64; 12], want: [f64; 12]) {
    for ((label, g), w) in STAT_LABELS.iter().zip(got).zip(want) {
        assert!((g - w).abs() < 1e-12, "{label}: got {g}, want {w}");
    }
}

const BOX: [f64; 4] = [0.0, 0.0, 100.0, 100.0]; // area 10000 > 96²: large

#[test]
fn perfect_detection_scores_one() {
    let stats = evaluate(&ground_truth(vec![gt_box(BOX, false)]), &[det(BOX, 0.9)])
        .unwrap()
        .stats;
    // Category 2 has no ground truth and drops out; small and large have none either.
    assert_stats(stats, [1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, 1.0]);
}

/// AP, AP50, AP75 and AR@100 of one detection covering the top `height` rows of `BOX`
/// (IoU `height / 100`).
fn single_detection(height: f64) -> [f64; 4] {
    let stats = evaluate(
        &ground_truth(vec![gt_box(BOX, false)]),
        &[det([0.0, 0.0, 100.0, height], 0.9)],
    )
    .unwrap()
    .stats;
    [stats[0], stats[1], stats[2], stats[8]]
}

#[test]
fn partial_overlap_counts_at_thresholds_up_to_its_iou() {
    // IoU 0.62 passes 0.50, 0.55, 0.60: 3 of the 10 thresholds.
    assert_eq!(
        single_detection(62.0).map(|s| (s * 1e9).round() / 1e9),
        [0.3, 1.0, 0.0, 0.3]
    );
    // IoU exactly 0.75 passes 0.75 (the threshold is inclusive): 6 of 10.
    assert_eq!(
        single_detection(75.0).map(|s| (s * 1e9).round() / 1e9),
        [0.6, 1.0, 1.0, 0.6]
    );
    // IoU 0.4 passes none.
    assert_eq!(single_detection(40.0), [0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn detections_on_crowd_regions_are_ignored() {
    let crowd = [200.0, 200.0, 200.0, 200.0];
    let gt = ground_truth(vec![gt_box(BOX, false), gt_box(crowd, true)]);
    // Both crowd detections outrank the true one; counted as false positives they would halve
    // the precision at recall 1.
    let dets = [
        det([210.0, 210.0, 50.0, 50.0], 0.95),
        det(BOX, 0.9),
        det([300.0, 300.0, 60.0, 60.0], 0.97),
    ];
    let ap = evaluate(&gt, &dets).unwrap().stats[0];
    assert!((ap - 1.0).abs() < 1e-12, "{ap}");
}

#[test]
fn ranks_false_positives_by_score() {
    let gt = ground_truth(vec![gt_box(BOX, false)]);
    // A false positive above the match: precision 1/2 at every recall threshold.
    let ahead = evaluate(&gt, &[det([500.0, 500.0, 10.0, 10.0], 0.95), det(BOX, 0.9)])
        .unwrap()
        .stats;
    assert!((ahead[0] - 0.5).abs() < 1e-12, "{}", ahead[0]);
    // Below it, it does not matter; with maxDets=1 it is cut.
    let behind = evaluate(&gt, &[det([500.0, 500.0, 10.0, 10.0], 0.5), det(BOX, 0.9)])
        .unwrap()
        .stats;
    assert!((behind[0] - 1.0).abs() < 1e-12 && behind[6] == 1.0, "{behind:?}");
}

#[test]
fn no_ground_truth_gives_minus_one() {
    let stats = evaluate(&ground_truth(vec![]), &[det(BOX, 0.9)]).unwrap().stats;
    assert_eq!(stats, [-1.0; 12]);
}

#[test]
fn bad_input_names_the_entry() {
    let gt = ground_truth(vec![gt_box(BOX, false)]);
    let bad = |dets: &[Detection]| match evaluate(&gt, dets) {
        Err(CocoEvalError::InvalidDetection { index, reason }) => (index, reason),
        other => panic!("expected an invalid detection, got {other:?}"),
    };
    let (index, reason) = bad(&[det(BOX, 0.9), det([0.0, f64::NAN, 1.0, 1.0], 0.5)]);
    assert_eq!(index, 1);
    assert!(reason.contains("not finite"), "{reason}");
    let (index, reason) = bad(&[det([0.0, 0.0, -1.0, 5.0], 0.5)]);
    assert_eq!(index, 0);
    assert!(reason.contains("negative"), "{reason}");
    let (index, reason) = bad(&[det(BOX, 0.9), det(BOX, 0.8), det(BOX, f64::INFINITY)]);
    assert_eq!(index, 2);
    assert!(reason.contains("score"), "{reason}");
    let (index, reason) = bad(&[Detection {
        image_id: 7,
        ..det(BOX, 0.9)
    }]);
    assert_eq!(index, 0);
    assert!(reason.contains("image id 7"), "{reason}");

    let mut gt = gt;
    gt.annotations.push(GtBox {
        category_id: 9,
        ..gt_box(BOX, false)
    });
    let err = evaluate(&gt, &[]).unwrap_err();
    assert!(
        matches!(err, CocoEvalError::InvalidGroundTruth { index: 1, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "ground truth 1: category id 9 is not in the ground truth's category list"
    );
}
