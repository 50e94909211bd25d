"""FER+ vote distributions as training targets (fer-train --soft-labels): the vote file
reader, the distribution rules of the FER+ README, the loss against a hand computation, and
a real training run on a tiny folder the test writes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import run_cli, write_faces

from fer_edge.edge.data import load_split
from fer_edge.edge.data.soft_labels import VOTE_COLUMNS, read_votes, vote_distribution
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.labels import FER2013_LABELS

HEADER = "file," + ",".join(VOTE_COLUMNS)


def write_votes(path, rows: dict[str, list[int]]) -> None:
    path.write_text(HEADER + "\n" + "".join(
        f"{f},{','.join(map(str, v))}\n" for f, v in rows.items()))


#                      neutral happiness surprise sadness anger disgust fear contempt unknown NF
ROWS = {"train/happy/000.jpg": [2, 6, 0, 0, 0, 0, 0, 1, 1, 0],
        "train/happy/001.jpg": [0, 0, 0, 0, 0, 0, 0, 0, 4, 6],   # not a face
        "train/happy/002.jpg": [0, 0, 0, 0, 0, 0, 0, 5, 5, 0],   # no vote for our 7 classes
        "train/sad/000.jpg": [0, 0, 0, 5, 0, 0, 0, 0, 0, 5],     # NF tied largest: not a face
        "train/sad/001.jpg": [1, 0, 0, 7, 2, 0, 0, 0, 0, 0]}


@pytest.fixture()
def tiny(tmp_path):
    write_faces(tmp_path / "data" / "train", {"happy": 3, "sad": 3})
    write_votes(tmp_path / "votes.csv", ROWS)
    return tmp_path


def test_distribution_follows_the_ferplus_rules(tiny):
    split = load_split(tiny / "data", "train")
    v = vote_distribution(split.paths, FER2013_LABELS, read_votes(tiny / "votes.csv"))
    assert (v.not_a_face, v.no_vote, v.missing) == (2, 1, 1)  # sad/002.jpg has no row
    kept = [split.paths[i].split("train/")[1] for i in v.index]
    assert kept == ["happy/000.jpg", "sad/001.jpg"]
    h = dict(zip(FER2013_LABELS, v.dist[0], strict=True))
    # contempt and unknown left out, the rest renormalised: neutral 2/8, happy 6/8
    assert h["neutral"] == pytest.approx(0.25) and h["happy"] == pytest.approx(0.75)
    s = dict(zip(FER2013_LABELS, v.dist[1], strict=True))
    assert (s["neutral"], s["sad"], s["angry"]) == pytest.approx((0.1, 0.7, 0.2))
    assert np.allclose(v.dist.sum(1), 1)
    assert v.majority_correct(np.array([FER2013_LABELS.index("happy"),
                                        FER2013_LABELS.index("angry")])).tolist() == [True, False]


def test_contempt_is_kept_when_the_labels_have_it(tiny):
    labels = (*FER2013_LABELS, "contempt")
    split = load_split(tiny / "data", "train")
    v = vote_distribution(split.paths, labels, read_votes(tiny / "votes.csv"))
    assert v.no_vote == 0 and v.not_a_face == 2  # happy/002: contempt 5 of 5 counted votes
    assert v.dist[0][labels.index("contempt")] == pytest.approx(1 / 9)


def test_cross_entropy_against_votes_matches_a_hand_computation(tiny):
    torch = pytest.importorskip("torch")
    from fer_edge.train.engine import task_target

    split = load_split(tiny / "data", "train")
    v = vote_distribution(split.paths, FER2013_LABELS, read_votes(tiny / "votes.csv"))
    split = split.subset(v.index)
    split.soft = v.dist
    logits = torch.tensor([[0.5, -1.0, 0.2, 2.0, 0.1, 0.0, 1.0],
                           [1.5, 0.3, -0.2, 0.0, 2.5, -1.0, 0.7]])
    y = torch.from_numpy(split.labels)
    target = task_target(split, np.arange(2), y)
    got = torch.nn.CrossEntropyLoss(label_smoothing=0.0)(logits, target).item()
    hand = 0.0
    for z, q in zip(logits.tolist(), v.dist.tolist(), strict=True):
        log_z = math.log(sum(math.exp(a) for a in z))
        hand -= sum(qi * (zi - log_z) for qi, zi in zip(q, z, strict=True))
    assert got == pytest.approx(hand / 2, rel=1e-6)
    # without votes the targets are the class indices
    plain = load_split(tiny / "data", "train")
    assert task_target(plain, np.arange(2), y) is y


@pytest.mark.parametrize("body,words", [
    ("file,neutral\nx.jpg,1\n", ["not a FER+ vote file", "happiness"]),
    (HEADER + "\ntrain/a/1.jpg,1,2,x,0,0,0,0,0,0,0\n", [":2:", "not a number"]),
    (HEADER + "\ntrain/a/1.jpg,1,2,nan,0,0,0,0,0,0,0\n", [":2:", "finite"]),
    (HEADER + "\ntrain/a/1.jpg,1,-2,0,0,0,0,0,0,0,0\n", [":2:", ">= 0"]),
    (HEADER + "\ntrain/a/1.jpg,1,2\n", [":2:", "fields"]),
    (HEADER + "\n", ["no vote rows"]),
])
def test_bad_vote_files_are_one_error_naming_the_file(tmp_path, body, words):
    p = tmp_path / "votes.csv"
    p.write_text(body)
    with pytest.raises(FerEdgeError) as e:
        read_votes(p)
    assert str(p) in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_images_not_in_the_vote_file_are_refused(tiny):
    write_votes(tiny / "other.csv", {"train/fear/999.jpg": [0, 0, 0, 0, 0, 0, 10, 0, 0, 0]})
    split = load_split(tiny / "data", "train")
    with pytest.raises(FerEdgeError, match="none of the 6 images"):
        vote_distribution(split.paths, FER2013_LABELS, read_votes(tiny / "other.csv"))


def test_fer_train_on_votes_records_targets_and_ferplus_accuracy(tiny):
    pytest.importorskip("torch")
    from fer_edge.train.checkpoint import load_checkpoint

    rows = {}
    for split in ("train", "test"):
        write_faces(tiny / "data" / split, {"happy": 8, "sad": 8}, seed=len(split))
        for c in ("happy", "sad"):
            for i in range(8):
                v = [0] * 10
                v[1 if c == "happy" else 3] = 7
                v[0] = 3
                rows[f"{split}/{c}/{i:03d}.jpg"] = v
    write_votes(tiny / "votes.csv", rows)
    out = tiny / "run"
    r = run_cli("fer_edge.train.cli", "--data", str(tiny / "data"), "--arch", "fercnn_s",
                "--epochs", "1", "--batch-size", "8", "--no-augment", "--threads", "1",
                "--soft-labels", str(tiny / "votes.csv"), "--soft-mix", "0.5",
                "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "FER+ majority" in r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["targets"]["kind"] == "votes" and m["targets"]["mix"] == 0.5
    assert m["val_ferplus"]["images"] == 16 and 0 <= m["val_ferplus"]["accuracy"] <= 1
    assert "val_ferplus_acc" in m["history"][0]
    assert load_checkpoint(out / "best.pt")["targets"]["kind"] == "votes"


def test_soft_mix_without_votes_is_a_usage_error(tmp_path):
    r = run_cli("fer_edge.train.cli", "--data", str(tmp_path), "--soft-mix", "0.5")
    assert r.returncode == 2 and "--soft-mix needs --soft-labels" in r.stderr
