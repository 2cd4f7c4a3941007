//! End-to-end runs of `kiln-train imagenet` on an ImageFolder tree written from real MNIST
//! digits (three classes, a few images each, small crops so ResNet-18 runs fast on a CPU).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use burn::prelude::*;
use burn_flex::Flex;
use kiln_models::{load_weights, PackageConfig, ResNetArch, ResNetConfig};

mod common;
use common::{digit_folder, dogcat_subset, stdout};

fn kiln_train(args: &[&str]) -> Output {
    common::kiln_train("imagenet", args)
}

/// The common flags of a small, seeded, fast run writing to `out`.
fn run(data: &Path, out: &Path, extra: &[&str]) -> String {
    let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec![
        "-a",
        "resnet18",
        "-b",
        "8",
        "--lr",
        "0.01",
        "-j",
        "2",
        "--seed",
        "5",
        "--image-size",
        "32",
        "-p",
        "1",
        "--device",
        "cpu",
        "--output",
        out,
    ];
    args.extend_from_slice(extra);
    args.push(data);
    stdout(&kiln_train(&args))
}

fn summaries(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.starts_with(" * Acc@1 ")).collect()
}

/// Class scores of the ResNet-18 in a package for a fixed input.
fn package_output(dir: &Path) -> Vec<f32> {
    let config = PackageConfig::read(dir).unwrap();
    let device = Default::default();
    let model = ResNetConfig::new(ResNetArch::ResNet18, 3).init::<Flex>(&device);
    let model = load_weights(dir, &config, model).unwrap();
    let x = Tensor::<Flex, 4>::ones([1, 3, 32, 32], &device);
    model.forward(x).into_data().to_vec().unwrap()
}

fn tmp() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("digits");
    digit_folder(&data, 8, (40, 36));
    let out = dir.path().join("out");
    (dir, data, out)
}

#[test]
fn two_epochs_write_checkpoints_metrics_and_a_servable_package() {
    let (_dir, data, out) = tmp();
    let log = run(&data, &out, &["--epochs", "2"]);
    // 24 training images at batch 8: three batches per epoch, numbered like the original.
    for line in ["Epoch: [0][0/3]\tTime ", "Epoch: [1][2/3]\tTime ", "Test: [0/2]\tTime "] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }
    assert!(log.contains("=> creating model 'resnet18'"), "{log}");
    assert_eq!(summaries(&log).len(), 2, "{log}");
    let line = log.lines().find(|l| l.starts_with("Epoch: [0][0/3]")).unwrap();
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields.len(), 6, "{line}");
    // Loss in Python's `{:.4e}`: `Loss 9.4296e-01 (9.4296e-01)`.
    let loss = fields[3].strip_prefix("Loss ").unwrap();
    let (val, avg) = loss.split_once(" (").unwrap();
    for x in [val, avg.trim_end_matches(')')] {
        let (mantissa, exp) = x.split_once('e').unwrap();
        assert!(
            mantissa.len() == 6 && (exp.starts_with('+') || exp.starts_with('-')) && exp.len() == 3,
            "{line}"
        );
    }
    assert!(
        fields[4].starts_with("Acc@1 ") && fields[5].starts_with("Acc@5 "),
        "{line}"
    );

    for file in [
        "checkpoint.pth.tar",
        "model_best.pth.tar",
        "model/config.json",
        "model/model.safetensors",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let metrics = fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let epochs: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(epochs.len(), 2);
    assert_eq!(
        (epochs[0]["epoch"].as_u64(), epochs[0]["lr"].as_f64()),
        (Some(0), Some(0.01))
    );
    let acc5 = epochs[1]["acc5"].as_f64().unwrap();
    assert_eq!(acc5, 100.0, "3 classes: Acc@5 is capped at top-3, always a hit");

    let config = PackageConfig::read(&out.join("model")).unwrap();
    assert_eq!(config.kiln.architecture, "resnet18");
    assert_eq!(config.kiln.labels, vec!["one", "seven", "zero"]);
    assert_eq!(config.kiln.parity.len(), 3, "one parity image per class");
    assert!(out.join("model/parity").join(&config.kiln.parity[0].file).is_file());
    assert_eq!(
        (
            config.kiln.input.channels,
            config.kiln.input.height,
            config.kiln.input.resize_shorter
        ),
        (3, 32, 36)
    );
    assert_eq!(package_output(&out.join("model")).len(), 3);

    // `-e` on the checkpoint and on the package reproduces the best epoch's summary.
    let best = epochs
        .iter()
        .map(|e| e["acc1"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    for resume in ["model_best.pth.tar", "model"] {
        let path = out.join(resume);
        let eval = run(&data, &out.join("eval"), &["-e", "--resume", path.to_str().unwrap()]);
        let got = summaries(&eval);
        assert_eq!(got.len(), 1, "{eval}");
        assert!(
            got[0].starts_with(&format!(" * Acc@1 {best:.3} ")),
            "{resume}: {} vs {best}",
            got[0]
        );
    }
}

#[test]
fn resume_is_exact() {
    let (_dir, data, out) = tmp();
    let straight = out.join("straight");
    let split = out.join("split");
    run(&data, &straight, &["--epochs", "2"]);
    run(&data, &split, &["--epochs", "1"]);
    let ckpt = split.join("checkpoint.pth.tar");
    let log = run(&data, &split, &["--epochs", "2", "--resume", ckpt.to_str().unwrap()]);
    assert!(log.contains("(epoch 1)"), "{log}");
    assert!(!log.contains("Epoch: [0]"), "resumed run must start at epoch 1:\n{log}");

    let straight_metrics = fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    let split_metrics = fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    let losses = |m: &str| -> Vec<(f64, f64)> {
        m.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["train_loss"].as_f64().unwrap(), v["val_loss"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(losses(&straight_metrics), losses(&split_metrics));

    // Same final weights: compare the checkpoints' models through a forward pass.
    let output = |dir: &Path| {
        let eval = run(
            &data,
            &dir.join("eval"),
            &["-e", "--resume", dir.join("checkpoint.pth.tar").to_str().unwrap()],
        );
        summaries(&eval).concat()
    };
    assert_eq!(output(&straight), output(&split));
}

/// `--amp` trains in f16 with loss scaling (the step's numbers against f32 are checked in
/// `mixed`'s unit tests): the loss scale backs off from 2¹⁶ as GradScaler's does, training
/// goes on with finite losses, and a resumed run, whose checkpoint carries the scale, equals
/// an uninterrupted one.
#[test]
fn mixed_precision_trains_and_resumes_exactly() {
    let (_dir, data, out) = tmp();
    let losses = |dir: &Path| -> Vec<f64> {
        fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["train_loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    let (f32_run, amp, split) = (out.join("f32"), out.join("amp"), out.join("split"));
    run(&data, &f32_run, &["--epochs", "2"]);
    run(&data, &amp, &["--epochs", "2", "--amp"]);
    let (exact, half) = (losses(&f32_run), losses(&amp));
    assert_eq!(half.len(), 2);
    assert!(half.iter().all(|l| l.is_finite() && *l > 0.0), "{half:?}");
    assert_ne!(exact, half, "f16 rounding and skipped steps must show");

    run(&data, &split, &["--epochs", "1", "--amp"]);
    let ckpt = split.join("checkpoint.pth.tar");
    run(
        &data,
        &split,
        &["--epochs", "2", "--amp", "--resume", ckpt.to_str().unwrap()],
    );
    assert_eq!(losses(&split), half);
}

/// What a run killed while writing `model/` leaves (the old package moved aside, the new one
/// half written in a temporary folder, a half-written checkpoint file), or a package damaged
/// on disk: the resumed run puts `model/` back to the best recorded weights, leaves no
/// temporaries, and a damaged checkpoint is refused, naming the file.
#[test]
fn a_resume_repairs_what_a_crash_left_of_the_package() {
    let (_dir, data, out) = tmp();
    run(&data, &out, &["--epochs", "1"]);
    let pkg = out.join("model");
    let reference = package_output(&pkg);
    let ckpt = out.join("checkpoint.pth.tar");
    let resume = |out: &Path| run(&data, out, &["--epochs", "1", "--resume", ckpt.to_str().unwrap()]);

    // Killed between moving the old package aside and renaming the new one into place.
    let dead = u32::MAX - 1;
    fs::rename(&pkg, out.join(format!(".model.old-{dead}"))).unwrap();
    fs::create_dir(out.join(format!(".model.tmp-{dead}"))).unwrap();
    fs::write(out.join(".tmp-kiln-ckptX1y2Z3"), b"half a checkpoint").unwrap();
    resume(&out);
    assert_eq!(package_output(&pkg), reference);

    // Gone altogether (a full disk, a careless cleanup): rewritten from model_best.pth.tar.
    fs::remove_dir_all(&pkg).unwrap();
    let log = resume(&out);
    assert!(log.contains("rewrote the model package"), "{log}");
    assert_eq!(package_output(&pkg), reference);

    // Damaged weights fail their checksum and are rewritten the same way.
    let weights = pkg.join("model.safetensors");
    let mut bytes = fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    fs::write(&weights, &bytes).unwrap();
    resume(&out);
    assert_eq!(package_output(&pkg), reference);

    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    names.sort();
    assert!(names.is_empty(), "left behind: {names:?}");

    // A checkpoint with a flipped byte is refused with its name, not resumed from.
    let mut bytes = fs::read(&ckpt).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&ckpt, &bytes).unwrap();
    let o = kiln_train(&[
        "--resume",
        ckpt.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("checkpoint.pth.tar") && err.contains("checksum mismatch"),
        "{err}"
    );
}

#[test]
fn bad_inputs_are_named_errors() {
    let (_dir, data, out) = tmp();
    let out_s = out.to_str().unwrap();
    // A missing data folder.
    let o = kiln_train(&["--output", out_s, "/nonexistent/imagenet"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/imagenet"));

    // Two nodes and no way to find the master.
    let o = kiln_train(&["--world-size", "2", "--output", out_s, data.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--dist-url") && err.contains("MASTER_ADDR"), "{err}");
    // A node batch smaller than its workers.
    let o = kiln_train(&["--device=cpu:2", "-b", "1", "--output", out_s, data.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--batch-size 1") && err.contains("2 workers"), "{err}");

    // A file that is not a checkpoint.
    let junk = out.join("junk.pth.tar");
    fs::create_dir_all(&out).unwrap();
    fs::write(&junk, b"junk").unwrap();
    let o = kiln_train(&[
        "--resume",
        junk.to_str().unwrap(),
        "--output",
        out_s,
        data.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("junk.pth.tar") && o.status.code() == Some(1), "{err}");

    // A class missing from val/.
    fs::remove_dir_all(data.join("val/seven")).unwrap();
    let o = kiln_train(&["--output", out_s, data.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("seven"), "{err}");
}

/// A log's losses and accuracies, without its times.
fn figures(log: &str) -> Vec<&str> {
    log.split(['\t', '\n'])
        .filter(|f| f.starts_with("Loss ") || f.starts_with("Acc@") || f.starts_with(" * "))
        .collect()
}

/// `--device cpu:2`: two workers share each batch of 8; rank 0 alone prints the summaries
/// and writes the checkpoint and package; validation covers the whole set; the same seed
/// gives the same run.
#[test]
fn two_cpu_workers_train_and_validate_over_the_whole_set() {
    let (_dir, data, out) = tmp();
    let log = run(&data, &out, &["--epochs", "1", "--device=cpu:2"]);
    let again = run(&data, &out.join("again"), &["--epochs", "1", "--device=cpu:2"]);
    assert_eq!(figures(&again), figures(&log));
    // Three training and two validation lines of three figures each, and the summary.
    assert_eq!(figures(&log).len(), 3 * 3 + 2 * 3 + 1, "{log}");
    assert_eq!(summaries(&log).len(), 1, "{log}");
    assert_eq!(log.matches("Epoch: [0][0/").count(), 1, "{log}");
    for f in [
        "checkpoint.pth.tar",
        "model_best.pth.tar",
        "model/config.json",
        "metrics.jsonl",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // The sharded validation, summed over both workers, is the single-worker validation of
    // the same checkpoint (rank 0's weights and BatchNorm statistics), to the digit.
    let checkpoint = out.join("checkpoint.pth.tar");
    let checkpoint = checkpoint.to_str().unwrap();
    let single = run(&data, &out.join("e1"), &["-e", "--resume", checkpoint]);
    let split = run(
        &data,
        &out.join("e2"),
        &["-e", "--resume", checkpoint, "--device=cpu:2"],
    );
    assert_eq!(summaries(&single), summaries(&log));
    assert_eq!(summaries(&split), summaries(&log));
}

/// A real-photo slice: 4 cats and 4 dogs to train on, 2 of each to validate, one epoch at
/// 64×64; the package's labels are the folder names.
#[test]
#[ignore = "reads ../shared/data/dogcat (run with --include-ignored where it exists)"]
fn one_epoch_on_real_dogcat_photos() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dogcat");
    dogcat_subset(&data, 4, 2);
    let out = dir.path().join("out");
    let log = run(&data, &out, &["--epochs", "1", "-b", "4", "--image-size", "64"]);
    assert!(log.contains("Epoch: [0][0/2]\tTime "), "{log}");
    assert_eq!(summaries(&log).len(), 1, "{log}");
    let config = PackageConfig::read(&out.join("model")).unwrap();
    assert_eq!(config.kiln.labels, vec!["cat", "dog"]);
    assert_eq!((config.kiln.input.height, config.kiln.input.resize_shorter), (64, 73));
}
