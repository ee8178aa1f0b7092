"""What ``grokscope analyze`` and ``grokscope compare`` do when not told otherwise: defined once here, read by the
CLI, the API, the analysis and the study spec (this module imports nothing, so the CLI stays quick to start)."""

STEPS = "0,sat,grokked,last"  # checkpoints: step 0, training saturation, the grokked one, the last
PROBES = "ood,iid,train"  # composition probe sets
ANALYSES = "lens,trace,queries,compare,regime,probe"
COMPARE_PROBES = "iid,train"  # path comparisons need compositions both checkpoints were trained or tested on
