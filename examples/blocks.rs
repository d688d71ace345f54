//! A downstream crate's own two-domain recommender, built from `llm_emf`'s public blocks and
//! trained a few steps: an [`ItemTable`] (learned ID rows plus each item's mapped text row),
//! one [`SequenceEncoder`] per sub-sequence (S^X, S^Y, S^{X+Y}) and modality (IDs, frozen
//! text), a [`ModalityFusion`] head mixing the two modalities (Eq. 8) and a [`DomainLoss`]
//! weighting the sub-sequences (Eq. 10). It predicts the last item of every training sequence
//! of the synthetic world from the items before it, and checks that the loss falls.
//!
//! ```sh
//! cargo run --release --example blocks [-- --device cpu --steps 30]
//! ```

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use clap::Parser;

use llm_emf::data::{DomainId, ItemId, SyntheticConfig};
use llm_emf::model::{
    AttentionBias, DomainLoss, DomainLossConfig, ItemFeatures, ItemTable, ItemTableConfig,
    Modality, ModalityFusion, ModalityFusionConfig, SequenceEncoder, SequenceEncoderConfig,
    l2_normalise,
};
use llm_emf::{Result, backend};

#[derive(Debug, Parser)]
struct Args {
    /// Device: cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Training steps (each over the whole small training set).
    #[arg(long, default_value = "30")]
    steps: usize,
}

/// Longest history read.
const LEN: usize = 12;
/// Width of the ID rows.
const WIDTH: usize = 16;
/// Logit scale of the cosine heads (1 / temperature).
const SCALE: f64 = 10.0;

/// Two modalities (IDs with mapped text, frozen text) times three sub-sequences (X, Y, X+Y).
#[derive(Module, Debug)]
struct TwoDomainRecommender {
    items: ItemTable,
    /// Per sub-sequence (X, Y, merged): the ID encoder, then the text encoder.
    encoders: Vec<SequenceEncoder>,
    fusion: ModalityFusion,
    domain_loss: DomainLoss,
}

/// One sub-sequence of a batch, left-padded to `LEN`, with its attention bias.
struct Padded {
    items: Tensor<2, Int>,
    positions: Tensor<2, Int>,
    bias: AttentionBias,
    /// Rows with at least one item.
    present: Vec<bool>,
}

fn pad(rows: &[Vec<ItemId>], device: &Device) -> Padded {
    let b = rows.len();
    let (mut items, mut positions, mut mask) = (
        vec![0i64; b * LEN],
        vec![0i64; b * LEN],
        vec![true; b * LEN],
    );
    for (r, row) in rows.iter().enumerate() {
        let row = &row[row.len().saturating_sub(LEN)..];
        let start = LEN - row.len();
        for (k, &item) in row.iter().enumerate() {
            items[r * LEN + start + k] = i64::from(item);
            positions[r * LEN + start + k] = k as i64;
            mask[r * LEN + start + k] = false;
        }
    }
    Padded {
        items: Tensor::from_data(TensorData::new(items, [b, LEN]), device),
        positions: Tensor::from_data(TensorData::new(positions, [b, LEN]), device),
        bias: AttentionBias::causal(&mask, b, LEN, device),
        present: rows.iter().map(|r| !r.is_empty()).collect(),
    }
}

impl TwoDomainRecommender {
    /// The mean negative log-likelihood of the targets (all of domain `d`, whose items are the
    /// global rows `start .. start + n`) from each sub-sequence, combined by Eq. 10.
    fn loss(
        &self,
        subs: &[Padded; 3],
        targets: Tensor<1, Int>,
        d: DomainId,
        (start, n): (usize, usize),
        text: &Tensor<2>,
    ) -> Option<Tensor<1>> {
        let device = targets.device();
        let b = targets.dims()[0];
        let domain_rows = |t: Tensor<2>| t.narrow(0, start, n);
        // The output tables of domain d: ID rows (with mapped text) and frozen text rows.
        let id_table = l2_normalise(self.items.pick(Some(text), domain_rows));
        let text_table = domain_rows(text.clone());
        let losses: Vec<Option<Tensor<1>>> = subs
            .iter()
            .enumerate()
            .map(|(s, input)| {
                let keep: Vec<i64> = (0..b as i64)
                    .filter(|&r| input.present[r as usize])
                    .collect();
                if keep.is_empty() {
                    return None;
                }
                let flat = input.items.clone().reshape([b * LEN]);
                let id_in = self
                    .items
                    .forward(flat.clone(), Some(text))
                    .reshape([b, LEN, WIDTH]);
                let text_in = text
                    .clone()
                    .select(0, flat)
                    .reshape([b, LEN, text.dims()[1]]);
                let mut per_modality = Vec::new();
                for (m, (x, table)) in [
                    (Modality::Id, (id_in, &id_table)),
                    (Modality::Text, (text_in, &text_table)),
                ] {
                    let encoder = &self.encoders[2 * s + usize::from(m == Modality::Text)];
                    let h = encoder.forward_last(x, input.positions.clone(), &input.bias);
                    let logits = l2_normalise(h)
                        .matmul(table.clone().transpose())
                        .mul_scalar(SCALE);
                    per_modality.push((m.index(), log_softmax(logits, 1)));
                }
                let log_p = self.fusion.fuse(per_modality);
                let rows = Tensor::<1, Int>::from_data(
                    TensorData::new(keep.clone(), [keep.len()]),
                    &device,
                );
                let picked = log_p
                    .select(0, rows.clone())
                    .gather(1, targets.clone().select(0, rows).reshape([keep.len(), 1]));
                Some(picked.mean().neg().reshape([1]))
            })
            .collect();
        let losses: [Option<Tensor<1>>; 3] = losses.try_into().ok()?;
        self.domain_loss.forward(d, losses)
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = backend::device(&args.device)?.autodiff();
    device.seed(1);
    let world = SyntheticConfig {
        users: 300,
        items_x: 60,
        items_y: 80,
        topics: 4,
        feature_dim: 16,
        ..Default::default()
    }
    .generate()?;
    let dataset = &world.dataset;
    let sizes = DomainId::BOTH.map(|d| dataset.domain(d).len as usize);
    let text_dim = world.text.dim();
    // The frozen text rows, L2-normalised, outside the module (no optimizer sees them).
    let features = ItemFeatures::new(None, Some(&world.text), dataset.num_items(), &device)?;
    let text = features.table(Modality::Text).expect("text rows").clone();

    let encoder = |width: usize| {
        SequenceEncoderConfig::new(width, LEN)
            .with_layers(1)
            .with_dropout(0.1)
            .init(&device)
    };
    let mut model = TwoDomainRecommender {
        items: ItemTableConfig::new(sizes, WIDTH)
            .with_text_dim(Some(text_dim))
            .with_init_scale(0.1)
            .init(&dataset.train_counts(), &device)?,
        encoders: (0..3)
            .flat_map(|_| [encoder(WIDTH), encoder(text_dim)])
            .collect(),
        fusion: ModalityFusionConfig::new()
            .with_learnable(true)
            .init([true, false, true], &device),
        domain_loss: DomainLossConfig::new().init([true, true, true], &device),
    };

    // Every training sequence's last item is a target; the items before it the history,
    // split into S^X, S^Y and S^{X+Y}. One batch per target domain.
    let x = dataset.domain(DomainId::X);
    let batches: Vec<(DomainId, [Padded; 3], Tensor<1, Int>)> = DomainId::BOTH
        .into_iter()
        .map(|d| {
            let dom = dataset.domain(d);
            let picked: Vec<&[ItemId]> = dataset
                .train()?
                .iter()
                .filter(|s| s.items.len() >= 2 && dom.contains(*s.items.last().expect("items")))
                .map(|s| s.items.as_slice())
                .collect();
            let split = |keep: &dyn Fn(ItemId) -> bool| -> Vec<Vec<ItemId>> {
                picked
                    .iter()
                    .map(|s| {
                        s[..s.len() - 1]
                            .iter()
                            .copied()
                            .filter(|&i| keep(i))
                            .collect()
                    })
                    .collect()
            };
            let subs = [
                split(&|i| x.contains(i)),
                split(&|i| !x.contains(i)),
                split(&|_| true),
            ]
            .map(|rows| pad(&rows, &device));
            let targets: Vec<i64> = picked
                .iter()
                .map(|s| i64::from(dom.local(*s.last().expect("items"))))
                .collect();
            let n = targets.len();
            Ok((
                d,
                subs,
                Tensor::from_data(TensorData::new(targets, [n]), &device),
            ))
        })
        .collect::<Result<_>>()?;
    let domain_rows = |d: DomainId| {
        if d == DomainId::X {
            (0, sizes[0])
        } else {
            (sizes[0], sizes[1])
        }
    };
    let total = |m: &TwoDomainRecommender| -> Tensor<1> {
        batches
            .iter()
            .filter_map(|(d, subs, targets)| {
                m.loss(subs, targets.clone(), *d, domain_rows(*d), &text)
            })
            .reduce(|a, b| a + b)
            .expect("a batch with targets")
    };

    let mut optim = AdamConfig::new().init();
    let first: f32 = total(&model).into_scalar();
    for step in 0..args.steps {
        let loss = total(&model);
        if step % 10 == 0 {
            let value: f32 = loss.clone().into_scalar();
            println!("step {step:>3}: loss {value:.4}");
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    let last: f32 = total(&model).into_scalar();
    println!(
        "loss {first:.4} -> {last:.4}; fusion weights (id, image, text) {:?}",
        model.fusion.weights()
    );
    assert!(last < first, "the loss did not fall: {first} -> {last}");
    Ok(())
}
