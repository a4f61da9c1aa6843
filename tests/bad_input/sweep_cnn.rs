//! Bad input for the CNN training-step fusions: `BatchNorm::forward_act` (batch norm + ReLU /
//! ReLU6 as one op) and `ops::relu`.

use super::*;
use candle_nn::Activation;

pub(super) fn cnn_cases() -> Vec<Case> {
    let mut c = Cases::new("cnn");
    let bn = "BatchNorm";
    for act in [Activation::Relu, Activation::Relu6] {
        c.err(
            &format!("forward_act {act:?}: wrong channels"),
            bn,
            move || {
                batch_norm(3, bcfg(), vb())?.forward_act(&t((2, 4, 5)), &act, true)?;
                Ok(())
            },
        );
        c.err(&format!("forward_act {act:?}: rank 1"), bn, move || {
            batch_norm(3, bcfg(), vb())?.forward_act(&t(3), &act, true)?;
            Ok(())
        });
        c.err(&format!("forward_act {act:?}: u32"), bn, move || {
            let x = td((2, 3, 4), DType::U32);
            batch_norm(3, bcfg(), vb())?.forward_act(&x, &act, true)?;
            Ok(())
        });
        c.err(
            &format!("forward_act {act:?}: one value per channel"),
            bn,
            move || {
                batch_norm(3, bcfg(), vb())?.forward_act(&t((1, 3, 1, 1)), &act, true)?;
                Ok(())
            },
        );
        c.val(
            &format!("forward_act {act:?}: non-contiguous == reference"),
            move || {
                let b = batch_norm(3, bcfg(), vb())?;
                let x = noncontig((2, 3, 4, 5));
                let want = ops::activation(&b.forward_reference(&x, true)?, &act)?;
                close("train", &b.forward_act(&x, &act, true)?, &want, 1e-5)
            },
        );
    }
    let op = "hardtanh";
    c.err("relu: empty", op, || {
        ops::relu(&t((2, 0)))?;
        Ok(())
    });
    c.err("relu: u32", op, || {
        ops::relu(&td((2, 3), DType::U32))?;
        Ok(())
    });
    c.val("relu: non-contiguous == reference", || {
        let x = noncontig((2, 3, 4, 5));
        close("relu", &ops::relu(&x)?, &ops::relu_reference(&x)?, 0.0)
    });
    c.list
}
