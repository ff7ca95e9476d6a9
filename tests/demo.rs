//! `cdsr-lab demo` end to end on real data: part 1 regenerates the GCA study's report and
//! figures from the committed compact runs (`results/study/runs`), part 2 trains a sweep (here
//! the smoke configuration with and without GCA on the repository's food-kitchen slice) and
//! tests each model's NDCG@10 against the random ranker's over its test cases.

mod common;

/// The `p` value and verdict of a report line `... p VALUE: VERDICT`.
fn verdict(line: &str) -> (f64, &str) {
    let (head, verdict) = line.rsplit_once(": ").unwrap();
    let p = head.rsplit_once(" p ").unwrap().1;
    let p = p.split([' ', ',', ')']).next().unwrap();
    (p.parse().unwrap(), verdict)
}

#[test]
fn demo_regenerates_the_study_and_tests_the_trained_models_against_random() {
    let dir = tempfile::tempdir().unwrap();
    let base = common::project_root().join("configs/smoke.toml");
    let sweep = dir.path().join("demo-sweep.toml");
    std::fs::write(
        &sweep,
        format!(
            "name = \"demo-test\"\nbase = {:?}\nseeds = [7]\n\
             [[run]]\nlabel = \"gca\"\nset = {{}}\n\
             [[run]]\nlabel = \"base\"\nset = {{ \"gca.positions\" = [] }}\n",
            base.display().to_string()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let figures = dir.path().join("figures");
    let stdout = common::stdout_of(
        common::cdsr_lab()
            .arg("demo")
            .arg("--sweep")
            .arg(&sweep)
            .arg("--out")
            .arg(&out)
            .arg("--figures")
            .arg(&figures)
            .args(["--jobs", "2"]),
    );

    // Part 1: every committed study run, its figures, the significance split.
    let study_runs = std::fs::read_dir(common::project_root().join("results/study/runs"))
        .unwrap()
        .count();
    assert!(
        stdout.contains(&format!(
            "== 1. The GCA study from its committed runs ({study_runs} runs, {study_runs} stopped at a cap while still improving) =="
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("differences are significant at p < 0.05"),
        "{stdout}"
    );
    for name in [
        "orthogonality_vs_ndcg",
        "ndcg_vs_params",
        "metric_by_setting",
    ] {
        assert!(
            figures.join("study").join(format!("{name}.svg")).is_file(),
            "{name}"
        );
    }

    // Part 2: two runs, each domain against the random ranker (99 negatives: 0.0454), the
    // verdict following the p-value; the GCA run against the baseline case by case.
    assert!(
        stdout.contains("== 2. A model that learns (2 runs trained now, 0 already complete) ==")
    );
    let random_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("against the random ranker's 0.0454"))
        .collect();
    assert_eq!(random_lines.len(), 4, "{stdout}");
    for line in random_lines.iter().chain(
        stdout
            .lines()
            .filter(|l| l.contains("against the baseline, domain"))
            .collect::<Vec<_>>()
            .iter(),
    ) {
        let (p, v) = verdict(line);
        assert_eq!(
            v.starts_with("significant") || v.starts_with("beyond"),
            p < 0.05,
            "{line}"
        );
    }
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains("against the baseline, domain"))
            .count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("One seed per setting"), "{stdout}");
    assert!(figures.join("training_curves.svg").is_file());

    // What it writes: the report it printed, and the trained runs' table and study report,
    // which `cdsr-lab report` recomputes from the table.
    let demo_txt = std::fs::read_to_string(out.join("demo.txt")).unwrap();
    assert!(
        stdout.starts_with(demo_txt.trim_end()),
        "demo.txt is not the printed report"
    );
    let report = std::fs::read_to_string(out.join("report.txt")).unwrap();
    let recomputed = common::stdout_of(common::cdsr_lab().arg("report").arg(out.join("study.csv")));
    assert_eq!(report, recomputed);

    // Run again: nothing to train, the same numbers.
    let again = common::stdout_of(
        common::cdsr_lab()
            .arg("demo")
            .arg("--no-study")
            .arg("--sweep")
            .arg(&sweep)
            .arg("--out")
            .arg(&out)
            .arg("--figures")
            .arg(&figures),
    );
    assert!(!again.contains("== 1."));
    assert!(
        again.contains("(0 runs trained now, 2 already complete)"),
        "{again}"
    );
    let part2 = |s: &str| s.split(") ==").last().unwrap().to_owned();
    let demo_again = std::fs::read_to_string(out.join("demo.txt")).unwrap();
    assert_eq!(part2(&demo_again), part2(&demo_txt));
}
