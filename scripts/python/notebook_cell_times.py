"""Seconds per code cell of an evcxr notebook, as a markdown table.

    python3 scripts/python/notebook_cell_times.py EXECUTED.ipynb
        reads the times an executed notebook records (`jupyter nbconvert --execute` and
        `scripts/notebooks.sh --write-outputs` keep them in each cell's metadata);
    python3 scripts/python/notebook_cell_times.py --run NOTEBOOK.ipynb [--prepend CELL]...
        executes NOTEBOOK with the `rust` kernel from `notebooks/` (where `evcxr.toml` sets the
        shared build directory) and prints its times; --prepend adds a code cell in front
        (e.g. ':linker system' to time evcxr with the system linker).

The time of a cell is from the kernel starting it to its reply (what the user waits for).
"""

import argparse
import datetime
import pathlib
import sys


def seconds(start, end):
    parse = datetime.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def cell_times(nb):
    """(index, first source line, seconds) of every executed code cell."""
    rows = []
    for i, cell in enumerate(nb.cells, 1):
        if cell.cell_type != "code":
            continue
        timing = cell.metadata.get("execution", {})
        start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if start is None or end is None:
            raise SystemExit(f"cell {i} has no recorded execution time (was the notebook executed?)")
        first = next((l for l in cell.source.splitlines() if l.strip() and not l.startswith("//")), "")
        rows.append((i, first.strip(), seconds(start, end)))
    return rows


def main():
    import nbformat

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebook", type=pathlib.Path)
    ap.add_argument("--run", action="store_true", help="execute the notebook first")
    ap.add_argument("--prepend", action="append", default=[], help="code cell to run first")
    ap.add_argument("--cwd", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parents[2] / "notebooks")
    ap.add_argument("--output", type=pathlib.Path, help="write the executed notebook here")
    args = ap.parse_args()

    nb = nbformat.read(args.notebook, as_version=4)
    if args.run:
        from nbclient import NotebookClient

        nb.cells[0:0] = [nbformat.v4.new_code_cell(c) for c in args.prepend]
        NotebookClient(
            nb, kernel_name="rust", timeout=3600, record_timing=True,
            resources={"metadata": {"path": str(args.cwd)}},
        ).execute()
        if args.output:
            nbformat.write(nb, args.output)
    print("| cell | code | s |\n|---|---|---|")
    for i, first, secs in cell_times(nb):
        print(f"| {i} | `{first[:60]}` | {secs:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
