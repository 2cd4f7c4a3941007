//! Checks on a loaded module's float tensors: that each has the shape a fresh module of the
//! same configuration has, holds f32 values and holds finite ones. A load that fails them
//! would otherwise panic or answer nonsense later, far from the file at fault.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

/// One float tensor of a module: its path (`layer1.0.conv1.weight`), shape and type.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorFacts {
    /// The module path, dot-separated.
    pub path: String,
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// The tensor's element type.
    pub dtype: DType,
}

struct Collect<'a> {
    stack: Vec<String>,
    out: Vec<TensorFacts>,
    /// Paths of tensors with a NaN or an infinity, when asked to look.
    non_finite: Option<&'a mut Vec<String>>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        let path = self.stack.join(".");
        if let Some(bad) = self.non_finite.as_deref_mut() {
            let values = tensor.to_data().convert::<f32>();
            let finite = values
                .as_slice::<f32>()
                .map_or(true, |v| v.iter().all(|x| x.is_finite()));
            if !finite {
                bad.push(path.clone());
            }
        }
        self.out.push(TensorFacts {
            path,
            shape: tensor.dims().to_vec(),
            dtype: tensor.dtype(),
        });
    }
}

/// Every float tensor of `module`, in visiting order.
pub fn float_tensors<B: Backend, M: Module<B>>(module: &M) -> Vec<TensorFacts> {
    let mut visitor = Collect {
        stack: Vec::new(),
        out: Vec::new(),
        non_finite: None,
    };
    module.visit(&mut visitor);
    visitor.out
}

/// The first way `loaded`'s tensors differ in shape from `fresh`'s (a module of the same
/// configuration that has not been loaded), as a message naming the tensor.
pub fn shape_mismatch(fresh: &[TensorFacts], loaded: &[TensorFacts]) -> Option<String> {
    if fresh.len() != loaded.len() {
        return Some(format!(
            "it holds {} tensors where the model has {}",
            loaded.len(),
            fresh.len()
        ));
    }
    fresh
        .iter()
        .zip(loaded)
        .find(|(f, l)| f.shape != l.shape)
        .map(|(f, l)| {
            format!(
                "tensor {} has shape {:?}, the model's is {:?}",
                l.path, l.shape, f.shape
            )
        })
}

/// Why `module` cannot run as a float32 model: a tensor of another type, or one holding NaN
/// or infinite values (named).
pub fn unusable<B: Backend, M: Module<B>>(module: &M) -> Option<String> {
    {
        let mut non_finite = Vec::new();
        let mut visitor = Collect {
            stack: Vec::new(),
            out: Vec::new(),
            non_finite: Some(&mut non_finite),
        };
        module.visit(&mut visitor);
        let facts = visitor.out;
        if let Some(t) = facts.iter().find(|t| t.dtype != DType::F32) {
            return Some(format!(
                "tensor {} holds {:?} values; kiln models run in f32",
                t.path, t.dtype
            ));
        }
        non_finite.first().map(|path| {
            format!(
                "tensor {path} holds NaN or infinite values ({} tensor(s) in all)",
                non_finite.len()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::TensorData;
    use burn_flex::Flex;

    #[test]
    fn paths_shapes_and_mismatches() {
        let device = Default::default();
        let a: Linear<Flex> = LinearConfig::new(3, 2).init(&device);
        let b: Linear<Flex> = LinearConfig::new(4, 2).init(&device);
        let facts = float_tensors(&a);
        let paths: Vec<_> = facts.iter().map(|t| (t.path.as_str(), t.shape.clone())).collect();
        assert_eq!(paths, [("weight", vec![3, 2]), ("bias", vec![2])]);
        assert_eq!(shape_mismatch(&facts, &float_tensors(&a.clone())), None);
        let msg = shape_mismatch(&facts, &float_tensors(&b)).unwrap();
        assert!(msg.contains("weight") && msg.contains("[4, 2]"), "{msg}");
    }

    #[test]
    fn non_finite_and_non_f32_tensors_are_named() {
        let device = Default::default();
        let mut linear: Linear<Flex> = LinearConfig::new(3, 2).init(&device);
        assert_eq!(unusable(&linear), None);
        let nan = Tensor::<Flex, 1>::from_data(TensorData::from([0.5, f32::NAN]), &device);
        linear.bias = Some(Param::from_tensor(nan));
        let msg = unusable(&linear).unwrap();
        assert!(msg.contains("bias") && msg.contains("NaN"), "{msg}");
        let half = Tensor::<Flex, 1>::from_data(TensorData::from([0.5f32, 1.0]), &device).cast(DType::F16);
        linear.bias = Some(Param::from_tensor(half));
        let msg = unusable(&linear).unwrap();
        assert!(msg.contains("bias") && msg.contains("F16"), "{msg}");
    }
}
