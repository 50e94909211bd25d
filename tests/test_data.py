from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import write_faces

from fer_edge.edge.data import default_cache_dir, load_split, read_fer2013_csv, read_labelled_folder
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.labels import FER2013_LABELS, canonical_label


def _csv(path, rows, header="emotion,pixels,Usage"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def _row(emotion, usage, value=7, n=2304):
    return f"{emotion},{' '.join([str(value)] * n)},{usage}"


def test_synonyms():
    assert canonical_label("Anger") == "angry"
    assert canonical_label("happiness") == "happy"
    assert canonical_label("surprised") == "surprise"
    assert canonical_label("0_angry") == "angry"
    assert canonical_label("contempt") is None


def test_kaggle_folder_layout_any_size_and_colour(tmp_path):
    write_faces(tmp_path / "train", {"angry": 3, "happy": 2}, size=64, color=True)
    write_faces(tmp_path / "test", {"sad": 2})
    tr = load_split(tmp_path, "train")
    assert tr.images.shape == (5, 48, 48) and tr.images.dtype == np.uint8
    assert list(tr.labels) == [0, 0, 0, 3, 3]
    assert tr.label_names == FER2013_LABELS
    te = load_split(tmp_path, "test")
    assert list(te.labels) == [FER2013_LABELS.index("sad")] * 2


def test_ck_style_folder_with_synonyms_skips_unknown(tmp_path, caplog):
    write_faces(tmp_path, {"anger": 2, "happiness": 1, "surprised": 1, "contempt": 2})
    with caplog.at_level(logging.WARNING):
        s = read_labelled_folder(tmp_path)
    assert len(s) == 4
    assert sorted(set(s.labels)) == [0, 3, 5]
    assert "contempt" in caplog.text


def test_cache_is_written_reused_and_invalidated(tmp_path):
    write_faces(tmp_path / "d", {"fear": 2})
    a = read_labelled_folder(tmp_path / "d")
    caches = list(default_cache_dir().glob(f"{tmp_path.name}-d-*.npz"))
    assert len(caches) == 1
    b = read_labelled_folder(tmp_path / "d")
    np.testing.assert_array_equal(a.images, b.images)
    write_faces(tmp_path / "d", {"neutral": 1})  # dataset changed -> read again
    c = read_labelled_folder(tmp_path / "d")
    assert len(c) == 3
    assert not list(default_cache_dir().glob("*.tmp"))


def test_corrupt_image_names_the_file_or_is_skipped(tmp_path, caplog):
    write_faces(tmp_path, {"sad": 2})
    bad = tmp_path / "sad" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(FerEdgeError, match="broken.jpg"):
        read_labelled_folder(tmp_path)
    with caplog.at_level(logging.WARNING):
        s = read_labelled_folder(tmp_path, skip_bad=True)
    assert len(s) == 2 and "broken.jpg" in caplog.text


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FerEdgeError, match="no such file"):
        load_split(tmp_path / "nope")
    (tmp_path / "train" / "happy").mkdir(parents=True)
    with pytest.raises(FerEdgeError, match="no images"):
        load_split(tmp_path, "train")


def test_csv_splits_and_icml_variant(tmp_path):
    rows = [_row(0, "Training"), _row(3, "Training"), _row(6, "PublicTest"),
            _row(5, "PrivateTest", value=200)]
    p = _csv(tmp_path / "fer2013.csv", rows)
    assert len(load_split(p, "train")) == 2
    assert list(load_split(p, "test").labels) == [6]
    priv = load_split(p, "PrivateTest")
    assert priv.images.shape == (1, 48, 48) and priv.images[0, 0, 0] == 200
    icml = _csv(tmp_path / "icml_face_data.csv", [f"{r.split(',')[0]}, {r.split(',')[2]}, "
                                                  f"{r.split(',')[1]}" for r in rows],
                header="emotion, Usage, pixels")
    assert len(read_fer2013_csv(icml, "Training")) == 2


def test_csv_errors_name_file_and_row(tmp_path):
    p = _csv(tmp_path / "a.csv", [_row(0, "Training")], header="label,pixels,Usage")
    with pytest.raises(FerEdgeError, match=r"a\.csv.*emotion"):
        read_fer2013_csv(p)
    p = _csv(tmp_path / "b.csv", [_row(0, "Training"), _row(1, "Training", n=2000)])
    with pytest.raises(FerEdgeError, match=r"b\.csv, row 3: 2000 pixels"):
        read_fer2013_csv(p)


def test_real_fer2013_public_test(fer2013):
    s = load_split(fer2013, "test")
    assert len(s) == 3589
    assert s.class_counts().tolist() == [467, 56, 496, 895, 653, 415, 607]
    assert all("PublicTest_" in p for p in s.paths[:50])


def test_images_are_read_through_read_image(tmp_path, caplog):
    """Truncated and tiny files are refused like corrupt ones; a folder of only bad files is
    an error even with skip_bad; other files are named in a warning."""
    write_faces(tmp_path, {"sad": 2})
    jpg = tmp_path / "sad" / "000.jpg"
    jpg.write_bytes(jpg.read_bytes()[:200])
    with pytest.raises(FerEdgeError, match=r"000\.jpg: truncated"):
        read_labelled_folder(tmp_path, cache=False)
    (tmp_path / "sad" / "notes.txt").write_text("x")
    with caplog.at_level(logging.WARNING):
        assert len(read_labelled_folder(tmp_path, skip_bad=True, cache=False)) == 1
    assert "1 .txt file(s) ignored" in caplog.text
    (tmp_path / "sad" / "001.jpg").write_bytes(b"")
    with pytest.raises(FerEdgeError, match="all 2 images are unreadable"):
        read_labelled_folder(tmp_path, skip_bad=True, cache=False)


def test_csv_usage_is_checked_and_a_bom_accepted(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbf" + ("emotion,pixels,Usage\n" + _row(0, "training") + "\n"
                                     + _row(1, "Validation") + "\n").encode())
    with pytest.raises(FerEdgeError, match=r"bom\.csv, row 3: Usage 'Validation'"):
        read_fer2013_csv(p, cache=False)
    p.write_bytes(b"\xef\xbb\xbf" + ("emotion,pixels,Usage\n" + _row(0, "training")).encode())
    assert len(read_fer2013_csv(p, cache=False)) == 1
