//! Where an update runs: the one decision between the fused CPU kernels and candle tensor ops.
//!
//! Every optimizer step, [`clip_grad_norm`](super::clip_grad_norm) and friends,
//! [`Ema`](super::Ema), [`GradScaler`](super::GradScaler) and
//! [`GradAccumulator`](super::GradAccumulator) ask [`update_path`] once per tensor:
//!
//! - [`UpdatePath::Fused`] (parameters on the CPU): this crate's fused in-place kernels, one pass
//!   over the weights, the gradient and the f32 state held in host `Vec`s, on candle's CPU pool.
//! - [`UpdatePath::Tensor`] (CUDA, Metal): the same update written with candle tensor ops on the
//!   parameter's device; the f32 state buffers (and the f32 master copy of f16/bf16 parameters)
//!   are tensors on that device. A step never copies a parameter, a gradient or a state buffer
//!   to the host: the NaN/Inf check reads one scalar per step, and only
//!   [`OptimizerState::state_dict`](super::OptimizerState::state_dict) (a checkpoint) copies the
//!   state to the host.
//!
//! The decision for a device kind is the pure function [`path_for`] of its
//! [`DeviceLocation`]; [`force_tensor_path`] overrides it on the current thread so the tensor path
//! can be run, and compared with the fused one, on the CPU (tests, debugging).
//!
//! # Example
//! ```
//! use candle_core::{Device, DeviceLocation};
//! use candle_tricks::optim::path::{force_tensor_path, path_for, update_path, UpdatePath};
//! assert_eq!(path_for(DeviceLocation::Cuda { gpu_id: 0 }), UpdatePath::Tensor);
//! assert_eq!(update_path(&Device::Cpu), UpdatePath::Fused);
//! {
//!     let _guard = force_tensor_path();
//!     assert_eq!(update_path(&Device::Cpu), UpdatePath::Tensor);
//! }
//! assert_eq!(update_path(&Device::Cpu), UpdatePath::Fused);
//! ```

use std::cell::Cell;
use std::marker::PhantomData;

use candle_core::{Device, DeviceLocation};

/// How an update runs (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdatePath {
    /// The fused in-place CPU kernels over host state.
    Fused,
    /// candle tensor ops on the parameter's device, state kept as f32 tensors there.
    Tensor,
}

/// The path for a device kind: [`UpdatePath::Fused`] for the CPU, [`UpdatePath::Tensor`] for
/// every other device. Ignores [`force_tensor_path`].
pub const fn path_for(location: DeviceLocation) -> UpdatePath {
    match location {
        DeviceLocation::Cpu => UpdatePath::Fused,
        DeviceLocation::Cuda { .. } | DeviceLocation::Metal { .. } => UpdatePath::Tensor,
    }
}

thread_local! {
    static FORCE_TENSOR: Cell<usize> = const { Cell::new(0) };
}

/// The path updates of tensors on `device` take: [`path_for`] its location, except that the
/// CPU takes [`UpdatePath::Tensor`] on a thread holding a [`force_tensor_path`] guard.
pub fn update_path(device: &Device) -> UpdatePath {
    match path_for(device.location()) {
        UpdatePath::Fused if FORCE_TENSOR.with(Cell::get) > 0 => UpdatePath::Tensor,
        p => p,
    }
}

/// Forces [`UpdatePath::Tensor`] on the CPU for the current thread while the guard lives
/// (guards nest). Non-CPU devices always take the tensor path.
pub fn force_tensor_path() -> TensorPathGuard {
    FORCE_TENSOR.with(|c| c.set(c.get() + 1));
    TensorPathGuard {
        _not_send: PhantomData,
    }
}

/// The guard of [`force_tensor_path`]; dropping it ends the override (on the thread that
/// created it: the guard is not `Send`).
#[derive(Debug)]
#[must_use = "the override ends when the guard is dropped"]
pub struct TensorPathGuard {
    _not_send: PhantomData<*const ()>,
}

impl Drop for TensorPathGuard {
    fn drop(&mut self) {
        FORCE_TENSOR.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_cpu_devices_take_the_tensor_path() {
        assert_eq!(path_for(DeviceLocation::Cpu), UpdatePath::Fused);
        for gpu_id in [0, 3] {
            assert_eq!(
                path_for(DeviceLocation::Cuda { gpu_id }),
                UpdatePath::Tensor
            );
            assert_eq!(
                path_for(DeviceLocation::Metal { gpu_id }),
                UpdatePath::Tensor
            );
        }
    }

    /// The files of the tensor path hold no host copy: no `to_device`, no `to_vec*`, no
    /// `to_scalar` outside the one NaN/Inf read helper, no CPU storage access. (A textual
    /// check, the same as `grep -nE 'to_device|to_vec|Device::Cpu|Storage::Cpu'` over them.)
    #[test]
    fn the_tensor_path_has_no_host_copy() {
        let files = [
            ("tensor_ops.rs", include_str!("tensor_ops.rs")),
            ("sgd.rs", include_str!("sgd.rs")),
            ("adam.rs", include_str!("adam.rs")),
            ("rmsprop.rs", include_str!("rmsprop.rs")),
            ("adagrad.rs", include_str!("adagrad.rs")),
            ("lion.rs", include_str!("lion.rs")),
        ];
        for (name, src) in files {
            for needle in [
                "to_device",
                "to_vec",
                "Device::Cpu",
                "Storage::Cpu",
                "CpuStorage",
            ] {
                assert!(!src.contains(needle), "{name} contains `{needle}`");
            }
            let reads = src.matches("to_scalar").count();
            let allowed = usize::from(name == "tensor_ops.rs");
            assert_eq!(reads, allowed, "{name}: scalar reads");
        }
    }
}
