"""Writes tests/fixtures/foreign_runs/: runs as TensorBoard, Lightning and Hydra leave them,
written by the real writers, with the values of real cdsr-lab runs committed under results/, so
the tests can check every value read against the native run it came from.

- tensorboard/abxi-d256-s{1,2,3}/: torch.utils.tensorboard.SummaryWriter with the per-epoch rows
  of results/abxi-cpu/2026-11-23-d256, 2026-11-24-d256-seed2 and -seed3 (step = epoch): train
  rows as `simple_value` (float32), valid and test rows as rank-0 float64 tensors of the
  `scalars` plugin (`new_style=True, double_precision=True`); the flattened run config as
  hparams-plugin values (lists as their Python text, `None` left out, as the plugin requires).
- lightning/abxi-d256-gca-early/version_0/: Lightning's TensorBoardLogger (event file with
  `epoch` scalars counted from 0 and global steps of 28 batches an epoch, hparams plugin values
  and hparams.yaml) with the rows of results/abxi-cpu/2026-11-24-d256-gca-early.
- lightning/abxi-d64-{24-epochs,per-position}/version_0/: Lightning's CSVLogger (sparse
  metrics.csv: one row per logging call, the train loss as `train_loss_epoch`; hparams.yaml)
  with the rows of results/abxi-cpu/2026-11-23-24-epochs and 2026-11-23-per-position.
- hydra/multirun/{0..8}/: a real Hydra multirun (`gca=none,early,stack train.seed=1,2,3`,
  config in scripts/python/foreign_runs_conf/) whose jobs log, with SummaryWriter into `tb/`,
  the final test metrics of the matching run of results/abxi-cpu-seeds/12-epochs/study.csv at step 12
  and its parameter count as the hparam `n_params`.
- foreign-runs.toml: how cdsr-lab maps these tags and columns (one file for the whole tree).

Tags: `train/loss`, `val/ndcg@10/food` (TensorBoard); `train_loss_epoch`, `val_ndcg@10_food`
(Lightning). Event files are renamed to `events.out.tfevents.<run>` (the writers put the time
and the host name in the name).

Needs torch, tensorboard, pytorch-lightning and hydra-core:
    pip install tensorboard hydra-core pytorch-lightning torch
Run from the project root:  python3 scripts/python/foreign_runs_fixture.py
"""
import csv
import json
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/foreign_runs"
RESULTS = ROOT / "results"
DOMAIN_NAMES = {"A": "food", "B": "kitchen"}
SPLIT_NAMES = {"train": "train", "valid": "val", "test": "test"}
BATCHES_PER_EPOCH = 28  # 7,144 users / batch 256

MAPPING = """\
# How cdsr-lab reads the TensorBoard, Lightning and Hydra runs below this folder
# (docs/foreign-runs.md). Written by scripts/python/foreign_runs_fixture.py.
model = "abxi"
dataset = "food-kitchen"
seed = "train.seed"
params = "n_params"
patterns = ["{split}/{metric}/{domain}", "{split}/{metric}", "{split}_{metric}_{domain}", "{split}_{metric}"]

[split_values]
val = "valid"

[domain_values]
food = "A"
kitchen = "B"

[rename]
loss_epoch = "loss"
"""


def native_run(name):
    d = RESULTS / "abxi-cpu" / name
    manifest = json.loads((d / "run.json").read_text())
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line]
    return manifest, rows


def flatten(config, prefix=""):
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def tag(split, metric, domain, sep):
    parts = [SPLIT_NAMES[split], metric] + ([DOMAIN_NAMES[domain]] if domain else [])
    return sep.join(parts)


def rename_event_files(run_dir, name):
    files = sorted(run_dir.glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    files[0].rename(run_dir / f"events.out.tfevents.{name}")


def write_hparams(writer, hparams):
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    exp, ssi, sei = hparams_summary(hparams, {})
    fw = writer._get_file_writer()
    for s in (exp, ssi, sei):
        fw.add_summary(s)


def tensorboard_runs():
    from torch.utils.tensorboard import SummaryWriter

    for name, source in [
        ("abxi-d256-s1", "2026-11-23-d256"),
        ("abxi-d256-s2", "2026-11-24-d256-seed2"),
        ("abxi-d256-s3", "2026-11-24-d256-seed3"),
    ]:
        manifest, rows = native_run(source)
        run_dir = OUT / "tensorboard" / name
        writer = SummaryWriter(log_dir=str(run_dir))
        hp = {
            k: (str(v) if isinstance(v, list) else v)
            for k, v in flatten(manifest["config"]).items()
            if v is not None
        }
        hp["n_params"] = manifest["params"]["total"]
        write_hparams(writer, hp)
        for row in rows:
            for k, v in row.items():
                if k in ("epoch", "split", "domain") or v is None:
                    continue
                t = tag(row["split"], k, row["domain"], "/")
                if row["split"] == "train":
                    writer.add_scalar(t, v, row["epoch"])
                else:
                    writer.add_scalar(t, v, row["epoch"], new_style=True, double_precision=True)
        writer.close()
        rename_event_files(run_dir, name)


def grouped(rows):
    """Rows of one (epoch, split) merged, the way a Lightning module logs them in one call."""
    out = {}
    for row in rows:
        values = out.setdefault((row["epoch"], row["split"]), {})
        for k, v in row.items():
            if k in ("epoch", "split", "domain") or v is None:
                continue
            metric = "loss_epoch" if (row["split"], k) == ("train", "loss") else k
            values[tag(row["split"], metric, row["domain"], "_")] = v
    return out


def lightning_runs():
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    jobs = [
        ("abxi-d256-gca-early", "2026-11-24-d256-gca-early", TensorBoardLogger),
        ("abxi-d64-24-epochs", "2026-11-23-24-epochs", CSVLogger),
        ("abxi-d64-per-position", "2026-11-23-per-position", CSVLogger),
    ]
    for name, source, logger_class in jobs:
        manifest, rows = native_run(source)
        logger = logger_class(save_dir=str(OUT / "lightning"), name=name, version=0)
        hp = dict(manifest["config"])
        hp["n_params"] = manifest["params"]["total"]
        logger.log_hyperparams(hp)
        for (epoch, split), values in grouped(rows).items():
            # Lightning counts epochs from 0 and logs the epoch with every metric.
            values["epoch"] = epoch - 1
            logger.log_metrics(values, step=epoch * BATCHES_PER_EPOCH - 1)
        logger.finalize("success")
        if logger_class is TensorBoardLogger:
            rename_event_files(pathlib.Path(logger.log_dir), name)


def hydra_multirun():
    import hydra
    from hydra.core.hydra_config import HydraConfig

    study = list(csv.DictReader((RESULTS / "abxi-cpu-seeds/12-epochs/study.csv").open()))
    variants = {"none": "baseline", "early": "+GCA_early", "stack": "+GCA_stack"}

    @hydra.main(version_base=None, config_path="foreign_runs_conf", config_name="config")
    def job(cfg):
        from torch.utils.tensorboard import SummaryWriter

        choice = HydraConfig.get().runtime.choices["gca"]
        seed = cfg.train.seed
        mine = [
            r for r in study if r["variant"] == variants[choice] and int(r["seed"]) == seed
        ]
        assert len(mine) == 2, (choice, seed)
        tb = pathlib.Path(HydraConfig.get().runtime.output_dir) / "tb"
        writer = SummaryWriter(log_dir=str(tb))
        write_hparams(writer, {"n_params": int(float(mine[0]["params"]))})
        for r in mine:
            for metric in ["ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20", "hr@1", "hr@5", "hr@10",
                           "hr@20", "mrr", "auc"]:
                t = tag("test", metric, r["domain"], "/")
                writer.add_scalar(t, float(r[metric]), cfg.train.epochs, new_style=True,
                                  double_precision=True)
        writer.close()
        rename_event_files(tb, f"job{HydraConfig.get().job.num}")

    sys.argv = [
        sys.argv[0],
        "--multirun",
        "gca=none,early,stack",
        "train.seed=1,2,3",
        "hydra.sweep.dir=hydra/multirun",
        "hydra.sweep.subdir=${hydra.job.num}",
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
    ]
    job()


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    (OUT / "foreign-runs.toml").write_text(MAPPING)
    tensorboard_runs()
    lightning_runs()
    # Hydra resolves the sweep folder against the working directory.
    import os

    os.chdir(OUT)
    hydra_multirun()


if __name__ == "__main__":
    main()
