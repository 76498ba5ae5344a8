//! Per-partition watermarks with idleness (`pipeline-spec.md`).
