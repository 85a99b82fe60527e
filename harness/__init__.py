"""The harness: the Comm interface and its transports, the launcher and the runner
(docs/design.md section 6)."""
