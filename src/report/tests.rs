//! Tests of the report tables and files.

use super::*;
use serde_json::json;

/// A run of `seed` whose test MRR in domain X is `mrr` (every other metric `mrr / 2`).
fn run(name: &str, seed: Option<u64>, mrr: f64) -> RunRecord {
    let metrics = json!({"mrr": mrr, "ndcg5": mrr / 2.0, "ndcg10": mrr / 2.0, "hr1": mrr / 2.0,
        "hr5": mrr / 2.0, "hr10": mrr / 2.0, "n": 10});
    let eval = |split: &str| {
        json!({"protocol": "abxi", "split": split, "seed": 1, "domains": {"X": metrics},
            "examples_per_second": 1.0})
    };
    let results = json!({"epochs": 1, "best_epoch": 1, "stopped_early": false,
        "valid": eval("valid"), "test": eval("test"), "train_sequences_per_second": 1.0,
        "parameters": 1});
    RunRecord {
        path: PathBuf::from(name),
        log: Vec::new(),
        results: serde_json::from_value(results).unwrap(),
        seed,
    }
}

fn group(label: &str, runs: Vec<RunRecord>) -> Group {
    Group {
        label: label.into(),
        runs,
    }
}

/// The reference group of the difference tests: seeds 1-3 at test MRR 10, 20 and 30%.
fn reference_of_three() -> Group {
    group(
        "ref",
        vec![
            run("r1", Some(1), 0.10),
            run("r2", Some(2), 0.20),
            run("r3", Some(3), 0.30),
        ],
    )
}

#[test]
fn paired_differences_match_runs_by_seed() {
    let reference = reference_of_three();
    // Seeds 2 and 3 in another order, seed 9 without a partner.
    let other = group(
        "new",
        vec![
            run("n3", Some(3), 0.33),
            run("n9", Some(9), 0.90),
            run("n2", Some(2), 0.19),
        ],
    );
    let lone = group("lone", vec![run("l", None, 0.5)]);
    let table = paired_table(&[reference, other, lone], 0, Split::Test).unwrap();
    assert!(table.contains("against ref"), "{table}");
    // Differences +3 and -1 points: mean +1, sample std sqrt(8) = 2.83, above on 1 of 2.
    assert!(
        table.contains("| new | X | 2 | +1.00 ± 2.83 (1/2) | +0.50 ± 1.41 (1/2) |"),
        "{table}"
    );
    assert!(table.contains("| lone | X | 0 | - |"), "{table}");
    assert!(!table.contains("| ref |"), "{table}");
}

#[test]
fn differences_of_means_use_every_run_with_a_standard_error() {
    let reference = reference_of_three();
    // Seed 9 has no partner in the reference; the difference of means counts it.
    let other = group(
        "new",
        vec![run("n2", Some(2), 0.25), run("n9", Some(9), 0.35)],
    );
    let lone = group("lone", vec![run("l", None, 0.5)]);
    let table = difference_table(&[reference, other, lone], 0, Split::Test).unwrap();
    assert!(table.contains("against ref"), "{table}");
    // Means 30 and 20 points: +10. Sample variances 50 (n = 2) and 100 (n = 3):
    // se = sqrt(50 / 2 + 100 / 3) = 7.64. The other metrics are halves: +5 ± 3.82.
    assert!(
        table.contains("| new | X | 2 (3) | +10.00 ± 7.64 | +5.00 ± 3.82 |"),
        "{table}"
    );
    // One run: no spread to give, the difference alone.
    assert!(
        table.contains("| lone | X | 1 (3) | +30.00 | +15.00 |"),
        "{table}"
    );
    assert!(!table.contains("| ref |"), "{table}");
    assert!(difference_table(&[], 0, Split::Test).is_err());
}

#[test]
fn a_run_kept_without_its_log_counts_in_the_tables_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("exp");
    let kept = run("kept", Some(4), 0.25);
    for (seed, with_log) in [(4u64, false), (5, true)] {
        let run_dir = folder.join(format!("seed-{seed}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        let results = serde_json::to_string(&kept.results).unwrap();
        std::fs::write(run_dir.join("results.json"), results).unwrap();
        let config = json!({"train": {"seed": seed}}).to_string();
        std::fs::write(run_dir.join("config.json"), config).unwrap();
        if with_log {
            let line = json!({"epoch": 1, "loss": 2.5, "train_seconds": 1.0,
                "train_sequences_per_second": 1.0, "best": true, "temperatures": [1.0, 1.0, 1.0]});
            std::fs::write(run_dir.join("log.jsonl"), format!("{line}\n")).unwrap();
        }
    }
    let g = Group::load(&format!("exp={}", folder.display())).unwrap();
    assert_eq!(g.runs.len(), 2);
    assert_eq!((g.runs[0].seed, g.runs[0].log.len()), (Some(4), 0));
    assert_eq!((g.runs[1].seed, g.runs[1].log.len()), (Some(5), 1));
    let out = dir.path().join("report");
    write_report(&[g], None, &out).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let line = md
        .lines()
        .find(|l| l.starts_with("Runs without a training log"))
        .unwrap_or_else(|| panic!("{md}"));
    assert!(
        line.contains("seed-4") && !line.contains("seed-5"),
        "{line}"
    );
    // A log that is there but malformed is still an error naming the file and line.
    std::fs::write(folder.join("seed-4/log.jsonl"), "\nnot json\n").unwrap();
    let e = Group::load(folder.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("seed-4/log.jsonl:2"), "{e}");
}

#[test]
fn two_runs_of_one_seed_cannot_be_paired() {
    let reference = group("ref", vec![run("r1", Some(1), 0.1)]);
    let twice = group(
        "twice",
        vec![run("a", Some(1), 0.1), run("b", Some(1), 0.2)],
    );
    let e = paired_table(&[reference, twice], 0, Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("twice") && e.contains("seed 1") && e.contains('b'),
        "{e}"
    );
    let groups = [group("a", vec![run("x", Some(1), 0.1)])];
    let e = group_index(&groups, "b").unwrap_err().to_string();
    assert!(e.contains("\"b\"") && e.contains("the groups: a"), "{e}");
}
