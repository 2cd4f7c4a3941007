//! Bounded fuzzing of the upload path (`kiln_data::fuzz`): mutated images of every supported
//! format through decode and preprocessing, and mutated multipart bodies through the real
//! `kiln-serve`. Every case must end in a prepared input or a typed error (over HTTP: a JSON
//! 4xx), never a panic or a dead server.

mod common;

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use common::{trained_package, ServeProcess};
use image::{DynamicImage, ImageFormat, RgbImage};
use kiln_data::fuzz::{iterations, Mutator};
use kiln_infer::preprocess::Preprocessor;
use kiln_models::package::InputSpec;

fn seeds() -> Vec<(ImageFormat, Vec<u8>)> {
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(24, 20, |x, y| {
        image::Rgb([(x * 10) as u8, (y * 12) as u8, ((x + y) * 5) as u8])
    }));
    [
        ImageFormat::Png,
        ImageFormat::Jpeg,
        ImageFormat::Gif,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
        ImageFormat::WebP,
    ]
    .into_iter()
    .map(|format| {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        (format, out.into_inner())
    })
    .collect()
}

#[test]
fn mutated_images_never_panic_the_preprocessor() {
    let classifier = Preprocessor::new(InputSpec::center_crop(3, 32, 36, vec![0.5; 3], vec![0.25; 3]), 1 << 20);
    let mnist = Preprocessor::new(InputSpec::center_crop(1, 28, 28, vec![0.1], vec![0.3]), 1 << 20);
    let mut mutator = Mutator::new(11);
    let per_format = iterations(1_500);
    for (format, seed) in seeds() {
        assert!(classifier.prepare(&seed).is_ok(), "{format:?} seed");
        let mut refused = 0;
        for i in 0..per_format {
            let case = mutator.mutate(&seed);
            let p = if i % 2 == 0 { &classifier } else { &mnist };
            match catch_unwind(AssertUnwindSafe(|| p.plan(&case).and_then(|_| p.prepare(&case)))) {
                Ok(Ok(prepared)) => assert_eq!(prepared.input.len(), p.input_len()),
                Ok(Err(_)) => refused += 1,
                Err(_) => panic!("{format:?} case {i} panicked: {case:?}"),
            }
        }
        assert!(refused > 0, "{format:?}: no mutation was refused");
    }
}

/// Mutated multipart bodies (boundaries, part headers, image bytes) against the real server:
/// each gets 200 or a JSON 4xx, and the server stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_multipart_bodies_get_json_answers() {
    let pkg = trained_package();
    let server = ServeProcess::start(&pkg, &[]).await;
    let png = &seeds()[0].1;
    let mut seed = b"--XyZ\r\ncontent-disposition: form-data; name=\"image\"; filename=\"d.png\"\r\n\
content-type: image/png\r\n\r\n"
        .to_vec();
    seed.extend_from_slice(png);
    seed.extend_from_slice(b"\r\n--XyZ--\r\n");
    let client = reqwest::Client::new();
    let mut mutator = Mutator::new(12);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..iterations(300) {
        let body = if i == 0 { seed.clone() } else { mutator.mutate(&seed) };
        let r = client
            .post(format!("{}/", server.base))
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let answer: serde_json::Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("case {i}: {status}, not JSON: {e}"));
        assert!(
            status == 200 || (400..500).contains(&status),
            "case {i}: {status} {answer}"
        );
        if status != 200 {
            assert_eq!(answer["error_code"], format!("KILN.{status}"), "case {i}");
        }
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert!(
        statuses.contains_key(&200) && statuses.contains_key(&400),
        "{statuses:?}"
    );
    let health = client.get(format!("{}/health", server.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
}
