//! The MNIST `Net`'s forward pass with gemm's left-operand packing at gemm's default and at
//! kiln's setting (`kiln_models::cpu::gemm_packing`), alternating in one process on one thread, as
//! one of kiln-serve's model workers runs it:
//!
//! ```sh
//! cargo run --release -p kiln-benches --example forward_packing -- [batch, default 8]
//! ```
//!
//! Prints, for each of six rounds and each setting, the median and 10th-percentile time per
//! image over 200 forward passes.

use std::time::Instant;

use burn::backend::Flex;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::{Tensor, TensorData};
use kiln_data::{MnistBatcher, MnistDataset, MnistItem, MnistSplit};
use kiln_models::cpu::gemm_packing::{lhs_packing_threshold, set_lhs_packing_threshold, LHS_PACKING_THRESHOLD};
use kiln_models::{Net, NetConfig};

/// Forward passes timed per round and setting.
const PASSES: usize = 200;

/// (median, 10th percentile) µs per image of `PASSES` forward passes of `images`.
fn time_per_image(net: &Net<Flex>, images: &Tensor<Flex, 4>, batch: usize) -> (f64, f64) {
    let _warm_up: TensorData = net.forward(images.clone()).into_data();
    let mut times: Vec<f64> = (0..PASSES)
        .map(|_| {
            let started = Instant::now();
            let _scores: TensorData = net.forward(images.clone()).into_data();
            started.elapsed().as_secs_f64() * 1e6 / batch as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[PASSES / 2], times[PASSES / 10])
}

fn main() -> Result<(), String> {
    let batch: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().map_err(|_| format!("batch {a:?} is not a number"))?,
        None => 8,
    };
    let gemm_default = lhs_packing_threshold();
    let device = Default::default();
    let net = NetConfig::new().init::<Flex>(&device);
    let test = MnistDataset::from_dir("data/mnist", MnistSplit::Test).map_err(|e| e.to_string())?;
    let items: Vec<MnistItem> = (0..batch).filter_map(|i| test.get(i)).collect();
    let images = Batcher::<Flex, _, _>::batch(&MnistBatcher, items, &device).images;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| e.to_string())?;
    pool.install(|| {
        for round in 1..=6 {
            for threshold in [gemm_default, LHS_PACKING_THRESHOLD] {
                set_lhs_packing_threshold(threshold);
                let (median, p10) = time_per_image(&net, &images, batch);
                println!(
                    "round {round}, batch {batch}, packing threshold {threshold}: median {median:.1} µs per image, p10 {p10:.1}"
                );
            }
        }
    });
    Ok(())
}
