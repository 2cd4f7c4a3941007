//! One module per training job; each is a function from its flags to a model package, on the
//! shared run scaffold ([`crate::run`]).

pub mod imagenet;
pub mod mnist;
pub mod swin;
pub mod yolox;
