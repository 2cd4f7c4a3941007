//! kiln's Swin Transformer against the official microsoft/Swin-Transformer model, on the
//! fixtures of `benches/reference/swin_fixture.py` (`tests/fixtures/swin/`): random weights in
//! the official checkpoint layout, the official logits of a deterministic input, and the
//! official `load_pretrained` into other window and input sizes.
//!
//! Tolerance: outputs are compared to `1e-4 · max(1, |official|)`. Both sides compute in
//! float32 with different summation orders (burn-flex's and PyTorch's matrix multiplies,
//! softmax and LayerNorm reductions over 32–256 terms); the logits are O(1), so rounding
//! differences stay near 1e-6, while a wrong weight, bias index, shift or merge order moves
//! them by more than 1e-2.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn_flex::Flex;
use kiln_models::swin::{
    bicubic_resize, load_swin_pretrained, HeadLoad, Resized, SwinConfig, SwinPretrainedReport, SwinTransformer,
};
use kiln_models::PackageError;
use serde_json::Value;

const TOLERANCE: f64 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/swin")
}

fn fixture() -> Value {
    let text = std::fs::read_to_string(fixtures().join("swin_micro.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn numbers(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The official constructor's arguments as a kiln configuration.
fn config(v: &Value) -> SwinConfig {
    let n = |k: &str| v[k].as_u64().unwrap() as usize;
    let list = |k: &str| -> Vec<usize> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect()
    };
    SwinConfig {
        img_size: n("img_size"),
        patch_size: n("patch_size"),
        in_chans: n("in_chans"),
        window_size: n("window_size"),
        mlp_ratio: v["mlp_ratio"].as_f64().unwrap(),
        qkv_bias: v["qkv_bias"].as_bool().unwrap(),
        ape: v["ape"].as_bool().unwrap(),
        patch_norm: v["patch_norm"].as_bool().unwrap(),
        drop_path_rate: v["drop_path_rate"].as_f64().unwrap(),
        ..SwinConfig::new(n("embed_dim"), &list("depths"), &list("num_heads"), n("num_classes"))
    }
}

/// The fixture's input: `sin(0.1·(7n + 3c + 0.5h + w)) + 0.5·cos(0.013·h·w + 0.9c + 1.7n)`.
fn images(n: usize, side: usize) -> Tensor<Flex, 4> {
    let mut values = Vec::with_capacity(n * 3 * side * side);
    for i in 0..n {
        for c in 0..3 {
            for h in 0..side {
                for w in 0..side {
                    let (i, c, h, w) = (i as f64, c as f64, h as f64, w as f64);
                    let x = (0.1 * (7.0 * i + 3.0 * c + 0.5 * h + w)).sin()
                        + 0.5 * (0.013 * h * w + 0.9 * c + 1.7 * i).cos();
                    values.push(x as f32);
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(values, [n, 3, side, side]), &Default::default())
}

fn host<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

/// The largest `|got − want|`, after asserting each is within the tolerance.
fn assert_close(what: &str, got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let diff = (g as f64 - w as f64).abs();
        assert!(
            diff <= TOLERANCE * (w as f64).abs().max(1.0),
            "{what}[{i}]: kiln {g}, official {w}"
        );
        worst = worst.max(diff);
    }
    println!("{what}: max |kiln − official| = {worst:.2e} over {} values", got.len());
    worst
}

fn load(config: &SwinConfig, file: &str, map: Option<&[usize]>) -> (SwinTransformer<Flex>, SwinPretrainedReport) {
    let model = config.init::<Flex>(&Default::default());
    load_swin_pretrained(model, &fixtures().join(file), map).unwrap()
}

/// Param tensors of the micro model: per block 2 norms (2 each), the table, qkv and proj
/// (2 each), fc1 and fc2 (2 each) = 13; 4 blocks; merging 3; patch embedding 4; final norm and
/// head 4.
const MICRO_TENSORS: usize = 4 * 13 + 3 + 4 + 4;

#[test]
fn logits_match_the_official_model() {
    let f = fixture();
    let micro = &f["micro"];
    let config = config(&micro["config"]);
    let (model, report) = load(&config, "swin_micro.pth", None);
    assert_eq!(
        report,
        SwinPretrainedReport {
            loaded: MICRO_TENSORS,
            // Four relative_position_index buffers and the shifted block's attn_mask.
            dropped_buffers: 5,
            resized: vec![],
            kept_tables: vec![],
            head: HeadLoad::Loaded,
            missing: vec![],
            unexpected: vec![],
        }
    );
    let x = images(2, 56);

    // Stage 0 (blocks and patch merging), sampled tokens.
    let patches = model.patch_embed.proj.forward(x.clone());
    let [n, c, s, _] = patches.dims();
    let mut t = patches.reshape([n, c, s * s]).swap_dims(1, 2);
    t = model.patch_embed.norm.as_ref().unwrap().forward(t);
    for block in &model.layers[0].blocks {
        t = block.forward(t);
    }
    let t = model.layers[0].downsample.as_ref().unwrap().forward(t);
    let shape: Vec<usize> = micro["stage0_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(t.dims().to_vec(), shape);
    let [_, tokens, dim] = t.dims();
    let stage0 = host(t);
    let mut sampled = Vec::new();
    for image in 0..2 {
        for token in micro["stage0_tokens"].as_array().unwrap() {
            let token = token.as_u64().unwrap() as usize;
            let at = (image * tokens + token) * dim;
            sampled.extend_from_slice(&stage0[at..at + dim]);
        }
    }
    assert_close("stage 0", &sampled, &numbers(&micro["stage0"]));

    assert_close(
        "features",
        &host(model.forward_features(x.clone())),
        &numbers(&micro["features"]),
    );
    assert_close("logits", &host(model.forward(x)), &numbers(&micro["logits"]));
}

/// The window-7 checkpoint in a window-14 model: stage 0 (a 14×14 map) becomes one 14×14
/// window, its tables are resized 13×13 → 27×27; stage 1 (7×7) keeps window 7.
#[test]
fn a_larger_window_resizes_the_tables_as_the_official_load() {
    let f = fixture();
    let config = config(&f["micro_window14"]["config"]);
    assert_eq!(config.window_size, 14);
    let (model, report) = load(&config, "swin_micro.pth", None);
    let resized: Vec<Resized> = (0..2)
        .map(|b| Resized {
            key: format!("layers.0.blocks.{b}.attn.relative_position_bias_table"),
            from: 13,
            to: 27,
        })
        .collect();
    assert_eq!(report.resized, resized);
    assert_eq!((report.loaded, report.head), (MICRO_TENSORS, HeadLoad::Loaded));
    assert!(report.missing.is_empty() && report.unexpected.is_empty(), "{report}");
    assert!(report.to_string().contains("13×13 → 27×27"), "{report}");
    assert_close(
        "window-14 logits",
        &host(model.forward(images(2, 56))),
        &numbers(&f["micro_window14"]["logits"]),
    );
}

/// The APE model, as saved and loaded into a twice larger input (APE resized 8×8 → 16×16).
#[test]
fn the_absolute_position_embedding_loads_and_resizes_as_the_official_load() {
    let f = fixture();
    let small = config(&f["ape"]["config"]);
    assert!(small.ape);
    let (model, report) = load(&small, "swin_micro_ape.pth", None);
    assert!(report.resized.is_empty() && report.missing.is_empty(), "{report}");
    assert_close(
        "APE logits",
        &host(model.forward(images(2, 32))),
        &numbers(&f["ape"]["logits"]),
    );

    let large = config(&f["ape_img64"]["config"]);
    assert_eq!(large.img_size, 64);
    let (model, report) = load(&large, "swin_micro_ape.pth", None);
    assert_eq!(
        report.resized,
        vec![Resized {
            key: "absolute_pos_embed".into(),
            from: 8,
            to: 16
        }]
    );
    assert!(report.missing.is_empty() && report.unexpected.is_empty(), "{report}");
    assert_close(
        "APE img-64 logits",
        &host(model.forward(images(2, 64))),
        &numbers(&f["ape_img64"]["logits"]),
    );
}

/// `bicubic_resize` against `torch.nn.functional.interpolate(mode='bicubic')` of `[L, nH]`
/// tables (3 → 5, 13 → 23 and 5 → 3 per side).
#[test]
fn bicubic_resizing_is_torch_s() {
    let f = fixture();
    for case in f["bicubic"].as_array().unwrap() {
        let n = |k: &str| case[k].as_u64().unwrap() as usize;
        let (heads, from, to) = (n("heads"), n("from"), n("to"));
        let got = bicubic_resize(&numbers(&case["table"]), heads, from, to);
        let want = numbers(&case["resized"]);
        assert_eq!(got.len(), to * to * heads);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5, "{from}→{to} [{i}]: {g} vs torch {w}");
        }
    }
}

/// A class map picks the model's head rows from the checkpoint's (here 4 of the 10 classes):
/// the logits are the official ones at those columns.
#[test]
fn a_class_map_selects_head_rows() {
    let f = fixture();
    let mut config = config(&f["micro"]["config"]);
    config.num_classes = 4;
    let map = [9, 0, 3, 3];
    let (model, report) = load(&config, "swin_micro.pth", Some(&map));
    assert_eq!(report.head, HeadLoad::Mapped { file_classes: 10 });
    assert_eq!(report.loaded, MICRO_TENSORS);
    let official = numbers(&f["micro"]["logits"]);
    let want: Vec<f32> = (0..2)
        .flat_map(|n| map.iter().map(move |&c| (n, c)))
        .map(|(n, c)| official[n * 10 + c])
        .collect();
    assert_close("mapped logits", &host(model.forward(images(2, 56))), &want);

    // The map must name one checkpoint row per model class.
    for bad in [&[1usize, 2, 3][..], &[1, 2, 3, 10]] {
        let model = config.init::<Flex>(&Default::default());
        let e = load_swin_pretrained(model, &fixtures().join("swin_micro.pth"), Some(bad)).unwrap_err();
        assert!(matches!(e, PackageError::Weights { .. }), "{e}");
        assert!(e.to_string().contains("class map"), "{e}");
    }
}

/// Another class count and no map: the head is zero, everything else loads.
#[test]
fn another_class_count_zeroes_the_head() {
    let f = fixture();
    let mut config = config(&f["micro"]["config"]);
    config.num_classes = 5;
    let (model, report) = load(&config, "swin_micro.pth", None);
    assert_eq!(report.head, HeadLoad::Reinitialised { file_classes: 10 });
    assert_eq!(report.loaded, MICRO_TENSORS - 2);
    assert!(report.missing.is_empty(), "{report}");
    assert!(report.to_string().contains("re-initialised the head"), "{report}");
    let x = images(2, 56);
    assert_close(
        "features",
        &host(model.forward_features(x.clone())),
        &numbers(&f["micro"]["features"]),
    );
    assert!(host(model.forward(x)).iter().all(|&v| v == 0.0));
}

/// Other head counts in stage 0 (1 instead of 2; the channels are the same): its tables keep
/// the model's own values, everything else loads.
#[test]
fn other_head_counts_keep_the_model_s_tables() {
    let f = fixture();
    let mut config = config(&f["micro"]["config"]);
    config.num_heads = vec![1, 4];
    let fresh = config.init::<Flex>(&Default::default());
    let own = host(fresh.layers[0].blocks[1].attn.relative_position_bias_table.val());
    let (model, report) = load_swin_pretrained(fresh, &fixtures().join("swin_micro.pth"), None).unwrap();
    let kept: Vec<String> = (0..2)
        .map(|b| format!("layers.0.blocks.{b}.attn.relative_position_bias_table"))
        .collect();
    assert_eq!(report.kept_tables, kept);
    assert_eq!(report.loaded, MICRO_TENSORS - 2);
    assert!(report.missing.is_empty() && report.unexpected.is_empty(), "{report}");
    assert_eq!(
        host(model.layers[0].blocks[1].attn.relative_position_bias_table.val()),
        own
    );
}

/// Depths other than the checkpoint's: missing and unexpected blocks are reported (as the
/// official `strict=False` load), not errors.
#[test]
fn missing_and_unexpected_tensors_are_reported() {
    let f = fixture();
    let mut config = config(&f["micro"]["config"]);
    config.depths = vec![2, 3];
    let (_, report) = load(&config, "swin_micro.pth", None);
    assert_eq!(report.missing.len(), 13);
    assert!(
        report.missing.iter().all(|k| k.starts_with("layers.1.blocks.2.")),
        "{report}"
    );
    assert!(report.missing.contains(&"layers.1.blocks.2.norm1.weight".to_string()));
    assert!(report.to_string().contains("missing from the file"), "{report}");

    config.depths = vec![2, 1];
    let (_, report) = load(&config, "swin_micro.pth", None);
    assert_eq!(report.unexpected.len(), 13);
    assert!(
        report.unexpected.iter().all(|k| k.starts_with("layers.1.blocks.1.")),
        "{report}"
    );
    assert_eq!(report.loaded, MICRO_TENSORS - 13);
}

#[test]
fn unusable_files_are_named_errors() {
    let f = fixture();
    let file = fixtures().join("swin_micro.pth");
    let mut config = config(&f["micro"]["config"]);
    config.embed_dim = 16;
    let e = load_swin_pretrained(config.init::<Flex>(&Default::default()), &file, None).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PackageError::Weights { .. }), "{msg}");
    assert!(
        msg.contains("swin_micro.pth")
            && msg.contains("head.weight (file [10, 64], model [10, 32])")
            && msg.contains("layers.0.blocks.0.attn.qkv.weight (file [96, 32], model [48, 16])")
            && msg.contains(" and 50 more"),
        "{msg}"
    );

    let small = SwinConfig {
        img_size: 56,
        ..SwinConfig::new(32, &[2, 2], &[2, 4], 10)
    };
    let dir = tempfile::tempdir().unwrap();
    let e = load_swin_pretrained(
        small.init::<Flex>(&Default::default()),
        &dir.path().join("nope.pth"),
        None,
    )
    .unwrap_err();
    assert!(
        matches!(e, PackageError::Io { .. }) && e.to_string().contains("nope.pth"),
        "{e}"
    );
    let broken = dir.path().join("broken.pth");
    std::fs::write(&broken, b"not a pickle").unwrap();
    let e = load_swin_pretrained(small.init::<Flex>(&Default::default()), &broken, None).unwrap_err();
    assert!(
        matches!(e, PackageError::Weights { .. }) && e.to_string().contains("broken.pth"),
        "{e}"
    );
}
