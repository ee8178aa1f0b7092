"""Every threshold the toolkit decides with, defined once.

The papers give no numeric thresholds (He et al. §3-4 describe the phenomena in words); these are our stated
operationalisation, documented in ``docs/methods.md``. Train configs, analyses, the regime labels and the report's
verdicts all read them from here, and each output states the values it used.
"""

SATURATION = 0.97  # training accuracy that marks saturation (t_sat); 0.99 is fragile under a constant lr
MILESTONES = (0.5, 0.9)  # t_id50 / t_id90, t_ood50 / t_ood90, t_bridge50 / t_bridge90
GENERALISED = 0.5  # test accuracy that marks the onset of generalisation (t_gen)
GROKKED = 0.9  # a grokked checkpoint: ID test (OOD for the both-hop-full regime) at least this
HIGH = 0.9  # "high" test accuracy for the fake-grokking and circuit checks
BRIDGE_CIRCUIT = 0.9  # bridge measure at least this while test accuracy is high: a circuit
BRIDGE_FAKE = 0.5  # bridge measure below this while test accuracy is high: fake grokking
DELAY_FACTOR = 2.0  # natural grokking iff t_gen - t_sat >= DELAY_FACTOR * t_sat

SAME_PATH_R = 0.8  # correlation of path profiles / causal maps needed for "same path"
PATH_MIN_LEVEL = 0.5  # a checkpoint "has a bridge path" when its bridge measure peaks at least this high
SATURATED_CELL = 0.95  # causal-map cells at least this in both checkpoints are left out of the correlation
CURVE_SIMILAR = 0.1  # fine-tuning curves are "similar" when their mean absolute difference is at most this

NEW_FACT_MILESTONE = 0.99  # the fine-tuning milestone "steps to New Fact accuracy" (He et al. Fig. 3: about 3k)
NEW_FACTS_LEARNED = 0.9  # New Fact accuracy a fine-tune needs before its compositions are judged
NEW_OLD_COMPOSES = 0.9  # new+old exact match for "composes" (He et al. Fig. 3A: 1.0)
NEW_OLD_FAILS = 0.5  # new+old exact match below this: the core positive result failed
OLD_NEW_EM_MAX = 0.15  # old+new exact match at most this ...
OLD_NEW_BRIDGE_MIN = 0.5  # ... while the bridge measure is at least this (He et al. Fig. 3C)
NEW_NEW_EM_MAX = 0.05  # new+new exact match at most this (He et al. Fig. 4)
FAITHFUL_MIN_N = 20  # below this many faithful mixed queries the report uses the powered set, and says so
