//! PyTorch's tensor names for kiln's modules, and the completeness check of a load.
//!
//! burn-store's PyTorch adapters already translate BatchNorm's `gamma`/`beta` to
//! `weight`/`bias` and transpose `Linear` weights. What is left are modules PyTorch keeps in an
//! `nn.Sequential` (named by index, which a Rust field cannot be), renamed here by key
//! remapping: on save kiln's path → PyTorch's key, on load the reverse.

use std::collections::HashSet;

use burn_store::{ApplyError, ApplyResult, KeyRemapper};

/// kiln field paths and the PyTorch keys they are saved under (torchvision ResNet's
/// `downsample = nn.Sequential(conv1x1, BatchNorm2d)`).
const SEQUENTIAL_NAMES: [(&str, &str); 2] = [("downsample.conv", "downsample.0"), ("downsample.bn", "downsample.1")];

/// Checkpoint prefixes dropped on load: a `{"state_dict": ...}` wrapper (flattened by the
/// reader to `state_dict.<key>`) and `nn.DataParallel`'s `module.`.
const DROPPED_PREFIXES: [&str; 2] = [r"^state_dict\.", r"^module\."];

/// Entries of PyTorch checkpoints that have no counterpart in burn's modules.
const IGNORED_SUFFIX: &str = ".num_batches_tracked";

/// How many names of each kind an error message lists.
const LISTED: usize = 8;

/// Remaps kiln's paths to PyTorch keys when saving.
pub(crate) fn save_remapper() -> KeyRemapper {
    segment_remapper(SEQUENTIAL_NAMES, &[])
}

/// Remaps PyTorch keys (torchvision or kiln checkpoints) to kiln's paths when loading.
pub(crate) fn load_remapper() -> KeyRemapper {
    segment_remapper(SEQUENTIAL_NAMES.map(|(kiln, torch)| (torch, kiln)), &DROPPED_PREFIXES)
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
/// checkpoint names it after [`load_remapper`].
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

/// The PyTorch key of a burn parameter path (`layer2.0.downsample.bn.gamma` →
/// `layer2.0.downsample.1.weight`), for messages.
pub(crate) fn torch_key(path: &str) -> String {
    let mut key = format!(".{}.", torch_param_name(path));
    for (kiln, torch) in SEQUENTIAL_NAMES {
        key = key.replace(&format!(".{kiln}."), &format!(".{torch}."));
    }
    key.trim_matches('.').to_string()
}

/// What a complete load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoadSummary {
    /// Tensors copied into the model.
    pub loaded: usize,
    /// Checkpoint entries without a counterpart in burn (`num_batches_tracked`), skipped.
    pub ignored: usize,
}

/// Checks that a load filled every model tensor and used every checkpoint tensor. Shape errors
/// of the `tolerated` paths (burn paths, e.g. a replaced classifier) are accepted: those
/// tensors keep their initial values. The error lists the offending tensors by PyTorch key.
pub(crate) fn check_load(result: &ApplyResult, tolerated: &[&str]) -> Result<LoadSummary, String> {
    let mismatched: Vec<String> = result
        .errors
        .iter()
        .filter(|e| !tolerated.contains(&error_path(e)))
        .map(describe)
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

fn error_path(e: &ApplyError) -> &str {
    match e {
        ApplyError::ShapeMismatch { path, .. }
        | ApplyError::DTypeMismatch { path, .. }
        | ApplyError::AdapterError { path, .. }
        | ApplyError::LoadError { path, .. } => path,
    }
}

fn describe(e: &ApplyError) -> String {
    match e {
        ApplyError::ShapeMismatch { path, expected, found } => {
            format!("{} (file {found}, model {expected}, burn layout)", torch_key(path))
        }
        ApplyError::DTypeMismatch { path, expected, found } => {
            format!("{} (file {found:?}, model {expected:?})", torch_key(path))
        }
        ApplyError::AdapterError { path, message } | ApplyError::LoadError { path, message } => {
            format!("{} ({message})", torch_key(path))
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

    #[test]
    fn keys_translate_both_ways() {
        assert_eq!(
            torch_key("layer2.0.downsample.bn.gamma"),
            "layer2.0.downsample.1.weight"
        );
        assert_eq!(
            torch_key("layer2.0.downsample.conv.weight"),
            "layer2.0.downsample.0.weight"
        );
        assert_eq!(torch_key("bn1.beta"), "bn1.bias");
        assert_eq!(torch_key("fc.weight"), "fc.weight");
        assert_eq!(torch_key("gamma"), "weight");
        assert_eq!(
            list(&(0..10).map(|i| i.to_string()).collect::<Vec<_>>()),
            "0, 1, 2, 3, 4, 5, 6, 7 and 2 more"
        );
    }
}
