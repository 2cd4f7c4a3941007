//! Shared test fixtures: a briefly trained MNIST package, real digits as image files, and
//! the `kiln-serve` binary on an ephemeral port.
#![allow(dead_code)]

pub mod yolox;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;

use burn::backend::{Autodiff, Flex};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use image::{DynamicImage, GrayImage, ImageFormat};
use kiln_data::{MnistBatcher, MnistDataset, MnistItem, MnistSplit};
use kiln_models::{net_package_config, write_package, NetConfig};

/// The bundled real MNIST.
pub fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist")
}

/// A package of `Net` trained for 120 Adam steps on real digits (about 95% accurate): enough
/// for labels to be meaningful, quick enough for a test.
pub fn trained_package() -> PathBuf {
    static PKG: OnceLock<tempfile::TempDir> = OnceLock::new();
    PKG.get_or_init(|| {
        type B = Autodiff<Flex>;
        let device = Default::default();
        B::seed(&device, 7);
        let cfg = NetConfig::new();
        let mut net = cfg.init::<B>(&device);
        let mut optim = AdamConfig::new().init();
        let loss = CrossEntropyLossConfig::new().init(&device);
        let train = MnistDataset::from_dir(bundled(), MnistSplit::Train).unwrap();
        for step in 0..120 {
            let items: Vec<MnistItem> = (0..64).map(|i| train.get(step * 64 + i).unwrap()).collect();
            let batch = Batcher::<B, _, _>::batch(&MnistBatcher, items, &device);
            let l = loss.forward(net.forward(batch.images), batch.targets);
            let grads = GradientsParams::from_grads(l.backward(), &net);
            net = optim.step(1e-3, net, grads);
        }
        let dir = tempfile::tempdir().unwrap();
        write_package(&dir.path().join("model"), &net_package_config(&cfg), &net.valid()).unwrap();
        dir
    })
    .path()
    .join("model")
}

/// The first `n` real test digits.
pub fn test_digits(n: usize) -> Vec<MnistItem> {
    let test = MnistDataset::from_dir(bundled(), MnistSplit::Test).unwrap();
    (0..n).map(|i| test.get(i).unwrap()).collect()
}

/// A digit as an image file: `scale` × 28 pixels a side, in `format`.
pub fn encode_digit(item: &MnistItem, scale: u32, format: ImageFormat) -> Vec<u8> {
    let img = GrayImage::from_raw(28, 28, item.image.to_vec()).unwrap();
    let img = if scale == 1 {
        img
    } else {
        image::imageops::resize(&img, 28 * scale, 28 * scale, image::imageops::FilterType::Triangle)
    };
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageLuma8(img).write_to(&mut buf, format).unwrap();
    buf.into_inner()
}

/// A running `kiln-serve` process; killed on drop.
pub struct ServeProcess {
    /// The child process.
    pub child: Child,
    /// `http://127.0.0.1:PORT` (or https).
    pub base: String,
}

impl ServeProcess {
    /// Starts `kiln-serve` on an ephemeral loopback port and waits until `/health` is 200.
    pub async fn start(model_dir: &Path, extra: &[&str]) -> Self {
        let bin = Path::new(env!("CARGO_BIN_EXE_kiln-serve"));
        let (child, base) = kiln_infer::process::spawn_loopback(bin, model_dir, extra).unwrap();
        Self::ready(child, base, "/health").await
    }

    /// Starts `kiln-serve --model-repository root` as [`ServeProcess::start`] does, and waits
    /// until every model is ready (`/v2/health/ready`).
    pub async fn start_repository(root: &Path, extra: &[&str]) -> Self {
        let bin = Path::new(env!("CARGO_BIN_EXE_kiln-serve"));
        let (child, base) = kiln_infer::process::spawn_loopback_repository(bin, root, extra).unwrap();
        Self::ready(child, base, "/v2/health/ready").await
    }

    /// Waits until the server at `base` answers `probe` with 200.
    async fn ready(child: Child, base: String, probe: &str) -> Self {
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let ok = client
                .get(format!("{base}{probe}"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "kiln-serve never became ready");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Self { child, base }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The model's own labels for digits, on the raw idx pixels (no image codec involved).
pub fn model_labels(model_dir: &Path, items: &[MnistItem]) -> (Vec<i64>, Vec<Vec<f32>>) {
    let device = Default::default();
    let config = kiln_models::PackageConfig::read(model_dir).unwrap();
    let net = kiln_models::load_weights(model_dir, &config, NetConfig::new().init::<Flex>(&device)).unwrap();
    let batch = Batcher::<Flex, _, _>::batch(&MnistBatcher, items.to_vec(), &device);
    let out = net.forward(batch.images);
    let probs: Vec<f32> = out.clone().exp().into_data().to_vec().unwrap();
    let labels = out.argmax(1).into_data().convert::<i64>().to_vec().unwrap();
    (labels, probs.chunks(10).map(|c| c.to_vec()).collect())
}

/// Posts `form` to `url`; the answer's status and JSON body.
pub async fn post_form(url: &str, form: reqwest::multipart::Form) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new().post(url).multipart(form).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// The error a `kiln-serve` started on the package at `model_dir` stops with: it must exit
/// with status 1 before serving. Its stderr.
pub fn refused_at_start(model_dir: &Path) -> String {
    refused_at_start_from("--model-dir", model_dir)
}

/// [`refused_at_start`] for the models at `path` given by `flag` (`--model-dir` or
/// `--model-repository`).
pub fn refused_at_start_from(flag: &str, path: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-serve"))
        .args([flag, path.to_str().unwrap(), "--port", "0", "--host", "127.0.0.1"])
        .env("KILN_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the Python script `script` of `tests/triton/` with `python` and `args`; it must
/// succeed. Its stdout, one JSON value per line.
pub fn python_json_lines(python: &str, script: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/triton").join(script);
    let out = Command::new(python).arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
