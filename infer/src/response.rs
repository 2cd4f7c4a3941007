//! Predictions → the contract's JSON bodies: one object per multipart field, for its first
//! file (`?detail=true`: every file).
//!
//! - Classification: `[{"image": 2}]`; detail
//!   `[{"field": "image", "label": 2, "files": [{"filename", "label", "probabilities"}]}]`.
//! - Detection, the platform's object-detection body: `[{"detection_classes": ["dog"],
//!   "detection_boxes": [[ymin, xmin, ymax, xmax]], "detection_scores": [0.91]}]`, boxes in
//!   the uploaded image's pixels, best score first; detail
//!   `[{"field": "images", "files": [{"filename", "detection_classes", ...}]}]`.

use serde_json::{json, Map, Value};

use kiln_models::yolox::Detected;

use crate::registry::Prediction;

/// One answered file.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The multipart file name (empty when the part has none).
    pub file_name: String,
    /// The uploaded image's `[width, height]`.
    pub size: [u32; 2],
    /// Model-input pixels per image pixel (see [`Prepared`](crate::preprocess::Prepared)).
    pub ratio: f32,
    /// What the model said.
    pub prediction: Prediction,
}

/// The response body for `fields` (each with at least one answer), in field order.
pub fn render(labels: &[Value], fields: &[(String, Vec<Answer>)], detail: bool) -> Value {
    Value::Array(
        fields
            .iter()
            .map(|(name, answers)| render_field(labels, name, answers, detail))
            .collect(),
    )
}

fn render_field(labels: &[Value], name: &str, answers: &[Answer], detail: bool) -> Value {
    let first = &answers[0];
    let files = || -> Vec<Value> { answers.iter().map(|a| file_detail(labels, a)).collect() };
    match (&first.prediction, detail) {
        (Prediction::Classes(p), false) => json!({ name: class_label(labels, p) }),
        (Prediction::Classes(p), true) => {
            json!({ "field": name, "label": class_label(labels, p), "files": files() })
        }
        (Prediction::Objects(objects), false) => Value::Object(detections(labels, first, objects)),
        (Prediction::Objects(_), true) => json!({ "field": name, "files": files() }),
    }
}

/// One file's entry in the detail body.
fn file_detail(labels: &[Value], a: &Answer) -> Value {
    match &a.prediction {
        Prediction::Classes(p) => {
            json!({ "filename": a.file_name, "label": class_label(labels, p), "probabilities": p })
        }
        Prediction::Objects(objects) => {
            let mut body = Map::new();
            body.insert("filename".into(), a.file_name.clone().into());
            body.extend(detections(labels, a, objects));
            Value::Object(body)
        }
    }
}

/// The label of the most probable class.
fn class_label(labels: &[Value], probs: &[f32]) -> Value {
    labels.get(argmax(probs)).cloned().unwrap_or(Value::Null)
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |best, (i, &x)| {
                if x > best.1 {
                    (i, x)
                } else {
                    best
                }
            },
        )
        .0
}

/// The platform's detection fields for file `a`'s `objects` ([`detection_rows`]) as JSON.
fn detections(labels: &[Value], a: &Answer, objects: &[Detected]) -> Map<String, Value> {
    let rows = detection_rows(labels, a, objects);
    let boxes: Vec<Value> = rows
        .boxes
        .iter()
        .map(|b| Value::Array(b.iter().copied().map(number).collect()))
        .collect();
    let mut body = Map::new();
    body.insert("detection_classes".into(), rows.classes.into());
    body.insert("detection_boxes".into(), boxes.into());
    body.insert("detection_scores".into(), rows.scores.into_iter().map(number).collect());
    body
}

/// One image's detections in the platform's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionRows {
    /// Class names (the label, or the class index where the labels lack it).
    pub classes: Vec<String>,
    /// `[ymin, xmin, ymax, xmax]` in the uploaded image's pixels.
    pub boxes: Vec<[f32; 4]>,
    /// Scores, best first.
    pub scores: Vec<f32>,
}

/// File `a`'s `objects`: class names, boxes mapped back onto the image (divided by the
/// letterbox ratio, clipped to its size) and scores, in the model's order (best first).
pub fn detection_rows(labels: &[Value], a: &Answer, objects: &[Detected]) -> DetectionRows {
    let [width, height] = a.size.map(|v| v as f32);
    DetectionRows {
        classes: objects.iter().map(|d| label_text(labels, d.class)).collect(),
        boxes: objects
            .iter()
            .map(|d| {
                let [x1, y1, x2, y2] = d.xyxy.map(|v| v / a.ratio);
                let (x, y) = (|v: f32| v.clamp(0.0, width), |v: f32| v.clamp(0.0, height));
                [y(y1), x(x1), y(y2), x(x2)]
            })
            .collect(),
        scores: objects.iter().map(|d| d.score).collect(),
    }
}

/// Label `class` as text: the label's string, another label's JSON text (MNIST's numbers), or
/// the index itself where the labels lack it.
pub fn label_text(labels: &[Value], class: usize) -> String {
    match labels.get(class) {
        Some(Value::String(name)) => name.clone(),
        Some(other) => other.to_string(),
        None => class.to_string(),
    }
}

/// The index of the most probable class.
pub fn top_class(probs: &[f32]) -> usize {
    argmax(probs)
}

/// An `f32` as the JSON number with its shortest decimal form (`0.45`, not
/// `0.44999998807907104`), which parses back to the same `f32`; `null` if not finite.
fn number(v: f32) -> Value {
    v.to_string().parse::<f64>().map_or(Value::Null, Value::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(file_name: &str, prediction: Prediction) -> Answer {
        Answer {
            file_name: file_name.into(),
            size: [100, 50],
            ratio: 0.5,
            prediction,
        }
    }

    #[test]
    fn classification_uses_the_first_file_of_each_field() {
        let labels: Vec<Value> = (0..3).map(Value::from).collect();
        let results = vec![
            (
                "image".to_string(),
                vec![
                    answer("a.png", Prediction::Classes(vec![0.1, 0.7, 0.2])),
                    answer("b.png", Prediction::Classes(vec![0.9, 0.05, 0.05])),
                ],
            ),
            (
                "other".to_string(),
                vec![answer("c.png", Prediction::Classes(vec![0.1, 0.2, 0.7]))],
            ),
        ];
        assert_eq!(
            render(&labels, &results, false),
            json!([{ "image": 1 }, { "other": 2 }])
        );
        let d = render(&labels, &results, true);
        assert_eq!(d[0]["field"], "image");
        assert_eq!(d[0]["label"], 1);
        assert_eq!(d[0]["files"][1]["label"], 0);
        assert_eq!(d[0]["files"][1]["filename"], "b.png");
    }

    #[test]
    fn detections_are_named_mapped_back_and_clipped() {
        let labels = vec![json!("cat"), json!("dog")];
        let objects = vec![
            Detected {
                class: 1,
                score: 0.9,
                xyxy: [10.0, 5.0, 30.0, 20.0],
            },
            // Past the image's right and bottom edges (the padding) and above its top.
            Detected {
                class: 0,
                score: 0.45,
                xyxy: [40.0, -4.0, 60.0, 40.0],
            },
        ];
        let results = vec![(
            "images".to_string(),
            vec![
                answer("a.png", Prediction::Objects(objects)),
                answer("b.png", Prediction::Objects(vec![])),
            ],
        )];
        // Ratio 0.5 on a 100×50 image: input pixel (x, y) is image pixel (2x, 2y).
        let short = render(&labels, &results, false);
        assert_eq!(
            short,
            json!([{
                "detection_classes": ["dog", "cat"],
                "detection_boxes": [[10.0, 20.0, 40.0, 60.0], [0.0, 80.0, 50.0, 100.0]],
                "detection_scores": [0.9, 0.45]
            }])
        );
        let detail = render(&labels, &results, true);
        assert_eq!(detail[0]["field"], "images");
        assert_eq!(detail[0]["files"][0]["filename"], "a.png");
        assert_eq!(detail[0]["files"][0]["detection_boxes"], short[0]["detection_boxes"]);
        assert_eq!(
            detail[0]["files"][1],
            json!({ "filename": "b.png", "detection_classes": [], "detection_boxes": [], "detection_scores": [] })
        );
    }

    #[test]
    fn numbers_print_short_and_non_finite_is_null() {
        assert_eq!(number(0.45).to_string(), "0.45");
        assert_eq!(number(12.8).as_f64().unwrap() as f32, 12.8f32);
        assert_eq!(number(f32::NAN), Value::Null);
        assert_eq!(number(f32::INFINITY), Value::Null);
    }
}
