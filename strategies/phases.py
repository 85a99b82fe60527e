"""The names of the communication phases: one place for the strategies, their declared
traffic, the time model and the core's copies of the strategies (whose phase names the
tests hold to these, run by run)."""

#: allgather of the positive hidden activities h (bits, or probabilities)
HIDDEN = "hidden"
#: allgather of the negative hidden activities h'
NEGATIVE_HIDDEN = "negative-hidden"
#: allgather of the negative visible data v'
VISIBLE = "visible"
#: reduce-scatter of the partial inputs of the hidden units (purple-only)
HIDDEN_INPUT = "hidden-input"
NEGATIVE_HIDDEN_INPUT = "negative-hidden-input"
#: reduce-scatter of the partial inputs of the visible units (green-only)
VISIBLE_INPUT = "visible-input"
#: the summed gradient of parameter averaging
GRADIENT = "gradient"
#: the averaged weights of parameter averaging (a sync)
AVERAGE = "average"
#: the weight synchronisation of the unit-partitioned strategies (a sync)
WEIGHT_SYNC = "weight-sync"
#: assembling the full model on rank 0 (bookkeeping, not training traffic)
GATHER_MODEL = "gather-model"
