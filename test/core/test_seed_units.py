"""The source documents' seed CSV: unit mapping, NaN where unmappable, refusals, intervention keywords."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from fatigue_llm.intervention.types import ACTIONS
from fatigue_llm.training.data import DataError, answer_text, detect_format, load_conversations
from fatigue_llm.training.seed_units import SEED_COLUMN_MAP, intervention_action, read_seed_csv

REPO = Path(__file__).resolve().parents[2]
HEADER = "eye_closure_ratio,blink_frequency,head_nod,voice_quality,steering_stability,speed_variance,yaw_rate," \
         "time_awake,intervention,effectiveness\n"
ALERT = "0.05,16,0.1,0.9,0.95,0.2,0.1,60,no intervention,0.9\n"


def write(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    path = tmp_path / "seed.csv"
    path.write_text(header + "".join(rows))
    return path


def test_mapping_keeps_same_quantities_and_leaves_the_rest_absent(tmp_path):
    [(features, level, action, message, effect)] = read_seed_csv(write(tmp_path, ALERT))
    assert (features.eye_closure_ratio, features.blink_frequency, features.voice_quality) == (0.05, 16.0, 0.9)
    for name in ("head_nod", "steering_reversal_rate", "speed_variance", "yaw_rate", "time_awake"):
        assert math.isnan(getattr(features, name)), name
    assert features.time_driving == 60.0  # seconds since the last rest
    assert (level, action, message, effect) == ("INFO", "none", ACTIONS["none"], 0.9)


def test_mapping_table_documents_every_feature_column():
    assert set(SEED_COLUMN_MAP) == {"eye_closure_ratio", "blink_frequency", "head_nod", "voice_quality",
                                    "steering_stability", "speed_variance", "yaw_rate", "time_awake"}
    assert [c for c, m in SEED_COLUMN_MAP.items() if m.target is None] == [
        "head_nod", "steering_stability", "speed_variance", "yaw_rate"]


def test_empty_cells_are_absent(tmp_path):
    [(features, *_)] = read_seed_csv(write(tmp_path, ",,,,,,,,opened the window,\n"))
    assert math.isnan(features.eye_closure_ratio) and math.isnan(features.time_driving)
    assert math.isnan(_[3])


@pytest.mark.parametrize("text, action", [
    ("no intervention - alert driver", "none"),
    ("dashboard reminder of the next rest area", "dashboard_notice"),
    ("suggested a coffee and a 15 min nap", "suggest_break"),
    ("Take a BREAK", "suggest_break"),
    ("opened the window for fresh air", "ventilation"),
    ("cooler cabin air and radio on", "ventilation"),
    ("audio chime then suggested a break", "audio_chime"),
    ("audio and seat vibration alert", "alert_audio_haptic"),
    ("sounded the alarm", "alert_audio_haptic"),
    ("alert then pulled over at a safe place to sleep", "pull_over"),
    ("pull over now", "pull_over"),
    ("told to stop", "pull_over"),
    ("played a podcast", None),
])
def test_keyword_table(text, action):
    assert intervention_action(text) == action


def test_keyword_table_agrees_with_the_bundled_seed_cases():
    with (REPO / "fatigue_llm" / "intervention" / "data" / "seed_cases.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            assert intervention_action(row["intervention"]) == row["action"], row["intervention"]


def test_level_fits_the_action_and_the_rule(tmp_path):
    rows = read_seed_csv(write(tmp_path,
                               "0.05,16,,,,,,,dashboard notice,0.6\n",       # rule INFO: INFO fits
                               "0.10,16,,,,,,,dashboard notice,0.6\n",       # rule ADVISORY
                               "0.18,16,,,,,,,suggested a break,0.7\n",      # rule WARNING
                               "0.35,16,,,,,,,pulled over,0.9\n",            # rule CRITICAL
                               "0.35,16,,,,,,,opened the window,0.2\n"))     # below the rule: kept, unanswerable
    assert [(level, action) for _, level, action, _, _ in rows] == [
        ("INFO", "dashboard_notice"), ("ADVISORY", "dashboard_notice"), ("WARNING", "suggest_break"),
        ("CRITICAL", "pull_over"), ("ADVISORY", "ventilation")]


def test_unknown_intervention_is_refused_naming_row_and_value(tmp_path):
    path = write(tmp_path, ALERT, "0.05,16,0.1,0.9,0.95,0.2,0.1,60,played a podcast,0.5\n")
    with pytest.raises(DataError, match=r"seed.csv: row 3, column 'intervention': 'played a podcast' names no"):
        read_seed_csv(path)


@pytest.mark.parametrize("row, column, value", [
    ("0.05,16,0.1,0.9,31,0.2,0.1,60,no intervention,0.9\n", "steering_stability", "'31'"),
    ("0.05,16,0.1,0.9,0.9,0.2,0.1,900,no intervention,0.9\n", "time_awake", "'900'"),
    ("1.5,16,0.1,0.9,0.9,0.2,0.1,60,no intervention,0.9\n", "eye_closure_ratio", "'1.5'"),
    ("0.05,16,0.1,0.9,0.9,0.2,0.1,60,no intervention,1.2\n", "effectiveness", "'1.2'"),
    ("0.05,many,0.1,0.9,0.9,0.2,0.1,60,no intervention,0.9\n", "blink_frequency", "'many'"),
])
def test_values_off_the_source_scale_are_refused(tmp_path, row, column, value):
    with pytest.raises(DataError) as error:
        read_seed_csv(write(tmp_path, ALERT, row))
    text = str(error.value)
    assert "seed.csv: row 3" in text and f"column '{column}'" in text and value in text


def test_strict_refuses_unmappable_values_with_the_reason(tmp_path):
    with pytest.raises(DataError, match=r"row 2, column 'head_nod': '0.1' cannot be converted: a 0-1 nod intensity"):
        read_seed_csv(write(tmp_path, ALERT), strict=True)
    [(features, *_)] = read_seed_csv(write(tmp_path, "0.05,16,,0.9,,,,60,no intervention,0.9\n"), strict=True)
    assert features.eye_closure_ratio == 0.05


def test_missing_column_is_named(tmp_path):
    with pytest.raises(DataError, match=r"missing column\(s\) \['effectiveness'\]"):
        read_seed_csv(write(tmp_path, "0.05,16,0.1,0.9,0.9,0.2,0.1,60,no intervention\n",
                            header=HEADER.replace(",effectiveness", "")))


def test_format_detection_and_loading(tmp_path):
    path = write(tmp_path, ALERT, "0.20,20,0.5,0.7,0.5,0.4,0.3,120,audio chime,0.6\n")
    assert detect_format(path) == "seed_csv"
    assert detect_format(REPO / "fatigue_llm" / "intervention" / "data" / "seed_cases.csv") == "cases_csv"

    def build(features):
        return [{"role": "user", "content": "x"}], "INFO"

    conversations = load_conversations(path, "auto", build)
    assert [(c.level, c.action) for c in conversations] == [("INFO", "none"), ("WARNING", "audio_chime")]
    assert conversations[1].answer == answer_text("WARNING", "audio_chime", ACTIONS["audio_chime"])


def test_cases_csv_with_the_old_steering_column_is_refused_with_the_rename(tmp_path):
    from fatigue_llm.training.data import DataError, read_cases_csv

    old = tmp_path / "old_cases.csv"
    old.write_text("eye_closure_ratio,blink_frequency,head_nod,voice_quality,steering_stability,speed_variance,"
                   "yaw_rate,time_awake,level,action\n0.1,15,0,0.9,30,1,0.01,5,WARNING,audio_chime\n")
    with pytest.raises(DataError, match="'steering_stability' is now 'steering_reversal_rate'"):
        read_cases_csv(old)
