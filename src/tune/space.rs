//! A hyper-parameter search space: named dimensions, each mapped to and from one coordinate of the
//! unit hypercube, and the [`Config`] a point decodes to.
//!
//! # Shapes
//! A space of $d$ dimensions maps a point of $[0, 1]^d$ (what a [`crate::tune::Sampler`]
//! proposes) to a [`Config`], coordinate $i$ deciding dimension $i$ in the order the builder
//! added them:
//! - uniform on $[a, b]$: $a + u (b - a)$;
//! - log-uniform on $[a, b]$, $a > 0$: $\exp(\ln a + u (\ln b - \ln a))$;
//! - integer in $a..=b$: $a + \lfloor u (b - a + 1) \rfloor$, or with `log` the log-uniform map on
//!   $[a - 1/2, b + 1/2]$ rounded, so each integer gets the share of its log-width;
//! - categorical with $k$ choices: choice $\lfloor u k \rfloor$.
//!
//! A conditional dimension ([`SpaceBuilder::only_if`]) keeps its coordinate but is absent from the
//! config unless its categorical parent is active and takes one of the listed values, so
//! `momentum` exists only when `optimizer = "sgd"`. [`Space::point`] maps a config back to the
//! centre of its cell (inactive dimensions to $1/2$).
//!
//! # Tip: search on the scale the parameter acts on
//! A learning rate or a weight decay matters by its order of magnitude: between $10^{-5}$ and
//! $10^{-1}$, a uniform draw lands above $10^{-2}$ nine times out of ten, so the small rates
//! are barely tried. Draw them log-uniform, which spends the same share of the budget on every
//! decade. Widths, depths and batch sizes that span decades take a log integer; dropout,
//! momentum and mixing weights stay uniform. Conditional dimensions keep a study from spending
//! trials on parameters that do nothing (a momentum for Adam): the inactive coordinate is
//! ignored, so the sampler's effort goes into the parameters that are live.
//!
//! # Example
//! ```
//! use candle_tricks::tune::Space;
//! # fn main() -> candle_tricks::Result<()> {
//! let space = Space::builder()
//!     .log_uniform("lr", 1e-5, 1e-1)
//!     .categorical("optimizer", &["sgd", "adam"])
//!     .uniform("momentum", 0.0, 0.99)
//!     .only_if("optimizer", &["sgd"])
//!     .int("batch_size", 16, 256, true)
//!     .build()?;
//! assert_eq!(space.len(), 4);
//! let cfg = space.config(&[0.5, 0.75, 0.5, 0.0])?;
//! assert!((cfg.f64("lr")? - 1e-3).abs() < 1e-12); // the middle of the decades
//! assert_eq!(cfg.str("optimizer")?, "adam");
//! assert!(cfg.get("momentum").is_none()); // inactive for Adam
//! assert_eq!(cfg.i64("batch_size")?, 16);
//! assert_eq!(cfg.to_string(), "lr=0.001, optimizer=adam, batch_size=16");
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - J. Bergstra, Y. Bengio, *Random Search for Hyper-Parameter Optimization*, JMLR 13, 2012,
//!   <https://jmlr.org/papers/v13/bergstra12a.html>.

use std::fmt;

use crate::{Error, Result};

const BLOCK: &str = "Space";

/// How one dimension maps the unit interval to its values.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// A real number in `[low, high]`, uniform.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// A real number in `[low, high]`, uniform in its logarithm (`low > 0`).
    LogUniform {
        /// Lower bound (positive).
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// An integer in `low..=high`, uniform or (with `log`, `low >= 1`) log-uniform.
    Int {
        /// Lower bound, included.
        low: i64,
        /// Upper bound, included.
        high: i64,
        /// Uniform in the logarithm.
        log: bool,
    },
    /// One of a list of named choices.
    Categorical(Vec<String>),
}

/// A dimension is active only when a categorical parent takes one of `values`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The parent dimension's name (a categorical added before this dimension).
    pub parent: String,
    /// The parent's choices for which the dimension is active.
    pub values: Vec<String>,
}

/// One named dimension of a [`Space`].
#[derive(Debug, Clone, PartialEq)]
pub struct Dimension {
    /// The parameter's name.
    pub name: String,
    /// Its values.
    pub domain: Domain,
    /// When it is active (`None`: always).
    pub condition: Option<Condition>,
}

/// A parameter's value in a [`Config`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// From a uniform or log-uniform dimension.
    Float(f64),
    /// From an integer dimension.
    Int(i64),
    /// From a categorical dimension.
    Str(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Float(x) => f.write_str(&short_float(*x)),
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// `x` with six significant digits, without trailing zeros.
fn short_float(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let exp = x.abs().log10().floor() as i32;
    if (-4..6).contains(&exp) {
        let s = format!("{:.*}", (5 - exp).max(0) as usize, x);
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        let s = format!("{x:.5e}");
        match s.split_once('e') {
            Some((m, e)) if m.contains('.') => {
                format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
            }
            _ => s,
        }
    }
}

/// A sampled configuration: the active parameters by name, in the space's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    params: Vec<(String, Value)>,
}

impl Config {
    /// The parameter `name`, or `None` when it is inactive or unknown.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The active parameters in the space's order.
    pub fn params(&self) -> &[(String, Value)] {
        &self.params
    }

    fn require(&self, name: &str) -> Result<&Value> {
        self.get(name).ok_or_else(|| {
            Error::config(
                "Config",
                format!("no parameter `{name}` (unknown, or inactive in {self})"),
            )
        })
    }

    fn wrong_type(name: &str, wanted: &str, v: &Value) -> Error {
        Error::config(
            "Config",
            format!("parameter `{name}`: expected {wanted}, got {v:?}"),
        )
    }

    /// A real parameter (an integer one converts).
    pub fn f64(&self, name: &str) -> Result<f64> {
        match self.require(name)? {
            Value::Float(x) => Ok(*x),
            Value::Int(i) => Ok(*i as f64),
            v => Err(Self::wrong_type(name, "a number", v)),
        }
    }

    /// An integer parameter.
    pub fn i64(&self, name: &str) -> Result<i64> {
        match self.require(name)? {
            Value::Int(i) => Ok(*i),
            v => Err(Self::wrong_type(name, "an integer", v)),
        }
    }

    /// A categorical parameter's choice.
    pub fn str(&self, name: &str) -> Result<&str> {
        match self.require(name)? {
            Value::Str(s) => Ok(s),
            v => Err(Self::wrong_type(name, "a categorical choice", v)),
        }
    }
}

impl fmt::Display for Config {
    /// `name=value` pairs separated by `, `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (n, v)) in self.params.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}={v}")?;
        }
        Ok(())
    }
}

/// Builds a [`Space`]; every check runs in [`SpaceBuilder::build`]. Names must be unique and
/// non-empty, without control characters, `=` or `,` (they appear in a config's `Display`).
#[derive(Debug, Clone, Default)]
pub struct SpaceBuilder {
    dims: Vec<Dimension>,
    /// A misuse found while chaining (a condition before any dimension), reported by `build`.
    misuse: Option<String>,
}

impl SpaceBuilder {
    fn push(mut self, name: &str, domain: Domain) -> Self {
        self.dims.push(Dimension {
            name: name.to_string(),
            domain,
            condition: None,
        });
        self
    }

    /// A real dimension, uniform in `[low, high]`.
    pub fn uniform(self, name: &str, low: f64, high: f64) -> Self {
        self.push(name, Domain::Uniform { low, high })
    }

    /// A real dimension, log-uniform in `[low, high]` (`0 < low < high`): rates, weight decay.
    pub fn log_uniform(self, name: &str, low: f64, high: f64) -> Self {
        self.push(name, Domain::LogUniform { low, high })
    }

    /// An integer dimension in `low..=high`; `log` draws it log-uniform (needs `low >= 1`).
    pub fn int(self, name: &str, low: i64, high: i64, log: bool) -> Self {
        self.push(name, Domain::Int { low, high, log })
    }

    /// A categorical dimension over `choices`.
    pub fn categorical(self, name: &str, choices: &[&str]) -> Self {
        let choices = choices.iter().map(|c| c.to_string()).collect();
        self.push(name, Domain::Categorical(choices))
    }

    /// Makes the dimension added last active only when the categorical `parent` (added before
    /// it) takes one of `values`.
    pub fn only_if(mut self, parent: &str, values: &[&str]) -> Self {
        let condition = Condition {
            parent: parent.to_string(),
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        match self.dims.last_mut() {
            Some(d) => d.condition = Some(condition),
            None => {
                self.misuse = Some(format!(
                    "only_if(`{parent}`) must follow the dimension it conditions"
                ))
            }
        }
        self
    }

    /// Checks every dimension and returns the space.
    pub fn build(self) -> Result<Space> {
        if let Some(m) = self.misuse {
            return Err(Error::config(BLOCK, m));
        }
        if self.dims.is_empty() {
            return Err(Error::config(
                BLOCK,
                "expected at least one dimension, got an empty space",
            ));
        }
        for (i, d) in self.dims.iter().enumerate() {
            check_dimension(d)?;
            if self.dims[..i].iter().any(|e| e.name == d.name) {
                return Err(Error::config(
                    BLOCK,
                    format!("duplicate dimension name `{}`", d.name),
                ));
            }
            if let Some(c) = &d.condition {
                check_condition(&d.name, c, &self.dims[..i])?;
            }
        }
        Ok(Space { dims: self.dims })
    }
}

fn check_dimension(d: &Dimension) -> Result<()> {
    let name = &d.name;
    let bad = |msg: String| Err(Error::config(BLOCK, format!("dimension `{name}`: {msg}")));
    if name.is_empty() || name.chars().any(|c| c.is_control() || c == '=' || c == ',') {
        return bad("expected a non-empty name without control characters, `=` or `,`".into());
    }
    match &d.domain {
        Domain::Uniform { low, high } | Domain::LogUniform { low, high } => {
            if !low.is_finite() || !high.is_finite() {
                return bad(format!("expected finite bounds, got [{low}, {high}]"));
            }
            if low >= high {
                return bad(format!("expected low < high, got [{low}, {high}]"));
            }
            if matches!(d.domain, Domain::LogUniform { .. }) && *low <= 0.0 {
                return bad(format!(
                    "a log-uniform dimension needs low > 0, got [{low}, {high}]"
                ));
            }
        }
        Domain::Int { low, high, log } => {
            if low > high {
                return bad(format!("expected low <= high, got {low}..={high}"));
            }
            if *log && *low < 1 {
                return bad(format!(
                    "a log integer dimension needs low >= 1, got {low}..={high}"
                ));
            }
            if high
                .checked_sub(*low)
                .and_then(|w| w.checked_add(1))
                .is_none()
            {
                return bad(format!("the range {low}..={high} overflows i64"));
            }
        }
        Domain::Categorical(choices) => {
            if choices.is_empty() {
                return bad("expected at least one choice, got none".into());
            }
            for (i, c) in choices.iter().enumerate() {
                if choices[..i].contains(c) {
                    return bad(format!("duplicate choice `{c}`"));
                }
            }
        }
    }
    Ok(())
}

fn check_condition(name: &str, c: &Condition, before: &[Dimension]) -> Result<()> {
    let parent = before.iter().find(|p| p.name == c.parent).ok_or_else(|| {
        Error::config(
            BLOCK,
            format!(
                "dimension `{name}` is conditioned on `{}`, expected a categorical added before it",
                c.parent
            ),
        )
    })?;
    let Domain::Categorical(choices) = &parent.domain else {
        return Err(Error::config(
            BLOCK,
            format!(
                "dimension `{name}` is conditioned on `{}`, which is not categorical",
                c.parent
            ),
        ));
    };
    if c.values.is_empty() {
        return Err(Error::config(
            BLOCK,
            format!("dimension `{name}`: a condition needs at least one parent value"),
        ));
    }
    if let Some(v) = c.values.iter().find(|v| !choices.contains(v)) {
        return Err(Error::config(
            BLOCK,
            format!(
                "dimension `{name}` is conditioned on `{}` = `{v}`, expected one of {choices:?}",
                c.parent
            ),
        ));
    }
    Ok(())
}

/// Named dimensions, each decided by one coordinate of the unit hypercube (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    dims: Vec<Dimension>,
}

impl Space {
    /// Starts an empty space.
    pub fn builder() -> SpaceBuilder {
        SpaceBuilder::default()
    }

    /// The dimensions, in coordinate order.
    pub fn dims(&self) -> &[Dimension] {
        &self.dims
    }

    /// The number of dimensions ($d$, the sampler's hypercube).
    pub fn len(&self) -> usize {
        self.dims.len()
    }

    /// Always `false`: [`SpaceBuilder::build`] refuses an empty space.
    pub fn is_empty(&self) -> bool {
        self.dims.is_empty()
    }

    /// Decodes a point of $[0, 1]^d$ into a config (inactive conditional dimensions absent).
    pub fn config(&self, point: &[f64]) -> Result<Config> {
        if point.len() != self.dims.len() {
            return Err(Error::config(
                BLOCK,
                format!(
                    "expected a point with {} coordinates, got {}",
                    self.dims.len(),
                    point.len()
                ),
            ));
        }
        if let Some((i, u)) = point
            .iter()
            .enumerate()
            .find(|(_, u)| !(0.0..=1.0).contains(*u))
        {
            return Err(Error::config(
                BLOCK,
                format!("expected coordinates in [0, 1], got {u} at {i}"),
            ));
        }
        let mut params: Vec<(String, Value)> = Vec::with_capacity(self.dims.len());
        for (d, &u) in self.dims.iter().zip(point) {
            if let Some(c) = &d.condition {
                // The parent comes first, so `params` already holds it when it is active.
                let on = params.iter().any(|(n, v)| {
                    n == &c.parent && matches!(v, Value::Str(s) if c.values.contains(s))
                });
                if !on {
                    continue;
                }
            }
            params.push((d.name.clone(), decode(&d.domain, u)));
        }
        Ok(Config { params })
    }

    /// Maps a config back to the point at the centre of its cell (inactive dimensions at $1/2$):
    /// `config(point(c)) == c` for a config of this space.
    pub fn point(&self, config: &Config) -> Result<Vec<f64>> {
        if let Some((n, _)) = config
            .params
            .iter()
            .find(|(n, _)| !self.dims.iter().any(|d| &d.name == n))
        {
            return Err(Error::config(
                BLOCK,
                format!("the config has a parameter `{n}` that the space lacks"),
            ));
        }
        self.dims
            .iter()
            .map(|d| match config.get(&d.name) {
                None => Ok(0.5),
                Some(v) => encode(d, v),
            })
            .collect()
    }
}

fn decode(domain: &Domain, u: f64) -> Value {
    match domain {
        Domain::Uniform { low, high } => Value::Float((low + u * (high - low)).clamp(*low, *high)),
        Domain::LogUniform { low, high } => {
            let x = (low.ln() + u * (high.ln() - low.ln())).exp();
            Value::Float(x.clamp(*low, *high))
        }
        Domain::Int { low, high, log } => {
            let x = if *log {
                let (a, b) = ((*low as f64 - 0.5).ln(), (*high as f64 + 0.5).ln());
                (a + u * (b - a)).exp().round()
            } else {
                // Width + 1 fits i64 (checked by `build`); as f64 it may round, the clamp fixes it.
                *low as f64 + (u * ((*high as f64 - *low as f64) + 1.0)).floor()
            };
            Value::Int((x as i64).clamp(*low, *high))
        }
        Domain::Categorical(choices) => {
            let k = choices.len();
            let i = ((u * k as f64) as usize).min(k - 1);
            Value::Str(choices[i].clone())
        }
    }
}

fn encode(d: &Dimension, v: &Value) -> Result<f64> {
    let mismatch = || {
        Error::config(
            BLOCK,
            format!(
                "parameter `{}`: {v:?} is not a value of {:?}",
                d.name, d.domain
            ),
        )
    };
    let u = match (&d.domain, v) {
        (Domain::Uniform { low, high }, Value::Float(x)) if (*low..=*high).contains(x) => {
            (x - low) / (high - low)
        }
        (Domain::LogUniform { low, high }, Value::Float(x)) if (*low..=*high).contains(x) => {
            (x.ln() - low.ln()) / (high.ln() - low.ln())
        }
        (Domain::Int { low, high, log }, Value::Int(i)) if (*low..=*high).contains(i) => {
            if *log {
                let (a, b) = ((*low as f64 - 0.5).ln(), (*high as f64 + 0.5).ln());
                // The centre of the cell in log space.
                let (lo, hi) = ((*i as f64 - 0.5).ln(), (*i as f64 + 0.5).ln());
                ((lo + hi) / 2.0 - a) / (b - a)
            } else {
                (*i as f64 - *low as f64 + 0.5) / (*high as f64 - *low as f64 + 1.0)
            }
        }
        (Domain::Categorical(choices), Value::Str(s)) => {
            let i = choices.iter().position(|c| c == s).ok_or_else(mismatch)?;
            (i as f64 + 0.5) / choices.len() as f64
        }
        _ => return Err(mismatch()),
    };
    Ok(u.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_floats_read_well() {
        assert_eq!(short_float(0.001), "0.001");
        assert_eq!(short_float(0.123456789), "0.123457");
        assert_eq!(short_float(1234.5), "1234.5");
        assert_eq!(short_float(3e-7), "3e-7");
        assert_eq!(short_float(-2.5e9), "-2.5e9");
        assert_eq!(short_float(0.0), "0");
    }
}
