//! `kiln-bench documented`: the guide's Table 4-2 (its PyTorch ImageNet example: 10 epochs in
//! 0:05:03 on one V100, "Vnt1") beside kiln's projection for the same job on this machine:
//! measured train and eval images/s × the dataset's size × epochs; and the table's YOLOX and
//! Swin-Transformer rows, with the bench that measures each (the guide gives no ImageNet-21K
//! image count, so nothing projects the Swin rows unless one is given to `kiln-bench swin`).

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::chart::BarChart;
use crate::report::Report;
use crate::step::{measure_all, StepBench, StepResult};

/// The guide's documented time for the ImageNet example, 10 epochs on 1 × V100, in seconds.
const DOCUMENTED_SECONDS: f64 = 5.0 * 60.0 + 3.0;
/// The guide's epochs for that row (and for every row of Table 4-2).
pub(crate) const DOCUMENTED_EPOCHS: usize = 10;

/// The guide's other rows of Table 4-2 (10 epochs each): job, resources (nodes × V100s),
/// documented time, and where kiln's figure comes from.
const GUIDE_ROWS: [(&str, &str, &str, &str); 6] = [
    ("YOLOX-s, COCO 2017", "1 × 1", "03:33:13", YOLOX),
    ("YOLOX-s, COCO 2017", "1 × 8", "01:11:48", YOLOX),
    ("YOLOX-s, COCO 2017", "4 × 8", "0:36:17", YOLOX),
    (
        "Swin-Transformer (Swin-B, 22K config), ImageNet-21K",
        "1 × 1",
        "197:25:03",
        SWIN,
    ),
    (
        "Swin-Transformer (Swin-B, 22K config), ImageNet-21K",
        "1 × 8",
        "26:10:25",
        SWIN,
    ),
    (
        "Swin-Transformer (Swin-B, 22K config), ImageNet-21K",
        "4 × 8",
        "7:08:44",
        SWIN,
    ),
];
/// Where the YOLOX rows' kiln figure is.
const YOLOX: &str = "measured by `kiln-bench yolox` (one device: its table projects the 1 × 1 row)";
/// Why the Swin rows have no kiln figure here.
const SWIN: &str = "not projected: the guide does not give ImageNet-21K's image count; `kiln-bench swin -m base \
                    --classes 21841 --train-images N` measures the step and projects the 1 × 1 row from a count you give";

/// Flags of `kiln-bench documented`.
#[derive(Debug, Clone, Args)]
pub struct DocumentedBench {
    /// The step measurement (architecture, batch, device, --compare-pytorch, ...).
    #[command(flatten)]
    step: StepBench,
    /// Training images per epoch (the guide's example set `dog_cat_1w` holds 10,000).
    #[arg(long = "train-images", default_value_t = 10_000)]
    train_images: usize,
    /// Validation images per epoch.
    #[arg(long = "val-images", default_value_t = 0)]
    val_images: usize,
}

/// Measures, projects and prints the table.
pub fn run(args: DocumentedBench) -> Result<(), String> {
    let rows = measure_all(&args.step)?;
    let hardware = hardware(&rows);
    println!("Guide's Table 4-2 vs kiln's projection on {hardware}");
    if !hardware.starts_with("cuda") {
        println!(
            "(The guide's figure is for one NVIDIA V100 GPU; this machine is a CPU, so the rows are \
             not a like-for-like comparison.)"
        );
    }
    println!(
        "\n| job | resources | epochs | documented (V100) | {} |",
        if args.step.flags.compare_pytorch {
            "kiln projected | PyTorch projected (same machine)"
        } else {
            "kiln projected"
        }
    );
    println!(
        "|---|---|---|---|---|{}",
        if args.step.flags.compare_pytorch { "---|" } else { "" }
    );
    for (kiln, torch) in &rows {
        let mut line = format!(
            "| ImageNet example, {} b{}, {} train + {} val images | 1 × 1 | {DOCUMENTED_EPOCHS} | {} | {}",
            kiln.arch,
            kiln.batch,
            args.train_images,
            args.val_images,
            hms(DOCUMENTED_SECONDS),
            hms(projected_job(&args, kiln))
        );
        if args.step.flags.compare_pytorch {
            line += &format!(
                " | {}",
                torch.as_ref().map_or("n/a".into(), |t| hms(projected_job(&args, t)))
            );
        }
        println!("{line} |");
    }
    for (job, resources, time, kiln) in GUIDE_ROWS {
        println!("| {job} | {resources} | {DOCUMENTED_EPOCHS} | {time} | {kiln} |");
    }
    let report = DocumentedReport {
        hardware,
        documented_seconds: DOCUMENTED_SECONDS,
        epochs: DOCUMENTED_EPOCHS,
        train_images: args.train_images,
        val_images: args.val_images,
        results: rows
            .iter()
            .map(|(k, t)| DocumentedRow {
                kiln_projected_seconds: projected_job(&args, k),
                pytorch_projected_seconds: t.as_ref().map(|t| projected_job(&args, t)),
                kiln: k.clone(),
                pytorch: t.clone(),
            })
            .collect(),
    };
    crate::report::write(&args.step.flags.json, &report)
}

/// One architecture's measurement and projection in a results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocumentedRow {
    /// kiln's measured figures.
    pub kiln: StepResult,
    /// kiln's projected seconds for the documented job.
    pub kiln_projected_seconds: f64,
    /// The reference's measured figures, when it ran.
    pub pytorch: Option<StepResult>,
    /// The reference's projected seconds, when it ran.
    pub pytorch_projected_seconds: Option<f64>,
}

/// The results file of `kiln-bench documented`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocumentedReport {
    /// The device measured on, in words.
    pub hardware: String,
    /// The guide's documented time for the job, seconds.
    pub documented_seconds: f64,
    /// Epochs of the documented job.
    pub epochs: usize,
    /// Training images per epoch.
    pub train_images: usize,
    /// Validation images per epoch.
    pub val_images: usize,
    /// One row per architecture.
    pub results: Vec<DocumentedRow>,
}

impl Report for DocumentedReport {
    const BENCH: &'static str = "documented";

    fn chart(&self) -> BarChart {
        let hours = |s: f64| s / 3600.0;
        BarChart {
            title: format!("The guide's ImageNet example, projected on {}", self.hardware),
            unit: format!("hours for {} epochs (lower is better)", self.epochs),
            series: vec!["documented (V100)".into(), "kiln".into(), "PyTorch".into()],
            groups: self
                .results
                .iter()
                .map(|r| {
                    let label = format!(
                        "{} b{}, {} train + {} val images",
                        r.kiln.arch, r.kiln.batch, self.train_images, self.val_images
                    );
                    let values = vec![
                        Some(hours(self.documented_seconds)),
                        Some(hours(r.kiln_projected_seconds)),
                        r.pytorch_projected_seconds.map(hours),
                    ];
                    (label, values)
                })
                .collect(),
        }
    }
}

/// Seconds for `epochs` epochs of `train_images` and `val_images` at `r`'s speeds.
pub(crate) fn projected(train_images: usize, val_images: usize, epochs: usize, r: &StepResult) -> f64 {
    let per_epoch = train_images as f64 / r.train_images_per_second + val_images as f64 / r.eval_images_per_second;
    per_epoch * epochs as f64
}

/// Seconds for the documented ImageNet example's epochs at `r`'s speeds.
fn projected_job(args: &DocumentedBench, r: &StepResult) -> f64 {
    projected(args.train_images, args.val_images, DOCUMENTED_EPOCHS, r)
}

/// `h:mm:ss`, as the guide writes durations.
pub(crate) fn hms(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The device the measurement ran on: the CPU's model name and thread count, or the CUDA id.
fn hardware(rows: &[(StepResult, Option<StepResult>)]) -> String {
    let device = rows.first().map_or("cpu".to_string(), |(k, _)| k.device.clone());
    if device.starts_with("cuda") {
        return device;
    }
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("cpu: {model}, {threads} threads")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_like_the_guide() {
        assert_eq!(hms(DOCUMENTED_SECONDS), "0:05:03");
        assert_eq!(hms(12_793.4), "3:33:13");
        assert_eq!(hms(285_540.0), "79:19:00");
        assert_eq!(hms(crate::swin::DOCUMENTED_SECONDS), GUIDE_ROWS[3].2);
    }
}
