//! [`MuonWithAdamW`]: one optimizer over a whole model, [`Muon`] for the hidden 2-D weight
//! matrices and [`AdamW`] for the rest (embeddings, output head, biases, norm gains), the
//! combination every Muon recipe uses.
//!
//! The split is a predicate on the var name and the var; the default [`is_muon_param`] takes
//! the 2-D vars except embeddings and heads. The AdamW side gets two groups, decayed and not
//! ([`is_no_decay`]: biases, norms, 1-D parameters).
//!
//! # Tip
//! Muon's learning rate lives on another scale than AdamW's (0.02 with the `Original` scaling
//! against about 3e-4 to 3e-3 for AdamW); `set_learning_rate` (a schedule) moves both by the
//! same factor, keeping their ratio. With [`AdjustLr::MatchRmsAdamW`](super::AdjustLr::MatchRmsAdamW) both sides can share
//! AdamW's tuned rate and weight decay.
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{Optimizer, VarBuilder, VarMap};
//! use candle_tricks::optim::{AdamWConfig, MuonConfig, MuonWithAdamW};
//! # fn main() -> candle_tricks::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let emb = candle_nn::embedding(10, 8, vb.pp("embed"))?;
//! let fc = candle_nn::linear(8, 8, vb.pp("fc"))?;
//! let head = candle_nn::linear(8, 10, vb.pp("head"))?;
//! let muon = MuonConfig::default().with_lr(0.02);
//! let mut opt = MuonWithAdamW::from_varmap(&varmap, muon, AdamWConfig::default())?;
//! // fc.weight goes to Muon; embed.weight, head.weight and the biases to AdamW.
//! assert_eq!(opt.num_muon_params(), 1);
//! assert_eq!(opt.num_adamw_params(), 4);
//! let x = emb.forward(&Tensor::new(&[1u32, 2, 3], &Device::Cpu)?)?;
//! let loss = head.forward(&fc.forward(&x)?)?.sqr()?.mean_all()?;
//! opt.backward_step(&loss)?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;

use super::checkpoint::{prefixed, unprefixed};
use super::fused::first_non_finite;
use super::groups::sorted_vars;
use super::{
    is_no_decay, AdamW, AdamWConfig, Muon, MuonConfig, NonFinite, OptimizerState, ParamGroup,
    ParamGroups,
};
use crate::{Error, Result};

const NAME: &str = "MuonWithAdamW";

/// The default split of [`MuonWithAdamW::from_varmap`]: `true` (Muon) for 2-D vars that are
/// not embeddings or output heads and not exempt from decay ([`is_no_decay`]). A name is an
/// embedding when a dot-separated component contains `embed` or is `wte` / `wpe`, a head when
/// a component is `head`, `classifier` or ends in `_head` (`lm_head`).
pub fn is_muon_param(name: &str, var: &Var) -> bool {
    var.rank() == 2
        && !is_no_decay(name, 2)
        && !name.split('.').any(|c| {
            let c = c.to_ascii_lowercase();
            c.contains("embed")
                || matches!(c.as_str(), "wte" | "wpe" | "head" | "classifier")
                || c.ends_with("_head")
        })
}

/// Muon for the hidden matrices, AdamW for the rest; see the [module docs](self).
#[derive(Debug)]
pub struct MuonWithAdamW {
    muon: Option<Muon>,
    adamw: Option<AdamW>,
    /// AdamW's rate over Muon's at construction: `set_learning_rate` keeps it.
    adamw_ratio: f64,
    non_finite: NonFinite,
    skipped: u64,
}

impl MuonWithAdamW {
    /// The two optimizers over explicit groups (either side may be empty, not both). The
    /// non-finite policy is the Muon config's, for both.
    pub fn new(
        muon_groups: impl Into<ParamGroups>,
        muon: MuonConfig,
        adamw_groups: impl Into<ParamGroups>,
        adamw: AdamWConfig,
    ) -> Result<Self> {
        let count = |g: &ParamGroups| g.groups().iter().map(ParamGroup::len).sum::<usize>();
        let (mg, ag) = (muon_groups.into(), adamw_groups.into());
        if count(&mg) + count(&ag) == 0 {
            return Err(Error::config(NAME, "no parameters to optimize"));
        }
        let adamw = adamw.with_non_finite(muon.non_finite);
        let adamw_ratio = if muon.lr > 0.0 {
            adamw.lr / muon.lr
        } else {
            1.0
        };
        Ok(Self {
            muon: (count(&mg) > 0)
                .then(|| Muon::with_groups(mg, muon))
                .transpose()?,
            adamw: (count(&ag) > 0)
                .then(|| AdamW::with_groups(ag, adamw))
                .transpose()?,
            adamw_ratio,
            non_finite: muon.non_finite,
            skipped: 0,
        })
    }

    /// The trainable vars of `varmap` split by [`is_muon_param`].
    pub fn from_varmap(varmap: &VarMap, muon: MuonConfig, adamw: AdamWConfig) -> Result<Self> {
        Self::from_varmap_with(varmap, muon, adamw, is_muon_param)
    }

    /// The trainable vars of `varmap` (sorted by name) split by `use_muon(name, var)`: Muon
    /// for those it selects (they must be 2-D), AdamW for the rest in two groups, decayed and
    /// [`is_no_decay`] (weight decay 0).
    pub fn from_varmap_with(
        varmap: &VarMap,
        muon: MuonConfig,
        adamw: AdamWConfig,
        use_muon: impl Fn(&str, &Var) -> bool,
    ) -> Result<Self> {
        let (m, rest): (Vec<_>, Vec<_>) = sorted_vars(varmap)
            .into_iter()
            .partition(|(n, v)| use_muon(n, v));
        let (no, yes): (Vec<_>, Vec<_>) = rest
            .into_iter()
            .partition(|(n, v)| is_no_decay(n, v.rank()));
        let adamw_groups = vec![
            ParamGroup::named(yes),
            ParamGroup::named(no).with_weight_decay(0.0),
        ];
        Self::new(vec![ParamGroup::named(m)], muon, adamw_groups, adamw)
    }

    /// One step of both optimizers. Every gradient is checked for NaN/Inf first, so a bad one
    /// on either side leaves both untouched.
    pub fn try_step(&mut self, grads: &GradStore) -> Result<()> {
        let vars = self.vars();
        let gs: Vec<&Tensor> = vars.iter().filter_map(|v| grads.get(v)).collect();
        if let Some(bad) = first_non_finite(&gs)? {
            match self.non_finite {
                NonFinite::Error => {
                    return Err(Error::non_finite(
                        NAME,
                        format!("gradient number {bad} of the step (step not taken)"),
                    ))
                }
                NonFinite::Skip => {
                    self.skipped += 1;
                    return Ok(());
                }
            }
        }
        if let Some(m) = &mut self.muon {
            m.try_step(grads)?;
        }
        if let Some(a) = &mut self.adamw {
            a.try_step(grads)?;
        }
        Ok(())
    }

    /// The Muon side, if it has parameters.
    pub fn muon(&self) -> Option<&Muon> {
        self.muon.as_ref()
    }

    /// The AdamW side, if it has parameters.
    pub fn adamw(&self) -> Option<&AdamW> {
        self.adamw.as_ref()
    }

    /// Number of parameters Muon updates.
    pub fn num_muon_params(&self) -> usize {
        self.muon.as_ref().map_or(0, |m| m.vars().len())
    }

    /// Number of parameters AdamW updates.
    pub fn num_adamw_params(&self) -> usize {
        self.adamw.as_ref().map_or(0, |a| a.num_params())
    }

    /// All the parameters: Muon's, then AdamW's.
    pub fn vars(&self) -> Vec<Var> {
        let mut v = self.muon.as_ref().map(Muon::vars).unwrap_or_default();
        v.extend(self.adamw.as_ref().map(AdamW::vars).unwrap_or_default());
        v
    }

    /// Steps skipped because a gradient held NaN or Inf (policy `NonFinite::Skip`).
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }
}

impl candle_nn::Optimizer for MuonWithAdamW {
    /// The two configurations; [`Optimizer::new`](candle_nn::Optimizer::new) gives Muon the
    /// 2-D vars and AdamW the others (no names to tell an embedding: use
    /// [`MuonWithAdamW::from_varmap`] for that).
    type Config = (MuonConfig, AdamWConfig);

    fn new(vars: Vec<Var>, (muon, adamw): Self::Config) -> candle_core::Result<Self> {
        let (m, a): (Vec<_>, Vec<_>) = vars.into_iter().partition(|v| v.rank() == 2);
        Ok(Self::new(m, muon, a, adamw)?)
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        Ok(self.try_step(grads)?)
    }

    /// Muon's rate (AdamW's when there is no Muon parameter).
    fn learning_rate(&self) -> f64 {
        match (&self.muon, &self.adamw) {
            (Some(m), _) => m.config().lr,
            (None, Some(a)) => a.config().lr,
            (None, None) => 0.0,
        }
    }

    /// Sets Muon's rate to `lr` and AdamW's to `lr` times their ratio at construction.
    fn set_learning_rate(&mut self, lr: f64) {
        let adamw_lr = match &self.muon {
            Some(_) => lr * self.adamw_ratio,
            None => lr,
        };
        if let Some(m) = &mut self.muon {
            candle_nn::Optimizer::set_learning_rate(m, lr);
        }
        if let Some(a) = &mut self.adamw {
            candle_nn::Optimizer::set_learning_rate(a, adamw_lr);
        }
    }
}

impl OptimizerState for MuonWithAdamW {
    /// Muon's entries under `muon.`, AdamW's under `adamw.`.
    fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        let mut m = HashMap::new();
        if let Some(o) = &self.muon {
            m.extend(prefixed("muon", o.state_dict()?));
        }
        if let Some(o) = &self.adamw {
            m.extend(prefixed("adamw", o.state_dict()?));
        }
        Ok(m)
    }

    /// Loads both sides; if the second fails, the first is put back as it was.
    fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let before = match &self.muon {
            Some(o) => Some(o.state_dict()?),
            None => None,
        };
        if let Some(o) = &mut self.muon {
            o.load_state_dict(&unprefixed("muon", state))?;
        }
        if let Some(o) = &mut self.adamw {
            if let Err(e) = o.load_state_dict(&unprefixed("adamw", state)) {
                if let (Some(m), Some(sd)) = (&mut self.muon, before) {
                    m.load_state_dict(&sd)?;
                }
                return Err(e);
            }
        }
        Ok(())
    }
}
