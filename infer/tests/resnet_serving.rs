//! `kiln-serve` with a ResNet package from the ImageFolder job: RGB preprocessing with the
//! training job's evaluation transform, class-name labels.

mod common;

use std::io::Cursor;

use burn::backend::Flex;
use burn::prelude::*;
use common::ServeProcess;
use image::{DynamicImage, ImageFormat, RgbImage};
use kiln_data::ClassifyTransform;
use kiln_models::{resnet_package_config, write_package, ResNet, ResNetArch, ResNetConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

const CROP: u32 = 32;
const RESIZE: u32 = 36;

/// A ResNet-18 package for classes cat/dog with 32×32 crops of images resized to 36.
fn package(dir: &std::path::Path) -> ResNet<Flex> {
    let device = Default::default();
    Flex::seed(&device, 3);
    let model = ResNetConfig::new(ResNetArch::ResNet18, 2).init::<Flex>(&device);
    let mut config = resnet_package_config(ResNetArch::ResNet18, &["cat".into(), "dog".into()]);
    config.kiln.input.height = CROP as usize;
    config.kiln.input.width = CROP as usize;
    config.kiln.input.resize_shorter = RESIZE as usize;
    write_package(dir, &config, &model).unwrap();
    model
}

/// A colourful test picture, `w`×`h`, different for each `seed`.
fn picture(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 7 + y * 13 + seed * 31) % 256;
        image::Rgb([v as u8, (255 - v) as u8, ((x * y + seed) % 256) as u8])
    })
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut buf, ImageFormat::Png)
        .unwrap();
    buf.into_inner()
}

/// The model's class probabilities on the training job's evaluation tensor of `img`.
fn model_probabilities(model: &ResNet<Flex>, img: &RgbImage) -> Vec<f32> {
    let eval = ClassifyTransform::Eval {
        resize: RESIZE,
        crop: CROP,
    };
    let x = eval.apply(img.clone(), &mut StdRng::seed_from_u64(0));
    let device = Default::default();
    let x = Tensor::<Flex, 4>::from_data(TensorData::new(x, [1, 3, CROP as usize, CROP as usize]), &device);
    burn::tensor::activation::softmax(model.forward(x), 1)
        .into_data()
        .to_vec()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_names_come_back_and_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("model");
    let model = package(&pkg);
    let server = ServeProcess::start(&pkg, &[]).await;
    let client = reqwest::Client::new();
    for seed in 0..12 {
        let img = picture(40 + seed * 3, 48, seed);
        let want = model_probabilities(&model, &img);
        let label = if want[1] > want[0] { "dog" } else { "cat" };
        let form = || Form::new().part("image", Part::bytes(png(&img)).file_name("p.png"));

        let r = client
            .post(format!("{}/", server.base))
            .multipart(form())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body, json!([{ "image": label }]), "picture {seed}");

        let r = client
            .post(format!("{}/?detail=true", server.base))
            .multipart(form())
            .send()
            .await
            .unwrap();
        let detail: Value = r.json().await.unwrap();
        let probs: Vec<f32> = serde_json::from_value(detail[0]["files"][0]["probabilities"].clone()).unwrap();
        for (p, q) in probs.iter().zip(&want) {
            assert!((p - q).abs() < 1e-5, "picture {seed}: {probs:?} vs {want:?}");
        }
    }
}
