//! One module per training job; each is a function from its flags to a model package.

pub mod imagenet;
pub mod mnist;
