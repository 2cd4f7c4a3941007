//! The pieces of microsoft/Swin-Transformer's recipe that `kiln-train swin` is being built
//! from (issue 29): its targets and loss. The job itself, its config reader and its data
//! pipeline are not here yet; the model is `kiln_models::swin`, its schedule
//! [`crate::schedule::SwinCosine`].

pub mod targets;
