//! The RandAugment operations and the resize filters against Pillow itself: the fixture
//! `fixtures/timm_ops.json` holds timm 0.4.12's operations applied by Pillow to small images
//! (made by `benches/reference/timm_ops_fixture.py`).

use image::imageops;
use image::RgbImage;
use serde_json::Value;

use super::{enhance, geometry, point, RandOp, Resample};

const FIXTURE: &str = include_str!("fixtures/timm_ops.json");

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("fixture is JSON")
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn decode(v: &Value) -> RgbImage {
    let (w, h) = (
        v["width"].as_u64().unwrap() as u32,
        v["height"].as_u64().unwrap() as u32,
    );
    RgbImage::from_raw(w, h, unhex(v["hex"].as_str().unwrap())).expect("w·h·3 bytes")
}

fn resample(v: &Value) -> Resample {
    match v.as_str() {
        Some("bicubic") => Resample::Bicubic,
        Some("bilinear") => Resample::Bilinear,
        other => panic!("resample {other:?}"),
    }
}

#[test]
fn operations_match_pillow_exactly() {
    let fx = fixture();
    let img = decode(&fx["image"]);
    let eq_img = decode(&fx["equalize_image"]);
    let fill: [u8; 3] = serde_json::from_value(fx["fill"].clone()).unwrap();
    assert_eq!(fill, super::rand_ops::imagenet_fill());
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 35);
    for case in cases {
        let op = case["op"].as_str().unwrap();
        let arg = case["arg"].as_f64().unwrap_or(0.0);
        let want = unhex(case["hex"].as_str().unwrap());
        let r = || resample(&case["resample"]);
        let got = match op {
            "auto_contrast" => point::autocontrast(img.clone()),
            "invert" => point::invert(img.clone()),
            "equalize" => point::equalize(eq_img.clone()),
            "posterize" => point::posterize(img.clone(), arg as u32),
            "solarize" => point::solarize(img.clone(), arg as u32),
            "solarize_add" => point::solarize_add(img.clone(), arg as u32, 128),
            "color" => enhance::color(&img, arg),
            "contrast" => enhance::contrast(&img, arg),
            "brightness" => enhance::brightness(&img, arg),
            "sharpness" => enhance::sharpness(&img, arg),
            "rotate" => geometry::rotate(&img, arg, r(), fill),
            "shear_x" => geometry::shear_x(&img, arg, r(), fill),
            "shear_y" => geometry::shear_y(&img, arg, r(), fill),
            "translate_x_rel" => geometry::translate_x_rel(&img, arg, r(), fill),
            "translate_y_rel" => geometry::translate_y_rel(&img, arg, r(), fill),
            _ => panic!("unknown op {op}"),
        };
        let got = got.into_raw();
        let diff: Vec<usize> = (0..want.len()).filter(|&i| got[i] != want[i]).collect();
        assert!(
            diff.is_empty(),
            "{op}({arg}, {:?}): {} of {} bytes differ, first at {}: got {} want {}",
            case["resample"],
            diff.len(),
            want.len(),
            diff[0],
            got[diff[0]],
            want[diff[0]]
        );
        // The operation changed something (a fixture that equals its input proves little).
        let input = if op == "equalize" { &eq_img } else { &img };
        assert_ne!(&got, input.as_raw(), "{op}({arg}) left the image as it was");
    }
}

#[test]
fn level_arguments_match_timm() {
    let fx = fixture();
    let levels = fx["levels"].as_array().unwrap();
    assert!(levels.len() > 30);
    for l in levels {
        let op = match l["op"].as_str().unwrap() {
            "Posterize" => RandOp::Posterize,
            "PosterizeIncreasing" => RandOp::PosterizeIncreasing,
            "Solarize" => RandOp::Solarize,
            "SolarizeIncreasing" => RandOp::SolarizeIncreasing,
            "SolarizeAdd" => RandOp::SolarizeAdd,
            "Color" => RandOp::Color,
            "ColorIncreasing" => RandOp::ColorIncreasing,
            "Rotate" => RandOp::Rotate,
            "TranslateYRel" => RandOp::TranslateYRel,
            other => panic!("unknown op {other}"),
        };
        let (level, negate) = (l["level"].as_f64().unwrap(), l["negate"].as_bool().unwrap());
        let got = op.argument(level, negate);
        if let Some(int) = l["arg"].as_i64() {
            assert_eq!(got, int as f64, "{op:?} at {level}");
        } else {
            // serde_json's float parsing may be one ulp off the value Python printed.
            let want = l["arg"].as_f64().unwrap();
            let ulps = 2.0 * f64::EPSILON * want.abs().max(1.0);
            assert!(
                (got - want).abs() <= ulps,
                "{op:?} at {level} (negate {negate}): {got} vs {want}"
            );
        }
    }
}

/// Pillow's `resize` and `image`'s resampler with the matching filter agree to one level: they
/// use the same kernels and support widening, but Pillow rounds after each pass with
/// fixed-point weights.
#[test]
fn resizing_is_within_one_level_of_pillow() {
    let fx = fixture();
    let img = decode(&fx["image"]);
    let mut exact = 0;
    let mut total = 0;
    for r in fx["resizes"].as_array().unwrap() {
        let want = decode(r);
        let filter = resample(&r["resample"]).filter();
        let got = imageops::resize(&img, want.width(), want.height(), filter);
        for (g, w) in got.as_raw().iter().zip(want.as_raw()) {
            assert!(
                g.abs_diff(*w) <= 1,
                "{:?} {}×{}: {g} vs {w}",
                r["resample"],
                want.width(),
                want.height()
            );
            exact += usize::from(g == w);
            total += 1;
        }
    }
    // Most bytes are equal (79 % with the committed fixture).
    assert!(exact * 4 >= total * 3, "{exact} of {total} bytes equal");
}
