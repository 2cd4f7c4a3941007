//! PyTorch's tensor names for kiln's modules, and the completeness check of a load.
//!
//! burn-store's PyTorch adapters already translate BatchNorm's `gamma`/`beta` to
//! `weight`/`bias` and transpose `Linear` weights. What is left are module paths that differ
//! from PyTorch's, renamed here by key remapping (on save kiln's path → PyTorch's key, on load
//! the reverse), one [`KeyScheme`] per architecture family:
//!
//! - torchvision (MNIST `Net`, ResNet): modules PyTorch keeps in an `nn.Sequential` are named
//!   by index, which a Rust field cannot be (`downsample.conv` ↔ `downsample.0`).
//! - YOLOX: the official `yolox` package's state_dict. kiln's `neck` is YOLOX's `backbone`
//!   (`YOLOPAFPN`, holding the `CSPDarknet` as `backbone.backbone`); a stage's `down`, `spp`
//!   and `csp` are the `nn.Sequential` entries `0`, `1` (dark5 only) and `1`/`2`; the head's
//!   per-level modules are YOLOX's per-kind lists (`levels.1.cls_pred` ↔ `cls_preds.1`); and a
//!   non-depthwise `Conv` is YOLOX's plain `BaseConv`, without the `dconv` level kiln's
//!   `Conv` always has.

use std::collections::HashSet;

use burn_store::{ApplyError, ApplyResult, KeyRemapper};

use crate::yolox::YoloxVariant;

/// kiln field paths and the PyTorch keys they are saved under (torchvision ResNet's
/// `downsample = nn.Sequential(conv1x1, BatchNorm2d)`).
const SEQUENTIAL_NAMES: [(&str, &str); 2] = [("downsample.conv", "downsample.0"), ("downsample.bn", "downsample.1")];

/// YOLOX, kiln path → PyTorch key, applied in order (regex, replacement).
const YOLOX_SAVE: [(&str, &str); 9] = [
    (r"^neck\.", "backbone."),
    (r"\.c3_(p3|p4|n3|n4)\.", ".C3_$1."),
    (r"\.dark(\d)\.down\.", ".dark$1.0."),
    (r"\.dark5\.spp\.", ".dark5.1."),
    (r"\.dark5\.csp\.", ".dark5.2."),
    (r"\.dark([234])\.csp\.", ".dark$1.1."),
    (r"^head\.levels\.(\d+)\.stem\.", "head.stems.$1."),
    (r"^head\.levels\.(\d+)\.(cls|reg)_convs\.", "head.${2}_convs.$1."),
    (r"^head\.levels\.(\d+)\.(cls|reg|obj)_pred\.", "head.${2}_preds.$1."),
];

/// YOLOX without depthwise convolutions: its `Conv` is a plain `BaseConv`.
const YOLOX_SAVE_PLAIN_CONV: (&str, &str) = (r"\.dconv\.", ".");

/// YOLOX, PyTorch key → kiln path, applied in order. The first entry gives a plain `BaseConv`
/// in a `Conv` position (a stage's down conv, a bottleneck's `conv2`, the neck's bottom-up
/// convs, the head's branch convs) kiln's `dconv` level; depthwise keys already have it.
const YOLOX_LOAD: [(&str, &str); 10] = [
    (
        r"^(backbone\.backbone\.dark\d\.0|.*\.m\.\d+\.conv2|backbone\.bu_conv[12]|head\.(?:cls|reg)_convs\.\d+\.\d+)\.(conv|bn)\.",
        "$1.dconv.$2.",
    ),
    (r"^backbone\.", "neck."),
    (r"\.C3_(p3|p4|n3|n4)\.", ".c3_$1."),
    (r"\.dark5\.1\.", ".dark5.spp."),
    (r"\.dark5\.2\.", ".dark5.csp."),
    (r"\.dark([234])\.1\.", ".dark$1.csp."),
    (r"\.dark(\d)\.0\.", ".dark$1.down."),
    (r"^head\.stems\.(\d+)\.", "head.levels.$1.stem."),
    (r"^head\.(cls|reg)_convs\.(\d+)\.", "head.levels.$2.${1}_convs."),
    (r"^head\.(cls|reg|obj)_preds\.(\d+)\.", "head.levels.$2.${1}_pred."),
];

/// Checkpoint prefixes dropped on load: a `{"state_dict": ...}` wrapper (flattened by the
/// reader to `state_dict.<key>`) and `nn.DataParallel`'s `module.`.
const DROPPED_PREFIXES: [&str; 2] = [r"^state_dict\.", r"^module\."];

/// Entries of PyTorch checkpoints that have no counterpart in burn's modules.
const IGNORED_SUFFIX: &str = ".num_batches_tracked";

/// How many names of each kind an error message lists.
const LISTED: usize = 8;

/// How one architecture family's burn module paths are named in PyTorch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyScheme {
    /// torchvision's names (MNIST `Net`, ResNet).
    Torchvision,
    /// The official YOLOX names.
    Yolox {
        /// Whether the model's `Conv`s are depthwise-separable (`dconv` + `pconv`, YOLOX-nano).
        depthwise: bool,
    },
}

impl KeyScheme {
    /// The scheme of a package's `kiln.architecture`.
    pub(crate) fn for_architecture(architecture: &str) -> Self {
        match architecture.parse::<YoloxVariant>() {
            Ok(variant) => Self::Yolox {
                depthwise: variant.multipliers().2,
            },
            Err(_) => Self::Torchvision,
        }
    }

    /// Remaps kiln's paths to PyTorch keys when saving.
    pub(crate) fn save_remapper(self) -> KeyRemapper {
        match self {
            Self::Torchvision => segment_remapper(SEQUENTIAL_NAMES, &[]),
            Self::Yolox { depthwise } => {
                let plain = (!depthwise).then_some(YOLOX_SAVE_PLAIN_CONV);
                patterns(YOLOX_SAVE.into_iter().chain(plain))
            }
        }
    }

    /// Remaps PyTorch keys (kiln packages, PyTorch checkpoints) to kiln's paths when loading.
    pub(crate) fn load_remapper(self) -> KeyRemapper {
        match self {
            Self::Torchvision => {
                segment_remapper(SEQUENTIAL_NAMES.map(|(kiln, torch)| (torch, kiln)), &DROPPED_PREFIXES)
            }
            Self::Yolox { .. } => patterns(DROPPED_PREFIXES.map(|p| (p, "")).into_iter().chain(YOLOX_LOAD)),
        }
    }

    /// Checks that a load filled every model tensor and used every checkpoint tensor. Shape
    /// errors of the `tolerated` paths (burn paths, e.g. a replaced classifier) are accepted:
    /// those tensors keep their initial values. The error lists the offending tensors by
    /// PyTorch key.
    pub(crate) fn check_load(self, result: &ApplyResult, tolerated: &[&str]) -> Result<LoadSummary, String> {
        let remapper = self.save_remapper();
        let torch_key = |path: &str| torch_key(&remapper, path);
        let mismatched: Vec<String> = result
            .errors
            .iter()
            .filter(|e| !tolerated.contains(&error_path(e)))
            .map(|e| describe(e, torch_key(error_path(e))))
            .collect();
        let missing: Vec<String> = result.missing.iter().map(|(path, _)| torch_key(path)).collect();
        // The applier reports a tensor it found under the adapter's alternative name
        // (`bn1.weight` for `bn1.gamma`) as unused as well: those were used.
        let used: HashSet<String> = result.applied.iter().map(|p| torch_param_name(p)).collect();
        let (ignored, unexpected): (Vec<&String>, Vec<&String>) = result
            .unused
            .iter()
            .filter(|key| !used.contains(*key))
            .partition(|key| key.ends_with(IGNORED_SUFFIX));
        let unexpected: Vec<String> = unexpected.into_iter().map(|k| torch_key(k)).collect();

        let problems: Vec<String> = [
            ("wrong shape or data", mismatched),
            ("missing from the file", missing),
            ("not in the model", unexpected),
        ]
        .into_iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(what, names)| format!("{what}: {}", list(&names)))
        .collect();
        if problems.is_empty() {
            Ok(LoadSummary {
                loaded: result.applied.len(),
                ignored: ignored.len(),
            })
        } else {
            Err(problems.join("; "))
        }
    }
}

/// A remapper applying the `(regex, replacement)` pairs in order.
fn patterns<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> KeyRemapper {
    KeyRemapper::from_pattern_iter(pairs).expect("the remapping patterns are valid regexes")
}

/// A remapper that first drops the `dropped` prefix patterns, then renames the dotted path
/// segments `from` to `to` wherever they occur.
fn segment_remapper<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>, dropped: &[&str]) -> KeyRemapper {
    let drops = dropped.iter().map(|p| (p.to_string(), String::new()));
    let renames = pairs
        .into_iter()
        .map(|(from, to)| (format!(r"(^|\.){}\.", from.replace('.', r"\.")), format!("${{1}}{to}.")));
    KeyRemapper::from_pattern_iter(drops.chain(renames)).expect("the remapping patterns are valid regexes")
}

/// A burn parameter path with PyTorch's parameter name (`bn1.gamma` → `bn1.weight`), as a
/// checkpoint names it after the load remapper.
fn torch_param_name(path: &str) -> String {
    let (module, param) = path.rsplit_once('.').unwrap_or(("", path));
    let param = match param {
        "gamma" => "weight",
        "beta" => "bias",
        other => other,
    };
    if module.is_empty() {
        param.to_string()
    } else {
        format!("{module}.{param}")
    }
}

/// The PyTorch key of a burn parameter path under a scheme's save remapper
/// (`layer2.0.downsample.bn.gamma` → `layer2.0.downsample.1.weight`), as the store renames it.
fn torch_key(save: &KeyRemapper, path: &str) -> String {
    save.patterns
        .iter()
        .fold(torch_param_name(path), |key, (regex, replacement)| {
            regex.replace_all(&key, replacement.as_str()).into_owned()
        })
}

/// What a complete load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoadSummary {
    /// Tensors copied into the model.
    pub loaded: usize,
    /// Checkpoint entries without a counterpart in burn (`num_batches_tracked`), skipped.
    pub ignored: usize,
}

fn error_path(e: &ApplyError) -> &str {
    match e {
        ApplyError::ShapeMismatch { path, .. }
        | ApplyError::DTypeMismatch { path, .. }
        | ApplyError::AdapterError { path, .. }
        | ApplyError::LoadError { path, .. } => path,
    }
}

/// `e` described for a message, its tensor named `key`.
fn describe(e: &ApplyError, key: String) -> String {
    match e {
        ApplyError::ShapeMismatch { expected, found, .. } => {
            format!("{key} (file {found}, model {expected}, burn layout)")
        }
        ApplyError::DTypeMismatch { expected, found, .. } => format!("{key} (file {found:?}, model {expected:?})"),
        ApplyError::AdapterError { message, .. } | ApplyError::LoadError { message, .. } => {
            format!("{key} ({message})")
        }
    }
}

fn list(names: &[String]) -> String {
    let shown = names[..names.len().min(LISTED)].join(", ");
    match names.len().saturating_sub(LISTED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burn path's PyTorch key under `scheme`, and back.
    fn round_trip(scheme: KeyScheme, path: &str) -> (String, String) {
        let key = torch_key(&scheme.save_remapper(), path);
        let back = torch_key(&scheme.load_remapper(), &key);
        (key, back)
    }

    #[test]
    fn torchvision_keys_translate_both_ways() {
        let key = |path: &str| round_trip(KeyScheme::Torchvision, path).0;
        assert_eq!(key("layer2.0.downsample.bn.gamma"), "layer2.0.downsample.1.weight");
        assert_eq!(key("layer2.0.downsample.conv.weight"), "layer2.0.downsample.0.weight");
        assert_eq!(key("bn1.beta"), "bn1.bias");
        assert_eq!(key("fc.weight"), "fc.weight");
        assert_eq!(key("gamma"), "weight");
        assert_eq!(
            round_trip(KeyScheme::Torchvision, "layer2.0.downsample.conv.weight").1,
            "layer2.0.downsample.conv.weight"
        );
        assert_eq!(
            list(&(0..10).map(|i| i.to_string()).collect::<Vec<_>>()),
            "0, 1, 2, 3, 4, 5, 6, 7 and 2 more"
        );
    }

    #[test]
    fn yolox_keys_are_the_official_ones_both_ways() {
        let plain = KeyScheme::for_architecture("yolox-s");
        let depthwise = KeyScheme::for_architecture("yolox-nano");
        assert_eq!(plain, KeyScheme::Yolox { depthwise: false });
        assert_eq!(depthwise, KeyScheme::Yolox { depthwise: true });
        assert_eq!(KeyScheme::for_architecture("resnet50"), KeyScheme::Torchvision);
        let cases = [
            (
                plain,
                "neck.backbone.stem.conv.conv.weight",
                "backbone.backbone.stem.conv.conv.weight",
            ),
            (
                plain,
                "neck.backbone.dark2.down.dconv.bn.gamma",
                "backbone.backbone.dark2.0.bn.weight",
            ),
            (
                plain,
                "neck.backbone.dark3.csp.m.2.conv2.dconv.conv.weight",
                "backbone.backbone.dark3.1.m.2.conv2.conv.weight",
            ),
            (
                plain,
                "neck.backbone.dark3.csp.m.0.conv1.bn.running_mean",
                "backbone.backbone.dark3.1.m.0.conv1.bn.running_mean",
            ),
            (
                plain,
                "neck.backbone.dark5.spp.conv2.bn.running_var",
                "backbone.backbone.dark5.1.conv2.bn.running_var",
            ),
            (
                plain,
                "neck.backbone.dark5.csp.conv3.conv.weight",
                "backbone.backbone.dark5.2.conv3.conv.weight",
            ),
            (plain, "neck.lateral_conv0.bn.beta", "backbone.lateral_conv0.bn.bias"),
            (
                plain,
                "neck.c3_p4.m.0.conv2.dconv.conv.weight",
                "backbone.C3_p4.m.0.conv2.conv.weight",
            ),
            (
                plain,
                "neck.bu_conv2.dconv.conv.weight",
                "backbone.bu_conv2.conv.weight",
            ),
            (plain, "head.levels.0.stem.conv.weight", "head.stems.0.conv.weight"),
            (
                plain,
                "head.levels.2.cls_convs.1.dconv.bn.gamma",
                "head.cls_convs.2.1.bn.weight",
            ),
            (
                plain,
                "head.levels.1.reg_convs.0.dconv.conv.weight",
                "head.reg_convs.1.0.conv.weight",
            ),
            (plain, "head.levels.0.cls_pred.weight", "head.cls_preds.0.weight"),
            (plain, "head.levels.1.reg_pred.bias", "head.reg_preds.1.bias"),
            (plain, "head.levels.2.obj_pred.weight", "head.obj_preds.2.weight"),
            (
                depthwise,
                "neck.backbone.dark2.down.dconv.conv.weight",
                "backbone.backbone.dark2.0.dconv.conv.weight",
            ),
            (
                depthwise,
                "neck.backbone.dark4.down.pconv.bn.gamma",
                "backbone.backbone.dark4.0.pconv.bn.weight",
            ),
            (
                depthwise,
                "neck.c3_n3.m.0.conv2.pconv.conv.weight",
                "backbone.C3_n3.m.0.conv2.pconv.conv.weight",
            ),
            (
                depthwise,
                "head.levels.0.cls_convs.0.dconv.conv.weight",
                "head.cls_convs.0.0.dconv.conv.weight",
            ),
        ];
        for (scheme, path, official) in cases {
            let (key, back) = round_trip(scheme, path);
            assert_eq!(key, official, "{path}");
            assert_eq!(back, torch_param_name(path), "{official}");
        }
    }
}
