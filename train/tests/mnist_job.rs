//! End-to-end runs of the `kiln-train mnist` binary on slices of the bundled real MNIST.

use std::path::{Path, PathBuf};
use std::process::Output;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn_flex::Flex;
use kiln_data::idx::{IdxArray, IdxData};
use kiln_data::mnist::MnistBatcher;
use kiln_data::{MnistDataset, MnistSplit};
use kiln_models::{load_weights, NetConfig, PackageConfig};

mod common;
use common::stdout;

fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist")
}

/// Writes the first `n_train` / `n_test` real digits as raw idx files with the dotted names.
fn mnist_slice(dir: &Path, n_train: usize, n_test: usize) {
    for (split, n, prefix) in [
        (MnistSplit::Train, n_train, "train"),
        (MnistSplit::Test, n_test, "t10k"),
    ] {
        let ds = MnistDataset::from_dir(bundled(), split).unwrap().truncated(n);
        let items: Vec<_> = (0..ds.len()).map(|i| ds.get(i).unwrap()).collect();
        let images = IdxArray {
            dims: vec![n, 28, 28],
            data: IdxData::U8(items.iter().flat_map(|it| it.image).collect()),
        };
        let labels = IdxArray {
            dims: vec![n],
            data: IdxData::U8(items.iter().map(|it| it.label).collect()),
        };
        std::fs::write(dir.join(format!("{prefix}-images.idx3-ubyte")), images.to_bytes()).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels.idx1-ubyte")), labels.to_bytes()).unwrap();
    }
}

fn kiln_train(args: &[&str]) -> Output {
    common::kiln_train("mnist", args)
}

/// `--data_url=DATA` and `--train_url=OUT`, in the guide's `--key=value` form.
fn io_args(data: &Path, out: &Path) -> (String, String) {
    (
        format!("--data_url={}", data.display()),
        format!("--train_url={}", out.display()),
    )
}

/// `--dry-run` on the full real data: one batch per epoch, the contract's lines, and a
/// package that loads and classifies like the trained model.
#[test]
fn dry_run_on_real_data_writes_a_loadable_package() {
    let out = tempfile::tempdir().unwrap();
    let o = kiln_train(&[
        &format!("--data_url={}", bundled().display()),
        "--train_url",
        out.path().to_str().unwrap(),
        "--dry-run",
        "--epochs",
        "2",
        "--device",
        "cpu",
    ]);
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("Train Epoch: 1 [0/60000 (0%)]\tLoss: "), "{text}");
    assert!(lines[1].starts_with("Test set: Average loss: "), "{text}");
    assert!(lines[1].contains("/10000 ("), "{text}");
    assert!(lines[2].starts_with("Train Epoch: 2 [0/60000 (0%)]"), "{text}");

    let metrics = std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["epoch"], 2);
    assert!((rows[1]["lr"].as_f64().unwrap() - 0.7).abs() < 1e-12);
    for key in [
        "train_loss",
        "test_loss",
        "accuracy",
        "train_seconds",
        "test_seconds",
        "seconds",
    ] {
        assert!(rows[0][key].is_number(), "{key} missing: {metrics}");
    }
    let seconds = |key: &str| rows[0][key].as_f64().unwrap();
    assert!(seconds("test_seconds") > 0.0, "{metrics}");
    assert!(
        seconds("train_seconds") + seconds("test_seconds") <= seconds("seconds"),
        "{metrics}"
    );

    let pkg = out.path().join("model");
    let config = PackageConfig::read(&pkg).unwrap();
    // Four test digits (0, 1, 2, 3) as PNG files for kiln-serve's parity check.
    assert_eq!(config.kiln.parity.len(), 4);
    assert!(pkg.join("parity/0-digit0.png").is_file());
    assert_eq!(config.kiln.architecture, "mnist_net");
    let device = Default::default();
    let net = load_weights(&pkg, &config, NetConfig::new().init::<Flex>(&device)).unwrap();
    let test = MnistDataset::from_dir(bundled(), MnistSplit::Test)
        .unwrap()
        .truncated(1000);
    let items: Vec<_> = (0..test.len()).map(|i| test.get(i).unwrap()).collect();
    let batch = MnistBatcher.batch(items, &device);
    let pred: Vec<i64> = net
        .forward(batch.images)
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .to_vec()
        .unwrap();
    assert_eq!(pred.len(), 1000);
    // The log line's accuracy came from the same weights: two dry batches give a model that is
    // better than chance but far from trained.
    let correct = pred
        .iter()
        .zip(&batch.targets.into_data().convert::<i64>().to_vec::<i64>().unwrap())
        .filter(|(a, b)| a == b)
        .count();
    assert!(correct > 100, "{correct}/1000");
}

/// Same seed and flags, one loading thread: identical losses, batch by batch.
#[test]
fn same_seed_gives_identical_losses() {
    let data = tempfile::tempdir().unwrap();
    mnist_slice(data.path(), 640, 200);
    let run = |seed: &str| {
        let out = tempfile::tempdir().unwrap();
        let (data_arg, out_arg) = io_args(data.path(), out.path());
        let o = kiln_train(&[
            &data_arg,
            &out_arg,
            "--epochs=2",
            "--log-interval=1",
            "--workers=1",
            "--no-save-model",
            "--no-cuda",
            "--seed",
            seed,
        ]);
        stdout(&o)
    };
    let a = run("3");
    assert_eq!(a.lines().filter(|l| l.starts_with("Train Epoch")).count(), 20, "{a}");
    assert!(a.contains("Train Epoch: 1 [320/640 (50%)]"), "{a}");
    assert_eq!(a, run("3"));
    assert_ne!(a, run("4"), "a different seed must change the run");
}

/// Bad input stops the job with a message naming the file, and no package.
#[test]
fn malformed_data_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    mnist_slice(data.path(), 64, 10);
    let labels = data.path().join("t10k-labels.idx1-ubyte");
    let bytes = std::fs::read(&labels).unwrap();
    std::fs::write(&labels, &bytes[..bytes.len() - 3]).unwrap();
    let out = tempfile::tempdir().unwrap();
    let (data_arg, out_arg) = io_args(data.path(), out.path());
    let o = kiln_train(&[&data_arg, &out_arg, "--dry-run"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("t10k-labels.idx1-ubyte") && err.contains("need 10 data bytes, found 7"),
        "{err}"
    );
    assert!(!out.path().join("model").exists());

    let o = kiln_train(&["--data_url", "/nonexistent-kiln", "--dry-run"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/nonexistent-kiln") && err.contains("train-images-idx3-ubyte.gz"),
        "{err}"
    );

    let o = kiln_train(&["--batch-size=0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--batch-size"));
}
