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


def canonical_label(name: str) -> str | None:
    """Map a folder or class name to its canonical label, or None when it means none of ours."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = key.split("_", 1)[1] if key[:1].isdigit() and "_" in key else key  # "0_angry"
    return SYNONYMS.get(key)
