"""JSON Schema export: one file per topic payload, for consumers outside Python."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.topics import TOPICS, TopicSpec

SCHEMA_BASE_URI = "https://vigil.invalid/schemas/"


def topic_json_schema(spec: TopicSpec) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one topic's payload."""
    schema = spec.payload.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE_URI}{spec.base_name}.schema.json",
        "description": f"{spec.description}. Kafka key: {spec.key}.",
        **schema,
        "title": spec.payload.__name__,
    }


def export_json_schemas(directory: Path) -> list[Path]:
    """Write ``<topic>.schema.json`` for every topic into ``directory``; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in TOPICS:
        path = directory / f"{spec.base_name}.schema.json"
        path.write_text(json.dumps(topic_json_schema(spec), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
