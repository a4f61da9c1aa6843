//! Window geometry of the pools: PyTorch's output-size rule and, per axis, the input taps every
//! output index reads. Everything is computed in `i128` from validated sizes, so no
//! intermediate overflows whatever the config holds.

/// The taps one output index reads on one axis: `count` inputs `start, start + step, …`, all
/// inside the input, and `span`, the window's length clipped to the padded input (average
/// pooling's `count_include_pad` divisor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taps {
    pub(crate) start: usize,
    pub(crate) count: usize,
    pub(crate) step: usize,
    pub(crate) span: usize,
}

impl Taps {
    /// The one input `i` (an axis a pool leaves alone, as the depth of a 2-D pool).
    pub(crate) fn single(i: usize) -> Self {
        Taps {
            start: i,
            count: 1,
            step: 1,
            span: 1,
        }
    }

    /// The input indices, in order.
    #[inline(always)]
    pub(crate) fn indices(self) -> impl DoubleEndedIterator<Item = usize> {
        (0..self.count).map(move |j| self.start + j * self.step)
    }
}

/// One axis of a windowed pool: kernel, stride, padding, dilation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) padding: usize,
    pub(crate) dilation: usize,
}

impl Window {
    /// PyTorch's `pooling_output_shape` for an input of length `n`: floor (or ceil) of
    /// `(n + 2p - d(k - 1) - 1) / s + 1`, and with `ceil_mode` one fewer when the last window
    /// would start past the input and its left padding. `None` when that is below 1 or
    /// beyond `usize`.
    pub(crate) fn output_size(self, n: usize, ceil_mode: bool) -> Option<usize> {
        let [n, k, s, p, d] =
            [n, self.kernel, self.stride, self.padding, self.dilation].map(|v| v as i128);
        if s == 0 || k == 0 || d == 0 {
            return None;
        }
        let num = n + 2 * p - d * (k - 1) - 1 + if ceil_mode { s - 1 } else { 0 };
        let mut out = num.div_euclid(s) + 1;
        if ceil_mode && (out - 1) * s >= n + p {
            out -= 1;
        }
        (out >= 1)
            .then_some(out)
            .and_then(|o| usize::try_from(o).ok())
    }

    /// The taps of outputs `0..out` on an input of length `n` (PyTorch's loops: a max window
    /// keeps its taps inside the input; an average window's `span` stops at the right padding).
    pub(crate) fn taps(self, n: usize, out: usize) -> Vec<Taps> {
        let [n, k, s, p, d] =
            [n, self.kernel, self.stride, self.padding, self.dilation].map(|v| v as i128);
        (0..out as i128)
            .map(|o| {
                let start = o * s - p;
                let last = start + d * (k - 1);
                let span = (start + k).min(n + p) - start;
                // First tap at or after 0, last tap before n.
                let first = if start < 0 {
                    start + (-start + d - 1) / d * d
                } else {
                    start
                };
                let end = last.min(n - 1);
                let count = if first > end {
                    0
                } else {
                    (end - first) / d + 1
                };
                Taps {
                    start: first.clamp(0, n) as usize,
                    count: count as usize,
                    step: d as usize,
                    span: span.max(1) as usize,
                }
            })
            .collect()
    }
}

/// The taps of PyTorch's adaptive bins: output `i` of `m` over `n` inputs covers
/// `[floor(i n / m), ceil((i + 1) n / m))`.
pub(crate) fn adaptive_taps(n: usize, m: usize) -> Vec<Taps> {
    let (nw, mw) = (n as u128, m as u128);
    (0..mw)
        .map(|i| {
            let start = (i * nw / mw) as usize;
            let end = ((i + 1) * nw).div_ceil(mw) as usize;
            Taps {
                start,
                count: end - start,
                step: 1,
                span: end - start,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(kernel: usize, stride: usize, padding: usize, dilation: usize) -> Window {
        Window {
            kernel,
            stride,
            padding,
            dilation,
        }
    }

    #[test]
    fn output_size_follows_pytorch() {
        // ResNet stem: 112 -> 56 with 3x3 / 2, padding 1.
        assert_eq!(w(3, 2, 1, 1).output_size(112, false), Some(56));
        // ceil_mode adds the partial window...
        assert_eq!(w(2, 2, 0, 1).output_size(5, false), Some(2));
        assert_eq!(w(2, 2, 0, 1).output_size(5, true), Some(3));
        // ...unless it would start in the right padding only.
        assert_eq!(w(3, 3, 1, 1).output_size(5, true), Some(2));
        assert_eq!(w(2, 2, 1, 1).output_size(4, true), Some(3));
        // Too small, dilated: extent 5 > 4.
        assert_eq!(w(3, 1, 0, 2).output_size(4, false), None);
        assert_eq!(w(usize::MAX, 1, 0, 1).output_size(4, false), None);
    }

    #[test]
    fn taps_clip_to_the_input() {
        let t = w(3, 2, 1, 1).taps(5, 3);
        let v: Vec<_> = t.iter().map(|t| (t.start, t.count, t.span)).collect();
        assert_eq!(v, vec![(0, 2, 3), (1, 3, 3), (3, 2, 3)]);
        // Dilation 2 from -1: taps -1, 1, 3 -> 1, 3.
        let t = w(3, 1, 1, 2).taps(4, 2);
        assert_eq!((t[0].start, t[0].count), (1, 2));
        assert_eq!(t[1].indices().collect::<Vec<_>>(), vec![0, 2]);
        // ceil_mode window past the right padding: span stops at n + p.
        let t = w(3, 2, 1, 1).taps(4, 3);
        assert_eq!((t[2].start, t[2].count, t[2].span), (3, 1, 2));
    }

    #[test]
    fn adaptive_taps_are_pytorch_bins() {
        let t = adaptive_taps(7, 3);
        let v: Vec<_> = t.iter().map(|t| (t.start, t.start + t.count)).collect();
        assert_eq!(v, vec![(0, 3), (2, 5), (4, 7)]);
    }
}
