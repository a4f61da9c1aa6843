//! Bad input for the transfer-learning helpers: partial loads, freezing, layer-wise decay,
//! frozen BatchNorm and BatchNorm folding.

use super::*;
use candle_tricks::transfer::{
    fold_batch_norm, freeze, frozen_batch_norm2d, layer_decay_groups, load_state_dict, unfreeze,
    FrozenBatchNorm2d, FrozenBatchNorm2dConfig,
};

/// A varmap with `backbone.{weight,bias}` (4 → 3) and `blocks.0.{weight,bias}` (3 → 3).
fn model() -> VarMap {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &cpu());
    candle_nn::linear(4, 3, vb.pp("backbone")).unwrap();
    candle_nn::linear(3, 3, vb.pp("blocks.0")).unwrap();
    varmap
}

fn frozen_bn(c: usize) -> FrozenBatchNorm2d {
    frozen_batch_norm2d(c, FrozenBatchNorm2dConfig::default(), vb()).unwrap()
}

pub(super) fn transfer_cases() -> Vec<Case> {
    let mut c = Cases::new("transfer");
    c.err("load: strict with a missing key", "load_state_dict", || {
        load_state_dict(&model(), &HashMap::new(), true)?;
        Ok(())
    });
    c.err("load: strict with a wrong shape", "load_state_dict", || {
        let mut sd = HashMap::new();
        sd.insert("backbone.bias".to_string(), t(4));
        load_state_dict(&model(), &sd, true)?;
        Ok(())
    });
    c.val("load: lenient with a wrong shape leaves the var", || {
        let m = model();
        let mut sd = HashMap::new();
        sd.insert("backbone.bias".to_string(), t(4));
        let r = load_state_dict(&m, &sd, false)?;
        ensure(
            r.mismatched.len() == 1 && r.loaded.is_empty(),
            format!("{r}"),
        )
    });
    for prefix in ["backbon", "", "backbone.weight.x", "layer1"] {
        c.err(&format!("freeze: prefix {prefix:?}"), "freeze", move || {
            freeze(&model(), &[prefix])?;
            Ok(())
        });
        c.err(
            &format!("unfreeze: prefix {prefix:?}"),
            "freeze",
            move || {
                unfreeze(&model(), &[prefix])?;
                Ok(())
            },
        );
    }
    for decay in [0.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
        c.err(
            &format!("layer decay {decay}"),
            "layer_decay_groups",
            move || {
                layer_decay_groups(&model(), 1, decay, 0.05)?;
                Ok(())
            },
        );
    }
    for wd in [-0.1, f64::NAN] {
        c.err(
            &format!("layer decay: weight decay {wd}"),
            "layer_decay_groups",
            move || {
                layer_decay_groups(&model(), 1, 0.7, wd)?;
                Ok(())
            },
        );
    }
    c.err(
        "layer decay: block index >= num_layers",
        "layer_decay_groups",
        || {
            layer_decay_groups(&model(), 0, 0.7, 0.05)?;
            Ok(())
        },
    );
    c.err(
        "layer decay: num_layers usize::MAX",
        "layer_decay_groups",
        || {
            layer_decay_groups(&model(), usize::MAX, 0.7, 0.05)?;
            Ok(())
        },
    );
    for eps in [0.0, -1e-5, f64::NAN] {
        c.err(
            &format!("frozen bn: eps {eps}"),
            "FrozenBatchNorm2d",
            move || {
                frozen_batch_norm2d(3, FrozenBatchNorm2dConfig::default().with_eps(eps), vb())?;
                Ok(())
            },
        );
    }
    c.err("frozen bn: 0 channels", "FrozenBatchNorm2d", || {
        frozen_batch_norm2d(0, FrozenBatchNorm2dConfig::default(), vb())?;
        Ok(())
    });
    c.err(
        "frozen bn: running_var of another length",
        "FrozenBatchNorm2d",
        || {
            FrozenBatchNorm2d::new(
                &t(3),
                &t(3),
                &t(3),
                &t(4),
                FrozenBatchNorm2dConfig::default(),
            )?;
            Ok(())
        },
    );
    for shape in [vec![2, 4, 5, 5], vec![2, 3, 5]] {
        c.err(
            &format!("frozen bn: input {shape:?}"),
            "FrozenBatchNorm2d",
            move || {
                frozen_bn(3).apply(&t(shape))?;
                Ok(())
            },
        );
    }
    c.err(
        "frozen bn: from a BatchNorm without running stats",
        "FrozenBatchNorm2d",
        || {
            let bn = batch_norm(3, bcfg().with_track_running_stats(false), vb())?;
            FrozenBatchNorm2d::from_batch_norm(&bn)?;
            Ok(())
        },
    );
    c.err(
        "fold: conv with 4 output channels into a 3-channel BN",
        "fold_batch_norm",
        || {
            fold_batch_norm(&t((4, 2, 3, 3)), None, &frozen_bn(3))?;
            Ok(())
        },
    );
    c.err("fold: rank-1 weight", "fold_batch_norm", || {
        fold_batch_norm(&t(3), None, &frozen_bn(3))?;
        Ok(())
    });
    c.err("fold: bias of another length", "fold_batch_norm", || {
        fold_batch_norm(&t((3, 2, 3, 3)), Some(&t(4)), &frozen_bn(3))?;
        Ok(())
    });
    c.list
}
