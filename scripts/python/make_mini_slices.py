"""Make the small real-data slices under data/ from ../shared/data (run from the repo root; the
source is $CDSR_SHARED_DATA or the first `shared/data` above the current directory).

data/food-kitchen-mini: the first 300 users of ABXI's food-kitchen file, unchanged sequences
and timestamps; item and user ids re-indexed densely (A items first, each domain in increasing
original id; users 0..299 in file order), with both JSON maps restricted to match.

data/kuairand-1k-mini: two training partitions, one evaluation and one testing partition,
TFRecord files copied unchanged, plus the matching rows of the decoded TSVs.
"""
import gzip
import json
import os
import shutil

def _shared():
    if os.environ.get("CDSR_SHARED_DATA"):
        return os.environ["CDSR_SHARED_DATA"]
    d = os.path.abspath(".")
    while True:
        if os.path.isdir(os.path.join(d, "shared", "data")):
            return os.path.join(d, "shared", "data")
        if os.path.dirname(d) == d:
            raise SystemExit("no shared/data above the current directory; set CDSR_SHARED_DATA")
        d = os.path.dirname(d)

SRC = _shared()
N_USERS = 300

def food_kitchen():
    src = os.path.join(SRC, "food-kitchen")
    dst = "data/food-kitchen-mini"
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, "map_item_50.txt")) as f:
        items = json.load(f)
    with open(os.path.join(src, "map_user_50.txt")) as f:
        users = json.load(f)
    lines = open(os.path.join(src, "afk_50_preprocessed.txt")).read().splitlines()[:N_USERS]
    seqs = []
    for line in lines:
        parts = line.split(" ")
        seqs.append((int(parts[0]), [tuple(map(int, t.split("|"))) for t in parts[1:]]))
    by_id = {v[0]: (k, v[1]) for k, v in items.items()}
    used = sorted({i for _, s in seqs for i, _ in s})
    a = [i for i in used if by_id[i][1] == 0]
    b = [i for i in used if by_id[i][1] == 1]
    new_id = {old: n + 1 for n, old in enumerate(a + b)}
    user_key = {v: k for k, v in users.items()}
    new_user = {old: n for n, (old, _) in enumerate(seqs)}
    with open(os.path.join(dst, "afk_mini_preprocessed.txt"), "w") as f:
        for old_u, s in seqs:
            f.write(" ".join([str(new_user[old_u])] + [f"{new_id[i]}|{t}" for i, t in s]) + "\n")
    with open(os.path.join(dst, "map_item_mini.txt"), "w") as f:
        json.dump({by_id[old][0]: [new_id[old], by_id[old][1]] for old in a + b}, f)
    with open(os.path.join(dst, "map_user_mini.txt"), "w") as f:
        json.dump({user_key[old]: new for old, new in new_user.items()}, f)
    print("food-kitchen-mini:", len(seqs), "users", len(a), "A items", len(b), "B items")

def kuairand():
    src = os.path.join(SRC, "kuairand-1k")
    dst = "data/kuairand-1k-mini"
    keep = {"training": [200, 201], "evaluation": [0], "testing": [100]}
    os.makedirs(os.path.join(dst, "decoded_tsv"), exist_ok=True)
    for s, parts in keep.items():
        os.makedirs(os.path.join(dst, s), exist_ok=True)
        for p in parts:
            shutil.copyfile(os.path.join(src, s, f"partition_{p}.tfrecord.gz"),
                            os.path.join(dst, s, f"partition_{p}.tfrecord.gz"))
        names = {f"partition_{p}" for p in parts}
        with gzip.open(os.path.join(src, "decoded_tsv", f"{s}.tsv.gz"), "rt") as f, \
                gzip.open(os.path.join(dst, "decoded_tsv", f"{s}.tsv.gz"), "wt") as g:
            n = 0
            for i, line in enumerate(f):
                if i == 0 or line.split("\t", 1)[0] in names:
                    g.write(line)
                    n += i > 0
        print(f"kuairand-1k-mini/{s}:", parts, n, "rows")

if __name__ == "__main__":
    food_kitchen()
    kuairand()
