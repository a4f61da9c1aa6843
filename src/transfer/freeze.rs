//! Freezing: choose, by name prefix or predicate, the vars of a [`VarMap`] that the optimizer
//! receives; the others never change.
//!
//! # Tip
//! candle has no `requires_grad` flag on a `Var`: a var is frozen by leaving it out of the
//! optimizer, which then never reads its gradient nor applies weight decay to it. Freezing the
//! backbone and training the head ("linear probing") is the cheapest transfer baseline and the
//! safest with a few hundred examples; unfreezing the last stages afterwards, at a lower
//! learning rate, usually gains a few points. Backpropagation still computes the frozen vars'
//! gradients (the price of no flag); feed the backbone's output through `detach` when the
//! whole backbone is frozen to skip that work. BatchNorm running statistics are buffers, not
//! parameters: a frozen backbone in training mode still updates them (use
//! a frozen BatchNorm or evaluation mode to freeze them too).
//!
//! # Example
//! ```
//! use candle_core::{DType, Device};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::transfer::freeze;
//! # fn main() -> candle_tricks::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let _backbone = candle_nn::linear(8, 16, vb.pp("backbone"))?;
//! let _head = candle_nn::linear(16, 3, vb.pp("head"))?;
//! let trainable = freeze(&varmap, &["backbone"])?; // head.bias and head.weight
//! assert_eq!(trainable.len(), 2);
//! assert!(freeze(&varmap, &["backbon"]).is_err()); // a prefix that matches no var
//! # Ok(())
//! # }
//! ```

use candle_core::Var;
use candle_nn::VarMap;

use crate::optim::is_buffer_name;
use crate::{Error, Result};

const BLOCK: &str = "freeze";

/// Whether `name` lies under `prefix` on a component boundary (`layer1` covers `layer1.0.bn1.weight`
/// and `layer1`, not `layer10.weight`).
pub fn has_prefix(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The trainable vars of `varmap` (float, not a buffer such as `running_mean`) for which
/// `trainable(name)` holds, with their names, sorted by name.
pub fn trainable_by(varmap: &VarMap, trainable: impl Fn(&str) -> bool) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<(String, Var)> = data
        .iter()
        .filter(|(k, v)| v.dtype().is_float() && !is_buffer_name(k) && trainable(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The vars the optimizer should see when everything under `prefixes` is frozen, sorted by
/// name. Errors (naming `freeze`) when a prefix is empty or matches no var of `varmap` (a typo
/// would otherwise freeze nothing).
pub fn freeze(varmap: &VarMap, prefixes: &[&str]) -> Result<Vec<Var>> {
    check_prefixes(varmap, prefixes)?;
    Ok(strip(trainable_by(varmap, |n| {
        !prefixes.iter().any(|p| has_prefix(n, p))
    })))
}

/// The vars under `prefixes` only (everything else frozen), sorted by name: the head for
/// linear probing, the last stages for partial fine-tuning. Errors as [`freeze`].
pub fn unfreeze(varmap: &VarMap, prefixes: &[&str]) -> Result<Vec<Var>> {
    check_prefixes(varmap, prefixes)?;
    Ok(strip(trainable_by(varmap, |n| {
        prefixes.iter().any(|p| has_prefix(n, p))
    })))
}

fn strip(named: Vec<(String, Var)>) -> Vec<Var> {
    named.into_iter().map(|(_, v)| v).collect()
}

fn check_prefixes(varmap: &VarMap, prefixes: &[&str]) -> Result<()> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    for p in prefixes {
        if p.is_empty() {
            return Err(Error::config(BLOCK, "empty name prefix"));
        }
        if !data.keys().any(|k| has_prefix(k, p)) {
            return Err(Error::config(
                BLOCK,
                format!("unknown prefix `{p}`: no var is named `{p}` or `{p}.…`"),
            ));
        }
    }
    Ok(())
}
