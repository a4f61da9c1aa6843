//! Bad input for the fused linear op (issue 12): wrong ranks and sizes, mismatched dtypes,
//! unsupported dtypes, and legal-but-unusual input (rank 1, empty, non-contiguous) checked
//! against `linear_reference`.

use super::*;

pub(super) fn linear_cases() -> Vec<Case> {
    let mut c = Cases::new("linear");
    let op = "linear";
    c.err("linear: scalar input", op, || {
        ops::linear(&Tensor::new(1f32, &cpu())?, &t((3, 4)), None)?;
        Ok(())
    });
    c.err("linear: 1-D weight", op, || {
        ops::linear(&t((2, 4)), &t(4), None)?;
        Ok(())
    });
    c.err("linear: 3-D weight", op, || {
        ops::linear(&t((2, 4)), &t((1, 3, 4)), None)?;
        Ok(())
    });
    c.err("linear: in mismatch", op, || {
        ops::linear(&t((2, 5)), &t((3, 4)), None)?;
        Ok(())
    });
    c.err("linear: bias of the wrong size", op, || {
        ops::linear(&t((2, 4)), &t((3, 4)), Some(&t(4)))?;
        Ok(())
    });
    c.err("linear: 2-D bias", op, || {
        ops::linear(&t((2, 4)), &t((3, 4)), Some(&t((1, 3))))?;
        Ok(())
    });
    c.err("linear: bias dtype mismatch", op, || {
        ops::linear(&t((2, 4)), &t((3, 4)), Some(&td(3, DType::F16)))?;
        Ok(())
    });
    c.err("linear: input dtype mismatch", op, || {
        ops::linear(&td((2, 4), DType::BF16), &t((3, 4)), None)?;
        Ok(())
    });
    c.val("linear: u32 operands fail like the composition", || {
        let (x, w) = (td((2, 4), DType::U32), td((3, 4), DType::U32));
        let (ours, reference) = (
            ops::linear(&x, &w, None).is_err(),
            ops::linear_reference(&x, &w, None).is_err(),
        );
        if ours != reference {
            return Err(Got::Wrong(format!(
                "ours errs: {ours}, the composition errs: {reference}"
            )));
        }
        Ok(())
    });
    c.val("linear: rank-1 input == reference", || {
        let (x, w, b) = (t(4), t((3, 4)), t(3));
        let y = ops::linear(&x, &w, Some(&b))?;
        close("y", &y, &ops::linear_reference(&x, &w, Some(&b))?, 1e-6)
    });
    c.val("linear: non-contiguous input == reference", || {
        let (x, w) = (noncontig((2, 3, 5)), t((4, 5)));
        let y = ops::linear(&x, &w, None)?;
        close("y", &y, &ops::linear_reference(&x, &w, None)?, 1e-6)
    });
    c.val("linear: no rows gives an empty output", || {
        let y = ops::linear(&t((0, 4)), &t((3, 4)), Some(&t(3)))?;
        if y.dims() != [0, 3] {
            return Err(Got::Wrong(format!("dims {:?}", y.dims())));
        }
        Ok(())
    });
    c.list
}
