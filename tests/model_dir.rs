//! The model folder: a trained run exported, served without the run or its data with the same
//! items and scores, and refused with an error naming the file when it is not whole.

mod common;

use std::path::{Path, PathBuf};

use common::{quiet, tiny_config};
use sha2::{Digest, Sha256};

use llm_emf::backend;
use llm_emf::data::DomainId;
use llm_emf::recommend::{Exclude, NewItem, Recommendation, Recommender, Request, TrainedRun};
use llm_emf::train::{ExperimentConfig, Preset, train};

/// Histories of the tiny world (X is 0..40, Y is 40..90), with the domain to recommend from.
const REQUESTS: [(&[u32], DomainId); 6] = [
    (&[0, 45, 3, 60], DomainId::Y),
    (&[0, 45, 3, 60], DomainId::X),
    (&[41, 42], DomainId::X),
    (&[5], DomainId::Y),
    (&[12, 13, 14, 70, 71], DomainId::Y),
    (&[89], DomainId::X),
];

fn answers(rec: &Recommender) -> Vec<Vec<Recommendation>> {
    REQUESTS
        .iter()
        .map(|(h, d)| rec.recommend(h, *d, 10, Exclude::History).unwrap())
        .collect()
}

/// A titled run (title rows, row shrinkage fitted on validation) whose text vectors live in a
/// file outside the run folder.
fn titled_config(dir: &Path) -> (ExperimentConfig, PathBuf) {
    let mut cfg = tiny_config(Preset::Recommended, 2);
    cfg.model.id_text = true;
    cfg.model.id_row_init = 0.1;
    cfg.train.fit_row_shrinkage = true;
    let generated = cfg.load_data().unwrap();
    let text = dir.join("features/text.npy");
    std::fs::create_dir_all(text.parent().unwrap()).unwrap();
    generated.text.unwrap().save_npy(&text).unwrap();
    cfg.features.text = Some(text.clone());
    (cfg, text)
}

fn export_tiny(dir: &Path) -> (PathBuf, Vec<Vec<Recommendation>>) {
    let device = backend::from_env().unwrap();
    let (cfg, text) = titled_config(dir);
    let run_dir = dir.join("run");
    train(&cfg, &cfg.load_data().unwrap(), &run_dir, &device, &quiet()).unwrap();
    let run = TrainedRun::load(&run_dir, &device).unwrap();
    let model_dir = dir.join("export/model");
    let report = run.export(&model_dir).unwrap();
    let mut names: Vec<&str> = report.files.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "features.safetensors",
            "items.jsonl",
            "manifest.json",
            "model.json",
            "weights.safetensors"
        ]
    );
    assert_eq!(report.items, 90);
    let want = answers(&run.into_recommender());
    // The run, its config and the feature file it read are gone.
    std::fs::remove_dir_all(&run_dir).unwrap();
    std::fs::remove_file(&text).unwrap();
    (model_dir, want)
}

#[test]
fn an_exported_model_serves_alone_with_the_run_s_items_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    let (model_dir, want) = export_tiny(dir.path());
    // Nothing in the folder points outside it.
    for f in ["model.json", "manifest.json", "items.jsonl"] {
        let text = std::fs::read_to_string(model_dir.join(f)).unwrap();
        assert!(
            !text.contains(dir.path().to_str().unwrap()) && !text.contains("text.npy"),
            "{f} names a path: {text}"
        );
    }
    let device = backend::from_env().unwrap();
    let served = Recommender::load(&model_dir, &device).unwrap();
    let got = answers(&served);
    for ((w, g), (h, d)) in want.iter().zip(&got).zip(REQUESTS) {
        assert_eq!(
            w.iter()
                .map(|r| (r.item, r.title.clone()))
                .collect::<Vec<_>>(),
            g.iter()
                .map(|r| (r.item, r.title.clone()))
                .collect::<Vec<_>>(),
            "history {h:?}, domain {d:?}"
        );
        for (a, b) in w.iter().zip(g) {
            assert!((a.score - b.score).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }
    // Exporting again replaces the folder whole; a folder that is not a model is left alone.
    let copy = dir.path().join("copy");
    copy_dir(&model_dir, &copy);
    let other = dir.path().join("notes");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("keep.txt"), "mine").unwrap();
    let loaded = llm_emf::model_dir::load(&copy, &device).unwrap();
    let e = llm_emf::model_dir::save(&other, &loaded.model, &loaded.parts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("notes") && e.contains("not a model folder"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(other.join("keep.txt")).unwrap(),
        "mine"
    );
    llm_emf::model_dir::save(&model_dir, &loaded.model, &loaded.parts).unwrap();
    let again = answers(&Recommender::load(&model_dir, &device).unwrap());
    assert_eq!(
        again.iter().flatten().map(|r| r.item).collect::<Vec<_>>(),
        got.iter().flatten().map(|r| r.item).collect::<Vec<_>>()
    );
    let leftovers: Vec<_> = std::fs::read_dir(model_dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["model"], "no staging folder left behind");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Replaces `name` in the model folder `dir` and records its size and checksum in the
/// manifest, as a consistent (but wrong) export would.
fn rewrite_consistently(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let sha: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    manifest["files"][name] = serde_json::json!({"bytes": bytes.len(), "sha256": sha});
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

#[test]
fn folders_that_are_not_whole_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (model_dir, _) = export_tiny(dir.path());
    let device = backend::from_env().unwrap();
    let fresh = |name: &str| {
        let d = dir.path().join(name);
        copy_dir(&model_dir, &d);
        d
    };
    let error = |d: &Path| {
        Recommender::load(d, &device)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };

    // Another format version.
    let d = fresh("version");
    let path = d.join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"version\": 1", "\"version\": 99")).unwrap();
    let e = error(&d);
    assert!(
        e.contains("manifest.json") && e.contains("version 99"),
        "{e}"
    );

    // A truncated weights file.
    let d = fresh("truncated");
    let w = std::fs::read(d.join("weights.safetensors")).unwrap();
    std::fs::write(d.join("weights.safetensors"), &w[..w.len() / 2]).unwrap();
    let e = error(&d);
    assert!(
        e.contains("weights.safetensors") && e.contains("truncated"),
        "{e}"
    );

    // A changed byte in the catalogue.
    let d = fresh("tampered");
    let mut items = std::fs::read(d.join("items.jsonl")).unwrap();
    let at = items.iter().position(|&b| b == b'7').unwrap();
    items[at] = b'8';
    std::fs::write(d.join("items.jsonl"), &items).unwrap();
    let e = error(&d);
    assert!(e.contains("items.jsonl") && e.contains("checksum"), "{e}");

    // Parts that disagree, each file whole: an item fewer than the domains hold.
    let d = fresh("fewer-items");
    let text = std::fs::read_to_string(d.join("items.jsonl")).unwrap();
    let kept: String = text.lines().take(89).map(|l| format!("{l}\n")).collect();
    rewrite_consistently(&d, "items.jsonl", kept.as_bytes());
    let e = error(&d);
    assert!(e.contains("items.jsonl") && e.contains("89 items"), "{e}");

    // Feature rows of another width than the model was built for.
    let d = fresh("width");
    let text = std::fs::read_to_string(d.join("model.json")).unwrap();
    let mut model: serde_json::Value = serde_json::from_str(&text).unwrap();
    model["feature_widths"]["text"] = serde_json::json!(9);
    rewrite_consistently(&d, "model.json", &serde_json::to_vec(&model).unwrap());
    let e = error(&d);
    assert!(
        e.contains("features.safetensors") && e.contains("[90, 9]"),
        "{e}"
    );

    // Weights of another model (a wider ID table): the parameters do not fit.
    let d = fresh("other-model");
    let mut model: serde_json::Value = serde_json::from_str(&text).unwrap();
    model["model"]["id_dim"] = serde_json::json!(24);
    rewrite_consistently(&d, "model.json", &serde_json::to_vec(&model).unwrap());
    let e = error(&d);
    assert!(e.contains("weights.safetensors"), "{e}");

    // A file the manifest lists is gone; a folder without a manifest is not a model folder.
    let d = fresh("gone");
    std::fs::remove_file(d.join("features.safetensors")).unwrap();
    let e = error(&d);
    assert!(e.contains("features.safetensors"), "{e}");
    let d = fresh("no-manifest");
    std::fs::remove_file(d.join("manifest.json")).unwrap();
    let e = llm_emf::model_dir::load(&d, &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a model folder"), "{e}");
}

/// A titled model whose learned rows are all shrunk away (a prior count far above any
/// training count), without the image modality: every catalogue item is scored by its text
/// alone, as an added item is.
fn text_scored(dir: &Path) -> TrainedRun {
    let device = backend::from_env().unwrap();
    let (mut cfg, _) = titled_config(dir);
    cfg.model.modalities.image = false;
    cfg.train.fit_row_shrinkage = false;
    let run_dir = dir.join("run");
    train(&cfg, &cfg.load_data().unwrap(), &run_dir, &device, &quiet()).unwrap();
    let mut run = TrainedRun::load(&run_dir, &device).unwrap();
    for d in DomainId::BOTH {
        run.model.set_row_shrinkage(d, Some(1e12)).unwrap();
    }
    run
}

fn twin_of(run: &TrainedRun, item: usize, key: &str) -> NewItem {
    NewItem {
        domain: DomainId::Y,
        key: key.into(),
        title: Some(format!("{key}, a new item")),
        text: run.data.text.as_ref().unwrap().row(item).to_vec(),
    }
}

#[test]
fn new_items_are_recommended_by_their_text_at_once_and_saved_with_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let device = backend::from_env().unwrap();
    let run = text_scored(dir.path());
    let model_dir = dir.path().join("model");
    run.export(&model_dir).unwrap();
    // Twins of Y's items 45 and 70: the same text, so the same score as they get.
    let twins = [twin_of(&run, 45, "new-45"), twin_of(&run, 70, "new-70")];
    let mut rec = run.into_recommender();
    assert_eq!(rec.new_item_text_width().unwrap(), 8);
    let ids = rec.add_items(&twins).unwrap();
    assert_eq!(ids, [90, 91]);
    assert_eq!(rec.item_by_key("new-70"), Some(91));
    assert_eq!(rec.item_by_key("45"), Some(45));
    let ask = |rec: &Recommender| {
        let request = Request {
            history: vec![0, 45, 3, 60],
            domain: DomainId::Y,
            k: 4,
            exclude: Exclude::Nothing,
            candidates: Some(vec![45, 70, 90, 91]),
        };
        rec.recommend_batch(&[request]).unwrap().remove(0)
    };
    let got = ask(&rec);
    let score = |item: u32| got.iter().find(|r| r.item == item).unwrap().score;
    for (old, new) in [(45, 90), (70, 91)] {
        assert!(
            (score(old) - score(new)).abs() <= 1e-6 * score(old).abs(),
            "{got:?}"
        );
    }
    let title = got.iter().find(|r| r.item == 91).unwrap().title.clone();
    assert_eq!(title.as_deref(), Some("new-70, a new item"));
    // Many requests at once (scored with the backend's matrix product rather than on the host)
    // see the added columns too, with the same scores.
    let many: Vec<Request> = (0..6)
        .map(|_| Request {
            history: vec![0, 45, 3, 60],
            domain: DomainId::Y,
            k: 4,
            exclude: Exclude::Nothing,
            candidates: Some(vec![45, 70, 90, 91]),
        })
        .collect();
    for answer in rec.recommend_batch(&many).unwrap() {
        for (a, b) in answer.iter().zip(&got) {
            assert_eq!(a.item, b.item);
            assert!(
                (a.score - b.score).abs() <= 1e-4 * b.score.abs(),
                "{a:?} vs {b:?}"
            );
        }
    }
    // Among the whole domain, without a candidate list, they are ranked like everything else.
    let all = rec
        .recommend(&[0, 45, 3, 60], DomainId::Y, 52, Exclude::Nothing)
        .unwrap();
    assert_eq!(all.len(), 52);
    assert!(all.iter().any(|r| r.item == 90) && all.iter().any(|r| r.item == 91));

    // Saved into the model folder, they are served after a reload with the same scores.
    llm_emf::model_dir::add_items(&model_dir, &twins, &device).unwrap();
    let reloaded = Recommender::load(&model_dir, &device).unwrap();
    assert_eq!(reloaded.added_items().count(), 2);
    let again = ask(&reloaded);
    for (a, b) in got.iter().zip(&again) {
        assert_eq!(a.item, b.item);
        assert!((a.score - b.score).abs() < 1e-6, "{a:?} vs {b:?}");
    }
    // Adding the same keys again is refused, and the folder keeps its two.
    let e = llm_emf::model_dir::add_items(&model_dir, &twins[..1], &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("new-45") && e.contains("already"), "{e}");
    assert_eq!(
        Recommender::load(&model_dir, &device)
            .unwrap()
            .added_items()
            .count(),
        2
    );
}

/// A titled run whose Y items never seen in training got the mean trained learned part
/// (`UnseenRowDraw::Mean`, what the unseen-row fit keeps for title rows in a domain used
/// whole): an item added after training with the same text is scored as they are, before
/// and after the model folder is reloaded, and by its title alone where the rows shrink.
#[test]
fn a_new_item_gets_the_learned_part_its_domain_s_never_seen_items_share() {
    use llm_emf::model::UnseenRowDraw;
    use llm_emf::train::HoldOut;

    let dir = tempfile::tempdir().unwrap();
    let device = backend::from_env().unwrap();
    let (mut cfg, _) = titled_config(dir.path());
    cfg.model.modalities.image = false;
    cfg.train.fit_row_shrinkage = false;
    cfg.train.fit_unseen_rows = false;
    // Y items held out of training: never seen, with titles.
    cfg.hold_out = Some(HoldOut {
        domain: "Y".into(),
        share: 0.2,
        seed: 3,
        titled_only: true,
    });
    let run_dir = dir.path().join("run");
    train(&cfg, &cfg.load_data().unwrap(), &run_dir, &device, &quiet()).unwrap();
    let mut run = TrainedRun::load(&run_dir, &device).unwrap();
    let counts = run.data.dataset.train_counts();
    let unseen = (40..90)
        .find(|&i| counts[i] == 0)
        .expect("a Y item never seen in training");
    let draw = UnseenRowDraw::Mean { popularity: 0.5 };
    assert!(
        run.model
            .redraw_domain_unseen_rows(DomainId::Y, draw, 1)
            .unwrap()
            > 0
    );
    assert_eq!(run.model.score_settings().unseen_rows, [None, Some(draw)]);
    // The part an added item gets is the never-seen item's drawn learned row, and not zero.
    let table = run.model.items.as_ref().unwrap();
    let part = table.new_item_learned_part(DomainId::Y).unwrap().unwrap();
    let q = part.len();
    let rows: Vec<f32> = table.rows.weight.val().into_data().try_to_vec().unwrap();
    assert_eq!(part, rows[unseen * q..(unseen + 1) * q]);
    assert!(part.iter().any(|&v| v != 0.0));
    let model_dir = dir.path().join("model");
    run.export(&model_dir).unwrap();
    let twin = [twin_of(&run, unseen, "new")];
    let scores = |rec: &Recommender, new: u32| {
        let request = Request {
            history: vec![0, 45, 3, 60],
            domain: DomainId::Y,
            k: 2,
            exclude: Exclude::Nothing,
            candidates: Some(vec![unseen as u32, new]),
        };
        let got = rec.recommend_batch(&[request]).unwrap().remove(0);
        let of = |item: u32| got.iter().find(|r| r.item == item).unwrap().score;
        (of(unseen as u32), of(new))
    };
    let close = |(a, b): (f64, f64)| (a - b).abs() <= 1e-5 * a.abs().max(1e-6);

    let mut rec = run.into_recommender();
    let [new] = rec.add_items(&twin).unwrap()[..] else {
        panic!("one id")
    };
    assert!(close(scores(&rec, new)), "{:?}", scores(&rec, new));
    let mut reloaded = Recommender::load(&model_dir, &device).unwrap();
    reloaded.add_items(&twin).unwrap();
    assert!(
        close(scores(&reloaded, new)),
        "{:?}",
        scores(&reloaded, new)
    );

    // Without the record of the draw, an added item gets no learned part (the title alone);
    // in a domain that shrinks, its never-seen items have the title alone too.
    let mut unrecorded = TrainedRun::load(&run_dir, &device).unwrap();
    let table = unrecorded.model.items.as_mut().unwrap();
    table
        .redraw_domain_unseen_rows(DomainId::Y, draw, 1)
        .unwrap();
    table.set_unseen_draw(DomainId::Y, None).unwrap();
    assert_eq!(table.new_item_learned_part(DomainId::Y).unwrap(), None);
    let mut shrunk = TrainedRun::load(&run_dir, &device).unwrap();
    shrunk
        .model
        .redraw_domain_unseen_rows(DomainId::Y, draw, 1)
        .unwrap();
    shrunk
        .model
        .set_row_shrinkage(DomainId::Y, Some(4.0))
        .unwrap();
    let mut rec = shrunk.into_recommender();
    rec.add_items(&twin).unwrap();
    assert!(close(scores(&rec, new)), "{:?}", scores(&rec, new));
}

#[test]
fn new_items_that_cannot_be_scored_are_refused_naming_the_item() {
    let dir = tempfile::tempdir().unwrap();
    let run = text_scored(dir.path());
    let good = twin_of(&run, 45, "fine");
    let mut rec = run.into_recommender();
    let with = |f: &dyn Fn(&mut NewItem)| {
        let mut item = good.clone();
        f(&mut item);
        item
    };
    let cases: [(NewItem, &str); 5] = [
        (with(&|i| i.text.truncate(5)), "width 5"),
        (
            with(&|i| i.text.iter_mut().for_each(|v| *v = 0.0)),
            "no text",
        ),
        (with(&|i| i.text[2] = f32::NAN), "not finite"),
        (with(&|i| i.key = "45".into()), "already in the catalogue"),
        (with(&|i| i.key = String::new()), "empty key"),
    ];
    for (item, want) in cases {
        let e = rec.add_items(&[item]).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
    // Two items of one key in one call: neither is added.
    let e = rec
        .add_items(&[good.clone(), good.clone()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"fine\""), "{e}");
    assert_eq!(rec.added_items().count(), 0);
    let [id] = rec.add_items(&[good]).unwrap()[..] else {
        panic!("one id")
    };
    // An added item is recommendable, not readable in a history, and only in its domain.
    let e = rec
        .recommend(&[0, id], DomainId::Y, 3, Exclude::History)
        .unwrap_err()
        .to_string();
    assert!(e.contains("added after training"), "{e}");
    let request = Request {
        history: vec![0],
        domain: DomainId::X,
        k: 3,
        exclude: Exclude::History,
        candidates: Some(vec![1, id]),
    };
    let e = rec.recommend_batch(&[request]).unwrap_err().to_string();
    assert!(e.contains(&format!("candidate {id}")), "{e}");

    // A model without a text path cannot take new items at all.
    let device = backend::from_env().unwrap();
    let mut cfg = tiny_config(Preset::Recommended, 1);
    cfg.model.modalities.text = false;
    let ids_only = dir.path().join("ids-only");
    train(
        &cfg,
        &cfg.load_data().unwrap(),
        &ids_only,
        &device,
        &quiet(),
    )
    .unwrap();
    let mut rec = Recommender::load(&ids_only, &device).unwrap();
    let e = rec
        .add_items(&[twin_of(
            &TrainedRun::load(&ids_only, &device).unwrap(),
            45,
            "x",
        )])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no text path"), "{e}");
}

#[test]
fn a_model_with_fused_queries_serves_the_run_s_scores() {
    let mut cfg = tiny_config(Preset::Ids, 2);
    cfg.model.query_fusion = true;
    serves_the_run_s_scores(&cfg);
}

#[test]
fn a_model_with_adapters_on_a_shared_encoder_serves_the_run_s_scores() {
    let mut cfg = tiny_config(Preset::Ids, 2);
    cfg.model.shared_encoders = true;
    cfg.model.adapter_rank = 2;
    serves_the_run_s_scores(&cfg);
}

/// A run trained with `cfg`, exported and loaded back without its run folder, answers as the
/// run does.
fn serves_the_run_s_scores(cfg: &ExperimentConfig) {
    let dir = tempfile::tempdir().unwrap();
    let device = backend::from_env().unwrap();
    let run_dir = dir.path().join("run");
    train(cfg, &cfg.load_data().unwrap(), &run_dir, &device, &quiet()).unwrap();
    let run = TrainedRun::load(&run_dir, &device).unwrap();
    let model_dir = dir.path().join("export/model");
    run.export(&model_dir).unwrap();
    let want = answers(&run.into_recommender());
    std::fs::remove_dir_all(&run_dir).unwrap();
    let got = answers(&Recommender::load(&model_dir, &device).unwrap());
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(
            w.iter().map(|r| r.item).collect::<Vec<_>>(),
            g.iter().map(|r| r.item).collect::<Vec<_>>()
        );
        for (a, b) in w.iter().zip(g) {
            assert!((a.score - b.score).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }
}
