//! The five ResNet depths of torchvision, by their torchvision names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of torchvision's ResNets; spelled `resnet18` … `resnet152` on the command line, in
/// JSON and in a model package's `kiln.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResNetArch {
    /// BasicBlock × [2, 2, 2, 2].
    ResNet18,
    /// BasicBlock × [3, 4, 6, 3].
    ResNet34,
    /// Bottleneck × [3, 4, 6, 3].
    ResNet50,
    /// Bottleneck × [3, 4, 23, 3].
    ResNet101,
    /// Bottleneck × [3, 8, 36, 3].
    ResNet152,
}

/// The residual block a ResNet is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convolutions (expansion 1).
    Basic,
    /// 1×1 → 3×3 → 1×1 convolutions (expansion 4).
    Bottleneck,
}

impl BlockKind {
    /// Output channels of a block per "planes" of its stage.
    pub fn expansion(self) -> usize {
        match self {
            Self::Basic => 1,
            Self::Bottleneck => 4,
        }
    }
}

impl ResNetArch {
    /// Every architecture, shallowest first.
    pub const ALL: [ResNetArch; 5] = [
        Self::ResNet18,
        Self::ResNet34,
        Self::ResNet50,
        Self::ResNet101,
        Self::ResNet152,
    ];

    /// torchvision's name, e.g. `resnet50`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ResNet18 => "resnet18",
            Self::ResNet34 => "resnet34",
            Self::ResNet50 => "resnet50",
            Self::ResNet101 => "resnet101",
            Self::ResNet152 => "resnet152",
        }
    }

    /// The block type of every stage.
    pub fn block(self) -> BlockKind {
        match self {
            Self::ResNet18 | Self::ResNet34 => BlockKind::Basic,
            _ => BlockKind::Bottleneck,
        }
    }

    /// Blocks in each of the four stages (`layer1` … `layer4`).
    pub fn layers(self) -> [usize; 4] {
        match self {
            Self::ResNet18 => [2, 2, 2, 2],
            Self::ResNet34 | Self::ResNet50 => [3, 4, 6, 3],
            Self::ResNet101 => [3, 4, 23, 3],
            Self::ResNet152 => [3, 8, 36, 3],
        }
    }

    /// Features entering the classifier `fc`: 512 × the block's expansion.
    pub fn features(self) -> usize {
        512 * self.block().expansion()
    }
}

impl fmt::Display for ResNetArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ResNetArch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Self::ALL.into_iter().find(|a| a.name() == wanted).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|a| a.name()).collect();
            format!("unknown ResNet {s:?}: expected one of {}", names.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_str_and_serde() {
        for arch in ResNetArch::ALL {
            assert_eq!(arch.to_string().parse::<ResNetArch>(), Ok(arch));
            let json = serde_json::to_string(&arch).unwrap();
            assert_eq!(json, format!("\"{arch}\""));
            assert_eq!(serde_json::from_str::<ResNetArch>(&json).unwrap(), arch);
        }
        assert_eq!("ResNet50".parse(), Ok(ResNetArch::ResNet50));
        let e = "resnet20".parse::<ResNetArch>().unwrap_err();
        assert!(
            e.contains("\"resnet20\"") && e.contains("resnet18, resnet34, resnet50, resnet101, resnet152"),
            "{e}"
        );
        assert!(serde_json::from_str::<ResNetArch>("\"resnet20\"").is_err());
    }
}
