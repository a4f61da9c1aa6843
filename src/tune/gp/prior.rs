//! Priors over the GP's positive hyper-parameters, for a maximum a posteriori fit.

/// A prior density over one positive hyper-parameter $v$, for a maximum a posteriori fit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HyperPrior {
    /// $\ln v \sim \mathcal{N}(\mathrm{loc}, \mathrm{scale}^2)$.
    LogNormal {
        /// Mean of $\ln v$.
        loc: f64,
        /// Standard deviation of $\ln v$ (> 0).
        scale: f64,
    },
    /// The Gamma density $\propto v^{a - 1} e^{-b v}$ with shape $a$ and rate $b$.
    Gamma {
        /// The shape $a$ (> 0).
        concentration: f64,
        /// The rate $b$ (> 0).
        rate: f64,
    },
}

impl HyperPrior {
    /// The log density at $v = e^t$ (up to its constant) and its derivative with respect to
    /// $t$: the fit works on log hyper-parameters, while the density is over the value.
    pub fn log_density(&self, t: f64) -> (f64, f64) {
        match *self {
            HyperPrior::LogNormal { loc, scale } => {
                let z = (t - loc) / scale;
                (-t - 0.5 * z * z, -1.0 - z / scale)
            }
            HyperPrior::Gamma {
                concentration,
                rate,
            } => {
                let v = t.exp();
                (
                    (concentration - 1.0) * t - rate * v,
                    concentration - 1.0 - rate * v,
                )
            }
        }
    }

    /// What is wrong with the parameters, as a message naming `what`; `None` when they are
    /// valid. Each caller reports it as its own block's error.
    pub(crate) fn problem(&self, what: &str) -> Option<String> {
        let (ok, params) = match *self {
            HyperPrior::LogNormal { loc, scale } => (
                loc.is_finite() && scale.is_finite() && scale > 0.0,
                (loc, scale),
            ),
            HyperPrior::Gamma {
                concentration,
                rate,
            } => (
                concentration.is_finite() && rate.is_finite() && concentration > 0.0 && rate > 0.0,
                (concentration, rate),
            ),
        };
        (!ok).then(|| {
            format!(
                "{what} must have finite parameters with a positive scale, shape and rate, got {params:?}"
            )
        })
    }
}
