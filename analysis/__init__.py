"""Analysis: closed-form communication cost, the time model, tables and plots
(DESIGN.md section 7)."""
