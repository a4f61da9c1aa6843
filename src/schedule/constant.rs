//! A constant learning rate.

use super::{check_lr, LrSchedule};
use crate::Result;

const BLOCK: &str = "Constant";

/// The same learning rate at every step — the baseline every other schedule is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constant {
    lr: f64,
}

impl Constant {
    /// A constant schedule; errors when `lr` is negative or not finite.
    pub fn new(lr: f64) -> Result<Self> {
        check_lr(BLOCK, "lr", lr)?;
        Ok(Self { lr })
    }
}

impl LrSchedule for Constant {
    fn lr(&self, _step: usize) -> f64 {
        self.lr
    }
}
