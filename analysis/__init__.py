"""Analysis: closed-form communication cost, the time model, tables and plots
(docs/design.md section 7)."""
