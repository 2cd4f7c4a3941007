//! Training curves from the `metrics.jsonl` files kiln-train's jobs write (one JSON object per
//! epoch): loss and accuracy per epoch, one line per run and figure (for `kiln-train yolox`,
//! the total loss and COCO AP@[.50:.95] in percent as the accuracy).

use std::path::Path;

use plotters::chart::SeriesLabelPosition;
use serde::Deserialize;

use crate::chart::{Line, LinePanel};

/// The fields of a metrics line that the curves use; the jobs write more.
#[derive(Debug, Deserialize)]
struct MetricsLine {
    epoch: f64,
    train_loss: Option<f64>,
    /// `kiln-train mnist`'s held-out loss.
    test_loss: Option<f64>,
    /// `kiln-train imagenet`'s held-out loss.
    val_loss: Option<f64>,
    /// `kiln-train mnist`'s test accuracy, in [0, 1].
    accuracy: Option<f64>,
    /// `kiln-train imagenet`'s validation Acc@1, in percent.
    acc1: Option<f64>,
    /// `kiln-train imagenet`'s training Acc@1, in percent.
    train_acc1: Option<f64>,
    /// `kiln-train yolox`'s mean total training loss.
    total_loss: Option<f64>,
    /// `kiln-train yolox`'s COCO AP@[.50:.95], in [0, 1], on epochs that evaluated.
    ap50_95: Option<f64>,
}

/// One epoch of a run, accuracies in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Epoch {
    /// Epoch number as the job wrote it.
    pub epoch: f64,
    /// Mean training loss.
    pub train_loss: Option<f64>,
    /// Held-out (test or validation) loss.
    pub eval_loss: Option<f64>,
    /// Training accuracy, percent.
    pub train_accuracy: Option<f64>,
    /// Held-out accuracy, percent.
    pub eval_accuracy: Option<f64>,
}

impl From<MetricsLine> for Epoch {
    fn from(m: MetricsLine) -> Self {
        Self {
            epoch: m.epoch,
            train_loss: m.train_loss.or(m.total_loss),
            eval_loss: m.test_loss.or(m.val_loss),
            train_accuracy: m.train_acc1,
            eval_accuracy: m
                .acc1
                .or(m.accuracy.map(|a| 100.0 * a))
                .or(m.ap50_95.map(|ap| 100.0 * ap)),
        }
    }
}

/// One training run's epochs.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Legend name: the file's stem, or its folder's name for a file called `metrics.jsonl`.
    pub name: String,
    /// The epochs in file order.
    pub epochs: Vec<Epoch>,
}

/// Reads a metrics file.
pub fn read_run(path: &Path) -> Result<Run, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let name = match stem.as_deref() {
        Some("metrics") | None => path
            .parent()
            .and_then(Path::file_name)
            .map_or("run".into(), |d| d.to_string_lossy().into_owned()),
        Some(s) => s.to_string(),
    };
    parse_run(name, &text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses the lines of a metrics file; blank lines are skipped.
fn parse_run(name: String, text: &str) -> Result<Run, String> {
    let epochs = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<MetricsLine>(l)
                .map(Epoch::from)
                .map_err(|e| format!("line {}: {e}", i + 1))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if epochs.is_empty() {
        return Err("no epochs".into());
    }
    Ok(Run { name, epochs })
}

/// The loss panel and the accuracy panel of these runs; a figure no epoch of a run has is
/// left out of its panel.
pub fn panels(runs: &[Run]) -> [LinePanel; 2] {
    type Field = fn(&Epoch) -> Option<f64>;
    let lines = |fields: [(&str, Field); 2]| {
        runs.iter()
            .flat_map(|run| {
                fields.map(|(what, field)| Line {
                    label: format!("{} {what}", run.name),
                    points: run.epochs.iter().filter_map(|e| Some((e.epoch, field(e)?))).collect(),
                })
            })
            .filter(|l| !l.points.is_empty())
            .collect()
    };
    [
        LinePanel {
            title: "Loss per epoch".into(),
            x_label: "epoch".into(),
            y_label: "mean loss".into(),
            legend: SeriesLabelPosition::UpperRight,
            lines: lines([("train", |e| e.train_loss), ("test/val", |e| e.eval_loss)]),
        },
        LinePanel {
            title: "Accuracy per epoch".into(),
            x_label: "epoch".into(),
            y_label: "accuracy (YOLOX: COCO AP), %".into(),
            legend: SeriesLabelPosition::LowerRight,
            lines: lines([("train", |e| e.train_accuracy), ("test/val", |e| e.eval_accuracy)]),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MNIST: &str = r#"{"epoch":1,"train_loss":0.19,"test_loss":0.042,"accuracy":0.9856,"lr":1.0,"train_seconds":282.5,"seconds":290.3,"images_per_second":212.3}

{"epoch":2,"train_loss":0.072,"test_loss":0.046,"accuracy":0.986,"lr":0.7,"train_seconds":486.0,"seconds":499.3,"images_per_second":123.4}
"#;
    const IMAGENET: &str = r#"{"epoch":0,"lr":0.01,"train_loss":0.91,"train_acc1":51.15,"val_loss":1.16,"acc1":50.0,"acc5":100.0,"train_seconds":142.1,"seconds":179.4,"images_per_second":14.0}"#;

    #[test]
    fn both_jobs_metrics_give_percent_accuracies() {
        let mnist = parse_run("mnist".into(), MNIST).unwrap();
        assert_eq!(mnist.epochs.len(), 2);
        let e = mnist.epochs[1];
        assert_eq!(
            (e.epoch, e.train_loss, e.eval_loss, e.train_accuracy),
            (2.0, Some(0.072), Some(0.046), None)
        );
        assert!((e.eval_accuracy.unwrap() - 98.6).abs() < 1e-9);
        let imagenet = parse_run("dogcat".into(), IMAGENET).unwrap();
        let e = imagenet.epochs[0];
        assert_eq!(
            (e.eval_loss, e.train_accuracy, e.eval_accuracy),
            (Some(1.16), Some(51.15), Some(50.0))
        );
    }

    #[test]
    fn yolox_metrics_give_total_loss_and_ap_in_percent() {
        let yolox = r#"{"epoch":9,"lr":0.005,"total_loss":11.0,"iou_loss":3.9,"conf_loss":4.7,"cls_loss":2.5,"l1_loss":0.0,"ap50_95":null,"ap50":null,"train_seconds":18.0,"seconds":18.5,"images_per_second":4.4}
{"epoch":10,"lr":0.005,"total_loss":10.8,"iou_loss":3.9,"conf_loss":4.5,"cls_loss":2.4,"l1_loss":0.0,"ap50_95":0.0183,"ap50":0.0405,"train_seconds":18.0,"seconds":24.0,"images_per_second":4.4}"#;
        let run = parse_run("nano".into(), yolox).unwrap();
        assert_eq!(
            (run.epochs[0].train_loss, run.epochs[0].eval_accuracy),
            (Some(11.0), None)
        );
        assert!((run.epochs[1].eval_accuracy.unwrap() - 1.83).abs() < 1e-9);
    }

    #[test]
    fn bad_lines_are_named() {
        let err = parse_run("x".into(), &format!("{MNIST}{{\"train_loss\": 1}}\n")).unwrap_err();
        assert!(
            err.starts_with("line 4:") && err.contains("missing field `epoch`"),
            "{err}"
        );
        assert_eq!(parse_run("x".into(), "\n").unwrap_err(), "no epochs");
    }

    #[test]
    fn panels_leave_out_figures_a_job_does_not_write() {
        let runs = [
            parse_run("mnist".into(), MNIST).unwrap(),
            parse_run("dogcat".into(), IMAGENET).unwrap(),
        ];
        let [loss, accuracy] = panels(&runs);
        let labels = |p: &LinePanel| p.lines.iter().map(|l| l.label.clone()).collect::<Vec<_>>();
        assert_eq!(
            labels(&loss),
            ["mnist train", "mnist test/val", "dogcat train", "dogcat test/val"]
        );
        // MNIST writes no training accuracy.
        assert_eq!(labels(&accuracy), ["mnist test/val", "dogcat train", "dogcat test/val"]);
        assert_eq!(loss.lines[0].points, [(1.0, 0.19), (2.0, 0.072)]);
    }

    #[test]
    fn runs_are_named_after_their_file_or_folder() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("run14");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("metrics.jsonl"), MNIST).unwrap();
        std::fs::write(dir.path().join("resnet18-dogcat.jsonl"), IMAGENET).unwrap();
        assert_eq!(read_run(&folder.join("metrics.jsonl")).unwrap().name, "run14");
        assert_eq!(
            read_run(&dir.path().join("resnet18-dogcat.jsonl")).unwrap().name,
            "resnet18-dogcat"
        );
        let missing = read_run(&dir.path().join("nope.jsonl")).unwrap_err();
        assert!(missing.contains("nope.jsonl"), "{missing}");
    }
}
