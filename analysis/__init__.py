"""Analysis: closed-form communication cost, the time model, tables and plots
(docs/DESIGN.md section 7)."""
