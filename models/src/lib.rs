//! kiln-models: the networks kiln trains and serves, and the model package format that
//! connects `kiln-train` to `kiln-serve`.
#![warn(missing_docs)]

pub mod checksum;
pub mod cpu;
pub mod device;
mod dropout;
#[cfg(test)]
mod fold_tests;
pub mod gpu;
pub mod net;
mod norm;
pub mod package;
mod params;
mod pool;
pub mod resnet;
pub mod swin;
pub mod tensor_check;
mod torch_keys;
pub mod yolox;

pub use device::DeviceChoice;
pub use dropout::dropout;
pub use net::{net_package_config, Net, NetConfig, NET_ARCHITECTURE};
pub use norm::{batch_norm, layer_norm};
pub use package::{
    load_weights, write_package, write_package_with, DetectionSpec, PackageConfig, PackageError, ParitySample,
};
pub use pool::max_pool_relu;
pub use resnet::{load_pretrained, resnet_package_config, PretrainedReport, ResNet, ResNetArch, ResNetConfig};
pub use swin::{
    load_swin_pretrained, swin_package_config, SwinConfig, SwinPretrainedReport, SwinTransformer, SWIN_ARCHITECTURE,
};
pub use yolox::{yolox_package_config, Yolox, YoloxLoss, YoloxVariant};
