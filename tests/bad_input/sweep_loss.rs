//! Bad input for the losses (issue 14): class indices out of range, wrong target shapes,
//! probabilities that do not sum to 1, bad smoothing, negative margins and temperatures.

use candle_tricks::loss::{self, CrossEntropyConfig, Reduction};

use super::*;

pub(super) fn loss_cases() -> Vec<Case> {
    let mut c = Cases::new("loss");
    let ce = "cross_entropy";
    let idx = |v: &[u32]| Tensor::new(v, &cpu()).unwrap();
    c.err("cross_entropy: class index = C", ce, move || {
        loss::cross_entropy(&t((3, 4)), &idx(&[0, 4, 1]), &CrossEntropyConfig::default())?;
        Ok(())
    });
    c.err("cross_entropy: negative class index", ce, || {
        let y = Tensor::new(&[0i64, -3, 1], &cpu())?;
        loss::cross_entropy(&t((3, 4)), &y, &CrossEntropyConfig::default())?;
        Ok(())
    });
    c.err(
        "cross_entropy: targets of the wrong length",
        ce,
        move || {
            loss::cross_entropy(&t((3, 4)), &idx(&[0, 1]), &CrossEntropyConfig::default())?;
            Ok(())
        },
    );
    c.err(
        "cross_entropy: spatial targets missing a dim",
        ce,
        move || {
            loss::cross_entropy(
                &t((2, 3, 4, 4)),
                &idx(&[0, 1]),
                &CrossEntropyConfig::default(),
            )?;
            Ok(())
        },
    );
    c.err("cross_entropy: probabilities not summing to 1", ce, || {
        loss::cross_entropy(
            &t((3, 4)),
            &t((3, 4)).abs()?,
            &CrossEntropyConfig::default(),
        )?;
        Ok(())
    });
    c.err(
        "cross_entropy: probabilities of the wrong shape",
        ce,
        || {
            loss::cross_entropy(
                &t((3, 4)),
                &(Tensor::ones((3, 5), DType::F32, &cpu())? / 5.0)?,
                &CrossEntropyConfig::default(),
            )?;
            Ok(())
        },
    );
    for ls in [-0.5, 1.01, f64::NAN, f64::INFINITY] {
        c.err(
            &format!("cross_entropy: label_smoothing {ls}"),
            ce,
            move || {
                let cfg = CrossEntropyConfig::default().with_label_smoothing(ls);
                loss::cross_entropy(&t((3, 4)), &idx(&[0, 1, 2]), &cfg)?;
                Ok(())
            },
        );
    }
    c.err("cross_entropy: weight of the wrong length", ce, move || {
        let cfg = CrossEntropyConfig::default().with_weight(t(3));
        loss::cross_entropy(&t((3, 4)), &idx(&[0, 1, 2]), &cfg)?;
        Ok(())
    });
    c.err("cross_entropy: rank-1 logits", ce, move || {
        loss::cross_entropy(&t(4), &idx(&[0]), &CrossEntropyConfig::default())?;
        Ok(())
    });
    c.err("cross_entropy: f32 targets for f16 logits", ce, || {
        let p = (Tensor::ones((3, 4), DType::F32, &cpu())? / 4.0)?;
        loss::cross_entropy(&td((3, 4), DType::F16), &p, &CrossEntropyConfig::default())?;
        Ok(())
    });
    c.err("nt_xent: negative temperature", "nt_xent", || {
        loss::nt_xent(&t((4, 3)), &t((4, 3)), -0.1)?;
        Ok(())
    });
    c.err("nt_xent: NaN temperature", "nt_xent", || {
        loss::nt_xent(&t((4, 3)), &t((4, 3)), f64::NAN)?;
        Ok(())
    });
    c.err(
        "distillation: zero temperature",
        "distillation",
        move || {
            let cfg = loss::DistillationConfig::default().with_temperature(0.0);
            loss::distillation(&t((3, 4)), &t((3, 4)), &idx(&[0, 1, 2]), &cfg)?;
            Ok(())
        },
    );
    c.err("contrastive: negative margin", "contrastive", || {
        loss::contrastive(&t((4, 3)), &t((4, 3)), &t(4), -1.0, Reduction::Mean)?;
        Ok(())
    });
    c.err("triplet_margin: negative margin", "triplet_margin", || {
        let cfg = loss::TripletConfig::default().with_margin(-1.0);
        loss::triplet_margin(&t((4, 3)), &t((4, 3)), &t((4, 3)), &cfg)?;
        Ok(())
    });
    c.err(
        "batch_hard_triplet: labels of the wrong length",
        "batch_hard_triplet",
        move || {
            loss::batch_hard_triplet(&t((4, 3)), &idx(&[0, 1]), 1.0)?;
            Ok(())
        },
    );
    c.err(
        "prototypical: support label out of range",
        "prototypical",
        move || {
            loss::prototypical(&t((2, 3)), &idx(&[0, 5]), &t((1, 3)), &idx(&[0]), 2)?;
            Ok(())
        },
    );
    c.err("kl_div: integer input", "kl_div", || {
        loss::kl_div(
            &td((2, 3), DType::U32),
            &td((2, 3), DType::U32),
            Reduction::Sum,
            false,
        )?;
        Ok(())
    });
    c.err("dice: rank-2 logits", "dice", move || {
        loss::dice(&t((2, 3)), &idx(&[0, 1]), 1.0)?;
        Ok(())
    });
    c.list
}
