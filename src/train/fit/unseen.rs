//! The validation fit of fresh rows for the items never seen in training
//! ([`fit_unseen_rows`], `train.fit_unseen_rows`): the draws tried, the rule that chooses
//! among them, and the domains whose rows it may replace.

use serde::{Deserialize, Serialize};

use super::domain_mrrs;
use crate::data::DomainId;
use crate::error::{Error, Result};
use crate::eval::Evaluation;
use crate::model::{LlmEmf, UnseenRowDraw};

/// The validation fit of [`crate::train::TrainConfig::fit_unseen_rows`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnseenRowFit {
    /// Rows drawn anew (items never seen in training).
    pub redrawn: usize,
    /// Validation MRR per domain (X, Y): with the rows as they were, then with the rows kept
    /// (the best draw's when none was kept).
    pub mrr: [[f64; 2]; 2],
    /// Validation MRR of the targets never seen in training per domain (X, Y), likewise
    /// (`None` where a domain has none).
    pub unseen_mrr: [[Option<f64>; 2]; 2],
    /// Whether new rows were kept.
    pub kept: bool,
    /// Every draw tried, in order, with its validation MRRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<UnseenRowTrial>,
    /// The draw kept per item domain (X, Y; `None` where the rows were left as they were).
    #[serde(default)]
    pub chosen: [Option<UnseenRowDraw>; 2],
    /// A random order's validation MRR per domain (X, Y), the level the never-seen targets
    /// should clear.
    #[serde(default)]
    pub chance_mrr: [Option<f64>; 2],
    /// The validation MRR per domain (X, Y) of the model before the fits on its rows, when one
    /// of them came first (title rows: whole rows, before the row shrinkage); the allowance
    /// is measured from it as well as from the rows as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_mrr: Option<[f64; 2]>,
}

/// One draw tried by [`fit_unseen_rows`] and what validation made of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnseenRowTrial {
    /// The draw.
    pub draw: UnseenRowDraw,
    /// Validation MRR per domain (X, Y).
    pub mrr: [f64; 2],
    /// Validation MRR of the never-seen targets per domain (X, Y).
    pub unseen_mrr: [Option<f64>; 2],
}

/// Most a domain's validation MRR may fall for the new unseen rows to be kept (0.1 points).
pub const UNSEEN_ROWS_MAX_LOSS: f64 = 0.001;

/// The draws [`fit_unseen_rows`] tries by default, for rows initialised at `init_scale`: as
/// at initialisation, then like the trained rows weighted by `c^p` for p from 0 (any trained
/// item, as the sampled negatives are) to 1 (a training target) in steps of 0.25; with title
/// rows (`titled`), also the weighted mean trained row at the same five p (the titles then
/// tell the never-seen items apart).
pub fn unseen_row_draws(init_scale: f64, titled: bool) -> Vec<UnseenRowDraw> {
    const POPULARITY: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];
    let mut draws = vec![UnseenRowDraw::Initial { scale: init_scale }];
    draws.extend(POPULARITY.map(|popularity| UnseenRowDraw::Trained { popularity }));
    if titled {
        draws.extend(POPULARITY.map(|popularity| UnseenRowDraw::Mean { popularity }));
    }
    draws
}

/// The validation MRR of the targets never seen in training, per named domain (`None` where
/// a domain has none).
fn never_seen_mrrs(e: &Evaluation, domain_names: [&str; 2]) -> [Option<f64>; 2] {
    domain_names.map(|n| {
        e.popularity
            .get(n)
            .and_then(|slices| slices.iter().find(|s| s.max == Some(0)))
            .filter(|s| s.metrics.n > 0)
            .map(|s| s.metrics.mrr)
    })
}

/// The rule of [`fit_unseen_rows`] over the target domains `domains` (indices 0 for X, 1 for
/// Y): of the `tried` draws, given the validation MRR per domain the allowance is measured
/// from (`before_mrr`: the rows as they were, or higher where an earlier row fit's reference
/// is; `before_unseen` for the never-seen targets with the rows as they were) and a random
/// order's (`chance_mrr`), the index of the one to keep. A draw is allowed when none of these
/// domains' MRR falls more than [`UNSEEN_ROWS_MAX_LOSS`] below `before_mrr` and their never-seen targets'
/// MRR falls in none; of those, one that puts the never-seen targets above `chance_mrr` in
/// every one of these domains that has them beats one that does not, then the draw that
/// leans furthest towards popular items ([`UnseenRowDraw::lean`]) wins, then the higher sum
/// of the domains' MRRs (the first of equals).
///
/// The lean decides before the domains' MRR because the never-seen targets' MRR, which the
/// chance test reads, rests on few targets (a few hundred: a standard error of about 0.3
/// points at a 0.75% chance level, as large as the differences between draws). Ranked on the
/// domains' MRR next, the cheapest draw that clears chance wins, and that is mostly a draw
/// which sits at chance in expectation and cleared it by luck: on new targets it falls back
/// below. The never-seen targets' expected rank rises with the lean, and its price, the
/// domains' MRR, is measured on the whole split on the same weights and bounded by the
/// allowance: the rule takes as much lift as the allowance pays for. `None` when no draw is
/// allowed.
pub fn choose_unseen_draw(
    domains: &[usize],
    before_mrr: [f64; 2],
    before_unseen: [Option<f64>; 2],
    chance_mrr: [Option<f64>; 2],
    tried: &[UnseenRowTrial],
) -> Option<usize> {
    let mut best: Option<((bool, f64, f64), usize)> = None;
    for (i, t) in tried.iter().enumerate() {
        let before = (before_mrr, before_unseen);
        let Some((above, sum)) = unseen_draw_rank(domains, before, chance_mrr, t.mrr, t.unseen_mrr)
        else {
            continue;
        };
        let rank = (above, t.draw.lean(), sum);
        if best.is_none_or(|(b, _)| rank > b) {
            best = Some((rank, i));
        }
    }
    best.map(|(_, i)| i)
}

/// How [`choose_unseen_draw`] ranks rows whose validation MRRs are `mrr` (and `unseen_mrr`
/// for the never-seen targets) over `domains`, against `before` (the same two before the
/// draw): `None` when they are not allowed, else (above chance in every domain, the sum of
/// the domains' MRRs).
fn unseen_draw_rank(
    domains: &[usize],
    (before_mrr, before_unseen): ([f64; 2], [Option<f64>; 2]),
    chance_mrr: [Option<f64>; 2],
    mrr: [f64; 2],
    unseen_mrr: [Option<f64>; 2],
) -> Option<(bool, f64)> {
    let unseen_fall = domains
        .iter()
        .any(|&d| match (before_unseen[d], unseen_mrr[d]) {
            (Some(before), Some(after)) => after < before,
            _ => false,
        });
    let overall_fall = domains
        .iter()
        .any(|&d| mrr[d] < before_mrr[d] - UNSEEN_ROWS_MAX_LOSS);
    if unseen_fall || overall_fall {
        return None;
    }
    let above_chance = domains
        .iter()
        .all(|&d| match (unseen_mrr[d], chance_mrr[d]) {
            (Some(u), Some(c)) => u > c,
            _ => true,
        });
    Some((above_chance, domains.iter().map(|&d| mrr[d]).sum()))
}

/// The validation MRR per domain the unseen-row fit's allowance is measured from: the rows as
/// they were (`before`) or, where higher, an earlier row fit's `reference`, so that no domain
/// ends more than the allowance below either.
pub fn allowance_from(before: [f64; 2], reference: Option<[f64; 2]>) -> [f64; 2] {
    std::array::from_fn(|d| reference.map_or(before[d], |r| before[d].max(r[d])))
}

/// The item domains (X, Y) whose never-seen items' learned rows count in `model`'s scores, and
/// so may be redrawn by [`fit_unseen_rows`]: every domain for plain learned rows; with title
/// rows, the domains whose rows are used whole (the row shrinkage drops an unseen item's
/// learned part and places the item by its title alone).
pub fn unseen_row_domains(model: &LlmEmf) -> [bool; 2] {
    let titled = model.has_title_rows();
    DomainId::BOTH.map(|d| !titled || model.row_shrinkage(d).is_none())
}

/// Draws fresh rows for the items never seen in training ([`LlmEmf::redraw_unseen_rows`])
/// each way in `draws` (from `seed`) and keeps, per item domain, the best on validation
/// ([`choose_unseen_draw`] on that domain's targets: its items are the candidates there).
/// `reference` is the validation MRR per domain before an earlier fit on the rows (the row
/// shrinkage, for title rows): the rows fits share one allowance, so no domain may end more
/// than [`UNSEEN_ROWS_MAX_LOSS`] below the rows as they were nor below `reference`. The
/// two domains' choices together are validated once more and kept when they pass the same
/// rule on both domains; otherwise the best single draw for both is kept ([`choose_unseen_draw`]
/// on both), and without one `model` is left as it was. Only the domains of
/// [`unseen_row_domains`] are drawn. An error for an empty `draws`.
pub fn fit_unseen_rows(
    model: &mut LlmEmf,
    mut validate: impl FnMut(&LlmEmf) -> Result<Evaluation>,
    domain_names: [&str; 2],
    draws: &[UnseenRowDraw],
    seed: u64,
    reference: Option<[f64; 2]>,
) -> Result<UnseenRowFit> {
    if draws.is_empty() {
        return Err(Error::Config("unseen-row fit: no draw to try".into()));
    }
    let before = validate(model)?;
    let before_mrr = domain_mrrs(&before, domain_names);
    let allowance_from = allowance_from(before_mrr, reference);
    let before_unseen = never_seen_mrrs(&before, domain_names);
    let chance_mrr = domain_names.map(|n| before.chance_mrr.get(n).copied());
    let eligible = unseen_row_domains(model);
    let mut tried = Vec::new();
    // Rows drawn per domain (the same for every draw).
    let mut redrawn = [0; 2];
    for &draw in draws {
        let mut candidate = model.clone();
        for d in DomainId::BOTH.into_iter().filter(|d| eligible[d.index()]) {
            redrawn[d.index()] = candidate.redraw_domain_unseen_rows(d, draw, seed)?;
        }
        let e = validate(&candidate)?;
        tried.push(UnseenRowTrial {
            draw,
            mrr: domain_mrrs(&e, domain_names),
            unseen_mrr: never_seen_mrrs(&e, domain_names),
        });
    }
    let choose = |domains: &[usize]| {
        choose_unseen_draw(domains, allowance_from, before_unseen, chance_mrr, &tried)
    };
    let with = |chosen: [Option<UnseenRowDraw>; 2]| -> Result<LlmEmf> {
        let mut m = model.clone();
        for d in DomainId::BOTH {
            if let Some(draw) = chosen[d.index()] {
                m.redraw_domain_unseen_rows(d, draw, seed)?;
            }
        }
        Ok(m)
    };
    let per_domain: [Option<UnseenRowDraw>; 2] = std::array::from_fn(|d| {
        (redrawn[d] > 0)
            .then(|| choose(&[d]))
            .flatten()
            .map(|i| tried[i].draw)
    });
    // (the draws kept per domain, the model with them, its validation MRRs and never-seen MRRs)
    let mut result = None;
    if per_domain.iter().any(Option::is_some) {
        let candidate = with(per_domain)?;
        let e = validate(&candidate)?;
        let (mrr, unseen_mrr) = (
            domain_mrrs(&e, domain_names),
            never_seen_mrrs(&e, domain_names),
        );
        let before = (allowance_from, before_unseen);
        if unseen_draw_rank(&[0, 1], before, chance_mrr, mrr, unseen_mrr).is_some() {
            result = Some((per_domain, candidate, mrr, unseen_mrr));
        }
    }
    if result.is_none()
        && redrawn.iter().any(|&n| n > 0)
        && let Some(i) = choose(&[0, 1])
    {
        let chosen = redrawn.map(|n| (n > 0).then_some(tried[i].draw));
        let t = &tried[i];
        result = Some((chosen, with(chosen)?, t.mrr, t.unseen_mrr));
    }
    let (chosen, mrr, unseen_mrr) = match result {
        Some((chosen, candidate, mrr, unseen_mrr)) => {
            *model = candidate;
            (chosen, mrr, unseen_mrr)
        }
        // Nothing kept: the report shows the draw with the best mean MRR.
        None => {
            let mean = |t: &UnseenRowTrial| t.mrr[0] + t.mrr[1];
            let t = tried
                .iter()
                .max_by(|a, b| mean(a).total_cmp(&mean(b)))
                .expect("at least one draw");
            ([None; 2], t.mrr, t.unseen_mrr)
        }
    };
    Ok(UnseenRowFit {
        redrawn: redrawn[0] + redrawn[1],
        mrr: [before_mrr, mrr],
        unseen_mrr: [before_unseen, unseen_mrr],
        kept: chosen.iter().any(Option::is_some),
        chosen,
        tried,
        chance_mrr,
        reference_mrr: reference,
    })
}

/// One line on what [`fit_unseen_rows`] found, for the log.
pub fn describe_unseen_row_fit(fit: &UnseenRowFit) -> String {
    let tried: Vec<String> = fit
        .tried
        .iter()
        .map(|t| {
            format!(
                "{}: {:.2} / {:.2}, never-seen {} / {}",
                t.draw,
                100.0 * t.mrr[0],
                100.0 * t.mrr[1],
                percent(t.unseen_mrr[0]),
                percent(t.unseen_mrr[1])
            )
        })
        .collect();
    format!(
        "{} rows of items never seen in training drawn anew: validation MRR {:.2} / {:.2} -> {:.2} / {:.2}, never-seen targets {} / {} -> {} / {} (%; a random order {} / {}): {} [{}]",
        fit.redrawn,
        100.0 * fit.mrr[0][0],
        100.0 * fit.mrr[0][1],
        100.0 * fit.mrr[1][0],
        100.0 * fit.mrr[1][1],
        percent(fit.unseen_mrr[0][0]),
        percent(fit.unseen_mrr[0][1]),
        percent(fit.unseen_mrr[1][0]),
        percent(fit.unseen_mrr[1][1]),
        percent(fit.chance_mrr[0]),
        percent(fit.chance_mrr[1]),
        match fit.chosen {
            [None, None] => "not kept".into(),
            [x, y] => format!(
                "kept, {} / {}",
                x.map_or("as they were".into(), |d| d.to_string()),
                y.map_or("as they were".into(), |d| d.to_string())
            ),
        },
        tried.join("; ")
    )
}

/// A share in % with two decimals, `-` when absent.
fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}", 100.0 * v))
}
