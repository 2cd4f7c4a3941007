//! The train–serve parity check at load: a package's held-out images must come out of
//! kiln-serve's decoding, preprocessing and model with the probabilities recorded in the
//! package, or the server refuses it naming the image.

mod common;

use std::path::Path;

use burn::backend::Flex;
use common::{encode_digit, model_labels, test_digits, trained_package, ServeProcess};
use image::ImageFormat;
use kiln_models::{load_weights, write_package_with, NetConfig, PackageConfig, ParitySample};

/// The trained MNIST package rewritten at `dir/model` with three digits as PNG parity images
/// and the probabilities `Net` gives their raw idx pixels (no image codec involved), after
/// `tamper` had its way with the config.
fn package_with_parity(dir: &Path, tamper: impl FnOnce(&mut PackageConfig)) -> std::path::PathBuf {
    let source = trained_package();
    let config = PackageConfig::read(&source).unwrap();
    let net = load_weights(&source, &config, NetConfig::new().init::<Flex>(&Default::default())).unwrap();
    let digits = test_digits(3);
    let (_, probs) = model_labels(&source, &digits);
    let files: Vec<(String, Vec<u8>)> = digits
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("{i}.png"), encode_digit(d, 1, ImageFormat::Png)))
        .collect();
    let mut config = config.clone();
    config.kiln.parity = files
        .iter()
        .zip(probs)
        .map(|((file, _), probabilities)| ParitySample {
            file: file.clone(),
            probabilities,
        })
        .collect();
    tamper(&mut config);
    let pkg = dir.join("model");
    write_package_with(&pkg, &config, &net, &files).unwrap();
    pkg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_whose_images_come_out_the_same_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = package_with_parity(dir.path(), |_| {});
    assert!(pkg.join("parity/0.png").is_file());
    let server = ServeProcess::start(&pkg, &[]).await;
    let ready = reqwest::get(format!("{}/v2/health/ready", server.base)).await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// The refusal of a package `tamper` spoiled: kiln-serve's stderr.
fn refusal(tamper: impl FnOnce(&mut PackageConfig)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let pkg = package_with_parity(dir.path(), tamper);
    common::refused_at_start(&pkg)
}

#[test]
fn preprocessing_that_drifted_from_training_is_refused_naming_the_image() {
    // The normalisation the server would apply no longer matches training's: the digits
    // the model is less sure of show it.
    let err = refusal(|c| c.kiln.input.mean = vec![0.2]);
    assert!(
        err.contains("parity check failed: parity/") && err.contains("tolerance"),
        "{err}"
    );
    // A recorded probability that the model does not reproduce.
    let err = refusal(|c| c.kiln.parity[1].probabilities[0] += 0.01);
    assert!(err.contains("parity/1.png") && err.contains("class 0"), "{err}");
    // A missing image file is named too.
    let err = refusal(|c| {
        c.kiln.parity.push(ParitySample {
            file: "0.png".into(),
            probabilities: vec![0.1; 10],
        })
    });
    assert!(err.contains("parity/0.png"), "{err}");
}
