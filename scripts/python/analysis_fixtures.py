"""Reference values for tests/analysis_stats.rs, computed independently with numpy/scipy/statsmodels.

Data: real per-user counts from tests/fixtures/food_kitchen_200users.txt (the first 200 users of
ABXI's Food-Kitchen file): for the first 60 users, x = number of Food (A) items, y = number of
Kitchen (B) items, z = mean day gap between consecutive interactions. Counts have many ties,
which exercises Spearman's average ranks.

Run from the project root:  python3 scripts/python/analysis_fixtures.py
Writes tests/fixtures/analysis_stats.json.
"""
import json
import pathlib

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

ROOT = pathlib.Path(__file__).resolve().parents[2]
N_A = 11837

users = []
for line in (ROOT / "tests/fixtures/food_kitchen_200users.txt").read_text().splitlines():
    toks = line.split()[1:]
    items = [int(t.split("|")[0]) for t in toks]
    ts = [int(t.split("|")[1]) for t in toks]
    users.append((items, ts))

sel = users[:60]
x = [float(sum(1 for i in it if i <= N_A)) for it, _ in sel]
y = [float(sum(1 for i in it if i > N_A)) for it, _ in sel]
z = [float(np.mean(np.diff(ts)) / 86400.0) for _, ts in sel]

out = {"x": x, "y": y, "z": z}

pr = stats.pearsonr(x, z)
ci = pr.confidence_interval(0.95)
out["pearson_xz"] = {"r": pr.statistic, "p": pr.pvalue, "ci_low": ci.low, "ci_high": ci.high}
ci90 = pr.confidence_interval(0.90)
out["pearson_xz_ci90"] = {"low": ci90.low, "high": ci90.high}
pr = stats.pearsonr(x, y)
out["pearson_xy"] = {"r": pr.statistic, "p": pr.pvalue}
sr = stats.spearmanr(x, y)
out["spearman_xy"] = {"r": sr.statistic, "p": sr.pvalue}
sr = stats.spearmanr(x, z)
out["spearman_xz"] = {"r": sr.statistic, "p": sr.pvalue}
out["ranks_x"] = stats.rankdata(x, method="average").tolist()

# Welch between the A-counts of the first 30 and of the next 30 users; paired A vs B counts.
w = stats.ttest_ind(x[:30], x[30:], equal_var=False)
out["welch"] = {"t": float(w.statistic), "p": float(w.pvalue), "df": float(w.df)}
pt = stats.ttest_rel(x, y)
out["paired"] = {"t": float(pt.statistic), "p": float(pt.pvalue), "df": float(pt.df)}

# Multiple-testing adjustments on the Pearson p-values of x with each of 12 user windows' z.
pvals = []
for k in range(12):
    chunk = users[60 + 10 * k : 60 + 10 * k + 10]
    a = [float(sum(1 for i in it if i <= N_A)) for it, _ in chunk]
    b = [float(np.mean(np.diff(ts)) / 86400.0) for _, ts in chunk]
    pvals.append(stats.pearsonr(a, b).pvalue)
out["pvals"] = pvals
out["holm"] = multipletests(pvals, method="holm")[1].tolist()
out["bh"] = multipletests(pvals, method="fdr_bh")[1].tolist()

# Percentile bootstrap of Pearson r(x, z), 10,000 paired resamples.
res = stats.bootstrap(
    (np.array(x), np.array(z)),
    lambda a, b: stats.pearsonr(a, b).statistic,
    paired=True,
    vectorized=False,
    n_resamples=10000,
    method="percentile",
    confidence_level=0.95,
    random_state=np.random.default_rng(7),
)
out["bootstrap_pearson_xz"] = {"low": res.confidence_interval.low, "high": res.confidence_interval.high}

# Log-linear fit of z on ln(x + y) (a real positive "size").
size = np.array(x) + np.array(y)
lr = stats.linregress(np.log(size), z)
out["loglinear"] = {"size": size.tolist(), "slope": lr.slope, "intercept": lr.intercept, "r2": lr.rvalue**2}

(ROOT / "tests/fixtures/analysis_stats.json").write_text(json.dumps(out, indent=1, default=float) + "\n")
print("wrote tests/fixtures/analysis_stats.json")
