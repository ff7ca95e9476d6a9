//! `cdsr-lab figures RUNS_DIR --out DIR`: regenerate every figure from a tree of runs.
