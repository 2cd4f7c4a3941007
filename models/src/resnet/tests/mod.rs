use std::collections::BTreeSet;
use std::path::Path;

use burn::tensor::{Distribution, TensorData};
use burn_flex::Flex;
use burn_store::{ModuleSnapshot, ModuleStore, SafetensorsStore};

use super::*;

mod torch_zip;
use crate::package::{load_weights, write_package, PackageConfig, PackageError, WEIGHTS_FILE};

fn resnet(arch: ResNetArch, classes: usize) -> ResNet<Flex> {
    ResNetConfig::new(arch, classes).init(&Default::default())
}

fn images(n: usize, side: usize) -> Tensor<Flex, 4> {
    Tensor::random([n, 3, side, side], Distribution::Default, &Default::default())
}

/// Every tensor of a model by PyTorch key, as the package writes them.
fn tensors(model: &ResNet<Flex>) -> Vec<(String, TensorData)> {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("m");
    write_package(&pkg, &resnet_package_config(ResNetArch::ResNet18, &[]), model).unwrap();
    let mut store = SafetensorsStore::from_file(pkg.join(WEIGHTS_FILE));
    let snapshots = store.get_all_snapshots().unwrap();
    snapshots
        .iter()
        .map(|(k, s)| (k.clone(), s.to_data().unwrap()))
        .collect()
}

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn parameter_counts_are_torchvisions() {
    let expected = [11_689_512, 21_797_672, 25_557_032, 44_549_160, 60_192_808];
    for (arch, expected) in ResNetArch::ALL.into_iter().zip(expected) {
        let model = resnet(arch, 1000);
        assert_eq!(model.num_trainable_params(), expected, "{arch}");
        // burn's num_params also counts BatchNorm's running mean and variance (PyTorch
        // buffers): exactly as many values as BatchNorm weights and biases.
        let running: usize = model
            .collect(None, None, false)
            .iter()
            .filter(|s| s.full_path().ends_with(".running_mean") || s.full_path().ends_with(".running_var"))
            .map(|s| s.shape.num_elements())
            .sum();
        assert!(running > 0);
        assert_eq!(model.num_params(), expected + running, "{arch}");
    }
}

#[test]
fn forward_returns_logits_of_the_right_shape() {
    let model = resnet(ResNetArch::ResNet18, 2);
    assert_eq!(model.num_classes(), 2);
    let out = model.forward(images(2, 64));
    assert_eq!(out.dims(), [2, 2]);
    let values = out.into_data().to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()), "{values:?}");
    // Logits, not probabilities: rows need not sum to one.
    let model = resnet(ResNetArch::ResNet50, 5);
    assert_eq!(model.forward(images(1, 32)).dims(), [1, 5]);
}

#[test]
fn trains_on_an_autodiff_backend() {
    use burn::backend::Autodiff;
    use burn::module::AutodiffModule;
    type Ad = Autodiff<Flex>;
    let device = Default::default();
    let model = ResNetConfig::new(ResNetArch::ResNet18, 3).init::<Ad>(&device);
    let before = model.bn1.as_ref().unwrap().running_mean.value().into_data();
    let x = Tensor::<Ad, 4>::random([2, 3, 32, 32], Distribution::Default, &device);
    let grads = model.forward(x.clone()).sum().backward();
    assert!(model.fc.weight.grad(&grads).is_some());
    // Training mode updates BatchNorm's running statistics (momentum 0.1).
    assert_ne!(
        model.bn1.as_ref().unwrap().running_mean.value_sync().into_data(),
        before
    );
    let eval = model.valid();
    let x = x.inner();
    assert_eq!(eval.forward(x.clone()).into_data(), eval.forward(x).into_data());
}

/// Pooling before the stem's ReLU gives torchvision's order's logits and gradients, in
/// training and in evaluation.
#[test]
fn stem_pooling_before_relu_is_torchvisions_order() {
    use burn::backend::Autodiff;
    use burn::module::AutodiffModule;
    type Ad = Autodiff<Flex>;
    let device = Default::default();
    Ad::seed(&device, 9);
    let model = ResNetConfig::new(ResNetArch::ResNet18, 3).init::<Ad>(&device);
    let x = Tensor::<Ad, 4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let torchvision = |m: &ResNet<Ad>| {
        let stem = m.relu.forward(conv_optional_batch_norm(&m.conv1, &m.bn1, x.clone()));
        m.head(m.maxpool.forward(stem))
    };
    let floats = |t: Tensor<Flex, 4>| t.into_data().to_vec::<f32>().unwrap();
    let runs: Vec<_> = [model.forward(x.clone()), torchvision(&model)]
        .into_iter()
        .map(|out| {
            let grads = (out.clone() * out.clone()).sum().backward();
            let logits: Vec<f32> = out.into_data().to_vec().unwrap();
            (logits, floats(model.conv1.weight.grad(&grads).unwrap()))
        })
        .collect();
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].1.iter().any(|&g| g != 0.0));

    let eval = model.valid();
    let x = x.inner();
    let stem = eval
        .relu
        .forward(conv_optional_batch_norm(&eval.conv1, &eval.bn1, x.clone()));
    let want = eval.head(eval.maxpool.forward(stem));
    assert_eq!(eval.forward(x).into_data(), want.into_data());
}

/// Folding every BatchNorm once gives the unfolded evaluation's logits, for basic and
/// bottleneck blocks with projection shortcuts, after training moved the BatchNorms' weights
/// and running statistics away from their initial values; folding twice changes nothing.
#[test]
fn folded_batch_norms_give_the_same_logits() {
    use crate::fold_tests::{assert_close, batch_norms, trained, Ad};
    use burn::module::AutodiffModule;
    let device = Default::default();
    Ad::seed(&device, 4);
    for arch in [ResNetArch::ResNet18, ResNetArch::ResNet50] {
        let model = ResNetConfig::new(arch, 4).init::<Ad>(&device);
        let eval = trained(model, [4, 3, 32, 32], |m, x| m.forward(x).mean()).valid();
        let bn1 = eval.bn1.as_ref().unwrap();
        let gamma: Vec<f32> = bn1.gamma.val().into_data().to_vec().unwrap();
        let mean: Vec<f32> = bn1.running_mean.value().into_data().to_vec().unwrap();
        assert!(
            gamma.iter().any(|&g| g != 1.0) && mean.iter().any(|&m| m != 0.0),
            "{arch}: BatchNorm still at its initial state"
        );
        assert!(batch_norms(&eval) > 0);

        let x = Tensor::<Flex, 4>::random([3, 3, 40, 40], Distribution::Normal(0.0, 1.0), &device);
        let want: Vec<f32> = eval.forward(x.clone()).into_data().to_vec().unwrap();
        let folded = eval.fold_batch_norms();
        assert_eq!(batch_norms(&folded), 0, "{arch}: a BatchNorm is left");
        let got: Vec<f32> = folded.fold_batch_norms().forward(x).into_data().to_vec().unwrap();
        assert_close(&got, &want, &arch.to_string());
    }
}

fn mean_std(values: &[f32]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn initialisation_is_torchvisions() {
    let model = resnet(ResNetArch::ResNet18, 1000);
    let all = tensors(&model);
    let get = |key: &str| -> Vec<f32> {
        let (_, data) = all.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no {key}"));
        data.to_vec::<f32>().unwrap()
    };
    // kaiming_normal_(mode="fan_out", nonlinearity="relu"): std √(2 / (512 · 3 · 3)).
    let (mean, std) = mean_std(&get("layer4.0.conv2.weight"));
    let want = (2.0f64 / (512.0 * 9.0)).sqrt();
    assert!(mean.abs() < 0.01 * want, "mean {mean}");
    assert!((std / want - 1.0).abs() < 0.01, "std {std}, want {want}");
    let (_, std) = mean_std(&get("conv1.weight"));
    let want = (2.0f64 / (64.0 * 49.0)).sqrt();
    assert!((std / want - 1.0).abs() < 0.05, "conv1 std {std}, want {want}");
    // BatchNorm: weight 1, bias 0, running mean 0, running var 1.
    for (suffix, value) in [
        ("weight", 1.0),
        ("bias", 0.0),
        ("running_mean", 0.0),
        ("running_var", 1.0),
    ] {
        let key = format!("layer3.0.downsample.1.{suffix}");
        assert!(get(&key).iter().all(|&v| v == value), "{key}");
    }
    // Linear: uniform ±1/√512 for weight and bias (PyTorch's default).
    let bound = 1.0 / 512f32.sqrt();
    for key in ["fc.weight", "fc.bias"] {
        let values = get(key);
        assert!(values.iter().all(|v| v.abs() <= bound), "{key}");
    }
    let (_, std) = mean_std(&get("fc.weight"));
    assert!((std / (bound as f64 / 3f64.sqrt()) - 1.0).abs() < 0.01, "fc std {std}");
    // BatchNorm hyper-parameters.
    assert_eq!(
        (
            model.bn1.as_ref().unwrap().momentum,
            model.bn1.as_ref().unwrap().epsilon
        ),
        (0.1, 1e-5)
    );
    // The conv helper draws what it promises on a big tensor too.
    let conv = block::conv::<Flex>([256, 512], 3, 1, &Default::default());
    let (_, std) = mean_std(&conv.weight.val().into_data().to_vec::<f32>().unwrap());
    assert!((std / (2.0f64 / (512.0 * 9.0)).sqrt() - 1.0).abs() < 0.01, "{std}");
}

/// torchvision's resnet18 state_dict keys, `num_batches_tracked` aside.
fn torchvision_resnet18_keys() -> BTreeSet<String> {
    let bn = |p: &str| ["weight", "bias", "running_mean", "running_var"].map(|s| format!("{p}.{s}"));
    let mut keys: BTreeSet<String> = ["conv1.weight", "fc.weight", "fc.bias"].map(String::from).into();
    keys.extend(bn("bn1"));
    for layer in 1..=4 {
        for block in 0..2 {
            let p = format!("layer{layer}.{block}");
            keys.extend([format!("{p}.conv1.weight"), format!("{p}.conv2.weight")]);
            keys.extend(bn(&format!("{p}.bn1")));
            keys.extend(bn(&format!("{p}.bn2")));
        }
        if layer > 1 {
            keys.insert(format!("layer{layer}.0.downsample.0.weight"));
            keys.extend(bn(&format!("layer{layer}.0.downsample.1")));
        }
    }
    keys
}

#[test]
fn exports_torchvision_names_and_round_trips() {
    let model = resnet(ResNetArch::ResNet18, 3);
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("model");
    let config = resnet_package_config(ResNetArch::ResNet18, &labels(&["a", "b", "c"]));
    write_package(&pkg, &config, &model).unwrap();

    let mut store = SafetensorsStore::from_file(pkg.join(WEIGHTS_FILE));
    let keys: BTreeSet<String> = store.keys().unwrap().into_iter().collect();
    assert_eq!(keys.len(), 102);
    assert_eq!(keys, torchvision_resnet18_keys());
    for key in [
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "bn1.weight",
        "fc.weight",
    ] {
        assert!(keys.contains(key), "{key}");
    }
    assert!(!keys
        .iter()
        .any(|k| k.contains("gamma") || k.contains("beta") || k.contains("downsample.conv")));
    let fc = store.get_snapshot("fc.weight").unwrap().unwrap();
    assert_eq!(fc.shape.as_slice(), &[3, 512], "PyTorch layout [out, in]");

    let loaded = load_weights(&pkg, &config, resnet(ResNetArch::ResNet18, 3)).unwrap();
    let x = images(2, 64);
    assert_eq!(model.forward(x.clone()).into_data(), loaded.forward(x).into_data());
}

#[test]
fn package_round_trip() {
    let model = resnet(ResNetArch::ResNet18, 2);
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("model");
    let config = resnet_package_config(ResNetArch::ResNet18, &labels(&["cat", "dog"]));
    let written = write_package(&pkg, &config, &model).unwrap();

    let read = PackageConfig::read(&pkg).unwrap();
    assert_eq!(read, written);
    let v = serde_json::to_value(&read).unwrap();
    assert_eq!(v["kiln"]["architecture"], "resnet18");
    assert_eq!(v["kiln"]["labels"], serde_json::json!(["cat", "dog"]));
    let input = &read.kiln.input;
    assert_eq!(
        (input.channels, input.height, input.width, input.resize_shorter),
        (3, 224, 224, 256)
    );
    assert_eq!(
        (input.mean.as_slice(), input.std.as_slice()),
        (&[0.485, 0.456, 0.406][..], &[0.229, 0.224, 0.225][..])
    );
    let arch: ResNetArch = read.kiln.architecture.parse().unwrap();
    let fresh = ResNetConfig::new(arch, read.kiln.labels.len()).init(&Default::default());
    let loaded = load_weights(&pkg, &read, fresh).unwrap();
    let x = images(1, 64);
    assert_eq!(model.forward(x.clone()).into_data(), loaded.forward(x).into_data());

    // A resnet18 package does not load into a resnet34: the error names the file and tensors.
    let e = load_weights(&pkg, &read, resnet(ResNetArch::ResNet34, 2)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PackageError::Weights { .. }), "{msg}");
    assert!(
        msg.contains("model.safetensors") && msg.contains("missing from the file: layer1.2.bn1.bias"),
        "{msg}"
    );
}

fn assert_same_except_fc(a: &[(String, TensorData)], b: &[(String, TensorData)]) {
    assert_eq!(a.len(), b.len());
    for ((ka, da), (kb, db)) in a.iter().zip(b) {
        assert_eq!(ka, kb);
        if !ka.starts_with("fc.") {
            assert_eq!(da, db, "{ka}");
        }
    }
}

fn export(model: &ResNet<Flex>, dir: &Path) -> std::path::PathBuf {
    let pkg = dir.join("pretrained");
    write_package(&pkg, &resnet_package_config(ResNetArch::ResNet18, &[]), model).unwrap();
    pkg.join(WEIGHTS_FILE)
}

#[test]
fn pretrained_weights_load_with_a_new_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let imagenet = resnet(ResNetArch::ResNet18, 1000);
    let file = export(&imagenet, dir.path());

    let fresh = resnet(ResNetArch::ResNet18, 2);
    let fresh_tensors = tensors(&fresh);
    let (tuned, report) = load_pretrained(fresh, &file).unwrap();
    assert_eq!(
        report,
        PretrainedReport {
            loaded: 100,
            ignored: 0,
            replaced_classifier: Some(1000)
        }
    );
    assert!(report.to_string().contains("1000 classes"), "{report}");
    let tuned_tensors = tensors(&tuned);
    assert_same_except_fc(&tensors(&imagenet), &tuned_tensors);
    // The classifier is the model's own fresh one.
    let fc = |t: &[(String, TensorData)]| {
        t.iter()
            .filter(|(k, _)| k.starts_with("fc."))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(fc(&tuned_tensors), fc(&fresh_tensors));

    // Same class count: everything loads, outputs are identical.
    let (same, report) = load_pretrained(resnet(ResNetArch::ResNet18, 1000), &file).unwrap();
    assert_eq!((report.loaded, report.replaced_classifier), (102, None));
    let x = images(1, 64);
    assert_eq!(imagenet.forward(x.clone()).into_data(), same.forward(x).into_data());
}

#[test]
fn bad_pretrained_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = export(&resnet(ResNetArch::ResNet18, 1000), dir.path());

    let e = load_pretrained(resnet(ResNetArch::ResNet34, 1000), &file).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PackageError::Weights { .. }), "{msg}");
    assert!(
        msg.contains(&file.display().to_string()) && msg.contains("missing from the file: layer1.2.bn1.bias"),
        "{msg}"
    );
    assert!(
        msg.contains("and ") && msg.contains(" more"),
        "long lists are shortened: {msg}"
    );

    let e = load_pretrained(resnet(ResNetArch::ResNet18, 2), &dir.path().join("nope.pth")).unwrap_err();
    assert!(
        matches!(e, PackageError::Io { .. }) && e.to_string().contains("nope.pth"),
        "{e}"
    );

    let other = dir.path().join("weights.onnx");
    std::fs::write(&other, b"x").unwrap();
    let e = load_pretrained(resnet(ResNetArch::ResNet18, 2), &other).unwrap_err();
    assert!(
        matches!(e, PackageError::Unsupported { .. }) && e.to_string().contains(".pth"),
        "{e}"
    );

    let broken = dir.path().join("broken.safetensors");
    std::fs::write(&broken, &std::fs::read(&file).unwrap()[..1000]).unwrap();
    let e = load_pretrained(resnet(ResNetArch::ResNet18, 2), &broken).unwrap_err();
    assert!(
        matches!(e, PackageError::Weights { .. }) && e.to_string().contains("broken.safetensors"),
        "{e}"
    );

    // A wrong shape and a non-float32 tensor are named.
    let bad = dir.path().join("bad.pth");
    let conv = TensorData::new(vec![0f32; 64 * 3 * 3 * 3], [64, 3, 3, 3]);
    torch_zip::save(&bad, &[("conv1.weight".into(), conv.clone())], None);
    let e = load_pretrained(resnet(ResNetArch::ResNet18, 2), &bad).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("bad.pth") && msg.contains("wrong shape or data: conv1.weight (file [64, 3, 3, 3]"),
        "{msg}"
    );
    assert!(msg.contains("missing from the file: "), "{msg}");
    let counts = TensorData::new(vec![1i64; 64], [64]);
    torch_zip::save(
        &bad,
        &[("conv1.weight".into(), conv), ("bn1.weight".into(), counts)],
        None,
    );
    let e = load_pretrained(resnet(ResNetArch::ResNet18, 2), &bad).unwrap_err();
    assert!(
        e.to_string()
            .contains("only float32 checkpoints are supported: bn1.weight (I64)"),
        "{e}"
    );

    let broken = dir.path().join("broken.pth");
    std::fs::write(&broken, b"not a pickle").unwrap();
    let e = load_pretrained(resnet(ResNetArch::ResNet18, 2), &broken).unwrap_err();
    assert!(
        matches!(e, PackageError::Weights { .. }) && e.to_string().contains("broken.pth"),
        "{e}"
    );
}

#[test]
fn torchvision_pth_checkpoints_load() {
    let model = resnet(ResNetArch::ResNet18, 10);
    let mut entries = tensors(&model);
    // torchvision's BatchNorm2d also saves an int64 scalar `num_batches_tracked`.
    let counters: Vec<_> = entries
        .iter()
        .filter_map(|(k, _)| k.strip_suffix(".running_var"))
        .map(|bn| {
            (
                format!("{bn}.num_batches_tracked"),
                TensorData::new(vec![7i64], [0usize; 0]),
            )
        })
        .collect();
    assert_eq!(counters.len(), 20);
    entries.extend(counters);
    let dir = tempfile::tempdir().unwrap();

    // torchvision's hub files are a plain state_dict; here with another class count.
    let plain = dir.path().join("resnet18-plain.pth");
    torch_zip::save(&plain, &entries, None);
    let (tuned, report) = load_pretrained(resnet(ResNetArch::ResNet18, 2), &plain).unwrap();
    assert_eq!(
        (report.loaded, report.ignored, report.replaced_classifier),
        (100, 20, Some(10))
    );
    assert_same_except_fc(&tensors(&model), &tensors(&tuned));

    // A training checkpoint's `{"state_dict": ...}` wrapper is accepted too.
    let wrapped = dir.path().join("resnet18-checkpoint.pth");
    torch_zip::save(&wrapped, &entries, Some("state_dict"));
    let (loaded, report) = load_pretrained(resnet(ResNetArch::ResNet18, 10), &wrapped).unwrap();
    assert_eq!(
        report,
        PretrainedReport {
            loaded: 102,
            ignored: 20,
            replaced_classifier: None
        }
    );
    let x = images(1, 64);
    assert_eq!(model.forward(x.clone()).into_data(), loaded.forward(x).into_data());
}
