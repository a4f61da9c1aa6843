//! Bad input for the `rnn` blocks and the fused recurrence ops.

use super::*;
use candle_tricks::ops::{
    gru_recurrence, gru_recurrence_reference, lstm_recurrence, lstm_recurrence_reference,
    RecurrenceConfig,
};
use candle_tricks::rnn::{gru, lengths_from_tensor, lstm, RnnConfig};

pub(super) fn rnn_cases() -> Vec<Case> {
    let mut c = Cases::new("rnn");
    let (l, g) = ("Lstm", "Gru");
    let d = RnnConfig::default;
    for (name, cfg) in [
        ("num_layers 0", d().with_num_layers(0)),
        ("dropout 1", d().with_dropout(1.0)),
        ("dropout -0.1", d().with_dropout(-0.1)),
        ("dropout NaN", d().with_dropout(f64::NAN)),
    ] {
        c.err(&format!("lstm: {name}"), l, move || {
            lstm(4, 3, cfg, vb())?;
            Ok(())
        });
        c.err(&format!("gru: {name}"), g, move || {
            gru(4, 3, cfg, vb())?;
            Ok(())
        });
    }
    c.err("lstm: input_size 0", l, move || {
        lstm(0, 3, d(), vb())?;
        Ok(())
    });
    c.err("gru: hidden_size 0", g, move || {
        gru(4, 0, d(), vb())?;
        Ok(())
    });
    c.err("lstm: hidden_size overflowing the gates", l, move || {
        lstm(4, usize::MAX / 2, d(), vb())?;
        Ok(())
    });
    c.err("gru: weights too large to allocate", g, move || {
        gru(1 << 20, 1 << 20, d(), vb())?;
        Ok(())
    });
    c.err("lstm: checkpoint weight of the wrong shape", l, move || {
        let ts = vec![
            ("weight_ih_l0", t((12, 5))),
            ("weight_hh_l0", t((12, 3))),
            ("bias_ih_l0", t(12)),
            ("bias_hh_l0", t(12)),
        ];
        lstm(4, 3, d(), vb_of(ts))?;
        Ok(())
    });
    for (name, x) in [
        ("rank 2", t((5, 4))),
        ("rank 4", t((5, 2, 1, 4))),
        ("wrong input size", t((5, 2, 3))),
        ("empty L", t((0, 2, 4))),
        ("empty B", t((5, 0, 4))),
        ("f16 input, f32 weights", td((5, 2, 4), DType::F16)),
        ("u32 input", td((5, 2, 4), DType::U32)),
    ] {
        let x2 = x.clone();
        c.err(&format!("Lstm forward: {name}"), l, move || {
            lstm(4, 3, d(), vb())?.forward(&x, None, None)?;
            Ok(())
        });
        c.err(&format!("Gru forward: {name}"), g, move || {
            gru(4, 3, d(), vb())?.forward(&x2, None, None)?;
            Ok(())
        });
    }
    for (name, lens) in [
        ("lengths longer than L", vec![6, 2]),
        ("a zero length", vec![5, 0]),
        ("too few lengths", vec![5]),
        ("too many lengths", vec![5, 5, 5]),
        ("usize::MAX length", vec![usize::MAX, 1]),
    ] {
        let lens2 = lens.clone();
        c.err(&format!("Lstm forward: {name}"), l, move || {
            let cfg = d().with_bidirectional(true);
            lstm(4, 3, cfg, vb())?.forward(&t((5, 2, 4)), None, Some(&lens))?;
            Ok(())
        });
        c.err(&format!("Gru forward: {name}"), g, move || {
            gru(4, 3, d(), vb())?.forward(&t((5, 2, 4)), None, Some(&lens2))?;
            Ok(())
        });
    }
    for (name, h0, c0) in [
        ("h0 of the wrong batch", t((1, 3, 3)), t((1, 2, 3))),
        ("c0 of the wrong hidden size", t((1, 2, 3)), t((1, 2, 4))),
        ("h0 2-D", t((2, 3)), t((1, 2, 3))),
        ("c0 f16", t((1, 2, 3)), td((1, 2, 3), DType::F16)),
        ("states for 2 layers on 1", t((2, 2, 3)), t((2, 2, 3))),
    ] {
        c.err(&format!("Lstm forward: {name}"), l, move || {
            lstm(4, 3, d(), vb())?.forward(&t((5, 2, 4)), Some((&h0, &c0)), None)?;
            Ok(())
        });
    }
    c.err(
        "Gru forward: h0 of a unidirectional net on a bidirectional one",
        g,
        move || {
            let cfg = d().with_bidirectional(true);
            gru(4, 3, cfg, vb())?.forward(&t((5, 2, 4)), Some(&t((1, 2, 3))), None)?;
            Ok(())
        },
    );
    c.err("lengths_from_tensor: negative", "rnn", move || {
        lengths_from_tensor(&Tensor::new(&[3i64, -1], &cpu())?)?;
        Ok(())
    });
    c.err("lengths_from_tensor: 2-D", "rnn", move || {
        lengths_from_tensor(&t((2, 2)))?;
        Ok(())
    });
    c.err("lengths_from_tensor: NaN", "rnn", move || {
        lengths_from_tensor(&Tensor::new(&[f32::NAN], &cpu())?)?;
        Ok(())
    });
    // The ops: (5, 2, 12) projections fit an LSTM with H = 3, a GRU with H = 4.
    let rc = RecurrenceConfig::default;
    let (lo, go) = ("lstm_recurrence", "gru_recurrence");
    c.err("lstm_recurrence: w_hh not (4H, H)", lo, move || {
        let h = t((2, 3));
        lstm_recurrence(&t((5, 2, 12)), &t((9, 3)), None, &h, &h, &rc())?;
        Ok(())
    });
    c.err("lstm_recurrence: xproj of the wrong width", lo, move || {
        let h = t((2, 3));
        lstm_recurrence(&t((5, 2, 11)), &t((12, 3)), None, &h, &h, &rc())?;
        Ok(())
    });
    c.err(
        "lstm_recurrence_reference: c0 of another batch",
        lo,
        move || {
            let h = t((2, 3));
            lstm_recurrence_reference(&t((5, 2, 12)), &t((12, 3)), None, &h, &t((3, 3)), &rc())?;
            Ok(())
        },
    );
    c.err("gru_recurrence: b_hh of the wrong size", go, move || {
        gru_recurrence(&t((5, 2, 12)), &t((12, 4)), Some(&t(11)), &t((2, 4)), &rc())?;
        Ok(())
    });
    c.err("gru_recurrence: empty w_hh", go, move || {
        gru_recurrence(&t((5, 2, 0)), &t((0, 0)), None, &t((2, 0)), &rc())?;
        Ok(())
    });
    c.err("gru_recurrence: lengths > L", go, move || {
        let lens = [5, 9];
        let cfg = rc().with_lengths(&lens);
        gru_recurrence(&t((5, 2, 12)), &t((12, 4)), None, &t((2, 4)), &cfg)?;
        Ok(())
    });
    c.err("gru_recurrence: f64 (reference only)", go, move || {
        let f = |x: Tensor| x.to_dtype(DType::F64).unwrap();
        gru_recurrence(
            &f(t((5, 2, 12))),
            &f(t((12, 4))),
            None,
            &f(t((2, 4))),
            &rc(),
        )?;
        Ok(())
    });
    c.val("gru_recurrence: non-contiguous xproj and w_hh", move || {
        let (x, w, h) = (
            noncontig((5, 12, 2)).transpose(1, 2)?,
            noncontig((12, 4)),
            t((2, 4)),
        );
        let lens = [3, 5];
        let cfg = rc().with_reverse(true).with_lengths(&lens);
        let (got, hn) = gru_recurrence(&x, &w, None, &h, &cfg)?;
        let (want, hr) =
            gru_recurrence_reference(&x.contiguous()?, &w.contiguous()?, None, &h, &cfg)?;
        close("output", &got, &want, 1e-5)?;
        close("h_n", &hn, &hr, 1e-5)
    });
    c.list
}
