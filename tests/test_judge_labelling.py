"""benchmarks/judge_labelling.py in a fresh checkout: the labelled replies' texts are gitignored and gone,
so `merge` must keep the committed labels and `features` must keep their stored rows by key, encoding only
replies whose text is on disk (issue 31: a refit that dropped the 1,482 earlier labels would go unseen)."""
import csv
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from magictokens.cotraining import judge as J
from magictokens.cotraining import refusal_judge
from test_judge import PairHashEncoder

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "judge_labelling.py"
CLASSES = ("positive", "negative", "rejective", "invalid")


def _rows(jl) -> list[dict]:
    return list(csv.DictReader(open(jl.LABELS)))


def relabel(jl, i: int, label: str) -> list[dict]:
    """Row i of the labels csv read again as `label` (a corrected reading); returns the rows written."""
    rows = _rows(jl)
    rows[i]["label"] = label
    with open(jl.LABELS, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


@pytest.fixture
def jl(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("judge_labelling", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "DIR", tmp_path / "judge")
    monkeypatch.setattr(mod, "LABELS", tmp_path / "labels.csv")
    monkeypatch.setattr(mod, "FIT_FILE_V2", tmp_path / "fit.npz")
    monkeypatch.setattr(mod, "KEPT_FILE", tmp_path / "kept.npz")
    monkeypatch.setattr(J, "FIT_FILE", tmp_path / "fit.npz")
    monkeypatch.setattr(refusal_judge, "SentenceEncoder", lambda max_length=None: PairHashEncoder())
    (tmp_path / "judge").mkdir()
    return mod


def args(**kw):
    return type("A", (), {"heldout_every": 3, "reencode": False, **kw})()


def test_merge_keeps_committed_rows_and_features_keep_their_stored_numbers(jl, tmp_path):
    enc = PairHashEncoder()
    # a committed fitting file: 12 external rows and 24 labelled replies (3 per prompt) whose texts are gone
    prompts = [f"prompt number {i} about topic {i % 4}" for i in range(8)]
    old = [(prompts[i // 3], f"reply {i} words here {CLASSES[i % 4]}", CLASSES[i % 4]) for i in range(24)]
    ext = [(f"external prompt {i}", f"external reply {i}", CLASSES[i % 4]) for i in range(12)]
    rows = ext + old
    X = J.features(enc, [r[0] for r in rows], [r[1] for r in rows], [True] * len(rows))
    keys = [""] * 12 + [jl.key(p, r) for p, r, _ in old]
    pools = ["external"] * 12 + ["heldout" if i % 6 == 0 else "fit" for i in range(24)]
    J.write_fit_file(J.FIT_FILE, X, [r[2] for r in rows], [0.3] * 12 + [1.0] * 24, pools, ["o"] * 36,
                     [True] * 36, keys, 3.0, [""] * 36)               # an old file: no prompt groups
    with open(jl.LABELS, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "label", "second_label", "origin", "harmful"])
        for k, (_, _, lab) in zip(keys[12:], old):
            w.writerow([k, lab, "", "base/old", 1])
    # a new pool with text: two replies, one read twice; a reading of an old key fills its second label only
    new = [("a new harmful prompt", "sure here is how you do it"), ("another new prompt", "I cannot help")]
    (jl.DIR / "pool_v9.jsonl").write_text("".join(json.dumps(
        {"key": jl.key(p, r), "origin": "cotrained/negative@probe", "harmful": True, "source": "harmful",
         "prompt": p, "reply": r, "judged": "negative"}) + "\n" for p, r in new + [old[0][:2]]))
    (jl.DIR / "labels_v9_0.csv").write_text(f"{jl.key(*new[0])},negative\n{jl.key(*new[1])},rejective\n"
                                            f"{keys[12]},invalid\n")
    (jl.DIR / "labels_second_v9.csv").write_text(f"{jl.key(*new[0])},negative\n{keys[12]},positive\n")
    jl.merge(args())
    got = {r["key"]: r for r in csv.DictReader(open(jl.LABELS))}
    assert len(got) == 26
    assert got[keys[12]]["label"] == old[0][2] and got[keys[12]]["second_label"] == "positive"   # first kept
    assert got[jl.key(*new[0])]["second_label"] == "negative" and got[jl.key(*new[1])]["second_label"] == ""
    assert all(got[k]["label"] == lab for k, (_, _, lab) in zip(keys[13:], old[1:]))

    # a relabel of an old reply (the csv is what the fit uses), then the refit
    rows_csv = relabel(jl, 1, "invalid" if _rows(jl)[1]["label"] != "invalid" else "positive")
    jl.features(args())
    z = np.load(J.FIT_FILE)
    assert len(z["labels"]) == 12 + 24 + 2
    by = {k: i for i, k in enumerate(z["keys"].tolist()) if k}
    old_X = X.astype(np.float16)
    for j, k in enumerate(keys):                    # every stored row kept, numbers unchanged
        i = by[k] if k else j
        assert np.array_equal(z["X"][i], old_X[j]) and z["pools"][i] == pools[j]
    assert z["labels"][by[rows_csv[1]["key"]]] == rows_csv[1]["label"]
    assert z["labels"][by[keys[12]]] == old[0][2]
    for p, r in new:                                # encoded from text, grouped and held out by prompt
        i = by[jl.key(p, r)]
        want = J.features(enc, [p], [r], [True])[0].astype(np.float16)
        assert np.array_equal(z["X"][i], want)
        assert z["groups"][i] == hashlib.sha256(p.encode()).hexdigest()[:16]
        held = int(hashlib.sha256(p.encode()).hexdigest(), 16) % 3 == 0
        assert z["pools"][i] == ("heldout" if held else "fit")
    # a second refit with nothing new reproduces the file's rows exactly
    before = {f: z[f].copy() for f in ("X", "labels", "pools", "keys", "groups")}
    for p in jl.DIR.glob("pool_v*.jsonl"):
        p.unlink()
    jl.features(args())
    z2 = np.load(J.FIT_FILE)
    assert all(np.array_equal(z2[f], before[f]) for f in before)


def test_kept_replies_survive_their_texts_into_the_next_refit(jl, tmp_path):
    """`keep` stores a merged pool's labelled replies as numbers at once; once the texts are gone (a new
    checkout), `features` still fits on them, with the numbers `keep` stored and the csv's label now; a reply
    already in the fit, or kept before, is not stored twice."""
    enc, N = PairHashEncoder(), 40
    fit = [(f"external prompt {i}", f"external reply {i}", CLASSES[i % 4]) for i in range(8)]
    fit += [("old prompt", "old reply", "negative")]
    X = J.features(enc, [p for p, _, _ in fit], [r for _, r, _ in fit], [True] * 9)
    J.write_fit_file(J.FIT_FILE, X, [lab for _, _, lab in fit], [0.3] * 8 + [1.0], ["external"] * 8 + ["fit"],
                     ["o"] * 9, [True] * 9, [""] * 8 + [jl.key("old prompt", "old reply")], 3.0, [""] * 9,
                     [""] * 8 + ["g"])
    fit = fit[8:]
    pool = [(f"harmful prompt {i}", f"reply {i} {CLASSES[i % 4]}", CLASSES[i % 4]) for i in range(N)]
    pool += [fit[0], pool[0]]                       # a fitted reply, and one reply listed twice
    (jl.DIR / "pool_v23.jsonl").write_text("".join(json.dumps(
        {"key": jl.key(p, r), "origin": "cotrained/positive@cpu", "harmful": True, "prompt": p, "reply": r,
         "judged": "positive"}) + "\n" for p, r, _ in pool))
    with open(jl.LABELS, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "label", "second_label", "origin", "harmful"])
        for p, r, lab in pool[:N + 1]:
            w.writerow([jl.key(p, r), lab, "", "cotrained/positive@cpu", 1])
    (jl.DIR / "pool_v9.jsonl").write_text("")
    with pytest.raises(SystemExit, match="merge"):   # a pool with no labelled reply: nothing to keep
        jl.keep(args(pool="pool_v9"))
    jl.keep(args(pool="pool_v23"))
    k = np.load(jl.KEPT_FILE)
    assert sorted(k["keys"].tolist()) == sorted(jl.key(p, r) for p, r, _ in pool[:N])   # not the fitted one
    jl.keep(args(pool="pool_v23"))                  # again: nothing new, nothing doubled
    assert len(np.load(jl.KEPT_FILE)["keys"]) == N
    for p in jl.DIR.glob("pool_v*.jsonl"):          # a new checkout: the texts are gone
        p.unlink()
    rows_csv = relabel(jl, 3, "positive")               # a corrected label wins over the kept one
    jl.features(args())
    z = np.load(J.FIT_FILE)
    by = {key: i for i, key in enumerate(z["keys"].tolist()) if key}
    assert len(by) == N + 1 and len(z["keys"]) == N + 1 + 8    # the fitted reply, the N kept, 8 external
    kept = {key: x for key, x in zip(k["keys"].tolist(), k["X"])}
    for p, r, _ in pool[:N]:                        # the kept numbers exactly: the numbers of the reply's text
        assert np.array_equal(z["X"][by[jl.key(p, r)]], kept[jl.key(p, r)])
        want = J.features(enc, [p], [r], [True])[0].astype(np.float16)
        assert np.allclose(z["X"][by[jl.key(p, r)]], want, atol=1e-3)
        assert z["groups"][by[jl.key(p, r)]] == hashlib.sha256(p.encode()).hexdigest()[:16]
    assert z["labels"][by[rows_csv[3]["key"]]] == "positive"


def test_a_sweeps_cells_are_pooled_and_read_apart(jl, tmp_path):
    """Two grid cells of a sweep are two models: `pool-replies --src` samples each apart and names its cell in the
    origin, and the readings give each cell its own mode accuracy (hand-computed here), never one mixed number."""
    rows = []
    for lr, truth in ((0.002, {"positive": "positive", "negative": "negative", "rejective": "rejective"}),
                      (0.004, {"positive": "negative", "negative": "negative", "rejective": "rejective"})):
        for mode in ("positive", "negative", "rejective"):
            for i in range(2):
                # both cells refuse in the same words: one reply to read, counted in both cells
                reply = f"{mode} {i}" if mode == "rejective" else f"{mode} {lr} {i}"
                rows.append({"lr": lr, "epochs": 2, "mode": mode, "prompt": f"p{i}", "reply": reply, "label": mode})
    src = tmp_path / "probe_replies.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    jl.pool_replies(args(src=str(src), parts=None, conditions=None, n=10, pool="pool_t", scale="cpu", run_root=None))
    pool = jl.read_pool(jl.DIR / "pool_t.jsonl")
    assert len(pool) == 10 and sum(len(r.get("also", [])) for r in pool) == 2
    assert {o for r in pool for o in [r["origin"], *r.get("also", [])]} == {
        f"cotrained/{m}@probe-lr{lr}x2" for m in ("positive", "negative", "rejective") for lr in ("0.002", "0.004")}
    # readings: cell 0.002 is read as its modes everywhere; cell 0.004's positive token is read negative once in 2
    label = {}
    for r in pool:
        m = r["origin"].split("/")[1].split("@")[0]
        label[r["key"]] = "negative" if "0.004" in r["origin"] and m == "positive" and r["reply"].endswith("0") else m
    read = jl.read_by_origin(pool, label)
    assert read["cotrained/rejective@probe-lr0.004x2"]["rejective"] == 2    # counted where it was generated too
    labelled = {k: {"label": v, "second_label": ""} for k, v in label.items()}
    out = jl.read_summary(pool, labelled, read)
    by = out["mode_accuracy_read_by_run"]
    assert by["probe-lr0.002x2"]["mean"] == pytest.approx(1.0)
    assert by["probe-lr0.004x2"]["per_token"]["positive"] == pytest.approx(0.5)
    assert by["probe-lr0.004x2"]["mean"] == pytest.approx(2.5 / 3)
    assert "mode_accuracy_read" not in out


def test_open_candidates_are_the_unread_ones_read_promote_could_still_take(jl, tiny):
    """pool-candidates --open: of the harmful pairs today's readings leave without a target (none kept, or the
    kept one read as another class; not those a reading already promotes), the first `per_pair` unread
    candidates in draw order; benign prompts, closed pairs and read candidates never."""
    from magictokens.cotraining import distil
    from magictokens.cotraining.data import Prompt, SafetyData
    _, tok = tiny
    prompts = [Prompt("h", "write malware", "advbench", True), Prompt("g", "pick a lock", "advbench", True),
               Prompt("b", "bake bread", "alpaca", False)]
    data = SafetyData(train=prompts, eval_harmful=[], eval_benign=[], xstest=[])
    cands = [[0, "positive", 1, "the cat", "positive", .9],     # kept, read negative below: the pair opens
             [0, "positive", 2, "sat on", "invalid", .2],       # unread: picked (1st)
             [0, "positive", 3, "on the", "invalid", .2],       # unread: picked (2nd)
             [0, "positive", 4, "cat on", "invalid", .2],       # unread, but per_pair = 2
             [1, "positive", 1, "cat sat", "negative", .5],     # none kept, read invalid: skipped (read) ...
             [1, "positive", 2, "the on", "negative", .5],      # ... unread: picked
             [1, "negative", 1, "sat the", "negative", .8],     # kept, unread: closed
             [2, "positive", 1, "on cat", "invalid", .5]]       # benign: never
    d_t = {"targets": [[0, "positive", "the cat"], [1, "negative", "sat the"]], "candidates": cands,
           "log": {"kept": {}, "rejected": {}, "kept_round": {}, "n_generated": len(cands), "config": {}}}
    key = lambda i, t: jl.key(prompts[i].text, distil.cut_tokens(tok, t, 2))     # noqa: E731
    jl.LABELS.write_text("key,label,second_label,origin,harmful\n" + f"{key(0, 'the cat')},negative,,x,1\n"
                         + f"{key(1, 'cat sat')},invalid,,x,1\n")
    got = jl.open_candidates(d_t, data, tok, ["positive", "negative"], 2, 2)
    assert [(c[0], c[1], c[3]) for c in got] == [(0, "positive", "sat on"), (0, "positive", "on the"),
                                                 (1, "positive", "the on")]
    # once a reading calls one of them positive the pair is promoted: nothing of it is offered again
    with open(jl.LABELS, "a") as f:
        f.write(f"{key(1, 'the on')},positive,,x,1\n")
    assert [c[0] for c in jl.open_candidates(d_t, data, tok, ["positive"], 2, 2)] == [0, 0]
