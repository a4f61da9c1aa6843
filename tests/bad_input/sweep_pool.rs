//! Bad input for the `pool` blocks.

use super::*;

pub(super) fn pool_cases() -> Vec<Case> {
    let mut c = Cases::new("pool");
    let spp = "SpatialPyramidPooling";
    c.err("Spp: no levels", spp, || {
        SpatialPyramidPooling::new(vec![], PoolMode::Max)?;
        Ok(())
    });
    c.err("Spp: level 0", spp, || {
        SpatialPyramidPooling::new(vec![1, 0], PoolMode::Max)?;
        Ok(())
    });
    c.err(
        "Spp forward: input smaller than the largest level",
        spp,
        || {
            let p = SpatialPyramidPooling::new(vec![1, 2, 4], PoolMode::Max)?;
            p.forward(&t((1, 2, 3, 8)))?;
            Ok(())
        },
    );
    c.err("Spp forward: u32", spp, || {
        let p = SpatialPyramidPooling::new(vec![1, 2], PoolMode::Avg)?;
        p.forward(&td((1, 2, 4, 4), DType::U32))?;
        Ok(())
    });
    c.err("Spp forward: rank 3", spp, || {
        let p = SpatialPyramidPooling::new(vec![1, 2], PoolMode::Avg)?;
        p.forward(&t((2, 4, 4)))?;
        Ok(())
    });
    c.val(
        "Spp forward: non-contiguous == levels of adaptive pools",
        || {
            let p = SpatialPyramidPooling::new(vec![1, 2], PoolMode::Max)?;
            let x = noncontig((2, 3, 4, 5));
            let y = p.forward(&x)?;
            let want = Tensor::cat(
                &[
                    ops::adaptive_max_pool2d_reference(&x, (1, 1))?.flatten_from(1)?,
                    ops::adaptive_max_pool2d_reference(&x, (2, 2))?.flatten_from(1)?,
                ],
                1,
            )?;
            close("y", &y, &want, 0.0)
        },
    );
    let sf = "Sppf";
    c.err("sppf: even kernel", sf, || {
        sppf(4, 4, 4, vb())?;
        Ok(())
    });
    c.err("sppf: kernel 0", sf, || {
        sppf(4, 4, 0, vb())?;
        Ok(())
    });
    c.err("sppf: 0 in-channels", sf, || {
        sppf(0, 4, 5, vb())?;
        Ok(())
    });
    c.err("sppf: odd in-channels (c1 / 2 hidden)", sf, || {
        sppf(1, 4, 5, vb())?;
        Ok(())
    });
    c.err("Sppf forward: wrong channels", sf, || {
        let p = sppf(4, 4, 5, vb())?;
        p.forward_t(&t((1, 3, 6, 6)), false)?;
        Ok(())
    });
    c.err("Sppf forward: f16 input, f32 weights", sf, || {
        let p = sppf(4, 4, 5, vb())?;
        p.forward_t(&td((1, 4, 6, 6), DType::F16), false)?;
        Ok(())
    });
    c.val("Sppf forward: non-contiguous == contiguous", || {
        let p = sppf(4, 2, 5, vb())?;
        let x = noncontig((1, 4, 3, 7));
        close(
            "y",
            &p.forward_t(&x, false)?,
            &p.forward_t(&x.contiguous()?, false)?,
            1e-6,
        )
    });
    let ap = "AdaptivePool2d";
    c.err("AdaptivePool2d::new: output 0", ap, || {
        AdaptivePool2d::new((0, 1), PoolMode::Avg)?;
        Ok(())
    });
    c.err("AdaptivePool2d forward: i64", "adaptive", || {
        let p = AdaptivePool2d::new((1, 1), PoolMode::Max)?;
        p.forward(&td((1, 2, 3, 3), DType::I64))?;
        Ok(())
    });
    c.list
}
