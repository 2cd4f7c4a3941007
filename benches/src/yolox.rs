//! `kiln-bench yolox`: the training step of `kiln-train yolox` (forward, SimOTA loss, backward,
//! SGD with Nesterov momentum and weight decay, EMA update) and the evaluation forward, in
//! images per second, on random images with fixed boxes so only the model's speed is
//! measured; and the guide's Table 4-2 YOLOX row (10 COCO epochs on one V100) beside kiln's
//! projection for the same work on the device measured.

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use clap::Args;
use kiln_models::yolox::TargetBox;
use kiln_models::{DeviceChoice, YoloxVariant};
use kiln_train::ddp::Collective;
use kiln_train::jobs::yolox::{Exp, Trainer};
use serde::{Deserialize, Serialize};

use crate::chart::BarChart;
use crate::report::Report;
use crate::step::per_step_seconds;

/// COCO 2017's training images.
const COCO_TRAIN_IMAGES: usize = 118_287;
/// The guide's Table 4-2: YOLOX-s, COCO 2017, 10 epochs on 1 × V100, in seconds (3:33:13).
const DOCUMENTED_SECONDS: f64 = 3.0 * 3600.0 + 33.0 * 60.0 + 13.0;
/// The epochs of that row.
const DOCUMENTED_EPOCHS: usize = 10;

/// Flags of `kiln-bench yolox`.
#[derive(Debug, Clone, Args)]
pub struct YoloxBench {
    /// Variants to measure.
    #[arg(short = 'n', long = "name", value_delimiter = ',', default_value = "yolox-s")]
    variants: Vec<YoloxVariant>,
    /// Images per step.
    #[arg(short = 'b', long = "batch-size", default_value_t = 8)]
    batch: usize,
    /// Square input side (a multiple of 32).
    #[arg(long = "input-size", default_value_t = 640)]
    input_size: usize,
    /// Objects per image.
    #[arg(long, default_value_t = 8)]
    boxes: usize,
    /// Timed steps per measurement, after one warm-up step.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Train with mixed precision (f16 compute, f32 master weights), like `kiln-train yolox --fp16`.
    #[arg(long)]
    fp16: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-yolox.json")]
    json: std::path::PathBuf,
}

/// One variant's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct YoloxResult {
    /// Variant name.
    pub variant: String,
    /// Whether the step ran in mixed precision.
    #[serde(default)]
    pub fp16: bool,
    /// Images per step.
    pub batch: usize,
    /// Square input side.
    pub input_size: usize,
    /// Device it ran on.
    pub device: String,
    /// Training-step throughput.
    pub train_images_per_second: f64,
    /// Evaluation-forward throughput (decoding and NMS excluded).
    pub eval_images_per_second: f64,
    /// Projected wall time of 10 COCO 2017 epochs at this throughput, in seconds.
    pub projected_10_epochs_seconds: f64,
    /// Seconds of the first training step and first evaluation forward, before the timed
    /// ones: on a GPU they include compiling and autotuning kernels not yet cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_step_seconds: Option<[f64; 2]>,
}

/// The results file of `kiln-bench yolox`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct YoloxReport {
    /// Threads available.
    pub threads: usize,
    /// The guide's documented seconds for 10 epochs of YOLOX-s on one V100.
    pub documented_seconds: f64,
    /// One entry per variant.
    pub results: Vec<YoloxResult>,
}

impl Report for YoloxReport {
    const BENCH: &'static str = "yolox";

    fn chart(&self) -> BarChart {
        let groups = self.results.iter().flat_map(|r| {
            let precision = if r.fp16 { "fp16" } else { "f32" };
            let head = format!(
                "{} {precision} b{} at {} on {}",
                r.variant, r.batch, r.input_size, r.device
            );
            [
                (format!("{head}: train step"), vec![Some(r.train_images_per_second)]),
                (format!("{head}: eval forward"), vec![Some(r.eval_images_per_second)]),
            ]
        });
        BarChart {
            title: format!("YOLOX throughput ({} threads)", self.threads),
            unit: "images/s (higher is better)".into(),
            series: vec!["kiln".into()],
            groups: groups.collect(),
        }
    }

    fn notes(&self) -> Vec<String> {
        self.results
            .iter()
            .filter_map(|r| {
                let head = format!("{} b{} on {}", r.variant, r.batch, r.device);
                let per_second = [r.train_images_per_second, r.eval_images_per_second];
                Some(crate::step::first_run_note(
                    &head,
                    r.batch,
                    per_second,
                    r.first_step_seconds?,
                ))
            })
            .collect()
    }
}

/// Runs the benchmark and prints a Markdown table.
pub fn run(args: YoloxBench) -> Result<(), String> {
    if args.input_size == 0 || args.input_size % 32 != 0 {
        return Err(format!(
            "--input-size {}: must be a positive multiple of 32",
            args.input_size
        ));
    }
    if args.batch == 0 || args.steps == 0 {
        return Err("--batch-size and --steps must be at least 1".into());
    }
    let device = args.device.resolve(false, cfg!(feature = "cuda"))?;
    let mut results = Vec::new();
    for &variant in &args.variants {
        let r = match device {
            #[cfg(feature = "cuda")]
            DeviceChoice::Cuda(i) => measure::<burn::backend::Autodiff<burn::backend::Cuda>>(
                &args,
                variant,
                &burn::backend::cuda::CudaDevice::new(i),
                device,
            ),
            _ => measure::<burn::backend::Autodiff<burn::backend::Flex>>(&args, variant, &Default::default(), device),
        };
        eprintln!("kiln {variant}: {r:?}");
        results.push(r);
    }
    print_table(&results);
    let report = YoloxReport {
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        documented_seconds: DOCUMENTED_SECONDS,
        results,
    };
    crate::report::write(&args.json, &report)
}

/// The fixed objects of image `i`: `count` boxes spread over the canvas, classes cycling.
fn synthetic_boxes(i: usize, count: usize, size: usize) -> Vec<TargetBox> {
    let s = size as f32;
    (0..count)
        .map(|j| {
            let k = (i * count + j) as f32;
            // Centres on a scrambled grid, sides from 1/16 to 1/3 of the canvas.
            let cx = s * (0.1 + 0.8 * ((k * 0.618_034) % 1.0));
            let cy = s * (0.1 + 0.8 * ((k * 0.414_214 + 0.3) % 1.0));
            let w = s * (1.0 / 16.0 + 0.27 * ((k * 0.732_051) % 1.0));
            let h = s * (1.0 / 16.0 + 0.27 * ((k * 0.236_068 + 0.5) % 1.0));
            TargetBox {
                class: (i * count + j) % 80,
                xyxy: [
                    (cx - w / 2.0).max(0.0),
                    (cy - h / 2.0).max(0.0),
                    (cx + w / 2.0).min(s),
                    (cy + h / 2.0).min(s),
                ],
            }
        })
        .collect()
}

/// kiln's train-step and eval-forward throughput for `variant` on backend `B`.
fn measure<B: AutodiffBackend>(
    args: &YoloxBench,
    variant: YoloxVariant,
    device: &B::Device,
    choice: DeviceChoice,
) -> YoloxResult {
    B::seed(device, 0);
    let exp = Exp::new(variant);
    let mut trainer = Trainer::<B>::new(&exp, 80, args.fp16, device);
    let dist = Collective::single();
    let size = args.input_size;
    let images = Tensor::<B, 4>::random([args.batch, 3, size, size], Distribution::Uniform(0.0, 255.0), device);
    let targets: Vec<Vec<TargetBox>> = (0..args.batch).map(|i| synthetic_boxes(i, args.boxes, size)).collect();
    let mut train_step = || {
        let parts = trainer
            .step(images.clone(), &targets, 0.01 * args.batch as f64 / 64.0, false, &dist)
            .expect("a single worker has no collective to fail");
        assert!(parts.total().is_finite(), "loss {}", parts.total());
    };
    let train = per_step_seconds(args.steps, &mut train_step);
    // Evaluated as the job's COCO evaluation and kiln-serve run it: BatchNorms folded.
    let model = trainer.model.valid().fold_batch_norms();
    let eval_images = images.inner();
    let mut eval_step = || {
        let outputs = model.forward(eval_images.clone());
        let _ = outputs.into_iter().map(|o| o.sum().into_data()).count();
    };
    let eval = per_step_seconds(args.steps, &mut eval_step);
    let train_ips = args.batch as f64 / train.steady;
    YoloxResult {
        variant: variant.to_string(),
        fp16: args.fp16,
        batch: args.batch,
        input_size: size,
        device: choice.to_string(),
        train_images_per_second: train_ips,
        eval_images_per_second: args.batch as f64 / eval.steady,
        projected_10_epochs_seconds: (DOCUMENTED_EPOCHS * COCO_TRAIN_IMAGES) as f64 / train_ips,
        first_step_seconds: Some([train.first, eval.first]),
    }
}

/// `H:MM:SS`.
fn hms(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

fn print_table(results: &[YoloxResult]) {
    println!("| variant | batch | input | device | train img/s | eval img/s | 10 COCO epochs, projected | guide's Table 4-2 (yolox-s, 1 × V100) |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in results {
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {} | {} |",
            r.variant,
            r.batch,
            r.input_size,
            r.device,
            r.train_images_per_second,
            r.eval_images_per_second,
            hms(r.projected_10_epochs_seconds),
            hms(DOCUMENTED_SECONDS)
        );
    }
    if results.iter().any(|r| !r.device.starts_with("cuda")) {
        println!("\n(The guide's figure is for one NVIDIA V100 GPU; CPU rows are not a like-for-like comparison.)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_boxes_lie_inside_the_canvas_with_area() {
        for i in 0..4 {
            for b in synthetic_boxes(i, 16, 640) {
                let [x1, y1, x2, y2] = b.xyxy;
                assert!(0.0 <= x1 && x1 < x2 && x2 <= 640.0, "{b:?}");
                assert!(0.0 <= y1 && y1 < y2 && y2 <= 640.0, "{b:?}");
                assert!(b.class < 80);
            }
        }
        assert_eq!(hms(DOCUMENTED_SECONDS), "3:33:13");
    }
}
