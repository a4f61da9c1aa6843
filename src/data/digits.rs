//! The UCI handwritten digits (scikit-learn's `load_digits`), embedded.
//!
//! # Shapes
//! - [`Digits::images`]: `(N, 1, 8, 8)` f32, grey levels scaled from 0..16 to $[0, 1]$.
//! - [`Digits::labels`]: `(N,)` u32, the digit 0–9.
//!
//! # Tip
//! Keep a held-out split that the model never sees during tuning, and split *per class*
//! (stratified): with 180 samples a class, a random 20 % split can leave one class with 25 test
//! samples and another with 45, and the accuracy then measures the split as much as the model.
//! [`Digits::split`] draws the same fraction from every class, reproducibly for a seed.
//!
//! # Example
//! ```
//! use candle_core::Device;
//! use candle_tricks::data::digits;
//! # fn main() -> candle_tricks::Result<()> {
//! let all = digits(&Device::Cpu)?;
//! assert_eq!(all.images().dims(), &[1797, 1, 8, 8]);
//! let (train, test) = all.split(0.2, 0)?;
//! assert_eq!(train.len() + test.len(), 1797);
//! // Every class keeps its share in the test split (17 % to 23 % of each class's ~180 samples).
//! let counts = test.class_counts()?;
//! assert!(counts.iter().all(|&c| (30..=40).contains(&c)));
//! // The unseen-class setting of zero-shot learning: keep only some digits.
//! let seen = all.select_classes(&[0, 1, 2, 3, 4, 5])?;
//! assert!(seen.labels().to_vec1::<u32>()?.iter().all(|&d| d < 6));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - Alpaydin, Kaynak, *Optical Recognition of Handwritten Digits*, UCI Machine Learning
//!   Repository, 1998, <https://doi.org/10.24432/C50P49> (CC BY 4.0).
//! - scikit-learn's copy, `sklearn.datasets.load_digits` (BSD-3-Clause), exported by
//!   `data/gen_digits.py`.

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The embedded file written by `data/gen_digits.py`: `images` `(1797, 8, 8)` u8 in 0..16 and
/// `labels` `(1797,)` u8.
const DIGITS: &[u8] = include_bytes!("../../data/digits.safetensors");

/// Number of classes (the digits 0–9).
pub const CLASSES: usize = 10;

/// A set of digit images with their labels; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Digits {
    images: Tensor,
    labels: Tensor,
}

/// Loads all 1797 digits onto `device`: images `(1797, 1, 8, 8)` f32 in $[0, 1]$, labels
/// `(1797,)` u32.
pub fn digits(device: &Device) -> Result<Digits> {
    let tensors = candle_core::safetensors::load_buffer(DIGITS, &Device::Cpu)?;
    let field = |name: &str| {
        tensors
            .get(name)
            .cloned()
            .ok_or_else(|| Error::config("digits", format!("embedded file has no tensor `{name}`")))
    };
    let images = (field("images")?.to_dtype(DType::F32)? / 16.0)?.unsqueeze(1)?;
    let labels = field("labels")?.to_dtype(DType::U32)?;
    Ok(Digits {
        images: images.to_device(device)?,
        labels: labels.to_device(device)?,
    })
}

impl Digits {
    /// The images, `(N, 1, 8, 8)` f32 in $[0, 1]$.
    pub fn images(&self) -> &Tensor {
        &self.images
    }

    /// The labels, `(N,)` u32 in 0..10.
    pub fn labels(&self) -> &Tensor {
        &self.labels
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.dims1().unwrap_or(0)
    }

    /// Whether the set holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples at `indices`, in that order. An index past the end is an error.
    pub fn select(&self, indices: &[usize]) -> Result<Digits> {
        let n = self.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::config(
                "Digits::select",
                format!("index {bad} out of range for {n} samples"),
            ));
        }
        let idx: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
        let idx = Tensor::from_vec(idx, indices.len(), self.labels.device())?;
        Ok(Digits {
            images: self.images.index_select(&idx, 0)?,
            labels: self.labels.index_select(&idx, 0)?,
        })
    }

    /// The samples whose digit is in `classes` (labels unchanged), in their original order.
    pub fn select_classes(&self, classes: &[u32]) -> Result<Digits> {
        if let Some(&bad) = classes.iter().find(|&&c| c as usize >= CLASSES) {
            return Err(Error::config(
                "Digits::select_classes",
                format!("class {bad} is not a digit (expected 0..{CLASSES})"),
            ));
        }
        let labels = self.labels.to_vec1::<u32>()?;
        let keep: Vec<usize> = (0..labels.len())
            .filter(|&i| classes.contains(&labels[i]))
            .collect();
        self.select(&keep)
    }

    /// How many samples each digit has, indexed by digit.
    pub fn class_counts(&self) -> Result<[usize; CLASSES]> {
        let mut counts = [0; CLASSES];
        for label in self.labels.to_vec1::<u32>()? {
            if let Some(c) = counts.get_mut(label as usize) {
                *c += 1;
            }
        }
        Ok(counts)
    }

    /// A stratified, shuffled split `(train, test)`: from each class, `round(test_fraction · n_c)`
    /// samples go to the test set. The same `seed` gives the same split; `test_fraction` must be
    /// in $[0, 1]$.
    pub fn split(&self, test_fraction: f64, seed: u64) -> Result<(Digits, Digits)> {
        if !(0.0..=1.0).contains(&test_fraction) {
            return Err(Error::config(
                "Digits::split",
                format!("test_fraction must be in [0, 1], got {test_fraction}"),
            ));
        }
        let labels = self.labels.to_vec1::<u32>()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for class in 0..CLASSES as u32 {
            let mut members: Vec<usize> =
                (0..labels.len()).filter(|&i| labels[i] == class).collect();
            members.shuffle(&mut rng);
            let n_test = (test_fraction * members.len() as f64).round() as usize;
            test.extend_from_slice(&members[..n_test]);
            train.extend_from_slice(&members[n_test..]);
        }
        // Interleave the classes so that minibatches in index order are not single-class.
        train.shuffle(&mut rng);
        test.shuffle(&mut rng);
        Ok((self.select(&train)?, self.select(&test)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_every_sample_in_range() -> Result<()> {
        let d = digits(&Device::Cpu)?;
        assert_eq!(d.len(), 1797);
        assert_eq!(d.class_counts()?.iter().sum::<usize>(), 1797);
        let max = d.images().max_all()?.to_scalar::<f32>()?;
        let min = d.images().min_all()?.to_scalar::<f32>()?;
        assert_eq!((min, max), (0.0, 1.0));
        Ok(())
    }

    #[test]
    fn split_is_reproducible_and_disjoint() -> Result<()> {
        let d = digits(&Device::Cpu)?;
        let (a, b) = d.split(0.25, 7)?;
        let (c, _) = d.split(0.25, 7)?;
        assert_eq!(a.labels().to_vec1::<u32>()?, c.labels().to_vec1::<u32>()?);
        assert_eq!(a.len() + b.len(), 1797);
        assert!(d.split(1.5, 0).is_err());
        assert!(d.select(&[1797]).is_err());
        assert!(d.select_classes(&[10]).is_err());
        Ok(())
    }
}
