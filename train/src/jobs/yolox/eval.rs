//! COCO evaluation of a YOLOX model, as YOLOX's `COCOEvaluator` does it: letterboxed images,
//! decoding with the experiment's confidence and NMS thresholds, boxes mapped back to the
//! original pixels, then pycocotools' bbox metrics. In a distributed run each worker evaluates
//! its shard and the detections are gathered on every worker before scoring.

use std::time::Instant;

use burn::prelude::*;
use kiln_data::coco_eval::STAT_LABELS;
use kiln_data::{coco_evaluate, CocoDataset, CocoStats, DetectLoader, Detection};
use kiln_models::yolox::{decode, Detected, Yolox, STRIDES};

use crate::ddp::Collective;
use crate::error::TrainError;
use crate::progress::PassProgress;

/// The numbers sent per detection when gathering: image id, category id, box, score.
const FIELDS: usize = 7;

/// Evaluates `model`, its BatchNorms folded once for the pass, on the loader's (sharded) split
/// of `dataset`; every worker gets the same statistics, and rank 0 prints pycocotools'
/// summary.
pub fn evaluate<B: Backend>(
    model: &Yolox<B>,
    dist: &Collective<B>,
    dataset: &CocoDataset,
    loader: &DetectLoader,
    conf: f32,
    nms: f32,
    device: &B::Device,
) -> Result<CocoStats, TrainError> {
    let model = model.clone().fold_batch_norms();
    let started = Instant::now();
    let progress = PassProgress::new(loader.num_batches(), "evaluate".into(), dist.is_root());
    let mut mine = Vec::new();
    for batch in loader.epoch(0) {
        let batch = batch?;
        let images = Tensor::<B, 4>::from_data(TensorData::new(batch.images, batch.shape), device);
        let found = decode(&model.forward(images), &STRIDES, conf, nms);
        for ((dets, id), ratio) in found.iter().zip(&batch.image_ids).zip(&batch.ratios) {
            // Validation samples are letterboxed single images: they always have a ratio.
            let ratio = ratio.unwrap_or(1.0);
            mine.extend(dets.iter().filter_map(|d| to_coco(d, *id, ratio, dataset)));
        }
        progress.inc();
    }
    progress.finish();
    let detections = gather(dist, &mine, device)?;
    let stats = coco_evaluate(dataset.ground_truth(), &detections).map_err(|e| TrainError::Flag(e.to_string()))?;
    if dist.is_root() {
        println!(
            "Evaluated {} images, {} detections in {:.1} s",
            dataset.len(),
            detections.len(),
            started.elapsed().as_secs_f64()
        );
        println!("{}", summary(&stats));
    }
    Ok(stats)
}

/// A detection on the letterboxed input as a COCO result on the original image.
fn to_coco(d: &Detected, image_id: u64, ratio: f32, dataset: &CocoDataset) -> Option<Detection> {
    let [x1, y1, x2, y2] = d.xyxy.map(|v| (v / ratio) as f64);
    Some(Detection {
        image_id,
        category_id: dataset.category_id(d.class)?,
        bbox: [x1, y1, x2 - x1, y2 - y1],
        score: d.score as f64,
    })
}

/// Every worker's detections, on every worker, in rank order.
fn gather<B: Backend>(
    dist: &Collective<B>,
    mine: &[Detection],
    device: &B::Device,
) -> Result<Vec<Detection>, TrainError> {
    if dist.world() == 1 {
        return Ok(mine.to_vec());
    }
    let mut counts = vec![0.0; dist.world()];
    counts[dist.rank()] = mine.len() as f64;
    let counts = dist.sum(&counts, device)?;
    let offset: f64 = counts[..dist.rank()].iter().sum();
    let total: f64 = counts.iter().sum();
    // A sum where each worker fills only its own rows gathers the rows.
    let mut rows = vec![0.0; total as usize * FIELDS];
    for (i, d) in mine.iter().enumerate() {
        let at = (offset as usize + i) * FIELDS;
        rows[at..at + FIELDS].copy_from_slice(&[
            d.image_id as f64,
            d.category_id as f64,
            d.bbox[0],
            d.bbox[1],
            d.bbox[2],
            d.bbox[3],
            d.score,
        ]);
    }
    let rows = dist.sum(&rows, device)?;
    Ok(rows
        .chunks(FIELDS)
        .map(|r| Detection {
            image_id: r[0].round() as u64,
            category_id: r[1].round() as u64,
            bbox: [r[2], r[3], r[4], r[5]],
            score: r[6],
        })
        .collect())
}

/// pycocotools' `summarize()` lines.
pub fn summary(stats: &CocoStats) -> String {
    STAT_LABELS
        .iter()
        .zip(stats.stats)
        .map(|(label, value)| {
            let kind = if label.starts_with("AP") {
                "Average Precision  (AP)"
            } else {
                "Average Recall     (AR)"
            };
            let rest = label.split_once(' ').map_or("", |(_, r)| r);
            format!(" {kind} {} = {value:.3}", pad_fields(rest))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `@[IoU=0.50:0.95 | area=all | maxDets=100]` laid out like pycocotools:
/// `@[ IoU=0.50:0.95 | area=   all | maxDets=100 ]`.
fn pad_fields(label: &str) -> String {
    let inner = label.trim_start_matches("@[").trim_end_matches(']');
    let parts: Vec<String> = inner
        .split(" | ")
        .map(|p| match p.split_once('=') {
            Some(("IoU", v)) => format!("IoU={v:<9}"),
            Some(("area", v)) => format!("area={v:>6}"),
            Some(("maxDets", v)) => format!("maxDets={v:>3}"),
            _ => p.to_string(),
        })
        .collect();
    format!("@[ {} ]", parts.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterboxed_ground_truth_maps_back_to_a_perfect_score() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("instances.json");
        std::fs::write(
            &json,
            r#"{"images": [{"id": 42, "file_name": "a.jpg", "width": 200, "height": 100}],
                "annotations": [
                    {"id": 1, "image_id": 42, "category_id": 7, "bbox": [20, 10, 50, 40], "area": 1500},
                    {"id": 2, "image_id": 42, "category_id": 9, "bbox": [120, 30, 60, 60], "area": 3000}],
                "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}]}"#,
        )
        .unwrap();
        let dataset = CocoDataset::from_files(&json, dir.path()).unwrap();
        // A 64×64 letterbox of the 200×100 image scales by 0.32.
        let ratio = 0.32;
        let detections: Vec<Detection> = dataset.images()[0]
            .boxes
            .iter()
            .map(|b| Detected {
                class: b.class,
                score: 0.9,
                xyxy: b.xyxy.map(|v| v * ratio),
            })
            .filter_map(|d| to_coco(&d, 42, ratio, &dataset))
            .collect();
        assert_eq!(detections[0].category_id, 7);
        for (got, want) in detections[1].bbox.iter().zip([120.0, 30.0, 60.0, 60.0]) {
            assert!((got - want).abs() < 1e-3, "{:?}", detections[1].bbox);
        }
        let stats = coco_evaluate(dataset.ground_truth(), &detections).unwrap();
        assert!((stats.stats[0] - 1.0).abs() < 1e-9, "{:?}", stats.stats);
        // Off by a class, nothing matches.
        let wrong: Vec<Detection> = detections
            .iter()
            .map(|d| Detection {
                category_id: 16 - d.category_id,
                ..d.clone()
            })
            .collect();
        assert_eq!(coco_evaluate(dataset.ground_truth(), &wrong).unwrap().stats[0], 0.0);
    }

    #[test]
    fn summary_lines_look_like_pycocotools() {
        let mut stats = CocoStats { stats: [0.0; 12] };
        stats.stats[0] = 0.4567;
        stats.stats[1] = 0.6;
        stats.stats[6] = 0.25;
        let text = summary(&stats);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 12);
        assert_eq!(
            lines[0],
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.457"
        );
        assert_eq!(
            lines[1],
            " Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ] = 0.600"
        );
        assert_eq!(
            lines[6],
            " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ] = 0.250"
        );
    }
}
