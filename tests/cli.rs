//! The `llm-emf` binary: outputs and error messages.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llm-emf"))
}

/// The stderr of a command that failed as bad input should: exit status 1, no panic.
fn failure(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(name)
}

#[test]
fn stats_json_has_the_documented_keys() {
    let out = bin()
        .args(["stats", "--json", "--data"])
        .arg(data("art-office"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["train_sequences"], 16_000);
    let domains = v["domains"].as_array().unwrap();
    assert_eq!(domains.len(), 2);
    assert_eq!(domains[0]["name"], "Art");
    assert_eq!(domains[0]["items"], 18_639);
    assert_eq!(domains[1]["valid_targets"], 553);
    assert_eq!(domains[1]["test_targets"], 950);
    assert_eq!(domains[1]["titled_items"], 19_757);
}

#[test]
fn stats_table_for_recbole_and_synthetic() {
    let out = bin()
        .args(["stats", "--data"])
        .arg(data("food-kitchen"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Kitchen") && text.contains("16258") && text.contains("7144"),
        "{text}"
    );
    let out = bin()
        .args(["stats", "--data", "synthetic"])
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn bad_inputs_fail_with_a_message_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["stats", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = failure(&out);
    assert!(err.contains("no dataset found"), "{err}");

    std::fs::write(
        dir.path().join("x.inter"),
        "user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\n",
    )
    .unwrap();
    let out = bin()
        .args(["stats", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = failure(&out);
    assert!(err.contains("x.item"), "{err}");

    let out = bin()
        .args(["train", "--epochs", "1", "--data"])
        .arg(data("movie-book"))
        .arg("--out")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    let err = failure(&out);
    assert!(
        err.contains("traindata_new.txt") && err.contains("github.com/cjx96/C2DSR"),
        "{err}"
    );

    let out = bin()
        .args(["evaluate", "--run"])
        .arg(dir.path().join("nothing"))
        .output()
        .unwrap();
    assert!(failure(&out).contains("config.json"));

    let out = bin()
        .args([
            "train",
            "--data",
            "synthetic",
            "--device",
            "quantum",
            "--out",
        ])
        .arg(dir.path().join("q"))
        .output()
        .unwrap();
    assert!(failure(&out).contains("unknown device"));
}

#[test]
fn train_evaluate_recommend_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.json");
    std::fs::write(
        &config,
        r#"{"data": {"kind": "synthetic", "users": 60, "items_x": 20, "items_y": 25, "topics": 2, "feature_dim": 8},
            "model": {"id_dim": 8, "layers": 1, "max_len": 8},
            "train": {"epochs": 1, "batch_size": 32},
            "eval": {"negatives": 10}}"#,
    )
    .unwrap();
    let run = dir.path().join("run");
    let out = bin()
        .args(["train", "--quiet", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A rescored run prints its validation MRR; the test MRR only when asked for.
    let rescore = |extra: &[&str]| {
        let out = bin().arg("rescore").arg(&run).args(extra).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let quiet = rescore(&[]);
    assert!(
        quiet.contains("valid MRR") && !quiet.contains("test MRR"),
        "{quiet}"
    );
    let asked = rescore(&["--test"]);
    assert!(
        asked.contains("valid MRR") && asked.contains("test MRR"),
        "{asked}"
    );

    let cands = dir.path().join("cands.bin");
    let out = bin()
        .args([
            "evaluate",
            "--json",
            "--protocol",
            "abxi",
            "--save-candidates",
        ])
        .arg(&cands)
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["protocol"], "abxi");
    for key in ["mrr", "ndcg5", "ndcg10", "hr1", "hr5", "hr10", "n"] {
        assert!(v["domains"]["X"][key].is_number(), "{key}");
    }
    // The saved candidates give the same numbers.
    let again = bin()
        .args(["evaluate", "--json", "--candidates"])
        .arg(&cands)
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    let w: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["domains"], w["domains"]);
    // Scored on a list of targets; a line that is not an item id is named by file and line.
    let targets = dir.path().join("targets.txt");
    std::fs::write(&targets, "1\n2\n\n3\n").unwrap();
    let out = bin()
        .args(["evaluate", "--json", "--targets"])
        .arg(&targets)
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&targets, "1\nseven\n").unwrap();
    let out = bin()
        .args(["evaluate", "--targets"])
        .arg(&targets)
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    let e = failure(&out);
    assert!(e.contains("targets.txt:2"), "{e}");

    let out = bin()
        .args([
            "recommend",
            "--json",
            "--history",
            "0,21,3",
            "--domain",
            "Y",
            "-k",
            "4",
            "--run",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(recs.as_array().unwrap().len(), 4);
    // Exported as a model folder, the run serves the same list from another working
    // directory, without the run folder.
    let model = dir.path().join("models/tiny");
    let out = bin()
        .args(["export"])
        .arg(&run)
        .arg("--out")
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("model folder"));
    let elsewhere = tempfile::tempdir().unwrap();
    let moved = dir.path().join("moved");
    std::fs::rename(&run, &moved).unwrap();
    let out = bin()
        .current_dir(elsewhere.path())
        .args([
            "recommend",
            "--json",
            "--history",
            "0,21,3",
            "--domain",
            "Y",
            "-k",
            "4",
            "--model",
        ])
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let served: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(served, recs);
    // New items by their text vectors (the width of the model's text features).
    let model_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("model.json")).unwrap()).unwrap();
    let width = model_json["feature_widths"]["text"].as_u64().unwrap() as usize;
    let items = dir.path().join("new.jsonl");
    let vector = serde_json::to_string(&vec![0.25f32; width]).unwrap();
    std::fs::write(
        &items,
        format!("{{\"domain\": \"Y\", \"key\": \"brand-new\", \"title\": \"A new thing\", \"text\": {vector}}}\n"),
    )
    .unwrap();
    let out = bin()
        .args(["add-items", "--model"])
        .arg(&model)
        .arg("--items")
        .arg(&items)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 items added"));
    // A line without a vector and no encoder to embed its title: named by file and line.
    std::fs::write(
        &items,
        "\n{\"domain\": \"Y\", \"key\": \"other\", \"title\": \"Untold\"}\n",
    )
    .unwrap();
    let out = bin()
        .args(["add-items", "--model"])
        .arg(&model)
        .arg("--items")
        .arg(&items)
        .output()
        .unwrap();
    let e = failure(&out);
    assert!(e.contains("new.jsonl:2") && e.contains("--weights"), "{e}");
    std::fs::rename(&moved, &run).unwrap();
    let out = bin()
        .args(["recommend", "--history", "0,999", "--domain", "Y", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(failure(&out).contains("item 999"));
    let out = bin()
        .args(["recommend", "--history", "0", "--domain", "Garden", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown domain \"Garden\""));
}

#[test]
fn embed_writes_one_row_per_item_and_feeds_training() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("text.npy");
    let run = bin()
        .args(["embed", "--dim", "16", "--with-attributes", "--data"])
        .arg(data("art-office"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains("38396 embedded, 0 without input"), "{text}");
    let m = llm_emf::features::FeatureMatrix::load(&out, Some(38_396)).unwrap();
    assert_eq!(m.dim(), 16);
    let bad = bin()
        .args([
            "embed",
            "--text-encoder",
            "clip",
            "--data",
            "synthetic",
            "--out",
        ])
        .arg(dir.path().join("x.npy"))
        .output()
        .unwrap();
    assert!(failure(&bad).contains("needs --weights"));
    let bad = bin()
        .args([
            "embed",
            "--text-encoder",
            "bert",
            "--data",
            "synthetic",
            "--out",
        ])
        .arg(dir.path().join("x.npy"))
        .output()
        .unwrap();
    assert!(failure(&bad).contains("unknown text encoder"));
}

fn tiny_clip() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip")
}

#[test]
fn embed_with_clip_writes_text_and_image_matrices_and_reports_bad_images() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for f in ["0.png", "2.png"] {
        std::fs::copy(tiny_clip().join("images").join(f), images.join(f)).unwrap();
    }
    std::fs::write(images.join("5.jpg"), b"truncated").unwrap();
    let enriched = dir.path().join("enriched.jsonl");
    std::fs::write(
        &enriched,
        "{\"item_id\": 3, \"text\": \"A lovely item for tea lovers.\"}\n",
    )
    .unwrap();
    let (text_out, image_out) = (dir.path().join("text.npy"), dir.path().join("image.npy"));
    let run = bin()
        .args([
            "embed",
            "--quiet",
            "--text-encoder",
            "clip",
            "--data",
            "synthetic",
        ])
        .arg("--weights")
        .arg(tiny_clip())
        .arg("--text-source")
        .arg(&enriched)
        .arg("--images")
        .arg(&images)
        .arg("--image-out")
        .arg(&image_out)
        .arg("--out")
        .arg(&text_out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("enriched text for 1 of 2700 items"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 embedded, 2697 without input (zero rows), 1 unreadable"),
        "{stdout}"
    );
    assert!(
        stdout.contains("item 5:") && stdout.contains("5.jpg"),
        "{stdout}"
    );
    let text = llm_emf::features::FeatureMatrix::load(&text_out, Some(2700)).unwrap();
    assert_eq!(text.dim(), 16);
    assert!(text.row(1).iter().any(|v| *v != 0.0));
    let img = llm_emf::features::FeatureMatrix::load(&image_out, Some(2700)).unwrap();
    let nonzero = |r: usize| img.row(r).iter().any(|v| *v != 0.0);
    assert!(nonzero(0) && nonzero(2) && !nonzero(1) && !nonzero(5));
    assert!(!dir.path().join("image.npy.partial").exists());

    // --images without --image-out, and a missing image folder, are errors naming the problem.
    let bad = bin()
        .args([
            "embed",
            "--text-encoder",
            "clip",
            "--data",
            "synthetic",
            "--weights",
        ])
        .arg(tiny_clip())
        .arg("--images")
        .arg(&images)
        .arg("--out")
        .arg(&text_out)
        .output()
        .unwrap();
    assert!(failure(&bad).contains("--image-out"));
    let bad = bin()
        .args([
            "embed",
            "--text-encoder",
            "clip",
            "--text-source",
            "none",
            "--data",
            "synthetic",
            "--weights",
        ])
        .arg(tiny_clip())
        .arg("--images")
        .arg(dir.path().join("nowhere"))
        .arg("--image-out")
        .arg(&image_out)
        .output()
        .unwrap();
    assert!(failure(&bad).contains("nowhere"));
}

#[test]
fn enrich_reports_bad_templates_and_unreachable_endpoints_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("prompt.txt");
    std::fs::write(&template, "About {product}").unwrap();
    let out = dir.path().join("e.jsonl");
    let bad = bin()
        .args([
            "enrich",
            "--data",
            "synthetic",
            "--endpoint",
            "http://127.0.0.1:9",
            "--model",
            "m",
        ])
        .arg("--template")
        .arg(&template)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = failure(&bad);
    assert!(
        err.contains("prompt.txt") && err.contains("{title}"),
        "{err}"
    );
    // A frequency penalty outside OpenAI's range is refused before any request or file.
    let penalty = bin()
        .args([
            "enrich",
            "--data",
            "synthetic",
            "--endpoint",
            "http://127.0.0.1:9",
        ])
        .args(["--model", "m", "--frequency-penalty", "2.5", "--out"])
        .arg(dir.path().join("never.jsonl"))
        .output()
        .unwrap();
    let err = failure(&penalty);
    assert!(
        err.contains("--frequency-penalty") && err.contains("2.5"),
        "{err}"
    );
    assert!(!dir.path().join("never.jsonl").exists());
    // Port 9 (discard) refuses connections here: every item fails, the run stops early with the
    // failures recorded and exit status 1.
    let run = bin()
        .args([
            "enrich",
            "--quiet",
            "--data",
            "synthetic",
            "--endpoint",
            "http://127.0.0.1:9",
        ])
        .args(["--model", "m", "--retries", "0", "--concurrency", "1"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("stopped early"), "{stdout}");
    assert!(failure(&run).contains("re-run"));
    let records = llm_emf::enrich::read_records(&out).unwrap();
    assert!(!records.is_empty() && records.iter().all(|r| r.error.is_some()));
}

#[test]
fn enrich_check_counts_usable_answers_and_names_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("e.jsonl");
    let line = |id: u32, title: &str, text: Option<&str>| {
        let mut r = serde_json::json!({"item_id": id, "domain": "Food", "title": title,
            "model": "m", "prompt_hash": "h", "tries": 1});
        match text {
            Some(t) => r["text"] = t.into(),
            None => r["error"] = "HTTP 500".into(),
        }
        r.to_string() + "\n"
    };
    let good = "A rich dark roast with notes of cocoa and caramel, for espresso drinkers who \
                like a strong morning cup.";
    let content = line(0, "Dark Roast", Some(good))
        + &line(1, "Green Tea", Some("Green tea."))
        + &line(2, "Cast Iron Pan", None);
    std::fs::write(&file, &content).unwrap();
    let check = |extra: &[&str]| {
        bin()
            .arg("enrich-check")
            .arg(&file)
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = check(&[]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}");
    assert!(stdout.contains("3 items: 1 usable (33.3%)"), "{stdout}");
    assert!(
        stdout.contains("Failed: 1") && stdout.contains("Title: 1"),
        "{stdout}"
    );
    // Below the required share: exit status 1, naming the file and the shares.
    let strict = check(&["--min-usable", "0.95"]);
    let err = failure(&strict);
    assert!(err.contains("e.jsonl") && err.contains("33.3%"), "{err}");
    // A missing file, a broken line and a missing tokenizer are named.
    let missing = bin()
        .arg("enrich-check")
        .arg(dir.path().join("none.jsonl"))
        .output()
        .unwrap();
    assert!(failure(&missing).contains("none.jsonl"));
    std::fs::write(
        &file,
        content.clone() + "{not json\n" + &line(3, "Salt", Some(good)),
    )
    .unwrap();
    let broken = check(&[]);
    let err = failure(&broken);
    assert!(err.contains("e.jsonl:4:"), "{err}");
    std::fs::write(&file, &content).unwrap();
    let no_weights = check(&["--weights", dir.path().join("minilm").to_str().unwrap()]);
    assert!(failure(&no_weights).contains("minilm"));
}
