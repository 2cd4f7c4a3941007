//! The model's raw batched forward throughput: the ceiling a server can reach.

use std::path::Path;
use std::time::{Duration, Instant};

use burn::backend::Flex;
use burn::data::dataloader::batcher::Batcher;
use kiln_data::{MnistBatcher, MnistItem};
use kiln_infer::WorkerLayout;
use kiln_models::{load_weights, NetConfig, PackageConfig};

/// Images per second of `Net::forward` on batches of `batch` digits, over about `window`, with
/// the CPU split as `layout` splits it: every worker runs the one model on its own thread pool,
/// all at once, as kiln-serve's model workers do.
pub fn forward_images_per_second(
    package: &Path,
    digits: &[MnistItem],
    batch: usize,
    window: Duration,
    layout: WorkerLayout,
) -> Result<f64, String> {
    let device = Default::default();
    let config = PackageConfig::read(package).map_err(|e| e.to_string())?;
    let net = load_weights(package, &config, NetConfig::new().init::<Flex>(&device)).map_err(|e| e.to_string())?;
    let items: Vec<MnistItem> = digits.iter().cycle().take(batch).copied().collect();
    let images = Batcher::<Flex, _, _>::batch(&MnistBatcher, items, &device).images;
    let _ = net.forward(images.clone()).into_data(); // warm-up
    let started = Instant::now();
    let done: Result<Vec<usize>, String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..layout.workers)
            .map(|_| {
                s.spawn(|| {
                    layout.run_worker(|| {
                        let mut done = 0usize;
                        while started.elapsed() < window {
                            let _ = net.forward(images.clone()).into_data();
                            done += batch;
                        }
                        done
                    })
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| "a raw forward worker panicked".to_string()))
            .collect()
    });
    Ok(done?.iter().sum::<usize>() as f64 / started.elapsed().as_secs_f64())
}
