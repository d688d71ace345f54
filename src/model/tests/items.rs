//! The ID table: title rows, row dropout, row shrinkage, initial scale.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::{all_rows, features, host_scores, id_table, learned_rows, mapped_titles, setup};
use crate::data::DomainId;
use crate::model::*;
use crate::test_device;

#[test]
fn id_text_rows_add_the_mapped_text_when_text_features_are_given() {
    let s = setup();
    let device = test_device();
    let config = ModelConfig {
        id_text: true,
        modalities: ModalitySwitches {
            id: true,
            image: false,
            text: false,
        },
        ..s.config.clone()
    };
    // Item 3 has no text: a zero row.
    let (rows, dim) = (s.data.text.rows(), s.data.text.dim());
    let mut text = s.data.text.data().to_vec();
    text[3 * dim..4 * dim].fill(0.0);
    let text = crate::features::FeatureMatrix::new(rows, dim, text).unwrap();
    let feats = ItemFeatures::new(None, Some(&text), rows, &device).unwrap();
    let model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
    assert_eq!(model.modalities(), vec![Modality::Id]);
    let learned = l2_normalise(id_table(&model).rows.weight.val());
    let head = model.head(Modality::Id, DomainId::X, &feats);
    let diff = |i: usize| -> f32 {
        let a = learned.clone().narrow(0, i, 1);
        let b = head.clone().narrow(0, i, 1);
        (a - b).abs().max().into_scalar()
    };
    assert!(diff(3) < 1e-6, "an item without text keeps its learned row");
    assert!(
        diff(2) > 1e-3,
        "an item with text gets its mapped text added"
    );
    // The encoders read the same rows as the head, scaled by sqrt(q).
    let q = config.id_dim;
    let items = Tensor::<2, Int>::from_data(TensorData::new(vec![2i64, 3], [1, 2]), &device);
    let input = model.embed(Modality::Id, items, &feats).reshape([2, q]);
    let unit = l2_normalise(input);
    let both = head.narrow(0, 2, 2);
    let gap: f32 = (unit - both).abs().max().into_scalar();
    assert!(gap < 1e-5, "{gap}");
    // Without text features the ID rows are the learned rows.
    let plain = LlmEmf::new(&config, &s.data.dataset, &ItemFeatures::none(), &device).unwrap();
    assert!(!plain.has_title_rows());
}

#[test]
fn id_row_dropout_leaves_whole_learned_rows_out_in_training_only() {
    let s = setup();
    let device = test_device().autodiff();
    let config = ModelConfig {
        id_text: true,
        id_row_dropout: 0.5,
        ..s.config.clone()
    };
    let feats = ItemFeatures::new(None, Some(&s.data.text), s.data.text.rows(), &device).unwrap();
    let model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
    let learned = id_table(&model).rows.weight.val();
    let mapped = mapped_titles(&model, &feats);
    let gap = |a: Tensor<2>, b: Tensor<2>| -> Vec<f32> {
        (a - b)
            .abs()
            .max_dim(1)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    // Training (autodiff device): each row is its mapped text alone, or the text plus its
    // learned row scaled by 1 / (1 - p).
    crate::model::dropout::seed_dropout(3);
    let rows = all_rows(&model, &feats);
    let alone = gap(rows.clone(), mapped.clone());
    let kept = gap(rows, mapped.clone() + learned.clone().mul_scalar(2.0));
    let n = alone.len();
    let dropped = alone.iter().filter(|&&g| g < 1e-6).count();
    assert!(
        alone.iter().zip(&kept).all(|(a, k)| a.min(*k) < 1e-5),
        "every row is whole or dropped whole"
    );
    assert!(
        n >= 20 && dropped > n / 5 && dropped < n - n / 5,
        "{dropped} of {n}"
    );
    // Inference (the model off the autodiff device): every learned row, unscaled.
    let inner = model.valid();
    let inner_feats =
        ItemFeatures::new(None, Some(&s.data.text), s.data.text.rows(), &test_device()).unwrap();
    let rows = all_rows(&inner, &inner_feats);
    let want = id_table(&inner).rows.weight.val() + mapped_titles(&inner, &inner_feats);
    assert!(gap(rows, want).iter().all(|&g| g < 1e-5));
    // Bad values are refused by name.
    for (bad, says) in [
        (
            ModelConfig {
                id_row_dropout: 1.0,
                ..config.clone()
            },
            "id_row_dropout",
        ),
        (
            ModelConfig {
                id_row_dropout: -0.1,
                ..config.clone()
            },
            "id_row_dropout",
        ),
        (
            ModelConfig {
                id_text: false,
                ..config.clone()
            },
            "needs id_text",
        ),
    ] {
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn row_shrinkage_scales_learned_rows_by_their_counts_at_inference_only() {
    let s = setup();
    let config = ModelConfig {
        id_text: true,
        ..s.config.clone()
    };
    let build = |device: &Device| {
        let feats =
            ItemFeatures::new(None, Some(&s.data.text), s.data.text.rows(), device).unwrap();
        // Known training counts, unseen items among them: c_i = i mod 4.
        let of_data = Catalogue::of(&s.data.dataset);
        let sizes = DomainId::BOTH.map(|d| of_data.len(d));
        let counts = (0..of_data.num_items()).map(|i| (i % 4) as u32).collect();
        let catalogue = Catalogue::new(sizes, counts).unwrap();
        let model = config.init(&catalogue, &feats, device).unwrap();
        (model, feats)
    };
    let host = |t: Tensor<2>| -> Vec<Vec<f32>> {
        let [rows, cols] = t.dims();
        let v = t.into_data().try_to_vec::<f32>().unwrap();
        (0..rows)
            .map(|r| v[r * cols..(r + 1) * cols].to_vec())
            .collect()
    };
    // The rows with per-item scales of the learned part.
    let expect = |model: &LlmEmf, feats: &ItemFeatures, scale: &dyn Fn(usize) -> f32| {
        let learned = host(id_table(model).rows.weight.val());
        let mapped = host(mapped_titles(model, feats));
        let got = host(all_rows(model, feats));
        for (i, row) in got.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                let want = mapped[i][j] + scale(i) * learned[i][j];
                assert!((v - want).abs() < 1e-5, "item {i}: {v} against {want}");
            }
        }
    };
    let device = test_device();
    let (mut model, feats) = build(&device);
    let n_x = model.n_x;
    expect(&model, &feats, &|_| 1.0);
    // X's rows shrink with k = 2, Y's stay whole.
    model.set_row_shrinkage(DomainId::X, Some(2.0)).unwrap();
    let c = |i: usize| (i % 4) as f32;
    expect(&model, &feats, &|i| {
        if i < n_x { c(i) / (c(i) + 2.0) } else { 1.0 }
    });
    // k = 0 drops exactly the unseen items' rows, in both domains.
    for d in DomainId::BOTH {
        model.set_row_shrinkage(d, Some(0.0)).unwrap();
    }
    expect(&model, &feats, &|i| if c(i) == 0.0 { 0.0 } else { 1.0 });
    // Kept in the score settings, and applied from them.
    let settings = model.score_settings();
    assert_eq!(settings.row_shrinkage, [Some(0.0), Some(0.0)]);
    let (mut fresh, _) = build(&device);
    fresh.apply_score_settings(&settings).unwrap();
    assert_eq!(fresh.row_shrinkage(DomainId::Y), Some(0.0));
    // Training (the autodiff device) always uses the whole rows.
    let ad = device.clone().autodiff();
    let (mut trained, ad_feats) = build(&ad);
    trained.set_row_shrinkage(DomainId::X, Some(0.0)).unwrap();
    expect(&trained, &ad_feats, &|_| 1.0);
    // Bad values are refused by name.
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let err = model
            .set_row_shrinkage(DomainId::X, Some(bad))
            .unwrap_err()
            .to_string();
        assert!(err.contains("row shrinkage"), "{err}");
    }
    // Without title rows, a shrunk row leans towards the mean learned row of its domain's
    // items seen in training: `c / (c + k)` of its own, `k / (c + k)` of the mean; an item
    // never seen in training keeps its own row.
    let plain_config = ModelConfig {
        id_text: false,
        ..config.clone()
    };
    let of_data = Catalogue::of(&s.data.dataset);
    let sizes = DomainId::BOTH.map(|d| of_data.len(d));
    let counts = (0..of_data.num_items()).map(|i| (i % 4) as u32).collect();
    let catalogue = Catalogue::new(sizes, counts).unwrap();
    let feats = features(&s, &device);
    let mut plain = plain_config.init(&catalogue, &feats, &device).unwrap();
    let learned = host(id_table(&plain).rows.weight.val());
    let mean_of = |range: std::ops::Range<usize>| -> Vec<f32> {
        let seen: Vec<usize> = range.filter(|&i| c(i) > 0.0).collect();
        (0..learned[0].len())
            .map(|j| seen.iter().map(|&i| learned[i][j]).sum::<f32>() / seen.len() as f32)
            .collect()
    };
    let n = learned.len();
    let means = [mean_of(0..n_x), mean_of(n_x..n)];
    for (k, d) in [(0.0, DomainId::X), (2.0, DomainId::Y)] {
        plain.set_row_shrinkage(d, Some(k)).unwrap();
    }
    let got = host(id_table(&plain).pick(None, |t| t));
    for (i, row) in got.iter().enumerate() {
        let (k, mean) = if i < n_x {
            (0.0, &means[0])
        } else {
            (2.0, &means[1])
        };
        let own = if c(i) == 0.0 { 1.0 } else { c(i) / (c(i) + k) };
        for (j, v) in row.iter().enumerate() {
            let want = own * learned[i][j] + (1.0 - own) * mean[j];
            assert!((v - want).abs() < 1e-5, "item {i}: {v} against {want}");
        }
    }
    plain.set_row_shrinkage(DomainId::X, None).unwrap();
}

#[test]
fn id_row_init_scales_the_learned_rows_and_must_be_positive() {
    let s = setup();
    let device = test_device();
    let std_of = |init: f64| -> f64 {
        let config = ModelConfig {
            id_dim: 32,
            id_row_init: init,
            ..s.config.clone()
        };
        let model = LlmEmf::new(&config, &s.data.dataset, &ItemFeatures::none(), &device).unwrap();
        let w = id_table(&model).rows.weight.val();
        let v: f32 = w.powi_scalar(2).mean().sqrt().into_scalar();
        v as f64 * (32f64).sqrt()
    };
    // About 2,300 draws: the sample std is within a few percent of its target.
    assert!((std_of(1.0) - 1.0).abs() < 0.1, "{}", std_of(1.0));
    assert!((std_of(0.1) - 0.1).abs() < 0.01, "{}", std_of(0.1));
    for bad in [0.0, -1.0, f64::NAN] {
        let config = ModelConfig {
            id_row_init: bad,
            ..s.config.clone()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("id_row_init"), "{err}");
    }
}

#[test]
fn unseen_item_rows_stand_in_for_untrained_items_and_are_trained_by_row_dropout() {
    let s = setup();
    let device = test_device();
    let config = ModelConfig {
        id_text: false,
        unseen_row: true,
        id_row_dropout: 0.3,
        ..s.config.clone()
    };
    let of_data = Catalogue::of(&s.data.dataset);
    let sizes = DomainId::BOTH.map(|d| of_data.len(d));
    let c = |i: usize| (i % 4) as f32;
    let counts = (0..of_data.num_items()).map(|i| (i % 4) as u32).collect();
    let catalogue = Catalogue::new(sizes, counts).unwrap();
    let feats = features(&s, &device);
    let host = |t: Tensor<2>| -> Vec<Vec<f32>> {
        let [rows, cols] = t.dims();
        let v = t.into_data().try_to_vec::<f32>().unwrap();
        (0..rows)
            .map(|r| v[r * cols..(r + 1) * cols].to_vec())
            .collect()
    };
    let mut model = config.init(&catalogue, &feats, &device).unwrap();
    let table = id_table(&model);
    let learned = host(table.rows.weight.val());
    let unseen = host(table.unseen.as_ref().expect("unseen rows").val());
    let n_x = sizes[0];
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
    // At inference an item never seen in training is its domain's unseen row; the others are
    // themselves.
    let got = host(id_table(&model).pick(None, |t| t));
    for (i, row) in got.iter().enumerate() {
        let want = if c(i) == 0.0 {
            &unseen[usize::from(i >= n_x)]
        } else {
            &learned[i]
        };
        assert!(close(row, want), "item {i}");
    }
    // Under the shrinkage every row leans towards its domain's unseen row by k / (c + k).
    for d in DomainId::BOTH {
        model.set_row_shrinkage(d, Some(2.0)).unwrap();
    }
    let got = host(id_table(&model).pick(None, |t| t));
    for (i, row) in got.iter().enumerate() {
        let own = c(i) / (c(i) + 2.0);
        let u = &unseen[usize::from(i >= n_x)];
        let want: Vec<f32> = (0..row.len())
            .map(|j| own * learned[i][j] + (1.0 - own) * u[j])
            .collect();
        assert!(close(row, &want), "item {i}");
    }
    // In training, each use of a row is the row itself or, with probability 0.3, its
    // domain's unseen row.
    let ad = device.clone().autodiff();
    let trained = config.init(&catalogue, &features(&s, &ad), &ad).unwrap();
    let table = id_table(&trained);
    let learned = host(table.rows.weight.val());
    let unseen = host(table.unseen.as_ref().unwrap().val());
    let got = host(table.pick(None, |t| t));
    let replaced = got
        .iter()
        .enumerate()
        .filter(|(i, row)| {
            let u = &unseen[usize::from(*i >= n_x)];
            assert!(close(row, &learned[*i]) || close(row, u), "item {i}");
            close(row, u)
        })
        .count();
    let share = replaced as f64 / got.len() as f64;
    assert!((0.1..0.5).contains(&share), "{share}");
    // It needs untitled rows and the dropout that trains it.
    for bad in [
        ModelConfig {
            id_row_dropout: 0.0,
            ..config.clone()
        },
        ModelConfig {
            id_text: true,
            ..config.clone()
        },
    ] {
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("unseen_row"), "{err}");
    }
}

#[test]
fn unseen_rows_drawn_like_trained_rows_follow_the_weighted_trained_rows() {
    let s = setup();
    let device = test_device();
    let config = ModelConfig {
        id_dim: 8,
        id_text: false,
        ..s.config.clone()
    };
    let of_data = Catalogue::of(&s.data.dataset);
    let sizes = DomainId::BOTH.map(|d| of_data.len(d));
    let n = of_data.num_items();
    let q = 8;
    // c_i = i mod 4: every fourth item never seen in training.
    let counts: Vec<u32> = (0..n).map(|i| (i % 4) as u32).collect();
    let catalogue = Catalogue::new(sizes, counts.clone()).unwrap();
    let mut model = config
        .init(&catalogue, &ItemFeatures::none(), &device)
        .unwrap();
    // Trained rows: in X, items seen 3 times hold `u`, the others `w`; in Y every trained row
    // is `v`. Unseen rows start at zero.
    let (u, w, v) = ([1.0f32; 8], [-1.0f32; 8], [0.5f32; 8]);
    let mut values = Vec::with_capacity(n * q);
    for (i, &c) in counts.iter().enumerate() {
        let row = match (i < sizes[0], c) {
            (_, 0) => [0.0; 8],
            (true, 3) => u,
            (true, _) => w,
            (false, _) => v,
        };
        values.extend_from_slice(&row);
    }
    let table = model.items.as_mut().unwrap();
    table.rows.weight = burn::module::Param::from_tensor(Tensor::from_data(
        TensorData::new(values.clone(), [n, q]),
        &device,
    ));
    let trained_alike = |popularity: f64, seed: u64| {
        let mut m = model.clone();
        let drawn = m
            .redraw_unseen_rows(UnseenRowDraw::Trained { popularity }, seed)
            .unwrap();
        assert_eq!(drawn, n.div_ceil(4));
        let rows = learned_rows(&m);
        for (i, &c) in counts.iter().enumerate() {
            if c > 0 {
                assert_eq!(
                    rows[i * q..(i + 1) * q],
                    values[i * q..(i + 1) * q],
                    "item {i} kept"
                );
            }
        }
        rows
    };
    // Y's trained rows are all `v`: its new rows are `v` exactly, whatever the weights.
    for popularity in [0.0, 1.0] {
        let rows = trained_alike(popularity, 3);
        for i in (sizes[0]..n).filter(|i| counts[*i] == 0) {
            for x in &rows[i * q..(i + 1) * q] {
                assert!((x - 0.5).abs() < 1e-6, "item {i}: {x}");
            }
        }
    }
    // In X, the new rows' mean follows the weights: with c^0 a third of the trained rows are
    // `u` (mean -1/3), with c^1 half the weight is (mean 0), with a large exponent nearly all
    // of it (every new row `u`). Averaged over 64 draws: the spread of one mean is 0.06.
    let unseen_x: Vec<usize> = (0..sizes[0]).filter(|i| counts[*i] == 0).collect();
    let mean_x = |popularity: f64, seeds: u64| {
        let sum: f32 = (0..seeds)
            .map(|seed| {
                let rows = trained_alike(popularity, seed);
                unseen_x.iter().map(|i| rows[i * q]).sum::<f32>()
            })
            .sum();
        sum / (seeds as usize * unseen_x.len()) as f32
    };
    let uniform = mean_x(0.0, 64);
    assert!((uniform + 1.0 / 3.0).abs() < 0.2, "{uniform}");
    let by_count = mean_x(1.0, 64);
    assert!(by_count.abs() < 0.2, "{by_count}");
    assert!((mean_x(40.0, 1) - 1.0).abs() < 1e-3);
    // The mean draw gives every never-seen item of a domain the same row: the weighted mean
    // of its trained rows (X: `u` and `w` weighted by c^p; Y: `v`).
    for popularity in [0.0f32, 1.0] {
        let (mut sum, mut weight) = (0.0f32, 0.0f32);
        for (i, &c) in counts
            .iter()
            .enumerate()
            .take(sizes[0])
            .filter(|(_, c)| **c > 0)
        {
            let w_i = (c as f32).powf(popularity);
            sum += w_i * values[i * q];
            weight += w_i;
        }
        let x_mean = sum / weight;
        let mut m = model.clone();
        let drawn = m
            .redraw_unseen_rows(
                UnseenRowDraw::Mean {
                    popularity: f64::from(popularity),
                },
                5,
            )
            .unwrap();
        assert_eq!(drawn, n.div_ceil(4));
        let rows = learned_rows(&m);
        for (i, &c) in counts.iter().enumerate() {
            let want = match (c, i < sizes[0]) {
                (0, true) => [x_mean; 8],
                (0, false) => v,
                _ => values[i * q..(i + 1) * q].try_into().unwrap(),
            };
            for (x, w) in rows[i * q..(i + 1) * q].iter().zip(want) {
                assert!((x - w).abs() < 1e-6, "item {i}: {x} against {w}");
            }
        }
    }
    // Out-of-range draws are refused.
    let err = model
        .clone()
        .redraw_unseen_rows(UnseenRowDraw::Trained { popularity: -1.0 }, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("popularity"), "{err}");
}

#[test]
fn redrawing_unseen_rows_replaces_only_the_rows_of_untrained_items() {
    let s = setup();
    let device = test_device();
    let config = ModelConfig {
        id_dim: 32,
        id_text: false,
        ..s.config.clone()
    };
    let of_data = Catalogue::of(&s.data.dataset);
    let sizes = DomainId::BOTH.map(|d| of_data.len(d));
    // Every fourth item never seen in training: c_i = i mod 4.
    let counts = (0..of_data.num_items()).map(|i| (i % 4) as u32).collect();
    let catalogue = Catalogue::new(sizes, counts).unwrap();
    let mut model = config
        .init(&catalogue, &ItemFeatures::none(), &device)
        .unwrap();
    let before = learned_rows(&model);
    let drawn = model
        .redraw_unseen_rows(UnseenRowDraw::Initial { scale: 0.5 }, 7)
        .unwrap();
    let n = of_data.num_items();
    assert_eq!(drawn, n.div_ceil(4));
    let after = learned_rows(&model);
    let q = 32;
    let mut squares = 0.0f64;
    for i in 0..n {
        let (b, a) = (&before[i * q..(i + 1) * q], &after[i * q..(i + 1) * q]);
        if i % 4 == 0 {
            assert!(b != a, "item {i} is unseen: a new row");
            squares += a.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
        } else {
            assert_eq!(b, a, "item {i} was trained: its row stays");
        }
    }
    // The new rows have the initial spread: std 0.5 / sqrt(q) per coordinate.
    let std = (squares / (drawn * q) as f64).sqrt() * (q as f64).sqrt();
    assert!((std - 0.5).abs() < 0.05, "{std}");
    // The same seed draws the same rows.
    let mut again = config
        .init(&catalogue, &ItemFeatures::none(), &device)
        .unwrap();
    again
        .redraw_unseen_rows(UnseenRowDraw::Initial { scale: 0.5 }, 7)
        .unwrap();
    let redrawn = learned_rows(&again);
    for i in (0..n).step_by(4) {
        assert_eq!(after[i * q..(i + 1) * q], redrawn[i * q..(i + 1) * q]);
    }
    // With title rows the learned part is drawn: an unseen item's row is the new learned row
    // plus its mapped title where the domain's rows are whole; where the domain shrinks, the
    // title alone, as before the draw.
    let titled = ModelConfig {
        id_text: true,
        ..config.clone()
    };
    let feats = features(&s, &device);
    let mut m = titled.init(&catalogue, &feats, &device).unwrap();
    m.set_row_shrinkage(DomainId::X, Some(2.0)).unwrap();
    let shrunk_before: Vec<f32> = all_rows(&m, &feats).into_data().try_to_vec().unwrap();
    let before = learned_rows(&m);
    assert_eq!(
        m.redraw_unseen_rows(UnseenRowDraw::Initial { scale: 0.5 }, 7)
            .unwrap(),
        n.div_ceil(4)
    );
    let after = learned_rows(&m);
    let rows: Vec<f32> = all_rows(&m, &feats).into_data().try_to_vec().unwrap();
    let titles: Vec<f32> = mapped_titles(&m, &feats).into_data().try_to_vec().unwrap();
    for i in 0..n {
        let at = i * q..(i + 1) * q;
        if i % 4 != 0 {
            assert_eq!(
                before[at.clone()],
                after[at.clone()],
                "item {i} was trained"
            );
        } else if i < sizes[0] {
            assert_eq!(
                rows[at.clone()],
                shrunk_before[at.clone()],
                "item {i}: X shrinks"
            );
            assert_eq!(rows[at.clone()], titles[at], "item {i}: its title alone");
        } else {
            for ((r, l), t) in rows[at.clone()]
                .iter()
                .zip(&after[at.clone()])
                .zip(&titles[at])
            {
                assert!((r - (l + t)).abs() < 1e-5, "item {i}: drawn row + title");
            }
        }
    }
    // Learned unseen-item rows refuse; so do a bad scale and no ID rows.
    let with_unseen_row = ModelConfig {
        unseen_row: true,
        id_row_dropout: 0.1,
        ..config.clone()
    };
    let mut m = with_unseen_row
        .init(&catalogue, &ItemFeatures::none(), &device)
        .unwrap();
    let err = m
        .redraw_unseen_rows(UnseenRowDraw::Initial { scale: 1.0 }, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unseen_row"), "{err}");
    let mut m = config
        .init(&catalogue, &ItemFeatures::none(), &device)
        .unwrap();
    assert!(
        m.redraw_unseen_rows(UnseenRowDraw::Initial { scale: 0.0 }, 1)
            .is_err()
    );
    let no_ids = ModelConfig {
        modalities: ModalitySwitches {
            id: false,
            image: true,
            text: true,
        },
        ..config.clone()
    };
    let mut m = no_ids.init(&catalogue, &feats, &device).unwrap();
    let err = m
        .redraw_unseen_rows(UnseenRowDraw::Initial { scale: 1.0 }, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ID rows"), "{err}");
}

#[test]
fn dot_heads_let_a_rows_norm_count_where_cosine_heads_ignore_it() {
    let s = setup();
    let device = test_device();
    let config = ModelConfig {
        head: Head::Dot,
        ..s.config.clone()
    };
    let feats = ItemFeatures::none();
    let mut model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
    assert!(model.dot_heads);
    // The output table holds the learned rows as they are.
    let head = model.head(Modality::Id, DomainId::X, &feats);
    let rows = all_rows(&model, &feats).narrow(0, 0, 30);
    let gap: f32 = (head - rows).abs().max().into_scalar();
    assert!(gap < 1e-6, "{gap}");
    // A query is scaled by 1 / sqrt(width), not normalised.
    let h = Tensor::<2>::from_data(
        TensorData::new(vec![3.0f32, 4.0, 0.0, 0.0], [1, 4]),
        &device,
    );
    let q: Vec<f32> = model.query(h.clone()).into_data().try_to_vec().unwrap();
    assert_eq!(q, vec![1.5, 2.0, 0.0, 0.0]);
    model.dot_heads = false;
    let q: Vec<f32> = model.query(h).into_data().try_to_vec().unwrap();
    assert!(
        (q[0] - 0.6).abs() < 1e-6 && (q[1] - 0.8).abs() < 1e-6,
        "{q:?}"
    );

    // The learned row of the first history's best-scored candidate under dot heads made three
    // times as long: its ID logits triple under dot heads and stay under cosine heads, so its
    // score rises under dot heads only. (The logits are checked exactly; the score only for
    // its direction, since a candidate whose probability is near one rises by little.)
    let batcher = crate::data::batcher::SequenceBatcher::new(&s.data.dataset, config.max_len);
    let histories: [&[u32]; 2] = [&[0, 1, 2], &[30, 31, 3]];
    let plan = batcher.plan_histories(&histories);
    let inputs = plan.inputs.clone().map(|p| p.to_tensors(&device));
    let scores = |m: &LlmEmf| host_scores(m, &plan, &inputs, &feats, DomainId::X);
    // Per query row (sub-sequence-major), the ID logits against every X item.
    let id_logits = |m: &LlmEmf| -> (Vec<f32>, usize) {
        let queries = m.score_queries(&plan, &inputs, &feats, DomainId::X);
        let heads = m.heads(DomainId::X, &feats);
        let (_, _, logits) = m
            .stacked_logits(queries.modalities, &heads)
            .into_iter()
            .find(|(modality, _, _)| *modality == Modality::Id)
            .expect("ID logits");
        let n = logits.dims()[1];
        (logits.into_data().try_to_vec().unwrap(), n)
    };
    model.dot_heads = true;
    let dot = scores(&model);
    // (An item outside the histories: the encoders read the rows as they are.)
    let best = (4..30).max_by(|&a, &b| dot[a].total_cmp(&dot[b])).unwrap();
    let mut longer = model.clone();
    let table = longer.items.as_mut().unwrap();
    let w = table.rows.weight.val();
    let [n, _] = w.dims();
    let mut factor = vec![1.0f32; n];
    factor[best] = 3.0;
    let factor = Tensor::<2>::from_data(TensorData::new(factor, [n, 1]), &device);
    table.rows.weight = burn::module::Param::from_tensor(w * factor);
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * a.abs().max(b.abs()).max(1.0);
    let ((before, width), (after, _)) = (id_logits(&model), id_logits(&longer));
    for (row, (a, b)) in before.chunks(width).zip(after.chunks(width)).enumerate() {
        for item in 0..width {
            let expected = if item == best { 3.0 * a[item] } else { a[item] };
            assert!(
                close(b[item], expected),
                "dot heads, query {row}, item {item}: {} against {expected}",
                b[item]
            );
        }
    }
    let dot_longer = scores(&longer);
    assert!(
        dot_longer[best] > dot[best],
        "{} vs {}",
        dot_longer[best],
        dot[best]
    );
    // Scores are mixtures of probabilities: compared relative to their size.
    model.dot_heads = false;
    longer.dot_heads = false;
    let ((before, _), (after, _)) = (id_logits(&model), id_logits(&longer));
    for (a, b) in before.iter().zip(&after) {
        assert!(close(*a, *b), "cosine heads: {a} vs {b}");
    }
    for (a, b) in scores(&model).iter().zip(&scores(&longer)) {
        let gap = (a - b).abs() / a.abs().max(b.abs()).max(f32::MIN_POSITIVE);
        assert!(gap < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn inputs_can_keep_their_trained_rows_while_candidates_shrink() {
    let s = setup();
    let device = test_device();
    let of_data = Catalogue::of(&s.data.dataset);
    let sizes = DomainId::BOTH.map(|d| of_data.len(d));
    let n = of_data.num_items();
    // Every fourth item never seen in training: c_i = i mod 4.
    let counts: Vec<u32> = (0..n).map(|i| (i % 4) as u32).collect();
    let catalogue = Catalogue::new(sizes, counts.clone()).unwrap();
    let feats = features(&s, &device);
    let config = ModelConfig {
        id_text: true,
        shrink_inputs: false,
        ..s.config.clone()
    };
    let mut model = config.init(&catalogue, &feats, &device).unwrap();
    // X shrinks, Y's rows are whole.
    model.set_row_shrinkage(DomainId::X, Some(2.0)).unwrap();
    let table = id_table(&model);
    let all = Tensor::<1, Int>::arange(0..n as i64, &device);
    let text = feats.table(Modality::Text);
    let inputs: Vec<f32> = table.forward(all, text).into_data().try_to_vec().unwrap();
    let outputs: Vec<f32> = all_rows(&model, &feats).into_data().try_to_vec().unwrap();
    let titles: Vec<f32> = mapped_titles(&model, &feats)
        .into_data()
        .try_to_vec()
        .unwrap();
    let learned = learned_rows(&model);
    let q = s.config.id_dim;
    for (i, &c) in counts.iter().enumerate() {
        let at = i * q..(i + 1) * q;
        let in_x = i < sizes[0];
        for j in at {
            let whole = learned[j] + titles[j];
            // Inputs: trained rows whole; a never-seen item of the shrinking X by its title.
            let want_in = if in_x && c == 0 { titles[j] } else { whole };
            assert!((inputs[j] - want_in).abs() < 1e-5, "item {i} as input");
            // Candidates: X's rows shrunk by c / (c + 2), Y's whole.
            let scale = if in_x {
                c as f32 / (c as f32 + 2.0)
            } else {
                1.0
            };
            let want_out = scale * learned[j] + titles[j];
            assert!(
                (outputs[j] - want_out).abs() < 1e-5,
                "item {i} as candidate"
            );
        }
    }
    // The default shrinks inputs and candidates alike.
    let mut alike = ModelConfig {
        id_text: true,
        ..s.config.clone()
    }
    .init(&catalogue, &feats, &device)
    .unwrap();
    alike.set_row_shrinkage(DomainId::X, Some(2.0)).unwrap();
    let all = Tensor::<1, Int>::arange(0..n as i64, &device);
    let inputs = id_table(&alike).forward(all, text);
    let gap: f32 = (inputs - all_rows(&alike, &feats))
        .abs()
        .max()
        .into_scalar();
    assert!(gap < 1e-6, "{gap}");
}
