"""The manifest format and the Common Voice / audiofolder importers."""

from __future__ import annotations

import json

import pytest

from nutq.cli import main
from nutq.train.data.errors import DataError
from nutq.train.data.importers import import_audiofolder, import_common_voice
from nutq.train.data.manifest import KNOWN_DIALECTS, normalize_dialect, read_manifest, write_manifest


def test_manifest_round_trip_and_bad_lines(tmp_path):
    lines = [
        {"audio": "clips/a.wav", "text": "مرحبا", "speaker": "s1", "dialect": "ar-EG", "gender": "female_feminine",
         "split": "dev", "duration": 2.5},
        {"audio": "/abs/b.flac", "text": "سلام", "speaker": "s2", "dialect": "Najdi"},
        {"audio": "c.wav", "text": "x"},  # no speaker
        {"audio": "d.wav", "text": "x", "speaker": "s", "split": "test"},
        {"audio": "clips/a.wav", "text": "again", "speaker": "s1"},  # repeated id
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n[1, 2]\n", encoding="utf-8")
    utts, problems = read_manifest(path)
    assert [u.id for u in utts] == ["clips/a.wav", "/abs/b.flac"]
    a, b = utts
    assert (a.dialect, a.gender, a.split, a.duration, a.audio) == ("egyptian", "female", "val", 2.5, tmp_path / "clips/a.wav")
    assert (b.dialect, b.gender, b.split, str(b.audio)) == ("najdi", None, None, "/abs/b.flac")
    assert [p.line for p in problems] == [3, 4, 5, 7]
    assert "speaker" in problems[0].reason and "split" in problems[1].reason and "repeats" in problems[2].reason
    again, _ = read_manifest(write_manifest(tmp_path / "out" / "m2.jsonl", utts))
    assert [(u.audio, u.dialect, u.gender, u.split) for u in again] == [(u.audio, u.dialect, u.gender, u.split) for u in utts]
    with pytest.raises(DataError, match="not found"):
        read_manifest(tmp_path / "none.jsonl")


def test_dialect_labels():
    assert all(normalize_dialect(d) == d for d in KNOWN_DIALECTS)
    assert [normalize_dialect(x) for x in ("Khaleeji", "ar_sa", "darija", "", None, "Sudanese")] == \
        ["gulf", "gulf", "maghrebi", "msa", "msa", "sudanese"]


def test_common_voice(tmp_path):
    head = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment\n"
    (tmp_path / "train.tsv").write_text(head + "c1\ta.mp3\tمرحبا\t2\t0\t\tmale_masculine\tمصري\t\tar\t\n"
                                        "c2\tb.mp3\tأهلا\t2\t0\t\t\tGulf\t\tar\t\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text(head + "c3\tc.mp3\tسلام\t2\t0\t\tfemale_feminine\t\t\tar\t\n"
                                      "\t\t\t\t\t\t\t\t\t\t\n", encoding="utf-8")
    utts, problems = import_common_voice(tmp_path, ("train.tsv", "dev.tsv"), dialect="levantine")
    got = [(u.id, u.speaker, u.dialect, u.gender, u.split, u.audio) for u in utts]
    assert got == [("a.mp3", "c1", "egyptian", "male", "train", tmp_path / "clips" / "a.mp3"),
                   ("b.mp3", "c2", "gulf", None, "train", tmp_path / "clips" / "b.mp3"),
                   ("c.mp3", "c3", "levantine", "female", "val", tmp_path / "clips" / "c.mp3")]
    assert len(problems) == 1
    with pytest.raises(DataError, match="not found"):
        import_common_voice(tmp_path, ("validated.tsv",))


def test_audiofolder_csv_jsonl_and_split_folders(tmp_path, capsys):
    (tmp_path / "metadata.csv").write_text("file_name,transcription,speaker_id,dialect\na.wav,مرحبا,s1,egy\n"
                                           "b.wav,,s1,\n", encoding="utf-8")
    (tmp_path / "validation").mkdir()
    (tmp_path / "validation" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "c.wav", "text": "سلام", "speaker": "s2", "gender": "F"}) + "\n{bad\n", encoding="utf-8")
    utts, problems = import_audiofolder(tmp_path, dialect="iraqi")
    got = [(u.id, u.text, u.speaker, u.dialect, u.gender, u.split) for u in utts]
    assert got == [("a.wav", "مرحبا", "s1", "egyptian", None, None),
                   ("validation/c.wav", "سلام", "s2", "iraqi", "female", "val")]
    assert len(problems) == 2
    out = tmp_path / "m.jsonl"
    assert main(["data", "import", "audiofolder", str(tmp_path), "--out", str(out)]) == 0
    assert len(read_manifest(out)[0]) == 2 and "2 utterances" in capsys.readouterr().out
    with pytest.raises(DataError, match="metadata"):
        import_audiofolder(tmp_path / "validation" / "none")
