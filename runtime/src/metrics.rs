//! Counters every binary keeps (exposed over Prometheus `/metrics` in the Kafka issue).
