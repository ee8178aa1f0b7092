"""Every threshold the toolkit decides with, defined once.

The papers give no numeric thresholds (He et al. §3-4 describe the phenomena in words); these are our stated
operationalisation, documented in ``docs/methods.md``. Train configs, analyses, the regime labels and the report's
verdicts all read them from here, and each output states the values it used.
"""

SATURATION = 0.97  # training accuracy that marks saturation (t_sat); 0.99 is fragile under a constant lr
MILESTONES = (0.5, 0.9)  # t_id50 / t_id90, t_ood50 / t_ood90, t_bridge50 / t_bridge90
GENERALISED = 0.5  # test accuracy that marks the onset of generalisation (t_gen)
GROKKED = 0.9  # a grokked gpt: ID test at least this (Wang et al. §3); each family declares its own definition
GROKKED_TRM_OOD = 0.5  # a grokked trm: OOD test at least this (He et al. §4: the natural TRM plateaus at 0.66-0.70)
HIGH = 0.9  # "high" test accuracy for the fake-grokking and circuit checks
BRIDGE_CIRCUIT = 0.9  # bridge measure at least this while test accuracy is high: a circuit
BRIDGE_FAKE = 0.5  # bridge measure below this while test accuracy is high: fake grokking
DELAY_FACTOR = 2.0  # natural grokking iff t_gen - t_sat >= DELAY_FACTOR * t_sat

SAME_PATH_R = 0.8  # correlation of path profiles / causal maps needed for "same path"
PATH_ALPHA = 0.05  # ... and the permutation p of their mean r must be below this: more similar than chance
PATH_MIN_LEVEL = 0.5  # a checkpoint "has a bridge path" when its bridge measure peaks at least this high
SATURATED_CELL = 0.95  # causal-map cells at least this in both checkpoints are left out of the correlation
CURVE_SIMILAR = 0.1  # fine-tuning curves are "similar" when their mean absolute difference is at most this

NEW_FACT_MILESTONE = 0.99  # the fine-tuning milestone "steps to New Fact accuracy" (He et al. Fig. 3: about 3k)
NEW_FACTS_LEARNED = 0.9  # New Fact accuracy a fine-tune needs before its compositions are judged
NEW_OLD_COMPOSES = 0.9  # the fine-tuning milestone "steps to new+old exact match >= this" (He et al. Fig. 3A: 1.0)
COMPOSES = 0.75  # a category composes when its exact-match interval lies above this, fails when below (Finding 3):
#                  halfway between full composition (He et al. Fig. 4 rows A-C: 1.0) and a coin flip
BRIDGE_PRESENT = 0.5  # a fine-tune's bridge is found when its interval lies above this, absent when below
FAITHFUL_MIN_N = 20  # below this many faithful mixed queries the report uses the powered set, and says so

# The bridge-use measure (docs/methods.md, "Bridge use"): 2 = untrained donors forward, the reverse patch for OOD and
# new hops, the carried patch for the trm. Runs and records measured with an older version show it as not measured.
BRIDGE_USE_VERSION = 2
