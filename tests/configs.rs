//! Every named config in `configs/` reads and validates, the presets are what the README's
//! table says, and configs that turn on a removed switch are refused with the reason.

use std::path::{Path, PathBuf};

use llm_emf::train::{ExperimentConfig, Optimizer, Preset};

fn configs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut out = Vec::new();
    for dataset in std::fs::read_dir(&root).unwrap() {
        let dataset = dataset.unwrap().path();
        for file in std::fs::read_dir(&dataset).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "json") {
                out.push(file);
            }
        }
    }
    out
}

#[test]
fn every_named_config_reads_and_validates() {
    let files = configs();
    assert!(files.len() >= 10, "{files:?}");
    for file in files {
        let config =
            ExperimentConfig::load(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        config
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

#[test]
fn the_titles_preset_is_the_ids_preset_with_title_rows_their_shrinkage_and_lighter_decay() {
    let ids = ExperimentConfig::preset(Preset::Ids);
    let titles = ExperimentConfig::preset(Preset::Titles);
    assert_eq!(ids.model.id_dim, 256);
    assert!(!ids.model.modalities.image && !ids.model.modalities.text);
    assert!(titles.model.id_text && titles.train.fit_row_shrinkage);
    assert!(ids.train.fit_unseen_rows && ids.train.fit_row_shrinkage);
    assert_eq!(titles.model.id_row_init, 0.1);
    let mut back = titles.clone();
    back.preset = Preset::Ids;
    back.model.id_text = false;
    back.model.id_row_init = 1.0;
    back.train.optimizer = Optimizer::AdamW { weight_decay: 0.5 };
    back.model.skip_untrained_inputs = true;
    back.model.dropout = 0.4;
    assert_eq!(back, ids);
    assert_eq!(
        titles.model.dropout, 0.5,
        "the title rows were measured at dropout 0.5"
    );
    assert_eq!(
        titles.train.optimizer,
        Optimizer::AdamW { weight_decay: 0.01 },
        "the title rows were measured at weight decay 0.01"
    );
    assert!(
        titles.train.fit_unseen_rows && !titles.model.skip_untrained_inputs,
        "title rows place the unseen items as inputs; fresh learned parts where rows stay whole"
    );
    for preset in Preset::ALL {
        ExperimentConfig::preset(preset).validate().unwrap();
    }
}

#[test]
fn a_removed_switch_is_refused_with_its_reason_and_read_when_off() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    for (text, says) in [
        (
            r#"{"model": {"item_bias": true}}"#,
            "model.item_bias was removed",
        ),
        (
            r#"{"model": {"domain_queries": true}}"#,
            "model.domain_queries was removed",
        ),
        (
            r#"{"model": {"id_text_per_domain": true}}"#,
            "model.id_text_per_domain was removed",
        ),
        (
            r#"{"train": {"fit_popularity": true}}"#,
            "train.fit_popularity was removed",
        ),
        (
            r#"{"train": {"weight_average": {"half_life_epochs": 1}}}"#,
            "train.weight_average was removed",
        ),
        (
            r#"{"model": {"objective": "product", "cross_domain_targets": true}}"#,
            "\"product\" was removed",
        ),
    ] {
        let path = write("on.json", text);
        let err = ExperimentConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains(says) && err.contains("on.json"), "{err}");
        assert!(err.contains("What did not help"), "{err}");
    }
    // A saved config.json from before the removal holds them off: it reads as without them.
    let path = write(
        "off.json",
        r#"{"model": {"item_bias": false, "domain_queries": false, "id_text_per_domain": false},
            "train": {"fit_popularity": false, "weight_average": null}}"#,
    );
    assert_eq!(
        ExperimentConfig::load(&path).unwrap(),
        ExperimentConfig::default()
    );
}
