//! Saving and restoring the full optimizer state, so an interrupted training resumes exactly.
//!
//! The state dict of an optimizer holds, for parameter number `i` (in the order the optimizer
//! was built with: group by group, var by var):
//! - `{i}.step`: the steps this parameter has taken (0-d f64),
//! - `{i}.{buffer}`: each state buffer that exists (f32, the parameter's shape; Adafactor's
//!   `row_var` / `col_var` have the last or second-to-last dimension 1), e.g. `{i}.exp_avg`,
//!   `{i}.exp_avg_sq` for Adam,
//!
//! and the hyper-parameters as 0-d f64 tensors: `__meta.lr` (base learning rate),
//! `__meta.skipped_steps`, `__meta.num_params`, `__meta.group{j}.lr_mult`,
//! `__meta.group{j}.weight_decay` (-1 = the config's), and the optimizer's own (`__meta.beta1`,
//! `__meta.eps`, `__meta.amsgrad` as 0/1, …). Loading restores all of them.
//!
//! **The var order must match**: build the resumed optimizer over the same vars in the same
//! order (the [`VarMap`](candle_nn::VarMap) constructors of
//! [`ParamGroups`](crate::optim::ParamGroups) sort by name, so that holds for them). Loading checks
//! the parameter count and every buffer shape, and changes nothing when a check fails.
//!
//! # Tip
//! Restarting Adam from zeroed moments is not a resume: the bias correction starts over, the
//! first steps are as large as the very first ones ($\hat m / \sqrt{\hat v} \approx \pm 1$ per
//! coordinate), and a trained model can be knocked off its minimum. Save the optimizer state
//! next to the weights.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_nn::Optimizer;
//! use candle_tricks::optim::{Adam, AdamConfig, OptimizerState};
//! # fn main() -> candle_tricks::Result<()> {
//! let w = Var::new(&[1.0f32, -2.0], &Device::Cpu)?;
//! let mut opt = Adam::new(vec![w.clone()], AdamConfig::default())?;
//! opt.backward_step(&w.as_tensor().sqr()?.sum_all()?)?;
//! let path = std::env::temp_dir().join("candle_tricks_doc_adam_state.safetensors");
//! opt.save_state(&path)?;
//!
//! let w2 = Var::from_tensor(w.as_tensor())?;
//! let mut resumed = Adam::new(vec![w2], AdamConfig::default().with_lr(0.5))?;
//! resumed.load_state(&path)?;
//! assert_eq!(resumed.learning_rate(), 1e-3); // hyper-parameters come back too
//! # std::fs::remove_file(&path).ok();
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::Result;

/// Optimizers whose state can be saved and restored (every optimizer of this module).
pub trait OptimizerState {
    /// The full state: step counts, state buffers and hyper-parameters (see the module docs
    /// for the keys).
    fn state_dict(&self) -> Result<HashMap<String, Tensor>>;

    /// Restores a state written by [`OptimizerState::state_dict`] of the same optimizer kind
    /// over the same vars in the same order. Checks everything first; on error nothing changed.
    fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<()>;

    /// Writes [`OptimizerState::state_dict`] to a safetensors file.
    fn save_state<P: AsRef<Path>>(&self, path: P) -> Result<()> {
        let sd = self.state_dict()?;
        candle_core::safetensors::save(&sd, path)?;
        Ok(())
    }

    /// Reads a safetensors file written by [`OptimizerState::save_state`] and loads it.
    fn load_state<P: AsRef<Path>>(&mut self, path: P) -> Result<()> {
        let sd = candle_core::safetensors::load(path, &Device::Cpu)?;
        self.load_state_dict(&sd)
    }
}
