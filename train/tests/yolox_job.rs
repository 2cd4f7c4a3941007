//! End-to-end runs of `kiln-train yolox` on a tiny COCO folder written by the test: 64×64
//! images of coloured rectangles (two categories with COCO's sparse ids), yolox-nano at a
//! 64×64 input so a CPU trains a few epochs in seconds.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kiln_models::PackageConfig;
use serde_json::{json, Value};

mod common;
use common::{coco_folder, free_port, stdout, wait_all};

fn kiln_train(args: &[&str]) -> Output {
    common::kiln_train("yolox", args)
}

/// A small seeded run on `data` into `<output>/<name>`, with extra flags before the opts.
fn run(data: &Path, output: &Path, name: &str, extra: &[&str]) -> String {
    let args = flags(data, output, name, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    stdout(&kiln_train(&args))
}

/// The flags of [`run`].
fn flags(data: &Path, output: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let (data, output) = (data.to_str().unwrap(), output.to_str().unwrap());
    let mut args = vec![
        "-n",
        "yolox-nano",
        "-b",
        "4",
        "--device",
        "cpu",
        "--seed",
        "3",
        "--data",
        data,
        "--output",
        output,
        "--experiment-name",
        name,
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "max_epoch",
        "3",
        "warmup_epochs",
        "1",
        "no_aug_epochs",
        "1",
        "input_size",
        "64,64",
        "test_size",
        "64,64",
        "eval_interval",
        "1",
        "print_interval",
        "1",
        "data_num_workers",
        "2",
        "val_split",
        "train2017",
        "basic_lr_per_img",
        "0.002",
    ]);
    args.into_iter().map(String::from).collect()
}

fn metrics(dir: &Path) -> Vec<Value> {
    fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn trains_evaluates_checkpoints_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coco");
    coco_folder(&data, 8);
    let out = dir.path().join("outputs");
    let log = run(&data, &out, "full", &[]);

    // YOLOX's log lines, the switch to the no-augmentation epoch, and COCO's summary.
    assert!(log.contains("epoch: 1/3, iter: 1/2, mem: "), "{log}");
    assert!(log.contains("epoch: 3/3, iter: 2/2"), "{log}");
    assert!(log.contains("--->No mosaic aug now!"), "{log}");
    assert_eq!(
        log.matches(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = ")
            .count(),
        3,
        "{log}"
    );
    let full = out.join("full");
    let epochs = metrics(&full);
    assert_eq!(epochs.len(), 3);
    for (i, m) in epochs.iter().enumerate() {
        assert_eq!(m["epoch"], i + 1);
        let total = m["total_loss"].as_f64().unwrap();
        assert!(total.is_finite() && total > 0.0, "{m}");
        assert!(m["ap50_95"].as_f64().unwrap() >= 0.0, "{m}");
    }
    // The L1 term is only on in the last, no-augmentation epoch.
    assert_eq!(epochs[1]["l1_loss"], 0.0);
    assert!(epochs[2]["l1_loss"].as_f64().unwrap() > 0.0);
    for file in [
        "latest_ckpt.pth",
        "best_ckpt.pth",
        "epoch_2_ckpt.pth",
        "epoch_3_ckpt.pth",
    ] {
        assert!(full.join(file).is_file(), "{file} missing");
    }
    // The detection package of the best EMA weights.
    let package = PackageConfig::read(&full.join("model")).unwrap();
    assert_eq!(package.kiln.architecture, "yolox-nano");
    assert_eq!(package.kiln.labels, [json!("red"), json!("blue")]);

    // Resuming epoch 3 from epoch 2's checkpoint repeats it exactly.
    let resumed_dir = out.join("resumed");
    fs::create_dir_all(&resumed_dir).unwrap();
    let ckpt = full.join("epoch_2_ckpt.pth");
    let log = run(&data, &out, "resumed", &["--resume", "-c", ckpt.to_str().unwrap()]);
    assert!(log.contains("=> loaded checkpoint"), "{log}");
    let resumed = metrics(&resumed_dir);
    assert_eq!(resumed.len(), 1);
    for key in [
        "epoch",
        "lr",
        "total_loss",
        "iou_loss",
        "conf_loss",
        "cls_loss",
        "l1_loss",
        "ap50_95",
    ] {
        assert_eq!(resumed[0][key], epochs[2][key], "{key}");
    }
}

#[test]
fn bad_flags_and_data_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let out = kiln_train(&["--data", missing.to_str().unwrap(), "--device", "cpu"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("instances_train2017.json"), "{err}");

    let out = kiln_train(&["-f", "exps/yolox_s.py", "--device", "cpu"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kiln has no Python experiment files"), "{err}");

    let out = kiln_train(&["--device", "cpu", "max_epoch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"max_epoch\" has no value"), "{err}");

    let out = kiln_train(&["-n", "yolov5", "--device", "cpu"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown model \"yolov5\""), "{err}");
}

/// The `(iteration, iterations per epoch, lr)` of each of YOLOX's log lines in `out`.
fn iteration_lines(out: &str) -> Vec<(usize, usize, String)> {
    out.lines()
        .filter_map(|l| {
            let iter = l.split("iter: ").nth(1)?.split(',').next()?;
            let (i, n) = iter.split_once('/')?;
            let lr = l.split("lr: ").nth(1)?.split(',').next()?;
            Some((i.parse().ok()?, n.parse().ok()?, lr.to_string()))
        })
        .collect()
}

/// `-b` is the batch over every device of every node, as in YOLOX: two nodes of one worker
/// each train 2 of `-b 4`'s images a step, so 16 images (8 a node) make 4 iterations an
/// epoch, as on one node, at the learning rate of batch 4.
#[test]
fn the_batch_is_divided_over_the_devices_of_every_node() {
    let data = tempfile::tempdir().unwrap();
    coco_folder(data.path(), 16);
    let single_dir = tempfile::tempdir().unwrap();
    let single = iteration_lines(&run(data.path(), single_dir.path(), "one", &[]));
    assert_eq!(single.first().map(|l| l.1), Some(4), "{single:?}");

    let url = format!("tcp://127.0.0.1:{}", free_port());
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let children: Vec<_> = (0..2)
        .map(|rank| {
            let rank = rank.to_string();
            let extra = [
                "--num_machines",
                "2",
                "--machine_rank",
                &rank,
                "--dist-url",
                &url,
                "-d",
                "1",
            ];
            Command::new(env!("CARGO_BIN_EXE_kiln-train"))
                .arg("yolox")
                .args(flags(
                    data.path(),
                    dirs[rank.parse::<usize>().unwrap()].path(),
                    "two",
                    &extra,
                ))
                .env("KILN_LOG", "warn")
                .env("RUST_BACKTRACE", "0")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs = wait_all(children, Duration::from_secs(300));
    let two = iteration_lines(&stdout(&outputs[0]));
    assert!(stdout(&outputs[1]).trim().is_empty(), "node 1 prints nothing");
    assert_eq!(two.len(), single.len(), "{two:?}\n{single:?}");
    for (a, b) in two.iter().zip(&single) {
        assert_eq!(a, b, "two nodes: (iter, iters, lr) {a:?}; one node: {b:?}");
    }
}
