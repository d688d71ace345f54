//! Validation after an epoch and early stopping: the best model (by the mean of the per-domain
//! validation MRRs) is saved as `model.bpk`; training stops after `patience` evaluated epochs
//! without a better one.

use super::checkpoint::TrainState;
use super::config::Plateau;

/// Records a validation result of epoch `epoch` (1-based) in `state`; returns whether it is
/// the best so far (and so should be saved).
pub(super) fn record_validation(state: &mut TrainState, epoch: usize, mean_mrr: f64) -> bool {
    if mean_mrr > state.best_valid_mrr {
        state.best_valid_mrr = mean_mrr;
        state.best_epoch = epoch;
        state.epochs_without_improvement = 0;
        true
    } else {
        state.epochs_without_improvement += 1;
        false
    }
}

/// Applies reduce-on-plateau after a validation: after `plateau.patience` evaluations without
/// improvement (since the last decay), the learning-rate scale is multiplied by its factor.
/// Returns whether it decayed.
pub(super) fn plateau_step(state: &mut TrainState, improved: bool, plateau: &Plateau) -> bool {
    if improved {
        state.evaluations_since_decay = 0;
        return false;
    }
    state.evaluations_since_decay += 1;
    if state.evaluations_since_decay >= plateau.patience && state.lr_scale > plateau.min_scale {
        state.lr_scale = (state.lr_scale * plateau.factor).max(plateau.min_scale);
        state.evaluations_since_decay = 0;
        return true;
    }
    false
}

/// The learning rate of step `step` (0-based, counted over the whole run) of an epoch of
/// `steps_per_epoch` steps: linear warm-up over `warmup_epochs`, then `base * lr_scale`.
pub(super) fn learning_rate(
    base: f64,
    lr_scale: f64,
    warmup_epochs: usize,
    steps_per_epoch: usize,
    step: usize,
) -> f64 {
    let warmup = warmup_epochs * steps_per_epoch;
    let ramp = if step < warmup {
        (step + 1) as f64 / warmup as f64
    } else {
        1.0
    };
    base * lr_scale * ramp
}

/// Whether training stops after this epoch for lack of improvement.
pub(super) fn should_stop(state: &TrainState, patience: usize) -> bool {
    state.epochs_without_improvement >= patience
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_patience_epochs_without_improvement() {
        let mut state = TrainState::fresh();
        assert!(record_validation(&mut state, 1, 0.10));
        assert!(record_validation(&mut state, 2, 0.12));
        assert!(!record_validation(&mut state, 3, 0.12));
        assert!(!should_stop(&state, 2));
        assert!(!record_validation(&mut state, 4, 0.11));
        assert!(should_stop(&state, 2));
        assert_eq!((state.best_epoch, state.best_valid_mrr), (2, 0.12));
        // An improvement resets the count.
        assert!(record_validation(&mut state, 5, 0.2));
        assert_eq!(state.epochs_without_improvement, 0);
    }

    #[test]
    fn plateau_halves_the_rate_and_warm_up_ramps_it() {
        let mut state = TrainState::fresh();
        let p = Plateau {
            patience: 2,
            factor: 0.5,
            min_scale: 0.2,
            restore_best: false,
        };
        assert!(!plateau_step(&mut state, false, &p));
        assert!(plateau_step(&mut state, false, &p));
        assert_eq!(state.lr_scale, 0.5);
        assert!(!plateau_step(&mut state, true, &p));
        assert!(!plateau_step(&mut state, false, &p));
        assert!(plateau_step(&mut state, false, &p));
        assert!(plateau_step(&mut state, false, &p) || plateau_step(&mut state, false, &p));
        assert_eq!(state.lr_scale, 0.2, "floored at min_scale");
        // Warm-up over 2 epochs of 4 steps.
        assert_eq!(learning_rate(1.0, 1.0, 2, 4, 0), 1.0 / 8.0);
        assert_eq!(learning_rate(1.0, 1.0, 2, 4, 7), 1.0);
        assert_eq!(learning_rate(1.0, 0.5, 2, 4, 20), 0.5);
        assert_eq!(learning_rate(1.0, 1.0, 0, 4, 0), 1.0);
    }
}
