//! The models of `benches/train.rs` (issue 12) at a small batch: each builds, trains one step
//! with a finite loss near ln(classes) at init, and the AdamW step changes the loss.
#[path = "../benches/common/train_models.rs"]
mod models;
use models::{Model, Setup, CLASSES, VOCAB};

#[test]
fn every_training_step_runs_and_moves_the_loss() -> candle_tricks::Result<()> {
    for model in Model::ALL {
        let mut setup = Setup::new(model, 2, 16)?;
        let first = setup.step()?.to_scalar::<f32>()?;
        let second = setup.loss()?.to_scalar::<f32>()?;
        let n = if model == Model::Mamba {
            VOCAB
        } else {
            CLASSES
        };
        assert!(first.is_finite() && second.is_finite(), "{model:?}");
        // Near-uniform logits at init; a ResNet with random-init BN can be off by a few nats.
        assert!((first - (n as f32).ln()).abs() < 3.0, "{model:?}: {first}");
        assert_ne!(first, second, "{model:?}: the step changed nothing");
    }
    Ok(())
}
