//! The error type through candle's traits, and the block context of load errors (issue 10).

use std::collections::HashMap;

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{Optimizer, VarBuilder};
use candle_tricks::attention::{multi_head_attention, MhaConfig};
use candle_tricks::norm::{batch_norm, BatchNormConfig};
use candle_tricks::optim::{AdamW, AdamWConfig};
use candle_tricks::ssm::{mamba_block, mamba_model, MambaConfig, MambaModelConfig};
use candle_tricks::Error;

type R<T> = Result<T, Box<dyn std::error::Error>>;

#[test]
fn typed_error_survives_candle_traits() -> R<()> {
    let dev = Device::Cpu;
    let bn = batch_norm(
        3,
        BatchNormConfig::default(),
        VarBuilder::zeros(DType::F32, &dev),
    )?;
    let x = Tensor::zeros((2, 4, 5), DType::F32, &dev)?;
    let e = bn.forward_t(&x, false).unwrap_err();
    assert!(matches!(
        Error::from_candle(&e),
        Some(Error::ShapeMismatch {
            block: "BatchNorm",
            ..
        })
    ));
    // Through candle's context wrapper too.
    let wrapped = e.context("while running my model");
    assert!(Error::from_candle(&wrapped).is_some());
    assert!(matches!(
        Error::from(bn.forward_t(&x, false).unwrap_err()),
        Error::ShapeMismatch { .. }
    ));
    // Through `Optimizer::step`.
    let w = candle_core::Var::new(&[1f32, 2.], &dev)?;
    let mut opt = AdamW::new(vec![w.clone()], AdamWConfig::default())?;
    opt.set_learning_rate(f64::NAN);
    let grads = w.as_tensor().sum_all()?.backward()?;
    let e = opt.step(&grads).unwrap_err();
    assert!(matches!(
        Error::from_candle(&e),
        Some(Error::InvalidConfig { block: "AdamW", .. })
    ));
    // A plain candle error is not ours; `Debug` is the readable message.
    let plain = Tensor::zeros(2, DType::F32, &dev)?.matmul(&Tensor::zeros(3, DType::F32, &dev)?);
    assert!(Error::from_candle(&plain.unwrap_err()).is_none());
    let ours = Error::config("Demo", "bad");
    assert_eq!(format!("{ours:?}"), "Demo: invalid config: bad");
    Ok(())
}

/// A checkpoint whose tensor has the wrong shape: the error names the block and the prefix.
#[test]
fn load_errors_name_the_block_and_prefix() -> R<()> {
    let dev = Device::Cpu;
    let one = |name: &str, shape: &[usize]| -> R<VarBuilder<'static>> {
        let mut m = HashMap::new();
        m.insert(name.to_string(), Tensor::zeros(shape, DType::F32, &dev)?);
        Ok(VarBuilder::from_tensors(m, DType::F32, &dev))
    };
    let msg = |r: candle_tricks::Result<()>| r.unwrap_err().to_string();
    let bn = msg(batch_norm(
        3,
        BatchNormConfig::default(),
        one("enc.bn.weight", &[4])?.pp("enc.bn"),
    )
    .map(|_| ()));
    assert!(
        bn.starts_with("BatchNorm: cannot load weights under `enc.bn`"),
        "{bn}"
    );
    let mha = msg(multi_head_attention(
        8,
        MhaConfig::new(2),
        one("attn.in_proj_weight", &[3, 8])?.pp("attn"),
    )
    .map(|_| ()));
    assert!(
        mha.starts_with("MultiHeadAttention: cannot load weights under `attn`"),
        "{mha}"
    );
    let mb = msg(mamba_block(
        MambaConfig::new(8),
        one("mixer.in_proj.weight", &[1, 1])?.pp("mixer"),
    )
    .map(|_| ()));
    assert!(
        mb.starts_with("MambaBlock: cannot load weights under `mixer`"),
        "{mb}"
    );
    let cfg = MambaModelConfig::new(10, 2, MambaConfig::new(8));
    let mm = msg(mamba_model(cfg, one("backbone.embedding.weight", &[3, 3])?).map(|_| ()));
    assert!(mm.starts_with("MambaModel: cannot load weights"), "{mm}");
    for m in [&bn, &mha, &mb, &mm] {
        assert!(
            m.contains("shape mismatch") || m.contains("cannot find"),
            "{m}"
        );
    }
    Ok(())
}
