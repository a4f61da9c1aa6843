//! Zero-shot classification by semantic embedding: images are mapped into the space in which
//! classes are *described* (attributes, word vectors), so a class is recognised from its
//! description alone, without a single training image.
//!
//! # Shapes
//! - features `(N, F)` from any backbone; class descriptions `(K, A)`: one attribute vector per
//!   candidate class (seen or unseen).
//! - [`SemanticEmbedding::embed`]: $\theta(x) W^T + b$, `(N, A)`;
//!   [`SemanticEmbedding::compatibility`]: scores `(N, K)`,
//!   $F(x, y) = \theta(x)^T W^T \phi(y)$ (optionally cosine, times a scale);
//!   [`SemanticEmbedding::predict`]: `(N,)` u32, the best-scoring class.
//!
//! # Tip
//! A classifier's last layer holds one weight vector per class, so it can only ever answer with
//! the classes it was trained on. Describe every class instead by a vector $\phi(y)$ of shared
//! attributes (*striped*, *four legs*; *has a loop*, *red*, *round*) or a text embedding, and
//! train a map $W$ from image features to that space on the seen classes, with cross-entropy over
//! the compatibility scores $\theta(x)^T W^T \phi(y)$ of the seen classes (Akata et al.'s
//! bilinear compatibility). At test time swap in the descriptions of *unseen* classes: as long
//! as each of their attributes occurred in some seen class, the map transfers (Lampert et al.).
//!
//! Trade-offs: the descriptions carry all the knowledge about unseen classes, so two classes
//! with the same attributes are indistinguishable; and when seen and unseen classes compete
//! (generalised zero-shot), scores are biased toward the seen ones — subtract a calibration
//! constant from the seen classes' scores (Chao et al.) or evaluate per split. Cosine
//! compatibility (`normalize`) with a scale of 10–30 removes the norm of the embedding from the
//! score and usually transfers better than the raw dot product.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::train::{SemanticEmbedding, SemanticEmbeddingConfig};
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! // Three binary attributes; the features of an image are its attributes plus noise, so the
//! // identity map is a perfect embedding (a trained W learns such a map from seen classes).
//! let w = Tensor::eye(3, candle_core::DType::F32, &dev)?;
//! let head = SemanticEmbedding::new(w, None, SemanticEmbeddingConfig::default())?;
//! // An unseen class, described only by its attributes: [1, 0, 1]; a distractor [0, 1, 1].
//! let unseen = Tensor::new(&[[1f32, 0., 1.], [0., 1., 1.]], &dev)?;
//! let images = Tensor::new(&[[0.9f32, 0.1, 1.1], [0.1, 0.8, 0.9]], &dev)?;
//! assert_eq!(head.predict(&images, &unseen)?.to_vec1::<u32>()?, [0, 1]);
//! # Ok(())
//! # }
//! ```
//! `examples/zero_shot.rs` trains the map on 8 seen shape-and-colour classes and recognises 4
//! unseen combinations from their descriptions.
//!
//! # References
//! - Lampert, Nickisch, Harmeling, *Learning To Detect Unseen Object Classes by Between-Class
//!   Attribute Transfer*, CVPR 2009 (attribute-based classification).
//! - Akata, Perronnin, Harchaoui, Schmid, *Label-Embedding for Attribute-Based
//!   Classification*, CVPR 2013 (bilinear compatibility trained with a ranking or softmax loss).
//! - Chao, Changpinyo, Gong, Sha, *An Empirical Study and Analysis of Generalized Zero-Shot
//!   Learning for Object Recognition in the Wild*, ECCV 2016, <https://arxiv.org/abs/1605.04253>
//!   (calibrated stacking).

use candle_core::{DType, Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::conv::init::weight_and_bias;
use crate::{check, ops, Error, Result};

const BLOCK: &str = "SemanticEmbedding";

/// Configuration of a [`SemanticEmbedding`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SemanticEmbeddingConfig {
    /// Whether the map into the attribute space has a bias (default `true`).
    pub bias: bool,
    /// Cosine compatibility: L2-normalise the embedding and each class description before the
    /// dot product (default `false`).
    pub normalize: bool,
    /// Factor applied to every score (a softmax temperature of `1 / scale`); must be finite and
    /// > 0 (default 1).
    pub scale: f64,
}

impl Default for SemanticEmbeddingConfig {
    fn default() -> Self {
        Self {
            bias: true,
            normalize: false,
            scale: 1.0,
        }
    }
}

impl SemanticEmbeddingConfig {
    /// Sets whether the map has a bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets cosine compatibility on or off.
    pub fn with_normalize(mut self, normalize: bool) -> Self {
        self.normalize = normalize;
        self
    }

    /// Sets the score scale.
    pub fn with_scale(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }

    /// Checks the scale.
    pub fn validate(&self) -> Result<()> {
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::config(
                BLOCK,
                format!("scale must be finite and > 0, got {}", self.scale),
            ));
        }
        Ok(())
    }
}

/// A learned map from features into a class-description space, scored against class
/// descriptions; see the [module docs](self). Tensor names as `nn.Linear`: `weight` `(A, F)`,
/// `bias` `(A)`.
#[derive(Clone, Debug)]
pub struct SemanticEmbedding {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: SemanticEmbeddingConfig,
}

/// Creates (or loads) a [`SemanticEmbedding`] from `feature_dim` features into
/// `attribute_dim` attributes, initialised as PyTorch's `nn.Linear`.
pub fn semantic_embedding(
    feature_dim: usize,
    attribute_dim: usize,
    cfg: SemanticEmbeddingConfig,
    vb: VarBuilder,
) -> Result<SemanticEmbedding> {
    cfg.validate()?;
    check::positive(BLOCK, "feature_dim", feature_dim)?;
    check::positive(BLOCK, "attribute_dim", attribute_dim)?;
    check::loading(BLOCK, vb, |vb| {
        let (weight, bias) = weight_and_bias(BLOCK, &vb, (attribute_dim, feature_dim), cfg.bias)?;
        SemanticEmbedding::new(weight, bias, cfg)
    })
}

impl SemanticEmbedding {
    /// Builds the head from a `(A, F)` weight and an optional `(A)` bias.
    pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: SemanticEmbeddingConfig) -> Result<Self> {
        cfg.validate()?;
        check::rank(BLOCK, "weight", &weight, 2, "(A, F)")?;
        check::non_empty(BLOCK, "weight", &weight)?;
        check::float_dtype(BLOCK, "weight", &weight)?;
        check::bias(BLOCK, &weight, bias.as_ref(), weight.dim(0)?)?;
        Ok(Self { weight, bias, cfg })
    }

    /// Number of attributes `A` of the description space.
    pub fn attribute_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Number of input features `F`.
    pub fn feature_dim(&self) -> usize {
        self.weight.dims()[1]
    }

    /// The features mapped into the attribute space, `(N, F)` → `(N, A)` (not normalised).
    pub fn embed(&self, features: &Tensor) -> Result<Tensor> {
        let f = self.feature_dim();
        check::rank(BLOCK, "features", features, 2, &format!("(N, {f})"))?;
        if features.dim(1)? != f {
            return Err(Error::shape(
                BLOCK,
                "features",
                format!("(N, {f})"),
                features.shape().clone(),
            ));
        }
        check::same_dtype_device(BLOCK, "features", &self.weight, features)?;
        ops::linear(features, &self.weight, self.bias.as_ref())
    }

    /// Compatibility scores `(N, K)` of each sample with each of the `K` class descriptions
    /// `(K, A)`: logits for a cross-entropy over those classes.
    pub fn compatibility(&self, features: &Tensor, class_attributes: &Tensor) -> Result<Tensor> {
        let a = self.attribute_dim();
        let pattern = format!("(K, {a})");
        check::rank(BLOCK, "class_attributes", class_attributes, 2, &pattern)?;
        check::non_empty(BLOCK, "class_attributes", class_attributes)?;
        if class_attributes.dim(1)? != a {
            return Err(Error::shape(
                BLOCK,
                "class_attributes",
                pattern,
                class_attributes.shape().clone(),
            ));
        }
        check::same_dtype_device(BLOCK, "class_attributes", &self.weight, class_attributes)?;
        let mut emb = self.embed(features)?;
        let mut classes = class_attributes.clone();
        if self.cfg.normalize {
            emb = l2_normalize(&emb)?;
            classes = l2_normalize(&classes)?;
        }
        Ok((emb.matmul(&classes.t()?)? * self.cfg.scale)?)
    }

    /// The index (into the rows of `class_attributes`) of the best-scoring class, `(N,)` u32.
    pub fn predict(&self, features: &Tensor, class_attributes: &Tensor) -> Result<Tensor> {
        let scores = self.compatibility(features, class_attributes)?;
        Ok(scores.argmax(D::Minus1)?.to_dtype(DType::U32)?)
    }
}

/// Rows scaled to unit L2 norm (a zero row stays zero: the norm is floored at 1e-12).
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

impl Module for SemanticEmbedding {
    /// [`SemanticEmbedding::embed`].
    fn forward(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.embed(features)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn rejects_bad_input() -> Result<()> {
        let dev = Device::Cpu;
        let vb = VarBuilder::zeros(DType::F32, &dev);
        let cfg = SemanticEmbeddingConfig::default();
        assert!(semantic_embedding(0, 3, cfg, vb.clone()).is_err());
        assert!(semantic_embedding(4, 3, cfg.with_scale(0.0), vb.clone()).is_err());
        let head = semantic_embedding(4, 3, cfg, vb)?;
        let x = Tensor::zeros((2, 5), DType::F32, &dev)?;
        assert!(matches!(head.embed(&x), Err(Error::ShapeMismatch { .. })));
        let x = Tensor::zeros((2, 4), DType::F32, &dev)?;
        let wrong = Tensor::zeros((3, 2), DType::F32, &dev)?;
        assert!(matches!(
            head.compatibility(&x, &wrong),
            Err(Error::ShapeMismatch { .. })
        ));
        let empty = Tensor::zeros((0, 3), DType::F32, &dev)?;
        assert!(head.compatibility(&x, &empty).is_err());
        Ok(())
    }

    #[test]
    fn cosine_scores_are_bounded_by_the_scale() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1., (3, 5), &dev)?;
        let cfg = SemanticEmbeddingConfig::default()
            .with_normalize(true)
            .with_scale(10.0);
        let head = SemanticEmbedding::new(w, None, cfg)?;
        let x = Tensor::randn(0f32, 1., (7, 5), &dev)?;
        let classes = Tensor::randn(0f32, 1., (4, 3), &dev)?;
        let s = head.compatibility(&x, &classes)?;
        assert_eq!(s.dims(), &[7, 4]);
        assert!(s.abs()?.max_all()?.to_scalar::<f32>()? <= 10.0 + 1e-4);
        Ok(())
    }
}
