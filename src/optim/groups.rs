//! Parameter groups: a learning-rate multiplier and a weight decay per set of parameters, and
//! the usual rule "no weight decay on biases, normalization weights and other 1-D parameters".
//!
//! Every optimizer takes groups through its `with_groups(groups, cfg)` constructor;
//! `Optimizer::new(vars, cfg)` is one group with multiplier 1 and the config's weight decay.
//! The learning rate of a group is the optimizer's base rate (the one `set_learning_rate` and a
//! schedule change) times the group's `lr_mult`.
//!
//! # Tip
//! Weight decay pulls weights towards zero to limit the norm of the function a layer computes. A
//! bias or the gain $\gamma$ of a normalization layer does not scale the input, so decaying it
//! only fights the fit (a LayerNorm gain decayed to 0 switches the layer off); the common recipe
//! (BERT, timm, nanoGPT) decays only the matrices and convolution kernels. The rule used here:
//! a parameter is *not* decayed when it has at most one dimension, or when a component of its
//! name is `bias` or contains `norm`, or starts with `bn` / `ln` ([`is_no_decay`]).
//!
//! # Example
//! ```
//! use candle_core::{DType, Device};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::optim::{AdamW, AdamWConfig, ParamGroups};
//! # fn main() -> candle_tricks::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let _fc = candle_nn::linear(8, 4, vb.pp("fc"))?;
//! let _ln = candle_nn::layer_norm(4, 1e-5, vb.pp("ln"))?;
//! let groups = ParamGroups::no_decay_for_bias_and_norm(&varmap, 0.05);
//! // fc.weight is decayed; fc.bias, ln.weight and ln.bias are not.
//! assert_eq!(groups.groups()[0].len(), 1);
//! assert_eq!(groups.groups()[1].len(), 3);
//! let opt = AdamW::with_groups(groups, AdamWConfig::default())?;
//! assert_eq!(opt.num_params(), 4);
//! # Ok(())
//! # }
//! ```

use candle_core::Var;
use candle_nn::VarMap;

/// A set of parameters sharing a learning-rate multiplier and a weight decay.
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// The parameters, with their names when known (error messages name them).
    pub vars: Vec<(Option<String>, Var)>,
    /// Multiplier of the optimizer's base learning rate (default 1).
    pub lr_mult: f64,
    /// Weight decay of this group; `None` (default) uses the optimizer config's.
    pub weight_decay: Option<f64>,
}

impl ParamGroup {
    /// A group of unnamed vars with multiplier 1 and the config's weight decay.
    pub fn new(vars: Vec<Var>) -> Self {
        Self {
            vars: vars.into_iter().map(|v| (None, v)).collect(),
            lr_mult: 1.0,
            weight_decay: None,
        }
    }

    /// A group of named vars with multiplier 1 and the config's weight decay.
    pub fn named(vars: Vec<(String, Var)>) -> Self {
        Self {
            vars: vars.into_iter().map(|(n, v)| (Some(n), v)).collect(),
            lr_mult: 1.0,
            weight_decay: None,
        }
    }

    /// Sets the learning-rate multiplier.
    pub fn with_lr_mult(mut self, lr_mult: f64) -> Self {
        self.lr_mult = lr_mult;
        self
    }

    /// Sets the group's weight decay (overrides the optimizer config's).
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = Some(weight_decay);
        self
    }

    /// Number of parameters (tensors) in the group.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether the group holds no parameter.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
}

/// An ordered list of [`ParamGroup`]s. The parameter order (group by group) is the order of
/// the optimizer state ([`crate::optim::OptimizerState`]), so it must be the same when a saved
/// state is loaded; the constructors from a [`VarMap`] sort by name to make it deterministic.
#[derive(Debug, Clone, Default)]
pub struct ParamGroups(Vec<ParamGroup>);

impl ParamGroups {
    /// Groups given explicitly.
    pub fn new(groups: Vec<ParamGroup>) -> Self {
        Self(groups)
    }

    /// All the trainable vars of `varmap` (buffers and non-float vars left out, see
    /// [`is_buffer_name`]), sorted by name, in one group.
    pub fn from_varmap(varmap: &VarMap) -> Self {
        Self(vec![ParamGroup::named(sorted_vars(varmap))])
    }

    /// Two groups from the trainable vars of `varmap` (each sorted by name; buffers and
    /// non-float vars left out): group 0 = decayed parameters with weight
    /// decay `weight_decay`, group 1 = the parameters [`is_no_decay`] selects (biases,
    /// normalization weights, 1-D parameters) with weight decay 0.
    pub fn no_decay_for_bias_and_norm(varmap: &VarMap, weight_decay: f64) -> Self {
        let (no, yes): (Vec<_>, Vec<_>) = sorted_vars(varmap)
            .into_iter()
            .partition(|(name, v)| is_no_decay(name, v.rank()));
        Self(vec![
            ParamGroup::named(yes).with_weight_decay(weight_decay),
            ParamGroup::named(no).with_weight_decay(0.0),
        ])
    }

    /// Appends a group.
    pub fn push(&mut self, group: ParamGroup) {
        self.0.push(group);
    }

    /// The groups.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.0
    }

    /// The groups, by value.
    pub fn into_inner(self) -> Vec<ParamGroup> {
        self.0
    }
}

impl From<Vec<ParamGroup>> for ParamGroups {
    fn from(g: Vec<ParamGroup>) -> Self {
        Self(g)
    }
}

impl From<Vec<Var>> for ParamGroups {
    fn from(vars: Vec<Var>) -> Self {
        Self(vec![ParamGroup::new(vars)])
    }
}

/// The rule of [`ParamGroups::no_decay_for_bias_and_norm`]: `true` (no decay) for parameters
/// of rank ≤ 1, and for names with a dot-separated component equal to `bias`, containing `norm`,
/// or starting with `bn` or `ln` (`fc.bias`, `layer_norm.weight`, `bn1.weight`, `ln_f.weight`),
/// and for ViT's learned tokens and position table (`cls_token`, `dist_token`, `pos_embed`,
/// which timm's models also exempt: decaying them pulls the embeddings towards zero).
pub fn is_no_decay(name: &str, rank: usize) -> bool {
    rank <= 1
        || name.split('.').any(|c| {
            let c = c.to_ascii_lowercase();
            c == "bias" || c.contains("norm") || c.starts_with("bn") || c.starts_with("ln")
        })
        || name
            .rsplit('.')
            .next()
            .is_some_and(|last| matches!(last, "cls_token" | "dist_token" | "pos_embed"))
}

/// Whether a var name denotes a buffer rather than a trained parameter: its last component is
/// `running_mean`, `running_var` or `num_batches_tracked` (PyTorch's BatchNorm buffers, which
/// candle-nn's `batch_norm` names the same way).
pub fn is_buffer_name(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    matches!(last, "running_mean" | "running_var" | "num_batches_tracked")
}

/// The trainable vars of `varmap` (float, not a buffer), sorted by name.
pub(crate) fn sorted_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<(String, Var)> = data
        .iter()
        .filter(|(k, v)| v.dtype().is_float() && !is_buffer_name(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}
