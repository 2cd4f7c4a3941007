use burn::backend::Autodiff;
use burn_flex::Flex;
use burn_store::ModuleSnapshot;

use super::*;

/// The official parameter counts with 1,000 classes: Swin-T's 28,288,354 as the official
/// repository states it; Swin-S, -B and -L are timm's 49.6 M, 87.8 M and 196.5 M, here to the
/// parameter from the sum of the official layers' shapes (which gives Swin-T's exact figure).
#[test]
fn parameter_counts_are_the_official_ones() {
    let device = Default::default();
    for (name, config, expected) in [
        ("tiny", SwinConfig::tiny(1000), 28_288_354),
        ("small", SwinConfig::small(1000), 49_606_258),
        ("base", SwinConfig::base(1000), 87_768_224),
        ("large", SwinConfig::large(1000), 196_532_476),
    ] {
        let model = config.init::<Flex>(&device);
        assert_eq!(model.num_trainable_params(), expected, "{name}");
    }
}

/// A small configuration (embed 32, depths [2, 2], heads [2, 4], window 7, 56×56 input).
fn small_config() -> SwinConfig {
    SwinConfig {
        img_size: 56,
        num_classes: 10,
        ..SwinConfig::new(32, &[2, 2], &[2, 4], 10)
    }
}

#[test]
fn keys_are_the_official_state_dict_names() {
    let device = Default::default();
    let model = small_config().init::<Flex>(&device);
    let keys: Vec<String> = model.collect(None, None, false).iter().map(|s| s.full_path()).collect();
    for key in [
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "patch_embed.norm.gamma",
        "layers.0.blocks.0.norm1.gamma",
        "layers.0.blocks.0.attn.relative_position_bias_table",
        "layers.0.blocks.1.attn.qkv.weight",
        "layers.0.blocks.1.attn.qkv.bias",
        "layers.0.blocks.1.attn.proj.weight",
        "layers.0.blocks.1.mlp.fc1.weight",
        "layers.0.blocks.1.mlp.fc2.bias",
        "layers.0.downsample.reduction.weight",
        "layers.0.downsample.norm.beta",
        "layers.1.blocks.1.norm2.gamma",
        "norm.gamma",
        "head.weight",
        "head.bias",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
    }
    // No bias on the merging projection; no merging after the last stage.
    assert!(!keys.iter().any(|k| k == "layers.0.downsample.reduction.bias"));
    assert!(!keys.iter().any(|k| k.starts_with("layers.1.downsample")));
    // Our formula for this configuration, as for the official ones above.
    assert_eq!(model.num_trainable_params(), 138_262);
}

#[test]
fn logits_have_the_class_count_and_training_runs_backward() {
    let device = Default::default();
    let model = small_config().init::<Autodiff<Flex>>(&device);
    let x = Tensor::<Autodiff<Flex>, 4>::random([2, 3, 56, 56], Distribution::Default, &device);
    let logits = model.forward(x);
    assert_eq!(logits.dims(), [2, 10]);
    let grads = logits.sum().backward();
    let table = model.layers[0].blocks[1].attn.relative_position_bias_table.val();
    let grad = table.grad(&grads).expect("the bias table is trained");
    assert!(grad.abs().sum().into_scalar() > 0.0);
}

#[test]
fn bad_shapes_are_named_errors() {
    let mut c = small_config();
    c.img_size = 60;
    assert!(
        c.validate().unwrap_err().contains("WINDOW_SIZE 7"),
        "{:?}",
        c.validate()
    );
    let mut c = small_config();
    c.num_heads = vec![3, 4];
    assert!(c.validate().unwrap_err().contains("NUM_HEADS 3"));
    let mut c = small_config();
    c.depths = vec![2];
    assert!(c.validate().unwrap_err().contains("same number of stages"));
}

/// Window attention over one 2×2 window, against attention written out by hand from the
/// layer's own weights: softmax(q·kᵀ/√d + bias[index]) · v, then the projection.
#[test]
fn window_attention_is_softmax_attention_with_the_relative_bias() {
    let device = Default::default();
    let (dim, heads, window) = (4, 2, 2);
    let attn = WindowAttention::<Flex>::new(dim, window, heads, true, &device);
    let x = Tensor::<Flex, 3>::random([1, 4, dim], Distribution::Default, &device);
    let got: Vec<f32> = attn.forward(x.clone(), None).into_data().to_vec().unwrap();

    let host = |t: Tensor<Flex, 2>| -> Vec<f32> { t.into_data().to_vec().unwrap() };
    let xs: Vec<f32> = x.reshape([4, dim]).into_data().to_vec().unwrap();
    // burn's Linear weight is [in, out].
    let (wq, bq) = (host(attn.qkv.weight.val()), attn.qkv.bias.as_ref().unwrap().val());
    let bq: Vec<f32> = bq.into_data().to_vec().unwrap();
    let (wp, bp) = (host(attn.proj.weight.val()), attn.proj.bias.as_ref().unwrap().val());
    let bp: Vec<f32> = bp.into_data().to_vec().unwrap();
    let table = host(attn.relative_position_bias_table.val());
    let index = window::relative_position_index(window);
    let linear = |input: &[f32], w: &[f32], b: &[f32], d_in: usize, d_out: usize| -> Vec<f64> {
        (0..d_out)
            .map(|o| {
                b[o] as f64
                    + (0..d_in)
                        .map(|i| input[i] as f64 * w[i * d_out + o] as f64)
                        .sum::<f64>()
            })
            .collect()
    };
    let qkv: Vec<Vec<f64>> = (0..4)
        .map(|t| linear(&xs[t * dim..(t + 1) * dim], &wq, &bq, dim, 3 * dim))
        .collect();
    let d = dim / heads;
    let mut out = vec![vec![0.0f64; dim]; 4];
    for h in 0..heads {
        for q in 0..4 {
            let scores: Vec<f64> = (0..4)
                .map(|k| {
                    let dot: f64 = (0..d).map(|i| qkv[q][h * d + i] * qkv[k][dim + h * d + i]).sum();
                    dot / (d as f64).sqrt() + table[index[q * 4 + k] as usize * heads + h] as f64
                })
                .collect();
            let top = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
            let z: f64 = e.iter().sum();
            for i in 0..d {
                out[q][h * d + i] = (0..4).map(|k| e[k] / z * qkv[k][2 * dim + h * d + i]).sum();
            }
        }
    }
    for t in 0..4 {
        let o32: Vec<f32> = out[t].iter().map(|&v| v as f32).collect();
        let want = linear(&o32, &wp, &bp, dim, dim);
        for (c, w) in want.iter().enumerate() {
            let g = got[t * dim + c] as f64;
            assert!((g - w).abs() < 1e-4, "token {t} channel {c}: {g} vs {w}");
        }
    }
}

/// Patch merging concatenates (even row, even column), (odd, even), (even, odd), (odd, odd).
#[test]
fn patch_merging_orders_the_neighbours_as_the_official_code() {
    let device = Default::default();
    // One image, a 2×4 map of two channels: position (row, column) holds 10·row + column
    // in channel 0 and its negative in channel 1.
    let values: Vec<f32> = (0..2)
        .flat_map(|r| (0..4).flat_map(move |c| [(10 * r + c) as f32, -((10 * r + c) as f32)]))
        .collect();
    let x = Tensor::<Flex, 1>::from_floats(values.as_slice(), &device).reshape([1, 8, 2]);
    let merged: Vec<f32> = block::neighbours(x, [2, 4]).into_data().to_vec().unwrap();
    // Per neighbourhood: (0,c), (1,c), (0,c+1), (1,c+1), each with its two channels.
    assert_eq!(
        merged,
        vec![
            0.0, -0.0, 10.0, -10.0, 1.0, -1.0, 11.0, -11.0, //
            2.0, -2.0, 12.0, -12.0, 3.0, -3.0, 13.0, -13.0,
        ]
    );
}

/// The official grouping on a small model with APE: the decayed tensors are exactly the patch
/// convolution's weight and every linear layer's weight.
#[test]
fn weight_decay_spares_norms_biases_and_position_parameters() {
    let device = Default::default();
    let config = SwinConfig {
        ape: true,
        ..small_config()
    };
    let model = config.init::<Flex>(&device);
    let mut decayed: Vec<String> = model
        .collect(None, None, false)
        .iter()
        .filter(|s| takes_weight_decay(&s.full_path(), s.shape.num_dims()))
        .map(|s| s.full_path())
        .collect();
    decayed.sort();
    let mut want = vec!["patch_embed.proj.weight".to_string(), "head.weight".to_string()];
    for (stage, depth) in [(0, 2), (1, 2)] {
        for block in 0..depth {
            for layer in ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"] {
                want.push(format!("layers.{stage}.blocks.{block}.{layer}.weight"));
            }
        }
    }
    want.push("layers.0.downsample.reduction.weight".into());
    want.sort();
    assert_eq!(decayed, want);
    assert!(!takes_weight_decay("absolute_pos_embed", 3));
    assert!(!takes_weight_decay(
        "layers.0.blocks.0.attn.relative_position_bias_table",
        2
    ));
}

/// The cyclic shift of the shifted blocks relies on burn's `roll(s)` being
/// `torch.roll(-s)`: position `i` takes position `i + s`.
#[test]
fn burn_roll_moves_elements_towards_lower_indices() {
    let x = Tensor::<Flex, 1, Int>::arange(0..5, &Default::default());
    let rolled: Vec<i64> = x.roll(&[2], &[0]).into_data().convert::<i64>().to_vec().unwrap();
    assert_eq!(rolled, vec![2, 3, 4, 0, 1]);
}

#[path = "../resnet/tests/torch_zip.rs"]
mod torch_zip;

/// The official `data/map22kto1k.txt`: 1,000 distinct rows of the 21,841-class head.
#[test]
fn the_22k_to_1k_map_is_the_official_file() {
    let map = imagenet_22k_to_1k();
    assert_eq!(map.len(), 1000);
    assert_eq!((map[0], map[1], map[2], map[999]), (359, 368, 460, 21817));
    assert!(map.iter().all(|&r| r < CLASSES_22K));
    let distinct: std::collections::HashSet<_> = map.iter().collect();
    assert_eq!(distinct.len(), 1000);
}

/// A bare state dict with a 21,841-class head loads into a 1,000-class model through the
/// official map: class `i` gets the checkpoint's row `map[i]`.
#[test]
fn a_22k_head_loads_into_a_1k_model_through_the_official_map() {
    let device = Default::default();
    let source = SwinConfig {
        num_classes: CLASSES_22K,
        ..small_config()
    }
    .init::<Flex>(&device);
    let features = 64;
    let mut entries: Vec<(String, TensorData)> = source
        .collect(None, Some(Box::new(burn_store::BurnToPyTorchAdapter)), true)
        .iter()
        .map(|s| (s.full_path(), s.to_data().unwrap()))
        .collect();
    // Row r of the head: weight r·64 + c, bias r (exact in float32).
    for (key, data) in entries.iter_mut() {
        if key == "head.weight" {
            let values: Vec<f32> = (0..CLASSES_22K * features).map(|v| v as f32).collect();
            *data = TensorData::new(values, [CLASSES_22K, features]);
        } else if key == "head.bias" {
            let values: Vec<f32> = (0..CLASSES_22K).map(|v| v as f32).collect();
            *data = TensorData::new(values, [CLASSES_22K]);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("swin_22k.pth");
    torch_zip::save(&file, &entries, None);

    let model = SwinConfig {
        num_classes: 1000,
        ..small_config()
    }
    .init::<Flex>(&device);
    let (model, report) = load_swin_pretrained(model, &file, None).unwrap();
    assert_eq!(
        report.head,
        HeadLoad::Mapped {
            file_classes: CLASSES_22K
        }
    );
    assert!(report.missing.is_empty() && report.unexpected.is_empty(), "{report}");
    let map = imagenet_22k_to_1k();
    let bias: Vec<f32> = model.head.bias.unwrap().val().into_data().to_vec().unwrap();
    assert!(bias.iter().zip(map).all(|(&b, &r)| b == r as f32));
    // burn's Linear weight is [in, out].
    let weight: Vec<f32> = model.head.weight.val().into_data().to_vec().unwrap();
    for c in [0, 17, 63] {
        for (i, &r) in map.iter().enumerate() {
            assert_eq!(weight[c * 1000 + i], (r * features + c) as f32);
        }
    }
}

/// Bicubic resizing keeps a grid of the same size and a constant grid unchanged (the weights
/// sum to one, and sample the point itself at offset 0).
#[test]
fn bicubic_resizing_keeps_identity_and_constants() {
    let grid: Vec<f32> = (0..5 * 5 * 2).map(|v| (v as f32 * 0.37).sin()).collect();
    let same = bicubic_resize(&grid, 2, 5, 5);
    assert!(same.iter().zip(&grid).all(|(a, b)| (a - b).abs() < 1e-6));
    let constant = bicubic_resize(&[0.25; 3 * 3 * 4], 4, 3, 7);
    assert!(constant.iter().all(|&v| (v - 0.25).abs() < 1e-6));
}

/// Every parameter's gradient in `a` equals the one in `b`, within `tol` of the largest
/// magnitude of each tensor; every parameter has one.
fn assert_same_grads<B: burn::tensor::backend::AutodiffBackend>(
    model: &SwinTransformer<B>,
    a: &burn::optim::GradientsParams,
    b: &burn::optim::GradientsParams,
    tol: f32,
) {
    struct Compare<'a> {
        a: &'a burn::optim::GradientsParams,
        b: &'a burn::optim::GradientsParams,
        tol: f32,
        seen: usize,
    }
    impl<B: burn::tensor::backend::AutodiffBackend> burn::module::ModuleVisitor<B> for Compare<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let a = self
                .a
                .get::<B::InnerBackend, D>(param.id)
                .expect("a gradient in the first set");
            let b = self
                .b
                .get::<B::InnerBackend, D>(param.id)
                .expect("a gradient in the second set");
            let scale = b.clone().abs().max().into_scalar().elem::<f32>().max(1e-12);
            let diff = (a - b).abs().max().into_scalar().elem::<f32>();
            assert!(diff <= self.tol * scale, "{:?}: {diff} over {scale}", param.id);
            self.seen += 1;
        }
    }
    let mut compare = Compare { a, b, tol, seen: 0 };
    model.visit(&mut compare);
    assert_eq!(compare.seen, a.len());
}

/// Checkpointed training (recomputing each block in the backward pass) gives the gradients of
/// the plain backward pass, with and without the absolute position embedding, and with
/// stochastic depth drawing the same samples as the plain forward from the same seed.
#[test]
fn recomputed_blocks_give_the_plain_gradients() {
    type B = Autodiff<Flex>;
    let device = Default::default();
    for (ape, drop_path_rate) in [(false, 0.0), (true, 0.3)] {
        let config = SwinConfig {
            ape,
            drop_path_rate,
            ..small_config()
        };
        let model = config.init::<B>(&device);
        let x = Tensor::<B, 4>::random([3, 3, 56, 56], Distribution::Default, &device);
        let targets = Tensor::<B, 1, Int>::from_ints([1, 7, 3], &device);
        let loss_of = |logits: Tensor<B, 2>| {
            burn::nn::loss::CrossEntropyLossConfig::new()
                .init(&device)
                .forward(logits, targets.clone())
        };
        B::seed(&device, 11);
        let plain_loss = loss_of(model.forward(x.clone()));
        let plain = burn::optim::GradientsParams::from_grads(plain_loss.backward(), &model);
        B::seed(&device, 11);
        let (loss, recomputed) = model.loss_and_grads_recomputed(x.clone(), 1.0, loss_of);
        let (a, b) = (loss.into_scalar(), plain_loss.into_scalar());
        assert!((a - b).abs() <= 1e-6 * b.abs(), "loss {a} against {b}");
        assert_same_grads(&model, &recomputed, &plain, 1e-4);
        // A multiplier (a loss scale) scales the gradients, the first layer's and the last's.
        B::seed(&device, 11);
        let (_, doubled) = model.loss_and_grads_recomputed(x, 2.0, loss_of);
        let values = |g: &burn::optim::GradientsParams, id| -> Vec<f32> {
            let data = match g.get::<Flex, 2>(id) {
                Some(t) => t.into_data(),
                None => g.get::<Flex, 4>(id).unwrap().into_data(),
            };
            data.to_vec().unwrap()
        };
        for id in [model.head.weight.id, model.patch_embed.proj.weight.id] {
            let (got, want) = (values(&doubled, id), values(&plain, id));
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (g, w) in got.iter().zip(&want) {
                assert!((g - 2.0 * w).abs() <= 2e-4 * scale, "{g} against twice {w}");
            }
        }
    }
}
