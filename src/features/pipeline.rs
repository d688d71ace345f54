//! From a dataset to feature matrices in one call: the item texts (titles, attributes, or
//! titles with LLM-enriched text) and images of a dataset, embedded by one of the encoders and
//! written as `.npy` matrices that training reads. Jobs resume after an interruption (rows
//! already written are kept when the same job runs again on the same inputs).

use std::path::PathBuf;

use super::HashingTextEncoder;
use super::embed::{EmbedJob, EmbedReport, TextSource, item_images, item_texts};
#[cfg(feature = "encoders")]
use super::embed::{ItemTexts, TextEmbed, embed_images, embed_texts};
#[cfg(feature = "encoders")]
use super::{ClipEmbedder, SentenceEncoder};
use crate::data::Dataset;
use crate::error::{Error, Result};
use burn::tensor::Device;

/// The encoder of item text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoderKind {
    /// CLIP's text tower (its vision tower embeds the images); needs weights.
    Clip,
    /// all-MiniLM-L6-v2 (the paper's text encoder family); needs weights.
    Minilm,
    /// Signed feature hashing of words and word pairs: no weights, for tests and baselines.
    Hashing {
        /// Width of the vectors.
        dim: usize,
        /// Seed of the hash.
        seed: u64,
    },
}

impl TextEncoderKind {
    /// The encoder's name (`clip`, `minilm`, `hashing`).
    pub fn name(self) -> &'static str {
        match self {
            TextEncoderKind::Clip => "clip",
            TextEncoderKind::Minilm => "minilm",
            TextEncoderKind::Hashing { .. } => "hashing",
        }
    }
}

/// What to embed and where to write it.
#[derive(Debug, Clone)]
pub struct EmbedRequest {
    /// The text encoder (with CLIP, also the image encoder).
    pub encoder: TextEncoderKind,
    /// The encoder's weights folder (CLIP and MiniLM).
    pub weights: Option<PathBuf>,
    /// The item text, or `None` to embed images only.
    pub text: Option<TextSource>,
    /// Append the items' attributes to their text.
    pub with_attributes: bool,
    /// Where the text matrix goes (required with `text`).
    pub text_out: Option<PathBuf>,
    /// Image folder and where the image matrix goes (CLIP only).
    pub images: Option<(PathBuf, PathBuf)>,
    /// Items per encoder call.
    pub batch_size: usize,
    /// Draw a progress bar.
    pub progress: bool,
}

/// What [`embed_dataset`] wrote.
#[derive(Debug, Clone)]
pub struct EmbedOutcome {
    /// With enriched text: its file and how many items it gave text to.
    pub enriched: Option<(PathBuf, usize)>,
    /// The text matrix and its report.
    pub text: Option<(PathBuf, EmbedReport)>,
    /// The image matrix and its report.
    pub images: Option<(PathBuf, EmbedReport)>,
}

impl EmbedRequest {
    /// Refuses requests that cannot run, before anything is read or written.
    fn check(&self) -> Result<()> {
        if self.text.is_some() && self.text_out.is_none() {
            return Err(Error::Config(
                "the text matrix needs an output path (--out), or embed images only (--text-source none with --images)".into(),
            ));
        }
        if self.text.is_none() && self.images.is_none() {
            return Err(Error::Config(
                "nothing to embed: no text source and no images".into(),
            ));
        }
        if self.images.is_some() && self.encoder != TextEncoderKind::Clip {
            return Err(Error::Config(
                "images need the clip encoder (its vision tower)".into(),
            ));
        }
        if self.text.is_none() && self.encoder != TextEncoderKind::Clip {
            return Err(Error::Config(format!(
                "the {} encoder embeds text only: give a text source",
                self.encoder.name()
            )));
        }
        if self.batch_size == 0 {
            return Err(Error::Config("the batch size must be at least 1".into()));
        }
        Ok(())
    }

    #[cfg(feature = "encoders")]
    fn weights(&self) -> Result<PathBuf> {
        self.weights.clone().ok_or_else(|| {
            Error::Config(format!(
                "the {} encoder needs --weights DIR, its weights folder (scripts/fetch-weights.sh fetches all-MiniLM-L6-v2)",
                self.encoder.name()
            ))
        })
    }
}

/// FNV-1a over every input, so that partial rows resume only on the same inputs.
fn inputs_hash<'a>(parts: impl Iterator<Item = Option<&'a str>>) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for b in part.unwrap_or("\u{0}").bytes().chain([0xff]) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Embeds `dataset`'s item text and images as `request` says, on `device`.
pub fn embed_dataset(
    dataset: &Dataset,
    request: &EmbedRequest,
    device: &Device,
) -> Result<EmbedOutcome> {
    request.check()?;
    let n = dataset.num_items();
    let texts = match &request.text {
        Some(s) => Some(item_texts(dataset, s, request.with_attributes)?),
        None => None,
    };
    let enriched = match (&texts, &request.text) {
        (Some(t), Some(TextSource::Enriched(path))) => Some((path.clone(), t.enriched)),
        _ => None,
    };
    let images = match &request.images {
        Some((dir, _)) => Some(item_images(dir, dataset)?),
        None => None,
    };
    let hash = inputs_hash(
        texts
            .iter()
            .flat_map(|t| t.texts.iter().map(|x| x.as_deref()))
            .chain(
                images
                    .iter()
                    .flatten()
                    .map(|p| p.as_deref().and_then(|p| p.to_str())),
            ),
    );
    let source_name = match &request.text {
        Some(TextSource::Titles) => "titles".to_string(),
        Some(TextSource::Enriched(p)) => p.display().to_string(),
        None => "none".to_string(),
    };
    let job = |out: &PathBuf, dim: usize, what: &str| EmbedJob {
        out: out.clone(),
        rows: n,
        dim,
        // Partial rows are resumed only by the same job on the same inputs.
        job: format!(
            "{what}|{}|{}|{source_name}|{}|{}|{hash:016x}",
            request.encoder.name(),
            request
                .weights
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            request.with_attributes,
            dataset.name(),
        ),
        // Resume granularity: several encoder batches, sorted by length inside.
        batch_size: request.batch_size * 8,
        progress: request.progress,
    };
    let mut outcome = EmbedOutcome {
        enriched,
        text: None,
        images: None,
    };
    match request.encoder {
        TextEncoderKind::Hashing { dim, seed } => {
            let (Some(texts), Some(out)) = (&texts, &request.text_out) else {
                return Err(Error::Config(
                    "the hashing encoder embeds text only: it needs a text source and an output path"
                        .into(),
                ));
            };
            let start = std::time::Instant::now();
            let encoder = HashingTextEncoder { dim, seed };
            let refs: Vec<Option<&str>> = texts.texts.iter().map(|t| t.as_deref()).collect();
            let (matrix, summary) = encoder.encode(&refs)?;
            matrix.save_npy(out)?;
            let seconds = start.elapsed().as_secs_f64();
            outcome.text = Some((
                out.clone(),
                EmbedReport {
                    rows: matrix.rows(),
                    dim: matrix.dim(),
                    embedded: summary.embedded,
                    without_input: summary.without_text,
                    failed: Vec::new(),
                    resumed_rows: 0,
                    seconds,
                    rows_per_second: n as f64 / seconds.max(1e-9),
                },
            ));
        }
        #[cfg(feature = "encoders")]
        TextEncoderKind::Minilm => {
            let (Some(texts), Some(out)) = (&texts, &request.text_out) else {
                return Err(Error::Config(
                    "the MiniLM encoder embeds text only: it needs a text source and an output path"
                        .into(),
                ));
            };
            let encoder = SentenceEncoder::load(&request.weights()?, device)?;
            let job = job(out, encoder.dim(), "text");
            outcome.text = Some((out.clone(), text_report(&job, texts, &encoder, request)?));
        }
        #[cfg(feature = "encoders")]
        TextEncoderKind::Clip => {
            let clip = ClipEmbedder::load(&request.weights()?, device)?;
            if let (Some(texts), Some(out)) = (&texts, &request.text_out) {
                let job = job(out, clip.dim(), "text");
                outcome.text = Some((out.clone(), text_report(&job, texts, &clip, request)?));
            }
            if let (Some(files), Some((_, out))) = (&images, &request.images) {
                let (_, report) = embed_images(&job(out, clip.dim(), "image"), files, &clip)?;
                outcome.images = Some((out.clone(), report));
            }
        }
        #[cfg(not(feature = "encoders"))]
        TextEncoderKind::Clip | TextEncoderKind::Minilm => {
            let _ = (job, images, device);
            return Err(Error::Config(format!(
                "the {} encoder needs the `encoders` cargo feature: rebuild with `--features encoders`",
                request.encoder.name()
            )));
        }
    }
    Ok(outcome)
}

/// Embeds `texts` with `encoder` as `job` says.
#[cfg(feature = "encoders")]
fn text_report(
    job: &EmbedJob,
    texts: &ItemTexts,
    encoder: &dyn TextEmbed,
    request: &EmbedRequest,
) -> Result<EmbedReport> {
    let (_, report) = embed_texts(job, &texts.texts, encoder, request.batch_size)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(encoder: TextEncoderKind) -> EmbedRequest {
        EmbedRequest {
            encoder,
            weights: None,
            text: Some(TextSource::Titles),
            with_attributes: false,
            text_out: None,
            images: None,
            batch_size: 8,
            progress: false,
        }
    }

    #[test]
    fn requests_that_cannot_run_are_refused_before_any_work() {
        let hashing = TextEncoderKind::Hashing { dim: 8, seed: 0 };
        let e = request(hashing).check().unwrap_err().to_string();
        assert!(e.contains("output path"), "{e}");
        let mut r = request(hashing);
        r.text_out = Some("t.npy".into());
        r.images = Some(("img".into(), "i.npy".into()));
        let e = r.check().unwrap_err().to_string();
        assert!(e.contains("clip"), "{e}");
        let mut r = request(TextEncoderKind::Minilm);
        r.text = None;
        let e = r.check().unwrap_err().to_string();
        assert!(e.contains("nothing to embed"), "{e}");
        let mut r = request(TextEncoderKind::Minilm);
        r.text_out = Some("t.npy".into());
        assert!(r.check().is_ok());
        #[cfg(feature = "encoders")]
        {
            let e = r.weights().unwrap_err().to_string();
            assert!(e.contains("minilm") && e.contains("--weights"), "{e}");
        }
    }

    #[test]
    fn the_hashing_encoder_writes_one_row_per_item() {
        let dir = tempfile::tempdir().unwrap();
        let data = crate::test_data(10, 20, 30);
        let out = dir.path().join("t.npy");
        let mut r = request(TextEncoderKind::Hashing { dim: 16, seed: 3 });
        r.text_out = Some(out.clone());
        let got = embed_dataset(&data.dataset, &r, &crate::test_device()).unwrap();
        let (path, report) = got.text.unwrap();
        assert_eq!(path, out);
        assert_eq!((report.rows, report.dim), (data.dataset.num_items(), 16));
        assert_eq!(report.embedded + report.without_input, report.rows);
        let m = crate::features::FeatureMatrix::load(&out, None).unwrap();
        assert_eq!((m.rows(), m.dim()), (report.rows, 16));
    }
}
