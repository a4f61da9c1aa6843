//! [`Pruner`]: masks on named vars that persist through training, and the sparsity report.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use super::{global_unstructured, l1_unstructured, ln_structured, Amount};
use crate::{Error, Result};

const BLOCK: &str = "Pruner";

/// One pruned variable: its name, the var and its current mask (`None`: not pruned yet).
struct Entry {
    name: String,
    var: Var,
    mask: Option<Tensor>,
}

/// Pruning masks on named [`Var`]s, kept in force through training.
///
/// Prune with [`Pruner::l1_unstructured`], [`Pruner::ln_structured`] or
/// [`Pruner::global_unstructured`] (each zeroes the pruned weights at once), then call
/// [`Pruner::apply`] after every `opt.step()`: the optimizer's update (Adam's moments, a
/// gradient) moves pruned weights again and `apply` puts them back to exactly zero. Optionally
/// [`Pruner::mask_grads`] before the step zeroes their gradients as well, so the optimizer's
/// moment estimates for them stay zero. [`Pruner::make_permanent`] drops the masks and leaves
/// the weights zero.
///
/// A new pruning call sets the *total* sparsity of the var (already pruned entries count) and
/// never revives an entry: the new mask is the old one AND the new ranking.
pub struct Pruner {
    entries: Vec<Entry>,
}

impl Pruner {
    /// A pruner over `vars` (name, var), e.g. the weight matrices of a `VarMap`. Errors on a
    /// repeated name or a var that is not a float tensor.
    pub fn new<S: Into<String>>(vars: impl IntoIterator<Item = (S, Var)>) -> Result<Self> {
        let mut entries: Vec<Entry> = Vec::new();
        for (name, var) in vars {
            let name = name.into();
            if entries.iter().any(|e| e.name == name) {
                return Err(Error::config(BLOCK, format!("var `{name}` given twice")));
            }
            if !var.dtype().is_float() {
                return Err(Error::unsupported_dtype(
                    BLOCK,
                    name,
                    "a float dtype",
                    var.dtype(),
                ));
            }
            entries.push(Entry {
                name,
                var,
                mask: None,
            });
        }
        Ok(Self { entries })
    }

    fn entry_mut(&mut self, name: &str) -> Result<&mut Entry> {
        let known = || {
            let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
            names.join(", ")
        };
        let msg = format!("unknown var `{name}` (known: {})", known());
        self.entries
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or_else(|| Error::config(BLOCK, msg))
    }

    /// The names of the vars, in the order given.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// The current mask of `name` (`u8`, 1 = kept), `None` while it is not pruned; an error for
    /// an unknown name.
    pub fn mask(&self, name: &str) -> Result<Option<&Tensor>> {
        match self.entries.iter().find(|e| e.name == name) {
            Some(e) => Ok(e.mask.as_ref()),
            None => Err(Error::config(BLOCK, format!("unknown var `{name}`"))),
        }
    }

    /// Prunes the smallest-magnitude entries of `name` until `amount` of it is pruned.
    pub fn l1_unstructured(&mut self, name: &str, amount: impl Into<Amount>) -> Result<()> {
        let e = self.entry_mut(name)?;
        let mask = l1_unstructured(&masked(e)?, amount)?;
        set_mask(e, mask)
    }

    /// Prunes whole slices of `name` along `dim` by $L_n$ norm until `amount` of the slices
    /// are pruned (see [`ln_structured`]).
    pub fn ln_structured(
        &mut self,
        name: &str,
        amount: impl Into<Amount>,
        n: f64,
        dim: usize,
    ) -> Result<()> {
        let e = self.entry_mut(name)?;
        let mask = ln_structured(&masked(e)?, amount, n, dim)?;
        set_mask(e, mask)
    }

    /// Prunes the smallest-magnitude entries over all vars together until `amount` of all
    /// their entries is pruned.
    pub fn global_unstructured(&mut self, amount: impl Into<Amount>) -> Result<()> {
        let current: Vec<Tensor> = self.entries.iter().map(masked).collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = current.iter().collect();
        let masks = global_unstructured(&refs, amount)?;
        for (e, m) in self.entries.iter_mut().zip(masks) {
            set_mask(e, m)?;
        }
        Ok(())
    }

    /// Zeroes the pruned weights again; call after every optimizer step.
    pub fn apply(&self) -> Result<()> {
        for e in &self.entries {
            if let Some(m) = &e.mask {
                e.var.set(&zero_pruned(e.var.as_tensor(), m)?)?;
            }
        }
        Ok(())
    }

    /// Zeroes the gradients of the pruned weights in `grads` (call between `backward` and the
    /// optimizer step). Vars without a gradient are left alone.
    pub fn mask_grads(&self, grads: &mut GradStore) -> Result<()> {
        for e in &self.entries {
            let (Some(m), Some(g)) = (&e.mask, grads.get(e.var.as_tensor())) else {
                continue;
            };
            let g = zero_pruned(g, m)?;
            grads.insert(e.var.as_tensor(), g);
        }
        Ok(())
    }

    /// Zeroes the pruned weights one last time and drops the masks: the vars are plain
    /// weights with zeros again, free to be saved or trained (the zeros may then move).
    pub fn make_permanent(self) -> Result<Vec<(String, Var)>> {
        self.apply()?;
        Ok(self.entries.into_iter().map(|e| (e.name, e.var)).collect())
    }

    /// The zeros in each var and in all of them (counted in the weights, so exact after
    /// [`Pruner::apply`]).
    pub fn sparsity(&self) -> Result<SparsityReport> {
        let named: Vec<(&str, &Tensor)> = self
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.var.as_tensor()))
            .collect();
        sparsity_report(&named)
    }
}

/// The var's weights with the current mask applied (what a new ranking looks at).
fn masked(e: &Entry) -> Result<Tensor> {
    match &e.mask {
        Some(m) => zero_pruned(e.var.as_tensor(), m),
        None => Ok(e.var.as_tensor().clone()),
    }
}

/// Combines `mask` with the entry's old mask (never reviving an entry), stores it and zeroes
/// the pruned weights.
fn set_mask(e: &mut Entry, mask: Tensor) -> Result<()> {
    let mask = match &e.mask {
        Some(old) => old.minimum(&mask)?,
        None => mask,
    };
    e.var.set(&zero_pruned(e.var.as_tensor(), &mask)?)?;
    e.mask = Some(mask);
    Ok(())
}

/// `t` where `mask` is 1, exactly zero where it is 0 (a select, so Inf/NaN in pruned places
/// become 0 too rather than NaN).
fn zero_pruned(t: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok(mask.where_cond(t, &t.zeros_like()?)?)
}

/// Zeros and size of one tensor in a [`SparsityReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSparsity {
    /// The var's name.
    pub name: String,
    /// How many entries are exactly zero.
    pub zeros: usize,
    /// How many entries it has.
    pub total: usize,
}

impl LayerSparsity {
    /// `zeros / total` (0 for an empty tensor).
    pub fn fraction(&self) -> f64 {
        fraction(self.zeros, self.total)
    }
}

/// Sparsity per tensor and over all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparsityReport {
    /// One row per tensor, in the order given.
    pub layers: Vec<LayerSparsity>,
    /// Zeros over all tensors.
    pub zeros: usize,
    /// Entries over all tensors.
    pub total: usize,
}

impl SparsityReport {
    /// The global sparsity `zeros / total` (0 when there are no entries).
    pub fn fraction(&self) -> f64 {
        fraction(self.zeros, self.total)
    }
}

impl std::fmt::Display for SparsityReport {
    /// A table: name, zeros / total, percent; then the global line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for l in &self.layers {
            writeln!(
                f,
                "{:<32} {:>10} / {:<10} {:6.2} %",
                l.name,
                l.zeros,
                l.total,
                100.0 * l.fraction()
            )?;
        }
        write!(
            f,
            "{:<32} {:>10} / {:<10} {:6.2} %",
            "global",
            self.zeros,
            self.total,
            100.0 * self.fraction()
        )
    }
}

fn fraction(zeros: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        zeros as f64 / total as f64
    }
}

/// Counts the exact zeros of each named tensor (`-0.0` counts as zero).
pub fn sparsity_report(tensors: &[(&str, &Tensor)]) -> Result<SparsityReport> {
    let mut layers = Vec::with_capacity(tensors.len());
    let (mut zeros, mut total) = (0usize, 0usize);
    for (name, t) in tensors {
        let z = t
            .flatten_all()?
            .eq(0.0)?
            .to_dtype(candle_core::DType::I64)?;
        let z = z.sum_all()?.to_scalar::<i64>()? as usize;
        let n = t.elem_count();
        zeros = zeros
            .checked_add(z)
            .ok_or_else(|| Error::config("sparsity_report", "zero count overflows"))?;
        total = total
            .checked_add(n)
            .ok_or_else(|| Error::config("sparsity_report", "size overflows"))?;
        layers.push(LayerSparsity {
            name: name.to_string(),
            zeros: z,
            total: n,
        });
    }
    Ok(SparsityReport {
        layers,
        zeros,
        total,
    })
}
