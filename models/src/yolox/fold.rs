//! Folding every BatchNorm of a YOLOX model into its convolution once, for evaluation
//! ([`Yolox::fold_batch_norms`](super::Yolox::fold_batch_norms)).

/// A YOLOX module whose BatchNorms can be folded into their convolutions
/// ([`fold_into`](crate::norm::fold_into)).
pub(super) trait FoldBatchNorms {
    /// Folds every BatchNorm this module holds; a no-op for those already folded.
    fn fold_batch_norms(&mut self);
}

impl<T: FoldBatchNorms> FoldBatchNorms for Vec<T> {
    fn fold_batch_norms(&mut self) {
        self.iter_mut().for_each(T::fold_batch_norms);
    }
}

impl<T: FoldBatchNorms> FoldBatchNorms for Option<T> {
    fn fold_batch_norms(&mut self) {
        if let Some(module) = self {
            module.fold_batch_norms();
        }
    }
}

/// Implements [`FoldBatchNorms`] for a module generic over `B: Backend` by folding each of
/// the named fields.
macro_rules! fold_fields {
    ($module:ident: $($field:ident),+) => {
        impl<B: Backend> $crate::yolox::fold::FoldBatchNorms for $module<B> {
            fn fold_batch_norms(&mut self) {
                $(self.$field.fold_batch_norms();)+
            }
        }
    };
}

pub(super) use fold_fields;
