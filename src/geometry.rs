//! Padding modes and the output-size arithmetic every convolution and pooling layer shares (and
//! the ops under them, hence its place below both; [`crate::conv`] re-exports it as
//! `conv::padding`).
//!
//! # Shapes
//! For one spatial axis of length $n$, kernel $k$, stride $s$, dilation $d$ and padding
//! $p_b$ (before) + $p_a$ (after), the kernel's extent is $e = d(k-1)+1$ and
//!
//! $$ n_{out} = \left\lfloor \frac{n + p_b + p_a - e}{s} \right\rfloor + 1 $$
//!
//! # Tip
//! Padding keeps information at the borders: without it a pixel on the edge is seen by one
//! kernel position while a central pixel is seen by $k^2$, and every `Valid` layer shrinks the map
//! by $e - 1$. `Same` padding makes $n_{out} = \lceil n / s \rceil$ for any kernel, stride and
//! dilation (TensorFlow's rule); when the total padding is odd the extra zero goes *after*, so an
//! even kernel or a stride that does not divide the input pads asymmetrically. PyTorch's
//! `padding="same"` (stride 1 only) and timm's `get_padding` agree with it whenever the padding is
//! symmetric.
//!
//! # Example
//! ```
//! use candle_tricks::conv::Padding;
//! // A dilated 3x3 (extent 5) at stride 1 keeps a 17-pixel axis with two zeros on each side.
//! assert_eq!(Padding::Same.resolve(17, 3, 1, 2), (2, 2));
//! assert_eq!(Padding::Same.output_size(17, 3, 1, 2), Some(17));
//! // Stride 2 halves, rounding up, whatever the kernel.
//! assert_eq!(Padding::Same.output_size(17, 7, 2, 1), Some(9));
//! // Valid shrinks by the extent minus one; Explicit pads both sides.
//! assert_eq!(Padding::Valid.output_size(17, 3, 1, 1), Some(15));
//! assert_eq!(Padding::Explicit(1).output_size(17, 3, 1, 1), Some(17));
//! // A kernel larger than the (padded) input has no valid position.
//! assert_eq!(Padding::Valid.output_size(2, 3, 1, 1), None);
//! ```
//!
//! # References
//! - Dumoulin & Visin, *A guide to convolution arithmetic for deep learning*, 2016,
//!   <https://arxiv.org/abs/1603.07285>

/// How a convolution or pooling layer pads each spatial axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// No padding: only positions where the kernel fits entirely inside the input.
    Valid,
    /// Pad so that the output length is `ceil(input / stride)`; the odd zero goes after.
    #[default]
    Same,
    /// The same number of zeros on both sides of every spatial axis (PyTorch's `padding=p`).
    Explicit(usize),
}

impl Padding {
    /// Zeros added `(before, after)` on an axis of length `input` for this kernel, stride and
    /// dilation. Degenerate arguments (stride 0, kernel 0) resolve as if they were 1; callers
    /// validate them first and [`Padding::output_size`] reports them. `Same` padding larger than
    /// `usize::MAX` (a dilation near `usize::MAX`) saturates; [`Padding::checked_resolve`]
    /// reports it instead.
    pub fn resolve(
        self,
        input: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
    ) -> (usize, usize) {
        self.checked_resolve(input, kernel, stride, dilation)
            .unwrap_or((usize::MAX, usize::MAX))
    }

    /// [`Padding::resolve`], or `None` when the padding does not fit in `usize`.
    pub fn checked_resolve(
        self,
        input: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
    ) -> Option<(usize, usize)> {
        match self {
            Padding::Valid => Some((0, 0)),
            Padding::Explicit(p) => Some((p, p)),
            Padding::Same => {
                let stride = stride.max(1);
                let out = input.div_ceil(stride);
                let needed = out
                    .saturating_sub(1)
                    .checked_mul(stride)?
                    .checked_add(checked_extent(kernel, dilation)?)?;
                let total = needed.saturating_sub(input);
                Some((total / 2, total - total / 2))
            }
        }
    }

    /// Output length on an axis of length `input`, or `None` when the kernel's extent exceeds the
    /// padded input, the kernel, stride or dilation is zero, or a size overflows `usize`.
    pub fn output_size(
        self,
        input: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
    ) -> Option<usize> {
        let (before, after) = self.checked_resolve(input, kernel, stride, dilation)?;
        output_size(input, kernel, stride, dilation, before, after)
    }
}

/// The span of input a dilated kernel covers: `dilation * (kernel - 1) + 1`, saturating at
/// `usize::MAX` ([`checked_extent`] reports the overflow instead).
pub fn extent(kernel: usize, dilation: usize) -> usize {
    checked_extent(kernel, dilation).unwrap_or(usize::MAX)
}

/// [`extent`], or `None` when it overflows `usize`.
pub fn checked_extent(kernel: usize, dilation: usize) -> Option<usize> {
    dilation
        .max(1)
        .checked_mul(kernel.saturating_sub(1))?
        .checked_add(1)
}

/// Output length for explicit `(before, after)` padding, or `None` when the kernel does not fit,
/// kernel, stride or dilation is zero, or the padded length or the extent overflows `usize`.
pub fn output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    before: usize,
    after: usize,
) -> Option<usize> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return None;
    }
    let padded = input.checked_add(before)?.checked_add(after)?;
    let e = checked_extent(kernel, dilation)?;
    (padded >= e).then(|| (padded - e) / stride + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_matches_ceil_div_for_all_small_cases() {
        for input in 1..20 {
            for kernel in 1..8 {
                for stride in 1..4 {
                    for dilation in 1..4 {
                        let out = Padding::Same.output_size(input, kernel, stride, dilation);
                        assert_eq!(
                            out,
                            Some(input.div_ceil(stride)),
                            "{input} {kernel} {stride} {dilation}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn same_matches_timm_get_padding_when_symmetric() {
        // timm: ((stride - 1) + dilation * (kernel - 1)) // 2, for stride 1 and odd extents.
        for kernel in [1usize, 3, 5, 7] {
            for dilation in 1..4 {
                let timm = (dilation * (kernel - 1)) / 2;
                assert_eq!(Padding::Same.resolve(32, kernel, 1, dilation), (timm, timm));
            }
        }
    }

    #[test]
    fn degenerate_arguments_have_no_output() {
        assert_eq!(output_size(5, 0, 1, 1, 0, 0), None);
        assert_eq!(output_size(5, 3, 0, 1, 0, 0), None);
        assert_eq!(output_size(5, 3, 1, 0, 0, 0), None);
    }
}
