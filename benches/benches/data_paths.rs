//! criterion micro-benchmarks of kiln's hot data paths: the MNIST idx reader, JPEG decode with
//! the ImageNet training crop, and one kiln-serve upload from multipart body to model input.
//!
//! Run from the repository root: `cargo bench -p kiln-benches --bench data_paths`.

use std::hint::black_box;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::{header, Request};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use image::{DynamicImage, ImageFormat, RgbImage};
use kiln_benches::load::{multipart_body, BOUNDARY};
use kiln_benches::serve::digit_pngs;
use kiln_data::idx::{parse_idx, read_idx, read_maybe_gzip};
use kiln_data::transforms::RandomResizedCrop;
use kiln_data::ClassifyTransform;
use kiln_infer::preprocess::Preprocessor;
use kiln_models::{net_package_config, NetConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The bundled MNIST folder.
fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist")
}

/// The MNIST test images (10,000 × 28 × 28): gunzip + parse from the file, and parse alone
/// from the decompressed bytes.
fn idx(c: &mut Criterion) {
    let path = mnist_dir().join("t10k-images-idx3-ubyte.gz");
    let raw = read_maybe_gzip(&path).expect("bundled MNIST test images");
    let mut group = c.benchmark_group("idx");
    group.throughput(Throughput::Bytes(raw.len() as u64));
    group.bench_function("read_idx t10k-images .gz (read + gunzip + parse)", |b| {
        b.iter(|| read_idx(black_box(&path)).expect("parses"))
    });
    group.bench_function("parse_idx t10k-images (decompressed in memory)", |b| {
        b.iter(|| parse_idx(black_box(&raw), &path).expect("parses"))
    });
    group.finish();
}

/// A 500×375 photo-like JPEG (smooth gradients plus texture, quality 75), made in memory.
fn jpeg_500x375() -> Vec<u8> {
    let img = RgbImage::from_fn(500, 375, |x, y| {
        let texture = ((x * 7) ^ (y * 13)) % 32;
        image::Rgb([
            (x / 2 + texture) as u8,
            (y * 2 / 3 + texture) as u8,
            ((x + y) / 4 + 2 * texture) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut out, ImageFormat::Jpeg)
        .expect("encodes");
    out.into_inner()
}

/// Decoding a 500×375 JPEG alone, with `RandomResizedCrop(224)`, and with the whole ImageNet
/// training transform (crop, flip, to tensor, normalise).
fn jpeg(c: &mut Criterion) {
    let jpeg = jpeg_500x375();
    let decode = |bytes: &[u8]| image::load_from_memory(bytes).expect("decodes").into_rgb8();
    let crop = RandomResizedCrop::new(224);
    let train = ClassifyTransform::imagenet_train();
    let mut rng = StdRng::seed_from_u64(0);
    let mut group = c.benchmark_group("jpeg 500x375");
    group.bench_function("decode", |b| b.iter(|| decode(black_box(&jpeg))));
    group.bench_function("decode + RandomResizedCrop(224)", |b| {
        b.iter(|| crop.apply(&decode(black_box(&jpeg)), &mut rng))
    });
    group.bench_function("decode + ImageNet train transform", |b| {
        b.iter(|| train.apply(decode(black_box(&jpeg)), &mut rng))
    });
    group.finish();
}

/// Field `image`'s bytes from a multipart request, read with axum's `Multipart` extractor as
/// kiln-serve's predict route does (its `read_fields` is private to kiln-infer).
async fn upload_bytes(body: &[u8]) -> Vec<u8> {
    let request = Request::builder()
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(body.to_vec()))
        .expect("request");
    let mut multipart = Multipart::from_request(request, &()).await.expect("multipart");
    let field = multipart.next_field().await.expect("field").expect("one field");
    field.bytes().await.expect("bytes").to_vec()
}

/// One MNIST digit upload (a 28×28 PNG in a multipart body, as `kiln-bench serve` sends it):
/// multipart parse, preprocessing (`Preprocessor::prepare`: decode, luma, resize, crop,
/// normalise) and both.
fn upload(c: &mut Criterion) {
    let (_, pngs) = digit_pngs(&mnist_dir(), 1).expect("bundled MNIST test digits");
    let body = multipart_body("image", &pngs[0]);
    // 40 M pixels: kiln-serve's default --max-pixels.
    let preprocessor = Preprocessor::new(net_package_config(&NetConfig::new()).kiln.input, 40_000_000);
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let mut group = c.benchmark_group("upload mnist png");
    group.bench_function("multipart parse", |b| {
        b.iter(|| runtime.block_on(upload_bytes(black_box(&body))))
    });
    group.bench_function("preprocess", |b| {
        b.iter(|| preprocessor.prepare(black_box(&pngs[0])).expect("prepares"))
    });
    group.bench_function("multipart parse + preprocess", |b| {
        b.iter(|| {
            let bytes = runtime.block_on(upload_bytes(black_box(&body)));
            preprocessor.prepare(&bytes).expect("prepares")
        })
    });
    group.finish();
}

criterion_group! {
    name = data_paths;
    // Short windows: the whole run takes about a minute on two cores.
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = idx, jpeg, upload
}
criterion_main!(data_paths);
