"""The edges of Vigil: adapters, simulator, alert delivery, local Kafka and the CLI."""
