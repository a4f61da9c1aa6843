//! Layer-wise learning-rate decay (LLRD): parameter groups whose learning rate shrinks
//! geometrically from the head down to the embeddings, by the rule of BEiT and timm.
//!
//! # Tip
//! The early layers of a pre-trained transformer hold generic features that fine-tuning should
//! barely move; the head starts from scratch. LLRD gives layer $l$ of $L$ the multiplier
//! $d^{L+1-l}$ with $d$ about 0.65–0.75 for ViT-B (BEiT, MAE): the head ($l = L+1$) gets the
//! base rate, block $i$ (`blocks.i` or `layers.i`, $l = i+1$) less, the embeddings ($l = 0$:
//! `cls_token`, `pos_embed`, `patch_embed`, `embeddings`) the least. It typically adds a point
//! or more over one learning rate for the whole model when fine-tuning ViTs. Biases and
//! normalization weights keep weight decay 0 in every layer ([`crate::optim::is_no_decay`]).
//!
//! # Example
//! ```
//! use candle_core::{DType, Device};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::transfer::layer_decay_groups;
//! # fn main() -> candle_tricks::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let _embed = candle_nn::linear(4, 8, vb.pp("patch_embed.proj"))?;
//! for i in 0..2 {
//!     let _block = candle_nn::linear(8, 8, vb.pp(format!("blocks.{i}.mlp")))?;
//! }
//! let _head = candle_nn::linear(8, 3, vb.pp("head"))?;
//! let groups = layer_decay_groups(&varmap, 2, 0.5, 0.05)?;
//! // Weights and biases of 4 layers: lr multipliers 0.5^3, 0.5^2, 0.5, 1.
//! let mults: Vec<f64> = groups.groups().iter().map(|g| g.lr_mult).collect();
//! assert_eq!(mults, [0.125, 0.125, 0.25, 0.25, 0.5, 0.5, 1.0, 1.0]);
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Bao et al., *BEiT: BERT Pre-Training of Image Transformers*, 2021,
//!   <https://arxiv.org/abs/2106.08254>
//! - Clark et al., *ELECTRA*, 2020, <https://arxiv.org/abs/2003.10555> (layer-wise decay)

use crate::optim::{is_no_decay, ParamGroup, ParamGroups};
use crate::transfer::trainable_by;
use crate::{Error, Result};
use candle_nn::VarMap;

const BLOCK: &str = "layer_decay_groups";

/// The layer id of a parameter name in a model of `num_layers` blocks: 0 for the embeddings
/// (`cls_token`, `dist_token`, `pos_embed`, `patch_embed…`, `embeddings…`), `i + 1` for
/// `blocks.i…` / `layers.i…` (at any depth of the name), `num_layers + 1` for the rest (head,
/// final norm). Errors when a block index is not below `num_layers`.
pub fn layer_id(name: &str, num_layers: usize) -> Result<usize> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.first().is_some_and(|p| {
        matches!(
            *p,
            "cls_token" | "dist_token" | "pos_embed" | "patch_embed" | "embeddings"
        )
    }) {
        return Ok(0);
    }
    for w in parts.windows(2) {
        if matches!(w[0], "blocks" | "layers") {
            if let Ok(i) = w[1].parse::<usize>() {
                if i >= num_layers {
                    return Err(Error::config(
                        BLOCK,
                        format!("`{name}` is block {i}, but num_layers is {num_layers}"),
                    ));
                }
                return Ok(i + 1);
            }
        }
    }
    Ok(num_layers + 1)
}

/// Parameter groups of the trainable vars of `varmap` (buffers left out): per layer id (see
/// [`layer_id`]), a group with weight decay `weight_decay` and one of the [`is_no_decay`]
/// parameters with weight decay 0, each with lr multiplier $d^{L+1-l}$ (`decay` = $d$,
/// `num_layers` = $L$). Groups are ordered by layer then decayed-first; empty ones are left
/// out; vars are sorted by name.
///
/// Errors (naming `layer_decay_groups`) when `decay` is not in `(0, 1]`, `weight_decay` is
/// negative or not finite, or a name holds a block index ≥ `num_layers`.
pub fn layer_decay_groups(
    varmap: &VarMap,
    num_layers: usize,
    decay: f64,
    weight_decay: f64,
) -> Result<ParamGroups> {
    if !(decay > 0.0 && decay <= 1.0) {
        return Err(Error::config(
            BLOCK,
            format!("decay must be in (0, 1], got {decay}"),
        ));
    }
    if !(weight_decay.is_finite() && weight_decay >= 0.0) {
        return Err(Error::config(
            BLOCK,
            format!("weight_decay must be finite and >= 0, got {weight_decay}"),
        ));
    }
    let top = num_layers
        .checked_add(1)
        .ok_or_else(|| Error::config(BLOCK, "num_layers overflows"))?;
    // (decayed, not decayed) per layer id 0..=top.
    let mut per_layer = vec![(Vec::new(), Vec::new()); top + 1];
    for (name, var) in trainable_by(varmap, |_| true) {
        let l = layer_id(&name, num_layers)?;
        let slot = &mut per_layer[l];
        if is_no_decay(&name, var.rank()) {
            slot.1.push((name, var));
        } else {
            slot.0.push((name, var));
        }
    }
    let mut groups = ParamGroups::default();
    for (l, (yes, no)) in per_layer.into_iter().enumerate() {
        let mult = decay.powi(i32::try_from(top - l).unwrap_or(i32::MAX));
        for (vars, wd) in [(yes, weight_decay), (no, 0.0)] {
            if !vars.is_empty() {
                groups.push(
                    ParamGroup::named(vars)
                        .with_lr_mult(mult)
                        .with_weight_decay(wd),
                );
            }
        }
    }
    Ok(groups)
}
