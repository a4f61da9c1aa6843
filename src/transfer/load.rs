//! Loading a checkpoint into a model's [`VarMap`] with a report of what did not fit: the
//! missing, unexpected and shape-mismatched keys, as PyTorch's
//! `load_state_dict(strict=False)` returns them.
//!
//! # Tip
//! Fine-tuning starts from a checkpoint that was trained for another task, so some keys never
//! match: the new head has another class count (`fc.weight` of `(10, 512)` against `(1000,
//! 512)`), an auxiliary head was dropped, a block was added. Loading *leniently* copies every
//! tensor whose name and shape match and reports the rest; the report is worth reading every
//! time, because a silent prefix difference (`module.` from `DataParallel`, `backbone.`) leaves
//! the whole backbone at its random initialisation and the run still "trains". Assert on the
//! report: only the head should be listed.
//!
//! Unlike PyTorch, which raises on a shape mismatch even with `strict=False`, the lenient mode
//! skips a mismatched tensor and lists it (as timm's and transformers' "ignore mismatched
//! sizes" do). The strict mode checks everything first and loads nothing when one key does not
//! fit, so a refused checkpoint never leaves a half-loaded model. Values are cast to each var's
//! dtype and moved to its device.
//!
//! # Example
//! ```
//! use std::collections::HashMap;
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_tricks::transfer::load_state_dict;
//! # fn main() -> candle_tricks::Result<()> {
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! let _backbone = candle_nn::linear(8, 16, vb.pp("backbone"))?;
//! let _head = candle_nn::linear(16, 3, vb.pp("head"))?; // 3 classes; the checkpoint has 5
//!
//! let mut ckpt = HashMap::new();
//! ckpt.insert("backbone.weight".to_string(), Tensor::ones((16, 8), DType::F32, &dev)?);
//! ckpt.insert("backbone.bias".to_string(), Tensor::ones(16, DType::F32, &dev)?);
//! ckpt.insert("head.weight".to_string(), Tensor::ones((5, 16), DType::F32, &dev)?);
//! ckpt.insert("head.bias".to_string(), Tensor::ones(5, DType::F32, &dev)?);
//!
//! assert!(load_state_dict(&varmap, &ckpt, true).is_err()); // strict: refused, nothing loaded
//! let report = load_state_dict(&varmap, &ckpt, false)?; // lenient
//! assert_eq!(report.loaded, ["backbone.bias", "backbone.weight"]);
//! assert!(report.missing.is_empty() && report.unexpected.is_empty());
//! assert_eq!(report.mismatched[0].name, "head.bias");
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Yosinski et al., *How transferable are features in deep neural networks?*, 2014,
//!   <https://arxiv.org/abs/1411.1792>

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use candle_core::{Shape, Tensor};
use candle_nn::VarMap;

use crate::{Error, Result};

const BLOCK: &str = "load_state_dict";

/// A checkpoint tensor whose name the model has, with another shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMismatch {
    /// The tensor name.
    pub name: String,
    /// The model's shape.
    pub expected: Shape,
    /// The checkpoint's shape.
    pub actual: Shape,
}

/// What [`load_state_dict`] did: every list sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Model vars that received the checkpoint's value.
    pub loaded: Vec<String>,
    /// Model vars the checkpoint does not hold (left as they were).
    pub missing: Vec<String>,
    /// Checkpoint keys the model does not have (ignored).
    pub unexpected: Vec<String>,
    /// Keys present on both sides with different shapes (left as they were).
    pub mismatched: Vec<KeyMismatch>,
}

impl LoadReport {
    /// Whether every model var was loaded and every checkpoint key used.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl fmt::Display for LoadReport {
    /// One line per non-empty list: the keys of each.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} loaded", self.loaded.len())?;
        if !self.missing.is_empty() {
            write!(f, "; missing keys: {}", self.missing.join(", "))?;
        }
        if !self.unexpected.is_empty() {
            write!(f, "; unexpected keys: {}", self.unexpected.join(", "))?;
        }
        if !self.mismatched.is_empty() {
            let m: Vec<String> = self
                .mismatched
                .iter()
                .map(|k| {
                    format!(
                        "{} (model {:?}, checkpoint {:?})",
                        k.name, k.expected, k.actual
                    )
                })
                .collect();
            write!(f, "; shape mismatches: {}", m.join(", "))?;
        }
        Ok(())
    }
}

/// Copies the tensors of `state` into the vars of `varmap` with the same name and shape, and
/// reports the missing, unexpected and mismatched keys.
///
/// With `strict`, a report that is not exact is an error (naming `load_state_dict` and listing
/// the keys) and no var is changed; without, the matching tensors are loaded and the report is
/// returned. Errors as well when a checkpoint value cannot be cast to its var's dtype.
pub fn load_state_dict(
    varmap: &VarMap,
    state: &HashMap<String, Tensor>,
    strict: bool,
) -> Result<LoadReport> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut report = LoadReport::default();
    let mut to_load = Vec::new();
    for (name, var) in data.iter() {
        match state.get(name) {
            None => report.missing.push(name.clone()),
            Some(value) if value.shape() != var.shape() => report.mismatched.push(KeyMismatch {
                name: name.clone(),
                expected: var.shape().clone(),
                actual: value.shape().clone(),
            }),
            Some(value) => to_load.push((name, var, value)),
        }
    }
    report.unexpected = state
        .keys()
        .filter(|k| !data.contains_key(*k))
        .cloned()
        .collect();
    report.missing.sort();
    report.unexpected.sort();
    report.mismatched.sort_by(|a, b| a.name.cmp(&b.name));
    if strict && !report.is_exact() {
        return Err(Error::config(
            BLOCK,
            format!("strict load refused, nothing loaded: {report}"),
        ));
    }
    to_load.sort_by(|a, b| a.0.cmp(b.0));
    for (name, var, value) in to_load {
        let value = value.to_device(var.device())?.to_dtype(var.dtype())?;
        var.set(&value)?;
        report.loaded.push(name.clone());
    }
    Ok(report)
}

/// [`load_state_dict`] from a `.safetensors` file (loaded on the CPU, then moved to each var's
/// device).
pub fn load_safetensors(
    varmap: &VarMap,
    path: impl AsRef<Path>,
    strict: bool,
) -> Result<LoadReport> {
    let state = candle_core::safetensors::load(path.as_ref(), &candle_core::Device::Cpu)?;
    load_state_dict(varmap, &state, strict)
}
