//! Bad input for LoRA on `MultiHeadAttention` and for ViT position-embedding resampling.

use super::*;
use candle_tricks::attention::{multi_head_attention, MhaConfig};
use candle_tricks::transfer::{
    lora_multi_head_attention, resample_pos_embed, LoraConfig, LoraMultiHeadAttention,
    ResamplePosEmbedConfig,
};

fn mha(cfg: MhaConfig) -> Result<candle_tricks::attention::MultiHeadAttention, Got> {
    Ok(multi_head_attention(8, cfg, vb())?)
}

pub(super) fn lora_vit_cases() -> Vec<Case> {
    let mut c = Cases::new("lora_vit");
    let lm = "LoraMultiHeadAttention";
    let d = LoraConfig::default;
    for (name, cfg) in [
        ("r 0", d().with_r(0)),
        ("alpha 0", d().with_lora_alpha(0.0)),
        ("alpha -1", d().with_lora_alpha(-1.0)),
        ("alpha NaN", d().with_lora_alpha(f64::NAN)),
        ("dropout 0.1 (folded update)", d().with_lora_dropout(0.1)),
        ("dropout 1", d().with_lora_dropout(1.0)),
    ] {
        c.err(&format!("lora_mha: {name}"), lm, move || {
            lora_multi_head_attention(mha(MhaConfig::new(2))?, cfg, vb())?;
            Ok(())
        });
    }
    c.err(
        "lora_mha: grouped-query base (no packed in_proj)",
        lm,
        move || {
            let base = mha(MhaConfig::new(2).with_num_kv_heads(Some(1)))?;
            lora_multi_head_attention(base, d(), vb())?;
            Ok(())
        },
    );
    c.err(
        "lora_mha: kdim differs (no packed in_proj)",
        lm,
        move || {
            let base = mha(MhaConfig::new(2).with_kdim(Some(4)))?;
            lora_multi_head_attention(base, d(), vb())?;
            Ok(())
        },
    );
    c.err("lora_mha: lora_B of the wrong size", lm, move || {
        let base = mha(MhaConfig::new(2))?;
        let r = d().with_r(2);
        LoraMultiHeadAttention::new(base, (z2(2, 8), z2(8, 2)), (z2(2, 8), z2(8, 2)), r)?;
        Ok(())
    });
    c.err("lora_mha: lora_A of another dtype", lm, move || {
        let base = mha(MhaConfig::new(2))?;
        let a = z2(2, 8).to_dtype(DType::F64)?;
        LoraMultiHeadAttention::new(base, (a, z2(24, 2)), (z2(2, 8), z2(8, 2)), d().with_r(2))?;
        Ok(())
    });
    c.err("lora_mha: checkpoint with the wrong rank", lm, move || {
        let vb = vb_of(vec![
            ("lora_A.weight", t((3, 8))),
            ("lora_B.weight", t((24, 3))),
        ]);
        lora_multi_head_attention(mha(MhaConfig::new(2))?, d().with_r(4), vb)?;
        Ok(())
    });
    // The wrapped layer checks its inputs.
    c.err(
        "lora_mha: input of the wrong width",
        "MultiHeadAttention",
        move || {
            let l = lora_multi_head_attention(mha(MhaConfig::new(2))?, d(), vb())?;
            candle_core::Module::forward(&l, &t((1, 3, 7)))?;
            Ok(())
        },
    );

    let rp = "resample_pos_embed";
    let pd = ResamplePosEmbedConfig::default;
    c.err(
        "pos_embed: grid does not match the token count",
        rp,
        move || {
            resample_pos_embed(&t((1, 17, 4)), (6, 6), Some((4, 5)), pd())?;
            Ok(())
        },
    );
    c.err(
        "pos_embed: token count not prefix + square",
        rp,
        move || {
            resample_pos_embed(&t((1, 18, 4)), (6, 6), None, pd())?;
            Ok(())
        },
    );
    c.err("pos_embed: more prefix tokens than tokens", rp, move || {
        resample_pos_embed(&t((1, 3, 4)), (6, 6), None, pd().with_num_prefix_tokens(4))?;
        Ok(())
    });
    c.err("pos_embed: new size 0", rp, move || {
        resample_pos_embed(&t((1, 17, 4)), (6, 0), None, pd())?;
        Ok(())
    });
    c.err("pos_embed: old size 0", rp, move || {
        resample_pos_embed(&t((1, 1, 4)), (6, 6), Some((0, 3)), pd())?;
        Ok(())
    });
    c.err("pos_embed: rank 2", rp, move || {
        resample_pos_embed(&t((17, 4)), (6, 6), None, pd())?;
        Ok(())
    });
    c.err("pos_embed: empty channels", rp, move || {
        resample_pos_embed(&t((1, 17, 0)), (6, 6), None, pd())?;
        Ok(())
    });
    c.err("pos_embed: integer dtype", rp, move || {
        let x = Tensor::zeros((1, 17, 4), DType::U32, &cpu())?;
        resample_pos_embed(&x, (6, 6), None, pd())?;
        Ok(())
    });
    c.err("pos_embed: impossible output size", rp, move || {
        resample_pos_embed(&t((1, 17, 4)), (1 << 31, 1 << 31), None, pd())?;
        Ok(())
    });
    c.err("pos_embed: overflowing old size", rp, move || {
        resample_pos_embed(&t((1, 17, 4)), (6, 6), Some((usize::MAX, 2)), pd())?;
        Ok(())
    });
    c.val(
        "pos_embed: non-contiguous input equals the contiguous one",
        move || {
            let x = noncontig((1, 17, 4));
            let got = resample_pos_embed(&x, (3, 5), None, pd())?;
            let want = resample_pos_embed(&x.contiguous()?, (3, 5), None, pd())?;
            close("non-contiguous", &got, &want, 0.0)
        },
    );
    c.list
}

fn z2(a: usize, b: usize) -> Tensor {
    Tensor::zeros((a, b), DType::F32, &cpu()).unwrap()
}
