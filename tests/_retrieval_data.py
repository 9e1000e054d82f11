"""A small hand-written chunk set for the retrieval tests (independent of corpus/)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from rag_app import chunkstore
from rag_app.config import Settings, load_settings
from rag_app.types import Chunk

# (doc_id, title, text, metadata)
DOCS: list[tuple[str, str, str, dict]] = [
    (
        "manuals/hydraulics.md",
        "Hydraulic Pump Overhaul",
        "Remove the engine-driven pump PT-220A and cap the pressure line before draining.",
        {"doc_type": "manual", "department": "Hydraulics", "effective_date": "2024-05-01"},
    ),
    (
        "manuals/hydraulics.md",
        "Hydraulic Pump Overhaul",
        "Torque the pump mounting bolts to 25 Nm in a cross pattern, then safety-wire them.",
        {"doc_type": "manual", "department": "Hydraulics", "effective_date": "2024-05-01"},
    ),
    (
        "manuals/hydraulics.md",
        "Hydraulic Pump Overhaul",
        "Bleed air from the hydraulic reservoir until the fluid runs clear without bubbles.",
        {"doc_type": "manual", "department": "Hydraulics", "effective_date": "2024-05-01"},
    ),
    (
        "manuals/landing-gear.md",
        "Landing Gear",
        "Task 32-41-11 covers the main wheel brake wear pin inspection at every A-check.",
        {"doc_type": "manual", "department": "Landing Gear", "effective_date": "2025-02-10"},
    ),
    (
        "manuals/landing-gear.md",
        "Landing Gear",
        "Replace the brake assembly when the wear pin is flush with the housing.",
        {"doc_type": "manual", "department": "Landing Gear", "effective_date": "2025-02-10"},
    ),
    (
        "manuals/landing-gear.md",
        "Landing Gear",
        "Tyre pressure is checked cold, at least three hours after the last landing.",
        {"doc_type": "manual", "department": "Landing Gear", "effective_date": "2025-02-10"},
    ),
    (
        "bulletins/sb-nose-wheel.md",
        "Service Bulletin: Nose Wheel Fitting",
        "Fitting NW-F-160 on the nose wheel steering actuator shows fatigue cracks after 9000 cycles.",
        {
            "doc_type": "bulletin",
            "department": "Landing Gear",
            "effective_date": "2025-06-01",
            "access": "engineering",
        },
    ),
    (
        "bulletins/sb-nose-wheel.md",
        "Service Bulletin: Nose Wheel Fitting",
        "Inspect NW-F-160 with eddy current every 500 cycles until it is replaced by NW-F-161.",
        {
            "doc_type": "bulletin",
            "department": "Landing Gear",
            "effective_date": "2025-06-01",
            "access": "engineering",
        },
    ),
    (
        "bulletins/sb-fuel.md",
        "Service Bulletin: Fuel Quantity Probes",
        "Fuel quantity probes FQ-12 may read high when the tank temperature is below -30 C.",
        {"doc_type": "bulletin", "department": "Fuel", "effective_date": "2023-11-20"},
    ),
    (
        "bulletins/sb-fuel.md",
        "Service Bulletin: Fuel Quantity Probes",
        "Replace the probe harness connector if corrosion is found during the fuel tank entry.",
        {"doc_type": "bulletin", "department": "Fuel", "effective_date": "2023-11-20"},
    ),
    (
        "policies/stores.md",
        "Stores Policy",
        "Incoming rotable parts are quarantined in bay Q3 until the paperwork is released.",
        {"doc_type": "policy", "department": "Stores", "effective_date": "2022-01-15"},
    ),
    (
        "policies/stores.md",
        "Stores Policy",
        "Sealant kits expire eighteen months after manufacture when kept at room temperature.",
        {"doc_type": "policy", "department": "Stores", "effective_date": "2022-01-15"},
    ),
    (
        "policies/stores.md",
        "Stores Policy",
        "Shelf-life items past their expiry date must be tagged red and moved to bay R1.",
        {"doc_type": "policy", "department": "Stores", "effective_date": "2022-01-15"},
    ),
    (
        "policies/safety.md",
        "Hangar Safety",
        "Hearing protection is mandatory when an engine runs on the apron.",
        {"doc_type": "policy", "department": "Safety", "effective_date": "2024-09-01"},
    ),
    (
        "policies/safety.md",
        "Hangar Safety",
        "Fall arrest harnesses are required above two metres on the wing or the stabiliser.",
        {"doc_type": "policy", "department": "Safety", "effective_date": "2024-09-01"},
    ),
    (
        "policies/safety.md",
        "Hangar Safety",
        "Spilled hydraulic fluid is absorbed with pads and disposed of as hazardous waste.",
        {"doc_type": "policy", "department": "Safety", "effective_date": "2024-09-01"},
    ),
    (
        "manuals/avionics.md",
        "Avionics",
        "Reset the flight management computer by pulling circuit breaker C14 for ten seconds.",
        {"doc_type": "manual", "department": "Avionics", "effective_date": "2025-01-05"},
    ),
    (
        "manuals/avionics.md",
        "Avionics",
        "The weather radar must not transmit while people stand within five metres of the nose.",
        {"doc_type": "manual", "department": "Avionics", "effective_date": "2025-01-05"},
    ),
    (
        "manuals/engines.md",
        "Engine Borescope",
        "Borescope the high pressure turbine blades through port 7 after a bird strike.",
        {"doc_type": "manual", "department": "Powerplant", "effective_date": "2024-12-12"},
    ),
    (
        "manuals/engines.md",
        "Engine Borescope",
        "Oil consumption above 0.5 litres per hour requires a chip detector check.",
        {"doc_type": "manual", "department": "Powerplant", "effective_date": "2024-12-12"},
    ),
]


def make_chunks(docs=DOCS) -> list[Chunk]:
    chunks = []
    for doc_id, title, text, meta in docs:
        cid = hashlib.sha256(f"{doc_id}\0{text}".encode()).hexdigest()[:16]
        metadata = {"source": doc_id, **meta}
        chunks.append(Chunk(cid, doc_id, text, title=title, metadata=metadata))
    return chunks


def write_workspace(settings: Settings, chunks: list[Chunk]) -> None:
    """Put `chunks` into the workspace as if `rag-app ingest` had written them."""
    chunkstore.save(settings.chunks_path, settings.manifest_path, chunks, {"signature": {}})


def make_settings(workspace: Path, **overrides) -> Settings:
    return load_settings(workspace=workspace, **overrides)


def by_text(chunks: list[Chunk], needle: str) -> Chunk:
    return next(c for c in chunks if needle in c.text)
