//! One wrapper over `gemm` (the matrix multiply candle itself uses) for the kernels' strided
//! products: attention tiles and the convolution's unfolded volumes.

pub(crate) use gemm::Parallelism;

/// A strided f32 matrix operand: element `(i, j)` lives at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<P> {
    ptr: P,
    rs: usize,
    cs: usize,
}

impl<P> Strided<P> {
    /// Row-major, rows `rs` apart.
    pub(crate) fn rows(ptr: P, rs: usize) -> Self {
        Strided { ptr, rs, cs: 1 }
    }

    /// Column-major, columns `cs` apart (a row-major matrix read transposed).
    pub(crate) fn cols(ptr: P, cs: usize) -> Self {
        Strided { ptr, rs: 1, cs }
    }
}

/// `dst (m × n) = [dst +] beta · lhs (m × k) · rhs (k × n)` (`dst +` when `accumulate`), on
/// `gemm`'s threads as `par` says (`Parallelism::None` from inside a task of our pool).
///
/// # Safety
/// Every operand's pointer is valid for its strided extent (`dst` for writes of `m × n`
/// values, and not read or written by anyone else while this runs; `lhs` and `rhs` for reads).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    accumulate: bool,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    beta: f32,
    par: Parallelism,
) {
    // SAFETY: `gemm` reads `lhs` (m × k) and `rhs` (k × n) and writes `dst` (m × n) at the
    // strides given, which this function's contract makes valid and exclusive.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.ptr,
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.ptr,
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            beta,
            false,
            false,
            false,
            par,
        )
    }
}
