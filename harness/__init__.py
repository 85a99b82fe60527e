"""The harness: the Comm interface and its transports, the launcher and the runner
(docs/DESIGN.md section 6)."""
