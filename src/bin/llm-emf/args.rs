//! The command line of `llm-emf`: its commands and their arguments (clap), and how the
//! arguments of a training run become a configuration.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use llm_emf::data::{ItemId, Protocol, Split, SyntheticConfig};
use llm_emf::train::{Batching, DataSource, ExperimentConfig, Preset};
use llm_emf::{Error, Result, backend};

/// LLM-EMF: cross-domain sequential recommendation with LLM-enriched multimodal item features.
#[derive(Parser, Debug)]
#[command(version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// What defines a training run, shared by `train` and `experiment`.
#[derive(clap::Args, Debug)]
pub(crate) struct RunArgs {
    /// Dataset directory, or `synthetic` for the built-in generator.
    #[arg(long)]
    pub(crate) data: Option<String>,
    /// Image feature file (`[items, dim]` float32, .npy or .safetensors).
    #[arg(long)]
    pub(crate) features_img: Option<PathBuf>,
    /// Text feature file (`[items, dim]` float32, .npy or .safetensors).
    #[arg(long)]
    pub(crate) features_tex: Option<PathBuf>,
    /// Experiment config (JSON), read on top of the preset; the flags override it.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Preset: `titles` (the best setting for data with item titles; needs --features-tex),
    /// `ids` (the best without titles), `recommended` (fast, any data; the default) or `paper`
    /// (the paper's model and recipe). Overrides the config file's own.
    #[arg(long, value_enum)]
    pub(crate) preset: Option<PresetArg>,
    /// Maximum number of epochs.
    #[arg(long)]
    pub(crate) epochs: Option<usize>,
    /// Seed of training (initialisation, shuffling, dropout, sampling).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Device: cpu, wgpu or cuda (the backend must be compiled in).
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// Batching of an epoch: `sorted` (length-sorted pools, the default) or `random`.
    #[arg(long)]
    pub(crate) batching: Option<BatchingArg>,
    /// Parts of each batch trained at the same time on their own threads (default 2; use 1
    /// on one core).
    #[arg(long)]
    pub(crate) shards: Option<usize>,
}

impl RunArgs {
    /// The configuration, its data and its device.
    pub(crate) fn resolve(
        &self,
    ) -> Result<(
        ExperimentConfig,
        llm_emf::train::LoadedData,
        burn::tensor::Device,
    )> {
        let mut cfg = match &self.config {
            Some(p) => ExperimentConfig::load_with(p, self.preset.map(Preset::from))?,
            None => ExperimentConfig::preset(self.preset.map(Preset::from).unwrap_or_default()),
        };
        if let Some(d) = &self.data {
            cfg.data = data_source(d);
        } else if self.config.is_none() {
            return Err(Error::Config(
                "give --data DIR (or --data synthetic) or --config FILE".into(),
            ));
        }
        if self.features_img.is_some() {
            cfg.features.image = self.features_img.clone();
        }
        if self.features_tex.is_some() {
            cfg.features.text = self.features_tex.clone();
        }
        if let Some(e) = self.epochs {
            cfg.train.epochs = e;
        }
        if let Some(s) = self.seed {
            cfg.train.seed = s;
        }
        if let Some(n) = self.shards {
            cfg.train.parallel_shards = n;
        }
        if let Some(b) = self.batching {
            cfg.train.batching = match b {
                BatchingArg::Random => Batching::Random,
                BatchingArg::Sorted => Batching::default(),
            };
        }
        cfg.validate()?;
        let device = backend::device(&self.device)?;
        let data = cfg.load_data()?;
        Ok((cfg, data, device))
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Print per-domain counts of a dataset directory (C2DSR or RecBole format).
    Stats {
        /// Dataset directory, or `synthetic` for the built-in generator.
        #[arg(long)]
        data: String,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Train LLM-EMF and write a run folder.
    Train {
        #[command(flatten)]
        run: RunArgs,
        /// Run folder to write (or to resume).
        #[arg(long)]
        out: PathBuf,
        /// Time the phases of every training step and write them to log.jsonl.
        #[arg(long)]
        profile: bool,
        /// Print nothing while training (no progress bar, no per-epoch line).
        #[arg(long)]
        quiet: bool,
    },
    /// Train one configuration with several seeds (resumable) and summarise them.
    Experiment {
        #[command(flatten)]
        run: RunArgs,
        /// Seeds, comma-separated. Re-running resumes; seeds may be added to a folder's list
        /// (finished ones are not trained again), not left out of it.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        seeds: Vec<u64>,
        /// Experiment folder (one run folder per seed, summary.json, summary.md).
        #[arg(long)]
        out: PathBuf,
        /// Print nothing while training.
        #[arg(long)]
        quiet: bool,
        /// Also print the test rows of the summary (summary.md always holds both splits).
        /// Choices are made on validation; test numbers report a finished setting once.
        #[arg(long)]
        test: bool,
    },
    /// Copy the record of a finished experiment, everything but its weights (experiment.json,
    /// the summary, and each seed's config.json, results.json, log.jsonl and
    /// model.score.json), to a folder that `report` and `experiment` read: what a repository
    /// keeps after the run folder is gone. Seed folders that link to runs archived beside the
    /// destination stay links.
    Archive {
        /// Experiment folder (`experiment --out`).
        src: PathBuf,
        /// Archive folder to write (written whole or not at all).
        #[arg(long)]
        to: PathBuf,
        /// Replace an existing archive at --to.
        #[arg(long)]
        replace: bool,
    },
    /// Fit the score's weights of finished runs on their validation split (what
    /// `train.fit_domain_weights` does after training: the feature modalities' share beside
    /// the IDs, then the sub-sequence weights) and rewrite their best model and results.json;
    /// an experiment folder's summary is rewritten by re-running `experiment`.
    FitWeights {
        /// Run folders.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Also fit the prior count of the learned ID rows (what `train.fit_row_shrinkage`
        /// does after training).
        #[arg(long)]
        rows: bool,
        /// Also draw fresh rows for the items never seen in training, kept when validation
        /// allows (what `train.fit_unseen_rows` does after training: with title rows, after
        /// the row shrinkage, in the domains it leaves whole).
        #[arg(long)]
        unseen_rows: bool,
        /// Leave the score's weights as they are (fit only what --rows / --unseen-rows ask).
        #[arg(long)]
        skip_weights: bool,
        /// Also print the test MRR (written to results.json either way; choose on validation).
        #[arg(long)]
        test: bool,
        /// Device: cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Score finished runs again on both splits under their config.json as it stands and
    /// rewrite the metrics of their results.json (weights and fit records kept): for a setting
    /// that acts at inference only, such as `model.skip_untrained_inputs`, set on a run
    /// trained without it; an experiment folder's summary is rewritten by re-running
    /// `experiment`
    Rescore {
        /// Run folders.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Also print the test MRR (written to results.json either way; choose on validation).
        #[arg(long)]
        test: bool,
        /// Device: cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Tables and charts (SVG) of one or more runs or experiments.
    Report {
        /// Run folders or experiment folders, each optionally as LABEL=PATH.
        #[arg(required = true)]
        runs: Vec<String>,
        /// Where to write report.md and the charts.
        #[arg(long, default_value = "report")]
        out: PathBuf,
        /// The label of a group to compare the others with: adds the tables of paired
        /// differences (runs matched by their training seed), with their chart, and of
        /// differences of means over all runs (with standard errors) to report.md, and prints
        /// the validation ones.
        #[arg(long)]
        reference: Option<String>,
        /// Also print the test tables (report.md always holds both splits). Choices are made
        /// on validation; test numbers are for reporting a finished setting once.
        #[arg(long)]
        test: bool,
    },
    /// Evaluate the best model of a run folder.
    Evaluate {
        /// Run folder.
        #[arg(long)]
        run: PathBuf,
        /// Split.
        #[arg(long, value_enum, default_value_t = SplitArg::Test)]
        split: SplitArg,
        /// Protocol: c2dsr (999 uniform negatives), abxi (999 negatives unseen by the user) or
        /// full (all items of the target domain).
        #[arg(long, value_enum)]
        protocol: Option<ProtocolArg>,
        /// Seed of the sampled negatives (default: the run's).
        #[arg(long)]
        seed: Option<u64>,
        /// Rank against candidates saved in this file instead of sampling them (written with
        /// --save-candidates).
        #[arg(long, conflicts_with_all = ["protocol", "seed"])]
        candidates: Option<PathBuf>,
        /// Save the sampled candidates to this file.
        #[arg(long)]
        save_candidates: Option<PathBuf>,
        /// Score only the examples whose target is listed in this file (global item ids, one
        /// per line), such as the `held_out.txt` a run with `hold_out` writes.
        #[arg(long)]
        targets: Option<PathBuf>,
        /// Device: cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Embed item text (and images) into feature matrices (`[items, dim]` float32 .npy, global
    /// item-id order) with a frozen encoder: CLIP (the paper's), all-MiniLM-L6-v2, or the
    /// weight-free hashing encoder. Resumable: re-run the same command after an interruption.
    Embed {
        /// Dataset directory.
        #[arg(long)]
        data: String,
        /// Text encoder: `clip`, `minilm` (both need --weights) or `hashing` (no weights).
        #[arg(long, default_value = "hashing")]
        text_encoder: String,
        /// Weights folder: a Hugging Face CLIP snapshot (config.json, model.safetensors,
        /// tokenizer.json) or the all-MiniLM-L6-v2 folder (scripts/fetch-weights.sh).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Item text: `titles`, `none` (images only), or a JSON-lines file written by `llm-emf
        /// enrich` (title + enriched text, the paper's "LLM-enhanced" text).
        #[arg(long, default_value = "titles")]
        text_source: String,
        /// Also embed the items' attributes (items.tsv's fourth column).
        #[arg(long)]
        with_attributes: bool,
        /// Image folder (`{item_id}.jpg|png|webp|...`), embedded with CLIP's vision tower.
        #[arg(long)]
        images: Option<PathBuf>,
        /// Output of the image matrix (.npy); required with --images.
        #[arg(long)]
        image_out: Option<PathBuf>,
        /// Items per encoder call.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Device: cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Width of the hashing encoder's vectors.
        #[arg(long, default_value_t = 256)]
        dim: usize,
        /// Seed of the hashing encoder.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Output of the text matrix (.npy).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Enrich item titles with an LLM through an OpenAI-compatible chat endpoint (the paper's
    /// Section 3.3), appending one JSON line per item; re-running resumes.
    Enrich {
        /// Dataset directory.
        #[arg(long)]
        data: String,
        /// Base URL of the endpoint (`http://127.0.0.1:8088`, `https://api.deepseek.com`).
        #[arg(long)]
        endpoint: String,
        /// Model name (`deepseek-reasoner`, the served model's name...).
        #[arg(long)]
        model: String,
        /// Output JSON-lines file (appended to).
        #[arg(long)]
        out: PathBuf,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Most items to request in this run.
        #[arg(long)]
        limit: Option<usize>,
        /// Prompt template file with {domain}, {title} and {attributes} (default: the paper's).
        #[arg(long)]
        template: Option<PathBuf>,
        /// Sampling temperature.
        #[arg(long, default_value_t = 0.6)]
        temperature: f64,
        /// Most tokens generated per item.
        #[arg(long, default_value_t = 1024)]
        max_tokens: usize,
        /// OpenAI's frequency_penalty, -2 to 2 (not sent when left out): positive values break
        /// the repetition loops of small models.
        #[arg(long)]
        frequency_penalty: Option<f64>,
        /// Seconds before a request times out.
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
        /// Retries per item (timeouts, connection errors, 429, 5xx).
        #[arg(long, default_value_t = 5)]
        retries: usize,
        /// Environment variable holding the API key (sent as a bearer token, never printed).
        #[arg(long, default_value = "LLM_EMF_API_KEY")]
        api_key_env: String,
        /// Also ask again the items whose answer in the file is unusable (as `enrich-check`
        /// judges it), typically with a larger --max-tokens; the new answer is appended and
        /// replaces the old one for every reader.
        #[arg(long)]
        redo_unusable: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Check an enrichment file as a reviewer would: the share of usable answers (non-empty,
    /// at least ten words besides the title's, not looping, not the prompt echoed), the lengths
    /// of the answers and, given the text encoder's weights, how much of each the encoder reads.
    EnrichCheck {
        /// Enrichment file (`llm-emf enrich --out`).
        file: PathBuf,
        /// Prompt template file the answers were asked with (default: the paper's).
        #[arg(long)]
        template: Option<PathBuf>,
        /// Folder of all-MiniLM-L6-v2 (its `tokenizer.json`), to count the encoder's tokens.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Fail (exit status 1) when fewer than this share of the items is usable.
        #[arg(long)]
        min_usable: Option<f64>,
    },
    /// Write a run's best model as a self-contained model folder (configuration, score
    /// settings, weights in safetensors, the item catalogue and the frozen feature rows, with
    /// a manifest of checksums) that `recommend --model` and services load without the
    /// training data. An existing model folder at --out is replaced whole.
    Export {
        /// Run folder.
        run: PathBuf,
        /// Model folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Device: cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Add items to a model folder after training, recommendable at once by their text: a
    /// JSON-lines file of `{"domain": NAME, "key": ID, "title": "...", "text": [floats]}`,
    /// `text` the item's vector from the encoder the model was trained with, or left out with
    /// --weights to embed the title with all-MiniLM-L6-v2. The folder is rewritten whole.
    AddItems {
        /// Model folder (`llm-emf export`).
        #[arg(long)]
        model: PathBuf,
        /// The new items (JSON lines).
        #[arg(long)]
        items: PathBuf,
        /// all-MiniLM-L6-v2 weights folder, to embed titles of lines without `text`.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Device: cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Recommend the top-k items of a domain for a history.
    Recommend {
        /// Model folder (`llm-emf export`) or run folder.
        #[arg(long, alias = "run")]
        model: PathBuf,
        /// Global item ids of the history, oldest first, comma-separated.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        history: Vec<ItemId>,
        /// Domain to recommend from (its name, or X / Y).
        #[arg(long)]
        domain: String,
        /// Number of items.
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        /// Device: cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn data_source(data: &str) -> DataSource {
    if data == "synthetic" {
        DataSource::Synthetic(SyntheticConfig::default())
    } else {
        DataSource::Directory {
            path: PathBuf::from(data),
            max_history: llm_emf::data::recbole::DEFAULT_MAX_HISTORY,
        }
    }
}

/// `--preset` values ([`Preset`]).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum PresetArg {
    /// The paper's model and recipe, implemented faithfully (Eq. 10 loss, fixed alpha/beta and
    /// lambdas, Adam with L2, full softmax).
    Paper,
    /// The library's general setting: fast, for any data (q = 64, IDs and whatever features
    /// are given).
    Recommended,
    /// The best measured setting for data without item titles (q = 256, IDs only).
    Ids,
    /// The best measured setting for data with item titles: title vectors in the ID rows and
    /// the rows shrunk towards them by a count chosen on validation. Needs --features-tex.
    Titles,
}

impl From<PresetArg> for Preset {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Paper => Preset::Paper,
            PresetArg::Recommended => Preset::Recommended,
            PresetArg::Ids => Preset::Ids,
            PresetArg::Titles => Preset::Titles,
        }
    }
}

/// `--split` values ([`Split`]).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum SplitArg {
    /// The validation split.
    Valid,
    /// The test split.
    Test,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Self {
        match s {
            SplitArg::Valid => Split::Valid,
            SplitArg::Test => Split::Test,
        }
    }
}

/// `--protocol` values ([`Protocol`]).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum ProtocolArg {
    /// 999 uniform negatives from the target domain (C2DSR, the paper).
    C2dsr,
    /// 999 negatives from the target domain that the user never interacted with (ABXI).
    Abxi,
    /// Every item of the target domain.
    Full,
}

impl From<ProtocolArg> for Protocol {
    fn from(p: ProtocolArg) -> Self {
        match p {
            ProtocolArg::C2dsr => Protocol::C2dsr,
            ProtocolArg::Abxi => Protocol::Abxi,
            ProtocolArg::Full => Protocol::Full,
        }
    }
}

/// `--batching` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum BatchingArg {
    /// Length-sorted pools of 16 batches.
    Sorted,
    /// Batches of a shuffled epoch.
    Random,
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn every_command_is_described_by_its_own_line() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        for sub in cli.get_subcommands() {
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            assert!(!about.is_empty(), "`{}` has no description", sub.get_name());
        }
        let about = |name: &str| {
            cli.find_subcommand(name)
                .and_then(|c| c.get_about())
                .map(|a| a.to_string())
                .unwrap_or_default()
        };
        assert!(about("export").starts_with("Write a run's best model"));
        assert!(about("recommend").starts_with("Recommend the top-k"));
    }
}
