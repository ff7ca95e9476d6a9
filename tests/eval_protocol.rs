//! The evaluation protocol on real data (food-kitchen-mini and food-kitchen): candidate
//! exclusions, determinism, and metrics of scorers whose ranks are known in closed form.

use std::collections::HashSet;

use cdsr_lab::data::{self, abxi, Domain, EvalLayout, Part, Split};
use cdsr_lab::eval::{self, Candidates, DEFAULT_NEGATIVES};

fn mini() -> data::Dataset {
    abxi::load(&data::repo_data_dir().join("food-kitchen-mini")).unwrap()
}

#[test]
fn candidates_exclude_the_users_items_on_real_data() {
    let ds = mini();
    let split = Split::leave_one_out(&ds);
    for part in [Part::Valid, Part::Test] {
        let cases = split.cases(part);
        let c = Candidates::sample(&ds, cases, part, DEFAULT_NEGATIVES, 7).unwrap();
        assert_eq!(c.len(), 300);
        assert_eq!(c.width(), 1000);
        for (i, case) in cases.iter().enumerate() {
            let row = c.row(i);
            assert_eq!(row[0], case.target);
            let seen: HashSet<u32> = ds.users[case.user].items.iter().copied().collect();
            let negs: HashSet<u32> = row[1..].iter().copied().collect();
            assert_eq!(negs.len(), 999);
            assert!(negs.is_disjoint(&seen));
            let range = ds.item_range(case.domain);
            assert!(negs.iter().all(|n| range.contains(n)));
        }
        // the same seed gives the same candidates; 100 negatives is an option
        assert_eq!(
            c,
            Candidates::sample(&ds, cases, part, DEFAULT_NEGATIVES, 7).unwrap()
        );
        let c100 = Candidates::sample(&ds, cases, part, 100, 7).unwrap();
        assert_eq!(c100.width(), 101);
    }
}

#[test]
fn oracle_adversary_and_ties() {
    let ds = mini();
    let split = Split::leave_one_out(&ds);
    let layout = EvalLayout::build(&ds, &split, Part::Test, 50);
    let c = Candidates::sample(&ds, &split.test, Part::Test, 100, 1).unwrap();
    let n_a = split.test.iter().filter(|c| c.domain == Domain::A).count();
    // the positive first in every row: all metrics 1
    let oracle = eval::evaluate_sampled(&layout, &c, 64, |_, cand| {
        cand.iter()
            .enumerate()
            .map(|(k, _)| if k % 101 == 0 { 1.0 } else { 0.0 })
            .collect()
    });
    assert_eq!(oracle.counts, [n_a, 300 - n_a]);
    assert!(oracle.a.values().iter().all(|&v| v == 1.0));
    assert!(oracle.b.values().iter().all(|&v| v == 1.0));
    // the positive last: rank 101, AUC 0, MRR 1/101
    let worst = c.evaluate(
        &(0..c.items.len())
            .map(|k| if k % 101 == 0 { -1.0 } else { 0.0 })
            .collect::<Vec<_>>(),
    );
    assert_eq!(worst.a.auc, 0.0);
    assert_eq!(worst.a.hr_20, 0.0);
    assert!((worst.b.mrr - 1.0 / 101.0).abs() < 1e-15);
    // all scores tied: ties favour the positive (rank 1), ABXI's convention
    let tied = c.evaluate(&vec![0.5; c.items.len()]);
    assert_eq!(tied.a.ndcg_10, 1.0);
}

/// Scoring every item by its own id: the target's full rank in its domain is
/// `last_id(domain) - target + 1`, so every metric has a closed form.
#[test]
fn full_ranking_closed_form_on_food_kitchen() {
    let dir = data::shared_data_dir()
        .expect("../shared/data not found")
        .join("food-kitchen");
    let ds = abxi::load(&dir).unwrap();
    let split = Split::leave_one_out(&ds);
    let layout = EvalLayout::build(&ds, &split, Part::Test, 50);
    let v = ds.vocab_size();
    let scores: Vec<f32> = (0..v).map(|i| i as f32).collect();
    let report = eval::evaluate_full(&ds, &layout, 512, |b| {
        scores
            .iter()
            .copied()
            .cycle()
            .take(b.batch_size() * v)
            .collect()
    });
    for d in Domain::BOTH {
        let last = *ds.item_range(d).end() as f64;
        let n_others = (ds.n_items[d.index()] - 1) as f64;
        let ranks: Vec<f64> = split
            .test
            .iter()
            .filter(|c| c.domain == d)
            .map(|c| last - c.target as f64 + 1.0)
            .collect();
        let n = ranks.len() as f64;
        let m = report.domain(d);
        let mrr = ranks.iter().map(|r| 1.0 / r).sum::<f64>() / n;
        let auc = ranks
            .iter()
            .map(|r| 1.0 - (r - 1.0) / n_others)
            .sum::<f64>()
            / n;
        let hr10 = ranks.iter().filter(|&&r| r <= 10.0).count() as f64 / n;
        let ndcg10 = ranks
            .iter()
            .filter(|&&r| r <= 10.0)
            .map(|r| 1.0 / (r + 1.0).log2())
            .sum::<f64>()
            / n;
        assert!((m.mrr - mrr).abs() < 1e-12, "{d}: {} vs {mrr}", m.mrr);
        assert!((m.auc - auc).abs() < 1e-12);
        assert!((m.hr_10 - hr10).abs() < 1e-12);
        assert!((m.ndcg_10 - ndcg10).abs() < 1e-12);
        assert_eq!(report.counts[d.index()], ranks.len());
    }
    assert_eq!(report.counts[0] + report.counts[1], 7144);
}
