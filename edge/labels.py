"""The FER2013 label set and the class-name synonyms other datasets use."""

from __future__ import annotations

FER2013_LABELS: tuple[str, ...] = (
    "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
)

# Folder names seen in FER2013 mirrors, CK+, JAFFE, RAF-DB, AffectNet exports -> canonical label.
SYNONYMS: dict[str, str] = {
    "angry": "angry", "anger": "angry", "an": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust", "di": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear", "fe": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy", "ha": "happy",
    "sad": "sad", "sadness": "sad", "sa": "sad",
    "surprise": "surprise", "surprised": "surprise", "su": "surprise",
    "neutral": "neutral", "neutrality": "neutral", "calm": "neutral", "ne": "neutral",
}


def _key(name: str) -> str:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return key.split("_", 1)[1] if key[:1].isdigit() and "_" in key else key  # "0_angry"


def class_name(name: str) -> str:
    """A folder or class name as a label: the canonical FER2013 name when it is a synonym of
    one (``anger`` -> ``angry``), else the name itself, lower case (CK+'s ``contempt``)."""
    return SYNONYMS.get(_key(name), _key(name))


def canonical_label(name: str) -> str | None:
    """Map a folder or class name to its canonical label, or None when it means none of ours."""
    return SYNONYMS.get(_key(name))
