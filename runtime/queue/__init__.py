"""Durable async invocations on NATS JetStream: embedded server, stream layout, envelope,
retry policy, enqueue, workers, dead letters and call status.

Self-contained building blocks; the gateway, the daemon and the CLI wire them together.
"""
