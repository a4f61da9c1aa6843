//! Prototypical networks (Snell et al. 2017): the few-shot classification loss of an episode.
//!
//! # Shapes
//! - support embeddings `(S, D)` with labels `(S)` in `[0, n_way)` (every class at least once);
//! - query embeddings `(Q, D)` with labels `(Q)`.
//! - [`Prototypical::logits`] `(Q, n_way)`; [`Prototypical::loss`] a scalar.
//!
//! # Tip
//! A class's prototype is the mean embedding of its support examples, and a query's logit for
//! class $k$ is $-\Vert f(q) - c_k \Vert^2$: a softmax over negative squared distances, i.e. a
//! linear classifier whose weights are computed from the support set instead of learned. This
//! is why the network generalises to classes never seen in training: the episode's classes
//! define the classifier at test time. Train with episodes that look like the test episodes
//! (same way, similar shot) and prefer the squared Euclidean distance: it makes the model a
//! Bregman-divergence mixture density estimator, and worked better than cosine in the paper.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_tricks::loss::prototypical;
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! // Two classes around (0, 0) and (5, 5), two shots each; queries near each.
//! let support = Tensor::new(&[[0f32, 0.], [5., 5.], [0.2, -0.2], [5.2, 4.8]], &dev)?;
//! let query = Tensor::new(&[[4.9f32, 5.1], [0.1, 0.0]], &dev)?;
//! let out = prototypical(&support, &Tensor::new(&[0u32, 1, 0, 1], &dev)?, &query,
//!     &Tensor::new(&[1u32, 0], &dev)?, 2)?;
//! assert_eq!(out.accuracy, 1.0);
//! assert!(out.loss.to_scalar::<f32>()? < 1e-6);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Snell, Swersky, Zemel, *Prototypical Networks for Few-shot Learning*, 2017,
//!   <https://arxiv.org/abs/1703.05175>

use candle_core::{DType, Tensor, D};

use crate::loss::{cross_entropy, CrossEntropyConfig};
use crate::{Error, Result};

const OP: &str = "prototypical";

/// What [`prototypical`] returns for an episode.
#[derive(Debug, Clone)]
pub struct Prototypical {
    /// The mean cross-entropy of the queries (differentiable wrt both embeddings).
    pub loss: Tensor,
    /// The logits $-\Vert q - c_k \Vert^2$, `(Q, n_way)`.
    pub logits: Tensor,
    /// The class prototypes, `(n_way, D)`.
    pub prototypes: Tensor,
    /// The fraction of queries whose nearest prototype is their class.
    pub accuracy: f64,
}

/// The prototypical-network loss of one episode (see the module docs).
///
/// Errors (naming `prototypical`) on embeddings that are not `(S, D)` / `(Q, D)` with one `D`,
/// labels of the wrong shape or dtype, a label outside `[0, n_way)`, and a class without support
/// examples.
pub fn prototypical(
    support: &Tensor,
    support_labels: &Tensor,
    query: &Tensor,
    query_labels: &Tensor,
    n_way: usize,
) -> Result<Prototypical> {
    crate::check::rank(OP, "support", support, 2, "(S, D)")?;
    crate::check::non_empty(OP, "support", support)?;
    let d = support.dims()[1];
    if query.rank() != 2 || query.dims()[1] != d || query.dims()[0] == 0 {
        return Err(Error::shape(
            OP,
            "query",
            format!("(Q, {d})"),
            query.shape().clone(),
        ));
    }
    crate::check::same_dtype_device(OP, "query", support, query)?;
    let s_labels = labels(support_labels, support.dims()[0], n_way, "support_labels")?;
    labels(query_labels, query.dims()[0], n_way, "query_labels")?;
    let mut counts = vec![0usize; n_way];
    for &y in &s_labels {
        counts[y] += 1;
    }
    if let Some(k) = counts.iter().position(|&c| c == 0) {
        return Err(Error::config(
            OP,
            format!("class {k} of {n_way} has no support example"),
        ));
    }
    // The prototypes as one product: averaging[k, i] = 1 / count_k where support i is of class k.
    let mut avg = vec![0f32; n_way * s_labels.len()];
    for (i, &y) in s_labels.iter().enumerate() {
        avg[y * s_labels.len() + i] = 1.0 / counts[y] as f32;
    }
    let avg = Tensor::from_vec(avg, (n_way, s_labels.len()), support.device())?
        .to_dtype(support.dtype())?;
    let prototypes = avg.matmul(support)?;
    let diff = query
        .unsqueeze(1)?
        .broadcast_sub(&prototypes.unsqueeze(0)?)?;
    let logits = diff.sqr()?.sum(D::Minus1)?.neg()?;
    let loss = cross_entropy(&logits, query_labels, &CrossEntropyConfig::default())?;
    let predicted = logits.argmax(D::Minus1)?;
    let correct = predicted.eq(&query_labels.to_dtype(DType::U32)?)?;
    let accuracy = correct
        .to_dtype(DType::F64)?
        .mean_all()?
        .to_scalar::<f64>()?;
    Ok(Prototypical {
        loss,
        logits,
        prototypes,
        accuracy,
    })
}

/// Class-index labels `(len)` in `[0, n_way)`, read to the host.
fn labels(t: &Tensor, len: usize, n_way: usize, what: &'static str) -> Result<Vec<usize>> {
    if t.dims() != [len] || !matches!(t.dtype(), DType::U8 | DType::U32 | DType::I64) {
        return Err(Error::shape(
            OP,
            what,
            format!("({len}) class indices (u8, u32 or i64)"),
            t.shape().clone(),
        ));
    }
    let v: Vec<i64> = t.to_dtype(DType::I64)?.to_vec1()?;
    v.iter()
        .map(|&y| {
            usize::try_from(y)
                .ok()
                .filter(|&y| y < n_way)
                .ok_or_else(|| {
                    Error::config(OP, format!("{what}: class {y} out of range [0, {n_way})"))
                })
        })
        .collect()
}
